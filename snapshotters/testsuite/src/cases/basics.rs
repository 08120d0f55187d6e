//! The basics: a snapshot's whole life cycle, what Stat says of active and committed
//! snapshots, Close, and the mode of a new root.

use std::fs;
use std::os::unix::fs::MetadataExt;

use berth_snapshotter::Kind;

use crate::ops::{apply, dir, file, remove_all, symlink};
use crate::scenario::*;
use crate::support::*;
use crate::tree::assert_same_tree;
use crate::MakeSnapshotter;

/// The whole life cycle: prepare and fill a snapshot, commit it, prepare a child that shows the
/// parent's content, change it, commit it, view the result, and remove everything in order (a
/// parent with a child cannot go first). Keys may contain `/`.
pub fn basic(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let initial = [
        file("/foo", "foo\n", 0o777),
        dir("/a", 0o755),
        dir("/a/b", 0o755),
        dir("/a/b/c", 0o755),
        symlink("foo", "/foo-link"),
    ];
    let diff = [
        file("/bar", "bar\n", 0o777),
        file("/foo", "bar\n", 0o777),
        remove_all("/a/b"),
    ];
    let flat = env.flat();
    let (preparing, committed) = ("/work/preparing", "/work/committed");
    let (next, next_committed, view) = ("/work/nextlayer", "/work/committed-next", "/work/view");

    let mounts = env.prepare(preparing, "", gc_root()).must("prepare");
    {
        let m = mount(&mounts, preparing);
        apply(m.path(), &initial).must("write the first layer");
    }
    flat.apply(&initial);
    env.commit(committed, preparing, gc_root()).must("commit");
    let si = env.stat(committed).must("stat committed");
    assert_info(&si, committed, Kind::Committed, "");
    assert_eq!(si.labels, gc_root(), "labels of {committed:?}");
    expect_err!(
        env.stat(preparing),
        NotFound,
        "stat of {preparing:?} after its commit"
    );

    let mounts = env
        .prepare(next, committed, gc_root())
        .must("prepare the next layer");
    {
        let m = mount(&mounts, next);
        assert_same_tree(flat.path(), m.path(), "a child snapshot before changes");
        apply(m.path(), &diff).must("write the second layer");
    }
    flat.apply(&diff);
    let ni = env.stat(next).must("stat the active child");
    assert_info(&ni, next, Kind::Active, committed);
    env.commit(next_committed, next, gc_root())
        .must("commit the child");
    let si2 = env.stat(next_committed).must("stat the committed child");
    assert_info(&si2, next_committed, Kind::Committed, committed);
    expect_err!(
        env.stat(next),
        NotFound,
        "stat of {next:?} after its commit"
    );

    let walked = walk_all(&*env);
    assert_eq!(
        walked.len(),
        2,
        "walk should list the two committed snapshots: {walked:?}"
    );
    for want in [&si, &si2] {
        let got = walked.iter().find(|i| i.name == want.name);
        assert_eq!(got, Some(want), "walk must report what stat reports");
    }

    let mounts = env.view(view, next_committed, gc_root()).must("view");
    {
        let m = mount(&mounts, view);
        assert_same_tree(flat.path(), m.path(), "view of both layers");
    }
    env.remove(view).must("remove the view");
    expect_err!(
        env.remove(committed),
        FailedPrecondition,
        "remove of {committed:?} while {next_committed:?} is its child"
    );
    env.remove(next_committed).must("remove the child");
    env.remove(committed)
        .must("remove the parent once childless");
    assert!(walk_all(&*env).is_empty(), "everything was removed");
}

/// Stat of a prepared snapshot reports it Active, with its name, no parent and its labels.
pub fn stat_active(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let key = "/work/preparing";
    let mounts = env.prepare(key, "", gc_root()).must("prepare");
    {
        let m = mount(&mounts, key);
        fs::write(m.path().join("foo"), "foo\n").must("write into the active snapshot");
    }
    let si = env.stat(key).must("stat");
    assert_info(&si, key, Kind::Active, "");
    assert_eq!(si.labels, gc_root(), "labels of {key:?}");
}

/// Stat of a committed snapshot reports it Committed, under its new name, with no parent.
pub fn stat_committed(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let (key, name) = ("/work/preparing", "/work/committed");
    let mounts = env.prepare(key, "", gc_root()).must("prepare");
    {
        let m = mount(&mounts, key);
        fs::write(m.path().join("foo"), "foo\n").must("write into the active snapshot");
    }
    env.commit(name, key, gc_root()).must("commit");
    let si = env.stat(name).must("stat");
    assert_info(&si, name, Kind::Committed, "");
    assert_eq!(si.labels, gc_root(), "labels of {name:?}");
}

/// Close can be called twice, after some work, without error.
pub fn close_twice(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("closeTwice-prepare", "", gc_root())
        .must("prepare");
    env.commit("closeTwice", "closeTwice-prepare", gc_root())
        .must("commit");
    env.remove("closeTwice").must("remove");
    env.close().must("the first close");
    env.close().must("the second close");
}

/// The root directory of a new snapshot without parent is mode 0755.
pub fn root_permission(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let mounts = env.prepare("preparing", "", gc_root()).must("prepare");
    let m = mount(&mounts, "preparing");
    let mode = fs::metadata(m.path()).must("stat the mount's root").mode() & 0o7777;
    assert_eq!(
        mode, 0o755,
        "root of a new snapshot: mode {mode:04o}, expected 0755"
    );
}
