//! Image archives: the tars `ctr images import` reads and `ctr images export` writes (an OCI
//! image layout 1.0.0, or what `docker save` writes), as containerd reads and writes them.
//!
//! - [`model`]: the pure rules — names in an archive, the Docker manifest and OCI index
//!   containerd builds for a docker archive, the records of an export. bctr's client-side import
//!   uses them as the daemon does.
//! - [`reference`]: Docker's reference grammar as the archive code needs it (normalised names,
//!   the familiar form of `manifest.json`, `ref.name`, the name translators of `ctr import`).
//! - [`import`]: an archive read from any stream into the content store under a lease, giving
//!   its index; nothing is held whole in memory and nothing touches the filesystem but through
//!   the content store.
//! - [`export`]: images written as an OCI layout tar to any `io::Write`, from the content store
//!   or any other [`export::ExportSource`].
//!
//! Image records, GC labels and unpacking are the caller's (the transfer engine's), as in
//! containerd, where `archive.ImportIndex` only stores content.
//!
//! The `store` feature (default) brings the importer and the exporter's content-store source;
//! bctr builds without it, so the client does not link the daemon's stores.

pub mod export;
#[cfg(feature = "store")]
pub mod import;
pub mod model;
pub mod reference;

#[cfg(feature = "store")]
use std::io::Read;

#[cfg(feature = "store")]
use berth_content_store::{ContentError, ContentStore};
#[cfg(feature = "store")]
use berth_metadata::MetaError;
#[cfg(feature = "store")]
use berth_plugin::{Classify, ErrorKind};

#[cfg(feature = "store")]
pub use export::StoreSource;
pub use export::{ExportError, ExportOptions, ExportSource};
#[cfg(feature = "store")]
pub use import::{ImportError, ImportOptions, Importer};

/// The largest document (manifest, index, config) read whole.
pub const MAX_DOCUMENT: u64 = 64 << 20;

/// A failure of the content store under an import or export.
#[cfg(feature = "store")]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error("reading {digest} from the content store: {source}")]
    Read {
        digest: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{digest} is {size} bytes, more than a document may have ({MAX_DOCUMENT}): invalid argument")]
    TooLarge { digest: String, size: i64 },
}

#[cfg(feature = "store")]
impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::Content(e) => e.kind(),
            StoreError::Meta(e) => e.kind(),
            StoreError::Read { .. } => ErrorKind::Internal,
            StoreError::TooLarge { .. } => ErrorKind::InvalidArgument,
        }
    }
}

/// A whole document of namespace `ns`, refused past [`MAX_DOCUMENT`].
#[cfg(feature = "store")]
pub fn read_document(
    content: &ContentStore,
    ns: &str,
    digest: &str,
) -> Result<Vec<u8>, StoreError> {
    let (f, size) = content.open_reader(ns, digest)?;
    if u64::try_from(size).map_or(true, |s| s > MAX_DOCUMENT) {
        return Err(StoreError::TooLarge {
            digest: digest.to_owned(),
            size,
        });
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    f.take(MAX_DOCUMENT)
        .read_to_end(&mut buf)
        .map_err(|source| StoreError::Read {
            digest: digest.to_owned(),
            source,
        })?;
    Ok(buf)
}

#[cfg(all(test, feature = "store"))]
mod tests;
