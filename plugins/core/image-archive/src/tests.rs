//! The importer and exporter against a real content store in a temporary directory: OCI and
//! docker archives in, OCI layouts out, hostile archives refused.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::sync::Arc;

use berth_content_store::{ContentStore, LocalStore};
use berth_metadata::MetadataDb;
use berth_oci::{media, platform, Descriptor, Digest, ANNOTATION_IMAGE_NAME, LABEL_UNCOMPRESSED};

use crate::export::{self, ExportOptions, StoreSource};
use crate::import::{ImportError, ImportOptions, Importer};
use crate::model;

struct Store {
    _dir: tempfile::TempDir,
    content: ContentStore,
}

fn store() -> Store {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(&dir.path().join("meta")).unwrap());
    let local = Arc::new(LocalStore::open(&dir.path().join("content")).unwrap());
    for ns in ["a", "b"] {
        db.create_lease(ns, "l", BTreeMap::new()).unwrap();
    }
    Store {
        content: ContentStore::new(local, db),
        _dir: dir,
    }
}

fn import(
    s: &Store,
    ns: &str,
    bytes: &[u8],
    force_compress: bool,
) -> Result<Descriptor, ImportError> {
    Importer {
        content: &s.content,
        ns,
        lease: "l",
        options: ImportOptions { force_compress },
    }
    .import(&mut &bytes[..])
}

/// A tar of `(name, bytes)` regular files, as Go writes them.
fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

/// A one-file layer (an uncompressed tar).
fn layer(content: &str) -> Vec<u8> {
    tar_of(&[("file", content.as_bytes())])
}

fn config(arch: &str, layers: &[&[u8]]) -> Vec<u8> {
    let ids: Vec<String> = layers
        .iter()
        .map(|l| format!("\"{}\"", Digest::sha256(l)))
        .collect();
    format!(
        r#"{{"architecture":"{arch}","os":"linux","rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        ids.join(",")
    )
    .into_bytes()
}

fn desc_json(mt: &str, bytes: &[u8], extra: &str) -> String {
    format!(
        r#"{{"mediaType":"{mt}","digest":"{}","size":{}{extra}}}"#,
        Digest::sha256(bytes),
        bytes.len()
    )
}

fn blob_name(bytes: &[u8]) -> String {
    format!("blobs/sha256/{}", Digest::sha256(bytes).encoded())
}

/// An OCI image for `arch`: (manifest, config, layer).
fn oci_image(arch: &str, content: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let l = layer(content);
    let c = config(arch, &[&l]);
    let m = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{},"layers":[{}]}}"#,
        media::OCI_MANIFEST,
        desc_json(media::OCI_CONFIG, &c, ""),
        desc_json(media::OCI_LAYER, &l, "")
    )
    .into_bytes();
    (m, c, l)
}

fn host_arch() -> String {
    platform::arch(&berth_oci::host_platform())
}

fn other_arch() -> &'static str {
    if host_arch() == "arm64" {
        "amd64"
    } else {
        "arm64"
    }
}

/// An OCI layout of one image named `name`.
fn oci_archive(name: &str) -> (Vec<u8>, Vec<u8>) {
    let (m, c, l) = oci_image(&host_arch(), "hello\n");
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
        desc_json(
            media::OCI_MANIFEST,
            &m,
            &format!(r#","annotations":{{"{ANNOTATION_IMAGE_NAME}":"{name}"}}"#)
        )
    );
    let tar = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", index.as_bytes()),
        (&blob_name(&m), &m),
        (&blob_name(&c), &c),
        (&blob_name(&l), &l),
    ]);
    (tar, m)
}

fn read(s: &Store, ns: &str, digest: &str) -> Vec<u8> {
    crate::read_document(&s.content, ns, digest).unwrap()
}

#[test]
fn an_oci_layout_imports_as_its_index() {
    let s = store();
    let (tar, m) = oci_archive("docker.io/library/x:1");
    let idx = import(&s, "a", &tar, false).unwrap();
    assert_eq!(idx.media_type().as_ref(), media::OCI_INDEX);
    let index = read(&s, "a", idx.digest().as_ref());
    assert!(String::from_utf8_lossy(&index).contains(Digest::sha256(&m).as_str()));
    // Every file is a blob of the namespace, held by the lease.
    assert_eq!(s.content.list("a").unwrap().len(), 4);
    // Again: the blobs are there already, the result is the same.
    assert_eq!(import(&s, "a", &tar, false).unwrap(), idx);
    // gzip-compressed, the same archive.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    assert_eq!(import(&s, "b", &gz.finish().unwrap(), false).unwrap(), idx);
}

/// A `docker save` archive of one image with an uncompressed layer.
fn docker_archive(tag: &str) -> (Vec<u8>, Vec<u8>) {
    let l = layer("docker\n");
    let c = config(&host_arch(), &[&l]);
    let manifest =
        format!(r#"[{{"Config":"c.json","RepoTags":["{tag}"],"Layers":["l1/layer.tar"]}}]"#);
    (
        tar_of(&[
            ("c.json", &c),
            ("l1/layer.tar", &l),
            ("manifest.json", manifest.as_bytes()),
        ]),
        l,
    )
}

#[test]
fn a_docker_archive_gets_containerds_manifest_and_index() {
    let s = store();
    let (tar, l) = docker_archive("tiny:1");
    let idx = import(&s, "a", &tar, false).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&read(&s, "a", idx.digest().as_ref())).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(entry["mediaType"], media::DOCKER_MANIFEST);
    assert_eq!(
        entry["annotations"][ANNOTATION_IMAGE_NAME],
        "docker.io/library/tiny:1"
    );
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "1"
    );
    assert_eq!(entry["platform"]["architecture"], host_arch());
    let manifest: serde_json::Value =
        serde_json::from_slice(&read(&s, "a", entry["digest"].as_str().unwrap())).unwrap();
    assert_eq!(manifest["layers"][0]["mediaType"], media::DOCKER_LAYER);
    assert_eq!(manifest["layers"][0]["digest"], Digest::sha256(&l).as_str());

    // Compression forced: a gzip layer labelled with what it uncompresses to.
    let idx2 = import(&s, "b", &tar, true).unwrap();
    assert_ne!(idx2, idx);
    let index: serde_json::Value =
        serde_json::from_slice(&read(&s, "b", idx2.digest().as_ref())).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&read(
        &s,
        "b",
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let gz = &manifest["layers"][0];
    assert_eq!(gz["mediaType"], media::DOCKER_LAYER_GZIP);
    let info = s.content.info("b", gz["digest"].as_str().unwrap()).unwrap();
    assert_eq!(info.labels[LABEL_UNCOMPRESSED], Digest::sha256(&l).as_str());
    // A later import without compression finds the compressed blob and uses it.
    assert_eq!(import(&s, "b", &tar, false).unwrap(), idx2);
}

#[test]
fn hostile_and_broken_archives_are_refused() {
    let s = store();
    let (tar, _) = oci_archive("docker.io/library/x:1");
    let msg = |r: Result<Descriptor, ImportError>| r.unwrap_err().to_string();

    // Cut in the middle of a file.
    let e = msg(import(&s, "a", &tar[..tar.len() / 2 + 100], false));
    assert!(
        e.contains("unexpected EOF") || e.contains("reading archive"),
        "{e}"
    );
    // Not a tar at all.
    let e = msg(import(&s, "a", &[b'x'; 4096], false));
    assert!(e.starts_with("reading archive:"), "{e}");
    // Nothing at all.
    assert_eq!(
        msg(import(&s, "a", b"", false)),
        "unrecognized image format"
    );
    // A name that climbs out.
    let bad = tar_of(&[("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)]);
    let mut hostile = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..7].copy_from_slice(b"../evil");
    h.set_cksum();
    hostile.append(&h, &b"x"[..]).unwrap();
    let hostile = hostile.into_inner().unwrap();
    let e = msg(import(&s, "a", &hostile, false));
    assert!(e.contains("points outside the archive"), "{e}");
    // A layout without index.json, an unknown version.
    assert_eq!(
        msg(import(&s, "a", &bad, false)),
        "missing index.json in OCI layout 1.0.0"
    );
    let v2 = tar_of(&[("oci-layout", br#"{"imageLayoutVersion":"2.0.0"}"#)]);
    assert_eq!(
        msg(import(&s, "a", &v2, false)),
        "unsupported OCI version 2.0.0"
    );
    // A PAX header declaring far more than Go's limit, in a stream of a few blocks.
    let mut pax = tar::Header::new_ustar();
    pax.set_path("PaxHeaders/huge").unwrap();
    pax.set_entry_type(tar::EntryType::XHeader);
    pax.set_size(64 << 20);
    pax.set_mode(0o644);
    pax.set_cksum();
    let mut huge = pax.as_bytes().to_vec();
    huge.extend_from_slice(&[b'9'; 4096]);
    let e = msg(import(&s, "a", &huge, false));
    assert!(e.contains("extension header"), "{e}");
    // A docker archive naming a config it lacks.
    let missing = tar_of(&[(
        "manifest.json",
        br#"[{"Config":"nope.json","RepoTags":null,"Layers":[]}]"#,
    )]);
    assert_eq!(
        msg(import(&s, "a", &missing, false)),
        "image config \"nope.json\" not found"
    );
    // A file whose content is not the digest its name says.
    let lie = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        (&blob_name(b"truth"), b"a lie"),
    ]);
    let e = msg(import(&s, "a", &lie, false));
    assert!(e.contains("unexpected commit digest"), "{e}");
}

/// Exports `names` from namespace `ns` (each image's target named as `ctr` names it).
fn export_of(s: &Store, ns: &str, images: &[(&str, Descriptor)], opts: &ExportOptions) -> Vec<u8> {
    let targets: Vec<Descriptor> = images
        .iter()
        .map(|(n, d)| export::named_target(n, d))
        .collect();
    let mut out = Vec::new();
    let mut source = StoreSource {
        content: &s.content,
        ns,
        lease: Some("l"),
    };
    export::export(&mut source, &targets, opts, &mut out, &mut |_| {}).unwrap();
    out
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn an_export_imports_back_with_the_same_image() {
    let s = store();
    let (tar, m) = oci_archive("docker.io/library/x:1");
    import(&s, "a", &tar, false).unwrap();
    let md = model::descriptor(
        media::OCI_MANIFEST,
        Digest::sha256(&m).as_str(),
        m.len() as i64,
    )
    .unwrap();
    let out = export_of(
        &s,
        "a",
        &[("docker.io/library/x:1", md.clone())],
        &ExportOptions::default(),
    );
    let names = tar_names(&out);
    assert_eq!(names[..2], ["blobs/", "blobs/sha256/"]);
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
    assert!(names.contains(&"index.json".to_owned()), "{names:?}");
    assert_eq!(names.last().unwrap(), "oci-layout");
    // Deterministic: the same export twice is the same bytes.
    assert_eq!(
        out,
        export_of(
            &s,
            "a",
            &[("docker.io/library/x:1", md.clone())],
            &ExportOptions::default()
        )
    );
    // Into another namespace: the index names the same manifest.
    let idx = import(&s, "b", &out, false).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&read(&s, "b", idx.digest().as_ref())).unwrap();
    assert_eq!(index["manifests"][0]["digest"], md.digest().as_ref());
    assert_eq!(
        index["manifests"][0]["annotations"][ANNOTATION_IMAGE_NAME],
        "docker.io/library/x:1"
    );
    let mj: serde_json::Value = serde_json::from_slice(
        &tar::Archive::new(&out[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
            .map(|mut e| {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                v
            })
            .unwrap(),
    )
    .unwrap();
    assert_eq!(mj[0]["RepoTags"][0], "x:1");
}

#[test]
fn an_index_exports_whole_but_only_the_wanted_platforms_blobs() {
    let s = store();
    let (hm, hc, hl) = oci_image(&host_arch(), "host\n");
    let (om, oc, ol) = oci_image(other_arch(), "other\n");
    let platform_json =
        |arch: &str| format!(r#","platform":{{"architecture":"{arch}","os":"linux"}}"#);
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{},{}]}}"#,
        media::OCI_INDEX,
        desc_json(media::OCI_MANIFEST, &hm, &platform_json(&host_arch())),
        desc_json(media::OCI_MANIFEST, &om, &platform_json(other_arch())),
    )
    .into_bytes();
    let top = format!(
        r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
        desc_json(
            media::OCI_INDEX,
            &index,
            &format!(r#","annotations":{{"{ANNOTATION_IMAGE_NAME}":"docker.io/library/multi:1"}}"#)
        )
    );
    let tar = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", top.as_bytes()),
        (&blob_name(&index), &index),
        (&blob_name(&hm), &hm),
        (&blob_name(&hc), &hc),
        (&blob_name(&hl), &hl),
        (&blob_name(&om), &om),
        (&blob_name(&oc), &oc),
        (&blob_name(&ol), &ol),
    ]);
    import(&s, "a", &tar, false).unwrap();
    let target = model::descriptor(
        media::OCI_INDEX,
        Digest::sha256(&index).as_str(),
        index.len() as i64,
    )
    .unwrap();
    let image = [("docker.io/library/multi:1", target)];
    let names = tar_names(&export_of(&s, "a", &image, &ExportOptions::default()));
    for b in [&index, &hm, &hc, &hl] {
        assert!(names.contains(&blob_name(b)), "{names:?}");
    }
    for b in [&om, &oc, &ol] {
        assert!(!names.contains(&blob_name(b)), "{names:?}");
    }
    let all = ExportOptions {
        all_platforms: true,
        ..Default::default()
    };
    let names = tar_names(&export_of(&s, "a", &image, &all));
    for b in [&om, &oc, &ol] {
        assert!(names.contains(&blob_name(b)), "{names:?}");
    }
    // Another platform only, without manifest.json.
    let other = ExportOptions {
        platforms: vec![platform::new("linux", other_arch(), "")],
        skip_compatibility_manifest: true,
        ..Default::default()
    };
    let names = tar_names(&export_of(&s, "a", &image, &other));
    assert!(names.contains(&blob_name(&ol)) && !names.contains(&blob_name(&hl)));
    assert!(!names.contains(&"manifest.json".to_owned()));
}
