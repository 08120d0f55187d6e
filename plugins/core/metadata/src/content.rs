//! Namespaced blob records. The bytes live once on disk in the content store; a namespace sees a
//! blob only while it holds a record for it.

use berth_events::Event;
use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::leases::attach;
use crate::record::{
    apply_label_paths, decode, encode, ensure_namespace, now_nanos, validate_labels,
};
use crate::schema::{BLOBS, NAMESPACES};
use crate::{digest, MetaError, MetadataDb};

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlobInfo {
    pub digest: String,
    pub size: i64,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Serialize, Deserialize)]
struct BlobRecord {
    size: i64,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created_at: i64,
    updated_at: i64,
}

impl BlobRecord {
    fn info(self, digest: &str) -> BlobInfo {
        BlobInfo {
            digest: digest.to_owned(),
            size: self.size,
            labels: self.labels,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn not_found(d: &str) -> MetaError {
    MetaError::NotFound(format!("content digest {d}"))
}

impl MetadataDb {
    pub fn blob_info(&self, ns: &str, digest: &str) -> Result<BlobInfo, MetaError> {
        digest::validate(digest)?;
        let rtx = self.read()?;
        let t = rtx.open_table(BLOBS)?;
        let v = t.get((ns, digest))?.ok_or_else(|| not_found(digest))?;
        Ok(decode::<BlobRecord>(&format!("blobs/{ns}/{digest}"), v.value())?.info(digest))
    }

    pub fn list_blobs(&self, ns: &str) -> Result<Vec<BlobInfo>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(BLOBS)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, d) = k.value();
            if kns != ns {
                break;
            }
            out.push(decode::<BlobRecord>(&format!("blobs/{ns}/{d}"), v.value())?.info(d));
        }
        Ok(out)
    }

    /// Every blob record of every namespace, as `(namespace, info)` in key order, read in one
    /// transaction straight from the blob table (not through the namespace list, so a record
    /// whose namespace entry is damaged is still seen): what an offline check compares with the
    /// files on disk.
    pub fn all_blobs(&self) -> Result<Vec<(String, BlobInfo)>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(BLOBS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            let (ns, d) = k.value();
            let info = decode::<BlobRecord>(&format!("blobs/{ns}/{d}"), v.value())?.info(d);
            out.push((ns.to_owned(), info));
        }
        Ok(out)
    }

    /// Records a blob in `ns` (already committed to disk), under `lease` if given.
    pub fn add_blob(
        &self,
        ns: &str,
        digest: &str,
        size: i64,
        labels: BTreeMap<String, String>,
        lease: Option<&str>,
    ) -> Result<BlobInfo, MetaError> {
        digest::validate(digest)?;
        validate_labels(&labels)?;
        let wtx = self.write()?;
        let info = {
            ensure_namespace(&wtx, ns)?;
            let mut t = wtx.open_table(BLOBS)?;
            if t.get((ns, digest))?.is_some() {
                drop(t);
                // The writer's lease holds the blob all the same, as containerd's commit does:
                // the client goes on as if it had written it, so nothing may collect it now.
                if let Some(lease) = lease {
                    attach(&wtx, ns, lease, "content", digest)?;
                    wtx.commit()?;
                }
                return Err(MetaError::AlreadyExists(format!("content {digest}")));
            }
            let now = now_nanos();
            let rec = BlobRecord {
                size,
                labels,
                created_at: now,
                updated_at: now,
            };
            t.insert((ns, digest), encode(&rec)?.as_slice())?;
            if let Some(lease) = lease {
                attach(&wtx, ns, lease, "content", digest)?;
            }
            rec.info(digest)
        };
        wtx.commit()?;
        self.publish(
            ns,
            Event::ContentCreate {
                digest: digest.to_owned(),
                size,
            },
        );
        Ok(info)
    }

    /// Whether `ns` records `digest`. When it does and `lease` is given, the lease holds the blob
    /// from now on, decided in one transaction: a writer that answers "already exists" must not
    /// let a collection remove what its client now relies on (containerd leases it the same
    /// way). A lease that does not exist is NotFound.
    pub fn lease_blob_if_recorded(
        &self,
        ns: &str,
        digest: &str,
        lease: Option<&str>,
    ) -> Result<bool, MetaError> {
        digest::validate(digest)?;
        let Some(lease) = lease else {
            let rtx = self.read()?;
            return Ok(rtx.open_table(BLOBS)?.get((ns, digest))?.is_some());
        };
        let wtx = self.write()?;
        if wtx.open_table(BLOBS)?.get((ns, digest))?.is_none() {
            // Nothing changed: no commit, so no fsync.
            wtx.abort()?;
            return Ok(false);
        }
        attach(&wtx, ns, lease, "content", digest)?;
        wtx.commit()?;
        Ok(true)
    }

    /// Changes labels by containerd's field paths (`labels`, `labels.<key>`; none = all labels).
    pub fn update_blob(
        &self,
        ns: &str,
        info: &BlobInfo,
        paths: &[String],
    ) -> Result<BlobInfo, MetaError> {
        digest::validate(&info.digest)?;
        validate_labels(&info.labels)?;
        let wtx = self.write()?;
        let updated = {
            let mut t = wtx.open_table(BLOBS)?;
            let key = format!("blobs/{ns}/{}", info.digest);
            let mut rec: BlobRecord = match t.get((ns, info.digest.as_str()))? {
                Some(v) => decode(&key, v.value())?,
                None => return Err(not_found(&info.digest)),
            };
            let other = apply_label_paths(&mut rec.labels, &info.labels, paths);
            if let Some(p) = other.first() {
                return Err(MetaError::InvalidArgument(format!(
                    "cannot update {p:?} field on content info {:?}",
                    info.digest
                )));
            }
            rec.updated_at = now_nanos();
            t.insert((ns, info.digest.as_str()), encode(&rec)?.as_slice())?;
            rec.info(&info.digest)
        };
        wtx.commit()?;
        Ok(updated)
    }

    /// Removes `ns`'s record; the bytes go when the collector finds no namespace using them.
    pub fn delete_blob(&self, ns: &str, digest: &str) -> Result<(), MetaError> {
        digest::validate(digest)?;
        let wtx = self.write()?;
        {
            let mut t = wtx.open_table(BLOBS)?;
            if t.remove((ns, digest))?.is_none() {
                return Err(not_found(digest));
            }
        }
        wtx.commit()?;
        self.dereferenced();
        self.publish(
            ns,
            Event::ContentDelete {
                digest: digest.to_owned(),
            },
        );
        Ok(())
    }

    /// Whether any namespace records `digest` (so its bytes must stay on disk).
    pub fn blob_in_use(&self, digest: &str) -> Result<bool, MetaError> {
        let rtx = self.read()?;
        let namespaces = rtx.open_table(NAMESPACES)?;
        let blobs = rtx.open_table(BLOBS)?;
        for entry in namespaces.iter()? {
            let (ns, _) = entry?;
            if blobs.get((ns.value(), digest))?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn blobs_are_per_namespace() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        db.add_blob("a", &d('1'), 5, BTreeMap::new(), None).unwrap();
        assert!(matches!(
            db.add_blob("a", &d('1'), 5, BTreeMap::new(), None),
            Err(MetaError::AlreadyExists(_))
        ));
        assert!(matches!(
            db.blob_info("b", &d('1')),
            Err(MetaError::NotFound(_))
        ));
        db.add_blob("b", &d('1'), 5, BTreeMap::new(), None).unwrap();
        assert_eq!(db.list_blobs("a").unwrap().len(), 1);
        // namespaces were created implicitly
        assert_eq!(db.list_namespaces().unwrap().len(), 2);
        db.delete_blob("a", &d('1')).unwrap();
        assert!(db.blob_in_use(&d('1')).unwrap());
        db.add_blob("c", &d('2'), 7, BTreeMap::new(), None).unwrap();
        let all: Vec<(String, String, i64)> = db
            .all_blobs()
            .unwrap()
            .into_iter()
            .map(|(ns, b)| (ns, b.digest, b.size))
            .collect();
        assert_eq!(all, [("b".into(), d('1'), 5), ("c".into(), d('2'), 7)]);
        db.delete_blob("b", &d('1')).unwrap();
        assert!(!db.blob_in_use(&d('1')).unwrap());
        assert!(matches!(
            db.blob_info("a", "sha256:zz"),
            Err(MetaError::InvalidArgument(_))
        ));
    }

    #[test]
    fn a_blob_found_under_a_lease_is_held_by_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        db.create_lease("a", "l", BTreeMap::new()).unwrap();
        assert!(!db.lease_blob_if_recorded("a", &d('3'), Some("l")).unwrap());
        assert!(db.list_lease_resources("a", "l").unwrap().is_empty());
        db.add_blob("a", &d('3'), 1, BTreeMap::new(), None).unwrap();
        assert!(db.lease_blob_if_recorded("a", &d('3'), None).unwrap());
        assert!(db.list_lease_resources("a", "l").unwrap().is_empty());
        assert!(db.lease_blob_if_recorded("a", &d('3'), Some("l")).unwrap());
        let held = crate::LeaseResource {
            id: d('3'),
            kind: "content".into(),
        };
        assert_eq!(
            db.list_lease_resources("a", "l").unwrap(),
            std::slice::from_ref(&held)
        );
        assert!(matches!(
            db.lease_blob_if_recorded("a", &d('3'), Some("gone")),
            Err(MetaError::NotFound(_))
        ));
        // A commit that finds the blob recorded leases it too, and still says it exists.
        db.create_lease("a", "m", BTreeMap::new()).unwrap();
        assert!(matches!(
            db.add_blob("a", &d('3'), 1, BTreeMap::new(), Some("m")),
            Err(MetaError::AlreadyExists(_))
        ));
        assert_eq!(db.list_lease_resources("a", "m").unwrap(), [held]);
    }

    #[test]
    fn label_paths() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        let labels = BTreeMap::from([
            ("x".to_owned(), "1".to_owned()),
            ("y".to_owned(), "2".to_owned()),
        ]);
        db.add_blob("a", &d('2'), 1, labels, None).unwrap();
        let req = BlobInfo {
            digest: d('2'),
            labels: BTreeMap::from([("x".to_owned(), "9".to_owned())]),
            ..Default::default()
        };
        let got = db
            .update_blob("a", &req, &["labels.x".into(), "labels.y".into()])
            .unwrap();
        assert_eq!(got.labels, req.labels);
        assert!(matches!(
            db.update_blob("a", &req, &["size".into()]),
            Err(MetaError::InvalidArgument(_))
        ));
    }
}
