//! Crash recovery and cleanup: a driver built again after a crash reports what it had, and
//! `cleanup` removes the leftovers of interrupted work and nothing else.

use std::fs;
use std::path::Path;
use std::path::PathBuf;

use crate::ops::{apply, dir, file, remove_all};
use crate::scenario::*;
use crate::support::*;
use crate::tree::assert_same_tree;
use crate::{default_snapshots_dir, MakeSnapshotter};

/// [`crash_recovery_in`] for drivers keeping `<root>/snapshots/<id>/`.
pub fn crash_recovery(make: &MakeSnapshotter) {
    crash_recovery_in(make, default_snapshots_dir)
}

/// After a crash (the driver dropped without close, an active snapshot left in place, and
/// leftovers of interrupted work in `snapshots_dir(root)`: directories named like the next ids
/// and like temporary and trash directories, none with a metadata record), a driver built again
/// on the same root reports every snapshot as before; `cleanup` removes every leftover (and is
/// idempotent) and nothing else: the committed, active and view snapshots all still mount with
/// their content, and new snapshots start empty.
pub fn crash_recovery_in(make: &MakeSnapshotter, snapshots_dir: fn(&Path) -> PathBuf) {
    require_root();
    let mut env = Env::new(make);
    let base_ops = [file("/base", "base\n", 0o644), dir("/etc", 0o755)];
    let active_ops = [file("/active", "active\n", 0o600), remove_all("/etc")];
    let base = env.flat();
    commit_layer(&*env, "crash-base", "", &base_ops, &base);
    let active = env.flat();
    active.apply(&base_ops);
    let mounts = env
        .prepare("crash-active", "crash-base", gc_root())
        .must("prepare crash-active");
    {
        let m = mount(&mounts, "crash-active");
        apply(m.path(), &active_ops).must("write into crash-active");
    }
    active.apply(&active_ops);
    env.view("crash-view", "crash-base", gc_root())
        .must("view crash-view");
    env.prepare("crash-removed", "", gc_root())
        .must("prepare crash-removed");
    env.remove("crash-removed").must("remove crash-removed");
    let before = walk_all(&*env);

    // Crash: no close, no cleanup. Then leftovers appear where the driver keeps snapshots.
    env.sn = None;
    let dir = snapshots_dir(&env.root);
    let entries: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the driver keeps no snapshots directory at {} ({e}); pass Quirks::snapshots_dir",
                dir.display()
            )
        })
        .map(|e| {
            e.must("list the snapshots directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let next_id = entries
        .iter()
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let strays: Vec<String> = vec![
        next_id.to_string(),
        (next_id + 1).to_string(),
        "new-crashed".into(),
        "rm-crashed".into(),
    ];
    for stray in &strays {
        let p = dir.join(stray).join("fs");
        fs::create_dir_all(&p).must("create a stray directory");
        fs::write(p.join("stray"), "left by a crash\n").must("create a stray file");
    }

    env.reopen(make);
    assert_eq!(
        walk_all(&*env),
        before,
        "after a restart walk must report the same snapshots"
    );
    env.cleanup().must("cleanup after a crash");
    for stray in &strays {
        assert!(
            !dir.join(stray).exists(),
            "cleanup left {} (it has no metadata record)",
            dir.join(stray).display()
        );
    }
    env.cleanup().must("a second cleanup");
    assert_eq!(
        walk_all(&*env),
        before,
        "cleanup must not change the records"
    );

    check_view(&*env, "crash-base", &base);
    let mounts = env.mounts("crash-view").must("mounts of crash-view");
    {
        let m = mount(&mounts, "crash-view");
        assert_same_tree(base.path(), m.path(), "crash-view after a restart");
        assert!(
            fs::write(m.path().join("x"), "x").is_err(),
            "crash-view is still read-only"
        );
    }
    let mounts = env.mounts("crash-active").must("mounts of crash-active");
    {
        let m = mount(&mounts, "crash-active");
        assert_same_tree(active.path(), m.path(), "crash-active after a restart");
    }
    env.commit("crash-top", "crash-active", gc_root())
        .must("commit crash-active after a restart");
    check_view(&*env, "crash-top", &active);
    let empty = env.flat();
    for key in ["fresh-1", "fresh-2"] {
        let mounts = env
            .prepare(key, "", gc_root())
            .must("prepare after a restart");
        let m = mount(&mounts, key);
        assert_same_tree(
            empty.path(),
            m.path(),
            &format!("new snapshot {key:?} after cleanup"),
        );
    }
}
