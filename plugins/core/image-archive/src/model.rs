//! The pure half of image archives: how containerd names what it finds in an OCI layout or a
//! `docker save` tar, how it turns a docker archive's `manifest.json` into a Docker schema 2
//! manifest plus an OCI index, and the records `ctr images export` writes. No I/O: the importer
//! and exporter of this crate, and bctr's client-side import, build on it.

use std::collections::{BTreeMap, HashMap};

use berth_oci::{
    go_json, media, Descriptor, Digest, DigestError, ImageIndexBuilder, ImageManifestBuilder,
    MediaType, Platform, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
};
use serde::{Deserialize, Serialize};

use crate::reference::{self, NameError};

/// The `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The only layout version containerd reads and writes.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";
/// The OCI layout's index.
pub const INDEX_FILE: &str = "index.json";
/// Docker's `manifest.json`.
pub const DOCKER_MANIFEST_FILE: &str = "manifest.json";
/// containerd reads at most this much of `oci-layout` and `manifest.json`.
pub const JSON_LIMIT: u64 = 20 << 20;

/// What goes wrong building an archive's documents.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("digest {digest:?}: {source}")]
    Digest {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("invalid size {size} of {digest}")]
    Size { digest: String, size: i64 },
    #[error("building {what}: {source}")]
    Build {
        what: &'static str,
        #[source]
        source: berth_oci::oci_spec::OciSpecError,
    },
    #[error("encoding {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("no target for symlink layer from {name:?} to {target:?}")]
    SymlinkTarget { name: String, target: String },
}

#[derive(Deserialize, Serialize, Default)]
pub struct OciLayout {
    #[serde(rename = "imageLayoutVersion", default)]
    pub version: String,
}

/// One entry of a docker archive's `manifest.json`.
#[derive(Deserialize, Serialize, Debug, Clone, Default)]
pub struct DockerArchiveManifest {
    #[serde(rename = "Config", alias = "config", default)]
    pub config: String,
    /// `None` is written as `null`, as Go writes a nil slice.
    #[serde(rename = "RepoTags", alias = "repoTags", alias = "repotags", default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", alias = "layers", default)]
    pub layers: Option<Vec<String>>,
}

/// What the importer learned about one file of the archive after storing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlobInfo {
    pub digest: String,
    pub size: i64,
    /// Up to the first 10 bytes, enough to tell the compression.
    pub head: Vec<u8>,
}

/// How many leading bytes [`BlobInfo::head`] keeps.
pub const HEAD_LEN: usize = 10;

/// Go's `path.Clean`.
pub fn clean_path(p: &str) -> String {
    if p.is_empty() {
        return ".".to_owned();
    }
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if out.last().is_some_and(|l| *l != "..") {
                    out.pop();
                } else if !rooted {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    let joined = out.join("/");
    match (rooted, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".to_owned(),
        (false, false) => joined,
    }
}

/// Whether a cleaned archive name points outside the archive (`../x`, `/x`). Such names are
/// only ever keys here, never paths, but no real archive has them: they are refused so a
/// hostile archive is said to be one.
pub fn escapes(cleaned: &str) -> bool {
    cleaned == ".." || cleaned.starts_with("../") || cleaned.starts_with('/')
}

/// Where a symlink in the archive points, as containerd resolves it:
/// `path.Join(path.Dir(name), linkname)`.
pub fn symlink_target(name: &str, linkname: &str) -> String {
    let dir = match name.rfind('/') {
        Some(i) => &name[..i],
        None => ".",
    };
    clean_path(&format!("{dir}/{linkname}"))
}

/// The digest a file named `blobs/<alg>/<encoded>` must have, if its name is one.
pub fn blob_path_digest(name: &str) -> Option<String> {
    let rest = name.strip_prefix("blobs/")?;
    let (alg, enc) = rest.split_once('/')?;
    let d = format!("{alg}:{enc}");
    Digest::validate(&d).ok().map(|_| d)
}

/// `blobs/<alg>/<encoded>` of a digest.
pub fn blob_path(digest: &str) -> Result<String, ModelError> {
    let d = parse_digest(digest)?;
    Ok(format!("blobs/{}/{}", d.algorithm(), d.encoded()))
}

fn parse_digest(digest: &str) -> Result<Digest, ModelError> {
    Digest::parse(digest).map_err(|source| ModelError::Digest {
        digest: digest.to_owned(),
        source,
    })
}

/// A descriptor of `media_type`, `digest` (validated) and `size` (not negative).
pub fn descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor, ModelError> {
    let d = parse_digest(digest)?;
    let size = u64::try_from(size).map_err(|_| ModelError::Size {
        digest: digest.to_owned(),
        size,
    })?;
    Ok(Descriptor::new(MediaType::from(media_type), size, d))
}

/// A descriptor's annotations in key order (empty for none).
pub fn annotations(d: &Descriptor) -> BTreeMap<String, String> {
    d.annotations()
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Sets (or, when empty, removes) a descriptor's annotations.
pub fn set_annotations(d: &mut Descriptor, annotations: BTreeMap<String, String>) {
    d.set_annotations(
        (!annotations.is_empty()).then(|| annotations.into_iter().collect::<HashMap<_, _>>()),
    );
}

/// What the first bytes of a blob say about its compression.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Compression {
    Uncompressed,
    Gzip,
    Zstd,
}

/// containerd's `DetectCompression` over a blob's first bytes.
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.len() >= 4 && {
        // zstd frame magic, or a skippable frame 0x184D2A5?
        let m = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        m == 0xFD2F_B528 || (m & 0xFFFF_FFF0) == 0x184D_2A50
    } {
        Compression::Zstd
    } else {
        Compression::Uncompressed
    }
}

/// The media type containerd gives a docker-archive layer from its first bytes: uncompressed
/// tars stay `…diff.tar` (unless compression is forced), anything compressed is
/// `…diff.tar.gzip`.
pub fn docker_layer_media_type(head: &[u8]) -> &'static str {
    match detect_compression(head) {
        Compression::Uncompressed => media::DOCKER_LAYER,
        _ => media::DOCKER_LAYER_GZIP,
    }
}

/// The Docker schema 2 manifest containerd writes for one docker-archive image.
pub fn docker_manifest_json(
    config: &Descriptor,
    layers: &[Descriptor],
) -> Result<Vec<u8>, ModelError> {
    let m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(media::DOCKER_MANIFEST)
        .config(config.clone())
        .layers(layers.to_vec())
        .build()
        .map_err(|source| ModelError::Build {
            what: "docker manifest",
            source,
        })?;
    go_json(&m).map_err(|source| ModelError::Json {
        what: "docker manifest",
        source,
    })
}

/// The index entries for one docker-archive image: one unnamed entry without RepoTags,
/// otherwise one per tag, named with the normalised reference and its OCI ref name.
pub fn docker_index_entries(
    manifest: &Descriptor,
    platform: Option<Platform>,
    repo_tags: &[String],
) -> Result<Vec<Descriptor>, ModelError> {
    let mut base = manifest.clone();
    base.set_platform(platform);
    if repo_tags.is_empty() {
        return Ok(vec![base]);
    }
    repo_tags
        .iter()
        .map(|tag| {
            let normalized = reference::normalize_docker_ref(tag)?;
            let mut d = base.clone();
            set_annotations(
                &mut d,
                BTreeMap::from([
                    (ANNOTATION_IMAGE_NAME.to_owned(), normalized.clone()),
                    (
                        ANNOTATION_REF_NAME.to_owned(),
                        reference::oci_reference_name(&normalized),
                    ),
                ]),
            );
            Ok(d)
        })
        .collect()
}

/// The OCI index containerd writes over the manifests of a docker archive (and, as
/// `index.json`, over the images of an export).
pub fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>, ModelError> {
    let idx = ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(manifests)
        .build()
        .map_err(|source| ModelError::Build {
            what: "index",
            source,
        })?;
    go_json(&idx).map_err(|source| ModelError::Json {
        what: "index",
        source,
    })
}

/// The `oci-layout` file an export writes.
pub fn oci_layout_json() -> Result<Vec<u8>, ModelError> {
    go_json(&OciLayout {
        version: OCI_LAYOUT_VERSION.to_owned(),
    })
    .map_err(|source| ModelError::Json {
        what: "oci-layout",
        source,
    })
}

/// Applies symlinked files (`docker save` links duplicate layers) to the blob table.
pub fn resolve_symlinks(
    blobs: &mut HashMap<String, BlobInfo>,
    symlinks: &BTreeMap<String, String>,
) -> Result<(), ModelError> {
    for (name, target) in symlinks {
        let info = blobs
            .get(target)
            .cloned()
            .ok_or_else(|| ModelError::SymlinkTarget {
                name: name.clone(),
                target: target.clone(),
            })?;
        blobs.insert(name.clone(), info);
    }
    Ok(())
}

/// The annotations `ctr images export` puts on an exported image's descriptor.
pub fn add_name_annotations(
    name: &str,
    base: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut a = base.clone();
    a.insert(ANNOTATION_IMAGE_NAME.to_owned(), name.to_owned());
    a.insert(
        ANNOTATION_REF_NAME.to_owned(),
        reference::oci_reference_name(name),
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression() {
        assert_eq!(
            detect_compression(&[0x1f, 0x8b, 0x08, 0]),
            Compression::Gzip
        );
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(detect_compression(b"hello.txt"), Compression::Uncompressed);
        assert_eq!(detect_compression(b""), Compression::Uncompressed);
    }

    #[test]
    fn clean_like_go() {
        assert_eq!(clean_path("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean_path("a//b/../c/"), "a/c");
        assert_eq!(clean_path("../x"), "../x");
        assert_eq!(clean_path("/../x"), "/x");
        assert_eq!(clean_path(""), ".");
        assert_eq!(
            symlink_target("abc/layer.tar", "../def/layer.tar"),
            "def/layer.tar"
        );
        assert_eq!(symlink_target("layer.tar", "x.tar"), "x.tar");
    }

    #[test]
    fn hostile_names_escape() {
        for n in ["../x", "..", "/etc/passwd", "a/../../b"] {
            assert!(escapes(&clean_path(n)), "{n}");
        }
        for n in ["index.json", "./blobs/sha256/ab", "a/../b", "..."] {
            assert!(!escapes(&clean_path(n)), "{n}");
        }
    }

    #[test]
    fn blob_paths() {
        let hexd = "a".repeat(64);
        assert_eq!(
            blob_path_digest(&format!("blobs/sha256/{hexd}")),
            Some(format!("sha256:{hexd}"))
        );
        assert_eq!(blob_path_digest("blobs/sha256/short"), None);
        assert_eq!(blob_path_digest("index.json"), None);
        assert_eq!(
            blob_path(&format!("sha256:{hexd}")).unwrap(),
            format!("blobs/sha256/{hexd}")
        );
        assert!(blob_path("nope").is_err());
    }

    #[test]
    fn docker_conversion_matches_containerd() {
        let config = descriptor(
            media::DOCKER_CONFIG,
            "sha256:351e70ffbe347935fd59fbb53ff4531e7c712bfc7b5b9ddfb1c22fd215df1765",
            190,
        )
        .unwrap();
        let layer = descriptor(
            media::DOCKER_LAYER,
            "sha256:a1ab6ea3ff804711c3e0d1ea562cd9157e627ebc45bc42a65ef52fe227c80fd0",
            10240,
        )
        .unwrap();
        let m = docker_manifest_json(&config, &[layer]).unwrap();
        // The same manifest containerd 1.6 wrote for the same archive.
        assert_eq!(m.len(), 420);
        assert_eq!(
            Digest::sha256(&m).as_str(),
            "sha256:d1f3375d9566c8d1206d7ffac7e111fc3b4bc5c0d5346bc8d7a03da145e69d0c"
        );
        let md = descriptor(media::DOCKER_MANIFEST, Digest::sha256(&m).as_str(), 420).unwrap();
        let platform = berth_oci::platform::new("linux", "amd64", "");
        let entries = docker_index_entries(
            &md,
            Some(platform),
            &[
                "tinydocker:latest".into(),
                "example.com/x/tinydocker:v1".into(),
            ],
        )
        .unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            annotations(&entries[0])[ANNOTATION_IMAGE_NAME],
            "docker.io/library/tinydocker:latest"
        );
        assert_eq!(annotations(&entries[0])[ANNOTATION_REF_NAME], "latest");
        assert_eq!(annotations(&entries[1])[ANNOTATION_REF_NAME], "v1");
        let idx = String::from_utf8(index_json(entries).unwrap()).unwrap();
        assert!(idx.starts_with(r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json""#));
        assert!(idx.contains(r#""platform":{"architecture":"amd64","os":"linux"}"#));
        assert!(docker_index_entries(&md, None, &["Upper:1".into()]).is_err());
    }

    #[test]
    fn layer_media_types() {
        assert_eq!(
            docker_layer_media_type(b"file.txt\0\0"),
            media::DOCKER_LAYER
        );
        assert_eq!(
            docker_layer_media_type(&[0x1f, 0x8b, 8]),
            media::DOCKER_LAYER_GZIP
        );
        assert_eq!(docker_layer_media_type(b""), media::DOCKER_LAYER);
        assert_eq!(
            detect_compression(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
    }

    #[test]
    fn docker_archive_manifest_parses_and_symlinks_resolve() {
        let j =
            br#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l1/layer.tar","l2/layer.tar"]}]"#;
        let m: Vec<DockerArchiveManifest> = serde_json::from_slice(j).unwrap();
        assert_eq!(m[0].config, "c.json");
        assert_eq!(m[0].layers.as_ref().unwrap().len(), 2);
        let mut blobs = HashMap::new();
        blobs.insert(
            "l1/layer.tar".to_owned(),
            BlobInfo {
                digest: "sha256:1".into(),
                size: 1,
                head: vec![],
            },
        );
        let mut links = BTreeMap::new();
        links.insert("l2/layer.tar".to_owned(), "l1/layer.tar".to_owned());
        resolve_symlinks(&mut blobs, &links).unwrap();
        assert_eq!(blobs["l2/layer.tar"].digest, "sha256:1");
        links.insert("l3/layer.tar".to_owned(), "missing".to_owned());
        assert!(resolve_symlinks(&mut blobs, &links)
            .unwrap_err()
            .to_string()
            .contains("no target for symlink"));
    }

    #[test]
    fn layout_file_is_containerds() {
        assert_eq!(
            oci_layout_json().unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
    }
}
