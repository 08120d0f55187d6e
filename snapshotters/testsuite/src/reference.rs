//! The suite run on a reference driver, a test double in two flavours (a copy driver and an
//! overlay one), and checks that the suite's own comparisons can fail.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use berth_snapshotter::metastore::Snapshot;
use berth_snapshotter::{Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, Usage};

use crate::ops::{self, apply, dir, file, link, remove_all, set_xattr, symlink};
use crate::{tree_differences, Quirks};

/// A test double. As a copy driver, each snapshot is a full copy (`cp -a`) of its parent in
/// `<root>/snapshots/<id>/fs`, mounted as one bind mount (read-only for a view). As an
/// overlay driver, nothing is copied and a snapshot with parents is an overlay of their `fs`
/// (so the suite's expectations are checked against overlayfs and `mount.rs`'s deep stacks).
struct CopyDriver {
    root: PathBuf,
    ms: MetaStore,
    overlay: bool,
}

fn cp_a(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from.join("."))
        .arg(to)
        .output()
        .map_err(SnapshotError::io("run cp", from))?;
    if !out.status.success() {
        return Err(SnapshotError::Io {
            op: "cp -a",
            path: from.to_owned(),
            source: io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(())
}

fn usage_of(dir: &Path) -> Result<Usage, SnapshotError> {
    let mut seen = BTreeSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).map_err(SnapshotError::io("read dir", &d))? {
            let p = entry.map_err(SnapshotError::io("read dir", &d))?.path();
            let m = fs::symlink_metadata(&p).map_err(SnapshotError::io("stat", &p))?;
            if m.is_dir() {
                stack.push(p);
            }
            if seen.insert(m.ino()) {
                usage.inodes += 1;
                usage.size += m.len() as i64;
            }
        }
    }
    Ok(usage)
}

impl CopyDriver {
    fn open(root: &Path) -> Result<CopyDriver, SnapshotError> {
        let snapshots = root.join("snapshots");
        fs::create_dir_all(&snapshots).map_err(SnapshotError::io("create", &snapshots))?;
        Ok(CopyDriver {
            root: root.to_owned(),
            ms: MetaStore::open(&root.join("metadata.redb"))?,
            overlay: false,
        })
    }

    fn open_overlay(root: &Path) -> Result<CopyDriver, SnapshotError> {
        Ok(CopyDriver {
            overlay: true,
            ..CopyDriver::open(root)?
        })
    }

    fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    fn fs_dir(&self, id: &str) -> PathBuf {
        self.snapshots().join(id).join("fs")
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let mode = if s.kind == Kind::View { "ro" } else { "rw" };
        let bind = |id: &str| {
            vec![Mount {
                mount_type: "bind".into(),
                source: self.fs_dir(id).display().to_string(),
                target: String::new(),
                options: vec!["rbind".into(), mode.into()],
            }]
        };
        if !self.overlay || s.parent_ids.is_empty() {
            return bind(&s.id);
        }
        if s.kind == Kind::View && s.parent_ids.len() == 1 {
            // overlayfs needs two lower layers when it has no upper one.
            return bind(&s.parent_ids[0]);
        }
        let mut options = vec!["index=off".to_string()];
        if s.kind == Kind::Active {
            let dir = self.snapshots().join(&s.id);
            options.push(format!("workdir={}", dir.join("work").display()));
            options.push(format!("upperdir={}", dir.join("fs").display()));
        } else {
            options.push("ro".into());
        }
        let lower: Vec<String> = s
            .parent_ids
            .iter()
            .map(|id| self.fs_dir(id).display().to_string())
            .collect();
        options.push(format!("lowerdir={}", lower.join(":")));
        vec![Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options,
        }]
    }
}

impl Snapshotter for CopyDriver {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.write(|tx| tx.update_info(info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        match info.kind() {
            Kind::Active => usage_of(&self.fs_dir(&id)),
            _ => Ok(usage),
        }
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
        let snapshots = self.snapshots();
        let tmp = tempfile::Builder::new()
            .prefix("new-")
            .tempdir_in(&snapshots)
            .map_err(SnapshotError::io("create", &snapshots))?;
        let fs_dir = tmp.path().join("fs");
        fs::create_dir(&fs_dir).map_err(SnapshotError::io("create", &fs_dir))?;
        fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
            .map_err(SnapshotError::io("chmod", &fs_dir))?;
        if self.overlay {
            let work = tmp.path().join("work");
            fs::create_dir(&work).map_err(SnapshotError::io("create", &work))?;
        }
        let s = self.ms.write(|tx| {
            let s = tx.create_snapshot(kind, key, parent, labels)?;
            match s.parent_ids.first() {
                Some(pid) if !self.overlay => cp_a(&self.fs_dir(pid), &fs_dir)?,
                _ => {}
            }
            let dest = snapshots.join(&s.id);
            fs::rename(tmp.path(), &dest).map_err(SnapshotError::io("rename", &dest))?;
            Ok(s)
        })?;
        Ok(self.mounts_for(&s))
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let (id, _, _) = self.ms.get_info(key)?;
        let usage = usage_of(&self.fs_dir(&id))?;
        self.ms
            .write(|tx| tx.commit_active(key, name, usage, labels))
            .map(drop)
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let trash = self.ms.write(|tx| {
            let (id, _) = tx.remove(key)?;
            let (dir, trash) = (
                self.snapshots().join(&id),
                self.snapshots().join(format!("rm-{id}")),
            );
            fs::rename(&dir, &trash).map_err(SnapshotError::io("rename", &dir))?;
            Ok(trash)
        })?;
        fs::remove_dir_all(&trash).map_err(SnapshotError::io("remove", &trash))
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        let ids = self.ms.ids()?;
        let snapshots = self.snapshots();
        for entry in fs::read_dir(&snapshots).map_err(SnapshotError::io("read dir", &snapshots))? {
            let entry = entry.map_err(SnapshotError::io("read dir", &snapshots))?;
            if !ids.contains_key(&*entry.file_name().to_string_lossy()) {
                let p = entry.path();
                fs::remove_dir_all(&p).map_err(SnapshotError::io("remove", &p))?;
            }
        }
        Ok(())
    }

    fn close(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
}

fn make(root: &Path) -> Box<dyn Snapshotter> {
    Box::new(CopyDriver::open(root).expect("open the copy driver"))
}

crate::conformance_tests!(make);
crate::conformance_extra_tests!(make; deep_chain(60));

/// The suite on the overlay double, as the overlayfs driver runs it.
mod overlay {
    use super::*;

    fn make(root: &Path) -> Box<dyn Snapshotter> {
        Box::new(CopyDriver::open_overlay(root).expect("open the overlay double"))
    }

    crate::conformance_tests!(
        make,
        Quirks {
            rename_lower_dirs: false,
            ..Quirks::default()
        }
    );
    crate::conformance_extra_tests!(make; deep_chain_500);
}

/// The checks must be able to fail: the tree comparison sees each kind of difference.
#[test]
fn tree_differences_are_found() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ops = [
        file("/f", "x", 0o644),
        link("/f", "/f2"),
        symlink("f", "/s"),
        dir("/d", 0o755),
        set_xattr("/d", "user.k", "v"),
    ];
    apply(a.path(), &ops).unwrap();
    apply(b.path(), &ops).unwrap();
    assert!(tree_differences(a.path(), b.path()).unwrap().is_empty());
    let changes = [
        file("/f", "y", 0o600),
        remove_all("/f2"),
        file("/f2", "x", 0o644),
        remove_all("/s"),
        symlink("elsewhere", "/s"),
        ops::chown("/d", 1, 1),
        set_xattr("/d", "user.k", "w"),
        file("/extra", "", 0o644),
    ];
    apply(b.path(), &changes).unwrap();
    let diffs = tree_differences(a.path(), b.path()).unwrap().join("\n");
    for want in [
        "/f: content \"y\"",
        "/f: mode 0600",
        "/s: symlink to elsewhere",
        "/d: owner 1:1",
        "/d: xattrs {user.k=\"w\"}",
        "/extra: unexpected file",
        "hardlink groups",
    ] {
        assert!(diffs.contains(want), "{want:?} not reported in:\n{diffs}");
    }
}

/// A driver whose views are writable fails `view_readonly`.
#[test]
#[should_panic(expected = "should fail (EROFS) but succeeded")]
fn writable_views_are_caught() {
    struct Writable(CopyDriver);
    impl Snapshotter for Writable {
        fn stat(&self, k: &str) -> Result<Info, SnapshotError> {
            self.0.stat(k)
        }
        fn update(&self, i: &Info, p: &[String]) -> Result<Info, SnapshotError> {
            self.0.update(i, p)
        }
        fn usage(&self, k: &str) -> Result<Usage, SnapshotError> {
            self.0.usage(k)
        }
        fn mounts(&self, k: &str) -> Result<Vec<Mount>, SnapshotError> {
            self.0.mounts(k)
        }
        fn create(
            &self,
            kind: Kind,
            k: &str,
            p: &str,
            l: BTreeMap<String, String>,
        ) -> Result<Vec<Mount>, SnapshotError> {
            let mut m = self.0.create(kind, k, p, l)?;
            if kind == Kind::View {
                m[0].options.retain(|o| o != "ro");
            }
            Ok(m)
        }
        fn commit(
            &self,
            n: &str,
            k: &str,
            l: BTreeMap<String, String>,
        ) -> Result<(), SnapshotError> {
            self.0.commit(n, k, l)
        }
        fn remove(&self, k: &str) -> Result<(), SnapshotError> {
            self.0.remove(k)
        }
        fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
            self.0.walk(f)
        }
        fn cleanup(&self) -> Result<(), SnapshotError> {
            self.0.cleanup()
        }
        fn close(&self) -> Result<(), SnapshotError> {
            self.0.close()
        }
    }
    crate::view_readonly(&|root| Box::new(Writable(CopyDriver::open(root).unwrap())));
}
