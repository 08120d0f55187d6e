//! Views and keys in use: a view is read-only for real, and Prepare or View on a key in use
//! fails without touching the snapshot that holds it.

use std::fs;

use berth_snapshotter::Kind;

use crate::ops::file;
use crate::scenario::*;
use crate::support::*;
use crate::tree::assert_same_tree;
use crate::MakeSnapshotter;

/// A key in use cannot be taken again by Prepare or View (AlreadyExists), and the failed call
/// leaves the existing snapshot as it was.
pub fn prepare_view_failing(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("preparing", "", gc_root()).must("prepare");
    env.commit("snapA", "preparing", gc_root()).must("commit");

    env.prepare("newlayer", "snapA", gc_root())
        .must("prepare newlayer");
    expect_err!(
        env.view("newlayer", "snapA", gc_root()),
        AlreadyExists,
        "view with an active snapshot's key"
    );
    env.prepare("prepLayer", "snapA", gc_root())
        .must("prepare prepLayer");
    expect_err!(
        env.prepare("prepLayer", "snapA", gc_root()),
        AlreadyExists,
        "second prepare with one key"
    );
    env.view("viewLayer", "snapA", gc_root())
        .must("view viewLayer");
    expect_err!(
        env.view("viewLayer", "snapA", gc_root()),
        AlreadyExists,
        "second view with one key"
    );

    assert_info(
        &env.stat("newlayer").must("stat"),
        "newlayer",
        Kind::Active,
        "snapA",
    );
    assert_info(
        &env.stat("prepLayer").must("stat"),
        "prepLayer",
        Kind::Active,
        "snapA",
    );
    assert_info(
        &env.stat("viewLayer").must("stat"),
        "viewLayer",
        Kind::View,
        "snapA",
    );
}

/// A view's mount is read-only for real (not just in its options): creating a file, a
/// directory or overwriting a file fails, with or without a parent, and the content stays.
pub fn view_readonly(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let flat = env.flat();
    commit_layer(
        &*env,
        "committed",
        "",
        &[file("/existing", "original\n", 0o644)],
        &flat,
    );
    for (view, parent) in [("view", "committed"), ("view-no-parent", "")] {
        let mounts = env
            .view(view, parent, gc_root())
            .must(&format!("view {view}"));
        {
            let m = mount(&mounts, view);
            let p = m.path();
            assert!(
                fs::write(p.join("testfile"), "testcontent").is_err(),
                "creating a file in view {view:?} should fail (EROFS) but succeeded"
            );
            assert!(
                fs::create_dir(p.join("testdir")).is_err(),
                "creating a directory in view {view:?} should fail but succeeded"
            );
            if parent.is_empty() {
                assert!(
                    fs::read_dir(p).must("list the view").next().is_none(),
                    "view {view:?} is empty"
                );
            } else {
                assert!(
                    fs::write(p.join("existing"), "changed").is_err(),
                    "overwriting a file in view {view:?} should fail but succeeded"
                );
                assert_same_tree(
                    flat.path(),
                    p,
                    &format!("view {view:?} after failed writes"),
                );
            }
        }
        env.remove(view).must(&format!("remove view {view}"));
    }
    check_view(&*env, "committed", &flat);
    env.remove("committed").must("remove committed");
}
