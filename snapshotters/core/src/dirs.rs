//! The on-disk layout native and overlayfs share — `<root>/snapshots/<id>` next to
//! `<root>/metadata.redb` — and its crash-safe steps, so a driver writes only what goes inside a
//! snapshot's directory.
//!
//! - create: the directory is filled under a temporary name, then renamed to the snapshot's id
//!   inside the metadata transaction; a failure removes it, a crash leaves a `new-*` directory
//!   (or an id directory without a record) that [`SnapshotDirs::cleanup`] removes.
//! - remove: the record goes, and the directory is deleted once that has committed; a crash
//!   leaves a directory without a record, which cleanup removes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::metastore::Snapshot;
use crate::{Kind, MetaStore, SnapshotError};

pub struct SnapshotDirs {
    dir: PathBuf,
}

impl SnapshotDirs {
    /// Creates `<root>/snapshots` (and makes `root` private: snapshots hold image contents).
    pub fn open(root: &Path) -> Result<SnapshotDirs, SnapshotError> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).map_err(SnapshotError::io("create", &dir))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(SnapshotError::io("chmod", root))?;
        Ok(SnapshotDirs { dir })
    }

    /// `<root>/snapshots/<id>`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Records a new snapshot and makes its directory: `fill` receives the new snapshot and a
    /// fresh, empty 0755 directory to populate.
    pub fn create(
        &self,
        ms: &MetaStore,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        fill: impl FnOnce(&Snapshot, &Path) -> Result<(), SnapshotError>,
    ) -> Result<Snapshot, SnapshotError> {
        let tmp = tempfile::Builder::new()
            .prefix("new-")
            .tempdir_in(&self.dir)
            .map_err(SnapshotError::io("create", &self.dir))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(SnapshotError::io("chmod", tmp.path()))?;
        let placed = std::cell::Cell::new(None);
        let snap = ms.write(|tx| {
            let s = tx.create_snapshot(kind, key, parent, labels)?;
            fill(&s, tmp.path())?;
            let dest = self.path(&s.id);
            // The id is new in this transaction, so nothing committed owns a directory of that
            // name: one there was made by a transaction that then aborted (the snapshots store
            // lends its transaction to this write, and commits it after the driver returns).
            if dest.exists() {
                fs::remove_dir_all(&dest).map_err(SnapshotError::io("remove stale", &dest))?;
            }
            fs::rename(tmp.path(), &dest).map_err(SnapshotError::io("rename", &dest))?;
            placed.set(Some(dest));
            Ok(s)
        });
        match snap {
            Ok(s) => {
                // Renamed away: the guard has nothing left to delete.
                let _ = tmp.keep();
                Ok(s)
            }
            Err(e) => {
                // The record was rolled back (and its id with it): the directory must go too, or
                // the next snapshot given the same id would find it in the way.
                if let Some(dest) = placed.take() {
                    let _ = fs::remove_dir_all(dest);
                }
                Err(e)
            }
        }
    }

    /// Removes a snapshot's record, and its directory once that has committed (ids are never
    /// handed out twice, so the directory is in nobody's way meanwhile; a crash first leaves it
    /// without a record, for cleanup). A remove that fails leaves both as they were.
    pub fn remove(&self, ms: &MetaStore, key: &str) -> Result<(), SnapshotError> {
        ms.write(|tx| {
            let (id, _) = tx.remove(key)?;
            let dir = self.path(&id);
            tx.after_commit(move || match fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                // Best effort: cleanup() finishes the job.
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove snapshot directory; cleanup will retry")
                }
            });
            Ok(())
        })
    }

    /// Removes every directory that has no record: half-made, half-removed, or left by a crash.
    pub fn cleanup(&self, ms: &MetaStore) -> Result<(), SnapshotError> {
        let ids = ms.ids()?;
        for entry in fs::read_dir(&self.dir).map_err(SnapshotError::io("read dir", &self.dir))? {
            let entry = entry.map_err(SnapshotError::io("read dir", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if ids.contains_key(&name) {
                continue;
            }
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing snapshot directory without a record");
            fs::remove_dir_all(&path).map_err(SnapshotError::io("remove", &path))?;
        }
        Ok(())
    }
}
