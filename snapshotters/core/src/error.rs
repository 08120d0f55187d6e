use std::path::PathBuf;

use berth_plugin::{Classify, ErrorKind};

/// Snapshotter errors; messages follow containerd's where clients see them.
///
/// Failures below the driver keep their cause: [`std::error::Error::source`] is the redb, I/O,
/// JSON or mount error itself, so a log or a caller can walk the chain to what went wrong.
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
    /// The driver's storage is full (a thin pool out of space): the client may retry once
    /// there is room.
    #[error("{0}: resource exhausted")]
    ResourceExhausted(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The metadata file is locked by another process (or another instance in this one).
    #[error(
        "snapshot metadata: {} is already open: is another berthd using this root?",
        path.display()
    )]
    AlreadyOpen {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("snapshot metadata: open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error("snapshot metadata: close {}: {source}", path.display())]
    Close {
        path: PathBuf,
        source: redb::DatabaseError,
    },
    #[error(
        "snapshot metadata: {}: schema version {found} is newer than this berthd supports ({supported})",
        path.display()
    )]
    SchemaTooNew {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("snapshot metadata: {0}")]
    Transaction(#[from] redb::TransactionError),
    /// A driver wrote its metadata from inside one of its own writes (a driver bug: the second
    /// write would wait forever for the first).
    #[error("snapshot metadata: {}: a write nested in a write", .0.display())]
    Nested(PathBuf),
    /// Reopening the database after an I/O error failed (the disk may still be full); the next
    /// call tries again.
    #[error("snapshot metadata: reopen after an I/O error: {0}")]
    Reopen(#[source] redb::DatabaseError),
    #[error("snapshot metadata: {0}")]
    Table(#[from] redb::TableError),
    #[error("snapshot metadata: {0}")]
    Storage(#[from] redb::StorageError),
    #[error("snapshot metadata: {0}")]
    Commit(#[from] redb::CommitError),
    /// A record that does not decode (written by something else, or damaged).
    #[error("snapshot metadata: record {key:?} is corrupt: {source}")]
    Corrupt {
        key: String,
        source: serde_json::Error,
    },
    #[error("snapshot metadata: encode: {0}")]
    Encode(#[source] serde_json::Error),
    /// A driver in another process failed in a way that has no containerd code of its own;
    /// `source` is what its transport reported (for the proxy, the gRPC status).
    #[error("proxy snapshotter {snapshotter} at {address}: {message}")]
    Remote {
        snapshotter: String,
        address: String,
        message: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
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

    /// Opening the metadata file at `path` failed.
    pub(crate) fn open(path: &std::path::Path) -> impl FnOnce(redb::DatabaseError) -> Self + '_ {
        move |source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => SnapshotError::AlreadyOpen {
                path: path.to_owned(),
                source,
            },
            source => SnapshotError::Open {
                path: path.to_owned(),
                source,
            },
        }
    }
}

impl From<berth_redb::BeginError> for SnapshotError {
    fn from(e: berth_redb::BeginError) -> Self {
        match e {
            // A storage failure (a closed database, an I/O error) is reported as one.
            berth_redb::BeginError::Transaction(redb::TransactionError::Storage(s)) => {
                SnapshotError::Storage(s)
            }
            berth_redb::BeginError::Transaction(e) => SnapshotError::Transaction(e),
            berth_redb::BeginError::Reopen(e) => SnapshotError::Reopen(e),
        }
    }
}

impl SnapshotError {
    /// True when the disk (or the quota) is full: the same request may succeed once there is
    /// room.
    pub fn is_disk_full(&self) -> bool {
        let storage = match self {
            SnapshotError::Io { source, .. } => return berth_redb::io_is_disk_full(source),
            SnapshotError::Storage(s)
            | SnapshotError::Transaction(redb::TransactionError::Storage(s))
            | SnapshotError::Table(redb::TableError::Storage(s))
            | SnapshotError::Commit(redb::CommitError::Storage(s))
            | SnapshotError::Reopen(redb::DatabaseError::Storage(s)) => s,
            _ => return false,
        };
        berth_redb::is_disk_full(storage)
    }
}

impl Classify for SnapshotError {
    fn kind(&self) -> ErrorKind {
        if self.is_disk_full() {
            return ErrorKind::ResourceExhausted;
        }
        match self {
            SnapshotError::NotFound(_) => ErrorKind::NotFound,
            SnapshotError::AlreadyExists(_) => ErrorKind::AlreadyExists,
            SnapshotError::FailedPrecondition(_) => ErrorKind::FailedPrecondition,
            SnapshotError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            SnapshotError::Unsupported(_) => ErrorKind::NotImplemented,
            SnapshotError::ResourceExhausted(_) => ErrorKind::ResourceExhausted,
            SnapshotError::Io { .. }
            | SnapshotError::AlreadyOpen { .. }
            | SnapshotError::Open { .. }
            | SnapshotError::Close { .. }
            | SnapshotError::SchemaTooNew { .. }
            | SnapshotError::Transaction(_)
            | SnapshotError::Nested(_)
            | SnapshotError::Reopen(_)
            | SnapshotError::Table(_)
            | SnapshotError::Storage(_)
            | SnapshotError::Commit(_)
            | SnapshotError::Corrupt { .. }
            | SnapshotError::Encode(_)
            | SnapshotError::Remote { .. }
            | SnapshotError::Mount(_) => ErrorKind::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn storage_errors_keep_their_source() {
        let e = SnapshotError::from(redb::StorageError::Io(std::io::Error::other(
            "disk on fire",
        )));
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert_eq!(e.to_string(), "snapshot metadata: I/O error: disk on fire");
        let storage = e
            .source()
            .and_then(|s| s.downcast_ref::<redb::StorageError>())
            .expect("the source is the redb error itself");
        assert!(matches!(storage, redb::StorageError::Io(io) if io.to_string() == "disk on fire"));

        let e = SnapshotError::from(redb::TransactionError::Storage(
            redb::StorageError::DatabaseClosed,
        ));
        assert!(e.source().unwrap().is::<redb::TransactionError>());

        let e = SnapshotError::io("read dir", std::path::Path::new("/x"))(std::io::Error::from(
            std::io::ErrorKind::PermissionDenied,
        ));
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|e| e.kind()),
            Some(std::io::ErrorKind::PermissionDenied)
        );
    }

    #[test]
    fn a_corrupt_record_keeps_the_json_error() {
        let source = serde_json::from_slice::<serde_json::Value>(b"{").unwrap_err();
        let e = SnapshotError::Corrupt {
            key: "k".into(),
            source,
        };
        assert!(e
            .to_string()
            .starts_with("snapshot metadata: record \"k\" is corrupt: "));
        assert!(e.source().unwrap().is::<serde_json::Error>());
    }
}
