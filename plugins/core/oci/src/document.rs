//! Reading image documents as containerd reads them, and what a document refers to.
//!
//! Manifests, indexes and configs are read into oci-spec's types (Docker schema 2 documents
//! read the same way). Before that, as containerd's `validateMediaType`, a manifest that is
//! really an index (or the other way round) and Docker schema 1 are refused; a `null` list, which
//! Go writes for an empty slice, reads as empty.

use std::collections::BTreeMap;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, Platform};
use serde_json::{Map, Value};

use crate::media::{is_index_type, is_known_config, is_layer_type, is_manifest_type};
use crate::{platform, Digest, DigestError};

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("invalid document: {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a JSON object")]
    NotAnObject,
    #[error("media-type: schema 1 not supported")]
    Schema1,
    #[error("media-type: expected manifest but found index ({0})")]
    ExpectedManifest(String),
    #[error("media-type: expected index but found manifest ({0})")]
    ExpectedIndex(String),
    #[error("{media_type:?} is not a manifest or an index")]
    NotADocument { media_type: String },
    #[error("diff_id {diff_id:?}: {source}")]
    DiffId {
        diff_id: String,
        #[source]
        source: DigestError,
    },
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, DocumentError> {
    match serde_json::from_slice(bytes).map_err(DocumentError::Json)? {
        Value::Object(m) => Ok(m),
        _ => Err(DocumentError::NotAnObject),
    }
}

/// containerd's `validateMediaType` on a parsed document.
fn check_media_type(doc: &Map<String, Value>, mt: &str) -> Result<(), DocumentError> {
    let has = |k: &str| doc.get(k).is_some_and(|v| !v.is_null());
    let media = doc.get("mediaType").and_then(Value::as_str).unwrap_or("");
    if doc
        .get("fsLayers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        return Err(DocumentError::Schema1);
    }
    if is_manifest_type(mt) && (has("manifests") || is_index_type(media)) {
        return Err(DocumentError::ExpectedManifest(mt.to_owned()));
    }
    if is_index_type(mt) && (has("config") || has("layers") || is_manifest_type(media)) {
        return Err(DocumentError::ExpectedIndex(mt.to_owned()));
    }
    Ok(())
}

/// Checks that a document of media type `mt` is not an index where a manifest should be (nor
/// the other way round), and is not Docker schema 1.
pub fn validate_media_type(bytes: &[u8], mt: &str) -> Result<(), DocumentError> {
    check_media_type(&object(bytes)?, mt)
}

/// Go's nil slice (`null`) for a list field reads as an empty list.
fn null_as_empty(doc: &mut Map<String, Value>, key: &str) {
    if doc.get(key).is_some_and(Value::is_null) {
        doc.insert(key.to_owned(), Value::Array(Vec::new()));
    }
}

/// Reads a manifest whose descriptor says `mt` (OCI or Docker schema 2).
pub fn parse_manifest(bytes: &[u8], mt: &str) -> Result<ImageManifest, DocumentError> {
    let mut doc = object(bytes)?;
    check_media_type(&doc, mt)?;
    null_as_empty(&mut doc, "layers");
    serde_json::from_value(Value::Object(doc)).map_err(DocumentError::Json)
}

/// Reads an index (or Docker manifest list) whose descriptor says `mt`.
pub fn parse_index(bytes: &[u8], mt: &str) -> Result<ImageIndex, DocumentError> {
    let mut doc = object(bytes)?;
    check_media_type(&doc, mt)?;
    null_as_empty(&mut doc, "manifests");
    serde_json::from_value(Value::Object(doc)).map_err(DocumentError::Json)
}

/// Reads an image config (OCI or Docker).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, DocumentError> {
    let mut doc = object(bytes)?;
    if let Some(Value::Object(rootfs)) = doc.get_mut("rootfs") {
        null_as_empty(rootfs, "diff_ids");
    }
    serde_json::from_value(Value::Object(doc)).map_err(DocumentError::Json)
}

/// The layers' uncompressed digests a config lists, bottom first, each validated.
pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, DocumentError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| {
            Digest::parse(d).map_err(|source| DocumentError::DiffId {
                diff_id: d.clone(),
                source,
            })
        })
        .collect()
}

/// The platform a config describes, normalised (containerd's `ConfigPlatforms`).
pub fn config_platform(config: &ImageConfiguration) -> Platform {
    platform::normalize(&platform::new(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref().unwrap_or(""),
    ))
}

/// Whether [`children`] needs the document's content (manifests and indexes have children).
pub fn has_children(media_type: &str) -> bool {
    is_manifest_type(media_type) || is_index_type(media_type)
}

/// The immediate children of a document: config and layers of a manifest, manifests of an
/// index, nothing for anything else. `bytes` is the document's content.
pub fn children(desc: &Descriptor, bytes: &[u8]) -> Result<Vec<Descriptor>, DocumentError> {
    let mt = desc.media_type().to_string();
    if is_manifest_type(&mt) {
        let m = parse_manifest(bytes, &mt)?;
        let mut out = vec![m.config().clone()];
        out.extend(m.layers().iter().cloned());
        return Ok(out);
    }
    if is_index_type(&mt) {
        return Ok(parse_index(bytes, &mt)?.manifests().clone());
    }
    Ok(Vec::new())
}

/// containerd's `ChildGCLabels`: the label key (prefix) a parent uses to reference a child of
/// this media type.
pub fn child_gc_label(media_type: &str) -> &'static str {
    if is_known_config(media_type) {
        "containerd.io/gc.ref.content.config"
    } else if is_manifest_type(media_type) {
        "containerd.io/gc.ref.content.m."
    } else if is_layer_type(media_type) {
        "containerd.io/gc.ref.content.l."
    } else {
        "containerd.io/gc.ref.content."
    }
}

/// containerd's `SetChildrenLabels`: the labels a parent gets for its children, in child order.
/// A key ending in `.` is numbered from 0; any other key is numbered from its second use on.
pub fn children_gc_labels(children: &[Descriptor]) -> Vec<(String, String)> {
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    children
        .iter()
        .map(|ch| {
            let key = child_gc_label(ch.media_type().as_ref());
            let idx = seen.entry(key).or_insert(0);
            let label = if *idx > 0 || key.ends_with('.') {
                format!("{key}{idx}")
            } else {
                key.to_owned()
            };
            *idx += 1;
            (label, ch.digest().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{media, MediaType};

    fn desc(mt: &str, name: &[u8]) -> Descriptor {
        Descriptor::new(MediaType::from(mt), 1, Digest::sha256(name))
    }

    #[test]
    fn gc_labels_like_containerd() {
        let labels = children_gc_labels(&[
            desc(media::OCI_MANIFEST, b"m0"),
            desc(media::DOCKER_MANIFEST, b"m1"),
            desc(media::OCI_INDEX, b"i"),
        ]);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "containerd.io/gc.ref.content.m.0",
                "containerd.io/gc.ref.content.m.1",
                "containerd.io/gc.ref.content.0"
            ]
        );
        assert_eq!(labels[0].1, Digest::sha256(b"m0").to_string());
        let cfg = desc(media::OCI_CONFIG, b"c");
        let labels = children_gc_labels(&[
            cfg.clone(),
            desc(media::OCI_LAYER_GZIP, b"a"),
            desc(media::DOCKER_LAYER, b"b"),
            desc(media::DOCKER_LAYER_GZIP, b"a"),
            cfg,
        ]);
        let keys: Vec<&str> = labels.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "containerd.io/gc.ref.content.config",
                "containerd.io/gc.ref.content.l.0",
                "containerd.io/gc.ref.content.l.1",
                "containerd.io/gc.ref.content.l.2",
                "containerd.io/gc.ref.content.config1",
            ]
        );
    }

    fn manifest_json() -> String {
        let c = Digest::sha256(b"c");
        let l = Digest::sha256(b"l");
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{c}","size":2}},"layers":[{{"mediaType":"{}","digest":"{l}","size":3}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG,
            media::DOCKER_LAYER_GZIP
        )
    }

    #[test]
    fn children_of_documents() {
        let man = manifest_json();
        let d = desc(media::DOCKER_MANIFEST, man.as_bytes());
        let ch = children(&d, man.as_bytes()).unwrap();
        assert_eq!(ch.len(), 2);
        assert_eq!(ch[0].digest().as_ref(), Digest::sha256(b"c").as_str());
        assert_eq!(ch[1].media_type().as_ref(), media::DOCKER_LAYER_GZIP);
        // A manifest read as an index is refused, as containerd refuses it.
        let as_index = desc(media::OCI_INDEX, b"m");
        assert!(matches!(
            children(&as_index, man.as_bytes()),
            Err(DocumentError::ExpectedIndex(_))
        ));
        let layer = desc(media::DOCKER_LAYER, b"l");
        assert!(children(&layer, b"not json").unwrap().is_empty());
        let idx = br#"{"schemaVersion":2,"manifests":null}"#;
        assert!(children(&desc(media::OCI_INDEX, b"i"), idx)
            .unwrap()
            .is_empty());
        assert!(has_children(media::DOCKER_MANIFEST_LIST));
        assert!(!has_children(media::OCI_CONFIG));
    }

    #[test]
    fn refuses_what_containerd_refuses() {
        let index = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert!(matches!(
            parse_manifest(index.as_bytes(), media::OCI_MANIFEST),
            Err(DocumentError::ExpectedManifest(_))
        ));
        let schema1 = r#"{"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]}"#;
        assert!(matches!(
            parse_manifest(schema1.as_bytes(), media::DOCKER_MANIFEST),
            Err(DocumentError::Schema1)
        ));
        assert!(matches!(
            parse_manifest(b"[1]", media::OCI_MANIFEST),
            Err(DocumentError::NotAnObject)
        ));
        assert!(matches!(
            parse_manifest(b"{", media::OCI_MANIFEST),
            Err(DocumentError::Json(_))
        ));
        // A manifest without config, or with a malformed digest, does not read.
        let no_config = r#"{"schemaVersion":2,"layers":[]}"#;
        assert!(parse_manifest(no_config.as_bytes(), media::OCI_MANIFEST).is_err());
        let bad = manifest_json().replace(Digest::sha256(b"c").encoded(), "abc");
        assert!(parse_manifest(bad.as_bytes(), media::DOCKER_MANIFEST).is_err());
        // `layers: null` is Go's empty list.
        let null_layers = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"{}","digest":"{}","size":2}},"layers":null}}"#,
            media::OCI_CONFIG,
            Digest::sha256(b"c")
        );
        let m = parse_manifest(null_layers.as_bytes(), media::OCI_MANIFEST).unwrap();
        assert!(m.layers().is_empty());
    }

    #[test]
    fn configs() {
        let a = Digest::sha256(b"a");
        let cfg = format!(
            r#"{{"architecture":"x86_64","os":"linux","config":{{"Cmd":null,"Labels":null}},"rootfs":{{"type":"layers","diff_ids":["{a}"]}},"history":null,"unknown":1}}"#
        );
        let c = parse_config(cfg.as_bytes()).unwrap();
        assert_eq!(diff_ids(&c).unwrap(), vec![a]);
        assert_eq!(platform::format(&config_platform(&c)), "linux/amd64");
        let empty =
            r#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":null}}"#;
        let c = parse_config(empty.as_bytes()).unwrap();
        assert!(diff_ids(&c).unwrap().is_empty());
        let bad = r#"{"architecture":"arm64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:x"]}}"#;
        let c = parse_config(bad.as_bytes()).unwrap();
        assert!(matches!(
            diff_ids(&c),
            Err(DocumentError::DiffId {
                source: DigestError::InvalidLength,
                ..
            })
        ));
    }
}
