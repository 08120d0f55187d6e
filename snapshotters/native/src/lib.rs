//! The native snapshotter, registered as `io.containerd.snapshotter.v1.native`: each snapshot
//! is a plain directory `<root>/snapshots/<id>` holding a full copy of its parent. It works on
//! any filesystem, needs no kernel feature, and is the reference the other drivers are compared
//! with. Copies are reflinks where the filesystem supports them (btrfs, xfs).

pub mod copy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin::{types, InitError, Instance, Registration};
use berth_snapshotter::dirs::SnapshotDirs;
use berth_snapshotter::metastore::Snapshot;
use berth_snapshotter::usage::disk_usage;
use berth_snapshotter::{
    Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, SnapshotterInstance, Usage,
};

pub struct NativeSnapshotter {
    dirs: SnapshotDirs,
    ms: MetaStore,
}

impl NativeSnapshotter {
    /// A driver alone on `root`, with its metadata in `<root>/metadata.redb`.
    pub fn new(root: &Path) -> Result<Self, SnapshotError> {
        Self::with_metastore(root, MetaStore::open(&root.join("metadata.redb"))?)
    }

    /// A driver on `root` whose metadata is `ms` (the daemon's shared database).
    pub fn with_metastore(root: &Path, ms: MetaStore) -> Result<Self, SnapshotError> {
        Ok(NativeSnapshotter {
            dirs: SnapshotDirs::open(root)?,
            ms,
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.dirs.path(id)
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

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let snap = self
            .dirs
            .create(&self.ms, kind, key, parent, labels, |s, dir| {
                // The copy happens inside the transaction: if it fails, no record remains.
                match s.parent_ids.first() {
                    Some(pid) => copy::copy_tree(&self.dir(pid), dir),
                    None => Ok(()),
                }
            })?;
        Ok(self.mounts_for(&snap))
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
        self.dirs.remove(&self.ms, key)
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        self.dirs.cleanup(&self.ms)
    }

    /// Closes the metadata file (the daemon calls it on shutdown); later calls fail.
    fn close(&self) -> Result<(), SnapshotError> {
        self.ms.close()
    }
}

/// The `io.containerd.snapshotter.v1.native` plugin.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, "native", &[types::METADATA], |ctx| {
        ctx.add_platform(berth_oci::platform::format(&berth_oci::host_platform()));
        let ms = berth_snapshotter::open_metastore(ctx).map_err(InitError::failed)?;
        let sn = NativeSnapshotter::with_metastore(ctx.root(), ms).map_err(InitError::failed)?;
        ctx.set_export("root", ctx.root().display().to_string());
        sn.cleanup().map_err(InitError::failed)?;
        let sn = Arc::new(sn);
        let closing = sn.clone();
        ctx.on_close(move || closing.close());
        Ok(Arc::new(SnapshotterInstance(sn)) as Instance)
    })
}

#[cfg(test)]
mod conformance {
    use berth_snapshotter::Snapshotter;

    fn make(root: &std::path::Path) -> Box<dyn Snapshotter> {
        Box::new(super::NativeSnapshotter::new(root).expect("native snapshotter"))
    }

    berth_snapshotter_testsuite::conformance_tests!(make);
}
