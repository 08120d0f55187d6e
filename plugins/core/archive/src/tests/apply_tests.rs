use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

use berth_plugin::{Classify, ErrorKind};

use super::*;
use crate::{
    apply, decompress, decompress_detect, media_type_compression, ApplyOptions, ArchiveError,
    Compression, DigestingReader, IdMap, WhiteoutMode,
};

/// A valid VFS_CAP_REVISION_2 blob granting cap_net_bind_service (bit 10) permitted.
const CAP_NET_BIND: [u8; 20] = [0, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn md(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap()
}

#[test]
fn apply_normal_layer_sets_every_attribute() {
    require_root();
    let env = Env::new();
    let layer = tar(&[
        E::dir("etc/")
            .mode(0o750)
            .owner(1000, 1001)
            .mtime(1_500_000_000),
        E::file("etc/hosts", "127.0.0.1 localhost\n")
            .mode(0o644)
            .mtime(1_500_000_100),
        E::file("etc/setuid-bin", "#!/bin/sh\n")
            .mode(0o4755)
            .owner(1000, 1000)
            .xattr("security.capability", CAP_NET_BIND)
            .xattr("user.comment", "hello"),
        E::file("etc/setgid-bin", "x").mode(0o2755).owner(0, 50),
        E::dir("tmp/").mode(0o1777).xattr("trusted.berth", "t"),
        E::symlink("etc/localtime", "/usr/share/zoneinfo/UTC")
            .owner(1000, 1001)
            .mtime(1_400_000_000),
        E::hardlink("etc/hosts.link", "etc/hosts"),
        E::fifo("run/fifo").mode(0o620).owner(7, 8),
        E::char_dev("dev/null", 1, 3).mode(0o666),
        E::block_dev("dev/loop9", 7, 9).mode(0o660).owner(0, 6),
        // PAX sub-second mtime on a directory that then gets children.
        E::dir("var/").mode(0o755).pax("mtime", "1234567890.5"),
        E::file("var/log", "log").pax("mtime", "1234567891.25"),
        // Old-style directory: a regular member whose name ends in `/`.
        E::file("old-style-dir/", "").mode(0o711),
    ]);
    let opts = ApplyOptions {
        allow_devices: true,
        ..Default::default()
    };
    let stats = apply(layer.as_slice(), &env.target, &opts).unwrap();
    assert_eq!(stats.diff_id, sha256(&layer));
    assert_eq!(stats.size, layer.len() as u64);
    assert_eq!(stats.entries, 13);
    assert_eq!(stats.skipped_xattrs, 0);

    let t = &env.target;
    let etc = md(&t.join("etc"));
    assert!(etc.is_dir());
    assert_eq!(etc.mode() & 0o7777, 0o750);
    assert_eq!((etc.uid(), etc.gid()), (1000, 1001));
    // Directory mtime survives children being written after it.
    assert_eq!((etc.mtime(), etc.mtime_nsec()), (1_500_000_000, 0));

    let hosts = md(&t.join("etc/hosts"));
    assert_eq!(
        std::fs::read(t.join("etc/hosts")).unwrap(),
        b"127.0.0.1 localhost\n"
    );
    assert_eq!(hosts.mode() & 0o7777, 0o644);
    assert_eq!(hosts.mtime(), 1_500_000_100);

    // setuid survives the chown (chmod comes after), and so does the capability (set after chown).
    let suid = md(&t.join("etc/setuid-bin"));
    assert_eq!(suid.mode() & 0o7777, 0o4755);
    assert_eq!((suid.uid(), suid.gid()), (1000, 1000));
    assert_eq!(
        lxattr(&t.join("etc/setuid-bin"), "security.capability").as_deref(),
        Some(CAP_NET_BIND.as_slice())
    );
    assert_eq!(
        lxattr(&t.join("etc/setuid-bin"), "user.comment").as_deref(),
        Some(b"hello".as_slice())
    );
    let sgid = md(&t.join("etc/setgid-bin"));
    assert_eq!(sgid.mode() & 0o7777, 0o2755);
    assert_eq!(sgid.gid(), 50);

    let tmp = md(&t.join("tmp"));
    assert_eq!(tmp.mode() & 0o7777, 0o1777);
    assert_eq!(
        lxattr(&t.join("tmp"), "trusted.berth").as_deref(),
        Some(b"t".as_slice())
    );

    let lt = md(&t.join("etc/localtime"));
    assert!(lt.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(t.join("etc/localtime")).unwrap(),
        Path::new("/usr/share/zoneinfo/UTC")
    );
    assert_eq!((lt.uid(), lt.gid()), (1000, 1001));
    assert_eq!(lt.mtime(), 1_400_000_000);

    let link = md(&t.join("etc/hosts.link"));
    assert_eq!(link.ino(), hosts.ino(), "hard link shares the inode");
    assert_eq!(link.nlink(), 2);

    let fifo = md(&t.join("run/fifo"));
    assert!(fifo.file_type().is_fifo());
    assert_eq!(fifo.mode() & 0o7777, 0o620);
    assert_eq!((fifo.uid(), fifo.gid()), (7, 8));
    // Implicit parent directory.
    assert_eq!(md(&t.join("run")).mode() & 0o7777, 0o755);

    let null = md(&t.join("dev/null"));
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), libc::makedev(1, 3));
    assert_eq!(null.mode() & 0o7777, 0o666);
    let lp = md(&t.join("dev/loop9"));
    assert!(lp.file_type().is_block_device());
    assert_eq!(lp.rdev(), libc::makedev(7, 9));
    assert_eq!(lp.gid(), 6);

    let var = md(&t.join("var"));
    assert_eq!(
        (var.mtime(), var.mtime_nsec()),
        (1_234_567_890, 500_000_000)
    );
    let log = md(&t.join("var/log"));
    assert_eq!(
        (log.mtime(), log.mtime_nsec()),
        (1_234_567_891, 250_000_000)
    );

    let old = md(&t.join("old-style-dir"));
    assert!(old.is_dir());
    assert_eq!(old.mode() & 0o7777, 0o711);
}

#[test]
fn diff_id_verification() {
    let env = Env::new();
    let layer = tar(&[E::file("a", "a")]);
    let good = ApplyOptions {
        expected_diff_id: Some(sha256(&layer)),
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &good).unwrap();

    let env = Env::new();
    let bad = ApplyOptions {
        expected_diff_id: Some(sha256(b"something else")),
        no_same_owner: true,
        ..Default::default()
    };
    let err = apply(layer.as_slice(), &env.target, &bad).unwrap_err();
    assert!(matches!(err, ArchiveError::DigestMismatch { .. }), "{err}");
    assert_eq!(err.kind(), ErrorKind::FailedPrecondition);
    assert!(err.to_string().contains(&sha256(&layer)), "{err}");

    let malformed = ApplyOptions {
        expected_diff_id: Some("md5:abc".into()),
        ..Default::default()
    };
    let err = apply(layer.as_slice(), &env.target, &malformed).unwrap_err();
    assert!(matches!(err, ArchiveError::InvalidDigest(_)), "{err}");
}

#[test]
fn diff_id_covers_trailing_padding() {
    let env = Env::new();
    let mut layer = tar(&[E::file("a", "a")]);
    // tar(1) pads archives to a 10 KiB record; the diff_id is over every byte.
    layer.resize(10240, 0);
    let stats = apply(layer.as_slice(), &env.target, &ApplyOptions::default()).unwrap();
    assert_eq!(stats.size, 10240);
    assert_eq!(stats.diff_id, sha256(&layer));
}

#[test]
fn id_map_offset_and_function() {
    require_root();
    let layer = tar(&[
        E::dir("d/").owner(0, 0),
        E::file("d/f", "x").owner(1000, 2000).mode(0o4750),
        E::symlink("d/l", "f").owner(5, 6),
    ]);
    let env = Env::new();
    let opts = ApplyOptions {
        id_map: Some(IdMap::Offset {
            uid: 100_000,
            gid: 200_000,
        }),
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    let t = &env.target;
    assert_eq!(
        (md(&t.join("d")).uid(), md(&t.join("d")).gid()),
        (100_000, 200_000)
    );
    let f = md(&t.join("d/f"));
    assert_eq!((f.uid(), f.gid()), (101_000, 202_000));
    assert_eq!(f.mode() & 0o7777, 0o4750);
    assert_eq!(
        (md(&t.join("d/l")).uid(), md(&t.join("d/l")).gid()),
        (100_005, 200_006)
    );

    let env = Env::new();
    let opts = ApplyOptions {
        id_map: Some(IdMap::Func(Box::new(|u, g| (u + 1, g + 2)))),
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    let f = md(&env.target.join("d/f"));
    assert_eq!((f.uid(), f.gid()), (1001, 2002));

    // Overflow is refused, naming the entry.
    let env = Env::new();
    let opts = ApplyOptions {
        id_map: Some(IdMap::Offset {
            uid: u32::MAX,
            gid: 0,
        }),
        ..Default::default()
    };
    let err = apply(
        tar(&[E::file("big", "x").owner(5, 0)]).as_slice(),
        &env.target,
        &opts,
    )
    .unwrap_err();
    assert!(err.to_string().contains("entry \"big\""), "{err}");
}

#[test]
fn no_same_owner_keeps_the_applier_as_owner() {
    let env = Env::new();
    let layer = tar(&[E::file("f", "x").owner(1234, 5678).mode(0o640)]);
    let opts = ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    let f = md(&env.target.join("f"));
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    );
    assert_eq!((f.uid(), f.gid()), (uid, gid));
    assert_eq!(f.mode() & 0o7777, 0o640);
}

#[test]
fn existing_entries_are_replaced_by_containerd_rules() {
    require_root();
    let env = Env::new();
    let t = &env.target;
    std::fs::create_dir_all(t.join("keepdir/child")).unwrap();
    std::fs::write(t.join("keepdir/lower-file"), "lower").unwrap();
    std::fs::create_dir_all(t.join("dir-becomes-file/sub")).unwrap();
    std::fs::write(t.join("file-becomes-dir"), "f").unwrap();
    std::fs::write(t.join("shared"), "old content").unwrap();
    std::fs::hard_link(t.join("shared"), t.join("shared-other-name")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", t.join("link-becomes-file")).unwrap();

    let layer = tar(&[
        E::dir("keepdir/").mode(0o700).owner(3, 3),
        E::file("dir-becomes-file", "now a file"),
        E::dir("file-becomes-dir/"),
        E::file("shared", "new content"),
        E::file("link-becomes-file", "plain"),
    ]);
    apply(layer.as_slice(), t, &ApplyOptions::default()).unwrap();

    // Directory over directory merges: lower children stay, metadata from the layer.
    assert!(t.join("keepdir/child").is_dir());
    assert_eq!(
        std::fs::read(t.join("keepdir/lower-file")).unwrap(),
        b"lower"
    );
    assert_eq!(md(&t.join("keepdir")).mode() & 0o7777, 0o700);
    assert_eq!(md(&t.join("keepdir")).uid(), 3);
    assert_eq!(
        std::fs::read(t.join("dir-becomes-file")).unwrap(),
        b"now a file"
    );
    assert!(t.join("file-becomes-dir").is_dir());
    // A file is replaced by a new inode, never rewritten in place: the other hard link (which in
    // a snapshot may be shared with the parent layer) keeps the old content.
    assert_eq!(std::fs::read(t.join("shared")).unwrap(), b"new content");
    assert_eq!(
        std::fs::read(t.join("shared-other-name")).unwrap(),
        b"old content"
    );
    assert!(md(&t.join("link-becomes-file")).is_file());
}

#[test]
fn long_names_via_pax_and_gnu_are_applied() {
    let env = Env::new();
    let deep = format!("{}/{}", "d".repeat(120), "f".repeat(130));
    let gnu = format!("{}/{}", "g".repeat(90), "h".repeat(90));
    let target = "t".repeat(150);
    let layer = tar(&[
        E::file(&deep, "deep"),
        E::file(&gnu, "gnu").gnu_long(),
        E::symlink("longlink", &target),
    ]);
    let opts = ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    assert_eq!(std::fs::read(env.target.join(&deep)).unwrap(), b"deep");
    assert_eq!(std::fs::read(env.target.join(&gnu)).unwrap(), b"gnu");
    assert_eq!(
        std::fs::read_link(env.target.join("longlink")).unwrap(),
        Path::new(&target)
    );
}

#[test]
fn overlay_parents_give_implicit_directories_their_metadata() {
    require_root();
    let env = Env::new();
    let parent = tempfile::tempdir().unwrap();
    std::fs::create_dir(parent.path().join("usr")).unwrap();
    std::fs::set_permissions(
        parent.path().join("usr"),
        std::os::unix::fs::PermissionsExt::from_mode(0o750),
    )
    .unwrap();
    lchown(&parent.path().join("usr"), 11, 12);
    set_lxattr(&parent.path().join("usr"), "user.from-parent", b"1");
    set_times(&parent.path().join("usr"), 1_111_111_111, 0);

    let layer = tar(&[E::file("usr/bin/tool", "x"), E::file("opt/new", "y")]);
    let opts = ApplyOptions {
        whiteouts: WhiteoutMode::Overlay {
            xattr_prefix: crate::XattrPrefix::Trusted,
        },
        parents: vec![parent.path().to_path_buf()],
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    let usr = md(&env.target.join("usr"));
    assert_eq!(usr.mode() & 0o7777, 0o750);
    assert_eq!((usr.uid(), usr.gid()), (11, 12));
    assert_eq!(usr.mtime(), 1_111_111_111);
    assert_eq!(
        lxattr(&env.target.join("usr"), "user.from-parent").as_deref(),
        Some(b"1".as_slice())
    );
    // Not in any parent: default 0755.
    assert_eq!(md(&env.target.join("opt")).mode() & 0o7777, 0o755);
    assert_eq!(md(&env.target.join("usr/bin")).mode() & 0o7777, 0o755);
}

#[test]
fn sync_option_applies() {
    let env = Env::new();
    let layer = tar(&[E::file("a", "a")]);
    let opts = ApplyOptions {
        sync: true,
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
}

#[test]
fn media_types_and_decompression() {
    let layer = tar(&[E::file("hello", "world")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::stream::encode_all(layer.as_slice(), 3).unwrap();

    for (mt, blob) in [
        ("application/vnd.oci.image.layer.v1.tar", &layer),
        ("application/vnd.oci.image.layer.v1.tar+gzip", &gz),
        ("application/vnd.oci.image.layer.v1.tar+zstd", &zst),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar",
            &layer,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
            &gz,
        ),
        (
            "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
            &zst,
        ),
        ("application/vnd.docker.image.rootfs.diff.tar", &layer),
        ("application/vnd.docker.image.rootfs.diff.tar.gzip", &gz),
        (
            "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
            &gz,
        ),
    ] {
        let mut out = Vec::new();
        decompress(blob.as_slice(), mt)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, layer, "{mt}");

        let env = Env::new();
        let opts = ApplyOptions {
            expected_diff_id: Some(sha256(&layer)),
            no_same_owner: true,
            ..Default::default()
        };
        apply(decompress(blob.as_slice(), mt).unwrap(), &env.target, &opts).unwrap();
        assert_eq!(std::fs::read(env.target.join("hello")).unwrap(), b"world");
    }

    for (blob, want) in [
        (&layer, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        let (c, mut r) = decompress_detect(blob.as_slice()).unwrap();
        assert_eq!(c, want);
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, layer);
    }

    let err =
        media_type_compression("application/vnd.oci.image.layer.v1.tar+encrypted").unwrap_err();
    assert!(
        err.to_string()
            .contains("application/vnd.oci.image.layer.v1.tar+encrypted"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::NotImplemented);
    assert!(matches!(
        decompress(layer.as_slice(), "text/plain"),
        Err(ArchiveError::UnsupportedMediaType(m)) if m == "text/plain"
    ));

    // A corrupt gzip stream is a stream error, not a panic.
    let env = Env::new();
    let mut broken = gz.clone();
    let mid = broken.len() / 2;
    broken[mid] ^= 0xff;
    broken.truncate(mid + 4);
    let err = apply(
        decompress(
            broken.as_slice(),
            "application/vnd.oci.image.layer.v1.tar+gzip",
        )
        .unwrap(),
        &env.target,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ArchiveError::Stream { .. }), "{err}");
}

#[test]
fn digesting_reader_hashes_what_passes() {
    let data = b"some bytes to hash".repeat(1000);
    let mut r = DigestingReader::new(data.as_slice());
    let mut sink = Vec::new();
    r.read_to_end(&mut sink).unwrap();
    assert_eq!(r.size(), data.len() as u64);
    assert_eq!(r.digest(), sha256(&data));
}

#[test]
fn big_file_streams_intact() {
    let env = Env::new();
    // 5 MiB of non-repeating bytes crosses the copy buffer several times.
    let data: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let layer = tar(&[E::file("big", &data)]);
    let opts = ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    assert_eq!(std::fs::read(env.target.join("big")).unwrap(), data);
}

#[test]
fn blank_numeric_fields_read_as_zero() {
    // Some writers leave uid/gid/mtime blank (all NULs); Go's archive/tar reads them as 0.
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..5].copy_from_slice(b"blank");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o600);
    h.set_size(1);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, b"z".as_slice()).unwrap();
    let layer = b.into_inner().unwrap();
    let env = Env::new();
    let opts = ApplyOptions {
        no_same_owner: true,
        ..Default::default()
    };
    apply(layer.as_slice(), &env.target, &opts).unwrap();
    let m = md(&env.target.join("blank"));
    assert_eq!((m.mtime(), m.mode() & 0o7777), (0, 0o600));
}

#[test]
fn name_cleaning_and_pax_times() {
    use crate::apply::{clean_name, parse_pax_time};
    use crate::fsutil::Time;
    let ok = |s: &str| {
        clean_name(s.as_bytes())
            .map(|c| c.join(&b'/'))
            .map(|v| String::from_utf8(v).unwrap())
    };
    assert_eq!(ok("/etc//./passwd").unwrap(), "etc/passwd");
    assert_eq!(ok("./a/b/../c/").unwrap(), "a/c");
    assert_eq!(ok("a/..").unwrap(), "");
    assert!(ok("..").is_err());
    assert!(ok("a/../../b").is_err());
    assert!(ok("/../etc").is_err());
    assert!(clean_name(b"a\0b").is_err());
    assert_eq!(
        parse_pax_time(b"12.5"),
        Some(Time {
            sec: 12,
            nsec: 500_000_000
        })
    );
    assert_eq!(
        parse_pax_time(b"-1.25"),
        Some(Time {
            sec: -2,
            nsec: 750_000_000
        })
    );
    assert_eq!(parse_pax_time(b"7"), Some(Time { sec: 7, nsec: 0 }));
    assert_eq!(
        parse_pax_time(b"1.1234567891"),
        Some(Time {
            sec: 1,
            nsec: 123_456_789
        })
    );
    assert_eq!(parse_pax_time(b"x"), None);
}
