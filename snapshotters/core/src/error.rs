use berth_plugin::{Classify, ErrorKind};

/// Snapshotter errors; messages follow containerd's where clients see them.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("{0}: not implemented")]
    Unsupported(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("snapshot metadata: {0}")]
    Storage(String),
    #[error(transparent)]
    Mount(#[from] berth_mount::MountError),
}

impl SnapshotError {
    pub fn io<'p>(
        op: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> SnapshotError + 'p {
        move |source| SnapshotError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    }

    pub fn errno<'p>(
        op: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(nix::errno::Errno) -> SnapshotError + 'p {
        move |e| SnapshotError::Io {
            op,
            path: path.to_owned(),
            source: std::io::Error::from(e),
        }
    }
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrorKind {
        match self {
            SnapshotError::NotFound(_) => ErrorKind::NotFound,
            SnapshotError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            SnapshotError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            SnapshotError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            SnapshotError::Unsupported(_) => ErrorKind::NotImplemented,
            SnapshotError::Io { .. } | SnapshotError::Storage(_) | SnapshotError::Mount(_) => {
                ErrorKind::Internal
            }
        }
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for SnapshotError {
            fn from(e: $t) -> Self {
                SnapshotError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
