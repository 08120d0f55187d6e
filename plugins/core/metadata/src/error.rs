use berth_plugin::{Classify, ErrorKind};

/// Errors of the metadata store. Messages follow containerd's `<what>: <kind>` shape.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: already exists")]
    AlreadyExists(String),
    #[error("{0}: failed precondition")]
    FailedPrecondition(String),
    #[error("{0}: invalid argument")]
    InvalidArgument(String),
    #[error("metadata store: {0}")]
    Storage(String),
    #[error("metadata record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("metadata schema version {found} is newer than this berthd supports ({supported}); upgrade berthd")]
    SchemaTooNew { found: u64, supported: u64 },
}

impl Classify for MetaError {
    fn kind(&self) -> ErrorKind {
        match self {
            MetaError::NotFound(_) => ErrorKind::NotFound,
            MetaError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            MetaError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            MetaError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            MetaError::Storage(_) | MetaError::Corrupt { .. } | MetaError::SchemaTooNew { .. } => {
                ErrorKind::Internal
            }
        }
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for MetaError {
            fn from(e: $t) -> Self {
                MetaError::Storage(e.to_string())
            }
        }
    )*};
}
storage_from!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
