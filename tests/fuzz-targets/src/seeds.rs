//! The seed corpora, as code: `fuzz/corpus/<target>/<name>` is written from these by the
//! ignored `generate_corpus` test. Layer seeds are hostile tarballs, each aimed at one way out of
//! the target or one way to upset the reader.

use crate::layer::{Flags, CANARIES};
use crate::tarball::{pax_records, Format, Hdr, Tar};

pub type Seed = (String, Vec<u8>);

fn seed(name: &str, flags: u8, tar: &mut Tar) -> Seed {
    let mut bytes = vec![flags];
    bytes.extend(tar.finish());
    (name.to_owned(), bytes)
}

/// The target names and their seeds.
pub fn all() -> Vec<(&'static str, Vec<Seed>)> {
    vec![
        ("layer_apply", layer()),
        ("reference", text(REFERENCES)),
        ("filters", text(FILTERS)),
        ("image_json", image_json()),
    ]
}

fn text(items: &[(&str, &str)]) -> Vec<Seed> {
    items
        .iter()
        .map(|(n, s)| ((*n).to_owned(), s.as_bytes().to_vec()))
        .collect()
}

pub fn layer() -> Vec<Seed> {
    let f = Flags::SEED;
    let mut out = Vec::new();
    let mut add = |name: &str, flags: u8, t: &mut Tar| out.push(seed(name, flags, t));

    // An honest layer of every member type.
    let honest = |t: &mut Tar| {
        t.dir("a/")
            .file("a/f", b"hello\n")
            .symlink("a/s", "f")
            .hardlink("a/h", "a/f")
            .add(Hdr::new("a/fifo", b'6'), b"")
            .pax(&[("SCHILY.xattr.user.k", b"v"), ("mtime", b"1700000000.5")])
            .file("a/x", b"xattr\n")
            .dir("b/")
            .file("b/.wh..wh..opq", b"")
            .file(".wh.etc", b"");
    };
    for (name, flags) in [
        ("honest-delete", f),
        (
            "honest-overlay-trusted",
            Flags::OVERLAY_TRUSTED | Flags::ALLOW_DEVICES,
        ),
        ("honest-overlay-user", Flags::OVERLAY_USER | Flags::PARENTS),
        (
            "honest-no-owner-idmap",
            Flags::NO_SAME_OWNER | Flags::ID_MAP | Flags::PREFILL,
        ),
        ("honest-wrong-diff-id", Flags::WRONG_DIFF_ID),
    ] {
        let mut t = Tar::new();
        honest(&mut t);
        add(name, flags, &mut t);
    }

    // Names that climb out or are absolute.
    add(
        "traversal-dotdot",
        f,
        Tar::new().file("../outside/pwned", b"x"),
    );
    add("traversal-inner", f, Tar::new().file("a/../../pwned", b"x"));
    add(
        "traversal-dir",
        f,
        Tar::new().dir("../../x/").file("./../y", b""),
    );
    let mut t = Tar::new();
    for c in CANARIES {
        t.file(c, b"absolute");
    }
    t.file("/../../../../berth-fuzz-canary", b"").dir("/");
    add("absolute-names", f, &mut t);
    add(
        "pax-path-escape",
        f,
        Tar::new()
            .pax(&[("path", b"../outside/pwned")])
            .file("innocent", b"x")
            .pax(&[("linkpath", b"../outside/file")])
            .hardlink("h", "innocent"),
    );
    add(
        "gnu-longname-escape",
        f,
        Tar::new()
            .long(b'L', b"../../pwned")
            .file("innocent", b"x")
            .long(b'K', b"/../outside/file")
            .symlink("s", "innocent")
            .hardlink("h", "s"),
    );

    // Symlinks out, then writes through them.
    add(
        "symlink-escape-relative",
        f,
        Tar::new()
            .symlink("esc", "../outside")
            .file("esc/pwned", b"x")
            .dir("esc/dir/")
            .symlink("up", "../../../../../../..")
            .file("up/tmp/berth-fuzz-canary", b"x"),
    );
    add(
        "symlink-escape-absolute",
        f,
        Tar::new()
            .symlink("abs", "/")
            .file("abs/tmp/berth-fuzz-canary", b"x")
            .symlink("abs2", "/tmp")
            .file("abs2/berth-fuzz-canary", b"x"),
    );
    add(
        "symlink-prefilled",
        f,
        Tar::new()
            .file("link-out/pwned", b"x")
            .file("abs-out/pwned", b"x")
            .file("dotdot/outside/pwned", b"x")
            .file("root-link/tmp/berth-fuzz-canary", b"x")
            .file("file-out", b"replaced, not written through"),
    );
    add(
        "symlink-chain",
        f,
        Tar::new()
            .symlink("l1", "l2")
            .symlink("l2", "l3")
            .symlink("l3", "../outside")
            .file("l1/pwned", b"x")
            .symlink("loop1", "loop2")
            .symlink("loop2", "loop1")
            .file("loop1/x", b""),
    );
    add(
        "symlink-then-dir-then-file",
        f,
        Tar::new()
            .symlink("d", "../outside")
            .dir("d/")
            .file("d/f", b"")
            .symlink("d2", "/")
            .symlink("d2", "../outside")
            .file("d2/pwned", b""),
    );
    add(
        "symlink-written-through",
        f,
        Tar::new()
            .symlink("f", "../outside/file")
            .file("f", b"replaces the link")
            .symlink("g", "/tmp/berth-fuzz-canary")
            .file("g", b""),
    );

    // Hard links out.
    add(
        "hardlink-escape",
        f,
        Tar::new()
            .hardlink("h1", "../outside/file")
            .hardlink("h2", "/etc/passwd")
            .hardlink("h3", "link-out/file")
            .hardlink("h4", "file-out")
            .file("h4", b"write through?")
            .symlink("s", "../outside/file")
            .hardlink("h5", "s")
            .symlink("d", "../outside")
            .hardlink("h6", "d/file")
            .hardlink("h7", "dotdot/outside-file")
            .hardlink("h8", "")
            .hardlink("h9", ".")
            .hardlink("h10", "etc"),
    );
    add(
        "hardlink-then-write",
        f,
        Tar::new()
            .hardlink("x", "etc/passwd")
            .file("x", b"not through the link")
            .hardlink("hard", "hard")
            .hardlink("hard2", "hard"),
    );

    // Whiteouts aimed out of the target.
    add(
        "whiteout-escape",
        f,
        Tar::new()
            .file(".wh...", b"")
            .file(".wh..", b"")
            .file(".wh.", b"")
            .file("link-out/.wh.file", b"")
            .file("link-out/.wh..wh..opq", b"")
            .file("dotdot/.wh.outside", b"")
            .file("abs-out/.wh..wh..opq", b"")
            .file("root-link/.wh.tmp", b"")
            .file(".wh..wh..opq", b""),
    );
    add(
        "whiteout-overlay",
        Flags::OVERLAY_TRUSTED | Flags::PREFILL,
        Tar::new()
            .file("link-out/.wh.file", b"")
            .file("abs-out/.wh..wh..opq", b"")
            .file("dir/.wh..wh..opq", b"")
            .file("dir/.wh.sub", b"")
            .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
            .dir("forged/")
            .file(".wh..wh.plnk", b""),
    );

    // Oversized and lying headers.
    add(
        "huge-pax-header",
        f,
        Tar::new().add(
            Hdr {
                size: 2 << 30,
                ..Hdr::new("././@PaxHeader", b'x')
            },
            b"30 path=aaaaaaaaaaaaaaaaaaaaa\n",
        ),
    );
    add(
        "huge-gnu-longname",
        f,
        Tar::new().add(
            Hdr {
                size: (1 << 20) + 1,
                format: Format::Gnu,
                ..Hdr::new("././@LongLink", b'L')
            },
            b"long",
        ),
    );
    add(
        "huge-global-header",
        f,
        Tar::new().add(
            Hdr {
                size: 1 << 40,
                ..Hdr::new("pax_global_header", b'g')
            },
            b"",
        ),
    );
    add(
        "huge-file-size",
        f,
        Tar::new().add(
            Hdr {
                size: 8 << 30,
                ..Hdr::new("big", b'0')
            },
            b"short",
        ),
    );
    add(
        "pax-size-override",
        f,
        Tar::new()
            .pax(&[("size", b"99999999999")])
            .file("lies", b"x")
            .pax(&[("size", b"-1"), ("uid", b"99999999999999")])
            .file("neg", b""),
    );
    add(
        "huge-ids-and-times",
        f,
        Tar::new()
            .add(
                Hdr {
                    uid: 1 << 40,
                    gid: 1 << 33,
                    ..Hdr::new("owner", b'0')
                },
                b"",
            )
            .pax(&[("mtime", b"-1.999999999999"), ("atime", b"1e99")])
            .file("times", b"")
            .pax(&[("mtime", b"99999999999999999999")])
            .file("times2", b""),
    );
    let mut pax_garbage = Tar::new();
    pax_garbage
        .add(Hdr::new("././@PaxHeader", b'x'), b"9999 path=x\n")
        .file("after-bad-pax", b"")
        .add(Hdr::new("././@PaxHeader", b'x'), b"5 a=\n0 =\n")
        .file("after-bad-pax2", b"");
    add("pax-garbage", f, &mut pax_garbage);

    // Device nodes, with and without permission.
    let devices = |t: &mut Tar| {
        t.add(
            Hdr {
                dev: (1, 3),
                ..Hdr::new("dev/null", b'3')
            },
            b"",
        )
        .add(
            Hdr {
                dev: (8, 0),
                mode: 0o666,
                ..Hdr::new("dev/sda", b'4')
            },
            b"",
        )
        .add(Hdr::new("dev/fifo", b'6'), b"")
        .add(
            Hdr {
                dev: (1, 3),
                ..Hdr::new("link-out/null", b'3')
            },
            b"",
        );
    };
    let mut t = Tar::new();
    devices(&mut t);
    add("devices-allowed", f, &mut t);
    let mut t = Tar::new();
    devices(&mut t);
    add("devices-refused", Flags::PREFILL, &mut t);

    // Deep nesting: a 2,000-deep path, then symlinks that continue it twice more; then the lot
    // is whited out (removal walks the whole depth).
    let deep = |c: &str, n: usize| vec![c; n].join("/");
    let (a, b, c) = (deep("a", 1500), deep("b", 1500), deep("c", 1500));
    add(
        "deep-nesting",
        f,
        Tar::new()
            .pax(&[("path", format!("{a}/f").as_bytes())])
            .file("x", b"deep")
            .pax(&[("linkpath", a.as_bytes())])
            .symlink("l1", "x")
            .pax(&[("path", format!("l1/{b}/f").as_bytes())])
            .file("x", b"deeper")
            .pax(&[("linkpath", format!("l1/{b}").as_bytes())])
            .symlink("l2", "x")
            .pax(&[("path", format!("l2/{c}/f").as_bytes())])
            .file("x", b"deepest")
            .file(".wh.a", b""),
    );
    add(
        "deep-nesting-opaque",
        f,
        Tar::new()
            .pax(&[("path", format!("{a}/f").as_bytes())])
            .file("x", b"deep")
            .file("a/.wh..wh..opq", b""),
    );

    // Long names and links.
    let comp256 = "n".repeat(256);
    add(
        "long-names",
        f,
        Tar::new()
            .pax(&[("path", comp256.as_bytes())])
            .file("x", b"")
            .pax(&[("path", "p/".repeat(2049).as_bytes())])
            .file("x", b"")
            .pax(&[("linkpath", "t".repeat(4096).as_bytes())])
            .symlink("s", "x")
            .pax(&[("path", b"nul\0byte")])
            .file("x", b"")
            .long(b'L', "q/".repeat(60).as_bytes())
            .file("x", b"gnu long"),
    );
    add(
        "ustar-prefix",
        f,
        Tar::new().file(
            format!("{}/{}", "p".repeat(150), "n".repeat(100)),
            b"split name",
        ),
    );

    // Duplicates and type changes at one name.
    add(
        "duplicates",
        f,
        Tar::new()
            .file("dup", b"one")
            .file("dup", b"two")
            .dir("dup/")
            .file("dup/child", b"")
            .file("dup", b"three")
            .symlink("dup", "../outside")
            .file("dup/x", b"")
            .dir("etc/")
            .dir("etc/")
            .file("etc", b"")
            .dir("hard/"),
    );

    // Odd members.
    add(
        "odd-members",
        f,
        Tar::new()
            .file("", b"empty name")
            .file(".", b"")
            .dir("./")
            .file("v7dir/", b"")
            .add(
                Hdr {
                    format: Format::V7,
                    ..Hdr::new("v7file", b'0')
                },
                b"v7",
            )
            .add(Hdr::new("contig", b'7'), b"contiguous")
            .add(Hdr::new("unknown", b'Z'), b"")
            .add(Hdr::new("volume", b'V'), b"")
            .add(
                Hdr {
                    mode: 0o7777,
                    ..Hdr::new("setuid", b'0')
                },
                b"",
            )
            .add(
                Hdr {
                    mode: 0,
                    ..Hdr::new("locked/", b'5')
                },
                b"",
            )
            .file("locked/inside", b"")
            .symlink("empty-link", "")
            .add(
                Hdr::new("pax_global_header", b'g'),
                &pax_records(&[("path", b"/x")]),
            ),
    );
    add(
        "xattrs",
        f,
        Tar::new()
            .pax(&[
                ("SCHILY.xattr.user.a", b"1"),
                ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
                ("SCHILY.xattr.user.overlay.opaque", b"y"),
                ("SCHILY.xattr.security.capability", b"\x01\x00\x00\x02"),
                ("SCHILY.xattr.system.posix_acl_access", b"junk"),
                ("SCHILY.xattr.bogus", b"x"),
            ])
            .file("x", b"")
            .pax(&[("SCHILY.xattr.user.s", b"on a symlink")])
            .symlink("s", "../outside/file"),
    );

    // A GNU sparse member (small) and one declaring an exabyte (skipped by the harness).
    add("sparse", f, &mut sparse(4096));
    add("sparse-huge", f, &mut sparse(1 << 60));

    add("empty", f, &mut Tar::new());
    out.push(("no-end-marker".into(), {
        let mut b = vec![f];
        b.extend(Tar::new().file("f", b"x").bytes.clone());
        b
    }));
    out.push(("garbage".into(), b"\x80not a tar at all".to_vec()));
    out
}

/// A GNU sparse file: a hole of `offset` bytes, then one data block.
fn sparse(offset: u64) -> Tar {
    let real = offset + 512;
    let h = Hdr {
        format: Format::Gnu,
        size: 512,
        ..Hdr::new("sparse", b'S')
    };
    let mut b = h.block();
    // First sparse entry (offset, numbytes) at 386, real size at 483.
    let put = |b: &mut [u8], at: usize, len: usize, v: u64| {
        if v >= 1 << (3 * (len - 1)) {
            b[at..at + len].fill(0);
            b[at] = 0x80;
            b[at + len - 8..at + len].copy_from_slice(&v.to_be_bytes());
        } else {
            let s = format!("{v:0w$o}", w = len - 1);
            b[at..at + len - 1].copy_from_slice(s.as_bytes());
            b[at + len - 1] = 0;
        }
    };
    put(&mut b, 386, 12, offset);
    put(&mut b, 398, 12, 512);
    put(&mut b, 483, 12, real);
    crate::tarball::fix_checksum(&mut b);
    let mut t = Tar::new();
    t.bytes.extend_from_slice(&b);
    t.data(&[b'd'; 512]);
    t
}

const REFERENCES: &[(&str, &str)] = &[
    ("short", "alpine"),
    ("tag", "docker.io/library/alpine:3.19"),
    (
        "full",
        "localhost:5000/a/b-c__d.e:v1.0@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    ("ipv6", "[::1]:5000/x/y:z"),
    ("upper-domain", "Example.COM/x"),
    ("upper-path", "docker.io/Library/x"),
    ("index", "index.docker.io/foo"),
    ("hex64", "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    ("digest", "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
    (
        "digest512",
        "sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
    ("bad-digest", "sha256:XYZ"),
    ("platform", "linux/arm64/v8"),
    ("platform-arm", "linux/arm"),
    ("platform-arch", "aarch64"),
    ("platform-win", "windows/amd64/v3"),
    ("platform-wild", "linux/*"),
    // Found by fuzzing: containerd's platform vector listed every lower level (4e9 of them).
    ("platform-huge-variant", "linux/amd64/v4000000000"),
    ("empty", ""),
    ("seps", "a//b:c:d@e"),
    ("port-only", "example.com:/x"),
    ("separators", "foo__bar---baz.qux_x"),
    ("bad-separators", "foo.-bar__-x"),
    ("unicode", "ünïcode/ïmage:täg"),
    ("url", "https://example.com/x?y#z"),
];

const FILTERS: &[(&str, &str)] = &[
    ("eq", "name==docker.io/library/busybox:latest"),
    ("and", "name==foo,labels.a==b"),
    ("or", "name==foo\nlabels.a"),
    (
        "quoted",
        "labels.\"containerd.io/gc.ref.content.l.0\"==sha256:00",
    ),
    ("regex-slash", "name~=/busy.*/"),
    ("regex-backtick", "name~=`(?i)BUSY`"),
    ("ne", "name!=x,type!=\"y\""),
    ("present", "labels.a"),
    ("platforms", "platforms==linux/amd64"),
    ("bad-regex", "name~=/[/"),
    ("huge-regex", "name~=a{1000}{1000}"),
    ("unterminated", "labels.\"k"),
    ("no-field", "==x"),
    ("no-value", "name=="),
    ("escapes", "labels.\"a\\\"b\\\\c\"==\"v\\tv\""),
    ("spaces", "  name == x ,  labels.a  "),
    ("unicode", "labels.ünï==ç"),
    ("empty-lines", "\n\n"),
];

fn image_json() -> Vec<Seed> {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let idx = |mt: &str| {
        crate::MEDIA_TYPES
            .iter()
            .position(|m| *m == mt)
            .map_or(0, |i| i as u8)
    };
    use berth_oci::media;
    let docs: Vec<(&str, &str, String)> = vec![
        (
            "oci-manifest",
            media::OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":2}},"layers":[{{"mediaType":"{}","digest":"{d}","size":3,"annotations":{{"a":"b"}}}}],"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}"#,
                media::OCI_MANIFEST,
                media::OCI_CONFIG,
                media::OCI_LAYER_GZIP
            ),
        ),
        (
            "docker-manifest-null-layers",
            media::DOCKER_MANIFEST,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{d}","size":2}},"layers":null}}"#,
                media::DOCKER_MANIFEST,
                media::DOCKER_CONFIG
            ),
        ),
        (
            "oci-index",
            media::OCI_INDEX,
            format!(
                r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{d}","size":10,"platform":{{"os":"linux","architecture":"arm","variant":"v7"}}}},{{"mediaType":"{}","digest":"{d}","size":1,"platform":{{"os":"windows","architecture":"amd64","os.version":"10.0","os.features":["win32k"]}}}}]}}"#,
                media::OCI_MANIFEST,
                media::DOCKER_MANIFEST
            ),
        ),
        (
            "docker-manifest-list",
            media::DOCKER_MANIFEST_LIST,
            format!(
                r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{d}","size":7,"platform":{{"os":"linux","architecture":"arm64"}}}}]}}"#,
                media::DOCKER_MANIFEST_LIST,
                media::DOCKER_MANIFEST
            ),
        ),
        (
            "config",
            media::OCI_CONFIG,
            format!(
                r#"{{"architecture":"amd64","os":"linux","variant":"v3","config":{{"Env":["A=b"],"Cmd":["sh"],"Labels":{{"x":"y"}},"ExposedPorts":{{"80/tcp":{{}}}}}},"rootfs":{{"type":"layers","diff_ids":["{d}"]}},"history":[{{"created":"2024-01-01T00:00:00Z","empty_layer":true}}]}}"#
            ),
        ),
        (
            "config-null-diff-ids",
            media::DOCKER_CONFIG,
            r#"{"architecture":"arm","os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#.into(),
        ),
        (
            "config-bad-diff-id",
            media::OCI_CONFIG,
            r#"{"architecture":"x","os":"","rootfs":{"type":"layers","diff_ids":["sha256:nothex"]}}"#.into(),
        ),
        (
            "schema1",
            media::DOCKER_MANIFEST,
            r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]}"#.into(),
        ),
        (
            "manifest-is-index",
            media::OCI_MANIFEST,
            format!(r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[]}}"#, media::OCI_INDEX),
        ),
        (
            "index-is-manifest",
            media::OCI_INDEX,
            r#"{"schemaVersion":2,"config":{},"layers":[]}"#.into(),
        ),
        ("deep-arrays", media::OCI_INDEX, format!("{}{}", "[".repeat(300), "]".repeat(300))),
        (
            "deep-objects",
            media::OCI_CONFIG,
            format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200)),
        ),
        ("not-object", media::OCI_MANIFEST, "[null, 1e999, \"\\ud800\"]".into()),
        (
            "huge-numbers",
            media::OCI_MANIFEST,
            format!(
                r#"{{"schemaVersion":18446744073709551616,"config":{{"mediaType":"x","digest":"{d}","size":-1}},"layers":[]}}"#
            ),
        ),
        ("unknown-type", "application/octet-stream", "{}".into()),
    ];
    docs.into_iter()
        .map(|(name, mt, doc)| {
            let mut b = vec![idx(mt)];
            b.extend_from_slice(doc.as_bytes());
            (name.to_owned(), b)
        })
        .collect()
}
