//! Namespaces: the owners of every other object.

use berth_events::Event;
use std::collections::BTreeMap;

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::schema::{BLOBS, CONTAINERS, IMAGES, LEASES, NAMESPACES, SNAPSHOTS};
use crate::{identifiers, labels, MetaError, MetadataDb};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Namespace {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Serialize, Deserialize, Default)]
struct NamespaceRecord {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

fn decode(name: &str, bytes: &[u8]) -> Result<NamespaceRecord, MetaError> {
    serde_json::from_slice(bytes).map_err(|source| MetaError::Corrupt {
        key: format!("namespaces/{name}"),
        source,
    })
}

fn encode(rec: &NamespaceRecord) -> Vec<u8> {
    // Serialising a map of strings cannot fail.
    serde_json::to_vec(rec).unwrap_or_default()
}

fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), MetaError> {
    for (k, v) in labels {
        labels::validate(k, v)?;
    }
    Ok(())
}

impl MetadataDb {
    pub fn create_namespace(&self, ns: &Namespace) -> Result<(), MetaError> {
        identifiers::validate(&ns.name)?;
        validate_labels(&ns.labels)?;
        let wtx = self.write()?;
        {
            let mut t = wtx.open_table(NAMESPACES)?;
            if t.get(ns.name.as_str())?.is_some() {
                return Err(MetaError::AlreadyExists(format!("namespace {:?}", ns.name)));
            }
            let rec = NamespaceRecord {
                labels: ns.labels.clone(),
            };
            t.insert(ns.name.as_str(), encode(&rec).as_slice())?;
        }
        wtx.commit()?;
        self.publish(
            &ns.name,
            Event::NamespaceCreate {
                name: ns.name.clone(),
                labels: ns.labels.clone(),
            },
        );
        Ok(())
    }

    pub fn get_namespace(&self, name: &str) -> Result<Namespace, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(NAMESPACES)?;
        let v = t
            .get(name)?
            .ok_or_else(|| MetaError::NotFound(format!("namespace {name:?}")))?;
        Ok(Namespace {
            name: name.to_owned(),
            labels: decode(name, v.value())?.labels,
        })
    }

    pub fn list_namespaces(&self) -> Result<Vec<Namespace>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(NAMESPACES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(Namespace {
                name: k.value().to_owned(),
                labels: decode(k.value(), v.value())?.labels,
            });
        }
        Ok(out)
    }

    /// Replaces labels. With no `paths`, the whole label set becomes `ns.labels`; otherwise only
    /// `labels.<key>` paths are applied (an absent or empty value removes the key), as containerd
    /// does. Returns the namespace as stored afterwards.
    pub fn update_namespace(
        &self,
        ns: &Namespace,
        paths: &[String],
    ) -> Result<Namespace, MetaError> {
        validate_labels(&ns.labels)?;
        let wtx = self.write()?;
        let updated = {
            let mut t = wtx.open_table(NAMESPACES)?;
            // As containerd's: labelling a namespace that does not exist yet creates it (its own
            // client and tools label a fresh namespace before first use).
            let mut rec = match t.get(ns.name.as_str())? {
                Some(v) => decode(&ns.name, v.value())?,
                None => {
                    identifiers::validate(&ns.name)?;
                    NamespaceRecord::default()
                }
            };
            if paths.is_empty() {
                rec.labels = ns.labels.clone();
            } else {
                for path in paths {
                    let Some(key) = path.strip_prefix("labels.") else {
                        return Err(MetaError::InvalidArgument(format!(
                            "cannot update {path:?} field"
                        )));
                    };
                    match ns.labels.get(key).filter(|v| !v.is_empty()) {
                        Some(v) => rec.labels.insert(key.to_owned(), v.clone()),
                        None => rec.labels.remove(key),
                    };
                }
            }
            rec.labels.retain(|_, v| !v.is_empty());
            t.insert(ns.name.as_str(), encode(&rec).as_slice())?;
            Namespace {
                name: ns.name.clone(),
                labels: rec.labels,
            }
        };
        wtx.commit()?;
        self.publish(
            &updated.name,
            Event::NamespaceUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        Ok(updated)
    }

    /// Deletes an empty namespace; one that still owns objects is a FailedPrecondition naming what
    /// is left, in containerd's words.
    pub fn delete_namespace(&self, name: &str) -> Result<(), MetaError> {
        let wtx = self.write()?;
        {
            let mut t = wtx.open_table(NAMESPACES)?;
            if t.get(name)?.is_none() {
                return Err(MetaError::NotFound(format!("namespace {name:?}")));
            }
            let mut left = Vec::new();
            for (what, table) in [
                ("images", IMAGES),
                ("blobs", BLOBS),
                ("containers", CONTAINERS),
                ("leases", LEASES),
            ] {
                if has_prefix2(&wtx, table, name)? {
                    left.push(what.to_owned());
                }
            }
            left.extend(snapshotters_in_use(&wtx, name)?);
            if !left.is_empty() {
                return Err(MetaError::FailedPrecondition(format!(
                    "namespace {name:?} must be empty, but it still has {}",
                    left.join(", ")
                )));
            }
            t.remove(name)?;
        }
        wtx.commit()?;
        self.publish(
            name,
            Event::NamespaceDelete {
                name: name.to_owned(),
            },
        );
        Ok(())
    }
}

fn has_prefix2(
    wtx: &redb::WriteTransaction,
    def: TableDefinition<(&str, &str), &[u8]>,
    ns: &str,
) -> Result<bool, MetaError> {
    let t = wtx.open_table(def)?;
    if t.is_empty()? {
        return Ok(false);
    }
    let mut range = t.range((ns, "")..)?;
    let found = match range.next() {
        Some(entry) => entry?.0.value().0 == ns,
        None => false,
    };
    Ok(found)
}

/// `snapshots on "<name>" snapshotter` for each snapshotter holding snapshots of `ns`.
fn snapshotters_in_use(wtx: &redb::WriteTransaction, ns: &str) -> Result<Vec<String>, MetaError> {
    let t = wtx.open_table(SNAPSHOTS)?;
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<String> = None;
    for entry in t.range((ns, "", "")..)? {
        let (k, _) = entry?;
        let (kns, snapshotter, _) = k.value();
        if kns != ns {
            break;
        }
        if last.as_deref() != Some(snapshotter) {
            out.push(format!("snapshots on {snapshotter:?} snapshotter"));
            last = Some(snapshotter.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, MetadataDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        (dir, db)
    }

    fn ns(name: &str, labels: &[(&str, &str)]) -> Namespace {
        Namespace {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn create_get_list_delete() {
        let (_d, db) = db();
        db.create_namespace(&ns("a", &[("k", "v")])).unwrap();
        db.create_namespace(&ns("b", &[])).unwrap();
        assert_eq!(db.get_namespace("a").unwrap(), ns("a", &[("k", "v")]));
        let names: Vec<_> = db
            .list_namespaces()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        let err = db.create_namespace(&ns("a", &[])).unwrap_err();
        assert_eq!(err.to_string(), r#"namespace "a": already exists"#);
        db.delete_namespace("a").unwrap();
        assert!(matches!(db.get_namespace("a"), Err(MetaError::NotFound(_))));
        assert!(matches!(
            db.delete_namespace("a"),
            Err(MetaError::NotFound(_))
        ));
    }

    #[test]
    fn invalid_names_and_labels_are_rejected() {
        let (_d, db) = db();
        assert!(matches!(
            db.create_namespace(&ns("a/b", &[])),
            Err(MetaError::InvalidArgument(_))
        ));
        let big = "x".repeat(5000);
        assert!(matches!(
            db.create_namespace(&ns("a", &[("k", &big)])),
            Err(MetaError::InvalidArgument(_))
        ));
        assert!(db.list_namespaces().unwrap().is_empty());
    }

    #[test]
    fn update_by_field_path_and_whole() {
        let (_d, db) = db();
        db.create_namespace(&ns("a", &[("x", "1"), ("y", "2")]))
            .unwrap();
        let got = db
            .update_namespace(
                &ns("a", &[("x", "9"), ("z", "3")]),
                &["labels.x".into(), "labels.y".into()],
            )
            .unwrap();
        assert_eq!(got, ns("a", &[("x", "9")]));
        let got = db.update_namespace(&ns("a", &[("q", "1")]), &[]).unwrap();
        assert_eq!(got, ns("a", &[("q", "1")]));
        assert!(matches!(
            db.update_namespace(&ns("a", &[]), &["name".into()]),
            Err(MetaError::InvalidArgument(_))
        ));
        // Labelling a namespace that does not exist creates it, as containerd's does.
        let made = db
            .update_namespace(&ns("fresh", &[("k", "v")]), &["labels.k".into()])
            .unwrap();
        assert_eq!(made, ns("fresh", &[("k", "v")]));
        assert_eq!(db.get_namespace("fresh").unwrap(), made);
        assert!(matches!(
            db.update_namespace(&ns("bad/name", &[]), &[]),
            Err(MetaError::InvalidArgument(_))
        ));
    }

    #[test]
    fn non_empty_namespace_cannot_be_deleted() {
        let (_d, db) = db();
        db.create_namespace(&ns("a", &[])).unwrap();
        db.create_namespace(&ns("b", &[])).unwrap();
        let wtx = db.write().unwrap();
        {
            wtx.open_table(IMAGES)
                .unwrap()
                .insert(("a", "img"), b"{}".as_slice())
                .unwrap();
            wtx.open_table(SNAPSHOTS)
                .unwrap()
                .insert(("a", "overlayfs", "k"), b"{}".as_slice())
                .unwrap();
        }
        wtx.commit().unwrap();
        let err = db.delete_namespace("a").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"namespace "a" must be empty, but it still has images, snapshots on "overlayfs" snapshotter: failed precondition"#
        );
        // A neighbour whose name sorts right after is unaffected.
        db.delete_namespace("b").unwrap();
    }

    #[test]
    fn reopen_keeps_data_and_refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = MetadataDb::open(dir.path()).unwrap();
            db.create_namespace(&ns("keep", &[])).unwrap();
        }
        {
            let db = MetadataDb::open(dir.path()).unwrap();
            assert_eq!(db.get_namespace("keep").unwrap().name, "keep");
            let wtx = db.write().unwrap();
            wtx.open_table(crate::schema::META)
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
            wtx.commit().unwrap();
        }
        assert!(matches!(
            MetadataDb::open(dir.path()),
            Err(MetaError::SchemaTooNew { found: 99, .. })
        ));
    }
}
