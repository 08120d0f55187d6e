use std::path::PathBuf;

use berth_plugin::{Classify, ErrorKind};

/// Errors of the metadata store. Messages follow containerd's `<what>: <kind>` shape.
///
/// Storage failures keep their cause: [`std::error::Error::source`] is the redb, I/O or JSON
/// error itself.
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
    #[error("metadata store: create {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The database file is locked by another process (or another instance in this one).
    #[error(
        "metadata store: {} is already open: is another berthd using this root?",
        path.display()
    )]
    AlreadyOpen {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("metadata store: open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("metadata store: close {}: {source}", path.display())]
    Close {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("metadata store: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// Reopening the database after an I/O error failed (the disk may still be full); the next
    /// call tries again.
    #[error("metadata store: reopen after an I/O error: {0}")]
    Reopen(#[source] redb::DatabaseError),
    #[error("metadata store: {0}")]
    Table(#[from] redb::TableError),
    #[error("metadata store: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("metadata store: {0}")]
    Commit(#[from] redb::CommitError),
    /// The transaction lent to a snapshotter cannot be committed (its write failed).
    #[error("metadata: snapshotter transaction: {0}")]
    Lent(#[from] berth_redb::LendError),
    #[error("metadata store: encode record: {0}")]
    Encode(#[source] serde_json::Error),
    /// A record that does not decode (written by something else, or damaged).
    #[error("metadata record {key} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("metadata schema version {found} is newer than this berthd supports ({supported}); upgrade berthd")]
    SchemaTooNew { found: u64, supported: u64 },
}

impl MetaError {
    /// Opening the database file at `path` failed.
    pub(crate) fn open(path: &std::path::Path) -> impl FnOnce(redb::DatabaseError) -> Self + '_ {
        move |source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => MetaError::AlreadyOpen {
                path: path.to_owned(),
                source,
            },
            source => MetaError::Open {
                path: path.to_owned(),
                source,
            },
        }
    }
}

impl From<berth_redb::BeginError> for MetaError {
    fn from(e: berth_redb::BeginError) -> Self {
        match e {
            // A storage failure (a closed database, an I/O error) is reported as one.
            berth_redb::BeginError::Transaction(redb::TransactionError::Storage(s)) => {
                MetaError::Storage(s)
            }
            berth_redb::BeginError::Transaction(e) => MetaError::Transaction(e),
            berth_redb::BeginError::Reopen(e) => MetaError::Reopen(e),
        }
    }
}

impl MetaError {
    /// True when the disk (or the quota) is full: the write may succeed once there is room.
    pub fn is_disk_full(&self) -> bool {
        let storage = match self {
            MetaError::Storage(s)
            | MetaError::Transaction(redb::TransactionError::Storage(s))
            | MetaError::Table(redb::TableError::Storage(s))
            | MetaError::Commit(redb::CommitError::Storage(s))
            | MetaError::Open {
                source: redb::DatabaseError::Storage(s),
                ..
            }
            | MetaError::Reopen(redb::DatabaseError::Storage(s)) => s,
            _ => return false,
        };
        berth_redb::is_disk_full(storage)
    }
}

impl Classify for MetaError {
    fn kind(&self) -> ErrorKind {
        if self.is_disk_full() {
            return ErrorKind::ResourceExhausted;
        }
        match self {
            MetaError::NotFound(_) => ErrorKind::NotFound,
            MetaError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            MetaError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            MetaError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            MetaError::CreateDir { .. }
            | MetaError::AlreadyOpen { .. }
            | MetaError::Open { .. }
            | MetaError::Close { .. }
            | MetaError::Transaction(_)
            | MetaError::Reopen(_)
            | MetaError::Table(_)
            | MetaError::Storage(_)
            | MetaError::Commit(_)
            | MetaError::Lent(_)
            | MetaError::Encode(_)
            | MetaError::Corrupt { .. }
            | MetaError::SchemaTooNew { .. } => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn storage_errors_keep_their_source() {
        let e = MetaError::from(redb::StorageError::Io(std::io::Error::other(
            "disk on fire",
        )));
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.to_string(), "metadata store: I/O error: disk on fire");
        let storage = e
            .source()
            .and_then(|s| s.downcast_ref::<redb::StorageError>())
            .expect("the source is the redb error itself");
        assert!(matches!(storage, redb::StorageError::Io(io) if io.to_string() == "disk on fire"));

        let full = MetaError::from(redb::CommitError::Storage(redb::StorageError::Io(
            std::io::Error::from_raw_os_error(28),
        )));
        assert_eq!(full.kind(), ErrorKind::ResourceExhausted);

        let e = MetaError::from(redb::CommitError::TransactionPoisoned);
        assert!(e.source().unwrap().is::<redb::CommitError>());

        let e = MetaError::CreateDir {
            path: "/x".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|e| e.kind()),
            Some(std::io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn a_second_open_names_the_file_and_keeps_redbs_error() {
        let dir = tempfile::tempdir().unwrap();
        let _db = crate::MetadataDb::open(dir.path()).unwrap();
        let e = crate::MetadataDb::open(dir.path()).err().unwrap();
        assert!(
            e.to_string()
                .ends_with("is already open: is another berthd using this root?"),
            "{e}"
        );
        assert!(matches!(
            e.source()
                .and_then(|s| s.downcast_ref::<redb::DatabaseError>()),
            Some(redb::DatabaseError::DatabaseAlreadyOpen)
        ));
    }

    #[test]
    fn a_corrupt_record_keeps_the_json_error() {
        let source = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let e = MetaError::Corrupt {
            key: "images/a".into(),
            source,
        };
        assert!(e
            .to_string()
            .starts_with("metadata record images/a is corrupt: "));
        assert!(e.source().unwrap().is::<serde_json::Error>());
    }
}
