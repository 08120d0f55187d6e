//! What can go wrong while unpacking, with the kind a client sees.

use std::path::PathBuf;

use berth_archive::ArchiveError;
use berth_content_store::ContentError;
use berth_diff::DiffError;
use berth_metadata::MetaError;
use berth_oci::{Digest, DigestError, DocumentError, PlatformError};
use berth_plugin::{Classify, ErrorKind};
use berth_snapshots::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The image record (or another metadata record) is missing or refused.
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshots(#[from] StoreError),
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{digest:?} is not a valid digest: {source}: invalid argument")]
    InvalidDigest {
        digest: String,
        #[source]
        source: DigestError,
    },
    #[error("invalid platform {spec:?}: {source}: invalid argument")]
    InvalidPlatform {
        spec: String,
        #[source]
        source: PlatformError,
    },
    #[error("{digest}: {source}: invalid argument")]
    Document {
        digest: Digest,
        #[source]
        source: DocumentError,
    },
    #[error(
        "document {digest} has {size} bytes, more than the {limit} a manifest, index or config may have: invalid argument"
    )]
    TooLarge {
        digest: Digest,
        size: u64,
        limit: u64,
    },
    #[error(
        "{digest}: the descriptor says {expected} bytes but the content store holds {actual}: invalid argument"
    )]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("read {digest}: {source}")]
    Read {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error("{digest} has media type {media_type:?}, which is neither an image index nor a manifest: invalid argument")]
    NotAnImage { digest: Digest, media_type: String },
    #[error("config {digest} of manifest {manifest} has media type {media_type:?}, which is not an image config: invalid argument")]
    NotAConfig {
        manifest: Digest,
        digest: Digest,
        media_type: String,
    },
    #[error("layer {digest} of manifest {manifest} has media type {media_type:?}, which cannot be unpacked: not implemented")]
    UnsupportedLayer {
        manifest: Digest,
        digest: Digest,
        media_type: String,
    },
    #[error("manifest {manifest} has no layers: nothing to unpack: invalid argument")]
    NoLayers { manifest: Digest },
    #[error(
        "mismatched image rootfs and manifest layers: manifest {manifest} has {layers} layers, config {config} {diff_ids} diff_ids: invalid argument"
    )]
    LayerCount {
        manifest: Digest,
        config: Digest,
        layers: usize,
        diff_ids: usize,
    },
    #[error("no manifest for platform {platform} in image {image:?}: not found")]
    NoMatchingManifest { image: String, platform: String },
    #[error("image {image:?}: indexes nested more than {limit} deep: invalid argument")]
    TooDeep { image: String, limit: usize },
    #[error("staging directory {}: {source}", path.display())]
    Staging {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "wrong diff id calculated on extraction of layer {layer}: {actual}, expected {expected}: invalid argument"
    )]
    DiffIdMismatch {
        layer: Digest,
        actual: String,
        expected: Digest,
    },
    /// The blocking job could not finish (it panicked or the runtime is shutting down).
    #[error("unpack job: {0}")]
    Job(#[source] tokio::task::JoinError),
    #[error("a layer extraction thread panicked")]
    ExtractPanicked,
    /// A pull unpacking while it downloads did not bring this layer.
    #[error("layer {digest} was not fetched: {why}")]
    LayerNotFetched { digest: String, why: String },
}

impl Classify for UnpackError {
    fn kind(&self) -> ErrorKind {
        use UnpackError::*;
        match self {
            Meta(e) => e.kind(),
            Content(e) => e.kind(),
            Snapshots(e) => e.kind(),
            Diff(e) => e.kind(),
            Archive(e) => e.kind(),
            InvalidDigest { .. }
            | InvalidPlatform { .. }
            | Document { .. }
            | TooLarge { .. }
            | SizeMismatch { .. }
            | NotAnImage { .. }
            | NotAConfig { .. }
            | NoLayers { .. }
            | LayerCount { .. }
            | TooDeep { .. }
            | DiffIdMismatch { .. } => ErrorKind::InvalidArgument,
            UnsupportedLayer { .. } => ErrorKind::NotImplemented,
            NoMatchingManifest { .. } => ErrorKind::NotFound,
            Read { .. } | Staging { .. } | Job(_) | ExtractPanicked => ErrorKind::Internal,
            LayerNotFetched { .. } => ErrorKind::Unavailable,
        }
    }
}
