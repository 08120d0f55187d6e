//! berthd's metadata: every object record, owned by a namespace, in one redb database at
//! `<root>/io.containerd.metadata.v1.redb/meta.redb`.
//!
//! redb gives serialisable, crash-safe transactions (copy-on-write B-trees, fsync on commit), so a
//! crash at any point leaves either the old or the new state, never a mix. Records are JSON so the
//! on-disk format stays readable and independent of our Rust types' layout.

mod containers;
mod content;
pub mod digest;
mod error;
pub mod gc;
pub mod identifiers;
mod images;
pub mod labels;
mod leases;
mod namespaces;
mod record;
pub mod schema;
mod snapshots;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_plugin::{types, InitError, Instance, Registration};

pub use containers::{AnyValue, Container, Runtime as ContainerRuntime};
pub use content::BlobInfo;
pub use error::MetaError;
pub use images::{Descriptor, Image};
pub use leases::{expiring_in, Lease, LeaseResource, EXPIRE_LABEL};
pub use namespaces::Namespace;
pub use record::now_nanos;
pub use snapshots::SnapshotRecord;

/// Name of the database file inside the plugin's root.
pub const DB_FILE: &str = "meta.redb";

/// The metadata database. Cheap to share: wrap it in an `Arc`.
pub struct MetadataDb {
    /// Reopens itself after an I/O error (a full disk), so the store serves again as soon as
    /// there is room. Shared with the snapshotters, whose tables live in it too (see
    /// [`MetadataDb::database`]).
    db: Arc<berth_redb::Db>,
    path: PathBuf,
    /// Held shared by every change that puts data on disk before its record (a blob renamed into
    /// place, then recorded), and exclusively by the collector's disk sweep, so the collector never
    /// removes a file whose record is about to be written.
    gc_lock: std::sync::RwLock<()>,
    /// Where committed changes are announced (`/namespaces/*`, `/images/*`, `/containers/*`,
    /// `/content/*`, `/snapshot/*`).
    events: std::sync::OnceLock<Arc<berth_events::Exchange>>,
    /// Run after every committed change that may have left something unreferenced.
    on_dereference: std::sync::RwLock<Vec<DereferenceCallback>>,
}

type DereferenceCallback = Box<dyn Fn() + Send + Sync>;

impl MetadataDb {
    /// Opens (creating if needed) the database in `dir`, creating every table and checking the
    /// schema version.
    pub fn open(dir: &Path) -> Result<Self, MetaError> {
        std::fs::create_dir_all(dir).map_err(|source| MetaError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = berth_redb::Db::create(&path).map_err(MetaError::open(&path))?;
        schema::migrate(&db)?;
        Ok(MetadataDb {
            db: Arc::new(db),
            path,
            gc_lock: std::sync::RwLock::new(()),
            on_dereference: std::sync::RwLock::new(Vec::new()),
            events: std::sync::OnceLock::new(),
        })
    }

    /// Closes the database file as redb shuts down cleanly (so the next start needs no repair)
    /// and releases its lock; the daemon calls it last on shutdown. Every later call fails with
    /// redb's `DatabaseClosed`; closing again does nothing. A write transaction still running
    /// keeps the file open until it ends.
    pub fn close(&self) -> Result<(), MetaError> {
        self.db.close().map_err(|source| MetaError::Close {
            path: self.path.clone(),
            source,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database itself, for the snapshotters to keep their tables in: a snapshot's
    /// namespaced record and its driver record then commit in one transaction (the snapshots
    /// store lends it to the driver's metastore). The metadata store closes it, last.
    pub fn database(&self) -> Arc<berth_redb::Db> {
        self.db.clone()
    }

    /// Registers `f` to run after every committed change that may leave something unreferenced:
    /// a deleted blob, image, container, lease, lease resource or snapshot record, an image's new
    /// target or a container's new snapshot key.
    /// The collector's scheduler registers here, as containerd's scheduler registers a mutation
    /// callback with its metadata DB, so every caller's deletions — a service's, the unpacker's,
    /// the runtime's — wake it, not only those whose service remembers to.
    pub fn on_dereference(&self, f: impl Fn() + Send + Sync + 'static) {
        self.on_dereference
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// Announces every committed change to namespaces, images and blobs on `events`, whoever made
    /// it (a service, the unpacker, the diff service's writer), as containerd's stores do; set
    /// once, by the metadata plugin.
    pub fn set_events(&self, events: Arc<berth_events::Exchange>) {
        let _ = self.events.set(events);
    }

    /// Called by the record modules after committing a change.
    pub(crate) fn publish(&self, ns: &str, event: berth_events::Event) {
        if let Some(ex) = self.events.get() {
            ex.publish(ns, event);
        }
    }

    /// Called by the record modules after committing a change that may dereference something.
    pub(crate) fn dereferenced(&self) {
        for f in self
            .on_dereference
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            f();
        }
    }

    /// Shared guard for "file on disk, record pending"; see `gc_lock`.
    pub fn mutation_guard(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gc_lock.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive guard for the collector's disk sweep.
    pub fn sweep_guard(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.gc_lock.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn read(&self) -> Result<redb::ReadTransaction, MetaError> {
        Ok(self.db.begin_read()?)
    }

    /// A write transaction. After an I/O error (a full disk) the database reopens itself and
    /// serves again as soon as there is room (`berth_redb`).
    pub(crate) fn write(&self) -> Result<redb::WriteTransaction, MetaError> {
        Ok(self.db.begin_write()?)
    }
}

/// The `io.containerd.metadata.v1.redb` plugin.
pub fn registration() -> Registration {
    Registration::new(types::METADATA, "redb", &[types::EVENT], |ctx| {
        let db = Arc::new(MetadataDb::open(ctx.root()).map_err(InitError::failed)?);
        if let Ok(events) = ctx.get_as::<berth_events::Exchange>(types::EVENT) {
            db.set_events(events);
        }
        ctx.set_export("path", db.path().display().to_string());
        // Hooks run in reverse initialisation order: every store built on the database closes
        // before it does.
        let closing = db.clone();
        ctx.on_close(move || closing.close());
        Ok(db as Instance)
    })
}
