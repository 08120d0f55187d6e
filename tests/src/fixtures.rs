//! Offline test images: layer tars, OCI and Docker image archives built in memory from Debian's
//! `busybox-static` binary, byte-for-byte deterministic, in the formats `ctr images import` accepts.
//!
//! - [`LayerBuilder`] makes one layer (dirs, files, symlinks, hardlinks, whiteouts, opaque dirs).
//! - [`busybox_image`] / [`busybox_multiplatform_image`] make whole images ([`FixtureImage`]).
//! - [`write_oci_archive`], [`write_docker_archive`] write them as files for `ctr images import`.
//! - [`write_large_blob`] makes a big deterministic blob for resumable-ingest tests.
//! - [`merge_layers`] is the reference model of an unpacked rootfs (whiteouts applied), to compare
//!   a snapshot against.
//!
//! Nothing here reaches the network. Builders that need busybox panic with the package to install.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;

use berth_oci::oci_spec::image::{ConfigBuilder, HistoryBuilder};
use berth_oci::{
    go_json, media, platform, Descriptor, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, RootFs,
};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

pub const MEDIA_TYPE_OCI_INDEX: &str = media::OCI_INDEX;
pub const MEDIA_TYPE_OCI_MANIFEST: &str = media::OCI_MANIFEST;
pub const MEDIA_TYPE_OCI_CONFIG: &str = media::OCI_CONFIG;
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = media::OCI_LAYER_GZIP;
/// Annotation containerd's importer (and `ctr images export`) use for the full image name.
pub const ANNOTATION_IMAGE_NAME: &str = berth_oci::ANNOTATION_IMAGE_NAME;
/// OCI annotation for the reference's tag part.
pub const ANNOTATION_REF_NAME: &str = berth_oci::ANNOTATION_REF_NAME;

/// Where the fixtures take busybox from (Debian's `busybox-static`).
pub const BUSYBOX_PATH: &str = "/bin/busybox";
/// mtime of every tar entry (2024-01-01T00:00:00Z), so rebuilding gives identical bytes.
pub const FIXED_MTIME: u64 = 1_704_067_200;
const FIXED_CREATED: &str = "2024-01-01T00:00:00Z";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// busybox applets linked into `/bin` by the busybox image's first layer.
pub const BUSYBOX_APPLETS: &[&str] = &[
    "cat",
    "echo",
    "env",
    "false",
    "hostname",
    "id",
    "kill",
    "ls",
    "mkdir",
    "ps",
    "readlink",
    "rm",
    "sh",
    "sha256sum",
    "sleep",
    "stat",
    "test",
    "touch",
    "true",
    "uname",
    "wc",
];

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    berth_oci::Digest::sha256(bytes).into_string()
}

/// An OCI descriptor of `media_type`; `digest` must be a valid digest (fixtures make them).
pub fn descriptor(media_type: &str, digest: &str, size: u64) -> Descriptor {
    let digest = berth_oci::Digest::parse(digest)
        .unwrap_or_else(|e| panic!("fixture digest {digest:?}: {e}"));
    Descriptor::new(MediaType::from(media_type), size, digest)
}

/// The hex part of a `sha256:<hex>` digest.
pub fn digest_hex(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("not a sha256 digest: {digest}"))
}

// ---------------------------------------------------------------------------------------------
// Layers

/// What a tar entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File(Vec<u8>),
    /// Target as written in the link (may be relative).
    Symlink(String),
    /// Target path inside the layer, relative to its root (e.g. `etc/hostname`).
    Hardlink(String),
}

/// One tar entry, as built or as read back. `path` is relative, without a trailing `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits including setuid/setgid/sticky (e.g. `0o1777`).
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
}

/// One image layer: the uncompressed tar, its gzip blob and both digests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    /// Uncompressed tar (what `diff_id` names, and what a Docker archive's `layer.tar` holds).
    pub tar: Vec<u8>,
    /// gzip of `tar`: the blob a manifest points at.
    pub gz: Vec<u8>,
    /// `sha256:` of `tar`, listed in the config's `rootfs.diff_ids`.
    pub diff_id: String,
    /// `sha256:` of `gz`, listed in the manifest.
    pub digest: String,
}

impl Layer {
    /// Size of the compressed blob.
    pub fn size(&self) -> u64 {
        self.gz.len() as u64
    }

    /// The manifest descriptor of this layer.
    pub fn descriptor(&self) -> Descriptor {
        descriptor(MEDIA_TYPE_OCI_LAYER_GZIP, &self.digest, self.size())
    }

    /// The entries of the uncompressed tar, in archive order.
    pub fn entries(&self) -> Vec<TarEntry> {
        read_tar_entries(&self.tar)
    }
}

/// Builds a layer tar deterministically: fixed mtimes, entries sorted by path with hardlinks after
/// everything else (a hardlink must follow its target), missing parent directories added as
/// `0755 root:root`. Paths may be given with or without a leading `/`.
#[derive(Clone, Debug, Default)]
pub struct LayerBuilder {
    entries: BTreeMap<String, TarEntry>,
}

impl LayerBuilder {
    pub fn new() -> LayerBuilder {
        LayerBuilder::default()
    }

    /// Adds any entry; panics if the path is already in this layer.
    pub fn entry(mut self, entry: TarEntry) -> LayerBuilder {
        let path = clean_path(&entry.path);
        let prev = self.entries.insert(
            path.clone(),
            TarEntry {
                path: path.clone(),
                ..entry
            },
        );
        assert!(prev.is_none(), "layer entry {path:?} added twice");
        self
    }

    pub fn dir(self, path: &str, mode: u32) -> LayerBuilder {
        self.dir_owned(path, mode, 0, 0)
    }

    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> LayerBuilder {
        self.entry(TarEntry {
            path: path.into(),
            kind: EntryKind::Dir,
            mode,
            uid,
            gid,
        })
    }

    pub fn file(self, path: &str, mode: u32, data: impl Into<Vec<u8>>) -> LayerBuilder {
        self.file_owned(path, mode, 0, 0, data)
    }

    pub fn file_owned(
        self,
        path: &str,
        mode: u32,
        uid: u64,
        gid: u64,
        data: impl Into<Vec<u8>>,
    ) -> LayerBuilder {
        self.entry(TarEntry {
            path: path.into(),
            kind: EntryKind::File(data.into()),
            mode,
            uid,
            gid,
        })
    }

    pub fn symlink(self, path: &str, target: &str) -> LayerBuilder {
        self.entry(TarEntry {
            path: path.into(),
            kind: EntryKind::Symlink(target.into()),
            mode: 0o777,
            uid: 0,
            gid: 0,
        })
    }

    /// `path` becomes a hardlink to `target` (a path in this layer or a lower one).
    pub fn hardlink(self, path: &str, target: &str) -> LayerBuilder {
        self.entry(TarEntry {
            path: path.into(),
            kind: EntryKind::Hardlink(clean_path(target)),
            mode: 0o644,
            uid: 0,
            gid: 0,
        })
    }

    /// Deletes `path` (and what is below it) from lower layers: an empty `<dir>/.wh.<name>` file.
    pub fn whiteout(self, path: &str) -> LayerBuilder {
        let path = clean_path(path);
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path.as_str()),
        };
        let marker = format!("{dir}.wh.{name}");
        self.file(&marker, 0o644, Vec::new())
    }

    /// Hides everything lower layers put under directory `dir`: `<dir>/.wh..wh..opq`. Entries this
    /// layer adds under `dir` stay visible.
    pub fn opaque(self, dir: &str) -> LayerBuilder {
        let marker = format!("{}/.wh..wh..opq", clean_path(dir));
        self.file(&marker, 0o644, Vec::new())
    }

    /// The uncompressed tar bytes.
    pub fn tar_bytes(&self) -> Vec<u8> {
        let mut entries = self.entries.clone();
        // Parents first: docker layers carry them, and extractors then need not invent modes.
        for path in self.entries.keys() {
            let mut parent = path.as_str();
            while let Some((p, _)) = parent.rsplit_once('/') {
                parent = p;
                match entries.get(parent) {
                    Some(e) => assert!(
                        e.kind == EntryKind::Dir,
                        "{parent:?} is not a directory but {path:?} is under it"
                    ),
                    None => {
                        entries.insert(
                            parent.to_owned(),
                            TarEntry {
                                path: parent.to_owned(),
                                kind: EntryKind::Dir,
                                mode: 0o755,
                                uid: 0,
                                gid: 0,
                            },
                        );
                    }
                }
            }
        }
        // A hardlink to a file of this layer gets the file's metadata, as tar does.
        let snapshot = entries.clone();
        for e in entries.values_mut() {
            if let EntryKind::Hardlink(target) = &e.kind {
                if let Some(t) = snapshot.get(target) {
                    (e.mode, e.uid, e.gid) = (t.mode, t.uid, t.gid);
                }
            }
        }
        let (links, others): (Vec<&TarEntry>, Vec<&TarEntry>) = entries
            .values()
            .partition(|e| matches!(e.kind, EntryKind::Hardlink(_)));
        let mut b = tar::Builder::new(Vec::new());
        for e in others.into_iter().chain(links) {
            append_entry(&mut b, e);
        }
        b.into_inner().expect("finish tar")
    }

    /// Builds the layer: tar, gzip and digests.
    pub fn build(&self) -> Layer {
        layer_from_tar(self.tar_bytes())
    }
}

/// Wraps an uncompressed tar as a [`Layer`] (gzip with a fixed header, digests).
pub fn layer_from_tar(tar: Vec<u8>) -> Layer {
    let gz = gzip(&tar);
    Layer {
        diff_id: sha256_digest(&tar),
        digest: sha256_digest(&gz),
        tar,
        gz,
    }
}

/// gzip with mtime 0 and OS "unknown" so the bytes depend only on the input.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("gzip");
    enc.finish().expect("gzip")
}

pub fn gunzip(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

fn clean_path(p: &str) -> String {
    let p = p.trim_start_matches('/').trim_end_matches('/');
    assert!(!p.is_empty(), "empty layer path");
    assert!(
        !p.split('/').any(|c| c.is_empty() || c == "." || c == ".."),
        "layer path {p:?} must be normal"
    );
    p.to_owned()
}

fn append_entry(b: &mut tar::Builder<Vec<u8>>, e: &TarEntry) {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(FIXED_MTIME);
    h.set_mode(e.mode);
    h.set_uid(e.uid);
    h.set_gid(e.gid);
    h.set_size(0);
    let res = match &e.kind {
        EntryKind::Dir => {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
        }
        EntryKind::File(data) => {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, &e.path, &data[..])
        }
        EntryKind::Symlink(target) => {
            h.set_entry_type(tar::EntryType::Symlink);
            b.append_link(&mut h, &e.path, target)
        }
        EntryKind::Hardlink(target) => {
            h.set_entry_type(tar::EntryType::Link);
            b.append_link(&mut h, &e.path, target)
        }
    };
    res.unwrap_or_else(|err| panic!("tar entry {}: {err}", e.path));
}

/// Reads the entries of an uncompressed tar (regular files, dirs, symlinks, hardlinks).
pub fn read_tar_entries(tar: &[u8]) -> Vec<TarEntry> {
    let mut out = Vec::new();
    let mut ar = tar::Archive::new(tar);
    for entry in ar.entries().expect("read tar") {
        let mut entry = entry.expect("tar entry");
        let h = entry.header().clone();
        let path = entry
            .path()
            .expect("tar path")
            .to_string_lossy()
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_owned();
        let link = || {
            entry
                .link_name()
                .expect("link name")
                .expect("link entry without target")
                .to_string_lossy()
                .into_owned()
        };
        let kind = match h.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink(link()),
            tar::EntryType::Link => EntryKind::Hardlink(link().trim_start_matches('/').to_owned()),
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).expect("tar data");
                EntryKind::File(data)
            }
            other => panic!("unexpected tar entry type {other:?} at {path}"),
        };
        out.push(TarEntry {
            path,
            kind,
            mode: h.mode().expect("mode"),
            uid: h.uid().expect("uid"),
            gid: h.gid().expect("gid"),
        });
    }
    out
}

/// The filesystem that unpacking `layers` in order must give, keyed by relative path: whiteouts
/// and opaque markers of a layer hide lower entries (never the layer's own), and are not in the
/// result. The root directory itself is not listed.
pub fn merge_layers(layers: &[Layer]) -> BTreeMap<String, TarEntry> {
    let mut fs: BTreeMap<String, TarEntry> = BTreeMap::new();
    fn remove_tree(fs: &mut BTreeMap<String, TarEntry>, path: &str, keep_self: bool) {
        let prefix = format!("{path}/");
        fs.retain(|p, _| !(p.starts_with(&prefix) || (!keep_self && p == path)));
    }
    for layer in layers {
        let entries = layer.entries();
        for e in &entries {
            let (dir, name) = match e.path.rsplit_once('/') {
                Some((d, n)) => (Some(d), n),
                None => (None, e.path.as_str()),
            };
            if name == ".wh..wh..opq" {
                match dir {
                    Some(d) => remove_tree(&mut fs, d, true),
                    None => fs.clear(),
                }
            } else if let Some(hidden) = name.strip_prefix(".wh.") {
                let target = match dir {
                    Some(d) => format!("{d}/{hidden}"),
                    None => hidden.to_owned(),
                };
                remove_tree(&mut fs, &target, false);
            }
        }
        for e in entries {
            let name = e.path.rsplit('/').next().unwrap_or_default();
            if name.starts_with(".wh.") {
                continue;
            }
            let keep_children = e.kind == EntryKind::Dir
                && fs.get(&e.path).is_some_and(|o| o.kind == EntryKind::Dir);
            if !keep_children {
                remove_tree(&mut fs, &e.path, false);
            }
            fs.insert(e.path.clone(), e);
        }
    }
    fs
}

// ---------------------------------------------------------------------------------------------
// OCI JSON

// The documents are berth-oci's (oci-spec's types), written as Go writes them (`go_json`:
// annotations sorted), so every build of a fixture has the same bytes and digests.

/// A blob with its media type and digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    pub media_type: String,
    pub digest: String,
    pub bytes: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.into(),
            digest: sha256_digest(&bytes),
            bytes,
        }
    }

    fn json<T: Serialize>(media_type: &str, value: &T) -> Blob {
        Blob::new(media_type, go_json(value).expect("json"))
    }

    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    pub fn descriptor(&self) -> Descriptor {
        descriptor(&self.media_type, &self.digest, self.size())
    }
}

/// A borrowed view of any blob of an image, for iterating over all of them.
#[derive(Clone, Copy, Debug)]
pub struct BlobRef<'a> {
    pub media_type: &'a str,
    pub digest: &'a str,
    pub bytes: &'a [u8],
}

impl BlobRef<'_> {
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }
}

// ---------------------------------------------------------------------------------------------
// Images

/// One platform's image: manifest, config and layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformImage {
    pub os: String,
    pub architecture: String,
    pub manifest: Blob,
    pub config: Blob,
    pub layers: Vec<Layer>,
}

impl PlatformImage {
    /// Makes the OCI config (env PATH, the given Cmd, rootfs diff_ids in order, one history line
    /// per layer) and the OCI manifest for `layers`.
    pub fn new(os: &str, architecture: &str, layers: Vec<Layer>, cmd: &[&str]) -> PlatformImage {
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(layers.iter().map(|l| l.diff_id.clone()).collect());
        let run = ConfigBuilder::default()
            .env(vec![PATH_ENV.to_owned()])
            .cmd(cmd.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .working_dir("/")
            .build()
            .expect("run config");
        let history = (1..=layers.len())
            .map(|i| {
                HistoryBuilder::default()
                    .created(FIXED_CREATED)
                    .created_by(format!("berth fixture layer {i}"))
                    .build()
                    .expect("history")
            })
            .collect::<Vec<_>>();
        let p = platform::new(os, architecture, "");
        let config = ImageConfigurationBuilder::default()
            .created(FIXED_CREATED)
            .architecture(p.architecture().clone())
            .os(p.os().clone())
            .config(run)
            .rootfs(rootfs)
            .history(history)
            .build()
            .expect("image config");
        let config = Blob::json(MEDIA_TYPE_OCI_CONFIG, &config);
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config.descriptor())
            .layers(layers.iter().map(Layer::descriptor).collect::<Vec<_>>())
            .build()
            .expect("manifest");
        let manifest = Blob::json(MEDIA_TYPE_OCI_MANIFEST, &manifest);
        PlatformImage {
            os: os.into(),
            architecture: architecture.into(),
            manifest,
            config,
            layers,
        }
    }

    /// The manifest's descriptor with its platform, as an image index lists it.
    pub fn platform_descriptor(&self) -> Descriptor {
        let mut d = self.manifest.descriptor();
        d.set_platform(Some(platform::new(&self.os, &self.architecture, "")));
        d
    }
}

/// A named test image. The `manifest_*`, `config_*`, `layers` and `platform` fields describe the
/// primary platform (the host's, which runs busybox); a multi-platform image also has `index` and
/// the other platforms in `other_platforms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixtureImage {
    /// Full reference, e.g. `docker.io/library/busybox:berth`.
    pub name: String,
    /// The image index, when the image is multi-platform; then it is the image's target.
    pub index: Option<Blob>,
    pub index_digest: Option<String>,
    pub manifest: Blob,
    pub manifest_digest: String,
    pub manifest_size: u64,
    pub config: Blob,
    pub config_digest: String,
    pub config_size: u64,
    pub layers: Vec<Layer>,
    /// `(os, architecture)`.
    pub platform: (String, String),
    pub other_platforms: Vec<PlatformImage>,
}

impl FixtureImage {
    /// An image of one platform (its target is the manifest) or, with `others`, of several (its
    /// target is an image index listing `primary` first).
    pub fn new(name: &str, primary: PlatformImage, others: Vec<PlatformImage>) -> FixtureImage {
        let index = (!others.is_empty()).then(|| {
            Blob::json(
                MEDIA_TYPE_OCI_INDEX,
                &oci_index(
                    std::iter::once(&primary)
                        .chain(&others)
                        .map(PlatformImage::platform_descriptor)
                        .collect(),
                ),
            )
        });
        FixtureImage {
            name: name.into(),
            index_digest: index.as_ref().map(|b| b.digest.clone()),
            index,
            manifest_digest: primary.manifest.digest.clone(),
            manifest_size: primary.manifest.size(),
            manifest: primary.manifest,
            config_digest: primary.config.digest.clone(),
            config_size: primary.config.size(),
            config: primary.config,
            layers: primary.layers,
            platform: (primary.os, primary.architecture),
            other_platforms: others,
        }
    }

    /// What the image record points at: the index if there is one, else the manifest.
    pub fn target(&self) -> Descriptor {
        match &self.index {
            Some(i) => i.descriptor(),
            None => self.manifest.descriptor(),
        }
    }

    /// The tag part of the name (`latest` when it has none), as `org.opencontainers.image.ref.name`.
    pub fn tag(&self) -> &str {
        let last = self.name.rsplit('/').next().unwrap_or(&self.name);
        last.split_once(':').map_or("latest", |(_, t)| t)
    }

    /// The name as `docker save` writes it in `RepoTags` (`busybox:berth`).
    pub fn familiar_name(&self) -> String {
        let n = self.name.as_str();
        let n = n
            .strip_prefix("docker.io/library/")
            .or_else(|| n.strip_prefix("docker.io/"))
            .unwrap_or(n);
        if self
            .name
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .contains(':')
        {
            n.to_owned()
        } else {
            format!("{n}:latest")
        }
    }

    /// Every blob of the image once, index first, then each platform's manifest, config, layers.
    pub fn blobs(&self) -> Vec<BlobRef<'_>> {
        let mut out = Vec::new();
        let mut seen = BTreeSet::new();
        fn blob(b: &Blob) -> BlobRef<'_> {
            BlobRef {
                media_type: &b.media_type,
                digest: &b.digest,
                bytes: &b.bytes,
            }
        }
        fn layer(l: &Layer) -> BlobRef<'_> {
            BlobRef {
                media_type: MEDIA_TYPE_OCI_LAYER_GZIP,
                digest: &l.digest,
                bytes: &l.gz,
            }
        }
        if let Some(i) = &self.index {
            out.push(blob(i));
        }
        out.push(blob(&self.manifest));
        out.push(blob(&self.config));
        out.extend(self.layers.iter().map(layer));
        for p in &self.other_platforms {
            out.push(blob(&p.manifest));
            out.push(blob(&p.config));
            out.extend(p.layers.iter().map(layer));
        }
        out.retain(|b| seen.insert(b.digest.to_owned()));
        out
    }

    /// The primary platform's filesystem after unpacking (see [`merge_layers`]).
    pub fn rootfs(&self) -> BTreeMap<String, TarEntry> {
        merge_layers(&self.layers)
    }
}

/// An OCI image index of `manifests`.
fn oci_index(manifests: Vec<Descriptor>) -> berth_oci::ImageIndex {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(manifests)
        .build()
        .expect("image index")
}

/// The GOARCH name of this machine, which is what the busybox binary runs on.
pub fn host_arch() -> &'static str {
    platform::host_arch()
}

/// The bytes of `/bin/busybox`; panics unless it is there and statically linked (a dynamic
/// busybox from Debian's `busybox` package would not run in a rootfs without libc).
pub fn busybox_binary() -> Vec<u8> {
    let bytes = std::fs::read(BUSYBOX_PATH).unwrap_or_else(|e| {
        panic!("{BUSYBOX_PATH} is needed for the test images ({e}): apt-get install busybox-static (scripts/test.sh does this)")
    });
    assert!(
        !elf_has_interpreter(&bytes),
        "{BUSYBOX_PATH} is dynamically linked: apt-get install busybox-static (it replaces the `busybox` package)"
    );
    bytes
}

/// Whether a 64-bit little-endian ELF has a PT_INTERP program header.
fn elf_has_interpreter(elf: &[u8]) -> bool {
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let o = phoff + i * phentsize;
        elf.get(o..o + 4) == Some(&3u32.to_le_bytes()[..])
    })
}

/// Layer 1 of the busybox image: `/bin/busybox`, applet symlinks, the usual top directories.
pub fn busybox_base_layer() -> Layer {
    let mut b = LayerBuilder::new()
        .dir("bin", 0o755)
        .file("bin/busybox", 0o755, busybox_binary())
        .dir("dev", 0o755)
        .dir("etc", 0o755)
        .dir("proc", 0o555)
        .dir("root", 0o700)
        .dir("sys", 0o555)
        .dir("tmp", 0o1777)
        .dir("usr", 0o755)
        .dir("usr/bin", 0o755)
        .dir("var", 0o755);
    for applet in BUSYBOX_APPLETS {
        b = b.symlink(&format!("bin/{applet}"), "busybox");
    }
    b.build()
}

/// The busybox image: three layers on the host's platform, Cmd `/bin/sh`.
///
/// - layer 1: [`busybox_base_layer`];
/// - layer 2: `/etc/hostname`, `/etc/passwd`, `/etc/group`, `/etc/motd`, `/home/berth` and
///   `/home/berth/owned.txt` (uid/gid 1000, 0640), hardlink `/etc/hostname.link` → `/etc/hostname`,
///   `/opt/app/{old.txt,sub/old2.txt}`;
/// - layer 3: whiteout of `/etc/motd`, `/opt/app` made opaque with a new `/opt/app/new.txt`, and
///   `/etc/layer3` (so the final rootfs shows which layer won).
pub fn busybox_image(name: &str) -> FixtureImage {
    FixtureImage::new(name, busybox_platform_image(), Vec::new())
}

fn busybox_platform_image() -> PlatformImage {
    let layer2 = LayerBuilder::new()
        .file("etc/hostname", 0o644, "berth-fixture\n")
        .file(
            "etc/passwd",
            0o644,
            "root:x:0:0:root:/root:/bin/sh\nberth:x:1000:1000:berth:/home/berth:/bin/sh\n",
        )
        .file("etc/group", 0o644, "root:x:0:\nberth:x:1000:\n")
        .file("etc/motd", 0o644, "deleted by layer 3\n")
        .hardlink("etc/hostname.link", "etc/hostname")
        .dir_owned("home/berth", 0o755, 1000, 1000)
        .file_owned(
            "home/berth/owned.txt",
            0o640,
            1000,
            1000,
            "owned by 1000:1000\n",
        )
        .file(
            "opt/app/old.txt",
            0o644,
            "hidden by the opaque dir in layer 3\n",
        )
        .file("opt/app/sub/old2.txt", 0o644, "hidden too\n")
        .build();
    let layer3 = LayerBuilder::new()
        .whiteout("etc/motd")
        .file("etc/layer3", 0o644, "layer 3\n")
        .dir("opt/app", 0o755)
        .opaque("opt/app")
        .file("opt/app/new.txt", 0o644, "added by layer 3\n")
        .build();
    PlatformImage::new(
        "linux",
        host_arch(),
        vec![busybox_base_layer(), layer2, layer3],
        &["/bin/sh"],
    )
}

/// The busybox image as a multi-platform image: its target is an image index listing the host's
/// platform (the real busybox image) and a second platform (arm64, or amd64 on an arm64 host) with
/// one tiny layer that does not need to run, for testing `--all-platforms`.
pub fn busybox_multiplatform_image(name: &str) -> FixtureImage {
    let other_arch = if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let tiny = LayerBuilder::new()
        .file(
            "etc/fixture-platform",
            0o644,
            format!("linux/{other_arch}\n"),
        )
        .build();
    let other = PlatformImage::new("linux", other_arch, vec![tiny], &["/bin/sh"]);
    FixtureImage::new(name, busybox_platform_image(), vec![other])
}

// ---------------------------------------------------------------------------------------------
// Archives

/// Which name annotations [`write_oci_archive_with`] puts on each `index.json` entry.
#[derive(Clone, Copy, Debug)]
pub struct OciArchiveOptions {
    /// `io.containerd.image.name` = the full name (what containerd's importer names images by).
    pub image_name_annotation: bool,
    /// `org.opencontainers.image.ref.name` = the tag part (used with `ctr import --base-name`).
    pub ref_name_annotation: bool,
}

impl Default for OciArchiveOptions {
    /// Both, as `ctr images export` writes them.
    fn default() -> Self {
        OciArchiveOptions {
            image_name_annotation: true,
            ref_name_annotation: true,
        }
    }
}

/// The OCI image layout tar of `images`: `oci-layout`, `index.json` (one entry per image, pointing
/// at its target) and every blob once under `blobs/sha256/`.
pub fn oci_archive_bytes(images: &[FixtureImage], opts: OciArchiveOptions) -> Vec<u8> {
    let manifests: Vec<Descriptor> = images
        .iter()
        .map(|img| {
            let mut d = img.target();
            let mut annotations = std::collections::HashMap::new();
            if opts.image_name_annotation {
                annotations.insert(ANNOTATION_IMAGE_NAME.to_owned(), img.name.clone());
            }
            if opts.ref_name_annotation {
                annotations.insert(ANNOTATION_REF_NAME.to_owned(), img.tag().to_owned());
            }
            d.set_annotations((!annotations.is_empty()).then_some(annotations));
            d
        })
        .collect();
    let index = oci_index(manifests);
    let mut b = LayerBuilder::new()
        .file("oci-layout", 0o644, r#"{"imageLayoutVersion":"1.0.0"}"#)
        .file("index.json", 0o644, go_json(&index).expect("json"));
    let mut seen = BTreeSet::new();
    for img in images {
        for blob in img.blobs() {
            if seen.insert(blob.digest.to_owned()) {
                let path = format!("blobs/sha256/{}", digest_hex(blob.digest));
                b = b.file(&path, 0o644, blob.bytes);
            }
        }
    }
    b.tar_bytes()
}

/// Writes [`oci_archive_bytes`] with both name annotations to `path`.
/// [`busybox_image`] named `name`, written as `<dir>/oci.tar`: what most tests import.
pub fn busybox_oci_archive(dir: &Path, name: &str) -> (FixtureImage, std::path::PathBuf) {
    let img = busybox_image(name);
    let path = dir.join("oci.tar");
    write_oci_archive(&path, std::slice::from_ref(&img));
    (img, path)
}

pub fn write_oci_archive(path: &Path, images: &[FixtureImage]) {
    write_oci_archive_with(path, images, OciArchiveOptions::default());
}

pub fn write_oci_archive_with(path: &Path, images: &[FixtureImage], opts: OciArchiveOptions) {
    write_file(path, &oci_archive_bytes(images, opts));
}

/// The `docker save` tar of the primary platform of `image`: `manifest.json`, `<config hex>.json`,
/// each layer uncompressed as `<diff_id hex>/layer.tar` (with a `VERSION` file beside it), and the
/// legacy `repositories` file.
pub fn docker_archive_bytes(image: &FixtureImage) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct DockerManifest {
        config: String,
        repo_tags: Vec<String>,
        layers: Vec<String>,
    }
    let config_file = format!("{}.json", digest_hex(&image.config_digest));
    let layer_dirs: Vec<String> = image
        .layers
        .iter()
        .map(|l| digest_hex(&l.diff_id).to_owned())
        .collect();
    let familiar = image.familiar_name();
    let manifest = vec![DockerManifest {
        config: config_file.clone(),
        repo_tags: vec![familiar.clone()],
        layers: layer_dirs
            .iter()
            .map(|d| format!("{d}/layer.tar"))
            .collect(),
    }];
    let (repo, tag) = familiar.rsplit_once(':').expect("familiar name has a tag");
    let top = layer_dirs.last().expect("image has layers");
    let repositories = BTreeMap::from([(repo, BTreeMap::from([(tag, top)]))]);

    let mut b = LayerBuilder::new()
        .file(
            "manifest.json",
            0o644,
            serde_json::to_vec(&manifest).expect("json"),
        )
        .file(
            "repositories",
            0o644,
            serde_json::to_vec(&repositories).expect("json"),
        )
        .file(&config_file, 0o644, image.config.bytes.clone());
    let mut seen = BTreeSet::new();
    for (dir, layer) in layer_dirs.iter().zip(&image.layers) {
        if seen.insert(dir) {
            b = b.file(&format!("{dir}/VERSION"), 0o644, "1.0").file(
                &format!("{dir}/layer.tar"),
                0o644,
                layer.tar.clone(),
            );
        }
    }
    b.tar_bytes()
}

/// Writes [`docker_archive_bytes`] to `path`.
pub fn write_docker_archive(path: &Path, image: &FixtureImage) {
    write_file(path, &docker_archive_bytes(image));
}

fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// Benchmark images

/// The benchmarks' image `name`: `layers` gzip layers of `files` pseudo-random (incompressible)
/// files of `kib` KiB each under `data/l<n>/`, so compression flatters no one, and `/bin/true`
/// as its command (it is never run).
pub fn many_file_image(name: &str, layers: usize, files: usize, kib: usize) -> FixtureImage {
    let mut ls = Vec::new();
    for l in 0..layers {
        let mut b = LayerBuilder::new().dir(&format!("data/l{l}"), 0o755);
        for f in 0..files {
            let data = large_blob_bytes(kib * 1024, (l * files + f) as u64 + 1);
            b = b.file(&format!("data/l{l}/f{f:05}"), 0o644, data);
        }
        ls.push(b.build());
    }
    let primary = PlatformImage::new("linux", host_arch(), ls, &["/bin/true"]);
    FixtureImage::new(name, primary, Vec::new())
}

// ---------------------------------------------------------------------------------------------
// Large blobs

/// `size` pseudo-random (incompressible) bytes, the same for the same `seed`.
pub fn large_blob_bytes(size: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size);
    let mut rng = XorShift::new(seed);
    while out.len() < size {
        let word = rng.next().to_le_bytes();
        let n = word.len().min(size - out.len());
        out.extend_from_slice(&word[..n]);
    }
    out
}

/// Writes the same bytes as [`large_blob_bytes`] to `path` without holding them in memory, and
/// returns their `sha256:` digest.
pub fn write_large_blob(path: &Path, size: u64, seed: u64) -> String {
    let file =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let mut w = std::io::BufWriter::new(file);
    let mut hasher = Sha256::new();
    let mut rng = XorShift::new(seed);
    let mut chunk = Vec::with_capacity(1 << 20);
    let mut left = size;
    while left > 0 {
        chunk.clear();
        while chunk.len() < (1 << 20) && (chunk.len() as u64) < left {
            chunk.extend_from_slice(&rng.next().to_le_bytes());
        }
        chunk.truncate(chunk.len().min(left as usize));
        hasher.update(&chunk);
        w.write_all(&chunk).expect("write blob");
        left -= chunk.len() as u64;
    }
    w.flush().expect("flush blob");
    format!("sha256:{}", hex::encode(hasher.finalize()))
}

/// xorshift64*: fast, deterministic, good enough to defeat compression and dedup.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ok, require_root, Containerd};
    use berth_oci::{ImageIndex, ImageManifest};
    use serde_json::Value;

    fn json(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).expect("valid json")
    }

    /// Regular files of an archive by path.
    fn files(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
        read_tar_entries(tar)
            .into_iter()
            .filter_map(|e| match e.kind {
                EntryKind::File(d) => Some((e.path, d)),
                _ => None,
            })
            .collect()
    }

    fn assert_layer_digests(l: &Layer) {
        assert_eq!(gunzip(&l.gz), l.tar);
        assert_eq!(sha256_digest(&l.tar), l.diff_id);
        assert_eq!(sha256_digest(&l.gz), l.digest);
    }

    /// The manifest and config of one platform agree with its blobs.
    fn assert_platform(manifest: &Blob, config: &Blob, layers: &[Layer], os: &str, arch: &str) {
        for b in [manifest, config] {
            assert_eq!(sha256_digest(&b.bytes), b.digest);
        }
        let m: ImageManifest = serde_json::from_slice(&manifest.bytes).unwrap();
        assert_eq!(m.schema_version(), 2);
        assert_eq!(m.media_type(), &Some(MediaType::ImageManifest));
        assert_eq!(m.config(), &config.descriptor());
        assert_eq!(config.media_type, MEDIA_TYPE_OCI_CONFIG);
        let descs = m.layers();
        assert_eq!(descs.len(), layers.len());
        for (d, l) in descs.iter().zip(layers) {
            assert_layer_digests(l);
            assert_eq!(d.media_type(), &MediaType::ImageLayerGzip);
            assert_eq!(
                (d.digest().as_ref(), d.size()),
                (l.digest.as_str(), l.size())
            );
        }
        let c = json(&config.bytes);
        assert_eq!(c["os"], os);
        assert_eq!(c["architecture"], arch);
        assert_eq!(c["rootfs"]["type"], "layers");
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        assert_eq!(c["rootfs"]["diff_ids"], serde_json::json!(diff_ids));
        assert_eq!(c["config"]["Cmd"], serde_json::json!(["/bin/sh"]));
        assert!(c["config"]["Env"][0]
            .as_str()
            .unwrap()
            .starts_with("PATH=/"));
        assert_eq!(c["history"].as_array().unwrap().len(), layers.len());
    }

    #[test]
    fn layer_builder_writes_every_entry_kind_sorted() {
        let layer = LayerBuilder::new()
            .dir("/tmp", 0o1777)
            .file_owned("a/f", 0o640, 1000, 1001, "data")
            .hardlink("a/h", "a/f")
            .symlink("a/s", "../tmp")
            .whiteout("a/gone")
            .opaque("a")
            .build();
        assert_layer_digests(&layer);
        let entries = layer.entries();
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a",
                "a/.wh..wh..opq",
                "a/.wh.gone",
                "a/f",
                "a/s",
                "tmp",
                "a/h"
            ]
        );
        let by_path: BTreeMap<&str, &TarEntry> =
            entries.iter().map(|e| (e.path.as_str(), e)).collect();
        assert_eq!(
            (by_path["a"].kind.clone(), by_path["a"].mode),
            (EntryKind::Dir, 0o755)
        );
        assert_eq!(by_path["tmp"].mode, 0o1777);
        let f = by_path["a/f"];
        assert_eq!((f.mode, f.uid, f.gid), (0o640, 1000, 1001));
        assert_eq!(f.kind, EntryKind::File(b"data".to_vec()));
        let h = by_path["a/h"];
        assert_eq!(h.kind, EntryKind::Hardlink("a/f".into()));
        assert_eq!((h.mode, h.uid, h.gid), (0o640, 1000, 1001));
        assert_eq!(by_path["a/s"].kind, EntryKind::Symlink("../tmp".into()));
        assert_eq!(by_path["a/.wh.gone"].kind, EntryKind::File(Vec::new()));
        // Every header carries the fixed mtime.
        let mut ar = tar::Archive::new(&layer.tar[..]);
        for e in ar.entries().unwrap() {
            assert_eq!(e.unwrap().header().mtime().unwrap(), FIXED_MTIME);
        }
    }

    #[test]
    fn everything_is_deterministic() {
        let a = busybox_image("docker.io/library/busybox:berth");
        let b = busybox_image("docker.io/library/busybox:berth");
        assert_eq!(a, b);
        let ma = busybox_multiplatform_image("docker.io/library/busybox:multi");
        let mb = busybox_multiplatform_image("docker.io/library/busybox:multi");
        assert_eq!(ma, mb);
        let opts = OciArchiveOptions::default();
        assert_eq!(
            oci_archive_bytes(&[a.clone(), ma.clone()], opts),
            oci_archive_bytes(&[b.clone(), mb], opts)
        );
        assert_eq!(docker_archive_bytes(&a), docker_archive_bytes(&b));
        assert_eq!(large_blob_bytes(100_003, 5), large_blob_bytes(100_003, 5));
        assert_ne!(large_blob_bytes(64, 5), large_blob_bytes(64, 6));
    }

    #[test]
    fn busybox_image_digests_match_blobs() {
        let img = busybox_image("docker.io/library/busybox:berth");
        assert_eq!(img.index, None);
        assert_eq!(img.layers.len(), 3);
        assert_eq!(img.platform, ("linux".to_owned(), host_arch().to_owned()));
        assert_eq!(img.manifest_digest, sha256_digest(&img.manifest.bytes));
        assert_eq!(img.manifest_size, img.manifest.size());
        assert_eq!(img.config_digest, sha256_digest(&img.config.bytes));
        assert_eq!(img.config_size, img.config.size());
        assert_eq!(img.target(), img.manifest.descriptor());
        assert_platform(
            &img.manifest,
            &img.config,
            &img.layers,
            "linux",
            host_arch(),
        );
        let blobs = img.blobs();
        assert_eq!(blobs.len(), 5);
        for b in blobs {
            assert_eq!(sha256_digest(b.bytes), b.digest);
        }
        assert_eq!(img.tag(), "berth");
        assert_eq!(img.familiar_name(), "busybox:berth");
    }

    #[test]
    fn busybox_rootfs_applies_whiteouts_and_opaque_dirs() {
        let img = busybox_image("docker.io/library/busybox:berth");
        let l3: Vec<String> = img.layers[2]
            .entries()
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert!(l3.contains(&"etc/.wh.motd".to_owned()), "{l3:?}");
        assert!(l3.contains(&"opt/app/.wh..wh..opq".to_owned()), "{l3:?}");

        let fs = img.rootfs();
        let busybox = &fs["bin/busybox"];
        assert_eq!(busybox.mode, 0o755);
        assert_eq!(busybox.kind, EntryKind::File(busybox_binary()));
        for applet in ["sh", "ls", "cat", "true", "echo"] {
            assert_eq!(
                fs[&format!("bin/{applet}")].kind,
                EntryKind::Symlink("busybox".into())
            );
        }
        assert_eq!(fs["tmp"].mode, 0o1777);
        assert_eq!(fs["root"].mode, 0o700);
        for d in ["proc", "sys", "dev", "etc"] {
            assert_eq!(fs[d].kind, EntryKind::Dir, "{d}");
        }
        let owned = &fs["home/berth/owned.txt"];
        assert_eq!((owned.uid, owned.gid, owned.mode), (1000, 1000, 0o640));
        assert_eq!(
            fs["etc/hostname.link"].kind,
            EntryKind::Hardlink("etc/hostname".into())
        );
        assert!(!fs.contains_key("etc/motd"));
        assert!(!fs.contains_key("opt/app/old.txt"));
        assert!(!fs.contains_key("opt/app/sub"));
        assert!(!fs.contains_key("opt/app/sub/old2.txt"));
        assert_eq!(
            fs["opt/app/new.txt"].kind,
            EntryKind::File(b"added by layer 3\n".to_vec())
        );
        assert!(fs.contains_key("etc/layer3"));
        assert!(fs.keys().all(|p| !p.contains(".wh.")));
    }

    #[test]
    fn multiplatform_index_lists_both_platforms() {
        let img = busybox_multiplatform_image("docker.io/library/busybox:multi");
        let index = img.index.as_ref().expect("index");
        assert_eq!(img.index_digest.as_deref(), Some(index.digest.as_str()));
        assert_eq!(sha256_digest(&index.bytes), index.digest);
        assert_eq!(img.target(), index.descriptor());
        let idx: ImageIndex = serde_json::from_slice(&index.bytes).unwrap();
        assert_eq!(idx.media_type(), &Some(MediaType::ImageIndex));
        let ms = idx.manifests();
        assert_eq!(ms.len(), 2);
        assert_eq!(ms[0].digest().as_ref(), img.manifest_digest);
        assert_eq!(ms[0].size(), img.manifest_size);
        assert_eq!(
            platform::arch(ms[0].platform().as_ref().unwrap()),
            host_arch()
        );
        assert_platform(
            &img.manifest,
            &img.config,
            &img.layers,
            "linux",
            host_arch(),
        );
        let other = &img.other_platforms[0];
        assert_eq!(ms[1], other.platform_descriptor());
        assert_ne!(other.architecture, host_arch());
        assert_eq!(platform::os(ms[1].platform().as_ref().unwrap()), "linux");
        assert_platform(
            &other.manifest,
            &other.config,
            &other.layers,
            "linux",
            &other.architecture,
        );
        assert_eq!(img.blobs().len(), 1 + 5 + 3);
    }

    #[test]
    fn oci_archive_blobs_match_their_names_and_references() {
        let single = busybox_image("docker.io/library/busybox:berth");
        let multi = busybox_multiplatform_image("example.com/berth/multi:v1");
        let tar = oci_archive_bytes(&[single.clone(), multi.clone()], Default::default());
        let files = files(&tar);
        assert_eq!(json(&files["oci-layout"])["imageLayoutVersion"], "1.0.0");
        let mut blobs = BTreeMap::new();
        for (path, data) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                assert_eq!(sha256_digest(data), format!("sha256:{hex}"), "{path}");
                blobs.insert(format!("sha256:{hex}"), data.clone());
            }
        }
        // Shared layers and the busybox manifest are stored once.
        assert_eq!(blobs.len(), 9);
        let index: ImageIndex = serde_json::from_slice(&files["index.json"]).unwrap();
        let ms = index.manifests().clone();
        assert_eq!(ms.len(), 2);
        for (d, img) in ms.iter().zip([&single, &multi]) {
            let a = d.annotations().as_ref().unwrap();
            assert_eq!(a[ANNOTATION_IMAGE_NAME], img.name);
            assert_eq!(a[ANNOTATION_REF_NAME], img.tag());
            let t = img.target();
            assert_eq!(
                (d.media_type(), d.digest(), d.size()),
                (t.media_type(), t.digest(), t.size())
            );
        }
        assert_eq!(
            ms[1].annotations().as_ref().unwrap()[ANNOTATION_REF_NAME],
            "v1"
        );
        // Walk every descriptor from index.json: each names a stored blob of that size.
        let mut todo = ms;
        let mut walked = 0;
        while let Some(d) = todo.pop() {
            walked += 1;
            let digest = d.digest().to_string();
            let data = blobs
                .get(&digest)
                .unwrap_or_else(|| panic!("missing {digest}"));
            assert_eq!(data.len() as u64, d.size(), "{digest}");
            if d.media_type() == &MediaType::ImageIndex {
                let i: ImageIndex = serde_json::from_slice(data).unwrap();
                todo.extend(i.manifests().iter().cloned());
            } else if d.media_type() == &MediaType::ImageManifest {
                let m: ImageManifest = serde_json::from_slice(data).unwrap();
                todo.push(m.config().clone());
                todo.extend(m.layers().iter().cloned());
            }
        }
        // single: manifest, config, 3 layers; multi: index, that manifest again, the other's 3 blobs.
        assert_eq!(walked, 5 + 1 + 5 + 3);

        let only_ref = oci_archive_bytes(
            std::slice::from_ref(&single),
            OciArchiveOptions {
                image_name_annotation: false,
                ref_name_annotation: true,
            },
        );
        let idx = json(&files_of(&only_ref, "index.json"));
        assert_eq!(
            idx["manifests"][0]["annotations"],
            serde_json::json!({ ANNOTATION_REF_NAME: "berth" })
        );
    }

    fn files_of(tar: &[u8], path: &str) -> Vec<u8> {
        files(tar)
            .remove(path)
            .unwrap_or_else(|| panic!("{path} not in archive"))
    }

    #[test]
    fn docker_archive_manifest_references_files_in_the_tar() {
        let img = busybox_image("docker.io/library/busybox:berth");
        let files = files(&docker_archive_bytes(&img));
        let manifest = json(&files["manifest.json"]);
        let entry = &manifest.as_array().expect("array")[0];
        assert_eq!(entry["RepoTags"], serde_json::json!(["busybox:berth"]));
        let config_name = entry["Config"].as_str().unwrap();
        let config = &files[config_name];
        assert_eq!(
            format!("{}.json", digest_hex(&sha256_digest(config))),
            config_name
        );
        assert_eq!(config, &img.config.bytes);
        let diff_ids = json(config)["rootfs"]["diff_ids"].clone();
        let layers = entry["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (i, l) in layers.iter().enumerate() {
            let tar = &files[l.as_str().unwrap()];
            assert_eq!(sha256_digest(tar), diff_ids[i].as_str().unwrap());
            assert_eq!(tar, &img.layers[i].tar);
        }
        let repos = json(&files["repositories"]);
        assert_eq!(
            repos["busybox"]["berth"],
            digest_hex(&img.layers[2].diff_id)
        );
    }

    #[test]
    fn large_blob_file_matches_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("blob");
        let size = (3 << 20) + 5;
        let digest = write_large_blob(&path, size as u64, 7);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), size);
        assert_eq!(bytes, large_blob_bytes(size, 7));
        assert_eq!(sha256_digest(&bytes), digest);
        assert_eq!(write_large_blob(&path, 0, 7), sha256_digest(b""));
    }

    #[test]
    fn busybox_is_static_and_dynamic_binaries_are_detected() {
        assert!(!elf_has_interpreter(&busybox_binary()));
        assert!(elf_has_interpreter(
            &std::fs::read("/proc/self/exe").unwrap()
        ));
    }

    /// The archives are what containerd's own importer accepts. Set `BERTH_FIXTURE_OUT=<dir>` to
    /// keep them there.
    #[test]
    fn real_containerd_imports_the_archives() {
        require_root("importing fixture archives into a real containerd");
        let tmp = tempfile::tempdir().unwrap();
        let dir = std::env::var_os("BERTH_FIXTURE_OUT")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| tmp.path().to_owned());
        std::fs::create_dir_all(&dir).unwrap();
        let single = busybox_image("docker.io/library/busybox:berth");
        let multi = busybox_multiplatform_image("docker.io/library/busybox:multi");
        let docker = busybox_image("docker.io/library/busybox:docker");
        let (oci_tar, multi_tar, docker_tar) = (
            dir.join("oci.tar"),
            dir.join("multi.tar"),
            dir.join("docker.tar"),
        );
        write_oci_archive(&oci_tar, std::slice::from_ref(&single));
        write_oci_archive(&multi_tar, std::slice::from_ref(&multi));
        write_docker_archive(&docker_tar, &docker);

        let ctd = Containerd::start();
        let p = |p: &Path| p.display().to_string();
        ok(&ctd.ctr(&["images", "import", "--no-unpack", &p(&oci_tar)]));
        ok(&ctd.ctr(&[
            "images",
            "import",
            "--no-unpack",
            "--all-platforms",
            &p(&multi_tar),
        ]));
        ok(&ctd.ctr(&["images", "import", "--no-unpack", &p(&docker_tar)]));
        let ls = ok(&ctd.ctr(&["images", "ls"]));
        let line = |name: &str| {
            ls.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("{name} not imported:\n{ls}"))
                .to_owned()
        };
        assert!(line(&single.name).contains(&single.manifest_digest), "{ls}");
        let m = line(&multi.name);
        assert!(m.contains(multi.index_digest.as_deref().unwrap()), "{ls}");
        assert!(m.contains(MEDIA_TYPE_OCI_INDEX), "{ls}");
        line(&docker.name);
        // --all-platforms stored the other platform's blobs too.
        let content = ok(&ctd.ctr(&["content", "ls", "-q"]));
        for b in multi.blobs() {
            assert!(
                content.contains(b.digest),
                "{} missing:\n{content}",
                b.digest
            );
        }
    }
}
