//! bctr's side of the one OCI model (`berth-oci`): its types and rules re-exported under the
//! names the commands use, descriptors to and from the API's, string forms of digests and chain
//! IDs for messages, and what the first bytes of a blob say about its compression.
//!
//! Documents bctr writes go through [`go_json`], byte-for-byte what Go's `encoding/json` writes,
//! so a manifest bctr builds has the digest ctr's would have.

use std::collections::{BTreeMap, HashMap};

pub use berth_oci::document::{
    child_gc_label, children, children_gc_labels, config_platform, has_children, parse_config,
    parse_index, parse_manifest, validate_media_type,
};
pub use berth_oci::media::{
    self, is_config_type, is_index_type, is_known_config, is_layer_type, is_manifest_type,
    is_non_distributable,
};
pub use berth_oci::{
    go_json, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, Platform, ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME,
    LABEL_UNCOMPRESSED,
};

/// Label on a lease: when it expires (RFC 3339).
pub const LABEL_GC_EXPIRE: &str = "containerd.io/gc.expire";

/// The strings of a descriptor, as the commands compare and print them.
pub trait DescriptorExt {
    fn media_type_str(&self) -> &str;
    fn digest_str(&self) -> &str;
    /// Annotations in key order (empty for none).
    fn annotation_map(&self) -> BTreeMap<String, String>;
}

impl DescriptorExt for Descriptor {
    fn media_type_str(&self) -> &str {
        self.media_type().as_ref()
    }

    fn digest_str(&self) -> &str {
        self.digest().as_ref()
    }

    fn annotation_map(&self) -> BTreeMap<String, String> {
        self.annotations()
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// A descriptor of `media_type`, `digest` (validated) and `size` (not negative).
pub fn descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor, String> {
    let digest = Digest::parse(digest).map_err(|e| format!("digest {digest:?}: {e}"))?;
    let size = u64::try_from(size).map_err(|_| format!("invalid size {size} of {digest}"))?;
    Ok(Descriptor::new(MediaType::from(media_type), size, digest))
}

/// Sets (or, when empty, removes) a descriptor's annotations.
pub fn set_annotations(d: &mut Descriptor, annotations: BTreeMap<String, String>) {
    d.set_annotations(
        (!annotations.is_empty()).then(|| annotations.into_iter().collect::<HashMap<_, _>>()),
    );
}

/// The API's descriptor of `d`.
pub fn to_proto(d: &Descriptor) -> berth_api::types::Descriptor {
    berth_api::types::Descriptor {
        media_type: d.media_type_str().to_owned(),
        digest: d.digest_str().to_owned(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        annotations: d.annotation_map().into_iter().collect(),
    }
}

/// A descriptor from the API's (an image's target); refused when its digest or size is invalid.
pub fn from_proto(d: &berth_api::types::Descriptor) -> Result<Descriptor, String> {
    let mut out = descriptor(&d.media_type, &d.digest, d.size)?;
    set_annotations(
        &mut out,
        d.annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    );
    Ok(out)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    Digest::sha256(bytes).into_string()
}

/// go-digest's `Validate`, with its messages.
pub fn validate_digest(s: &str) -> Result<(), String> {
    Digest::validate(s).map_err(|e| e.to_string())
}

/// The algorithm and encoded parts of a valid digest.
pub fn split_digest(s: &str) -> Result<(&str, &str), String> {
    validate_digest(s)?;
    s.split_once(':')
        .ok_or_else(|| "invalid checksum digest format".to_owned())
}

/// The diff_ids a config lists, bottom first.
pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, String> {
    berth_oci::document::diff_ids(config).map_err(|e| e.to_string())
}

/// The chain ID of a config's layers (empty for none).
pub fn rootfs_chain_id(config: &ImageConfiguration) -> Result<String, String> {
    Ok(berth_oci::chain_id(&diff_ids(config)?).map_or_else(String::new, Digest::into_string))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_to_and_from_the_api() {
        let digest = sha256_digest(b"x");
        let mut d = descriptor(media::OCI_MANIFEST, &digest, 3).unwrap();
        set_annotations(&mut d, BTreeMap::from([("a".into(), "1".into())]));
        let p = to_proto(&d);
        assert_eq!(
            (p.media_type.as_str(), p.digest.as_str(), p.size),
            (media::OCI_MANIFEST, digest.as_str(), 3)
        );
        assert_eq!(p.annotations["a"], "1");
        assert_eq!(from_proto(&p).unwrap(), d);
        assert!(descriptor(media::OCI_MANIFEST, "sha256:x", 1).is_err());
        assert!(descriptor(media::OCI_MANIFEST, &digest, -1).is_err());
        set_annotations(&mut d, BTreeMap::new());
        assert!(d.annotations().is_none());
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
        let d = sha256_digest(b"");
        assert_eq!(split_digest(&d).unwrap().0, "sha256");
    }

    #[test]
    fn chain_id_of_a_config() {
        let (a, b) = (sha256_digest(b"a"), sha256_digest(b"b"));
        let cfg = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{a}","{b}"]}}}}"#
        );
        let cfg = parse_config(cfg.as_bytes()).unwrap();
        assert_eq!(
            rootfs_chain_id(&cfg).unwrap(),
            sha256_digest(format!("{a} {b}").as_bytes())
        );
        let empty = parse_config(
            br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(rootfs_chain_id(&empty).unwrap(), "");
    }
}
