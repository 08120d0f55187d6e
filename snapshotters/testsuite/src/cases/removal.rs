//! Removal: keys are reusable once removed, and a parent goes only after its children.

use berth_snapshotter::Kind;

use crate::scenario::*;
use crate::support::*;
use crate::MakeSnapshotter;

/// Keys are reusable once removed, across kinds: prepare, remove, view under the same key,
/// remove, prepare again, and commit it under the name of a removed committed snapshot.
pub fn remove(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("committed-a", "", gc_root())
        .must("prepare committed-a");
    env.commit("committed-1", "committed-a", gc_root())
        .must("commit committed-1");
    env.prepare("reuse-1", "committed-1", gc_root())
        .must("prepare reuse-1");
    env.remove("reuse-1").must("remove active reuse-1");
    env.view("reuse-1", "committed-1", gc_root())
        .must("view reuse-1 after removal");
    env.remove("reuse-1").must("remove view reuse-1");
    env.prepare("reuse-1", "", gc_root())
        .must("prepare reuse-1 again");
    env.remove("committed-1").must("remove committed-1");
    env.commit("committed-1", "reuse-1", gc_root())
        .must("commit reuse-1 as committed-1");
    assert_info(
        &env.stat("committed-1").must("stat"),
        "committed-1",
        Kind::Committed,
        "",
    );
    expect_err!(
        env.stat("reuse-1"),
        NotFound,
        "stat of reuse-1 after its commit"
    );
    assert_eq!(
        names(&walk_all(&*env)),
        set(&["committed-1"]),
        "what walk lists at the end"
    );
}

/// In base <- intermediate <- top, the intermediate layer cannot be removed while top exists
/// (FailedPrecondition); top first, then intermediate, then base can.
pub fn remove_intermediate_snapshot(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let mounts = env.prepare("base", "", gc_root()).must("prepare base");
    drop(mount(&mounts, "base"));
    env.commit("committed-base", "base", gc_root())
        .must("commit base");
    env.prepare("intermediate", "committed-base", gc_root())
        .must("prepare intermediate");
    env.commit("committed-inter", "intermediate", gc_root())
        .must("commit intermediate");
    env.prepare("toplayer", "committed-inter", gc_root())
        .must("prepare top");
    expect_err!(
        env.remove("committed-inter"),
        FailedPrecondition,
        "remove of the intermediate layer while the top layer exists"
    );
    env.remove("toplayer").must("remove top");
    env.remove("committed-inter").must("remove intermediate");
    env.remove("committed-base").must("remove base");
    assert!(walk_all(&*env).is_empty(), "everything was removed");
}
