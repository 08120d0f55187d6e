use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::{apply, decompress, write_diff, write_diff_gzip, ApplyOptions, DiffOptions};

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A copy of `src` made with the crate itself: a diff against an empty tree, applied.
fn copy_tree(src: &Path, dst: &Path) {
    let empty = tempfile::tempdir().unwrap();
    let mut buf = Vec::new();
    write_diff(empty.path(), src, &mut buf, &DiffOptions::default()).unwrap();
    let opts = ApplyOptions {
        allow_devices: true,
        ..Default::default()
    };
    apply(buf.as_slice(), dst, &opts).unwrap();
}

/// The comparable view of a tree after a round trip: mtimes to the second (tar keeps seconds),
/// no inode numbers, link counts checked separately through `link_groups`; the root and sockets
/// (which layers do not carry) left out.
fn comparable(root: &Path) -> BTreeMap<PathBuf, Node> {
    snapshot(root)
        .into_iter()
        .filter(|(p, n)| !p.as_os_str().is_empty() && n.kind != "socket")
        .map(|(p, mut n)| {
            n.mtime.1 = 0;
            n.ino = 0;
            n.nlink = 0;
            (p, n)
        })
        .collect()
}

/// Sets of paths sharing an inode.
fn link_groups(root: &Path) -> Vec<Vec<PathBuf>> {
    let mut by_ino: HashMap<u64, Vec<PathBuf>> = HashMap::new();
    for (p, n) in snapshot(root) {
        if n.kind != "dir" {
            by_ino.entry(n.ino).or_default().push(p);
        }
    }
    let mut groups: Vec<Vec<PathBuf>> = by_ino.into_values().filter(|g| g.len() > 1).collect();
    for g in &mut groups {
        g.sort();
    }
    groups.sort();
    groups
}

fn build_lower(l: &Path) {
    for d in [
        "etc",
        "usr/bin",
        "usr/lib/deep/er",
        "var/lib",
        "gone-dir/sub",
        "dir-to-file",
        "opt",
    ] {
        std::fs::create_dir_all(l.join(d)).unwrap();
    }
    std::fs::write(l.join("etc/passwd"), "root:x:0:0\n").unwrap();
    std::fs::write(l.join("etc/same-second"), "aaaa").unwrap();
    std::fs::write(l.join("etc/touched"), "same").unwrap();
    std::fs::write(l.join("etc/nsec-changed"), "xxxx").unwrap();
    std::fs::write(l.join("usr/bin/tool"), "#!/bin/sh\necho tool\n").unwrap();
    chmod(&l.join("usr/bin/tool"), 0o755);
    std::fs::write(l.join("usr/bin/suid"), "suid").unwrap();
    chmod(&l.join("usr/bin/suid"), 0o755);
    std::fs::write(l.join("usr/lib/deep/er/lib.so"), "lib").unwrap();
    std::fs::write(l.join("usr/lib/deep/er/unchanged"), "same").unwrap();
    std::fs::write(l.join("gone-dir/sub/f"), "f").unwrap();
    std::fs::write(l.join("gone-file"), "g").unwrap();
    std::fs::write(l.join("dir-to-file/inner"), "i").unwrap();
    std::fs::write(l.join("file-to-dir"), "f").unwrap();
    std::fs::write(l.join("var/lib/owned"), "o").unwrap();
    std::fs::write(l.join("var/lib/xattrs"), "x").unwrap();
    set_lxattr(&l.join("var/lib/xattrs"), "user.remove-me", b"1");
    set_lxattr(&l.join("var/lib/xattrs"), "user.change-me", b"old");
    std::os::unix::fs::symlink("passwd", l.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("aaaa", l.join("etc/retarget")).unwrap();
    std::fs::write(l.join("opt/hl-a"), "shared").unwrap();
    mknod(&l.join("opt/fifo"), libc::S_IFIFO | 0o600, 0);
    mknod(
        &l.join("opt/null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 3),
    );
    lchown(&l.join("var/lib/owned"), 10, 10);
    // Times: whole seconds (nsec 0) on the files whose content comparison is being tested.
    for f in ["etc/same-second", "etc/touched", "etc/nsec-changed"] {
        set_times(&l.join(f), 1_000_000, 0);
    }
}

fn modify_upper(u: &Path) {
    // Same size, same whole-second mtime, different bytes: only a content comparison sees it.
    std::fs::write(u.join("etc/same-second"), "bbbb").unwrap();
    set_times(&u.join("etc/same-second"), 1_000_000, 0);
    // Rewritten with identical bytes and time: unchanged.
    std::fs::write(u.join("etc/touched"), "same").unwrap();
    set_times(&u.join("etc/touched"), 1_000_000, 0);
    // Same bytes, different nanoseconds: taken as modified (containerd's rule).
    set_times(&u.join("etc/nsec-changed"), 1_000_000, 200);
    std::fs::write(
        u.join("usr/bin/tool"),
        "#!/bin/sh\necho tool v2 with more bytes\n",
    )
    .unwrap();
    chmod(&u.join("usr/bin/suid"), 0o4755);
    std::fs::write(u.join("usr/lib/deep/er/lib.so"), "lib2").unwrap();
    std::fs::remove_dir_all(u.join("gone-dir")).unwrap();
    std::fs::remove_file(u.join("gone-file")).unwrap();
    std::fs::remove_dir_all(u.join("dir-to-file")).unwrap();
    std::fs::write(u.join("dir-to-file"), "now a file").unwrap();
    std::fs::remove_file(u.join("file-to-dir")).unwrap();
    std::fs::create_dir(u.join("file-to-dir")).unwrap();
    std::fs::write(u.join("file-to-dir/child"), "c").unwrap();
    lchown(&u.join("var/lib/owned"), 20, 30);
    set_lxattr(&u.join("var/lib/xattrs"), "user.change-me", b"new");
    set_lxattr(&u.join("var/lib/xattrs"), "user.added", b"+");
    set_lxattr(&u.join("var/lib/xattrs"), "trusted.root-only", b"t");
    let p = CString::new(u.join("var/lib/xattrs").as_os_str().as_bytes()).unwrap();
    // SAFETY: `p` and the name are NUL-terminated strings alive for the call; lremovexattr only
    // reads them.
    let removed = unsafe { libc::lremovexattr(p.as_ptr(), c"user.remove-me".as_ptr()) };
    assert_eq!(removed, 0, "{}", std::io::Error::last_os_error());
    std::fs::remove_file(u.join("etc/retarget")).unwrap();
    std::os::unix::fs::symlink("bbbb", u.join("etc/retarget")).unwrap();
    std::os::unix::fs::symlink("/usr/bin/tool", u.join("usr/bin/newlink")).unwrap();
    // New hard link to an unchanged file, and a new pair of linked files.
    std::fs::hard_link(u.join("opt/hl-a"), u.join("opt/hl-b")).unwrap();
    std::fs::write(u.join("new-a"), "pair").unwrap();
    std::fs::hard_link(u.join("new-a"), u.join("var/new-b")).unwrap();
    std::fs::write(u.join("capped"), "cap").unwrap();
    lchown(&u.join("capped"), 0, 0);
    set_lxattr(
        &u.join("capped"),
        "security.capability",
        &[0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    );
    std::fs::remove_file(u.join("opt/null")).unwrap();
    mknod(
        &u.join("opt/null"),
        libc::S_IFCHR | 0o666,
        libc::makedev(1, 5),
    );
    // Sockets do not travel.
    let _sock = std::os::unix::net::UnixListener::bind(u.join("var/sock")).unwrap();
}

/// Lower and upper as two snapshots of the same content (both made by applying a full diff of
/// an original tree, so whole-second mtimes in both), ready for `modify_upper`.
fn trees() -> (tempfile::TempDir, tempfile::TempDir) {
    let orig = tempfile::tempdir().unwrap();
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    build_lower(orig.path());
    copy_tree(orig.path(), lower.path());
    copy_tree(orig.path(), upper.path());
    assert_eq!(
        comparable(upper.path()),
        comparable(orig.path()),
        "copy via a full diff"
    );
    // Sub-second mtimes the tar could not carry, set on both sides.
    set_times(&lower.path().join("etc/nsec-changed"), 1_000_000, 100);
    set_times(&upper.path().join("etc/nsec-changed"), 1_000_000, 100);
    (lower, upper)
}

#[test]
fn diff_round_trip_reproduces_upper() {
    require_root();
    let (lower, upper) = trees();
    let result = tempfile::tempdir().unwrap();
    modify_upper(upper.path());

    let mut layer = Vec::new();
    let stats = write_diff(
        lower.path(),
        upper.path(),
        &mut layer,
        &DiffOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.diff_id, sha256(&layer));
    assert_eq!(stats.size, layer.len() as u64);

    let members = list_tar(&layer);
    let names: Vec<&str> = members.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(stats.entries as usize, members.len());
    for expected in [
        "etc/",
        "etc/same-second",
        "etc/nsec-changed",
        "etc/retarget",
        "usr/bin/suid",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    assert!(names.contains(&".wh.gone-dir"), "{names:?}");
    assert!(names.contains(&".wh.gone-file"), "{names:?}");
    assert!(
        !names.contains(&"gone-dir/sub/f"),
        "no whiteouts below a removed dir: {names:?}"
    );
    assert!(
        !names.contains(&"etc/touched"),
        "unchanged file written: {names:?}"
    );
    assert!(
        !names.contains(&"etc/passwd"),
        "unchanged file written: {names:?}"
    );
    assert!(!names.contains(&"usr/lib/deep/er/unchanged"), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("sock")), "{names:?}");
    // Parents of a deep change come first, in order.
    let pos = |n: &str| {
        names
            .iter()
            .position(|x| *x == n)
            .unwrap_or_else(|| panic!("{n} missing: {names:?}"))
    };
    assert!(pos("usr/") < pos("usr/lib/") && pos("usr/lib/") < pos("usr/lib/deep/"));
    assert!(
        pos("usr/lib/deep/") < pos("usr/lib/deep/er/")
            && pos("usr/lib/deep/er/") < pos("usr/lib/deep/er/lib.so")
    );
    // Hard links: the pair is one file and one link to it; the new link to an unchanged file
    // brings the unchanged name along.
    let link_of = |n: &str| {
        members
            .iter()
            .find(|(x, _, _)| x == n)
            .map(|(_, t, l)| (*t, l.clone()))
    };
    assert_eq!(link_of("new-a"), Some((tar::EntryType::Regular, None)));
    assert_eq!(
        link_of("var/new-b"),
        Some((tar::EntryType::Link, Some("new-a".into())))
    );
    assert_eq!(link_of("opt/hl-a"), Some((tar::EntryType::Regular, None)));
    assert_eq!(
        link_of("opt/hl-b"),
        Some((tar::EntryType::Link, Some("opt/hl-a".into())))
    );

    // Apply onto a copy of lower, native style.
    copy_tree(lower.path(), result.path());
    let opts = ApplyOptions {
        allow_devices: true,
        expected_diff_id: Some(stats.diff_id.clone()),
        ..Default::default()
    };
    apply(layer.as_slice(), result.path(), &opts).unwrap();

    let want = comparable(upper.path());
    let got = comparable(result.path());
    for (p, n) in &want {
        assert_eq!(got.get(p), Some(n), "{p:?} differs");
    }
    for p in got.keys() {
        assert!(want.contains_key(p), "{p:?} should not exist");
    }
    assert_eq!(link_groups(result.path()), link_groups(upper.path()));
}

#[test]
fn diff_is_deterministic_and_empty_when_nothing_changed() {
    require_root();
    let (lower, upper) = trees();
    let mut none = Vec::new();
    let stats = write_diff(
        lower.path(),
        upper.path(),
        &mut none,
        &DiffOptions::default(),
    )
    .unwrap();
    assert_eq!(stats.entries, 0, "{:?}", list_tar(&none));
    assert_eq!(none.len(), 1024, "just the end-of-archive blocks");

    modify_upper(upper.path());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    write_diff(lower.path(), upper.path(), &mut a, &DiffOptions::default()).unwrap();
    write_diff(lower.path(), upper.path(), &mut b, &DiffOptions::default()).unwrap();
    assert_eq!(a, b);
}

#[test]
fn gzip_diff_digests_and_applies() {
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    std::fs::write(upper.path().join("hello"), "world".repeat(1000)).unwrap();
    std::fs::create_dir(upper.path().join("d")).unwrap();
    std::fs::write(upper.path().join("d/f"), "f").unwrap();

    let mut blob = Vec::new();
    let opts = DiffOptions {
        gzip_level: Some(9),
        ..Default::default()
    };
    let stats = write_diff_gzip(lower.path(), upper.path(), &mut blob, &opts).unwrap();
    assert_eq!(
        stats.compressed_digest.as_deref(),
        Some(sha256(&blob).as_str())
    );
    assert_eq!(stats.compressed_size, Some(blob.len() as u64));
    let mut plain = Vec::new();
    decompress(
        blob.as_slice(),
        "application/vnd.oci.image.layer.v1.tar+gzip",
    )
    .unwrap()
    .read_to_end(&mut plain)
    .unwrap();
    assert_eq!(stats.diff_id, sha256(&plain));
    assert_eq!(stats.size, plain.len() as u64);
    assert!(blob.len() < plain.len());

    // The uncompressed diff of the same trees is the same tar.
    let mut direct = Vec::new();
    write_diff(
        lower.path(),
        upper.path(),
        &mut direct,
        &DiffOptions::default(),
    )
    .unwrap();
    assert_eq!(direct, plain);

    let target = tempfile::tempdir().unwrap();
    let aopts = ApplyOptions {
        expected_diff_id: Some(stats.diff_id.clone()),
        no_same_owner: true,
        ..Default::default()
    };
    apply(
        decompress(
            blob.as_slice(),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .unwrap(),
        target.path(),
        &aopts,
    )
    .unwrap();
    assert_eq!(std::fs::read(target.path().join("d/f")).unwrap(), b"f");
    assert_eq!(
        std::fs::read(target.path().join("hello")).unwrap(),
        "world".repeat(1000).as_bytes()
    );
}

#[test]
fn mtime_upper_bound_and_long_names() {
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    let long_dir = "d".repeat(120);
    let long_file = "f".repeat(200);
    std::fs::create_dir(upper.path().join(&long_dir)).unwrap();
    std::fs::write(upper.path().join(&long_dir).join(&long_file), "x").unwrap();
    std::os::unix::fs::symlink("t".repeat(150), upper.path().join("l")).unwrap();
    let bound = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000);
    let opts = DiffOptions {
        mod_time_upper_bound: Some(bound),
        ..Default::default()
    };
    let mut layer = Vec::new();
    write_diff(lower.path(), upper.path(), &mut layer, &opts).unwrap();
    let mut a = tar::Archive::new(layer.as_slice());
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        assert!(e.header().mtime().unwrap() <= 1_000);
    }
    let target = tempfile::tempdir().unwrap();
    let aopts = ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), target.path(), &aopts).unwrap();
    let f = target.path().join(&long_dir).join(&long_file);
    assert_eq!(std::fs::read(&f).unwrap(), b"x");
    assert_eq!(std::fs::symlink_metadata(&f).unwrap().mtime(), 1_000);
    assert_eq!(
        std::fs::read_link(target.path().join("l")).unwrap(),
        Path::new(&"t".repeat(150))
    );
}

#[test]
fn diff_does_not_follow_symlinks_in_upper() {
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "s").unwrap();
    std::os::unix::fs::symlink(outside.path(), upper.path().join("escape")).unwrap();
    let mut layer = Vec::new();
    write_diff(
        lower.path(),
        upper.path(),
        &mut layer,
        &DiffOptions::default(),
    )
    .unwrap();
    let members = list_tar(&layer);
    assert_eq!(members.len(), 1, "{members:?}");
    assert_eq!(members[0].1, tar::EntryType::Symlink);
}

#[test]
fn a_deep_tree_is_diffed_on_a_small_stack() {
    // A container can nest directories thousands deep; the walk used to recurse per level and
    // overflowed the thread's stack (an abort of the whole daemon). 400 levels on a 128 KiB
    // stack: far beyond what the recursive walk fitted, nothing for the walk's own stack.
    let lower = tempfile::tempdir().unwrap();
    let upper = tempfile::tempdir().unwrap();
    let deep = |root: &std::path::Path, levels: usize| {
        let mut p = root.to_path_buf();
        for _ in 0..levels {
            p.push("d");
        }
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    // The first 300 levels exist on both sides (walked together), the rest only in upper.
    deep(lower.path(), 300);
    let bottom = deep(upper.path(), 400);
    std::fs::write(bottom.join("leaf.txt"), b"at the bottom").unwrap();
    let (l, u) = (lower.path().to_owned(), upper.path().to_owned());
    let tar = std::thread::Builder::new()
        .stack_size(128 * 1024)
        .spawn(move || {
            let mut buf = Vec::new();
            write_diff(&l, &u, &mut buf, &DiffOptions::default()).map(|_| buf)
        })
        .unwrap()
        .join()
        .expect("the walk fits a small stack")
        .unwrap();
    let leaf = format!("{}leaf.txt", "d/".repeat(400));
    let mut archive = tar::Archive::new(tar.as_slice());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.contains(&leaf), "{} entries, no {leaf}", names.len());
    // Every entry once, in walk order (a parent before what is below it).
    let unique: std::collections::HashSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
    let depth = |n: &String| n.trim_end_matches('/').matches('/').count();
    assert!(names.windows(2).all(|w| depth(&w[1]) <= depth(&w[0]) + 1));
}
