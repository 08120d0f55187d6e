//! From an image name to the layers to unpack: the image record's target, down through indexes
//! to the manifest of the wanted platform (as containerd's `images.Manifest` chooses it), its
//! config's diff_ids and the chain IDs they make.

use std::io::Read;

use berth_content_store::ContentStore;
use berth_metadata::MetadataDb;
use berth_oci::document::{self, DocumentError};
use berth_oci::{media, platform, Descriptor, Digest, Matcher, Platform};

use crate::UnpackError;

/// Manifests, indexes and configs larger than this are refused (containerd's limit for a
/// manifest is 4 MiB; configs of large images are bigger).
pub const MAX_DOCUMENT_SIZE: u64 = 16 << 20;
/// How deep indexes may nest inside each other.
pub const MAX_INDEX_DEPTH: usize = 4;

/// One layer of an image, with where it goes in the snapshotter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The blob's media type (compression included), as the manifest lists it.
    pub media_type: String,
    /// The blob's digest, as the manifest lists it.
    pub digest: Digest,
    pub size: u64,
    /// The uncompressed layer's digest, from the config.
    pub diff_id: Digest,
    /// The snapshot name of this layer stacked on those below (containerd's chain ID).
    pub chain_id: Digest,
}

impl Layer {
    /// The blob as the content store and the differ know it.
    pub fn descriptor(&self) -> berth_metadata::Descriptor {
        berth_metadata::Descriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.to_string(),
            size: i64::try_from(self.size).unwrap_or(i64::MAX),
            annotations: Default::default(),
        }
    }
}

/// The manifest chosen for a platform, and what unpacking it needs.
#[derive(Debug, Clone)]
pub struct ResolvedImage {
    pub manifest: Digest,
    pub config: Digest,
    /// The platform the config describes (normalised).
    pub platform: Platform,
    /// Bottom first.
    pub layers: Vec<Layer>,
}

/// A descriptor reduced to what walking needs, from the metadata store or a document.
struct Target<'a> {
    media_type: String,
    digest: Digest,
    size: u64,
    platform: Option<&'a Platform>,
}

impl<'a> Target<'a> {
    fn of(d: &'a Descriptor) -> Result<Target<'a>, UnpackError> {
        Ok(Target {
            media_type: d.media_type().to_string(),
            digest: parse_digest(d.digest().as_ref())?,
            size: d.size(),
            platform: d.platform().as_ref(),
        })
    }
}

pub(crate) fn parse_digest(s: &str) -> Result<Digest, UnpackError> {
    Digest::parse(s).map_err(|source| UnpackError::InvalidDigest {
        digest: s.to_owned(),
        source,
    })
}

/// Reads image documents from a namespace of the content store.
pub(crate) struct Resolver<'a> {
    pub db: &'a MetadataDb,
    pub content: &'a ContentStore,
    pub ns: &'a str,
}

impl Resolver<'_> {
    /// The layers of `image` for the most preferred platform `matcher` accepts.
    pub fn resolve(&self, image: &str, matcher: &Matcher) -> Result<ResolvedImage, UnpackError> {
        let img = self.db.get_image(self.ns, image)?;
        self.resolve_target(image, &img.target, matcher)
    }

    /// The same for an image not recorded yet (a pull unpacks before it records the image):
    /// its target, `image` naming it in errors.
    pub fn resolve_target(
        &self,
        image: &str,
        target: &berth_metadata::Descriptor,
        matcher: &Matcher,
    ) -> Result<ResolvedImage, UnpackError> {
        let target = Target {
            media_type: target.media_type.clone(),
            digest: parse_digest(&target.digest)?,
            size: u64::try_from(target.size).unwrap_or(0),
            platform: None,
        };
        self.walk(image, &target, matcher, 0)?
            .ok_or_else(|| UnpackError::NoMatchingManifest {
                image: image.to_owned(),
                platform: wanted(matcher),
            })
    }

    /// The document `digest`, checked against its descriptor's size.
    fn read(&self, digest: &Digest, size: u64) -> Result<Vec<u8>, UnpackError> {
        let (mut f, actual) = self.content.open_reader(self.ns, digest.as_str())?;
        let actual = u64::try_from(actual).unwrap_or(0);
        if actual > MAX_DOCUMENT_SIZE {
            return Err(UnpackError::TooLarge {
                digest: digest.clone(),
                size: actual,
                limit: MAX_DOCUMENT_SIZE,
            });
        }
        if actual != size {
            return Err(UnpackError::SizeMismatch {
                digest: digest.clone(),
                expected: size,
                actual,
            });
        }
        let mut buf = Vec::with_capacity(usize::try_from(actual).unwrap_or(0));
        f.read_to_end(&mut buf)
            .map_err(|source| UnpackError::Read {
                digest: digest.clone(),
                source,
            })?;
        Ok(buf)
    }

    fn document_error(digest: &Digest) -> impl FnOnce(DocumentError) -> UnpackError + '_ {
        move |source| UnpackError::Document {
            digest: digest.clone(),
            source,
        }
    }

    /// The first manifest at or below `t` whose platform `matcher` accepts, most preferred
    /// first; `None` when there is none.
    fn walk(
        &self,
        image: &str,
        t: &Target<'_>,
        matcher: &Matcher,
        depth: usize,
    ) -> Result<Option<ResolvedImage>, UnpackError> {
        if media::is_index_type(&t.media_type) {
            if depth >= MAX_INDEX_DEPTH {
                return Err(UnpackError::TooDeep {
                    image: image.to_owned(),
                    limit: MAX_INDEX_DEPTH,
                });
            }
            let bytes = self.read(&t.digest, t.size)?;
            let index = document::parse_index(&bytes, &t.media_type)
                .map_err(Self::document_error(&t.digest))?;
            // containerd's order: matching platforms by preference, then those that name none
            // (their config decides).
            let mut candidates: Vec<&Descriptor> = index
                .manifests()
                .iter()
                .filter(|d| d.platform().as_ref().is_none_or(|p| matcher.matches(p)))
                .collect();
            matcher.sort(&mut candidates, |d| d.platform().as_ref());
            for d in candidates {
                if let Some(found) = self.walk(image, &Target::of(d)?, matcher, depth + 1)? {
                    return Ok(Some(found));
                }
            }
            return Ok(None);
        }
        if !media::is_manifest_type(&t.media_type) {
            return Err(UnpackError::NotAnImage {
                digest: t.digest.clone(),
                media_type: t.media_type.clone(),
            });
        }
        let bytes = self.read(&t.digest, t.size)?;
        let manifest = document::parse_manifest(&bytes, &t.media_type)
            .map_err(Self::document_error(&t.digest))?;
        let cfg = Target::of(manifest.config())?;
        if !media::is_config_type(&cfg.media_type) {
            return Err(UnpackError::NotAConfig {
                manifest: t.digest.clone(),
                digest: cfg.digest,
                media_type: cfg.media_type,
            });
        }
        let config = document::parse_config(&self.read(&cfg.digest, cfg.size)?)
            .map_err(Self::document_error(&cfg.digest))?;
        let config_platform = document::config_platform(&config);
        // A manifest the index names no platform for (or the image's only manifest) is taken
        // when its config's platform matches.
        if t.platform.is_none() && !matcher.matches(&config_platform) {
            return Ok(None);
        }
        let diff_ids = document::diff_ids(&config).map_err(Self::document_error(&cfg.digest))?;
        let blobs = manifest.layers();
        if blobs.is_empty() {
            return Err(UnpackError::NoLayers {
                manifest: t.digest.clone(),
            });
        }
        if blobs.len() != diff_ids.len() {
            return Err(UnpackError::LayerCount {
                manifest: t.digest.clone(),
                config: cfg.digest,
                layers: blobs.len(),
                diff_ids: diff_ids.len(),
            });
        }
        let chain_ids = berth_oci::chain_ids(&diff_ids);
        let mut layers = Vec::with_capacity(blobs.len());
        for ((blob, diff_id), chain_id) in blobs.iter().zip(diff_ids).zip(chain_ids) {
            let b = Target::of(blob)?;
            if !media::is_layer_type(&b.media_type) {
                return Err(UnpackError::UnsupportedLayer {
                    manifest: t.digest.clone(),
                    digest: b.digest,
                    media_type: b.media_type,
                });
            }
            layers.push(Layer {
                media_type: b.media_type,
                digest: b.digest,
                size: b.size,
                diff_id,
                chain_id,
            });
        }
        Ok(Some(ResolvedImage {
            manifest: t.digest.clone(),
            config: cfg.digest,
            platform: config_platform,
            layers,
        }))
    }
}

/// The platform a matcher prefers, for messages.
fn wanted(matcher: &Matcher) -> String {
    matcher
        .platforms()
        .first()
        .map_or_else(|| "any".to_owned(), platform::format)
}
