//! Scenario helpers shared by the cases: commit a checked layer, view and compare it, build
//! containerd's standard chains, and name the outcome of a call.

use std::collections::BTreeSet;

use berth_snapshotter::{Info, Kind, SnapshotError, Snapshotter};

use crate::ops::{apply, Op};
use crate::support::*;
use crate::tree::assert_same_tree;

/// Prepares `name-active` on `parent`, checks its mount shows `flat` (the parent's content),
/// applies `ops` to the mount and to `flat`, checks again, and commits it as `name`. With
/// `full_check` false only the mount and one file are checked (for very long chains).
pub(crate) fn commit_layer_checked(
    sn: &dyn Snapshotter,
    name: &str,
    parent: &str,
    ops: &[Op],
    flat: &Flat,
    full_check: bool,
) {
    let key = format!("{name}-active");
    let mounts = sn
        .prepare(&key, parent, gc_root())
        .must(&format!("prepare {key:?} on parent {parent:?}"));
    {
        let m = mount(&mounts, &format!("active snapshot {key:?}"));
        if full_check {
            assert_same_tree(
                flat.path(),
                m.path(),
                &format!(
                    "active snapshot {key:?} before any change (should show parent {parent:?})"
                ),
            );
        }
        apply(m.path(), ops).must(&format!("write into active snapshot {key:?}"));
        flat.apply(ops);
        if full_check {
            assert_same_tree(
                flat.path(),
                m.path(),
                &format!("active snapshot {key:?} after the changes"),
            );
        }
    }
    sn.commit(name, &key, gc_root())
        .must(&format!("commit {key:?} as {name:?}"));
}

pub(crate) fn commit_layer(
    sn: &dyn Snapshotter,
    name: &str,
    parent: &str,
    ops: &[Op],
    flat: &Flat,
) {
    commit_layer_checked(sn, name, parent, ops, flat, true);
}

/// Views committed `name`, checks the view shows `flat`, and removes the view.
pub(crate) fn check_view(sn: &dyn Snapshotter, name: &str, flat: &Flat) {
    let key = format!("{name}-view");
    let mounts = sn
        .view(&key, name, gc_root())
        .must(&format!("view {key:?} of {name:?}"));
    {
        let m = mount(&mounts, &format!("view {key:?}"));
        assert_same_tree(flat.path(), m.path(), &format!("view of {name:?}"));
    }
    sn.remove(&key).must(&format!("remove view {key:?}"));
}

/// containerd's checkSnapshots: commits a chain of layers `<prefix>-1`, `<prefix>-2`, … (one per
/// op list), checking each active snapshot and a view of each committed one against a flat
/// directory that got the same changes. Returns the layers' names and the flat directory.
pub(crate) fn check_layers(env: &Env, prefix: &str, layers: &[&[Op]]) -> (Vec<String>, Flat) {
    let flat = env.flat();
    let mut names: Vec<String> = Vec::new();
    for (i, ops) in layers.iter().enumerate() {
        let name = format!("{prefix}-{}", i + 1);
        let parent = names.last().cloned().unwrap_or_default();
        commit_layer(&**env, &name, &parent, ops, &flat);
        check_view(&**env, &name, &flat);
        names.push(name);
    }
    (names, flat)
}

pub(crate) fn walk_all(sn: &dyn Snapshotter) -> Vec<Info> {
    let mut all = Vec::new();
    sn.walk(&mut |i| {
        all.push(i.clone());
        true
    })
    .must("walk");
    all
}

pub(crate) fn names(infos: &[Info]) -> BTreeSet<String> {
    infos.iter().map(|i| i.name.clone()).collect()
}

pub(crate) fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
pub(crate) fn assert_info(i: &Info, name: &str, kind: Kind, parent: &str) {
    assert_eq!(i.name, name, "stat/walk of {name:?}: wrong name in {i:?}");
    assert_eq!(i.kind, Some(kind), "{name:?}: wrong kind in {i:?}");
    assert_eq!(i.parent, parent, "{name:?}: wrong parent in {i:?}");
}

/// The name of the `SnapshotError` variant a call returned ("Ok" if none) and what it said.
pub(crate) fn outcome<T: std::fmt::Debug>(r: Result<T, SnapshotError>) -> (&'static str, String) {
    let variant = match &r {
        Ok(_) => "Ok",
        Err(SnapshotError::NotFound(_)) => "NotFound",
        Err(SnapshotError::AlreadyExists(_)) => "AlreadyExists",
        Err(SnapshotError::FailedPrecondition(_)) => "FailedPrecondition",
        Err(SnapshotError::InvalidArgument(_)) => "InvalidArgument",
        Err(SnapshotError::Unsupported(_)) => "Unsupported",
        // Everything else is an internal failure; the detail names the variant.
        Err(_) => "Internal",
    };
    (variant, format!("{r:?}"))
}

/// containerd's createNamedSnapshots/baseTestSnapshots: committed `c1`, `c2` (on c1), active
/// `a1` (on c2), view `v1` (on c2), with every name prefixed by `prefix`.
pub(crate) fn chain_with_active_and_view(sn: &dyn Snapshotter, prefix: &str) {
    let n = |s: &str| format!("{prefix}{s}");
    sn.prepare(&n("c1-a"), "", gc_root()).must("prepare c1-a");
    sn.commit(&n("c1"), &n("c1-a"), gc_root()).must("commit c1");
    sn.prepare(&n("c2-a"), &n("c1"), gc_root())
        .must("prepare c2-a");
    sn.commit(&n("c2"), &n("c2-a"), gc_root()).must("commit c2");
    sn.prepare(&n("a1"), &n("c2"), gc_root()).must("prepare a1");
    sn.view(&n("v1"), &n("c2"), gc_root()).must("view v1");
}
