//! One error type for the engine, keeping each cause, classified for gRPC.

use berth_content_store::ContentError;
use berth_image_archive::{ExportError, ImportError, StoreError};
use berth_metadata::MetaError;
use berth_oci::DocumentError;
use berth_plugin::{Classify, ErrorKind};
use berth_remotes::RemoteError;
use berth_unpack::UnpackError;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{0}: invalid argument")]
    InvalidArgument(String),

    /// Anything the registry said or failed to say, with the reference being pulled.
    #[error("pulling {reference}: {source}")]
    Remote {
        reference: String,
        #[source]
        source: RemoteError,
    },

    /// Anything the registry said or failed to say, with the reference being pushed to.
    #[error("pushing to {reference}: {source}")]
    Push {
        reference: String,
        #[source]
        source: RemoteError,
    },

    /// The image to push is not in the image store.
    #[error("image {0:?}: not found")]
    ImageNotFound(String),

    /// A blob an image's manifest names is not in the content store.
    #[error("{digest} of image {image} is not in the content store: not found")]
    MissingContent { image: String, digest: String },

    /// None of an index's manifests for the wanted platforms is in the content store.
    #[error("image {image} has no manifest for {platforms} in the content store: not found")]
    NoLocalManifest { image: String, platforms: String },

    #[error("document {digest}: {source}")]
    Document {
        digest: String,
        #[source]
        source: DocumentError,
    },

    #[error("{what} {digest}: nesting deeper than {limit} indexes")]
    TooDeep {
        what: &'static str,
        digest: String,
        limit: usize,
    },

    /// containerd's "no image name found" when the destination names nothing.
    #[error("no image name found: not found")]
    NoImageName,

    #[error(transparent)]
    Metadata(#[from] MetaError),

    #[error(transparent)]
    Content(#[from] ContentError),

    #[error("unpacking {image} into {snapshotter}: {source}")]
    Unpack {
        image: String,
        snapshotter: String,
        /// Boxed: the unpacker's error is large, and every result of the engine carries this type.
        #[source]
        source: Box<UnpackError>,
    },

    #[error("reading {digest} from the content store: {source}")]
    Read {
        digest: String,
        #[source]
        source: std::io::Error,
    },

    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    /// The archive being imported (containerd's messages: "unrecognized image format", …).
    #[error(transparent)]
    Import(#[from] ImportError),

    #[error(transparent)]
    Export(#[from] ExportError<StoreError>),

    #[error(transparent)]
    Store(#[from] StoreError),

    /// containerd's `ErrEmptyWalk`: the platform filter left nothing of the archive.
    #[error("image might be filtered out")]
    FilteredOut,

    #[error("{0}: not implemented")]
    NotImplemented(String),
}

impl Classify for TransferError {
    fn kind(&self) -> ErrorKind {
        match self {
            TransferError::InvalidArgument(_) | TransferError::Document { .. } => {
                ErrorKind::InvalidArgument
            }
            TransferError::TooDeep { .. } => ErrorKind::OutOfRange,
            TransferError::Remote { source, .. } | TransferError::Push { source, .. } => {
                source.kind()
            }
            TransferError::ImageNotFound(_)
            | TransferError::MissingContent { .. }
            | TransferError::NoLocalManifest { .. } => ErrorKind::NotFound,
            TransferError::NoImageName => ErrorKind::NotFound,
            TransferError::Metadata(e) => e.kind(),
            TransferError::Content(e) => e.kind(),
            TransferError::Unpack { source, .. } => source.kind(),
            TransferError::Read { .. } | TransferError::Task(_) => ErrorKind::Internal,
            TransferError::Import(e) => e.kind(),
            TransferError::Export(e) => e.kind(),
            TransferError::Store(e) => e.kind(),
            TransferError::FilteredOut => ErrorKind::InvalidArgument,
            TransferError::NotImplemented(_) => ErrorKind::NotImplemented,
        }
    }
}
