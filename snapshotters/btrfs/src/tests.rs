//! What the conformance suite does not see: the subvolumes themselves, the mounts' form, the
//! ioctls' edge cases, quota-based usage and the skip on other filesystems. Root and
//! `mkfs.btrfs` are required (see `testfs`).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use berth_snapshotter::{Kind, MetaStore, Snapshotter};

use crate::testfs::{self, LoopBtrfs};
use crate::{ioctl, BtrfsSnapshotter};

fn root(name: &str) -> std::path::PathBuf {
    let dir = testfs::shared().join("unit").join(name);
    let _ = ioctl::remove_tree(&dir);
    dir
}

fn none() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// The subvolume id as btrfs-progs reports it (only the tests run the `btrfs` program).
fn rootid(path: &Path) -> u64 {
    let out = Command::new(testfs::program("btrfs"))
        .args(["inspect-internal", "rootid"])
        .arg(path)
        .output()
        .expect("run btrfs inspect-internal rootid");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn snapshots_are_subvolumes_and_mounts_are_containerds() {
    let root = root("layout");
    let sn = BtrfsSnapshotter::new(&root).unwrap();
    let device = crate::mountinfo::lookup(testfs::shared()).unwrap().source;
    assert!(device.starts_with("/dev/loop"), "{device}");

    let mounts = sn.prepare("a", "", none()).unwrap();
    let active = root.join("active/1");
    assert!(ioctl::is_subvolume(&active).unwrap());
    assert!(!ioctl::readonly(&active).unwrap());
    assert_eq!(mounts.len(), 1);
    assert_eq!(mounts[0].mount_type, "btrfs");
    assert_eq!(mounts[0].source, device);
    assert_eq!(
        mounts[0].options,
        vec![format!("subvolid={}", rootid(&active))]
    );
    fs::write(active.join("f"), "x").unwrap();

    sn.commit("A", "a", none()).unwrap();
    let committed = root.join("snapshots/1");
    assert!(ioctl::is_subvolume(&committed).unwrap());
    assert!(ioctl::readonly(&committed).unwrap());
    assert!(
        !active.exists(),
        "the active subvolume goes with its commit"
    );
    assert_eq!(fs::read_to_string(committed.join("f")).unwrap(), "x");

    let mounts = sn.view("v", "A", none()).unwrap();
    let view = root.join("view/2");
    assert!(ioctl::readonly(&view).unwrap());
    assert_eq!(
        mounts[0].options,
        vec![format!("subvolid={}", rootid(&view)), "ro".to_owned()]
    );
    assert_eq!(sn.mounts("v").unwrap(), mounts);

    // A writable snapshot of the parent: its content, no copy.
    sn.prepare("b", "A", none()).unwrap();
    let b = root.join("active/3");
    assert!(ioctl::is_subvolume(&b).unwrap());
    assert!(!ioctl::readonly(&b).unwrap());
    assert_eq!(fs::read_to_string(b.join("f")).unwrap(), "x");

    // A view without parent is an empty read-only subvolume.
    sn.view("empty", "", none()).unwrap();
    assert!(ioctl::readonly(&root.join("view/4")).unwrap());

    for key in ["b", "v", "empty", "A"] {
        sn.remove(key).unwrap();
    }
    for kind in ["active", "view", "snapshots"] {
        assert_eq!(fs::read_dir(root.join(kind)).unwrap().count(), 0, "{kind}");
    }
}

#[test]
fn read_only_and_nested_subvolumes_are_destroyed() {
    let root = root("destroy");
    fs::create_dir_all(&root).unwrap();
    let a = root.join("a");
    ioctl::create_subvolume(&a).unwrap();
    fs::create_dir(a.join("d")).unwrap();
    ioctl::create_subvolume(&a.join("d/nested")).unwrap();
    ioctl::create_subvolume(&a.join("d/nested/deeper")).unwrap();
    ioctl::set_readonly(&a, true).unwrap();
    assert!(ioctl::readonly(&a).unwrap());
    ioctl::delete_subvolume(&a).unwrap();
    assert!(!a.exists());

    // As root, a read-only snapshot goes without clearing its flag first.
    let b = root.join("b");
    ioctl::create_subvolume(&b).unwrap();
    let ro = root.join("ro");
    ioctl::snapshot(&b, &ro, true).unwrap();
    assert!(ioctl::readonly(&ro).unwrap());
    ioctl::delete_subvolume(&ro).unwrap();
    assert!(!ro.exists());

    // remove_tree: plain directories holding subvolumes, files, nothing.
    let plain = root.join("plain");
    fs::create_dir_all(plain.join("x")).unwrap();
    fs::write(plain.join("x/file"), "f").unwrap();
    fs::rename(&b, plain.join("x/sub")).unwrap();
    ioctl::remove_tree(&plain).unwrap();
    assert!(!plain.exists());
    ioctl::remove_tree(&plain).unwrap();
}

#[test]
fn a_failed_operation_leaves_no_record_and_no_subvolume() {
    let root = root("failure");
    let sn = BtrfsSnapshotter::new(&root).unwrap();
    sn.prepare("a", "", none()).unwrap();
    sn.commit("A", "a", none()).unwrap();
    // The parent's subvolume vanishes behind the driver's back: the snapshot cannot be made.
    ioctl::delete_subvolume(&root.join("snapshots/1")).unwrap();
    let err = sn.prepare("b", "A", none()).unwrap_err();
    assert!(err.to_string().contains("snapshot subvolume"), "{err}");
    assert!(sn.stat("b").is_err(), "no record for the failed prepare");
    assert_eq!(fs::read_dir(root.join("active")).unwrap().count(), 0);
}

#[test]
fn cleanup_removes_what_a_crashed_commit_or_remove_left() {
    let root = root("cleanup");
    let sn = BtrfsSnapshotter::new(&root).unwrap();
    sn.prepare("a", "", none()).unwrap();
    // A commit that crashed before its record: the committed subvolume exists, the record is
    // still the active one.
    ioctl::snapshot(&root.join("active/1"), &root.join("snapshots/1"), true).unwrap();
    // A commit that crashed after its record: the active subvolume of a committed snapshot.
    sn.prepare("b", "", none()).unwrap();
    sn.commit("B", "b", none()).unwrap();
    ioctl::snapshot(&root.join("snapshots/2"), &root.join("active/2"), false).unwrap();
    // A remove that crashed before deleting.
    ioctl::create_subvolume(&root.join("view/rm-7")).unwrap();
    // A plain directory (not a subvolume) with a name like an id.
    fs::create_dir_all(root.join("snapshots/9/fs")).unwrap();
    drop(sn);

    let sn = BtrfsSnapshotter::new(&root).unwrap();
    sn.cleanup().unwrap();
    let names = |kind: &str| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(root.join(kind))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names("active"), vec!["1"]);
    assert_eq!(names("snapshots"), vec!["2"]);
    assert!(names("view").is_empty());
    // The active snapshot is still usable.
    sn.commit("A", "a", none()).unwrap();
    assert_eq!(sn.stat("A").unwrap().kind, Some(Kind::Committed));
}

/// In berthd the snapshots store lends its transaction to the driver's metastore and commits
/// (or aborts) it after the driver returns: a commit aborted then must leave the active snapshot
/// whole, so its subvolume goes only once the commit has committed.
#[test]
fn a_commit_in_an_aborted_lent_transaction_keeps_the_active_subvolume() {
    let root = root("lent");
    fs::create_dir_all(&root).unwrap();
    let db = Arc::new(berth_redb::Db::create(&root.join("meta.redb")).unwrap());
    let ms = MetaStore::open_shared(db.clone(), "btrfs", &root.join("metadata.redb")).unwrap();
    let sn = BtrfsSnapshotter::with_metastore(&root, ms).unwrap();
    sn.prepare("a", "", none()).unwrap();
    fs::write(root.join("active/1/f"), "x").unwrap();

    let (back, out) = db.lend(db.begin_write().unwrap(), || sn.commit("A", "a", none()));
    out.unwrap();
    back.unwrap().wtx.abort().unwrap();
    assert_eq!(sn.stat("a").unwrap().kind, Some(Kind::Active));
    assert_eq!(
        fs::read_to_string(root.join("active/1/f")).unwrap(),
        "x",
        "the active subvolume survives the aborted commit"
    );
    assert!(sn.stat("A").is_err());

    // Again, and this time the lender commits: the committed subvolume made by the aborted
    // attempt is in the way and replaced; the active one goes with the lender's commit.
    let (back, out) = db.lend(db.begin_write().unwrap(), || sn.commit("A", "a", none()));
    out.unwrap();
    let back = back.unwrap();
    assert!(root.join("active/1").exists(), "kept until the commit");
    back.commit().unwrap();
    assert!(
        !root.join("active/1").exists(),
        "deleted once the commit landed"
    );
    sn.prepare("b", "A", none()).unwrap();
    assert_eq!(fs::read_to_string(root.join("active/2/f")).unwrap(), "x");
    sn.close().unwrap();
}

#[test]
fn usage_is_walked_without_quotas() {
    let root = root("usage-walk");
    let sn = BtrfsSnapshotter::new(&root).unwrap();
    sn.prepare("a", "", none()).unwrap();
    fs::write(root.join("active/1/f"), vec![7u8; 64 << 10]).unwrap();
    let u = sn.usage("a").unwrap();
    assert!(u.size >= 64 << 10, "{u:?}");
    assert_eq!(u.inodes, 2, "the root and one file");
    sn.commit("A", "a", none()).unwrap();
    assert_eq!(
        sn.usage("A").unwrap(),
        u,
        "committed usage is recorded at commit"
    );
}

#[test]
fn usage_comes_from_qgroups_when_quotas_are_on() {
    let fs_ = LoopBtrfs::new(512 << 20);
    let mnt = fs_.mount_point();
    assert_eq!(
        ioctl::qgroup_exclusive(&mnt, 5).unwrap(),
        None,
        "no quota tree yet"
    );
    let out = Command::new(testfs::program("btrfs"))
        .args(["quota", "enable"])
        .arg(&mnt)
        .output()
        .expect("run btrfs quota enable");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let root = mnt.join("root");
    let sn = BtrfsSnapshotter::new(&root).unwrap();
    sn.prepare("a", "", none()).unwrap();
    fs::write(root.join("active/1/big"), vec![1u8; 4 << 20]).unwrap();
    sn.commit("A", "a", none()).unwrap();
    let parent = sn.usage("A").unwrap();
    assert!(parent.size >= 4 << 20, "{parent:?}");

    sn.prepare("b", "A", none()).unwrap();
    fs::write(root.join("active/2/small"), vec![2u8; 256 << 10]).unwrap();
    let child = sn.usage("b").unwrap();
    // Only what the child alone holds: the new file and some metadata, not the parent's file
    // it shares (which walking would count).
    assert!(child.size >= 256 << 10, "{child:?}");
    assert!(child.size < 2 << 20, "{child:?}");
    assert_eq!(child.inodes, 3, "the root and two files");
    sn.close().unwrap();
}

#[test]
fn other_filesystems_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!ioctl::is_btrfs(dir.path()).unwrap());
    let reason = crate::not_on_btrfs(dir.path()).unwrap().unwrap();
    assert!(
        reason.starts_with(&format!("{} is not on btrfs (", dir.path().display())),
        "{reason}"
    );
    let err = BtrfsSnapshotter::new(&dir.path().join("root"))
        .err()
        .expect("not on btrfs");
    assert!(err.to_string().contains("is not on btrfs"), "{err}");
    assert!(crate::not_on_btrfs(testfs::shared()).unwrap().is_none());
}
