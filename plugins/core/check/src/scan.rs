//! One pass over the stores: the four checks in order, each repairing (when asked) before the
//! next looks, so a repair's consequences are seen by the checks after it (a corrupt file's
//! records become missing; a deleted record's driver snapshot becomes unreferenced).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_metadata::{MetaError, SnapshotRecord};
use berth_snapshotter::{Mount, SnapshotError, Snapshotter};
use sha2::{Digest as _, Sha256};

use crate::{Action, CheckError, Counts, Finding, Note, SnapshotFault, Stores};

/// `(namespace, snapshotter, key)` of a snapshot record.
type SnapshotId = (String, String, String);

pub(crate) struct Pass {
    pub findings: Vec<Finding>,
    pub counts: Counts,
}

impl Pass {
    /// Runs the checks; with `hash`, every blob file is read and hashed; with `actions`, what is
    /// found is repaired and each repair recorded there.
    pub fn run(
        stores: &Stores,
        hash: bool,
        mut actions: Option<&mut Vec<Action>>,
    ) -> Result<Pass, CheckError> {
        let mut pass = Pass {
            findings: Vec::new(),
            counts: Counts::default(),
        };
        let mut files = pass.blob_files(stores, hash, actions.as_deref_mut())?;
        let recorded = pass.blob_records(stores, &files, actions.as_deref_mut())?;
        pass.snapshot_records(stores, actions)?;
        // Corrupt files are reported once, as corrupt, even when nothing records them either.
        for f in &pass.findings {
            if let Finding::CorruptBlob { digest, .. } = f {
                files.remove(digest);
            }
        }
        pass.unreferenced(stores, &files, &recorded)?;
        Ok(pass)
    }

    /// Check 1: every blob file hashes to its name. Returns the files still there.
    fn blob_files(
        &mut self,
        stores: &Stores,
        hash: bool,
        mut actions: Option<&mut Vec<Action>>,
    ) -> Result<BTreeSet<String>, CheckError> {
        let local = stores.content.local();
        let mut files: BTreeSet<String> = local.list_blobs()?.into_iter().collect();
        self.counts.blobs = files.len();
        if !hash {
            return Ok(files);
        }
        for digest in files.clone() {
            let actual = match berth_oci::Digest::parse(&digest) {
                Ok(_) => Some(sha256_of(&local.blob_path(&digest))?),
                // A name that is no digest cannot be served under any digest either.
                Err(_) => None,
            };
            if actual.as_deref() == Some(digest.as_str()) {
                continue;
            }
            self.findings.push(Finding::CorruptBlob {
                digest: digest.clone(),
                actual,
            });
            if let Some(actions) = actions.as_deref_mut() {
                local.delete_blob(&digest)?;
                files.remove(&digest);
                actions.push(Action::RemovedBlobFile { digest });
            }
        }
        Ok(files)
    }

    /// Check 2: every blob record has its file. Returns the digests still recorded.
    fn blob_records(
        &mut self,
        stores: &Stores,
        files: &BTreeSet<String>,
        mut actions: Option<&mut Vec<Action>>,
    ) -> Result<BTreeSet<String>, CheckError> {
        let records = stores.db.all_blobs()?;
        self.counts.blob_records = records.len();
        let mut recorded = BTreeSet::new();
        for (namespace, info) in records {
            if files.contains(&info.digest) {
                recorded.insert(info.digest);
                continue;
            }
            self.findings.push(Finding::MissingBlob {
                namespace: namespace.clone(),
                digest: info.digest.clone(),
            });
            match actions.as_deref_mut() {
                Some(actions) => {
                    stores.db.delete_blob(&namespace, &info.digest)?;
                    actions.push(Action::DeletedBlobRecord {
                        namespace,
                        digest: info.digest,
                    });
                }
                None => {
                    recorded.insert(info.digest);
                }
            }
        }
        Ok(recorded)
    }

    /// Check 3: every snapshot record stands for a usable driver snapshot on a sound parent.
    fn snapshot_records(
        &mut self,
        stores: &Stores,
        actions: Option<&mut Vec<Action>>,
    ) -> Result<(), CheckError> {
        let records: BTreeMap<SnapshotId, SnapshotRecord> = stores
            .db
            .all_snapshot_records()?
            .into_iter()
            .map(|(ns, sn, rec)| ((ns, sn, rec.key.clone()), rec))
            .collect();
        self.counts.snapshot_records = records.len();
        let mut faults: BTreeMap<SnapshotId, SnapshotFault> = BTreeMap::new();
        for (id, rec) in &records {
            // Records of a snapshotter that is not open are noted as unchecked, not judged.
            let Some(driver) = stores.drivers.get(&id.1) else {
                continue;
            };
            let fault = match driver_fault(driver.as_ref(), &id.1, &rec.backend_key)? {
                Some(f) => Some(f),
                None if !rec.parent.is_empty()
                    && !records.contains_key(&(id.0.clone(), id.1.clone(), rec.parent.clone())) =>
                {
                    Some(SnapshotFault::NoParentRecord(rec.parent.clone()))
                }
                None => None,
            };
            if let Some(f) = fault {
                faults.insert(id.clone(), f);
            }
        }
        // A snapshot on an unsound parent is unsound too: its layers are not all there.
        loop {
            let mut more = Vec::new();
            for (id, rec) in &records {
                if rec.parent.is_empty() || faults.contains_key(id) {
                    continue;
                }
                if faults.contains_key(&(id.0.clone(), id.1.clone(), rec.parent.clone())) {
                    more.push((id.clone(), SnapshotFault::ParentUnsound(rec.parent.clone())));
                }
            }
            if more.is_empty() {
                break;
            }
            faults.extend(more);
        }
        for (id, fault) in &faults {
            self.findings.push(Finding::MissingSnapshot {
                namespace: id.0.clone(),
                snapshotter: id.1.clone(),
                key: id.2.clone(),
                backend_key: records
                    .get(id)
                    .map(|r| r.backend_key.clone())
                    .unwrap_or_default(),
                fault: fault.clone(),
            });
        }
        let Some(actions) = actions else {
            return Ok(());
        };
        // Children first: the store refuses to remove a record that still has a child, and
        // every child of an unsound record is unsound too, so each removal finds its children
        // gone.
        let depth = |id: &SnapshotId| {
            let mut d = 0usize;
            let mut cur = records
                .get(id)
                .map(|r| r.parent.clone())
                .unwrap_or_default();
            while !cur.is_empty() && d <= records.len() {
                d += 1;
                cur = records
                    .get(&(id.0.clone(), id.1.clone(), cur))
                    .map(|r| r.parent.clone())
                    .unwrap_or_default();
            }
            d
        };
        let mut order: Vec<&SnapshotId> = faults.keys().collect();
        order.sort_by_key(|id| std::cmp::Reverse(depth(id)));
        for (ns, sn, key) in order {
            match stores.db.remove_snapshot_record(ns, sn, key) {
                Ok(_) | Err(MetaError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            actions.push(Action::DeletedSnapshotRecord {
                namespace: ns.clone(),
                snapshotter: sn.clone(),
                key: key.clone(),
            });
        }
        Ok(())
    }

    /// Check 4: driver snapshots no record points to, blob files no record names, ingests whose
    /// lease is gone — what one collection removes.
    fn unreferenced(
        &mut self,
        stores: &Stores,
        files: &BTreeSet<String>,
        recorded: &BTreeSet<String>,
    ) -> Result<(), CheckError> {
        let live = stores.db.live_snapshot_backends()?;
        for (sn, driver) in &stores.drivers {
            let mut keys = Vec::new();
            driver
                .walk(&mut |info| {
                    keys.push(info.name.clone());
                    true
                })
                .map_err(CheckError::snapshot(sn))?;
            self.counts.driver_snapshots += keys.len();
            keys.sort();
            for backend_key in keys {
                if !live.get(sn).is_some_and(|l| l.contains(&backend_key)) {
                    self.findings.push(Finding::UnreferencedSnapshot {
                        snapshotter: sn.clone(),
                        backend_key,
                    });
                }
            }
        }
        for digest in files.difference(recorded) {
            self.findings.push(Finding::UnreferencedBlob {
                digest: digest.clone(),
            });
        }
        let ingests = stores.content.local().list_ingests()?;
        self.counts.ingests = ingests.len();
        for ingest in ingests {
            // An unleased ingest is a client's to resume until it goes stale (a note); one
            // opened under a lease lives exactly as long as a lease holds it, as the collector
            // decides.
            let Some(lease) = ingest.lease else { continue };
            let (ns, reference) = ingest.key.split_once('/').unwrap_or(("", &ingest.key));
            if !stores.db.ingest_leased(ns, reference)? {
                self.findings.push(Finding::UnreferencedIngest {
                    key: ingest.key,
                    lease,
                });
            }
        }
        Ok(())
    }
}

/// Whether the driver's snapshot `key` is missing or unusable.
fn driver_fault(
    driver: &dyn Snapshotter,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotFault>, CheckError> {
    match driver.stat(key) {
        Ok(_) => {}
        Err(SnapshotError::NotFound(_)) => return Ok(Some(SnapshotFault::NotInDriver)),
        Err(e) => return Err(CheckError::snapshot(sn)(e)),
    }
    // The driver's own record does not make a usable snapshot: the directories its mounts name
    // must be there too (a crash cannot lose one, a failing disk or a hand can).
    let mounts = match driver.mounts(key) {
        Ok(m) => m,
        Err(SnapshotError::NotFound(_)) => return Ok(Some(SnapshotFault::NotInDriver)),
        // A driver that cannot say (a proxy refusing Mounts of a committed snapshot) is
        // trusted on its Stat.
        Err(_) => return Ok(None),
    };
    for path in mounts.iter().flat_map(mount_paths) {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Some(SnapshotFault::PathGone(path)))
            }
            _ => {}
        }
    }
    Ok(None)
}

/// The local directories a mount needs: a bind's source, an overlay's upper, work and lower
/// directories.
fn mount_paths(m: &Mount) -> Vec<PathBuf> {
    let paths = if let Some(o) = m.overlay_options() {
        o.upperdir
            .into_iter()
            .chain(o.workdir)
            .chain(o.lowerdirs)
            .collect()
    } else if m.mount_type == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind") {
        vec![PathBuf::from(&m.source)]
    } else {
        Vec::new()
    };
    paths.into_iter().filter(|p| p.is_absolute()).collect()
}

fn sha256_of(path: &Path) -> Result<String, CheckError> {
    let read = |source| CheckError::ReadBlob {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(read)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(berth_oci::Digest::from_sha256(hasher.finalize().into()).into_string())
}

/// What is worth knowing about the stores as they are now.
pub(crate) fn notes(stores: &Stores) -> Result<Vec<Note>, CheckError> {
    let local = stores.content.local();
    let mut notes: Vec<Note> = local
        .repaired_at_open()
        .iter()
        .cloned()
        .map(Note::RepairedAtOpen)
        .collect();
    let now = berth_metadata::now_nanos();
    for ingest in local.list_ingests()? {
        let idle = u64::try_from(now.saturating_sub(ingest.updated_at)).unwrap_or(0);
        notes.push(Note::Ingest {
            key: ingest.key,
            offset: ingest.offset,
            total: ingest.total,
            idle: Duration::from_nanos(idle),
            lease: ingest.lease,
        });
    }
    let mut unchecked: BTreeMap<String, usize> = BTreeMap::new();
    for (_, sn, _) in stores.db.all_snapshot_records()? {
        if !stores.drivers.contains_key(&sn) {
            *unchecked.entry(sn).or_default() += 1;
        }
    }
    for (snapshotter, records) in unchecked {
        let reason = stores
            .unavailable
            .get(&snapshotter)
            .cloned()
            .unwrap_or_else(|| "no such snapshotter is configured".to_owned());
        notes.push(Note::UncheckedSnapshotter {
            snapshotter,
            records,
            reason,
        });
    }
    notes.extend(incomplete_images(stores)?);
    Ok(notes)
}

/// Images whose content (from the target, through the `containerd.io/gc.ref.content` labels the
/// collector follows) is not all recorded in their namespace.
fn incomplete_images(stores: &Stores) -> Result<Vec<Note>, CheckError> {
    let blobs: HashMap<(String, String), BTreeMap<String, String>> = stores
        .db
        .all_blobs()?
        .into_iter()
        .map(|(ns, info)| ((ns, info.digest), info.labels))
        .collect();
    let mut notes = Vec::new();
    for ns in stores.db.list_namespaces()? {
        for image in stores.db.list_images(&ns.name)? {
            let mut seen = BTreeSet::new();
            let mut missing = Vec::new();
            let mut queue = VecDeque::from([image.target.digest.clone()]);
            while let Some(digest) = queue.pop_front() {
                if !seen.insert(digest.clone()) {
                    continue;
                }
                let Some(labels) = blobs.get(&(ns.name.clone(), digest.clone())) else {
                    missing.push(digest);
                    continue;
                };
                queue.extend(
                    labels
                        .iter()
                        .filter(|(k, _)| is_content_ref(k))
                        .map(|(_, v)| v.clone()),
                );
            }
            if !missing.is_empty() {
                notes.push(Note::IncompleteImage {
                    namespace: ns.name.clone(),
                    name: image.name,
                    missing,
                });
            }
        }
    }
    Ok(notes)
}

/// `containerd.io/gc.ref.content`, `….content.<x>` or `….content/<x>`, as the collector reads it.
fn is_content_ref(label: &str) -> bool {
    label
        .strip_prefix(berth_metadata::gc::REF_CONTENT)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('/'))
}
