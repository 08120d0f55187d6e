//! Namespaced snapshot records over the drivers.
//!
//! A driver's keys are global; namespaces are added here, as containerd's metadata layer does:
//! `(namespace, snapshotter, key)` maps to a driver key `<namespace>/<seq>/<key>`, unique even
//! when a key is reused after removal. Parents are recorded by namespace key. Labels live here
//! (the driver gets a copy), so Stat and Walk answer from one place.

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::leases::attach;
use crate::record::{
    apply_label_paths, decode, encode, ensure_namespace, now_nanos, validate_labels,
};
use crate::schema::{META, SNAPSHOTS};
use crate::{MetaError, MetadataDb};

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// The key within the namespace (filled from the table key).
    #[serde(skip)]
    pub key: String,
    /// The driver's key for this snapshot.
    pub backend_key: String,
    /// The namespace key of the parent, or empty.
    #[serde(default)]
    pub parent: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn table_key(ns: &str, sn: &str, key: &str) -> String {
    format!("snapshots/{ns}/{sn}/{key}")
}

fn get(
    t: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static [u8]>,
    ns: &str,
    sn: &str,
    key: &str,
) -> Result<Option<SnapshotRecord>, MetaError> {
    match t.get((ns, sn, key))? {
        Some(v) => {
            let mut r: SnapshotRecord = decode(&table_key(ns, sn, key), v.value())?;
            r.key = key.to_owned();
            Ok(Some(r))
        }
        None => Ok(None),
    }
}

fn next_seq(wtx: &redb::WriteTransaction) -> Result<u64, MetaError> {
    let mut meta = wtx.open_table(META)?;
    let n = meta.get("snapshot_seq")?.map(|v| v.value()).unwrap_or(0) + 1;
    meta.insert("snapshot_seq", n)?;
    Ok(n)
}

impl MetadataDb {
    /// Records a new snapshot `key` on `parent` (a namespace key or ""); returns the driver's key
    /// for it and for its parent.
    pub fn create_snapshot_record(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<(SnapshotRecord, String), MetaError> {
        self.create_snapshot_with(ns, sn, key, parent, labels, lease, |rec, bparent| {
            Ok::<_, MetaError>((rec.clone(), bparent.to_owned()))
        })
    }

    /// Records a new snapshot `key` on `parent` and, in the same transaction, runs `driver` with
    /// the record and the parent's driver key (the driver's Prepare or View): the transaction is
    /// lent to the driver's metastore (see [`MetadataDb::database`]), so both records commit
    /// together, with one durable commit, or neither does.
    #[allow(clippy::too_many_arguments)]
    pub fn create_snapshot_with<T, E: From<MetaError>>(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
        driver: impl FnOnce(&SnapshotRecord, &str) -> Result<T, E>,
    ) -> Result<T, E> {
        let (wtx, (rec, bparent)) = self.write_new_record(ns, sn, key, parent, labels, lease)?;
        self.commit_with_driver(wtx, || driver(&rec, &bparent))
    }

    /// The record half of [`MetadataDb::create_snapshot_with`], in a transaction left open.
    fn write_new_record(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<(redb::WriteTransaction, (SnapshotRecord, String)), MetaError> {
        if key.is_empty() {
            return Err(MetaError::InvalidArgument(
                "snapshot key must not be empty".into(),
            ));
        }
        validate_labels(&labels)?;
        let wtx = self.write()?;
        let out = {
            ensure_namespace(&wtx, ns)?;
            let mut t = wtx.open_table(SNAPSHOTS)?;
            if get(&t, ns, sn, key)?.is_some() {
                return Err(MetaError::AlreadyExists(format!("snapshot {key:?}")));
            }
            let backend_parent = if parent.is_empty() {
                String::new()
            } else {
                get(&t, ns, sn, parent)?
                    .ok_or_else(|| {
                        MetaError::NotFound(format!("parent snapshot {parent:?} does not exist"))
                    })?
                    .backend_key
            };
            let now = now_nanos();
            let rec = SnapshotRecord {
                key: key.to_owned(),
                backend_key: format!("{ns}/{}/{key}", next_seq(&wtx)?),
                parent: parent.to_owned(),
                labels,
                created_at: now,
                updated_at: now,
            };
            t.insert((ns, sn, key), encode(&rec)?.as_slice())?;
            if let Some(lease) = lease {
                attach(&wtx, ns, lease, &format!("snapshots/{sn}"), key)?;
            }
            (rec, backend_parent)
        };
        Ok((wtx, out))
    }

    /// Lends `wtx` to the driver's metastore while `driver` runs, then commits it if both
    /// succeeded and runs what the driver left for after the commit.
    fn commit_with_driver<T, E: From<MetaError>>(
        &self,
        wtx: redb::WriteTransaction,
        driver: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        let (back, out) = self.db.lend(wtx, driver);
        let out = out?;
        back.map_err(MetaError::from)?
            .commit()
            .map_err(MetaError::from)?;
        Ok(out)
    }

    pub fn get_snapshot_record(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
    ) -> Result<SnapshotRecord, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(SNAPSHOTS)?;
        get(&t, ns, sn, key)?.ok_or_else(|| MetaError::NotFound(format!("snapshot {key:?}")))
    }

    pub fn list_snapshot_records(
        &self,
        ns: &str,
        sn: &str,
    ) -> Result<Vec<SnapshotRecord>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for entry in t.range((ns, sn, "")..)? {
            let (k, v) = entry?;
            let (kns, ksn, key) = k.value();
            if kns != ns || ksn != sn {
                break;
            }
            let mut r: SnapshotRecord = decode(&table_key(ns, sn, key), v.value())?;
            r.key = key.to_owned();
            out.push(r);
        }
        Ok(out)
    }

    /// Every snapshot record of every namespace and snapshotter, as `(namespace, snapshotter,
    /// record)` in key order, read in one transaction: what an offline check (`berthd check`)
    /// compares with the drivers, without knowing beforehand which snapshotters the records name.
    pub fn all_snapshot_records(&self) -> Result<Vec<(String, String, SnapshotRecord)>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let (ns, sn, key) = k.value();
            let mut r: SnapshotRecord = decode(&table_key(ns, sn, key), v.value())?;
            r.key = key.to_owned();
            out.push((ns.to_owned(), sn.to_owned(), r));
        }
        Ok(out)
    }

    /// Replaces the record of active `key` with one for committed `name`; returns the new record
    /// and the old one.
    pub fn commit_snapshot_record(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<(SnapshotRecord, SnapshotRecord), MetaError> {
        self.commit_snapshot_with(ns, sn, name, key, labels, lease, |new, old| {
            Ok::<_, MetaError>((new.clone(), old.clone()))
        })
    }

    /// Replaces the record of active `key` with one for committed `name` and, in the same
    /// transaction (lent, as for [`MetadataDb::create_snapshot_with`]), runs `driver` with the new
    /// record and the old one (the driver's Commit).
    #[allow(clippy::too_many_arguments)]
    pub fn commit_snapshot_with<T, E: From<MetaError>>(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
        driver: impl FnOnce(&SnapshotRecord, &SnapshotRecord) -> Result<T, E>,
    ) -> Result<T, E> {
        let (wtx, (new, old)) = self.write_commit_record(ns, sn, name, key, labels, lease)?;
        self.commit_with_driver(wtx, || driver(&new, &old))
    }

    /// The record half of [`MetadataDb::commit_snapshot_with`], in a transaction left open.
    fn write_commit_record(
        &self,
        ns: &str,
        sn: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<(redb::WriteTransaction, (SnapshotRecord, SnapshotRecord)), MetaError> {
        if name.is_empty() {
            return Err(MetaError::InvalidArgument(
                "snapshot name must not be empty".into(),
            ));
        }
        validate_labels(&labels)?;
        let wtx = self.write()?;
        let out = {
            let mut t = wtx.open_table(SNAPSHOTS)?;
            if get(&t, ns, sn, name)?.is_some() {
                return Err(MetaError::AlreadyExists(format!("snapshot {name:?}")));
            }
            let old = get(&t, ns, sn, key)?
                .ok_or_else(|| MetaError::NotFound(format!("snapshot {key:?}")))?;
            // The commit's labels replace the active snapshot's, as in containerd.
            let now = now_nanos();
            let rec = SnapshotRecord {
                key: name.to_owned(),
                backend_key: format!("{ns}/{}/{name}", next_seq(&wtx)?),
                parent: old.parent.clone(),
                labels,
                created_at: now,
                updated_at: now,
            };
            t.remove((ns, sn, key))?;
            t.insert((ns, sn, name), encode(&rec)?.as_slice())?;
            if let Some(lease) = lease {
                attach(&wtx, ns, lease, &format!("snapshots/{sn}"), name)?;
            }
            (rec, old)
        };
        Ok((wtx, out))
    }

    /// Deletes a record without waking the collector: for tests that leave a driver snapshot
    /// without its record.
    pub fn delete_snapshot_record(&self, ns: &str, sn: &str, key: &str) -> Result<(), MetaError> {
        let wtx = self.write()?;
        wtx.open_table(SNAPSHOTS)?.remove((ns, sn, key))?;
        wtx.commit()?;
        Ok(())
    }

    /// Removes the record of a snapshot without children; returns it.
    pub fn remove_snapshot_record(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
    ) -> Result<SnapshotRecord, MetaError> {
        let wtx = self.write()?;
        let rec = {
            let mut t = wtx.open_table(SNAPSHOTS)?;
            let rec = get(&t, ns, sn, key)?
                .ok_or_else(|| MetaError::NotFound(format!("snapshot {key:?}")))?;
            for entry in t.range((ns, sn, "")..)? {
                let (k, v) = entry?;
                let (kns, ksn, child) = k.value();
                if kns != ns || ksn != sn {
                    break;
                }
                let r: SnapshotRecord = decode(&table_key(ns, sn, child), v.value())?;
                if r.parent == key {
                    tracing::debug!(
                        snapshot = key,
                        child,
                        "remove refused: snapshot has a child"
                    );
                    return Err(MetaError::FailedPrecondition(
                        "cannot remove snapshot with child".into(),
                    ));
                }
            }
            t.remove((ns, sn, key))?;
            rec
        };
        wtx.commit()?;
        self.dereferenced();
        Ok(rec)
    }

    pub fn update_snapshot_record(
        &self,
        ns: &str,
        sn: &str,
        key: &str,
        labels: &BTreeMap<String, String>,
        paths: &[String],
    ) -> Result<SnapshotRecord, MetaError> {
        validate_labels(labels)?;
        let wtx = self.write()?;
        let rec = {
            let mut t = wtx.open_table(SNAPSHOTS)?;
            let mut rec = get(&t, ns, sn, key)?
                .ok_or_else(|| MetaError::NotFound(format!("snapshot {key:?}")))?;
            let other = apply_label_paths(&mut rec.labels, labels, paths);
            if let Some(p) = other.first() {
                return Err(MetaError::InvalidArgument(format!(
                    "cannot update {p:?} field on snapshot {key:?}"
                )));
            }
            rec.updated_at = now_nanos();
            t.insert((ns, sn, key), encode(&rec)?.as_slice())?;
            rec
        };
        wtx.commit()?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_namespaced_and_parents_checked() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        let (a, bp) = db
            .create_snapshot_record("n1", "native", "a", "", BTreeMap::new(), None)
            .unwrap();
        assert!(bp.is_empty());
        assert!(a.backend_key.starts_with("n1/"));
        let (a2, _) = db
            .create_snapshot_record("n2", "native", "a", "", BTreeMap::new(), None)
            .unwrap();
        assert_ne!(a.backend_key, a2.backend_key);
        assert!(matches!(
            db.create_snapshot_record("n1", "native", "b", "missing", BTreeMap::new(), None),
            Err(MetaError::NotFound(_))
        ));
        let (c, _) = db
            .commit_snapshot_record("n1", "native", "A", "a", BTreeMap::new(), None)
            .unwrap();
        let (_, parent_backend) = db
            .create_snapshot_record("n1", "native", "b", "A", BTreeMap::new(), None)
            .unwrap();
        assert_eq!(parent_backend, c.backend_key);
        assert!(matches!(
            db.remove_snapshot_record("n1", "native", "A"),
            Err(MetaError::FailedPrecondition(_))
        ));
        db.remove_snapshot_record("n1", "native", "b").unwrap();
        db.remove_snapshot_record("n1", "native", "A").unwrap();
        assert_eq!(db.list_snapshot_records("n1", "native").unwrap().len(), 0);
        assert_eq!(db.list_snapshot_records("n2", "native").unwrap().len(), 1);
    }

    #[test]
    fn all_records_span_namespaces_and_snapshotters() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        for (ns, sn, key) in [
            ("b", "native", "x"),
            ("a", "overlayfs", "y"),
            ("a", "native", "z"),
        ] {
            db.create_snapshot_record(ns, sn, key, "", BTreeMap::new(), None)
                .unwrap();
        }
        let all: Vec<(String, String, String)> = db
            .all_snapshot_records()
            .unwrap()
            .into_iter()
            .map(|(ns, sn, r)| (ns, sn, r.key))
            .collect();
        let want = [
            ("a", "native", "z"),
            ("a", "overlayfs", "y"),
            ("b", "native", "x"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
        assert_eq!(all, want);
    }
}
