//! Concurrency: prepares and commits on one parent from many threads at once.

use std::sync::Barrier;

use berth_snapshotter::{Kind, Snapshotter};

use crate::ops::{apply, dir, file};
use crate::scenario::*;
use crate::support::*;
use crate::MakeSnapshotter;

/// Threads prepare, write and commit on one committed parent at the same time: all succeed,
/// each commit is its own snapshot with the parent as parent, and each view shows the parent's
/// content plus exactly that thread's changes.
pub fn concurrent_prepare_commit(make: &MakeSnapshotter) {
    require_root();
    const THREADS: usize = 8;
    let env = Env::new(make);
    let base_ops = [file("/shared", "base\n", 0o644), dir("/dir", 0o755)];
    commit_layer(&*env, "base", "", &base_ops, &env.flat());
    let thread_ops = |i: usize| {
        vec![
            file(&format!("/thread-{i}"), format!("written by {i}\n"), 0o644),
            file("/shared", format!("overwritten by {i}\n"), 0o644),
            file(&format!("/dir/{i}"), "", 0o600),
        ]
    };

    let barrier = Barrier::new(THREADS);
    let sn: &dyn Snapshotter = &*env;
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (barrier, ops) = (&barrier, thread_ops(i));
            s.spawn(move || {
                let key = format!("concurrent-{i}-active");
                barrier.wait();
                let mounts = sn
                    .prepare(&key, "base", gc_root())
                    .must(&format!("thread {i}: prepare"));
                {
                    let m = mount(&mounts, &key);
                    apply(m.path(), &ops).must(&format!("thread {i}: write"));
                }
                sn.commit(&format!("concurrent-{i}"), &key, gc_root())
                    .must(&format!("thread {i}: commit"));
            });
        }
    });

    let all = walk_all(&*env);
    for i in 0..THREADS {
        let name = format!("concurrent-{i}");
        let info = all
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("walk does not list {name:?}: {all:?}"));
        assert_info(info, &name, Kind::Committed, "base");
        let flat = env.flat();
        flat.apply(&base_ops);
        flat.apply(&thread_ops(i));
        check_view(&*env, &name, &flat);
    }
    assert_eq!(
        all.len(),
        THREADS + 1,
        "walk lists base and one snapshot per thread: {all:?}"
    );
}
