//! The pure half of image archives: how containerd names what it finds in an OCI layout or a
//! `docker save` tar, how it turns a docker archive's `manifest.json` into a Docker schema 2
//! manifest plus an OCI index, and the records `ctr images export` writes.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::oci::{self, media, Descriptor, Platform};
use crate::reference;

/// The `oci-layout` file.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The only layout version containerd 1.6 reads and writes.
pub const OCI_LAYOUT_VERSION: &str = "1.0.0";
/// containerd reads at most this much of `oci-layout` and `manifest.json`.
pub const JSON_LIMIT: u64 = 20 << 20;

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
    oci::validate_digest(&d).ok().map(|_| d)
}

/// `blobs/<alg>/<encoded>` of a digest.
pub fn blob_path(digest: &str) -> Result<String, String> {
    let (alg, enc) = oci::split_digest(digest)?;
    Ok(format!("blobs/{alg}/{enc}"))
}

/// The media type containerd gives a docker-archive layer from its first bytes: uncompressed
/// tars stay `…diff.tar` (unless `--compress-blobs`), anything compressed is `…diff.tar.gzip`.
pub fn docker_layer_media_type(head: &[u8]) -> &'static str {
    match oci::detect_compression(head) {
        oci::Compression::Uncompressed => media::DOCKER_LAYER,
        _ => media::DOCKER_LAYER_GZIP,
    }
}

/// The Docker schema 2 manifest containerd writes for one docker-archive image.
pub fn docker_manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Result<Vec<u8>, String> {
    let m = oci::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(media::DOCKER_MANIFEST)
        .config(config.clone())
        .layers(layers.to_vec())
        .build()
        .map_err(|e| e.to_string())?;
    oci::go_json(&m).map_err(|e| e.to_string())
}

/// The index entries for one docker-archive image: one unnamed entry without RepoTags,
/// otherwise one per tag, named with the normalised reference and its OCI ref name.
pub fn docker_index_entries(
    manifest: &Descriptor,
    platform: Option<Platform>,
    repo_tags: &[String],
) -> Result<Vec<Descriptor>, String> {
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
            oci::set_annotations(
                &mut d,
                BTreeMap::from([
                    (oci::ANNOTATION_IMAGE_NAME.to_owned(), normalized.clone()),
                    (
                        oci::ANNOTATION_REF_NAME.to_owned(),
                        reference::oci_reference_name(&normalized),
                    ),
                ]),
            );
            Ok(d)
        })
        .collect()
}

/// The OCI index containerd writes over the manifests of a docker archive.
pub fn index_json(manifests: Vec<Descriptor>) -> Result<Vec<u8>, String> {
    let idx = oci::ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(manifests)
        .build()
        .map_err(|e| e.to_string())?;
    oci::go_json(&idx).map_err(|e| e.to_string())
}

/// Applies symlinked files (`docker save` links duplicate layers) to the blob table.
pub fn resolve_symlinks(
    blobs: &mut HashMap<String, BlobInfo>,
    symlinks: &BTreeMap<String, String>,
) -> Result<(), String> {
    for (name, target) in symlinks {
        let info = blobs
            .get(target)
            .cloned()
            .ok_or_else(|| format!("no target for symlink layer from {name:?} to {target:?}"))?;
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
    a.insert(oci::ANNOTATION_IMAGE_NAME.to_owned(), name.to_owned());
    a.insert(
        oci::ANNOTATION_REF_NAME.to_owned(),
        reference::oci_reference_name(name),
    );
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::DescriptorExt;

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
        let config = oci::descriptor(
            media::DOCKER_CONFIG,
            "sha256:351e70ffbe347935fd59fbb53ff4531e7c712bfc7b5b9ddfb1c22fd215df1765",
            190,
        )
        .unwrap();
        let layer = oci::descriptor(
            media::DOCKER_LAYER,
            "sha256:a1ab6ea3ff804711c3e0d1ea562cd9157e627ebc45bc42a65ef52fe227c80fd0",
            10240,
        )
        .unwrap();
        let m = docker_manifest_json(&config, &[layer]).unwrap();
        // The same manifest containerd 1.6 wrote for the same archive.
        assert_eq!(m.len(), 420);
        assert_eq!(
            oci::sha256_digest(&m),
            "sha256:d1f3375d9566c8d1206d7ffac7e111fc3b4bc5c0d5346bc8d7a03da145e69d0c"
        );
        let md = oci::descriptor(media::DOCKER_MANIFEST, &oci::sha256_digest(&m), 420).unwrap();
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
            entries[0].annotation_map()[oci::ANNOTATION_IMAGE_NAME],
            "docker.io/library/tinydocker:latest"
        );
        assert_eq!(
            entries[0].annotation_map()[oci::ANNOTATION_REF_NAME],
            "latest"
        );
        assert_eq!(entries[1].annotation_map()[oci::ANNOTATION_REF_NAME], "v1");
        let idx = String::from_utf8(index_json(entries).unwrap()).unwrap();
        assert!(idx.starts_with(r#"{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.docker.distribution.manifest.v2+json""#));
        assert!(idx.contains(r#""platform":{"architecture":"amd64","os":"linux"}"#));
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
            .contains("no target for symlink"));
    }
}
