use std::path::PathBuf;

use berth_content_store::ContentError;
use berth_gc::GcError;
use berth_metadata::MetaError;
use berth_snapshotter::SnapshotError;

/// Why a check could not be completed. Each keeps its cause as its source.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The metadata store failed (its message names the store and the record).
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error("snapshotter {snapshotter}: {source}")]
    Snapshot {
        snapshotter: String,
        source: SnapshotError,
    },
    #[error("read blob {path}: {source}")]
    ReadBlob {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("garbage collection: {0}")]
    Collect(#[from] GcError),
}

impl CheckError {
    pub(crate) fn snapshot(snapshotter: &str) -> impl FnOnce(SnapshotError) -> CheckError + '_ {
        move |source| CheckError::Snapshot {
            snapshotter: snapshotter.to_owned(),
            source,
        }
    }
}
