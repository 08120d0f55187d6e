//! The unpacker over real metadata and content stores in a temporary directory and an in-memory
//! snapshotter: platform choice, chain IDs, refused documents, and the job around the layers
//! (lease, label, undo). No root needed here; `overlay.rs` extracts real layers on the real
//! overlayfs driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use berth_content_store::{ContentStore, LocalStore};
use berth_metadata::{Image, MetadataDb};
use berth_oci::{
    go_json, media, platform, Descriptor, DescriptorBuilder, ImageConfigurationBuilder,
    ImageIndexBuilder, ImageManifestBuilder, MediaType, RootFs,
};
use berth_plugin::{Classify, ErrorKind};
use berth_snapshots::{NewSnapshot, Snapshots};
use berth_snapshotter::Snapshotter;
use berth_snapshotter_fake::FakeSnapshotter;

use super::*;

mod overlay;

const NS: &str = "test";

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<MetadataDb>,
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshots>,
    unpacker: Unpacker,
}

fn fixture() -> Fixture {
    fixture_with(|_| ("native", Arc::new(FakeSnapshotter::new())))
}

/// A fixture whose one snapshotter `driver` makes (given a directory of its own), under the name
/// it returns.
fn fixture_with(
    driver: impl FnOnce(&std::path::Path) -> (&'static str, Arc<dyn Snapshotter>),
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(&dir.path().join("meta")).unwrap());
    let local = Arc::new(LocalStore::open(&dir.path().join("content")).unwrap());
    let content = Arc::new(ContentStore::new(local, db.clone()));
    let (name, driver) = driver(&dir.path().join("snapshotter"));
    let drivers = HashMap::from([(name.to_owned(), driver)]);
    let snapshots = Arc::new(Snapshots::new(db.clone(), drivers));
    let unpacker = Unpacker::new(db.clone(), content.clone(), snapshots.clone());
    Fixture {
        _dir: dir,
        db,
        content,
        snapshots,
        unpacker,
    }
}

impl Fixture {
    /// Stores `bytes` and returns their descriptor.
    fn put(&self, media_type: &str, bytes: &[u8]) -> Descriptor {
        let d = Digest::sha256(bytes);
        let len = bytes.len() as i64;
        match self
            .content
            .writer(NS, &format!("put-{d}"), len, d.as_str(), None)
        {
            Ok(mut w) => {
                w.write(bytes).unwrap();
                w.commit(&self.content, len, d.as_str(), BTreeMap::new())
                    .unwrap();
            }
            // Stored before (the same document twice).
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => panic!("{e}"),
        }
        Descriptor::new(MediaType::from(media_type), bytes.len() as u64, d)
    }

    fn image(&self, name: &str, target: &Descriptor) {
        self.db
            .create_image(
                NS,
                &Image {
                    name: name.into(),
                    target: berth_metadata::Descriptor {
                        media_type: target.media_type().to_string(),
                        digest: target.digest().to_string(),
                        size: target.size() as i64,
                        annotations: BTreeMap::new(),
                    },
                    ..Default::default()
                },
            )
            .unwrap();
    }

    /// A config for `platform` listing `diff_ids`, and a manifest of `layers` pointing at it.
    fn manifest(&self, plat: &str, layers: &[Descriptor], diff_ids: &[Digest]) -> Descriptor {
        let p = platform::parse(plat).unwrap();
        let mut rootfs = RootFs::default();
        rootfs.set_diff_ids(diff_ids.iter().map(Digest::to_string).collect());
        let mut cfg = ImageConfigurationBuilder::default()
            .architecture(p.architecture().clone())
            .os(p.os().clone())
            .rootfs(rootfs)
            .build()
            .unwrap();
        cfg.set_variant(p.variant().clone());
        let config = self.put(media::OCI_CONFIG, &go_json(&cfg).unwrap());
        self.manifest_of(config, layers.to_vec())
    }

    fn manifest_of(&self, config: Descriptor, layers: Vec<Descriptor>) -> Descriptor {
        let m = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config)
            .layers(layers)
            .build()
            .unwrap();
        self.put(media::OCI_MANIFEST, &go_json(&m).unwrap())
    }

    fn index(&self, manifests: Vec<Descriptor>) -> Descriptor {
        let i = ImageIndexBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageIndex)
            .manifests(manifests)
            .build()
            .unwrap();
        self.put(media::OCI_INDEX, &go_json(&i).unwrap())
    }

    /// `n` layers: blobs (not real tars: nothing here extracts them) and their diff_ids.
    fn layers(&self, tag: &str, n: usize) -> (Vec<Descriptor>, Vec<Digest>) {
        (0..n)
            .map(|i| {
                let blob = self.put(media::OCI_LAYER_GZIP, format!("{tag} blob {i}").as_bytes());
                (blob, Digest::sha256(format!("{tag} tar {i}").as_bytes()))
            })
            .unzip()
    }

    fn resolve(&self, image: &str, plat: Option<&str>) -> Result<ResolvedImage, UnpackError> {
        let m = match plat {
            Some(p) => Matcher::only(&platform::parse(p).unwrap()),
            None => Matcher::host(),
        };
        self.unpacker.resolve(NS, image, &m)
    }
}

fn with_platform(d: Descriptor, plat: &str) -> Descriptor {
    let mut d = d;
    d.set_platform(Some(platform::parse(plat).unwrap()));
    d
}

fn host() -> String {
    platform::format(&berth_oci::host_platform())
}

/// An index of the host's platform, between two others.
fn multi(f: &Fixture) -> (Descriptor, Digest, Vec<Digest>) {
    let other_arch = if platform::host_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let (ol, od) = f.layers("other", 1);
    let other = f.manifest(&format!("linux/{other_arch}"), &ol, &od);
    let (hl, hd) = f.layers("host", 3);
    let host_m = f.manifest(&host(), &hl, &hd);
    let (wl, wd) = f.layers("windows", 1);
    let windows = f.manifest("windows/amd64", &wl, &wd);
    let idx = f.index(vec![
        with_platform(other, &format!("linux/{other_arch}")),
        with_platform(windows, "windows/amd64"),
        with_platform(host_m.clone(), &host()),
    ]);
    let host_digest = Digest::try_from(host_m.digest()).unwrap();
    (idx, host_digest, hd)
}

#[test]
fn chooses_the_host_platform_and_computes_chain_ids() {
    let f = fixture();
    let (idx, host_manifest, diff_ids) = multi(&f);
    f.image("multi", &idx);
    let r = f.resolve("multi", None).unwrap();
    assert_eq!(r.manifest, host_manifest);
    assert_eq!(
        platform::format(&r.platform),
        platform::format(&platform::normalize(&berth_oci::host_platform()))
    );
    assert_eq!(r.layers.len(), 3);
    let chain: Vec<Digest> = r.layers.iter().map(|l| l.chain_id.clone()).collect();
    assert_eq!(chain, berth_oci::chain_ids(&diff_ids));
    assert_eq!(chain[0], diff_ids[0]);
    assert_eq!(
        chain[1],
        Digest::sha256(format!("{} {}", diff_ids[0], diff_ids[1]).as_bytes())
    );
    assert!(r
        .layers
        .iter()
        .all(|l| l.media_type == media::OCI_LAYER_GZIP));
}

#[test]
fn a_requested_platform_is_chosen_and_a_missing_one_is_not_found() {
    let f = fixture();
    let (idx, _, _) = multi(&f);
    f.image("multi", &idx);
    let r = f.resolve("multi", Some("windows/amd64")).unwrap();
    assert_eq!(platform::format(&r.platform), "windows/amd64");
    let e = f.resolve("multi", Some("linux/riscv64")).unwrap_err();
    assert!(matches!(e, UnpackError::NoMatchingManifest { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(e.to_string().contains("linux/riscv64"), "{e}");
    let e = f.resolve("absent", None).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn arm_variants_and_arm64_v8_match_as_containerd_matches_them() {
    let f = fixture();
    let mut entries = Vec::new();
    let mut by_variant = BTreeMap::new();
    for spec in ["linux/arm/v5", "linux/arm/v6", "linux/arm64/v8"] {
        let (l, d) = f.layers(spec, 1);
        let m = f.manifest(spec, &l, &d);
        by_variant.insert(spec, Digest::try_from(m.digest()).unwrap());
        entries.push(with_platform(m, spec));
    }
    let idx = f.index(entries);
    f.image("arm", &idx);
    let pick = |p: &str| f.resolve("arm", Some(p)).unwrap().manifest;
    // v7 runs v6 (preferred) and v5.
    assert_eq!(pick("linux/arm/v7"), by_variant["linux/arm/v6"]);
    assert_eq!(pick("linux/arm/v6"), by_variant["linux/arm/v6"]);
    assert_eq!(pick("linux/arm/v5"), by_variant["linux/arm/v5"]);
    // linux/arm64 is linux/arm64/v8.
    assert_eq!(pick("linux/arm64"), by_variant["linux/arm64/v8"]);
    assert_eq!(pick("linux/aarch64"), by_variant["linux/arm64/v8"]);
}

#[test]
fn a_manifest_without_index_is_taken_when_its_config_matches() {
    let f = fixture();
    let (l, d) = f.layers("single", 2);
    let m = f.manifest(&host(), &l, &d);
    f.image("single", &m);
    let r = f.resolve("single", None).unwrap();
    assert_eq!(r.layers.len(), 2);
    // An index entry without a platform is decided by its config too.
    let idx = f.index(vec![m]);
    f.image("untagged", &idx);
    assert_eq!(f.resolve("untagged", None).unwrap().layers.len(), 2);
    let e = f.resolve("single", Some("linux/riscv64")).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

#[test]
fn refused_documents() {
    let f = fixture();
    let (l, d) = f.layers("x", 2);
    let check = |name: &str, target: &Descriptor, kind: ErrorKind, what: &str| {
        f.image(name, target);
        let e = f.resolve(name, None).unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        assert!(e.to_string().contains(what), "{name}: {e}");
    };

    // No layers.
    check(
        "no-layers",
        &f.manifest(&host(), &[], &[]),
        ErrorKind::InvalidArgument,
        "no layers",
    );
    // More diff_ids than layers.
    check(
        "count",
        &f.manifest(&host(), &l[..1], &d),
        ErrorKind::InvalidArgument,
        "mismatched image rootfs and manifest layers",
    );
    // The target is neither an index nor a manifest.
    let cfg = f.put(media::OCI_CONFIG, b"{}");
    check(
        "config",
        &cfg,
        ErrorKind::InvalidArgument,
        "neither an image index nor a manifest",
    );
    // A manifest whose bytes are an index.
    let idx_as_manifest = f.index(vec![]);
    let wrong = Descriptor::new(
        MediaType::ImageManifest,
        idx_as_manifest.size(),
        idx_as_manifest.digest().clone(),
    );
    check(
        "index-as-manifest",
        &wrong,
        ErrorKind::InvalidArgument,
        "expected manifest but found index",
    );
    // A layer of an unknown media type.
    let mut odd = l.clone();
    odd[1] = Descriptor::new(
        MediaType::from("application/x-unknown"),
        odd[1].size(),
        odd[1].digest().clone(),
    );
    check(
        "odd-layer",
        &f.manifest(&host(), &odd, &d),
        ErrorKind::NotImplemented,
        "cannot be unpacked",
    );
    // Config descriptors: absent, wrong size, wrong media type, malformed digest.
    let good = f.manifest(&host(), &l, &d);
    let m: berth_oci::ImageManifest = berth_oci::document::parse_manifest(
        &std::fs::read(blob_path(&f, &good)).unwrap(),
        media::OCI_MANIFEST,
    )
    .unwrap();
    let config = m.config().clone();
    let absent = DescriptorBuilder::default()
        .media_type(MediaType::ImageConfig)
        .digest(Digest::sha256(b"not stored"))
        .size(10u64)
        .build()
        .unwrap();
    check(
        "absent-config",
        &f.manifest_of(absent, l.clone()),
        ErrorKind::NotFound,
        "not found",
    );
    let mut resized = config.clone();
    resized.set_size(config.size() + 1);
    check(
        "config-size",
        &f.manifest_of(resized, l.clone()),
        ErrorKind::InvalidArgument,
        "bytes",
    );
    let mut retyped = config.clone();
    retyped.set_media_type(MediaType::ImageLayer);
    check(
        "config-type",
        &f.manifest_of(retyped, l.clone()),
        ErrorKind::InvalidArgument,
        "not an image config",
    );
    let bad_digest = String::from_utf8(go_json(&m).unwrap())
        .unwrap()
        .replace(config.digest().as_ref(), "sha256:0123");
    let bad = f.put(media::OCI_MANIFEST, bad_digest.as_bytes());
    check(
        "config-digest",
        &bad,
        ErrorKind::InvalidArgument,
        "digest length",
    );
    // A config whose diff_ids are not digests.
    let cfg = f.put(
        media::OCI_CONFIG,
        format!(
            r#"{{"architecture":"{}","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:x"]}}}}"#,
            platform::host_arch()
        )
        .as_bytes(),
    );
    let mut m2 = m.clone();
    m2.set_config(cfg);
    m2.set_layers(l[..1].to_vec());
    let target = f.put(media::OCI_MANIFEST, &go_json(&m2).unwrap());
    check("diff-ids", &target, ErrorKind::InvalidArgument, "diff_id");
}

/// Where the content store keeps a blob (to read a document back).
fn blob_path(f: &Fixture, d: &Descriptor) -> std::path::PathBuf {
    f._dir
        .path()
        .join("content/blobs/sha256")
        .join(Digest::try_from(d.digest()).unwrap().encoded())
}

#[test]
fn parse_platform_of_requests() {
    assert!(Request::parse_platform("").unwrap().is_none());
    let p = Request::parse_platform("linux/arm64").unwrap().unwrap();
    assert_eq!(platform::format(&p), "linux/arm64");
    let e = Request::parse_platform("linux/*").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

fn request(image: &str) -> Request {
    Request {
        namespace: NS.into(),
        image: image.into(),
        snapshotter: "native".into(),
        platform: None,
        target: None,
        gate: None,
    }
}

#[tokio::test]
async fn present_layers_are_reported_the_config_labelled_and_the_lease_dropped() {
    let f = fixture();
    let (l, d) = f.layers("present", 2);
    let m = f.manifest(&host(), &l, &d);
    f.image("present", &m);
    // Both layers already unpacked.
    let chain = berth_oci::chain_ids(&d);
    for (i, c) in chain.iter().enumerate() {
        let parent = if i == 0 {
            String::new()
        } else {
            chain[i - 1].to_string()
        };
        let key = format!("k{i}");
        f.snapshots
            .prepare(
                NS,
                "native",
                None,
                NewSnapshot {
                    key: key.clone(),
                    parent,
                    labels: BTreeMap::new(),
                    view: false,
                },
            )
            .unwrap();
        f.snapshots
            .commit(NS, "native", c.as_str(), &key, BTreeMap::new(), None)
            .unwrap();
    }
    let (tx, mut rx) = mpsc::channel(16);
    let done = f.unpacker.unpack(request("present"), tx).await.unwrap();
    assert_eq!(done.chain_id, chain[1]);
    assert_eq!(done.layers, 2);
    let mut seen = Vec::new();
    while let Some(p) = rx.recv().await {
        seen.push((p.index, p.state, p.chain_id));
    }
    assert_eq!(
        seen,
        vec![
            (0, LayerState::Present, chain[0].clone()),
            (1, LayerState::Present, chain[1].clone())
        ]
    );
    let info = f.db.blob_info(NS, done.config.as_str()).unwrap();
    assert_eq!(
        info.labels.get("containerd.io/gc.ref.snapshot.native"),
        Some(&chain[1].to_string())
    );
    assert!(f.db.list_leases(NS).unwrap().is_empty());
}

#[test]
fn a_layer_that_cannot_be_applied_leaves_no_snapshot_and_no_lease() {
    let f = fixture();
    // The second layer's blob is not in the content store.
    let (mut l, d) = f.layers("broken", 2);
    l[1] = Descriptor::new(MediaType::ImageLayerGzip, 5, Digest::sha256(b"missing"));
    // The first layer is already there, so nothing needs extracting before the failure.
    let chain = berth_oci::chain_ids(&d);
    f.snapshots
        .prepare(
            NS,
            "native",
            None,
            NewSnapshot {
                key: "k0".into(),
                parent: String::new(),
                labels: BTreeMap::new(),
                view: false,
            },
        )
        .unwrap();
    f.snapshots
        .commit(NS, "native", chain[0].as_str(), "k0", BTreeMap::new(), None)
        .unwrap();
    let m = f.manifest(&host(), &l, &d);
    f.image("broken", &m);
    let progress = Mutex::new(Vec::new());
    let e = f
        .unpacker
        .unpack_blocking(&request("broken"), &|p| progress.lock().unwrap().push(p))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let keys: Vec<String> = f
        .snapshots
        .list(NS, "native")
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(
        keys,
        vec![chain[0].to_string()],
        "only the layer that was there"
    );
    assert!(f.db.list_leases(NS).unwrap().is_empty());
    let config = Digest::try_from(
        berth_oci::document::parse_manifest(
            &std::fs::read(blob_path(&f, &m)).unwrap(),
            media::OCI_MANIFEST,
        )
        .unwrap()
        .config()
        .digest(),
    )
    .unwrap();
    assert!(f
        .db
        .blob_info(NS, config.as_str())
        .unwrap()
        .labels
        .is_empty());
    let states: Vec<LayerState> = progress
        .into_inner()
        .unwrap()
        .iter()
        .map(|p| p.state)
        .collect();
    assert_eq!(states, vec![LayerState::Present]);
}
