//! The offline consistency check of a berthd root: what `berthd check [--repair]` runs, as an
//! operator runs `fsck`, with the daemon stopped.
//!
//! It checks the invariants the crash driver (`tests/tests/crash.rs`) asserts after SIGKILLs:
//!
//! 1. every file under the content store's `blobs/sha256/` hashes to its name;
//! 2. every blob record of every namespace has its file;
//! 3. every snapshot record points at a driver snapshot that exists — whose mounts name
//!    directories that exist — and its parent record exists (and is sound). Drivers refuse
//!    Mounts of a committed snapshot (containerd's rule), so a committed snapshot's own
//!    directory is seen only through the mounts of the active snapshots and views above it;
//!    checking it directly needs a driver hook that the `Snapshotter` trait does not have yet;
//! 4. no driver snapshot, blob file or leased ingest is left without an owner.
//!
//! With repair, in that order: corrupt files are removed (their records then count as missing),
//! records of missing blobs and snapshots are deleted (children first), then one full collection
//! runs through the collector's own code (the caller passes it in: the gc plugin's
//! `Scheduler::collect_now`, what `bctr gc` runs), which removes what nothing references any
//! longer. A second pass without hashing then tells what remains.
//!
//! The stores are opened by the caller through the daemon's plugin registrations, so opening
//! them repairs what start-up repairs (invalid ingests, half-made snapshot directories); what the
//! content store removed is reported as a note.

mod error;
mod report;
mod scan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_content_store::ContentStore;
use berth_gc::{GcError, Stats};
use berth_metadata::MetadataDb;
use berth_snapshotter::Snapshotter;

pub use error::CheckError;

/// The opened stores of one root.
pub struct Stores {
    pub db: Arc<MetadataDb>,
    pub content: Arc<ContentStore>,
    /// Every ready snapshotter, by plugin id (the name records use).
    pub drivers: BTreeMap<String, Arc<dyn Snapshotter>>,
    /// Snapshotters that could not be opened, with the reason: their records are reported as
    /// unchecked, not as missing (a proxy that is down has lost nothing).
    pub unavailable: BTreeMap<String, String>,
}

/// What one collection is: the collector's own full run.
pub type Collect<'a> = &'a mut dyn FnMut() -> Result<Stats, GcError>;

/// Report only, or repair and collect.
pub enum Mode<'a> {
    Report,
    Repair(Collect<'a>),
}

/// Why a snapshot record is unsound.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotFault {
    /// The driver has no snapshot under the record's backend key.
    NotInDriver,
    /// The driver has it, but a directory its mounts name is gone.
    PathGone(PathBuf),
    /// The parent key has no record in the namespace.
    NoParentRecord(String),
    /// The parent's record is itself unsound.
    ParentUnsound(String),
}

/// One problem.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Finding {
    /// A blob file whose bytes do not hash to its name (`actual` is what they hash to; `None`
    /// when the name is no sha256 digest at all).
    CorruptBlob {
        digest: String,
        actual: Option<String>,
    },
    /// A blob record whose file is not there.
    MissingBlob { namespace: String, digest: String },
    /// A snapshot record that does not stand for a usable driver snapshot.
    MissingSnapshot {
        namespace: String,
        snapshotter: String,
        key: String,
        backend_key: String,
        fault: SnapshotFault,
    },
    /// A driver snapshot no record points to.
    UnreferencedSnapshot {
        snapshotter: String,
        backend_key: String,
    },
    /// A blob file no namespace records.
    UnreferencedBlob { digest: String },
    /// An ingest opened under a lease that no longer holds it.
    UnreferencedIngest { key: String, lease: String },
}

/// What a repair did, besides the collection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    RemovedBlobFile {
        digest: String,
    },
    DeletedBlobRecord {
        namespace: String,
        digest: String,
    },
    DeletedSnapshotRecord {
        namespace: String,
        snapshotter: String,
        key: String,
    },
}

/// Something worth knowing that is not a problem of the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Opening the content store removed this entry of `ingest/` (left invalid by a crash).
    RepairedAtOpen(PathBuf),
    /// An ingest a client may still resume (or that the collector removes once stale).
    Ingest {
        key: String,
        offset: i64,
        total: i64,
        idle: Duration,
        lease: Option<String>,
    },
    /// Records of a snapshotter that could not be opened.
    UncheckedSnapshotter {
        snapshotter: String,
        records: usize,
        reason: String,
    },
    /// An image whose content is not all there (after a repair removed a blob, say): it needs
    /// importing or pulling again.
    IncompleteImage {
        namespace: String,
        name: String,
        missing: Vec<String>,
    },
}

/// How much was looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub blobs: usize,
    pub blob_records: usize,
    pub snapshot_records: usize,
    pub driver_snapshots: usize,
    pub ingests: usize,
}

/// The outcome of a check.
#[derive(Debug, Default)]
pub struct Report {
    pub repair: bool,
    /// Every problem found (with repair: including records a removed corrupt blob left
    /// missing, and what the repairs left unreferenced).
    pub found: Vec<Finding>,
    pub actions: Vec<Action>,
    /// What the collection freed, with repair.
    pub collected: Option<Stats>,
    /// Problems still there at the end: `found` without repair.
    pub remaining: Vec<Finding>,
    pub notes: Vec<Note>,
    pub counts: Counts,
}

impl Report {
    /// Whether nothing remains to be repaired (the exit status 0 of `berthd check`).
    pub fn clean(&self) -> bool {
        self.remaining.is_empty()
    }
}

/// Checks the stores and, in [`Mode::Repair`], repairs them. An error (I/O, a record that does
/// not decode, a driver failing) stops the check: what it would report could not be trusted.
pub fn check(stores: &Stores, mode: Mode<'_>) -> Result<Report, CheckError> {
    let mut report = Report::default();
    match mode {
        Mode::Report => {
            let pass = scan::Pass::run(stores, true, None)?;
            report.counts = pass.counts;
            report.found = pass.findings;
            report.remaining = report.found.clone();
        }
        Mode::Repair(collect) => {
            report.repair = true;
            let pass = scan::Pass::run(stores, true, Some(&mut report.actions))?;
            report.counts = pass.counts;
            report.found = pass.findings;
            report.collected = Some(collect()?);
            // Nothing new was written since the first pass hashed every file (the root is
            // claimed), so the second pass need not read the blobs again.
            report.remaining = scan::Pass::run(stores, false, None)?.findings;
        }
    }
    report.notes = scan::notes(stores)?;
    Ok(report)
}

#[cfg(test)]
mod tests;
