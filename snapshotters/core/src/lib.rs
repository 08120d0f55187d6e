//! What a snapshotter is in Berth, and everything a new one can reuse.
//!
//! A storage driver implements [`Snapshotter`] (containerd's semantics: Active, View and
//! Committed snapshots; only committed snapshots are parents; commit turns an active key into a
//! new committed name; a view cannot be committed; a snapshot with children cannot be removed).
//! [`metastore::MetaStore`] keeps ids, parents, kinds, labels and usage — in the daemon's
//! metadata database ([`open_metastore`]), or a redb file in the driver's root when it runs
//! alone — so a driver writes only the filesystem part. The conformance suite every driver
//! runs is the dev-only crate `berth-snapshotter-testsuite`. Mounts are `berth-mount`'s
//! [`Mount`], and mounting them is that crate's job.

pub mod dirs;
mod error;
pub mod metastore;
pub mod usage;

use std::collections::BTreeMap;

pub use error::SnapshotError;

/// containerd's snapshot kinds (the numbering is containerd's wire enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "View",
            Kind::Active => "Active",
            Kind::Committed => "Committed",
        }
    }

    /// `Ok` for the kinds [`Snapshotter::create`] makes (Active, View); containerd's
    /// InvalidArgument for [`Kind::Committed`], which only [`Snapshotter::commit`] makes.
    pub fn ensure_creatable(self) -> Result<(), SnapshotError> {
        match self {
            Kind::Active | Kind::View => Ok(()),
            Kind::Committed => Err(SnapshotError::InvalidArgument(format!(
                "snapshot type {} invalid; only snapshots of type Active or View can be created",
                self.as_str()
            ))),
        }
    }
}

/// What Stat and Walk report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Info {
    pub name: String,
    /// Empty for a snapshot without parent.
    pub parent: String,
    pub kind: Option<Kind>,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Info {
    pub fn kind(&self) -> Kind {
        self.kind.unwrap_or(Kind::Active)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Bytes used by this snapshot alone (not its parents).
    pub size: i64,
    pub inodes: i64,
}

/// What drivers return: the one mount type of Berth, from `berth-mount` (which also mounts them).
pub use berth_mount::Mount;

/// A storage driver. Calls are blocking (they do filesystem work); services call them from
/// blocking threads. Keys and names are unique per snapshotter; namespacing is the caller's job.
pub trait Snapshotter: Send + Sync {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError>;
    /// Updates labels by field paths (`labels`, `labels.<k>`; none = all labels).
    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError>;
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError>;
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError>;
    /// Makes a new snapshot `key` of kind `kind` on `parent` (a committed snapshot, or "" for
    /// none) and returns its mounts: [`Kind::Active`] is writable, [`Kind::View`] read-only.
    /// [`Kind::Committed`] is not a kind one creates ([`Snapshotter::commit`] makes it): drivers
    /// answer it with [`SnapshotError::InvalidArgument`] ([`Kind::ensure_creatable`];
    /// [`metastore::Tx::create_snapshot`] checks it for drivers that record through it).
    ///
    /// This is what a driver implements; [`Snapshotter::prepare`] and [`Snapshotter::view`]
    /// call it.
    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError>;
    /// A new writable snapshot on `parent` (a committed snapshot, or "" for none).
    fn prepare(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::Active, key, parent, labels)
    }
    /// A new read-only snapshot of `parent`.
    fn view(
        &self,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.create(Kind::View, key, parent, labels)
    }
    /// Turns the active snapshot `key` into the committed snapshot `name`.
    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError>;
    fn remove(&self, key: &str) -> Result<(), SnapshotError>;
    /// Calls `f` for every snapshot until it returns false.
    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError>;
    /// Removes what a crash or an interrupted remove left on disk.
    fn cleanup(&self) -> Result<(), SnapshotError>;
    fn close(&self) -> Result<(), SnapshotError>;

    /// Where layers may be extracted ahead of time, on the driver's own filesystem, to be taken
    /// in whole by [`Snapshotter::adopt`]; `None` (the default) when the driver's layers are not
    /// independent directories. Overlay's are, which is what lets Berth extract every layer of an
    /// image at once instead of one after the other.
    fn staging(&self) -> Option<Staging> {
        None
    }

    /// Makes `staged` (a directory under [`Snapshotter::staging`], holding one layer extracted
    /// in the driver's whiteout format) the content of the active snapshot `key`, which must be
    /// freshly prepared and unwritten.
    fn adopt(&self, key: &str, staged: &std::path::Path) -> Result<(), SnapshotError> {
        let _ = (key, staged);
        Err(SnapshotError::Unsupported(
            "this snapshotter cannot adopt pre-extracted layers".into(),
        ))
    }
}

/// See [`Snapshotter::staging`].
#[derive(Debug, Clone)]
pub struct Staging {
    pub dir: std::path::PathBuf,
    /// Overlay metadata (opaque directories) goes in `user.` xattrs instead of `trusted.`.
    pub userxattr: bool,
}

pub use metastore::MetaStore;

/// The metastore of a driver plugin: its tables in the daemon's metadata database when the
/// registry has one, so the snapshots store commits a namespaced record and the driver's in one
/// transaction (register the driver with `requires: &[types::METADATA]` so that the database is
/// open first); otherwise (`berthd snapshotter serve`) a file of its own,
/// `<root>/metadata.redb`, which is also what an older berthd left and is moved in once.
pub fn open_metastore(ctx: &berth_plugin::InitContext) -> Result<MetaStore, SnapshotError> {
    let own = ctx.root().join("metadata.redb");
    match ctx.get_as::<berth_metadata::MetadataDb>(berth_plugin::types::METADATA) {
        Ok(db) => MetaStore::open_shared(db.database(), ctx.id(), &own),
        Err(_) => MetaStore::open(&own),
    }
}

/// What a snapshotter plugin's instance is: the driver behind the trait, so the snapshots
/// service can find every driver without knowing their types.
pub struct SnapshotterInstance(pub std::sync::Arc<dyn Snapshotter>);

/// Every ready snapshotter plugin of a daemon, by id.
pub fn drivers(
    ctx: &berth_plugin::InitContext,
) -> std::collections::HashMap<String, std::sync::Arc<dyn Snapshotter>> {
    ctx.get_all(berth_plugin::types::SNAPSHOTTER)
        .into_iter()
        .filter_map(|(id, inst)| {
            inst.downcast::<SnapshotterInstance>()
                .ok()
                .map(|s| (id, s.0.clone()))
        })
        .collect()
}
