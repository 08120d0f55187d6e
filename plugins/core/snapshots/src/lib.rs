//! Namespaced snapshots: records in the metadata store, snapshots in the drivers. One instance
//! (the `io.containerd.service.v1.snapshots-service` plugin) is shared by the snapshots gRPC
//! service, the daemon-side unpacker and, later, the runtime; it publishes `/snapshot/*` events
//! itself, so every caller's changes are seen, and its record deletions wake the collector through
//! the metadata store's dereference callback.
//!
//! Prepare, View and Commit change the record (where all the namespace rules are checked) and
//! call the driver in **one transaction**: the drivers keep their tables in the same database, and
//! the metadata store lends its transaction to the driver's metastore while the driver runs, so
//! both records commit together with one durable commit (one fdatasync per RPC), and a driver
//! failure aborts both — nothing to undo (a driver directory made before an aborted commit is
//! replaced when its id is handed out again, and removed by the driver's cleanup at start). They hold the metadata store's mutation guard
//! throughout, so the collector never sees a driver snapshot whose record is still to come.
//! Remove, as containerd's, only deletes the record (one transaction, one fsync): the collector,
//! which that deletion wakes, removes the driver snapshot with every other driver snapshot no
//! record points to. A crash at any point leaves at most driver files without a record (the
//! driver's cleanup at start and the next collection remove them); a driver that keeps its
//! metadata elsewhere (a proxy) can also leave a record whose driver snapshot is missing (Stat
//! reports it, Remove clears it).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth_events::{Event, Exchange};
use berth_metadata::{MetaError, MetadataDb, SnapshotRecord};
use berth_plugin::{types, Classify, ErrorKind, Instance, Registration};
use berth_snapshotter::{Info, Kind, Mount, SnapshotError, Snapshotter, Usage};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshotter not loaded: {0}: invalid argument")]
    UnknownSnapshotter(String),
    /// A request that names no snapshotter (containerd's wording).
    #[error("snapshotter argument missing: invalid argument")]
    NoSnapshotter,
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Driver(#[from] SnapshotError),
}

impl Classify for StoreError {
    fn kind(&self) -> ErrorKind {
        match self {
            StoreError::UnknownSnapshotter(_) | StoreError::NoSnapshotter => {
                ErrorKind::InvalidArgument
            }
            StoreError::Meta(e) => e.kind(),
            StoreError::Driver(e) => e.kind(),
        }
    }
}

/// A snapshot to create: writable (prepare) or read-only (view).
pub struct NewSnapshot {
    pub key: String,
    pub parent: String,
    pub labels: BTreeMap<String, String>,
    pub view: bool,
}

pub struct Snapshots {
    db: Arc<MetadataDb>,
    drivers: HashMap<String, Arc<dyn Snapshotter>>,
    events: Option<Arc<Exchange>>,
}

/// The id of the shared instance's plugin (type `io.containerd.service.v1`), as containerd names it.
pub const PLUGIN_ID: &str = "snapshots-service";

/// The `io.containerd.service.v1.snapshots-service` plugin: the one namespaced snapshots instance.
pub fn registration() -> Registration {
    Registration::new(
        types::SERVICE,
        PLUGIN_ID,
        &[types::METADATA, types::SNAPSHOTTER, types::EVENT],
        |ctx| {
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let events = ctx.get_as::<Exchange>(types::EVENT).ok();
            let store = Snapshots::new(db, berth_snapshotter::drivers(ctx)).with_events(events);
            Ok(Arc::new(store) as Instance)
        },
    )
}

/// The shared instance, for plugins that require `io.containerd.service.v1`.
pub fn shared(ctx: &berth_plugin::InitContext) -> Result<Arc<Snapshots>, berth_plugin::InitError> {
    ctx.get_by_id(types::SERVICE, PLUGIN_ID)?
        .downcast::<Snapshots>()
        .map_err(|_| {
            berth_plugin::InitError::Failed(format!("{PLUGIN_ID} is not a snapshots store"))
        })
}

/// containerd calls the overlay driver `overlayfs`; `overlay` is accepted too.
pub fn canonical(name: &str) -> &str {
    match name {
        "overlay" => "overlayfs",
        "" => "overlayfs",
        other => other,
    }
}

fn info(rec: &SnapshotRecord, kind: Kind) -> Info {
    Info {
        name: rec.key.clone(),
        parent: rec.parent.clone(),
        kind: Some(kind),
        labels: rec.labels.clone(),
        created_at: rec.created_at,
        updated_at: rec.updated_at,
    }
}

impl Snapshots {
    pub fn new(db: Arc<MetadataDb>, drivers: HashMap<String, Arc<dyn Snapshotter>>) -> Self {
        Snapshots {
            db,
            drivers,
            events: None,
        }
    }

    /// Publishes `/snapshot/prepare|commit|remove` on `events` after each change.
    pub fn with_events(mut self, events: Option<Arc<Exchange>>) -> Self {
        self.events = events;
        self
    }

    fn publish(&self, ns: &str, event: Event) {
        if let Some(ex) = &self.events {
            ex.publish(ns, event);
        }
    }

    fn driver(&self, sn: &str) -> Result<&Arc<dyn Snapshotter>, StoreError> {
        if sn.is_empty() {
            return Err(StoreError::NoSnapshotter);
        }
        self.drivers
            .get(canonical(sn))
            .ok_or_else(|| StoreError::UnknownSnapshotter(sn.to_owned()))
    }

    pub fn prepare(
        &self,
        ns: &str,
        sn: &str,
        lease: Option<&str>,
        new: NewSnapshot,
    ) -> Result<Vec<Mount>, StoreError> {
        let _guard = self.db.mutation_guard();
        self.prepare_guarded(ns, sn, lease, new)
    }

    /// [`Snapshots::prepare`] for a caller that holds the mutation guard.
    fn prepare_guarded(
        &self,
        ns: &str,
        sn: &str,
        lease: Option<&str>,
        new: NewSnapshot,
    ) -> Result<Vec<Mount>, StoreError> {
        let d = self.driver(sn)?;
        let sn = canonical(sn);
        let NewSnapshot {
            key,
            parent,
            labels,
            view,
        } = new;
        let m = self.db.create_snapshot_with(
            ns,
            sn,
            &key,
            &parent,
            labels.clone(),
            lease,
            |rec, bparent| {
                if view {
                    d.view(&rec.backend_key, bparent, labels)
                } else {
                    d.prepare(&rec.backend_key, bparent, labels)
                }
                .map_err(StoreError::from)
            },
        )?;
        self.publish(
            ns,
            Event::SnapshotPrepare {
                key,
                parent,
                snapshotter: sn.to_owned(),
            },
        );
        Ok(m)
    }

    /// The driver's staging area for pre-extracted layers, if it has one.
    pub fn staging(&self, sn: &str) -> Result<Option<berth_snapshotter::Staging>, StoreError> {
        Ok(self.driver(sn)?.staging())
    }

    /// Prepares `key` on `parent` and makes the pre-extracted layer `staged` its content (see
    /// `Snapshotter::adopt`); undone entirely if any step fails.
    pub fn prepare_adopt(
        &self,
        ns: &str,
        sn: &str,
        lease: Option<&str>,
        new: NewSnapshot,
        staged: &std::path::Path,
    ) -> Result<(), StoreError> {
        let key = new.key.clone();
        let _guard = self.db.mutation_guard();
        self.prepare_guarded(ns, sn, lease, new)?;
        let d = self.driver(sn)?;
        let rec = self.db.get_snapshot_record(ns, canonical(sn), &key)?;
        if let Err(e) = d.adopt(&rec.backend_key, staged) {
            if let Err(undo) = self.remove(ns, sn, &key) {
                tracing::error!(error = %undo, "cannot remove snapshot after a failed adopt");
            }
            return Err(e.into());
        }
        Ok(())
    }

    pub fn mounts(&self, ns: &str, sn: &str, key: &str) -> Result<Vec<Mount>, StoreError> {
        let d = self.driver(sn)?;
        let rec = self.db.get_snapshot_record(ns, canonical(sn), key)?;
        Ok(d.mounts(&rec.backend_key)?)
    }

    pub fn commit(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<(), StoreError> {
        let d = self.driver(sn)?;
        let sn = canonical(sn);
        let _guard = self.db.mutation_guard();
        self.db
            .commit_snapshot_with(ns, sn, name, key, labels, lease, |new, old| {
                d.commit(&new.backend_key, &old.backend_key, new.labels.clone())
                    .map_err(StoreError::from)
            })?;
        self.publish(
            ns,
            Event::SnapshotCommit {
                key: key.to_owned(),
                name: name.to_owned(),
                snapshotter: sn.to_owned(),
            },
        );
        Ok(())
    }

    /// Removes the record of `key` (refused while it has children). The driver snapshot goes
    /// with the next collection, which this wakes, as containerd's metadata snapshotter leaves it
    /// to its collector: one transaction here, no directory work while the client waits.
    pub fn remove(&self, ns: &str, sn: &str, key: &str) -> Result<(), StoreError> {
        self.driver(sn)?;
        let sn = canonical(sn);
        self.db.remove_snapshot_record(ns, sn, key)?;
        self.publish(
            ns,
            Event::SnapshotRemove {
                key: key.to_owned(),
                snapshotter: sn.to_owned(),
            },
        );
        Ok(())
    }

    pub fn stat(&self, ns: &str, sn: &str, key: &str) -> Result<Info, StoreError> {
        let d = self.driver(sn)?;
        let rec = self.db.get_snapshot_record(ns, canonical(sn), key)?;
        let kind = d.stat(&rec.backend_key)?.kind();
        Ok(info(&rec, kind))
    }

    pub fn update(
        &self,
        ns: &str,
        sn: &str,
        want: &Info,
        paths: &[String],
    ) -> Result<Info, StoreError> {
        let d = self.driver(sn)?;
        let sn = canonical(sn);
        let rec = self
            .db
            .update_snapshot_record(ns, sn, &want.name, &want.labels, paths)?;
        let kind = d.stat(&rec.backend_key)?.kind();
        Ok(info(&rec, kind))
    }

    pub fn list(&self, ns: &str, sn: &str) -> Result<Vec<Info>, StoreError> {
        let d = self.driver(sn)?;
        let recs = self.db.list_snapshot_records(ns, canonical(sn))?;
        let mut kinds: HashMap<String, Kind> = HashMap::new();
        d.walk(&mut |i| {
            kinds.insert(i.name.clone(), i.kind());
            true
        })?;
        Ok(recs
            .iter()
            // A record whose driver snapshot is gone (crash mid-operation) is not listed.
            .filter_map(|r| kinds.get(&r.backend_key).map(|k| info(r, *k)))
            .collect())
    }

    pub fn usage(&self, ns: &str, sn: &str, key: &str) -> Result<Usage, StoreError> {
        let d = self.driver(sn)?;
        let rec = self.db.get_snapshot_record(ns, canonical(sn), key)?;
        Ok(d.usage(&rec.backend_key)?)
    }

    pub fn cleanup(&self, sn: &str) -> Result<(), StoreError> {
        Ok(self.driver(sn)?.cleanup()?)
    }
}

#[cfg(test)]
mod tests;
