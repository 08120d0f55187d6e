//! The content store: blobs addressed by digest.
//!
//! [`local::LocalStore`] owns the bytes under `<root>/io.containerd.content.v1.content`:
//! `blobs/sha256/<hex>` (read-only once committed) and `ingest/<hash of ref>/` for writes in
//! progress, which survive client and daemon restarts and resume from the offset reached.
//! [`ContentStore`] puts namespaces on top: the bytes exist once, each namespace holds a record in
//! the metadata store, and a namespace sees only blobs it holds.

mod error;
pub mod local;
mod store;

use std::sync::Arc;

use berth_metadata::MetadataDb;
use berth_plugin::{types, InitError, Instance, Registration};

pub use error::ContentError;
pub use local::{IngestStatus, LocalStore};
pub use store::{ContentStore, NsWriter};

/// The `io.containerd.content.v1.content` plugin.
pub fn registration() -> Registration {
    Registration::new(types::CONTENT, "content", &[types::METADATA], |ctx| {
        let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
        let local = LocalStore::open(ctx.root()).map_err(InitError::failed)?;
        ctx.set_export("root", ctx.root().display().to_string());
        Ok(Arc::new(ContentStore::new(Arc::new(local), db)) as Instance)
    })
}
