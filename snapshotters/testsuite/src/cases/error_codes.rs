//! Error codes: every failure answers containerd's code and leaves no trace.

use std::collections::BTreeMap;

use berth_snapshotter::{Info, Kind};

use crate::ops::file;
use crate::scenario::*;
use crate::support::*;
use crate::tree::assert_same_tree;
use crate::MakeSnapshotter;

/// Every failure has containerd's error code and leaves no trace: NotFound for unknown keys
/// and missing parents, InvalidArgument for a parent that is not committed, an empty key or
/// oversized labels, AlreadyExists for a key or name in use, FailedPrecondition for committing
/// anything but an active snapshot, for the mounts of a committed one and for removing a
/// snapshot with children. Afterwards everything still works.
pub fn error_codes(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let flat = env.flat();
    commit_layer(&*env, "base", "", &[file("/f", "base\n", 0o644)], &flat);
    env.prepare("active", "base", gc_root())
        .must("prepare active");
    env.view("view", "base", gc_root()).must("view view");
    let unknown = Info {
        name: "unknown".into(),
        ..Info::default()
    };
    let big = labels(&[("big", &"x".repeat(5000))]);
    let mut too_big = env.stat("active").must("stat active");
    too_big.labels = big.clone();
    let none = BTreeMap::new;

    // What was tried, the code containerd answers, what the driver answered (in this order).
    #[rustfmt::skip]
    let outcomes = [
        ("stat of an unknown key",           "NotFound",           outcome(env.stat("unknown"))),
        ("usage of an unknown key",          "NotFound",           outcome(env.usage("unknown"))),
        ("mounts of an unknown key",         "NotFound",           outcome(env.mounts("unknown"))),
        ("update of an unknown key",         "NotFound",           outcome(env.update(&unknown, &[]))),
        ("remove of an unknown key",         "NotFound",           outcome(env.remove("unknown"))),
        ("commit of an unknown key",         "NotFound",           outcome(env.commit("c", "unknown", none()))),
        ("prepare on a missing parent",      "NotFound",           outcome(env.prepare("p1", "missing", none()))),
        ("view of a missing parent",         "NotFound",           outcome(env.view("v1", "missing", none()))),
        ("prepare on an active parent",      "InvalidArgument",    outcome(env.prepare("p2", "active", none()))),
        ("prepare on a view parent",         "InvalidArgument",    outcome(env.prepare("p3", "view", none()))),
        ("view of an active parent",         "InvalidArgument",    outcome(env.view("v3", "active", none()))),
        ("prepare with an empty key",        "InvalidArgument",    outcome(env.prepare("", "", none()))),
        ("prepare with a 5000-byte label",   "InvalidArgument",    outcome(env.prepare("p4", "", big))),
        ("update with a 5000-byte label",    "InvalidArgument",    outcome(env.update(&too_big, &[]))),
        ("prepare with an active key",       "AlreadyExists",      outcome(env.prepare("active", "", none()))),
        ("view with an active key",          "AlreadyExists",      outcome(env.view("active", "base", none()))),
        ("prepare with a committed name",    "AlreadyExists",      outcome(env.prepare("base", "", none()))),
        ("commit to a name in use",          "AlreadyExists",      outcome(env.commit("base", "active", none()))),
        ("commit of a view",                 "FailedPrecondition", outcome(env.commit("c2", "view", none()))),
        ("commit of a committed snapshot",   "FailedPrecondition", outcome(env.commit("c3", "base", none()))),
        ("mounts of a committed snapshot",   "FailedPrecondition", outcome(env.mounts("base"))),
        ("remove of a snapshot with a child", "FailedPrecondition", outcome(env.remove("base"))),
    ];
    for (what, want, (got, detail)) in outcomes {
        assert_eq!(
            got, want,
            "{what}: expected SnapshotError::{want}, got {detail}"
        );
    }

    for key in ["c", "p1", "v1", "p2", "p3", "v3", "p4", "c2", "c3"] {
        expect_err!(
            env.stat(key),
            NotFound,
            "stat of {key:?}, whose creation failed"
        );
    }
    assert_eq!(
        names(&walk_all(&*env)),
        set(&["base", "active", "view"]),
        "snapshots after the failures"
    );
    assert_info(
        &env.stat("active").must("stat"),
        "active",
        Kind::Active,
        "base",
    );
    assert_eq!(
        env.stat("active").must("stat").labels,
        gc_root(),
        "labels of active after a failed update"
    );
    assert_info(&env.stat("view").must("stat"), "view", Kind::View, "base");

    let mounts = env.mounts("active").must("mounts of active");
    {
        let m = mount(&mounts, "active");
        assert_same_tree(flat.path(), m.path(), "active after the failures");
    }
    check_view(&*env, "base", &flat);
    env.commit("top", "active", gc_root())
        .must("commit active after the failures");
    env.remove("view").must("remove view");
    expect_err!(
        env.remove("base"),
        FailedPrecondition,
        "remove of base while top is its child"
    );
    env.remove("top").must("remove top");
    env.remove("base").must("remove base");
    assert!(walk_all(&*env).is_empty(), "everything was removed");
}
