//! The crate's one error type. Every failure tied to a tar entry names the entry, because a layer
//! that cannot be applied is only debuggable if the message says which member broke it.

use std::io;

use berth_plugin::{Classify, ErrorKind};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// The media type names no layer format this crate reads.
    #[error("unsupported media type {0:?}")]
    UnsupportedMediaType(String),
    /// A digest string that is not `sha256:<64 lowercase hex>`.
    #[error("invalid digest {0:?}: expected sha256:<64 hex digits>")]
    InvalidDigest(String),
    /// Options that cannot work together.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// The entry is refused: unsafe (escapes the target, device not allowed) or malformed.
    #[error("entry {name:?}: {reason}")]
    InvalidEntry { name: String, reason: String },
    /// A filesystem operation for the entry failed.
    #[error("entry {name:?}: {op}: {source}")]
    Entry {
        name: String,
        op: String,
        #[source]
        source: io::Error,
    },
    /// The layer stream could not be read or parsed (truncated, corrupt, bad compression).
    #[error("reading layer stream{}: {source}", after.as_ref().map(|n| format!(" after entry {n:?}")).unwrap_or_default())]
    Stream {
        after: Option<String>,
        #[source]
        source: io::Error,
    },
    /// A PAX or GNU extension header member declares more data than a layer may use for one
    /// (containerd's limit, see `header_guard.rs`); refused before any of it is read.
    #[error(
        "reading layer stream{}: {what} {header:?} declares {size} bytes, more than the {limit} bytes a tar extension header may hold",
        after.as_ref().map(|n| format!(" after entry {n:?}")).unwrap_or_default()
    )]
    HeaderTooLarge {
        /// Which kind of extension header ("PAX extended header", "GNU long name", …).
        what: &'static str,
        /// The name field of the extension header itself.
        header: String,
        size: u64,
        limit: u64,
        /// The last entry read before it.
        after: Option<String>,
    },
    /// The uncompressed stream's digest is not the expected diff_id.
    #[error("diff_id mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// Filesystem trouble outside any one entry (opening the target, walking a tree for a diff).
    #[error("{path}: {op}: {source}")]
    Io {
        path: String,
        op: &'static str,
        #[source]
        source: io::Error,
    },
}

impl ArchiveError {
    pub(crate) fn invalid(name: &str, reason: impl Into<String>) -> Self {
        ArchiveError::InvalidEntry {
            name: name.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn entry(name: &str, op: impl Into<String>, source: io::Error) -> Self {
        ArchiveError::Entry {
            name: name.to_owned(),
            op: op.into(),
            source,
        }
    }

    pub(crate) fn io(
        path: impl AsRef<std::path::Path>,
        op: &'static str,
        source: io::Error,
    ) -> Self {
        ArchiveError::Io {
            path: path.as_ref().display().to_string(),
            op,
            source,
        }
    }

    /// Whether the input (not the machine) is at fault: the caller should not retry.
    pub fn is_bad_input(&self) -> bool {
        self.kind() == ErrorKind::InvalidArgument || self.kind() == ErrorKind::FailedPrecondition
    }
}

fn input_io_kind(e: &io::Error) -> ErrorKind {
    match e.kind() {
        io::ErrorKind::InvalidData
        | io::ErrorKind::InvalidInput
        | io::ErrorKind::UnexpectedEof
        | io::ErrorKind::NotFound
        | io::ErrorKind::NotADirectory
        | io::ErrorKind::IsADirectory
        | io::ErrorKind::Other => ErrorKind::InvalidArgument,
        _ => ErrorKind::Internal,
    }
}

impl Classify for ArchiveError {
    fn kind(&self) -> ErrorKind {
        match self {
            // containerd answers an unknown layer media type with ErrNotImplemented.
            ArchiveError::UnsupportedMediaType(_) => ErrorKind::NotImplemented,
            ArchiveError::InvalidDigest(_)
            | ArchiveError::InvalidOptions(_)
            | ArchiveError::InvalidEntry { .. }
            | ArchiveError::HeaderTooLarge { .. } => ErrorKind::InvalidArgument,
            ArchiveError::DigestMismatch { .. } => ErrorKind::FailedPrecondition,
            // An entry whose link target is missing or whose parent is a file is bad input; a
            // full disk or EIO is ours.
            ArchiveError::Entry { source, .. } | ArchiveError::Stream { source, .. } => {
                input_io_kind(source)
            }
            ArchiveError::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                _ => ErrorKind::Internal,
            },
        }
    }
}
