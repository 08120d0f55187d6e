use berth_metadata::MetaError;
use berth_plugin::{Classify, ErrorKind};

/// Content store errors; messages follow containerd's wording where clients match on it.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("content {0}: not found")]
    NotFound(String),
    #[error("content {0}: already exists")]
    AlreadyExists(String),
    #[error("ref {reference} locked for {held_for:?}: unavailable")]
    Locked {
        reference: String,
        held_for: std::time::Duration,
    },
    #[error("unexpected commit size {actual}, expected {expected}: failed precondition")]
    SizeMismatch { actual: i64, expected: i64 },
    #[error("unexpected commit digest {actual}, expected {expected}: failed precondition")]
    DigestMismatch { actual: String, expected: String },
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: out of range")]
    OutOfRange(String),
    #[error("ingest {0}: not found")]
    IngestNotFound(String),
    /// The ingest was aborted while this writer had it open (Abort does not wait for writers).
    #[error("ingest {0} was aborted while this write was open: not found")]
    IngestAborted(String),
    #[error("content store I/O on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Meta(#[from] MetaError),
}

impl ContentError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ContentError + '_ {
        move |source| ContentError::Io {
            path: path.to_owned(),
            source,
        }
    }
}

impl Classify for ContentError {
    fn kind(&self) -> ErrorKind {
        match self {
            ContentError::NotFound(_)
            | ContentError::IngestNotFound(_)
            | ContentError::IngestAborted(_) => ErrorKind::NotFound,
            ContentError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            ContentError::Locked { .. } => ErrorKind::Unavailable,
            ContentError::SizeMismatch { .. }
            | ContentError::DigestMismatch { .. }
            | ContentError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            ContentError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            ContentError::OutOfRange(_) => ErrorKind::OutOfRange,
            ContentError::Io { .. } => ErrorKind::Internal,
            ContentError::Meta(m) => m.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn storage_errors_keep_their_source() {
        let e = ContentError::io(std::path::Path::new("/blobs/sha256/ab"))(std::io::Error::from(
            std::io::ErrorKind::StorageFull,
        ));
        assert_eq!(e.kind(), ErrorKind::Internal);
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(io.map(|e| e.kind()), Some(std::io::ErrorKind::StorageFull));

        // A metadata failure is the metadata error itself, and its source the cause below it.
        let e = ContentError::from(MetaError::CreateDir {
            path: "/meta".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(
            e.to_string().starts_with("metadata store: create /meta: "),
            "{e}"
        );
        assert!(e.source().unwrap().is::<std::io::Error>());
    }
}
