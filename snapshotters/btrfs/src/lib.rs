//! The btrfs snapshotter, registered as `io.containerd.snapshotter.v1.btrfs`. Its root must be on
//! a btrfs filesystem (otherwise the plugin is skipped, as containerd's is).
//!
//! Every snapshot is one subvolume, kept by kind as containerd keeps them:
//! `<root>/active/<id>`, `<root>/view/<id>` and `<root>/snapshots/<id>` (committed). Ids, kinds
//! and parents are in a [`MetaStore`]: the daemon's metadata database in berthd, or
//! `<root>/metadata.redb` for a driver run alone.
//!
//! - prepare without parent: a new empty subvolume; on a parent: a writable snapshot of the
//!   parent's subvolume, which costs no copy;
//! - view: a read-only snapshot of the parent (without parent: an empty read-only subvolume);
//! - commit: a read-only snapshot of the active subvolume as `snapshots/<id>`; the active
//!   subvolume is deleted once the transaction has committed (`Tx::after_commit`);
//! - remove: the record goes, and the subvolume once that has committed.
//!
//! Mounts are what containerd returns: type `btrfs`, the filesystem's block device as source
//! (from the mount table), `subvolid=<id>`, and `ro` for views.
//!
//! Crash safety follows the other drivers: the filesystem work happens inside
//! [`MetaStore::write`], so a failure leaves no record and removes what it made, and a crash
//! leaves at most a subvolume or directory whose id has no record of its kind (a half-made
//! snapshot, the active subvolume of a commit that went through, a committed one of a commit
//! that did not, an `rm-*` being deleted), which [`Snapshotter::cleanup`] removes.
//!
//! Usage: when quotas are enabled (and consistent), a snapshot's size is its subvolume's
//! exclusive bytes from the quota tree, which is what it alone holds; otherwise the walked size
//! of its files, as containerd's driver reports. Inodes are always counted by walking.
//!
//! No staging ([`Snapshotter::staging`] stays `None`, so the unpacker goes layer by layer): a
//! btrfs layer is not an independent directory that can be adopted whole, as overlay's upper
//! is, but a snapshot of its parent with the layer's changes applied on top, whiteouts as
//! deletions. A layer extracted ahead of time would still have to be merged into that snapshot
//! afterwards (deletions applied, files reflinked in), which is a design of its own.

mod ioctl;
pub mod mountinfo;

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin::{types, InitError, Instance, Registration};
use berth_snapshotter::usage::disk_usage;
use berth_snapshotter::{
    Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, SnapshotterInstance, Usage,
};

/// Where each kind of snapshot lives under the root.
fn kind_dir(kind: Kind) -> &'static str {
    match kind {
        Kind::Active => "active",
        Kind::View => "view",
        Kind::Committed => "snapshots",
    }
}

const KINDS: [Kind; 3] = [Kind::Active, Kind::View, Kind::Committed];

pub struct BtrfsSnapshotter {
    root: PathBuf,
    /// The block device of the filesystem holding `root`: every mount's source.
    device: String,
    ms: MetaStore,
}

/// Why `root` cannot hold btrfs snapshots (`None` when it can): it is not on btrfs.
pub fn not_on_btrfs(root: &Path) -> Result<Option<String>, SnapshotError> {
    if ioctl::is_btrfs(root).map_err(SnapshotError::io("statfs", root))? {
        return Ok(None);
    }
    let found = match mountinfo::lookup(root) {
        Ok(m) => format!("{} at {}", m.fs_type, m.mount_point.display()),
        Err(_) => "statfs does not report BTRFS_SUPER_MAGIC".to_owned(),
    };
    Ok(Some(format!(
        "{} is not on btrfs ({found}); mount a btrfs filesystem there to use the btrfs snapshotter",
        root.display()
    )))
}

/// Makes `root` (private, as containerd makes it: snapshots hold image contents) and its kind
/// directories, after checking it is on btrfs; returns the filesystem's block device.
fn prepare_root(root: &Path) -> Result<String, SnapshotError> {
    fs::create_dir_all(root).map_err(SnapshotError::io("create", root))?;
    fs::set_permissions(root, fs::Permissions::from_mode(0o700))
        .map_err(SnapshotError::io("chmod", root))?;
    if let Some(reason) = not_on_btrfs(root)? {
        return Err(SnapshotError::Unsupported(reason));
    }
    let device = mountinfo::lookup(root)
        .map_err(SnapshotError::io("find the mount of", root))?
        .source;
    for kind in KINDS {
        let dir = root.join(kind_dir(kind));
        fs::create_dir_all(&dir).map_err(SnapshotError::io("create", &dir))?;
    }
    Ok(device)
}

impl BtrfsSnapshotter {
    /// A driver alone on `root` (which must be on btrfs), with its metadata in
    /// `<root>/metadata.redb`.
    pub fn new(root: &Path) -> Result<Self, SnapshotError> {
        let device = prepare_root(root)?;
        let ms = MetaStore::open(&root.join("metadata.redb"))?;
        Ok(Self::assemble(root, device, ms))
    }

    /// A driver on `root` (which must be on btrfs) whose metadata is `ms` (the daemon's shared
    /// database).
    pub fn with_metastore(root: &Path, ms: MetaStore) -> Result<Self, SnapshotError> {
        let device = prepare_root(root)?;
        Ok(Self::assemble(root, device, ms))
    }

    fn assemble(root: &Path, device: String, ms: MetaStore) -> Self {
        BtrfsSnapshotter {
            root: root.to_owned(),
            device,
            ms,
        }
    }

    /// The subvolume of snapshot `id` of kind `kind`.
    fn path(&self, kind: Kind, id: &str) -> PathBuf {
        self.root.join(kind_dir(kind)).join(id)
    }

    fn mounts_for(&self, kind: Kind, subvolume: &Path) -> Result<Vec<Mount>, SnapshotError> {
        let id = ioctl::subvolume_id(subvolume)
            .map_err(SnapshotError::io("look up the subvolume id of", subvolume))?;
        let mut options = vec![format!("subvolid={id}")];
        if kind != Kind::Active {
            options.push("ro".into());
        }
        Ok(vec![Mount {
            mount_type: "btrfs".into(),
            source: self.device.clone(),
            target: String::new(),
            options,
        }])
    }

    /// Removes what a crash left where a new subvolume is about to be made. Only called inside
    /// the transaction that just gave the id to this kind, so nothing with a record is there.
    fn clear_leftover(&self, path: &Path) -> Result<(), SnapshotError> {
        if fs::symlink_metadata(path).is_ok() {
            tracing::info!(path = %path.display(), "removing a leftover without a record");
            ioctl::remove_tree(path).map_err(SnapshotError::io("remove leftover", path))?;
        }
        Ok(())
    }

    /// Deletes a subvolume this driver made in a transaction that then failed.
    fn undo(&self, made: Option<PathBuf>) {
        if let Some(path) = made {
            if let Err(e) = ioctl::remove_tree(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove the subvolume of a failed operation; cleanup will retry");
            }
        }
    }

    /// What the subvolume `path` holds: exclusive bytes from the quota tree when quotas are on,
    /// else the walked size; inodes by walking.
    fn measure(&self, path: &Path) -> Result<Usage, SnapshotError> {
        let mut usage = disk_usage(path)?;
        let exclusive = ioctl::subvolume_id(path).and_then(|id| ioctl::qgroup_exclusive(path, id));
        match exclusive {
            Ok(Some(bytes)) => usage.size = i64::try_from(bytes).unwrap_or(i64::MAX),
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(path = %path.display(), error = %e, "cannot read the quota tree; usage by walking");
            }
        }
        Ok(usage)
    }

    /// id -> kind of every snapshot with a record.
    fn known(&self) -> Result<HashMap<String, Kind>, SnapshotError> {
        let mut known = HashMap::new();
        for (id, key) in self.ms.ids()? {
            let (_, info, _) = self.ms.get_info(&key)?;
            known.insert(id, info.kind());
        }
        Ok(known)
    }
}

impl Snapshotter for BtrfsSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.write(|tx| tx.update_info(info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind() == Kind::Active {
            return self.measure(&self.path(Kind::Active, &id));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let s = self.ms.get_snapshot(key)?;
        self.mounts_for(s.kind, &self.path(s.kind, &s.id))
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let made = Cell::new(None);
        let mounts = self.ms.write(|tx| {
            let s = tx.create_snapshot(kind, key, parent, labels)?;
            let target = self.path(kind, &s.id);
            self.clear_leftover(&target)?;
            match s.parent_ids.first() {
                Some(pid) => {
                    let source = self.path(Kind::Committed, pid);
                    ioctl::snapshot(&source, &target, kind == Kind::View)
                        .map_err(SnapshotError::io("snapshot subvolume", &target))?;
                    made.set(Some(target.clone()));
                }
                None => {
                    ioctl::create_subvolume(&target)
                        .map_err(SnapshotError::io("create subvolume", &target))?;
                    made.set(Some(target.clone()));
                    // The mode of a new subvolume's root follows the umask; a root is 0755.
                    fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
                        .map_err(SnapshotError::io("chmod", &target))?;
                    if kind == Kind::View {
                        ioctl::set_readonly(&target, true)
                            .map_err(SnapshotError::io("make read-only", &target))?;
                    }
                }
            }
            self.mounts_for(kind, &target)
        });
        if mounts.is_err() {
            // The record was rolled back (and its id with it): the subvolume goes too.
            self.undo(made.take());
        }
        mounts
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let (id, info, _) = self.ms.get_info(key)?;
        let source = self.path(Kind::Active, &id);
        // Measured before the transaction, as overlay does; a key that is not active is refused
        // by commit_active below, with containerd's error.
        let usage = if info.kind() == Kind::Active {
            self.measure(&source)?
        } else {
            Usage::default()
        };
        let made = Cell::new(None);
        let committed = self.ms.write(|tx| {
            let id = tx.commit_active(key, name, usage, labels)?;
            let target = self.path(Kind::Committed, &id);
            self.clear_leftover(&target)?;
            ioctl::snapshot(&source, &target, true)
                .map_err(SnapshotError::io("snapshot subvolume", &target))?;
            made.set(Some(target));
            // The active subvolume goes once the commit has committed — in berthd after this
            // returns, when the snapshots store commits the transaction it lent — and stays if
            // it aborts, the snapshot still active. A crash first leaves it without a record of
            // its kind, for cleanup.
            let active = source.clone();
            tx.after_commit(move || delete_replaced(&active));
            Ok(())
        });
        if committed.is_err() {
            self.undo(made.take());
        }
        committed
    }

    /// The record goes; the subvolume once that has committed (ids are not handed out twice,
    /// so it is in nobody's way meanwhile, and a crash first leaves it without a record, for
    /// cleanup).
    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.ms.write(|tx| {
            let (id, kind) = tx.remove(key)?;
            let path = self.path(kind, &id);
            tx.after_commit(move || delete_replaced(&path));
            Ok(())
        })
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }

    /// Removes every entry of `active/`, `view/` and `snapshots/` that is not the subvolume of
    /// a snapshot of that kind. It runs in a write transaction, so no create, commit or remove
    /// is half-way meanwhile.
    fn cleanup(&self) -> Result<(), SnapshotError> {
        self.ms.write(|_tx| {
            let known = self.known()?;
            for kind in KINDS {
                let dir = self.root.join(kind_dir(kind));
                for entry in fs::read_dir(&dir).map_err(SnapshotError::io("read dir", &dir))? {
                    let entry = entry.map_err(SnapshotError::io("read dir", &dir))?;
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if known.get(&name) == Some(&kind) {
                        continue;
                    }
                    let path = entry.path();
                    tracing::info!(path = %path.display(), "removing a snapshot subvolume without a record");
                    ioctl::remove_tree(&path).map_err(SnapshotError::io("remove", &path))?;
                }
            }
            Ok(())
        })
    }

    /// Closes the metadata file (the daemon calls it on shutdown); later calls fail.
    fn close(&self) -> Result<(), SnapshotError> {
        self.ms.close()
    }
}

/// Deletes a subvolume (and any nested in it) that a committed change left without a record.
/// Best effort: what fails here, cleanup removes at the next start.
fn delete_replaced(path: &Path) {
    match ioctl::remove_tree(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot delete a subvolume without a record; cleanup will retry");
        }
    }
}

/// The `io.containerd.snapshotter.v1.btrfs` plugin. Skipped when its root is not on btrfs.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, "btrfs", &[types::METADATA], |ctx| {
        ctx.add_platform(berth_oci::platform::format(&berth_oci::host_platform()));
        let root = ctx.root();
        // The root is made first, so what is checked is where it will be.
        fs::create_dir_all(root).map_err(InitError::failed)?;
        if let Some(reason) = not_on_btrfs(root).map_err(InitError::failed)? {
            return Err(InitError::Skip(reason));
        }
        let ms = berth_snapshotter::open_metastore(ctx).map_err(InitError::failed)?;
        let sn = BtrfsSnapshotter::with_metastore(root, ms).map_err(InitError::failed)?;
        ctx.set_export("root", root.display().to_string());
        sn.cleanup().map_err(InitError::failed)?;
        let sn = Arc::new(sn);
        let closing = sn.clone();
        ctx.on_close(move || closing.close());
        Ok(Arc::new(SnapshotterInstance(sn)) as Instance)
    })
}

#[cfg(test)]
mod testfs;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod conformance {
    use std::path::{Path, PathBuf};

    use berth_snapshotter::Snapshotter;
    use berth_snapshotter_testsuite::Quirks;

    use crate::testfs;

    fn make(root: &Path) -> Box<dyn Snapshotter> {
        Box::new(super::BtrfsSnapshotter::new(&testfs::on_btrfs(root)).expect("btrfs snapshotter"))
    }

    /// Committed snapshots, where the crash case leaves its strays.
    fn snapshots_dir(root: &Path) -> PathBuf {
        testfs::on_btrfs(root).join("snapshots")
    }

    berth_snapshotter_testsuite::conformance_tests!(
        make,
        Quirks {
            snapshots_dir,
            ..Quirks::default()
        }
    );
    berth_snapshotter_testsuite::conformance_extra_tests!(make; deep_chain_500);
}
