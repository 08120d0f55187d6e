//! Parents and chains: what a child layer shows of the layers below it, through changes,
//! deletions, moves and renames (containerd's cases, most of them docker regressions).

use crate::ops::{self, dir, file, link, remove_all};
use crate::scenario::*;
use crate::support::*;
use crate::MakeSnapshotter;

/// A <- B: B's parent is A, and A (reached through B's parent) has none; B's view shows B's
/// version of the file both layers wrote.
pub fn transitivity(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let flat = env.flat();
    commit_layer(&*env, "snapA", "", &[file("/foo", "foo\n", 0o777)], &flat);
    commit_layer(
        &*env,
        "snapB",
        "snapA",
        &[file("/foo", "foo bar\n", 0o777)],
        &flat,
    );
    let a = env.stat("snapA").must("stat snapA");
    let b = env.stat("snapB").must("stat snapB");
    let b_parent = env.stat(&b.parent).must("stat snapB's parent");
    assert_eq!(a.parent, "", "snapA has no parent");
    assert_eq!(b.parent, "snapA", "snapB's parent");
    assert_eq!(b_parent.parent, "", "the parent of snapB's parent");
    check_view(&*env, "snapB", &flat);
}

/// A file changed in an upper layer shows its new content and mode (docker#21555). containerd
/// repeats it 5 times across second boundaries to catch mtime-based diffing; the repetitions
/// are kept, the sleeps are not (a snapshotter never diffs by mtime).
pub fn layer_file_update(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/etc", 0o700),
        file("/etc/hosts", "mydomain 10.0.0.1", 0o644),
        file("/etc/profile", "PATH=/usr/bin", 0o644),
    ];
    let l2 = [
        file("/etc/hosts", "mydomain 10.0.0.2", 0o644),
        file("/etc/profile", "PATH=/usr/bin", 0o666),
        dir("/root", 0o700),
        file("/root/.bashrc", "PATH=/usr/sbin:/usr/bin", 0o644),
    ];
    for round in 0..5 {
        check_layers(&env, &format!("round{round}"), &[&l1, &l2]);
    }
}

/// A directory removed and created again in an upper layer hides the lower one's files, and a
/// third layer adds to the new directory (docker#25244).
pub fn remove_directory_in_lower_layer(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [dir("/lib", 0o700), file("/lib/hidden", "", 0o644)];
    let l2 = [
        remove_all("/lib"),
        dir("/lib", 0o700),
        file("/lib/not-hidden", "", 0o644),
    ];
    let l3 = [file("/lib/newfile", "", 0o644)];
    check_layers(&env, "layer", &[&l1, &l2, &l3]);
}

/// A file deleted in a child layer stays deleted in the grandchild.
pub fn deleted_files_in_child_snapshot(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        file("/foo", "foo\n", 0o777),
        file("/foobar", "foobar\n", 0o777),
    ];
    let l2 = [remove_all("/foobar")];
    check_layers(&env, "layer", &[&l1, &l2, &[]]);
}

/// Files moved from a lower layer (a new copy in a new directory, a hardlink then removal of
/// the original, removal of the old directory) end up only at their new place.
pub fn move_file_from_lower_layer(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/dir1", 0o700),
        file("/dir1/f1", "Hello", 0o644),
        dir("dir2", 0o700),
        file("dir2/f2", "...", 0o644),
    ];
    let l2 = [
        dir("/dir3", 0o700),
        file("/dir3/f1", "Hello", 0o644),
        remove_all("/dir1"),
        link("dir2/f2", "dir3/f2"),
        remove_all("dir2/f2"),
    ];
    check_layers(&env, "layer", &[&l1, &l2]);
}

/// Renames in an upper layer: a file renamed over another, a file renamed away, and (unless the
/// driver cannot, see [`Quirks::rename_lower_dirs`](crate::Quirks::rename_lower_dirs)) a lower
/// directory renamed (docker#25409).
pub fn rename_with(make: &MakeSnapshotter, rename_lower_dirs: bool) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/dir1", 0o700),
        dir("/somefiles", 0o700),
        file("/somefiles/f1", "was here first!", 0o644),
        file("/somefiles/f2", "nothing interesting", 0o644),
    ];
    let mut l2 = Vec::new();
    if rename_lower_dirs {
        l2.push(ops::rename("/dir1", "/dir2"));
    }
    l2.extend([
        file("/somefiles/f1-overwrite", "new content 1", 0o644),
        ops::rename("/somefiles/f1-overwrite", "/somefiles/f1"),
        ops::rename("/somefiles/f2", "/somefiles/f3"),
    ]);
    check_layers(&env, "layer", &[&l1, &l2]);
}

/// [`rename_with`] including the rename of a lower directory.
pub fn rename(make: &MakeSnapshotter) {
    rename_with(make, true)
}
