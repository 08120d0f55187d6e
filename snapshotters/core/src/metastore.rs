//! Snapshot metadata for drivers: ids, kinds, parents, labels and committed usage.
//!
//! In berthd the tables live in the daemon's metadata database (`meta.redb`), named after the
//! driver (`snapshotter/<id>/snapshots`, …; [`MetaStore::open_shared`]), so that a Prepare,
//! View or Commit changes the namespaced record and the driver's record in **one** transaction
//! with one durable commit: the snapshots store lends its transaction while it calls the driver
//! and [`MetaStore::write`] joins it (see `berth_redb`'s `lent` module). A driver opened alone
//! (the conformance suite, `berthd snapshotter serve`) keeps them in a file of its own,
//! `<root>/metadata.redb` ([`MetaStore::open`]); a root made by an older berthd has its file
//! moved into the shared database at the first start.
//!
//! A driver does its filesystem work inside [`MetaStore::write`]: the metadata change commits
//! only if the closure succeeds, so a failure leaves no record, and a crash leaves at most a
//! directory without a record, which the driver's `cleanup` removes (see [`MetaStore::ids`]).
//! Inside a lent transaction `write` returning `Ok` means "joined", not yet "committed": the
//! lender commits, or aborts and then runs the driver's `cleanup`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::{Info, Kind, SnapshotError, Usage};

/// The names of a store's three tables: `meta` (schema version, next id), `snapshots` (key ->
/// record) and `children` ((parent key, child key) -> ()).
struct Tables {
    meta: String,
    snapshots: String,
    children: String,
}

impl Tables {
    /// In a driver's own file.
    fn own() -> Tables {
        Tables::prefixed("")
    }

    /// In the shared database, under the driver's plugin id.
    fn shared(driver: &str) -> Tables {
        Tables::prefixed(&format!("snapshotter/{driver}/"))
    }

    fn prefixed(prefix: &str) -> Tables {
        Tables {
            meta: format!("{prefix}meta"),
            snapshots: format!("{prefix}snapshots"),
            children: format!("{prefix}children"),
        }
    }

    fn meta(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.meta)
    }

    fn snapshots(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.snapshots)
    }

    fn children(&self) -> TableDefinition<'_, (&'static str, &'static str), ()> {
        TableDefinition::new(&self.children)
    }
}

pub const SCHEMA_VERSION: u64 = 1;

#[derive(Serialize, Deserialize, Clone)]
struct Record {
    id: u64,
    kind: Kind,
    #[serde(default)]
    parent: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    size: i64,
    #[serde(default)]
    inodes: i64,
}

impl Record {
    fn info(&self, key: &str) -> Info {
        Info {
            name: key.to_owned(),
            parent: self.parent.clone(),
            kind: Some(self.kind),
            labels: self.labels.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// An active or view snapshot as a driver needs it to build mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    pub kind: Kind,
    /// Ids of the parent chain, nearest first.
    pub parent_ids: Vec<String>,
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, SnapshotError> {
    serde_json::from_slice(bytes).map_err(|source| SnapshotError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

fn encode(r: &Record) -> Result<Vec<u8>, SnapshotError> {
    serde_json::to_vec(r).map_err(SnapshotError::Encode)
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), SnapshotError> {
    for (k, v) in labels {
        if k.len() + v.len() > 4096 {
            return Err(SnapshotError::InvalidArgument(format!(
                "label key and value length ({} bytes) greater than maximum size (4096 bytes), key: {k}",
                k.len() + v.len()
            )));
        }
    }
    Ok(())
}

pub struct MetaStore {
    /// Reopens itself after an I/O error (a full disk): the driver serves again as soon as
    /// there is room. Once closed, every call fails with redb's `DatabaseClosed`.
    db: Arc<berth_redb::Db>,
    path: PathBuf,
    tables: Tables,
    /// The database belongs to the daemon's metadata store, which closes it.
    shared: bool,
}

/// A write transaction handed to a driver's closure.
pub struct Tx<'a> {
    wtx: &'a redb::WriteTransaction,
    tables: &'a Tables,
    after_commit: &'a mut berth_redb::AfterCommit,
}

fn read_record<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    key: &str,
) -> Result<Option<Record>, SnapshotError> {
    match t.get(key)? {
        Some(v) => Ok(Some(decode(key, v.value())?)),
        None => Ok(None),
    }
}

/// Ids of `parent` and its ancestors, nearest first.
fn parent_chain<T: ReadableTable<&'static str, &'static [u8]>>(
    t: &T,
    mut parent: String,
) -> Result<Vec<String>, SnapshotError> {
    let mut ids = Vec::new();
    while !parent.is_empty() {
        let rec = read_record(t, &parent)?
            .ok_or_else(|| SnapshotError::NotFound(format!("missing parent {parent:?}")))?;
        ids.push(rec.id.to_string());
        parent = rec.parent;
    }
    Ok(ids)
}

impl MetaStore {
    /// The driver's own file at `path` (a driver run alone).
    pub fn open(path: &Path) -> Result<MetaStore, SnapshotError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(SnapshotError::io("create", dir))?;
        }
        let db = berth_redb::Db::create(path).map_err(SnapshotError::open(path))?;
        let ms = MetaStore {
            db: Arc::new(db),
            path: path.to_owned(),
            tables: Tables::own(),
            shared: false,
        };
        let wtx = ms.begin_write()?;
        ms.init_tables(&wtx)?;
        wtx.commit()?;
        Ok(ms)
    }

    /// The tables of driver `driver` in the daemon's shared database `db`. When `legacy` (the
    /// driver's own file from an older berthd) exists, its records move into the shared tables
    /// in the same transaction that creates them, and the file is removed once that committed.
    pub fn open_shared(
        db: Arc<berth_redb::Db>,
        driver: &str,
        legacy: &Path,
    ) -> Result<MetaStore, SnapshotError> {
        let ms = MetaStore {
            path: db.path().to_owned(),
            db,
            tables: Tables::shared(driver),
            shared: true,
        };
        let wtx = ms.begin_write()?;
        let fresh = ms.init_tables(&wtx)?;
        if fresh && legacy.exists() {
            let moved = ms.import(&wtx, legacy)?;
            tracing::info!(file = %legacy.display(), snapshots = moved, "moving a snapshotter's metadata into the metadata database");
        }
        wtx.commit()?;
        // Moved (now or by an earlier start that stopped before this): the file is stale.
        if legacy.exists() {
            std::fs::remove_file(legacy).map_err(SnapshotError::io("remove", legacy))?;
        }
        Ok(ms)
    }

    /// Creates the tables and checks the schema version; true when they were new.
    fn init_tables(&self, wtx: &redb::WriteTransaction) -> Result<bool, SnapshotError> {
        wtx.open_table(self.tables.snapshots())?;
        wtx.open_table(self.tables.children())?;
        let mut meta = wtx.open_table(self.tables.meta())?;
        let found = meta.get("schema_version")?.map(|v| v.value());
        match found {
            Some(found) if found > SCHEMA_VERSION => Err(SnapshotError::SchemaTooNew {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            }),
            Some(_) => Ok(false),
            None => {
                meta.insert("schema_version", SCHEMA_VERSION)?;
                Ok(true)
            }
        }
    }

    /// Copies every table of a driver's own file into this store's tables; returns how many
    /// snapshots it held.
    fn import(&self, wtx: &redb::WriteTransaction, legacy: &Path) -> Result<usize, SnapshotError> {
        let old = MetaStore::open(legacy)?;
        let own = Tables::own();
        let rtx = old.begin_read()?;
        let mut n = 0;
        {
            let from = rtx.open_table(own.snapshots())?;
            let mut to = wtx.open_table(self.tables.snapshots())?;
            for entry in from.iter()? {
                let (k, v) = entry?;
                to.insert(k.value(), v.value())?;
                n += 1;
            }
        }
        {
            let from = rtx.open_table(own.children())?;
            let mut to = wtx.open_table(self.tables.children())?;
            for entry in from.iter()? {
                let (k, _) = entry?;
                to.insert(k.value(), ())?;
            }
        }
        {
            let from = rtx.open_table(own.meta())?;
            let mut to = wtx.open_table(self.tables.meta())?;
            for entry in from.iter()? {
                let (k, v) = entry?;
                if k.value() == "schema_version" && v.value() > SCHEMA_VERSION {
                    return Err(SnapshotError::SchemaTooNew {
                        path: legacy.to_owned(),
                        found: v.value(),
                        supported: SCHEMA_VERSION,
                    });
                }
                to.insert(k.value(), v.value())?;
            }
        }
        drop(rtx);
        old.close()?;
        Ok(n)
    }

    fn begin_read(&self) -> Result<redb::ReadTransaction, SnapshotError> {
        Ok(self.db.begin_read()?)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction, SnapshotError> {
        Ok(self.db.begin_write()?)
    }

    /// Closes the file as redb shuts down cleanly (so the next open needs no repair) and
    /// releases its lock. Every later call fails with `DatabaseClosed`; closing again does
    /// nothing. A write transaction still running keeps the file open until it ends.
    pub fn close(&self) -> Result<(), SnapshotError> {
        if self.shared {
            // The metadata store closes the shared database after every driver on it.
            return Ok(());
        }
        self.db.close().map_err(|source| SnapshotError::Close {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` in a write transaction; commits only if it returns Ok. When the snapshots store
    /// lent this thread a transaction of the same database, `f` runs in that one and the
    /// lender commits (or aborts) it with its own changes.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, SnapshotError>,
    ) -> Result<T, SnapshotError> {
        let tables = &self.tables;
        let joined = self.db.join_lent(|wtx, after_commit| {
            f(&mut Tx {
                wtx,
                tables,
                after_commit,
            })
        });
        let f = match joined {
            Ok(out) => return out,
            Err(berth_redb::JoinError::NotLent(f)) => f,
            Err(berth_redb::JoinError::Nested) => {
                return Err(SnapshotError::Nested(self.path.clone()))
            }
        };
        let wtx = self.begin_write()?;
        let mut after_commit = berth_redb::AfterCommit::default();
        let out = f(&wtx, &mut after_commit)?;
        wtx.commit()?;
        after_commit.run();
        Ok(out)
    }

    /// Info, id and stored usage of any snapshot.
    pub fn get_info(&self, key: &str) -> Result<(String, Info, Usage), SnapshotError> {
        let rtx = self.begin_read()?;
        let t = rtx.open_table(self.tables.snapshots())?;
        let rec = read_record(&t, key)?
            .ok_or_else(|| SnapshotError::NotFound(format!("snapshot {key}")))?;
        Ok((
            rec.id.to_string(),
            rec.info(key),
            Usage {
                size: rec.size,
                inodes: rec.inodes,
            },
        ))
    }

    /// An active or view snapshot with its parent chain.
    pub fn get_snapshot(&self, key: &str) -> Result<Snapshot, SnapshotError> {
        let rtx = self.begin_read()?;
        let t = rtx.open_table(self.tables.snapshots())?;
        let rec = read_record(&t, key)?
            .ok_or_else(|| SnapshotError::NotFound(format!("snapshot {key}")))?;
        if rec.kind == Kind::Committed {
            return Err(SnapshotError::FailedPrecondition(format!(
                "requested snapshot {key} not active or view"
            )));
        }
        Ok(Snapshot {
            id: rec.id.to_string(),
            kind: rec.kind,
            parent_ids: parent_chain(&t, rec.parent)?,
        })
    }

    pub fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        let rtx = self.begin_read()?;
        let t = rtx.open_table(self.tables.snapshots())?;
        for entry in t.iter()? {
            let (k, v) = entry?;
            let rec = decode(k.value(), v.value())?;
            if !f(&rec.info(k.value())) {
                break;
            }
        }
        Ok(())
    }

    /// id -> key of every snapshot, for a driver's cleanup of directories with no record.
    pub fn ids(&self) -> Result<HashMap<String, String>, SnapshotError> {
        let rtx = self.begin_read()?;
        let t = rtx.open_table(self.tables.snapshots())?;
        let mut out = HashMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.insert(
                decode(k.value(), v.value())?.id.to_string(),
                k.value().to_owned(),
            );
        }
        Ok(out)
    }
}

impl Tx<'_> {
    /// Runs `f` once this transaction has committed — not when `write` returns, which inside a
    /// lent transaction is before the lender commits — and never if it aborts: for disk work
    /// that may not be undone, such as deleting what a commit replaced.
    pub fn after_commit(&mut self, f: impl FnOnce() + 'static) {
        self.after_commit.push(f);
    }

    pub fn create_snapshot(
        &mut self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Snapshot, SnapshotError> {
        // The one check of the drivers that record through here (Committed is commit's).
        kind.ensure_creatable()?;
        if key.is_empty() {
            return Err(SnapshotError::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        validate_labels(&labels)?;
        let mut t = self.wtx.open_table(self.tables.snapshots())?;
        if read_record(&t, key)?.is_some() {
            return Err(SnapshotError::AlreadyExists(format!("snapshot {key}")));
        }
        let parent_ids = if parent.is_empty() {
            Vec::new()
        } else {
            let prec = read_record(&t, parent)?.ok_or_else(|| {
                SnapshotError::NotFound(format!("missing parent {parent:?} bucket"))
            })?;
            if prec.kind != Kind::Committed {
                return Err(SnapshotError::InvalidArgument(format!(
                    "parent {parent:?} is not committed snapshot"
                )));
            }
            parent_chain(&t, parent.to_owned())?
        };
        let id = {
            let mut meta = self.wtx.open_table(self.tables.meta())?;
            let next = meta.get("next_id")?.map(|v| v.value()).unwrap_or(1);
            meta.insert("next_id", next + 1)?;
            next
        };
        let now = now_nanos();
        let rec = Record {
            id,
            kind,
            parent: parent.to_owned(),
            labels,
            created_at: now,
            updated_at: now,
            size: 0,
            inodes: 0,
        };
        t.insert(key, encode(&rec)?.as_slice())?;
        if !parent.is_empty() {
            self.wtx
                .open_table(self.tables.children())?
                .insert((parent, key), ())?;
        }
        Ok(Snapshot {
            id: id.to_string(),
            kind,
            parent_ids,
        })
    }

    /// Commits active `key` as `name` with its final usage. Returns the snapshot id.
    pub fn commit_active(
        &mut self,
        key: &str,
        name: &str,
        usage: Usage,
        labels: BTreeMap<String, String>,
    ) -> Result<String, SnapshotError> {
        validate_labels(&labels)?;
        let mut t = self.wtx.open_table(self.tables.snapshots())?;
        if read_record(&t, name)?.is_some() {
            return Err(SnapshotError::AlreadyExists(format!(
                "committed snapshot {name}"
            )));
        }
        let rec = read_record(&t, key)?.ok_or_else(|| {
            SnapshotError::NotFound(format!("failed to get active snapshot {key:?}"))
        })?;
        if rec.kind != Kind::Active {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} is not active"
            )));
        }
        let now = now_nanos();
        // The commit's labels replace the active snapshot's, as in containerd: an active
        // snapshot's labels describe work in progress, not the result.
        let committed = Record {
            id: rec.id,
            kind: Kind::Committed,
            parent: rec.parent.clone(),
            labels,
            created_at: now,
            updated_at: now,
            size: usage.size,
            inodes: usage.inodes,
        };
        t.remove(key)?;
        t.insert(name, encode(&committed)?.as_slice())?;
        if !rec.parent.is_empty() {
            let mut children = self.wtx.open_table(self.tables.children())?;
            children.remove((rec.parent.as_str(), key))?;
            children.insert((rec.parent.as_str(), name), ())?;
        }
        Ok(rec.id.to_string())
    }

    /// Removes a snapshot without children. Returns its id and kind.
    pub fn remove(&mut self, key: &str) -> Result<(String, Kind), SnapshotError> {
        let mut t = self.wtx.open_table(self.tables.snapshots())?;
        let rec = read_record(&t, key)?
            .ok_or_else(|| SnapshotError::NotFound(format!("snapshot {key}")))?;
        let mut children = self.wtx.open_table(self.tables.children())?;
        let has_child = match children.range((key, "")..)?.next() {
            Some(entry) => entry?.0.value().0 == key,
            None => false,
        };
        if has_child {
            return Err(SnapshotError::FailedPrecondition(
                "cannot remove snapshot with child".into(),
            ));
        }
        t.remove(key)?;
        if !rec.parent.is_empty() {
            children.remove((rec.parent.as_str(), key))?;
        }
        Ok((rec.id.to_string(), rec.kind))
    }

    /// Id, info and stored usage inside the transaction.
    pub fn get_info(&mut self, key: &str) -> Result<(String, Info, Usage), SnapshotError> {
        let t = self.wtx.open_table(self.tables.snapshots())?;
        let rec = read_record(&t, key)?
            .ok_or_else(|| SnapshotError::NotFound(format!("snapshot {key}")))?;
        Ok((
            rec.id.to_string(),
            rec.info(key),
            Usage {
                size: rec.size,
                inodes: rec.inodes,
            },
        ))
    }

    pub fn update_info(&mut self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        validate_labels(&info.labels)?;
        let mut t = self.wtx.open_table(self.tables.snapshots())?;
        let mut rec = read_record(&t, &info.name)?
            .ok_or_else(|| SnapshotError::NotFound(format!("snapshot {}", info.name)))?;
        if paths.is_empty() {
            rec.labels = info.labels.clone();
        }
        for path in paths {
            if path == "labels" {
                rec.labels = info.labels.clone();
            } else if let Some(k) = path.strip_prefix("labels.") {
                match info.labels.get(k).filter(|v| !v.is_empty()) {
                    Some(v) => rec.labels.insert(k.to_owned(), v.clone()),
                    None => rec.labels.remove(k),
                };
            } else {
                return Err(SnapshotError::InvalidArgument(format!(
                    "cannot update {path:?} field on snapshot {:?}",
                    info.name
                )));
            }
        }
        rec.updated_at = now_nanos();
        t.insert(info.name.as_str(), encode(&rec)?.as_slice())?;
        Ok(rec.info(&info.name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_rules() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("m.redb")).unwrap();
        let none = BTreeMap::new;
        let a = m
            .write(|tx| tx.create_snapshot(Kind::Active, "a", "", none()))
            .unwrap();
        assert!(a.parent_ids.is_empty());
        assert!(matches!(
            m.write(|tx| tx.create_snapshot(Kind::Active, "a", "", none())),
            Err(SnapshotError::AlreadyExists(_))
        ));
        assert!(matches!(
            m.write(|tx| tx.create_snapshot(Kind::Active, "b", "a", none())),
            Err(SnapshotError::InvalidArgument(_))
        ));
        // Committed snapshots are made by commit, never created.
        let e = m
            .write(|tx| tx.create_snapshot(Kind::Committed, "c", "", none()))
            .unwrap_err();
        assert!(matches!(e, SnapshotError::InvalidArgument(_)), "{e}");
        assert!(e
            .to_string()
            .contains("only snapshots of type Active or View"));
        assert!(m.get_info("c").is_err());
        m.write(|tx| tx.commit_active("a", "A", Usage { size: 5, inodes: 1 }, none()))
            .unwrap();
        let b = m
            .write(|tx| tx.create_snapshot(Kind::Active, "b", "A", none()))
            .unwrap();
        assert_eq!(b.parent_ids, vec![a.id.clone()]);
        let v = m
            .write(|tx| tx.create_snapshot(Kind::View, "v", "A", none()))
            .unwrap();
        assert_eq!(v.kind, Kind::View);
        assert!(matches!(
            m.write(|tx| tx.commit_active("v", "V", Usage::default(), none())),
            Err(SnapshotError::FailedPrecondition(_))
        ));
        assert!(matches!(
            m.write(|tx| tx.remove("A")),
            Err(SnapshotError::FailedPrecondition(_))
        ));
        m.write(|tx| tx.remove("b")).unwrap();
        m.write(|tx| tx.remove("v")).unwrap();
        m.write(|tx| tx.remove("A")).unwrap();
        assert!(m.ids().unwrap().is_empty());
    }

    #[test]
    fn a_drivers_own_file_moves_into_the_shared_database_once() {
        let dir = tempfile::tempdir().unwrap();
        let legacy = dir.path().join("overlayfs/metadata.redb");
        let none = BTreeMap::new;
        {
            let old = MetaStore::open(&legacy).unwrap();
            old.write(|tx| tx.create_snapshot(Kind::Active, "a", "", none()))
                .unwrap();
            old.write(|tx| tx.commit_active("a", "A", Usage { size: 7, inodes: 2 }, none()))
                .unwrap();
            old.write(|tx| tx.create_snapshot(Kind::Active, "b", "A", none()))
                .unwrap();
            old.close().unwrap();
        }
        let db = Arc::new(berth_redb::Db::create(&dir.path().join("meta.redb")).unwrap());
        let ms = MetaStore::open_shared(db.clone(), "overlayfs", &legacy).unwrap();
        assert!(!legacy.exists(), "the moved file is removed");
        let (id_a, info, usage) = ms.get_info("A").unwrap();
        assert_eq!(info.kind(), Kind::Committed);
        assert_eq!(usage, Usage { size: 7, inodes: 2 });
        assert_eq!(ms.get_snapshot("b").unwrap().parent_ids, vec![id_a]);
        // Children moved too: the parent cannot go while "b" stands on it.
        assert!(matches!(
            ms.write(|tx| tx.remove("A")),
            Err(SnapshotError::FailedPrecondition(_))
        ));
        // Ids continue after the moved ones.
        let c = ms
            .write(|tx| tx.create_snapshot(Kind::Active, "c", "", none()))
            .unwrap();
        assert_eq!(c.id, "3");
        // Another driver's tables in the same database are its own.
        let other = MetaStore::open_shared(db.clone(), "native", &dir.path().join("x")).unwrap();
        assert!(other.ids().unwrap().is_empty());
        // Opening again (a restart) finds the tables and moves nothing.
        drop(ms);
        let ms = MetaStore::open_shared(db, "overlayfs", &legacy).unwrap();
        assert_eq!(ms.ids().unwrap().len(), 3);
    }

    #[test]
    fn failed_closure_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = MetaStore::open(&dir.path().join("m.redb")).unwrap();
        let r: Result<(), _> = m.write(|tx| {
            tx.create_snapshot(Kind::Active, "x", "", BTreeMap::new())?;
            Err(SnapshotError::Storage(redb::StorageError::Io(
                std::io::Error::other("disk full"),
            )))
        });
        assert!(r.is_err());
        assert!(matches!(m.get_info("x"), Err(SnapshotError::NotFound(_))));
    }

    #[test]
    fn close_releases_the_file_and_later_calls_fail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        let m = MetaStore::open(&path).unwrap();
        let second = MetaStore::open(&path).err().expect("the file is locked");
        assert!(
            matches!(second, SnapshotError::AlreadyOpen { .. }),
            "{second:?}"
        );
        let source = std::error::Error::source(&second).unwrap();
        assert!(matches!(
            source.downcast_ref::<redb::DatabaseError>(),
            Some(redb::DatabaseError::DatabaseAlreadyOpen)
        ));

        m.write(|tx| tx.create_snapshot(Kind::Active, "a", "", BTreeMap::new()))
            .unwrap();
        m.close().unwrap();
        m.close().unwrap();
        assert!(matches!(
            m.get_info("a"),
            Err(SnapshotError::Storage(redb::StorageError::DatabaseClosed))
        ));
        let reopened = MetaStore::open(&path).unwrap();
        assert_eq!(reopened.get_info("a").unwrap().1.name, "a");
    }
}
