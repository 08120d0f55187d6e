use std::os::unix::fs::{FileTypeExt, MetadataExt};

use super::*;
use crate::{apply, ApplyOptions, WhiteoutMode, XattrPrefix};

/// A lower layer already in the target, as a native snapshotter would have it.
fn lower(t: &Path) {
    for d in ["a", "b/deep", "o/sub", "o/keepdir", "x"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    for f in [
        "a/x",
        "a/y",
        "b/deep/file",
        "o/old1",
        "o/sub/old2",
        "o/keepdir/old3",
        "x/z",
    ] {
        std::fs::write(t.join(f), f).unwrap();
    }
}

#[test]
fn delete_mode_whiteouts_and_opaque_dirs() {
    let env = Env::new();
    let t = &env.target;
    lower(t);
    let layer = tar(&[
        E::file("a/.wh.x", ""),
        E::file("a/.wh.does-not-exist", ""),
        E::file(".wh.b", ""),
        E::dir("o/"),
        // Written by this layer before the opaque marker: must survive it.
        E::file("o/new1", "new1"),
        E::file("o/keepdir/new3", "new3"),
        E::file("o/.wh..wh..opq", ""),
        // After the marker: plainly created.
        E::file("o/new2", "new2"),
        // AUFS bookkeeping is ignored.
        E::file(".wh..wh.plnk", ""),
    ]);
    let opts = ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    };
    let stats = apply(layer.as_slice(), t, &opts).unwrap();
    assert_eq!(stats.whiteouts, 4);
    assert_eq!(stats.ignored, 1);

    assert!(!t.join("a/x").exists());
    assert!(t.join("a/y").exists());
    assert!(
        !t.join("b").exists(),
        "whiteout of a directory removes it whole"
    );
    let mut o: Vec<_> = std::fs::read_dir(t.join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    o.sort();
    assert_eq!(o, ["keepdir", "new1", "new2"]);
    // An implicitly traversed lower directory holding this layer's file stays, but its other
    // lower children are hidden.
    let mut kd: Vec<_> = std::fs::read_dir(t.join("o/keepdir"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kd.sort();
    assert_eq!(kd, ["new3"]);
    assert!(t.join("x/z").exists());
    // Whiteout files themselves are never created.
    for (p, _) in snapshot(t) {
        assert!(!p.to_string_lossy().contains(".wh."), "{p:?} left behind");
    }
}

fn overlay_case(prefix: XattrPrefix) {
    require_root();
    let env = Env::new();
    let t = &env.target;
    let layer = tar(&[
        E::dir("etc/"),
        E::file("etc/.wh.passwd", "").owner(0, 0),
        E::dir("opaque/").mode(0o755),
        E::file("opaque/.wh..wh..opq", ""),
        E::file("opaque/kept", "k"),
        // Whiteout in a directory the layer does not list: parents are made.
        E::file("implied/dir/.wh.gone", ""),
    ]);
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay {
            xattr_prefix: prefix,
        },
        ..Default::default()
    };
    apply(layer.as_slice(), t, &opts).unwrap();

    for w in ["etc/passwd", "implied/dir/gone"] {
        let m = std::fs::symlink_metadata(t.join(w)).unwrap();
        assert!(m.file_type().is_char_device(), "{w} is a whiteout device");
        assert_eq!(m.rdev(), 0, "{w} is 0/0");
        assert_eq!((m.uid(), m.gid()), (0, 0));
    }
    let key = format!("{}overlay.opaque", prefix.as_str());
    assert_eq!(
        lxattr(&t.join("opaque"), &key).as_deref(),
        Some(b"y".as_slice())
    );
    assert_eq!(std::fs::read(t.join("opaque/kept")).unwrap(), b"k");
    assert!(lxattr(&t.join("etc"), &key).is_none());
    for (p, _) in snapshot(t) {
        assert!(!p.to_string_lossy().contains(".wh."), "{p:?} left behind");
    }
}

#[test]
fn overlay_mode_trusted_prefix() {
    // Root can set trusted.* on ext4 and tmpfs, so the real form is tested.
    overlay_case(XattrPrefix::Trusted);
}

#[test]
fn overlay_mode_user_prefix() {
    overlay_case(XattrPrefix::User);
}

#[test]
fn layer_cannot_forge_overlay_xattrs() {
    require_root();
    let env = Env::new();
    let layer = tar(&[E::dir("d/")
        .xattr("trusted.overlay.opaque", "y")
        .xattr("trusted.overlay.redirect", "/etc")
        .xattr("user.overlay.opaque", "y")
        .xattr("user.ok", "1")]);
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay {
            xattr_prefix: XattrPrefix::Trusted,
        },
        ..Default::default()
    };
    let stats = apply(layer.as_slice(), &env.target, &opts).unwrap();
    assert_eq!(stats.skipped_xattrs, 3);
    let x = lxattrs(&env.target.join("d"));
    assert_eq!(x, vec![(b"user.ok".to_vec(), b"1".to_vec())]);
}

#[test]
fn invalid_whiteout_names_are_refused() {
    for bad in [".wh..", "a/.wh...", ".wh.", "a/.wh."] {
        let env = Env::new();
        std::fs::create_dir(env.target.join("a")).unwrap();
        let err = apply(
            tar(&[E::file(bad, "")]).as_slice(),
            &env.target,
            &ApplyOptions::default(),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains(&format!("entry {bad:?}")),
            "{bad}: {err}"
        );
        assert!(env.target.join("a").exists());
        env.assert_sentinel_intact(bad);
    }
}
