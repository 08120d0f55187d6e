//! OCI and Docker image documents (descriptors, indexes, manifests, configs), the media types
//! containerd knows, the garbage-collection labels it puts on parents, digests and chain IDs.
//!
//! JSON written here is byte-for-byte what Go's `encoding/json` writes for the same document
//! (field order, omitted empties, HTML escaping), so a manifest bctr builds has the digest ctr's
//! would have.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest as _, Sha256};

pub mod media {
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_LAYER_FOREIGN: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER_FOREIGN_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const CONTAINERD_CHECKPOINT: &str =
        "application/vnd.containerd.container.criu.checkpoint.criu.tar";
    pub const CONTAINERD_CHECKPOINT_CONFIG: &str =
        "application/vnd.containerd.container.checkpoint.config.v1+proto";
}

/// Annotation naming an image in full (`docker.io/library/alpine:3`), containerd's.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation naming a reference within an OCI layout (usually just the tag), the OCI spec's.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Label on a compressed layer naming its uncompressed digest.
pub const LABEL_UNCOMPRESSED: &str = "containerd.io/uncompressed";
/// Label on a lease: when it expires (RFC 3339).
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

pub fn is_manifest_type(mt: &str) -> bool {
    mt == media::DOCKER_MANIFEST || mt == media::OCI_MANIFEST
}

pub fn is_index_type(mt: &str) -> bool {
    mt == media::OCI_INDEX || mt == media::DOCKER_MANIFEST_LIST
}

pub fn is_config_type(mt: &str) -> bool {
    mt == media::DOCKER_CONFIG || mt == media::OCI_CONFIG
}

pub fn is_known_config(mt: &str) -> bool {
    is_config_type(mt)
        || mt == media::CONTAINERD_CHECKPOINT
        || mt == media::CONTAINERD_CHECKPOINT_CONFIG
}

pub fn is_layer_type(mt: &str) -> bool {
    if mt.starts_with("application/vnd.oci.image.layer.") {
        return true;
    }
    let base = mt.split('+').next().unwrap_or(mt);
    matches!(
        base,
        media::DOCKER_LAYER
            | media::DOCKER_LAYER_GZIP
            | media::DOCKER_LAYER_FOREIGN
            | media::DOCKER_LAYER_FOREIGN_GZIP
    )
}

pub fn is_non_distributable(mt: &str) -> bool {
    mt.starts_with("application/vnd.oci.image.layer.nondistributable.")
        || mt.starts_with("application/vnd.docker.image.rootfs.foreign.")
}

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An OCI platform, as descriptors and `ctr` carry it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    #[serde(
        rename = "os.version",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(
        rename = "os.features",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub os_features: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub variant: String,
}

/// An OCI content descriptor.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    #[serde(
        rename = "mediaType",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    #[serde(default, deserialize_with = "null_default")]
    pub digest: String,
    #[serde(default, deserialize_with = "null_default")]
    pub size: i64,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub urls: Vec<String>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
    /// Embedded content, base64 as in the JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(
        rename = "artifactType",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub artifact_type: String,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: &str, size: i64) -> Self {
        Descriptor {
            media_type: media_type.to_owned(),
            digest: digest.to_owned(),
            size,
            ..Descriptor::default()
        }
    }

    pub fn to_proto(&self) -> berth_api::types::Descriptor {
        berth_api::types::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.clone(),
            size: self.size,
            annotations: self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }

    pub fn from_proto(d: &berth_api::types::Descriptor) -> Self {
        Descriptor {
            media_type: d.media_type.clone(),
            digest: d.digest.clone(),
            size: d.size,
            annotations: d
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..Descriptor::default()
        }
    }
}

/// An OCI image index (or Docker manifest list, which reads the same).
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
pub struct Index {
    #[serde(rename = "schemaVersion", default)]
    pub schema_version: i64,
    #[serde(
        rename = "mediaType",
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// `None` is Go's nil slice, written as `null`.
    #[serde(default)]
    pub manifests: Option<Vec<Descriptor>>,
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub annotations: BTreeMap<String, String>,
}

/// An OCI image manifest (or Docker schema 2 manifest).
#[derive(Deserialize, Clone, Debug, Default)]
pub struct Manifest {
    #[serde(default)]
    pub config: Descriptor,
    #[serde(default, deserialize_with = "null_default")]
    pub layers: Vec<Descriptor>,
}

/// The Docker schema 2 manifest containerd writes when importing a docker archive.
#[derive(Serialize)]
pub struct DockerManifest<'a> {
    #[serde(rename = "schemaVersion")]
    pub schema_version: i64,
    #[serde(rename = "mediaType")]
    pub media_type: &'a str,
    pub config: &'a Descriptor,
    pub layers: &'a [Descriptor],
}

/// The parts of an image config that matter to a client.
#[derive(Deserialize, Clone, Debug, Default)]
pub struct ImageConfig {
    #[serde(default, deserialize_with = "null_default")]
    pub architecture: String,
    #[serde(default, deserialize_with = "null_default")]
    pub os: String,
    #[serde(default)]
    pub rootfs: RootFs,
}

#[derive(Deserialize, Clone, Debug, Default)]
pub struct RootFs {
    #[serde(default, deserialize_with = "null_default")]
    pub diff_ids: Vec<String>,
}

impl ImageConfig {
    /// The platform as containerd reads it from a config: OS and architecture, normalised.
    pub fn platform(&self) -> Platform {
        crate::platforms::normalize(&Platform {
            os: self.os.clone(),
            architecture: self.architecture.clone(),
            ..Platform::default()
        })
    }
}

/// Serialises like Go's `json.Marshal`: compact, and `<`, `>`, `&`, U+2028, U+2029 escaped.
pub fn go_json<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let s = serde_json::to_string(v).map_err(|e| e.to_string())?;
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    Ok(out.into_bytes())
}

/// Checks that a manifest is not an index and the other way round, and refuses schema 1, as
/// containerd does before walking a document.
pub fn validate_media_type(bytes: &[u8], mt: &str) -> Result<(), String> {
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))?;
    let has = |k: &str| doc.get(k).is_some_and(|v| !v.is_null());
    let media = doc.get("mediaType").and_then(|v| v.as_str()).unwrap_or("");
    if doc
        .get("fsLayers")
        .and_then(|v| v.as_array())
        .is_some_and(|a| !a.is_empty())
    {
        return Err("media-type: schema 1 not supported".into());
    }
    if is_manifest_type(mt) && (has("manifests") || is_index_type(media)) {
        return Err(format!(
            "media-type: expected manifest but found index ({mt})"
        ));
    }
    if is_index_type(mt) && (has("config") || has("layers") || is_manifest_type(media)) {
        return Err(format!(
            "media-type: expected index but found manifest ({mt})"
        ));
    }
    Ok(())
}

/// The immediate children of a document: config and layers of a manifest, manifests of an
/// index, nothing for anything else. `bytes` is the document's content.
pub fn children(desc: &Descriptor, bytes: &[u8]) -> Result<Vec<Descriptor>, String> {
    if is_manifest_type(&desc.media_type) {
        validate_media_type(bytes, &desc.media_type)
            .map_err(|e| format!("children: invalid desc {}: {e}", desc.digest))?;
        let m: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("manifest {}: {e}", desc.digest))?;
        let mut out = vec![m.config];
        out.extend(m.layers);
        return Ok(out);
    }
    if is_index_type(&desc.media_type) {
        validate_media_type(bytes, &desc.media_type)
            .map_err(|e| format!("children: invalid desc {}: {e}", desc.digest))?;
        let i: Index =
            serde_json::from_slice(bytes).map_err(|e| format!("index {}: {e}", desc.digest))?;
        return Ok(i.manifests.unwrap_or_default());
    }
    Ok(Vec::new())
}

/// Whether `children` needs the document's content (manifests and indexes do).
pub fn has_children(desc: &Descriptor) -> bool {
    is_manifest_type(&desc.media_type) || is_index_type(&desc.media_type)
}

/// containerd's `ChildGCLabels`: the label key (prefix) a parent uses to reference this child.
pub fn child_gc_label(desc: &Descriptor) -> &'static str {
    let mt = desc.media_type.as_str();
    if is_known_config(mt) {
        "containerd.io/gc.ref.content.config"
    } else if is_manifest_type(mt) {
        "containerd.io/gc.ref.content.m."
    } else if is_layer_type(mt) {
        "containerd.io/gc.ref.content.l."
    } else {
        "containerd.io/gc.ref.content."
    }
}

/// containerd's `SetChildrenLabels`: the labels a parent gets for its children, in child order.
/// A key ending in `.` is numbered from 0; any other key is numbered from the second use on.
pub fn children_gc_labels(children: &[Descriptor]) -> Vec<(String, String)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    children
        .iter()
        .map(|ch| {
            let key = child_gc_label(ch);
            let idx = seen.entry(key).or_insert(0);
            let label = if *idx > 0 || key.ends_with('.') {
                format!("{key}{idx}")
            } else {
                key.to_owned()
            };
            *idx += 1;
            (label, ch.digest.clone())
        })
        .collect()
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// go-digest's `Parse`/`Validate`, with its messages.
pub fn validate_digest(s: &str) -> Result<(), String> {
    let Some((alg, enc)) = s.split_once(':') else {
        return Err("invalid checksum digest format".into());
    };
    if alg.is_empty() || enc.is_empty() {
        return Err("invalid checksum digest format".into());
    }
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            if !alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c))
            {
                return Err("invalid checksum digest format".into());
            }
            return Err("unsupported digest algorithm".into());
        }
    };
    if enc.len() != len
        || !enc
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err("invalid checksum digest length".into());
    }
    Ok(())
}

/// The algorithm and encoded parts of a valid digest.
pub fn split_digest(s: &str) -> Result<(&str, &str), String> {
    validate_digest(s)?;
    s.split_once(':')
        .ok_or_else(|| "invalid checksum digest format".to_owned())
}

/// The OCI identity `ChainID` of a list of diff IDs (empty for none).
pub fn chain_id(diff_ids: &[String]) -> String {
    let mut iter = diff_ids.iter();
    let Some(first) = iter.next() else {
        return String::new();
    };
    let mut chain = first.clone();
    for d in iter {
        chain = sha256_digest(format!("{chain} {d}").as_bytes());
    }
    chain
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gc_labels_like_containerd() {
        let m = Descriptor::new(media::OCI_MANIFEST, "sha256:m0", 1);
        let m1 = Descriptor::new(media::DOCKER_MANIFEST, "sha256:m1", 1);
        let idx = Descriptor::new(media::OCI_INDEX, "sha256:i", 1);
        let labels = children_gc_labels(&[m, m1, idx]);
        assert_eq!(
            labels,
            vec![
                (
                    "containerd.io/gc.ref.content.m.0".into(),
                    "sha256:m0".into()
                ),
                (
                    "containerd.io/gc.ref.content.m.1".into(),
                    "sha256:m1".into()
                ),
                ("containerd.io/gc.ref.content.0".into(), "sha256:i".into()),
            ]
        );
        let cfg = Descriptor::new(media::OCI_CONFIG, "sha256:c", 1);
        let l0 = Descriptor::new("application/vnd.oci.image.layer.v1.tar+gzip", "sha256:a", 1);
        let l1 = Descriptor::new(media::DOCKER_LAYER, "sha256:b", 1);
        let l2 = Descriptor::new(media::DOCKER_LAYER_GZIP, "sha256:a", 1);
        assert_eq!(
            children_gc_labels(&[cfg.clone(), l0, l1, l2, cfg]),
            vec![
                (
                    "containerd.io/gc.ref.content.config".into(),
                    "sha256:c".into()
                ),
                ("containerd.io/gc.ref.content.l.0".into(), "sha256:a".into()),
                ("containerd.io/gc.ref.content.l.1".into(), "sha256:b".into()),
                ("containerd.io/gc.ref.content.l.2".into(), "sha256:a".into()),
                (
                    "containerd.io/gc.ref.content.config1".into(),
                    "sha256:c".into()
                ),
            ]
        );
    }

    #[test]
    fn json_like_go() {
        let mut d = Descriptor::new(media::OCI_MANIFEST, "sha256:x", 3);
        d.annotations.insert("b".into(), "<&>".into());
        d.annotations.insert("a".into(), "1".into());
        d.platform = Some(Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..Platform::default()
        });
        let idx = Index {
            schema_version: 2,
            manifests: Some(vec![d]),
            ..Index::default()
        };
        assert_eq!(
            String::from_utf8(go_json(&idx).unwrap()).unwrap(),
            r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:x","size":3,"annotations":{"a":"1","b":"\u003c\u0026\u003e"},"platform":{"architecture":"amd64","os":"linux"}}]}"#
        );
        let empty = Index {
            schema_version: 2,
            ..Index::default()
        };
        assert_eq!(
            go_json(&empty).unwrap(),
            br#"{"schemaVersion":2,"manifests":null}"#
        );
    }

    #[test]
    fn children_of_documents() {
        let man = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:c","size":2},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:l","size":3}]}"#;
        let d = Descriptor::new(media::OCI_MANIFEST, "sha256:m", man.len() as i64);
        let ch = children(&d, man).unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].digest, "sha256:c");
        assert_eq!(ch[1].digest, "sha256:l");
        // A manifest read as an index is refused, as containerd refuses it.
        let as_index = Descriptor::new(media::OCI_INDEX, "sha256:m", 1);
        assert!(children(&as_index, man)
            .unwrap_err()
            .contains("expected index but found manifest"));
        let layer = Descriptor::new(media::DOCKER_LAYER, "sha256:l", 3);
        assert!(children(&layer, b"not json").unwrap().is_empty());
        let idx = br#"{"schemaVersion":2,"manifests":null}"#;
        let d = Descriptor::new(media::OCI_INDEX, "sha256:i", 1);
        assert!(children(&d, idx).unwrap().is_empty());
    }

    #[test]
    fn digests() {
        assert!(validate_digest(&sha256_digest(b"")).is_ok());
        assert_eq!(
            validate_digest("bad").unwrap_err(),
            "invalid checksum digest format"
        );
        assert_eq!(
            validate_digest("sha256:abc").unwrap_err(),
            "invalid checksum digest length"
        );
        assert_eq!(
            validate_digest("md5:abc").unwrap_err(),
            "unsupported digest algorithm"
        );
    }

    #[test]
    fn chain_ids() {
        let a = sha256_digest(b"a");
        let b = sha256_digest(b"b");
        assert_eq!(chain_id(&[]), "");
        assert_eq!(chain_id(std::slice::from_ref(&a)), a);
        assert_eq!(
            chain_id(&[a.clone(), b.clone()]),
            sha256_digest(format!("{a} {b}").as_bytes())
        );
    }

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
}
