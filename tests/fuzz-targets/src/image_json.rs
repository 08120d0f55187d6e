//! The image document target: manifests, indexes, Docker manifest lists and image configs as
//! `berth_oci::document` reads them (what import, unpack, the collector's child labels and
//! platform selection see).
//!
//! The first input byte chooses the media type the document is read as ([`MEDIA_TYPES`]); the
//! rest is the document. Each reader parses or refuses. A document that parses is written back
//! with Berth's Go-exact JSON writer and must read back equal (Berth writes indexes and manifests
//! it later reads: `images export`, the OCI layout).

use berth_oci::document::{
    children, children_gc_labels, config_platform, diff_ids, has_children, parse_config,
    parse_index, parse_manifest, validate_media_type,
};
use berth_oci::{go_json, media, platform, Descriptor, MediaType};

/// The media types a document may be read as, chosen by `data[0] % len`.
pub const MEDIA_TYPES: &[&str] = &[
    media::OCI_MANIFEST,
    media::OCI_INDEX,
    media::DOCKER_MANIFEST,
    media::DOCKER_MANIFEST_LIST,
    media::OCI_CONFIG,
    media::DOCKER_CONFIG,
    media::OCI_LAYER_GZIP,
    "application/octet-stream",
];

pub fn image_json(data: &[u8]) {
    let Some((&which, doc)) = data.split_first() else {
        return;
    };
    let mt = MEDIA_TYPES[usize::from(which) % MEDIA_TYPES.len()];

    let _ = validate_media_type(doc, mt);

    if let Ok(m) = parse_manifest(doc, mt) {
        let _ = children_gc_labels(m.layers());
        // Writing back what was read must succeed: every field came from JSON.
        let written = go_json(&m).unwrap_or_else(|e| panic!("writing a manifest back: {e}"));
        match parse_manifest(&written, mt) {
            Ok(again) => assert_eq!(again, m, "manifest changed through {written:?}"),
            Err(e) => panic!(
                "a manifest read as {mt} does not read back ({e}): {}",
                String::from_utf8_lossy(&written)
            ),
        }
    }
    if let Ok(i) = parse_index(doc, mt) {
        let _ = children_gc_labels(i.manifests());
        for d in i.manifests() {
            if let Some(p) = d.platform() {
                let _ = platform::format(&platform::normalize(p));
            }
        }
        let written = go_json(&i).unwrap_or_else(|e| panic!("writing an index back: {e}"));
        match parse_index(&written, mt) {
            Ok(again) => assert_eq!(again, i, "index changed through {written:?}"),
            Err(e) => panic!(
                "an index read as {mt} does not read back ({e}): {}",
                String::from_utf8_lossy(&written)
            ),
        }
    }
    if let Ok(c) = parse_config(doc) {
        let _ = diff_ids(&c);
        let _ = platform::format(&config_platform(&c));
        let written = go_json(&c).unwrap_or_else(|e| panic!("writing a config back: {e}"));
        match parse_config(&written) {
            Ok(again) => assert_eq!(again, c, "config changed through {written:?}"),
            Err(e) => panic!(
                "a config does not read back ({e}): {}",
                String::from_utf8_lossy(&written)
            ),
        }
    }

    // The walk's view: a descriptor of this media type over these bytes.
    let desc = Descriptor::new(
        MediaType::from(mt),
        doc.len() as u64,
        berth_oci::Digest::sha256(doc),
    );
    if has_children(mt) {
        if let Ok(ch) = children(&desc, doc) {
            let _ = children_gc_labels(&ch);
        }
    }
}
