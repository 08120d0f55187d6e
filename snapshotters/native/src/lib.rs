//! The native snapshotter, registered as `io.containerd.snapshotter.v1.native`: each snapshot
//! is a plain directory `<root>/snapshots/<id>` holding a full copy of its parent. It works on
//! any filesystem, needs no kernel feature, and is the reference the other drivers are compared
//! with. Copies are reflinks where the filesystem supports them (btrfs, xfs).

pub mod copy;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin::{types, InitError, Instance, Registration};
use berth_snapshotter::metastore::Snapshot;
use berth_snapshotter::usage::disk_usage;
use berth_snapshotter::{
    Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, SnapshotterInstance, Usage,
};

pub struct NativeSnapshotter {
    root: PathBuf,
    ms: MetaStore,
}

impl NativeSnapshotter {
    pub fn new(root: &Path) -> Result<Self, SnapshotError> {
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).map_err(SnapshotError::io("create", &snapshots))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(SnapshotError::io("chmod", root))?;
        Ok(NativeSnapshotter {
            root: root.to_owned(),
            ms: MetaStore::open(&root.join("metadata.redb"))?,
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join("snapshots").join(id)
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        vec![Mount {
            mount_type: "bind".into(),
            source: self.dir(&s.id).display().to_string(),
            target: String::new(),
            options: vec![
                if s.kind == Kind::View { "ro" } else { "rw" }.into(),
                "rbind".into(),
            ],
        }]
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let snapshots = self.root.join("snapshots");
        let tmp = tempfile::Builder::new()
            .prefix("new-")
            .tempdir_in(&snapshots)
            .map_err(SnapshotError::io("create", &snapshots))?;
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
            .map_err(SnapshotError::io("chmod", tmp.path()))?;
        let placed = std::cell::Cell::new(None);
        let snap = self.ms.write(|tx| {
            let s = tx.create_snapshot(kind, key, parent, labels)?;
            if let Some(pid) = s.parent_ids.first() {
                // The copy happens inside the transaction: if it fails, no record remains.
                copy::copy_tree(&self.dir(pid), tmp.path())?;
            }
            let dest = self.dir(&s.id);
            fs::rename(tmp.path(), &dest).map_err(SnapshotError::io("rename", &dest))?;
            placed.set(Some(dest));
            Ok(s)
        });
        let snap = match snap {
            Ok(s) => s,
            Err(e) => {
                // The record was rolled back (and its id with it): the directory must go too, or
                // the next snapshot given the same id would find it in the way.
                if let Some(dest) = placed.take() {
                    let _ = fs::remove_dir_all(dest);
                }
                return Err(e);
            }
        };
        let _ = tmp.keep();
        Ok(self.mounts_for(&snap))
    }
}

impl Snapshotter for NativeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.write(|tx| tx.update_info(info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind() == Kind::Active {
            return disk_usage(&self.dir(&id));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        Ok(self.mounts_for(&self.ms.get_snapshot(key)?))
    }

    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::Active, key, parent, labels)
    }

    fn view(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::View, key, parent, labels)
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let (id, _, _) = self.ms.get_info(key)?;
        let usage = disk_usage(&self.dir(&id))?;
        self.ms
            .write(|tx| tx.commit_active(key, name, usage, labels))?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let trash = self.ms.write(|tx| {
            let (id, _) = tx.remove(key)?;
            let dir = self.dir(&id);
            let trash = self.root.join("snapshots").join(format!("rm-{id}"));
            match fs::rename(&dir, &trash) {
                Ok(()) => Ok(Some(trash)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(SnapshotError::io("rename", &dir)(e)),
            }
        })?;
        if let Some(trash) = trash {
            if let Err(e) = fs::remove_dir_all(&trash) {
                tracing::warn!(path = %trash.display(), error = %e, "cannot remove snapshot directory; cleanup will retry");
            }
        }
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let ids = self.ms.ids()?;
        let snapshots = self.root.join("snapshots");
        for entry in fs::read_dir(&snapshots).map_err(SnapshotError::io("read dir", &snapshots))? {
            let entry = entry.map_err(SnapshotError::io("read dir", &snapshots))?;
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

    fn close(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
}

/// The `io.containerd.snapshotter.v1.native` plugin.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, "native", &[], |ctx| {
        ctx.add_platform("linux/amd64");
        let sn = NativeSnapshotter::new(ctx.root()).map_err(InitError::failed)?;
        ctx.set_export("root", ctx.root().display().to_string());
        sn.cleanup().map_err(InitError::failed)?;
        Ok(Arc::new(SnapshotterInstance(Arc::new(sn))) as Instance)
    })
}

#[cfg(test)]
mod conformance {
    use berth_snapshotter::Snapshotter;

    fn make(root: &std::path::Path) -> Box<dyn Snapshotter> {
        Box::new(super::NativeSnapshotter::new(root).expect("native snapshotter"))
    }

    berth_snapshotter::conformance_tests!(make);
}
