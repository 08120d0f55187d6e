//! The overlayfs snapshotter, registered as `io.containerd.snapshotter.v1.overlayfs`.
//!
//! Each snapshot is `<root>/snapshots/<id>/{fs,work}`. An active snapshot without parent is a
//! bind mount of its `fs`; a view of one parent is a read-only bind of the parent's `fs`;
//! otherwise an overlay with the parents' `fs` as lower layers (nearest first) and, for an active
//! snapshot, its own `fs`/`work` as upper/work. Committing only changes metadata: the upper dir
//! becomes a lower dir as it is, so a commit costs no copy.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_mount::OverlayOptions;
use berth_plugin::{types, InitError, Instance, Registration};
use berth_snapshotter::dirs::SnapshotDirs;
use berth_snapshotter::metastore::Snapshot;
use berth_snapshotter::usage::disk_usage;
use berth_snapshotter::{Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, Staging, Usage};

pub struct OverlaySnapshotter {
    root: PathBuf,
    dirs: SnapshotDirs,
    ms: MetaStore,
    /// Options every overlay mount gets (`index=off`), decided once at start.
    extra_options: Vec<String>,
    /// Whether overlay keeps its metadata in `user.` xattrs here (see [`needs_userxattr`]).
    userxattr: bool,
}

/// Whether the overlay module has the `index` feature (then Berth turns it off, as containerd
/// does, so a lower layer shared by many snapshots is never tied to one upper).
fn supports_index() -> bool {
    Path::new("/sys/module/overlay/parameters/index").exists()
}

/// In a user namespace other than the initial one, trusted.* xattrs are out of reach and overlay
/// must keep its metadata in user.* xattrs.
fn needs_userxattr() -> bool {
    match fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let first: Vec<&str> = map.split_whitespace().collect();
            !(first.len() >= 3 && first[0] == "0" && first[1] == "0" && first[2] == "4294967295")
        }
        Err(_) => false,
    }
}

fn overlay_available() -> bool {
    fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.trim_end().ends_with("\toverlay") || l.trim() == "nodev\toverlay")
        })
        .unwrap_or(false)
}

impl OverlaySnapshotter {
    /// A driver alone on `root`, with its metadata in `<root>/metadata.redb`.
    pub fn new(root: &Path) -> Result<Self, SnapshotError> {
        Self::with_metastore(root, MetaStore::open(&root.join("metadata.redb"))?)
    }

    /// A driver on `root` whose metadata is `ms` (the daemon's shared database).
    pub fn with_metastore(root: &Path, ms: MetaStore) -> Result<Self, SnapshotError> {
        let dirs = SnapshotDirs::open(root)?;
        // Layers being extracted when the last daemon stopped are of no use now.
        let staging = root.join("staging");
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir_all(&staging).map_err(SnapshotError::io("create", &staging))?;
        let mut extra_options = Vec::new();
        if supports_index() {
            extra_options.push("index=off".to_owned());
        }
        Ok(OverlaySnapshotter {
            root: root.to_owned(),
            dirs,
            ms,
            extra_options,
            userxattr: needs_userxattr(),
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.dirs.path(id)
    }

    fn upper(&self, id: &str) -> PathBuf {
        self.dir(id).join("fs")
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let bind = |path: PathBuf, ro: bool| Mount {
            mount_type: "bind".into(),
            source: path.display().to_string(),
            target: String::new(),
            options: vec![if ro { "ro" } else { "rw" }.into(), "rbind".into()],
        };
        if s.parent_ids.is_empty() {
            // No parent: the snapshot's own directory (empty for a view).
            return vec![bind(self.upper(&s.id), s.kind == Kind::View)];
        }
        if s.kind == Kind::View && s.parent_ids.len() == 1 {
            return vec![bind(self.upper(&s.parent_ids[0]), true)];
        }
        let active = s.kind == Kind::Active;
        let options = OverlayOptions {
            upperdir: active.then(|| self.upper(&s.id)),
            workdir: active.then(|| self.dir(&s.id).join("work")),
            lowerdirs: s.parent_ids.iter().map(|id| self.upper(id)).collect(),
            userxattr: self.userxattr,
            other: self.extra_options.clone(),
        };
        vec![Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: options.to_options(),
        }]
    }
}

impl Snapshotter for OverlaySnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.write(|tx| tx.update_info(info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind() == Kind::Active {
            return disk_usage(&self.upper(&id));
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
                let fs_dir = dir.join("fs");
                fs::create_dir(&fs_dir).map_err(SnapshotError::io("create", &fs_dir))?;
                fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
                    .map_err(SnapshotError::io("chmod", &fs_dir))?;
                let work = dir.join("work");
                fs::create_dir(&work).map_err(SnapshotError::io("create", &work))?;
                if let Some(pid) = s.parent_ids.first() {
                    // The new upper starts with the parent's root ownership, as containerd does, so
                    // an image whose root is not root-owned keeps it.
                    let parent_fs = self.upper(pid);
                    let pmeta =
                        fs::metadata(&parent_fs).map_err(SnapshotError::io("stat", &parent_fs))?;
                    nix::unistd::chown(
                        &fs_dir,
                        Some(nix::unistd::Uid::from_raw(pmeta.uid())),
                        Some(nix::unistd::Gid::from_raw(pmeta.gid())),
                    )
                    .map_err(SnapshotError::errno("chown", &fs_dir))?;
                }
                Ok(())
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
        let usage = disk_usage(&self.upper(&id))?;
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

    fn staging(&self) -> Option<Staging> {
        Some(Staging {
            dir: self.root.join("staging"),
            userxattr: self.userxattr,
        })
    }

    fn adopt(&self, key: &str, staged: &Path) -> Result<(), SnapshotError> {
        let s = self.ms.get_snapshot(key)?;
        if s.kind != Kind::Active {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} is not active"
            )));
        }
        if !staged.starts_with(self.root.join("staging")) {
            return Err(SnapshotError::InvalidArgument(format!(
                "{} is not in this snapshotter's staging directory",
                staged.display()
            )));
        }
        let upper = self.upper(&s.id);
        // The fresh upper must be empty: nothing written to the snapshot may be lost.
        let written = fs::read_dir(&upper)
            .map_err(SnapshotError::io("read upper", &upper))?
            .next()
            .is_some();
        if written {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} has already been written to"
            )));
        }
        // One atomic exchange: at every instant the snapshot has an upper directory, so a crash
        // here leaves either the empty upper or the extracted layer, never none (removing the
        // empty upper first and renaming after did, and left an active snapshot without `fs`).
        // What the exchange moved into staging is removed now, or with staging at start-up.
        match nix::fcntl::renameat2(
            nix::fcntl::AT_FDCWD,
            staged,
            nix::fcntl::AT_FDCWD,
            &upper,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => {
                if let Err(e) = fs::remove_dir(staged) {
                    tracing::warn!(path = %staged.display(), error = %e, "remove the replaced empty upper");
                }
                Ok(())
            }
            // A file system without RENAME_EXCHANGE: the two steps, as before.
            Err(nix::errno::Errno::EINVAL) => {
                fs::remove_dir(&upper).map_err(SnapshotError::io("remove empty upper", &upper))?;
                fs::rename(staged, &upper).map_err(SnapshotError::io("adopt layer", &upper))
            }
            Err(e) => Err(SnapshotError::io("adopt layer", &upper)(
                std::io::Error::from(e),
            )),
        }
    }
}

/// The `io.containerd.snapshotter.v1.overlayfs` plugin.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, "overlayfs", &[types::METADATA], |ctx| {
        ctx.add_platform(berth_oci::platform::format(&berth_oci::host_platform()));
        if !overlay_available() {
            return Err(InitError::Skip(
                "overlay is not supported by this kernel (no overlay in /proc/filesystems)".into(),
            ));
        }
        let ms = berth_snapshotter::open_metastore(ctx).map_err(InitError::failed)?;
        let sn = OverlaySnapshotter::with_metastore(ctx.root(), ms).map_err(InitError::failed)?;
        ctx.set_export("root", ctx.root().display().to_string());
        sn.cleanup().map_err(InitError::failed)?;
        let sn = Arc::new(sn);
        let closing = sn.clone();
        ctx.on_close(move || closing.close());
        Ok(Arc::new(berth_snapshotter::SnapshotterInstance(sn)) as Instance)
    })
}

#[cfg(test)]
mod conformance {
    use berth_snapshotter::Snapshotter;
    use berth_snapshotter_testsuite::Quirks;

    fn make(root: &std::path::Path) -> Box<dyn Snapshotter> {
        Box::new(super::OverlaySnapshotter::new(root).expect("overlay snapshotter"))
    }

    // Renaming a directory that lives in a lower layer needs overlay's redirect_dir, which
    // containerd does not enable either; the suite skips that part for overlay, as containerd's.
    berth_snapshotter_testsuite::conformance_tests!(
        make,
        Quirks {
            rename_lower_dirs: false,
            ..Quirks::default()
        }
    );
    berth_snapshotter_testsuite::conformance_extra_tests!(make; deep_chain_500);
}
