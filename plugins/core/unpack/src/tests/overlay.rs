//! Real layers on the real overlayfs driver, through both of Berth's unpack paths:
//!
//! * the server-side unpack ([`crate::Unpacker`]): every layer extracted at once into staging,
//!   then adopted and committed;
//! * the diff-service path (what `ctr`'s client-side unpack drives, and what containerd does):
//!   prepare on the parent, [`berth_diff::apply_layer`] onto the snapshot's mounts, commit.
//!
//! For the same chain ID, both must leave the same tree in each layer's directory. And both
//! refuse an oversized extension header in a layer as InvalidArgument.
//!
//! The tree comparisons need root (devices, owners, `trusted.overlay.*`), and say so.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_archive::ArchiveError;
use berth_diff::DiffError;
use berth_oci::{media, Descriptor, Digest};
use berth_plugin::{Classify, ErrorKind};
use berth_snapshots::NewSnapshot;
use berth_snapshotter::Snapshotter;
use berth_snapshotter_overlay::OverlaySnapshotter;

use super::{fixture_with, host, Fixture, NS};
use crate::Request;

const SN: &str = "overlayfs";

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it creates devices, chowns and sets trusted.overlay.* xattrs): \
         run `cargo test -p berth-unpack` as root"
    );
}

fn overlay_fixture() -> Fixture {
    fixture_with(|dir| {
        let driver = OverlaySnapshotter::new(dir).unwrap();
        (SN, Arc::new(driver) as Arc<dyn Snapshotter>)
    })
}

/// A layer tarball under construction. Headers are written raw, so hostile names can be
/// expressed.
struct LayerTar(tar::Builder<Vec<u8>>);

impl LayerTar {
    fn new() -> Self {
        LayerTar(tar::Builder::new(Vec::new()))
    }

    #[allow(clippy::too_many_arguments)]
    fn member(
        mut self,
        kind: tar::EntryType,
        name: &str,
        mode: u32,
        owner: (u64, u64),
        data: &[u8],
        link: &str,
        dev: (u32, u32),
        pax: &[(&str, &[u8])],
    ) -> Self {
        if !pax.is_empty() {
            self.0.append_pax_extensions(pax.iter().copied()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        let field = &mut h.as_old_mut().linkname;
        field[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(dev.0).unwrap();
            h.set_device_minor(dev.1).unwrap();
        }
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn dir(self, name: &str, mode: u32, owner: (u64, u64)) -> Self {
        self.member(
            tar::EntryType::Directory,
            name,
            mode,
            owner,
            b"",
            "",
            (0, 0),
            &[],
        )
    }
    fn file(self, name: &str, mode: u32, data: &str) -> Self {
        self.member(
            tar::EntryType::Regular,
            name,
            mode,
            (0, 0),
            data.as_bytes(),
            "",
            (0, 0),
            &[],
        )
    }
    fn file_with(self, name: &str, owner: (u64, u64), pax: &[(&str, &[u8])]) -> Self {
        self.member(
            tar::EntryType::Regular,
            name,
            0o640,
            owner,
            name.as_bytes(),
            "",
            (0, 0),
            pax,
        )
    }
    /// An empty regular file: how `.wh.` markers travel.
    fn marker(self, name: &str, owner: (u64, u64)) -> Self {
        self.member(
            tar::EntryType::Regular,
            name,
            0o644,
            owner,
            b"",
            "",
            (0, 0),
            &[],
        )
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.member(
            tar::EntryType::Symlink,
            name,
            0o777,
            (0, 0),
            b"",
            target,
            (0, 0),
            &[],
        )
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.member(
            tar::EntryType::Link,
            name,
            0o644,
            (0, 0),
            b"",
            target,
            (0, 0),
            &[],
        )
    }
    fn node(self, kind: tar::EntryType, name: &str, dev: (u32, u32)) -> Self {
        self.member(kind, name, 0o620, (0, 5), b"", "", dev, &[])
    }
    fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// An ordinary image: a base and a change set on it.
fn ordinary() -> Vec<Vec<u8>> {
    let base = LayerTar::new()
        .dir("bin/", 0o755, (0, 0))
        .file("bin/sh", 0o755, "#!shell")
        .hardlink("bin/ls", "bin/sh")
        .symlink("bin/ash", "sh")
        .dir("etc/", 0o755, (0, 0))
        .file("etc/passwd", 0o644, "root:x:0:0::/root:/bin/sh\n")
        .file("etc/shadow", 0o600, "root:*::::::\n")
        .dir("home/user/", 0o700, (1000, 1000))
        .file_with(
            "home/user/notes",
            (1000, 1000),
            &[("SCHILY.xattr.user.comment", b"kept")],
        )
        .symlink("lib", "usr/lib")
        .dir("usr/", 0o755, (0, 0))
        .dir("usr/lib/", 0o755, (0, 0))
        .file("usr/lib/libc.so", 0o755, "ELF")
        .node(tar::EntryType::Fifo, "run/initctl", (0, 0))
        .finish();
    let change = LayerTar::new()
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n",
        )
        .marker("etc/.wh.shadow", (0, 0))
        .file("usr/lib/libm.so", 0o755, "ELF m")
        .file("home/user/.profile", 0o644, "PS1=$ ")
        .finish();
    vec![base, change]
}

/// Hostile layers: whiteouts and opaque markers in the bottom layer, whiteouts of what is not
/// there, markers for what the layer itself wrote, forged overlay xattrs, names through
/// symlinks and `..`, hard links, devices, a directory replaced by a file and back.
fn hostile() -> Vec<Vec<u8>> {
    let bottom = LayerTar::new()
        .dir("./", 0o755, (0, 0))
        .marker(".wh.ghost", (7, 8))
        .marker("etc/.wh.passwd-", (0, 0))
        .file("etc/passwd", 0o644, "root")
        .marker("etc/.wh..wh..opq", (0, 0))
        .file("etc/after-opaque", 0o644, "after")
        .file("tmp/gone", 0o644, "gone")
        .marker("tmp/.wh.gone", (0, 0))
        .dir("tmp/sub/", 0o755, (0, 0))
        .file("tmp/sub/x", 0o644, "x")
        .marker("tmp/.wh.sub", (0, 0))
        .file("bin/sh", 0o4755, "#!shell")
        .hardlink("bin/ls", "bin/sh")
        .hardlink("bin/ls2", "./bin/../bin/sh")
        .symlink("bin/ash", "sh")
        .symlink("lib", "/usr/lib")
        .file("lib/libc.so", 0o755, "through an absolute symlink")
        .dir("usr/", 0o750, (5, 6))
        .dir("var/", 0o755, (0, 0))
        .file("var/log", 0o644, "log")
        .member(
            tar::EntryType::Directory,
            "forged/",
            0o755,
            (0, 0),
            b"",
            "",
            (0, 0),
            &[
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.user.overlay.opaque", b"y"),
                ("SCHILY.xattr.user.ok", b"1"),
            ],
        )
        .node(tar::EntryType::Char, "dev/null", (1, 3))
        .node(tar::EntryType::Fifo, "run/fifo", (0, 0))
        .dir(".wh..wh.plnk/", 0o700, (0, 0))
        .file("a/../top", 0o644, "top")
        .finish();
    let middle = LayerTar::new()
        .marker("bin/.wh.ash", (3, 4))
        .marker(".wh.nothing", (0, 0))
        .marker("etc/.wh..wh..opq", (0, 0))
        .file("etc/hostname", 0o644, "berth")
        .file("usr/lib/y/file", 0o644, "implied dirs inherit")
        .file("var", 0o644, "a file where a directory was")
        .file("h1", 0o644, "linked")
        .hardlink("h2", "h1")
        .marker(".wh.tmp", (0, 0))
        .marker("missing-dir/.wh.x", (0, 0))
        .node(tar::EntryType::Block, "dev/sda", (8, 0))
        .finish();
    let top = LayerTar::new()
        .marker(".wh.usr", (0, 0))
        .dir("usr/", 0o755, (0, 0))
        .file("usr/new", 0o644, "re-added")
        .dir("var/", 0o711, (0, 0))
        .marker("var/.wh..wh..opq", (0, 0))
        .marker("var/.wh.absent", (0, 0))
        .finish();
    vec![bottom, middle, top]
}

/// Stores `layers` (gzipped) as an image named `name`; returns the layer descriptors and
/// diff_ids.
fn store_image(f: &Fixture, name: &str, layers: &[Vec<u8>]) -> (Vec<Descriptor>, Vec<Digest>) {
    let descs: Vec<Descriptor> = layers
        .iter()
        .map(|t| f.put(media::OCI_LAYER_GZIP, &gzip(t)))
        .collect();
    let diff_ids: Vec<Digest> = layers.iter().map(|t| Digest::sha256(t)).collect();
    let m = f.manifest(&host(), &descs, &diff_ids);
    f.image(name, &m);
    (descs, diff_ids)
}

fn request(image: &str) -> Request {
    Request {
        namespace: NS.into(),
        image: image.into(),
        snapshotter: SN.into(),
        platform: None,
        target: None,
        gate: None,
    }
}

fn blob(d: &Descriptor) -> berth_metadata::Descriptor {
    berth_metadata::Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: d.size() as i64,
        annotations: Default::default(),
    }
}

/// The diff-service path, as `ctr`'s client-side unpack drives it: prepare on the parent, apply
/// the blob onto the mounts, commit under the chain ID.
fn unpack_through_diff_service(
    f: &Fixture,
    descs: &[Descriptor],
    diff_ids: &[Digest],
) -> Result<Vec<Digest>, DiffError> {
    let chain = berth_oci::chain_ids(diff_ids);
    for (i, d) in descs.iter().enumerate() {
        let key = format!("apply-{}", chain[i]);
        let parent = match i {
            0 => String::new(),
            _ => chain[i - 1].to_string(),
        };
        let mounts = f
            .snapshots
            .prepare(
                NS,
                SN,
                None,
                NewSnapshot {
                    key: key.clone(),
                    parent,
                    labels: BTreeMap::new(),
                    view: false,
                },
            )
            .unwrap();
        let applied = berth_diff::apply_layer(&f.content, NS, &blob(d), mounts, false)?;
        assert_eq!(applied.digest, diff_ids[i].to_string(), "layer {i}");
        f.snapshots
            .commit(NS, SN, chain[i].as_str(), &key, BTreeMap::new(), None)
            .unwrap();
    }
    Ok(chain)
}

/// The directory of every layer of `top`'s chain, bottom first, read from a view's mounts.
fn layer_dirs(f: &Fixture, top: &Digest) -> Vec<PathBuf> {
    let key = format!("view-{top}");
    let mounts = f
        .snapshots
        .prepare(
            NS,
            SN,
            None,
            NewSnapshot {
                key: key.clone(),
                parent: top.to_string(),
                labels: BTreeMap::new(),
                view: true,
            },
        )
        .unwrap();
    f.snapshots.remove(NS, SN, &key).unwrap();
    let mut dirs = Vec::new();
    for m in mounts {
        match m.overlay_options() {
            Some(o) => dirs.extend(o.lowerdirs),
            None => dirs.push(PathBuf::from(m.source)),
        }
    }
    dirs.reverse();
    dirs
}

/// Everything that makes two trees the same, for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    content: Option<Digest>,
    target: Option<PathBuf>,
    /// (major, minor) of devices.
    dev: Option<(u64, u64)>,
    /// Every xattr, overlay's own (`trusted.overlay.*`) included.
    xattrs: BTreeMap<String, Vec<u8>>,
    /// Modification time of files and symlinks (what the layer sets; other kinds' may be now).
    mtime: Option<(i64, i64)>,
    /// The other names of a file with several links.
    links: Vec<PathBuf>,
}

/// The tree under `root`, keyed by relative path ("" for the root).
fn listing(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn visit(
        root: &Path,
        rel: &Path,
        out: &mut BTreeMap<PathBuf, Node>,
        inodes: &mut BTreeMap<u64, Vec<PathBuf>>,
    ) {
        let path = root.join(rel);
        let md = std::fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let xattrs = xattr::list(&path)
            .unwrap()
            .map(|k| {
                let v = xattr::get(&path, &k).unwrap().unwrap_or_default();
                (k.to_string_lossy().into_owned(), v)
            })
            .collect();
        let rdev = md.rdev();
        out.insert(
            rel.to_owned(),
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_dir() { 0 } else { md.size() },
                content: ft
                    .is_file()
                    .then(|| Digest::sha256(&std::fs::read(&path).unwrap())),
                target: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                dev: (ft.is_char_device() || ft.is_block_device())
                    .then(|| (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev))),
                xattrs,
                mtime: (ft.is_file() || ft.is_symlink()).then(|| (md.mtime(), md.mtime_nsec())),
                links: Vec::new(),
            },
        );
        if ft.is_file() && md.nlink() > 1 {
            inodes.entry(md.ino()).or_default().push(rel.to_owned());
        }
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                visit(root, &rel.join(n), out, inodes);
            }
        }
    }
    let mut out = BTreeMap::new();
    let mut inodes = BTreeMap::new();
    visit(root, Path::new(""), &mut out, &mut inodes);
    for names in inodes.values() {
        for n in names {
            if let Some(node) = out.get_mut(n) {
                node.links = names.iter().filter(|o| *o != n).cloned().collect();
            }
        }
    }
    out
}

/// The differences between two listings, one line each; empty when they are the same.
fn differences(a: &BTreeMap<PathBuf, Node>, b: &BTreeMap<PathBuf, Node>) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in a {
        match b.get(p) {
            None => out.push(format!("only server-side: {} {n:?}", p.display())),
            Some(m) if m != n => out.push(format!(
                "differs: {}\n  server-side:  {n:?}\n  diff service: {m:?}",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for (p, m) in b {
        if !a.contains_key(p) {
            out.push(format!("only diff service: {} {m:?}", p.display()));
        }
    }
    out
}

#[test]
fn both_unpack_paths_leave_the_same_tree_for_each_chain_id() {
    require_root();
    let server = overlay_fixture();
    let client = overlay_fixture();
    for (name, layers) in [("ordinary", ordinary()), ("hostile", hostile())] {
        let (descs, diff_ids) = store_image(&server, name, &layers);
        store_image(&client, name, &layers);

        let done = server
            .unpacker
            .unpack_blocking(&request(name), &|_| {})
            .unwrap_or_else(|e| panic!("{name}: server-side unpack: {e}"));
        let chain = unpack_through_diff_service(&client, &descs, &diff_ids)
            .unwrap_or_else(|e| panic!("{name}: diff service: {e}"));
        assert_eq!(done.chain_id, chain[chain.len() - 1]);

        // Layer by layer: the directory each chain ID's snapshot adds.
        let a = layer_dirs(&server, &done.chain_id);
        let b = layer_dirs(&client, &done.chain_id);
        assert_eq!((a.len(), b.len()), (layers.len(), layers.len()));
        for i in 0..layers.len() {
            let (la, lb) = (listing(&a[i]), listing(&b[i]));
            let diff = differences(&la, &lb);
            assert!(
                diff.is_empty(),
                "{name}: layer {i} (chain ID {}) differs between the server-side unpack and \
                 the diff service:\n{}",
                chain[i],
                diff.join("\n")
            );
        }
    }

    // What the hostile chain must hold, so that the comparison above is not between two equally
    // wrong trees.
    let dirs = layer_dirs(&server, &berth_oci::chain_ids(&hostile_diff_ids())[2]);
    let bottom = listing(&dirs[0]);
    let opaque = "trusted.overlay.opaque";
    for gone in ["ghost", "etc/passwd-", "tmp/gone", "tmp/sub"] {
        assert!(
            !bottom.contains_key(Path::new(gone)),
            "bottom layer: {gone}"
        );
    }
    assert!(bottom
        .values()
        .all(|n| n.kind != "char" || n.dev != Some((0, 0))));
    assert!(bottom.values().all(|n| !n.xattrs.contains_key(opaque)));
    assert_eq!(bottom[Path::new("etc/passwd")].kind, "file");
    assert_eq!(
        bottom[Path::new("lib")].target,
        Some(PathBuf::from("/usr/lib"))
    );
    assert_eq!(bottom[Path::new("usr/lib/libc.so")].kind, "file");
    assert_eq!(bottom[Path::new("bin/sh")].links.len(), 2);
    assert_eq!(bottom[Path::new("dev/null")].dev, Some((1, 3)));
    assert_eq!(
        bottom[Path::new("forged")]
            .xattrs
            .keys()
            .collect::<Vec<_>>(),
        vec!["user.ok"]
    );
    let middle = listing(&dirs[1]);
    let whiteout = &middle[Path::new("bin/ash")];
    assert_eq!(
        (whiteout.kind, whiteout.dev, whiteout.uid, whiteout.gid),
        ("char", Some((0, 0)), 3, 4)
    );
    assert_eq!(middle[Path::new("nothing")].dev, Some((0, 0)));
    assert_eq!(
        middle[Path::new("etc")].xattrs.get(opaque),
        Some(&b"y".to_vec())
    );
    let inherited = &middle[Path::new("usr")];
    assert_eq!(
        (inherited.mode, inherited.uid, inherited.gid),
        (0o750, 5, 6)
    );
    let top = listing(&dirs[2]);
    assert_eq!(
        top[Path::new("var")].xattrs.get(opaque),
        Some(&b"y".to_vec())
    );
    assert_eq!(top[Path::new("var/absent")].dev, Some((0, 0)));
}

fn hostile_diff_ids() -> Vec<Digest> {
    hostile().iter().map(|t| Digest::sha256(t)).collect()
}

/// A layer holding one PAX record of `size` bytes (a `comment`, which the applier ignores),
/// then an ordinary file.
fn layer_with_huge_pax_record(size: usize) -> Vec<u8> {
    let prefix = format!("{size} comment=");
    let mut record = prefix.into_bytes();
    record.resize(size - 1, b'a');
    record.push(b'\n');
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/big").unwrap();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_size(record.len() as u64);
    h.set_cksum();
    b.append(&h, record.as_slice()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("file").unwrap();
    h.set_size(4);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &b"data"[..]).unwrap();
    b.into_inner().unwrap()
}

#[test]
fn both_unpack_paths_refuse_an_oversized_pax_header() {
    // 16 MiB of record in a gzip blob of a few KiB; containerd refuses more than 1 MiB.
    let layers = vec![layer_with_huge_pax_record(16 << 20)];
    let expect = |e: &ArchiveError, path: &str| {
        assert!(
            matches!(e, ArchiveError::HeaderTooLarge { size, .. } if *size == 16 << 20),
            "{path}: {e:?}"
        );
    };

    let server = overlay_fixture();
    store_image(&server, "huge", &layers);
    let e = server
        .unpacker
        .unpack_blocking(&request("huge"), &|_| {})
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    match &e {
        crate::UnpackError::Archive(a) => expect(a, "server-side unpack"),
        other => panic!("server-side unpack: {other:?}"),
    }
    assert!(server.snapshots.list(NS, SN).unwrap().is_empty());

    let client = overlay_fixture();
    let (descs, diff_ids) = store_image(&client, "huge", &layers);
    let e = unpack_through_diff_service(&client, &descs, &diff_ids).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    match &e {
        DiffError::Archive(a) => expect(a, "diff service"),
        other => panic!("diff service: {other:?}"),
    }
}

/// A pull unpacks while it downloads: an unrecorded image (its target given), each layer
/// extracted only after the gate says its blob is in, whatever order the blobs come in.
#[test]
fn a_gated_unpack_extracts_each_layer_only_once_it_is_in() {
    require_root();
    let f = overlay_fixture();
    let (descs, diff_ids) = store_image(&f, "gated", &ordinary());
    let target = f.db.get_image(NS, "gated").unwrap().target;
    let gate = Arc::new(crate::LayerGate::default());
    let log = std::sync::Mutex::new(Vec::<String>::new());
    let req = Request {
        image: "not-recorded".into(),
        target: Some(target.clone()),
        gate: Some(gate.clone()),
        ..request("not-recorded")
    };
    let done = std::thread::scope(|s| {
        s.spawn(|| {
            // The top layer first, the bottom last: extraction must wait for each.
            for d in descs.iter().rev() {
                std::thread::sleep(std::time::Duration::from_millis(50));
                log.lock().unwrap().push(format!("ready {}", d.digest()));
                gate.ready(d.digest().as_ref());
            }
            gate.close(None);
        });
        f.unpacker
            .unpack_blocking(&req, &|p| {
                if p.state == crate::LayerState::Extracted {
                    log.lock().unwrap().push(format!("extracted {}", p.layer));
                }
            })
            .unwrap()
    });
    assert_eq!(Some(&done.chain_id), berth_oci::chain_ids(&diff_ids).last());
    let log = log.into_inner().unwrap();
    for d in &descs {
        let at = |what: &str| {
            log.iter()
                .position(|l| l == &format!("{what} {}", d.digest()))
                .unwrap_or_else(|| panic!("no {what} {} in {log:?}", d.digest()))
        };
        assert!(at("ready") < at("extracted"), "{log:?}");
    }

    // A layer that never comes: the unpack fails saying why, and no chain is left half-made.
    let (_, diff_ids) = store_image(&f, "broken", &hostile());
    let target = f.db.get_image(NS, "broken").unwrap().target;
    let gate = Arc::new(crate::LayerGate::default());
    gate.close(Some("connection refused".into()));
    let req = Request {
        target: Some(target),
        gate: Some(gate),
        ..request("broken")
    };
    let e = f.unpacker.unpack_blocking(&req, &|_| {}).unwrap_err();
    assert!(e.to_string().contains("connection refused"), "{e}");
    let top = berth_oci::chain_ids(&diff_ids).last().unwrap().to_string();
    assert!(f.db.get_snapshot_record(NS, "overlayfs", &top).is_err());
}
