//! How a check reads: one line per finding, repair and note, then a summary line. Each line
//! starts with what it is about (`corrupt blob`, `missing snapshot`, `repair:`, `gc:`, `note:`),
//! so a script can pick lines out with grep.

use std::fmt;
use std::time::Duration;

use crate::{Action, Counts, Finding, Note, Report, SnapshotFault};

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::CorruptBlob {
                digest,
                actual: Some(actual),
            } => write!(f, "corrupt blob {digest} (its bytes hash to {actual})"),
            Finding::CorruptBlob {
                digest,
                actual: None,
            } => write!(f, "corrupt blob {digest} (the name is no sha256 digest)"),
            Finding::MissingBlob { namespace, digest } => {
                write!(f, "missing blob {digest} (namespace {namespace})")
            }
            Finding::MissingSnapshot {
                namespace,
                snapshotter,
                key,
                backend_key,
                fault,
            } => {
                write!(
                    f,
                    "missing snapshot {snapshotter}/{key} (namespace {namespace}): "
                )?;
                match fault {
                    SnapshotFault::NotInDriver => {
                        write!(f, "the driver has no snapshot {backend_key}")
                    }
                    SnapshotFault::PathGone(path) => {
                        write!(f, "{} of {backend_key} is gone", path.display())
                    }
                    SnapshotFault::NoParentRecord(parent) => {
                        write!(f, "its parent {parent} has no record")
                    }
                    SnapshotFault::ParentUnsound(parent) => {
                        write!(f, "its parent {parent} is missing")
                    }
                }
            }
            Finding::UnreferencedSnapshot {
                snapshotter,
                backend_key,
            } => write!(
                f,
                "unreferenced snapshot {snapshotter} {backend_key} (no record points to it)"
            ),
            Finding::UnreferencedBlob { digest } => {
                write!(f, "unreferenced blob {digest} (no namespace records it)")
            }
            Finding::UnreferencedIngest { key, lease } => {
                write!(f, "unreferenced ingest {key} (its lease {lease} is gone)")
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::RemovedBlobFile { digest } => write!(f, "removed blob file {digest}"),
            Action::DeletedBlobRecord { namespace, digest } => {
                write!(f, "deleted blob record {digest} (namespace {namespace})")
            }
            Action::DeletedSnapshotRecord {
                namespace,
                snapshotter,
                key,
            } => write!(
                f,
                "deleted snapshot record {snapshotter}/{key} (namespace {namespace})"
            ),
        }
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::RepairedAtOpen(path) => write!(
                f,
                "opening the content store removed {} (an ingest a crash left invalid)",
                path.display()
            ),
            Note::Ingest {
                key,
                offset,
                total,
                idle,
                lease,
            } => {
                write!(f, "ingest {key}: {offset}")?;
                if *total > 0 {
                    write!(f, " of {total}")?;
                }
                write!(f, " bytes, idle {}", human(*idle))?;
                match lease {
                    Some(l) => write!(f, ", lease {l}"),
                    None => write!(f, ", no lease (removed once idle past ingest_expiry)"),
                }
            }
            Note::UncheckedSnapshotter {
                snapshotter,
                records,
                reason,
            } => write!(
                f,
                "{records} snapshot record(s) of snapshotter {snapshotter} not checked: {reason}"
            ),
            Note::IncompleteImage {
                namespace,
                name,
                missing,
            } => write!(
                f,
                "image {name} (namespace {namespace}) is incomplete, {} missing: import or pull it again",
                missing.join(", ")
            ),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "checked {} blob(s), {} blob record(s), {} snapshot record(s), {} driver snapshot(s), {} ingest(s)",
            self.blobs, self.blob_records, self.snapshot_records, self.driver_snapshots, self.ingests
        )
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.found {
            writeln!(f, "{finding}")?;
        }
        for action in &self.actions {
            writeln!(f, "repair: {action}")?;
        }
        if let Some(s) = &self.collected {
            for (ns, digest) in &s.blobs {
                writeln!(f, "gc: removed blob record {digest} (namespace {ns})")?;
            }
            for (ns, id) in &s.leases {
                writeln!(f, "gc: removed expired lease {id} (namespace {ns})")?;
            }
            for (sn, key) in &s.snapshots {
                writeln!(f, "gc: removed snapshot {sn} {key}")?;
            }
            for digest in &s.deleted_files {
                writeln!(f, "gc: removed blob file {digest}")?;
            }
            for key in &s.ingests {
                writeln!(f, "gc: removed ingest {key}")?;
            }
        }
        if self.repair {
            for finding in &self.remaining {
                writeln!(f, "remains: {finding}")?;
            }
        }
        for note in &self.notes {
            writeln!(f, "note: {note}")?;
        }
        let found = self.found.len();
        if !self.repair {
            return match found {
                0 => write!(f, "check: clean; {}", self.counts),
                n => write!(
                    f,
                    "check: {n} problem(s) found (berthd check --repair repairs them); {}",
                    self.counts
                ),
            };
        }
        let remain = self.remaining.len();
        let repaired = self
            .found
            .iter()
            .filter(|x| !self.remaining.contains(x))
            .count();
        match (found, remain) {
            (0, 0) => write!(f, "check: clean; {}", self.counts),
            _ => write!(
                f,
                "check: {found} problem(s) found, {repaired} repaired, {remain} remain; {}",
                self.counts
            ),
        }
    }
}

/// `3h 2m`, `5m 10s`, `42s`: how long an ingest has been idle, to the precision that matters.
fn human(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, minutes, seconds) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_times_read_naturally() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(310)), "5m 10s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 125)), "3h 2m");
        assert_eq!(human(Duration::from_secs(2 * 86_400 + 3600)), "2d 1h");
    }
}
