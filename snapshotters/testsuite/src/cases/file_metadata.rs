//! File metadata across layers: owners, modes, hardlinks and xattrs survive commit and show
//! in children and views.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;

use crate::ops::{self, dir, file, link, remove_all, remove_xattr, set_xattr, symlink};
use crate::scenario::*;
use crate::support::*;
use crate::xattrs::list_xattrs;
use crate::MakeSnapshotter;

/// Ownership changed in an upper layer on lower directories and files shows in the child
/// (docker#20240, #24913, #28391).
pub fn chown(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/opt", 0o700),
        dir("/opt/a", 0o700),
        dir("/opt/a/b", 0o700),
        file("/opt/a/b/file.txt", "hello", 0o644),
    ];
    let l2 = [
        ops::chown("/opt", 1, 1),
        ops::chown("/opt/a", 1, 1),
        ops::chown("/opt/a/b", 1, 1),
        ops::chown("/opt/a/b/file.txt", 1, 1),
    ];
    check_layers(&env, "layer", &[&l1, &l2]);
}

/// Directory owners and modes survive commits across three layers, including directories
/// removed and recreated (docker#27298).
pub fn directory_permission_on_commit(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/dir1", 0o700),
        dir("/dir2", 0o700),
        dir("/dir3", 0o700),
        dir("/dir4", 0o700),
        file("/dir4/f1", "...", 0o644),
        dir("/dir5", 0o700),
        file("/dir5/f1", "...", 0o644),
        ops::chown("/dir1", 1, 1),
        ops::chown("/dir2", 1, 1),
        ops::chown("/dir3", 1, 1),
        ops::chown("/dir5", 1, 1),
        ops::chown("/dir5/f1", 1, 1),
    ];
    let l2 = [
        ops::chown("/dir2", 0, 0),
        remove_all("/dir3"),
        ops::chown("/dir4", 1, 1),
        ops::chown("/dir4/f1", 1, 1),
    ];
    let l3 = [
        dir("/dir3", 0o700),
        ops::chown("/dir3", 1, 1),
        remove_all("/dir5"),
        dir("/dir5", 0o700),
        ops::chown("/dir5", 1, 1),
    ];
    check_layers(&env, "layer", &[&l1, &l2, &l3]);
}

/// Hardlinks: files linked inside one layer stay one inode with the right link count in later
/// layers' views; a hardlink made in an upper layer to a lower layer's file is one inode with
/// it (nlink 2), and a write through one name shows through the other.
pub fn hardlinks_across_layers(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        file("/f1", "one\n", 0o644),
        file("/g1", "group\n", 0o640),
        link("/g1", "/g2"),
        dir("/d", 0o755),
        link("/g1", "/d/g3"),
    ];
    let l2 = [
        link("/f1", "/f1-link"),
        file("/f1-link", "one, rewritten through the link\n", 0o600),
        file("/h1", "in-layer\n", 0o644),
        link("/h1", "/h2"),
    ];
    let l3 = [file("/unrelated", "x", 0o644)];
    let (names, _flat) = check_layers(&env, "layer", &[&l1, &l2, &l3]);

    let top = names.last().expect("three layers");
    let mounts = env
        .view("hardlinks-view", top, gc_root())
        .must("view the top");
    let m = mount(&mounts, "hardlinks-view");
    let st =
        |p: &str| fs::symlink_metadata(m.path().join(p)).must(&format!("stat /{p} in the view"));
    for (a, b, nlink) in [
        ("f1", "f1-link", 2),
        ("g1", "g2", 3),
        ("g1", "d/g3", 3),
        ("h1", "h2", 2),
    ] {
        assert_eq!(
            st(a).ino(),
            st(b).ino(),
            "/{a} and /{b} should be one inode in the view"
        );
        assert_eq!(st(a).nlink(), nlink, "nlink of /{a} in the view");
    }
    let f1 = fs::read(m.path().join("f1")).must("read /f1");
    assert_eq!(
        f1, b"one, rewritten through the link\n",
        "/f1 after a write through /f1-link"
    );
}

/// `user.*` and `trusted.*` xattrs on files, directories and symlinks survive commit, show in a
/// child's active snapshot and in views, and changes to them in an upper layer (added,
/// replaced, removed) show in views of it.
pub fn xattrs(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        file("/f", "data\n", 0o644),
        set_xattr("/f", "user.color", "blue"),
        set_xattr("/f", "trusted.level", "1"),
        dir("/d", 0o755),
        set_xattr("/d", "user.dir", "yes"),
        set_xattr("/d", "trusted.dir", "t"),
        file("/d/inner", "inner\n", 0o644),
        set_xattr("/d/inner", "user.inner", [0u8, 1, 2, 255]),
        symlink("f", "/link"),
        set_xattr("/link", "trusted.link", "on the symlink"),
    ];
    let l2 = [
        set_xattr("/f", "user.added", "new"),
        set_xattr("/f", "trusted.level", "2"),
        remove_xattr("/d", "user.dir"),
        file("/g", "g\n", 0o644),
        set_xattr("/g", "user.g", ""),
    ];
    let (names, _flat) = check_layers(&env, "layer", &[&l1, &l2, &[]]);

    // The tree checks compare xattrs; make sure there were some to compare.
    let mounts = env
        .view("xattr-view", &names[2], gc_root())
        .must("view the top");
    let m = mount(&mounts, "xattr-view");
    let got = list_xattrs(&m.path().join("f")).must("list /f's xattrs");
    let want: BTreeMap<String, Vec<u8>> = [
        ("trusted.level", "2"),
        ("user.added", "new"),
        ("user.color", "blue"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    assert_eq!(got, want, "xattrs of /f in a view two layers up");
    let d = list_xattrs(&m.path().join("d")).must("list /d's xattrs");
    assert_eq!(
        d.keys().collect::<Vec<_>>(),
        ["trusted.dir"],
        "xattrs of /d (user.dir removed)"
    );
}
