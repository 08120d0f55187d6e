//! Namespaces over the local store: a namespace sees the blobs it holds records for.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::Arc;

use berth_metadata::{digest, BlobInfo, LeaseResource, MetaError, MetadataDb};

use crate::local::{BlobPin, IngestStatus, LocalStore, LocalWriter};
use crate::ContentError;

pub struct ContentStore {
    local: Arc<LocalStore>,
    db: Arc<MetadataDb>,
}

/// A ref names an ingest; it may contain `/` but no `.`/`..` segment, no NUL and not be empty,
/// so no ref can ever be taken for a path.
/// Any non-empty ref is accepted, as containerd accepts it: an ingest's directory is named by the
/// hash of its key, never by the ref itself, so no ref can reach outside `ingest/`.
fn validate_ref(reference: &str) -> Result<(), ContentError> {
    if reference.is_empty() {
        return Err(ContentError::InvalidArgument(
            "ref must not be empty".to_owned(),
        ));
    }
    Ok(())
}

fn key(ns: &str, reference: &str) -> String {
    format!("{ns}/{reference}")
}

/// The ref of a namespaced status, or `None` when it belongs to another namespace.
fn strip(ns: &str, mut st: IngestStatus) -> Option<IngestStatus> {
    let reference = st.key.strip_prefix(ns)?.strip_prefix('/')?.to_owned();
    st.key = reference;
    Some(st)
}

fn validate_digest(d: &str) -> Result<(), ContentError> {
    digest::validate(d).map_err(|e| match e {
        MetaError::InvalidArgument(m) => ContentError::InvalidArgument(m),
        other => ContentError::Meta(other),
    })
}

impl ContentStore {
    pub fn new(local: Arc<LocalStore>, db: Arc<MetadataDb>) -> Self {
        ContentStore { local, db }
    }

    pub fn local(&self) -> &Arc<LocalStore> {
        &self.local
    }

    pub fn db(&self) -> &Arc<MetadataDb> {
        &self.db
    }

    pub fn info(&self, ns: &str, digest: &str) -> Result<BlobInfo, ContentError> {
        validate_digest(digest)?;
        self.db.blob_info(ns, digest).map_err(|e| match e {
            MetaError::NotFound(_) => ContentError::NotFound(digest.to_owned()),
            other => other.into(),
        })
    }

    pub fn list(&self, ns: &str) -> Result<Vec<BlobInfo>, ContentError> {
        Ok(self.db.list_blobs(ns)?)
    }

    pub fn update(
        &self,
        ns: &str,
        info: &BlobInfo,
        paths: &[String],
    ) -> Result<BlobInfo, ContentError> {
        validate_digest(&info.digest)?;
        self.db.update_blob(ns, info, paths).map_err(|e| match e {
            MetaError::NotFound(_) => ContentError::NotFound(info.digest.clone()),
            other => other.into(),
        })
    }

    /// Removes the namespace's record. The bytes stay until the collector finds that no namespace
    /// holds the blob.
    pub fn delete(&self, ns: &str, digest: &str) -> Result<(), ContentError> {
        validate_digest(digest)?;
        self.db.delete_blob(ns, digest).map_err(|e| match e {
            MetaError::NotFound(_) => ContentError::NotFound(digest.to_owned()),
            other => other.into(),
        })
    }

    /// Opens a blob the namespace holds, with its size.
    pub fn open_reader(&self, ns: &str, digest: &str) -> Result<(File, i64), ContentError> {
        let info = self.info(ns, digest)?;
        let file = self.local.open_blob(digest)?;
        Ok((file, info.size))
    }

    /// Whether `ns` holds `digest`; if so and `lease` is given, the lease holds the blob from now
    /// on (one transaction), so a collection cannot take what the client was told exists.
    pub fn hold_if_present(
        &self,
        ns: &str,
        digest: &str,
        lease: Option<&str>,
    ) -> Result<bool, ContentError> {
        // No blob has a malformed digest.
        if digest::validate(digest).is_err() {
            return Ok(false);
        }
        Ok(self.db.lease_blob_if_recorded(ns, digest, lease)?)
    }

    /// Opens a writer for `reference` in `ns`. With an `expected` digest the namespace already
    /// holds, the answer is AlreadyExists (clients rely on it to skip the copy) and the lease, if
    /// any, holds the blob; with one only on disk (another namespace holds it, or a collection is
    /// about to remove it), the writer starts complete and keeps the blob on disk until it is
    /// done, so the copy costs nothing.
    pub fn writer(
        &self,
        ns: &str,
        reference: &str,
        total: i64,
        expected: &str,
        lease: Option<&str>,
    ) -> Result<NsWriter, ContentError> {
        validate_ref(reference)?;
        // A malformed expected digest is no error yet, as in containerd: no blob has it, and
        // the commit will say the digest does not match (FailedPrecondition).
        let expected = if digest::validate(expected).is_ok() {
            expected
        } else {
            ""
        };
        if !expected.is_empty() && self.hold_if_present(ns, expected, lease)? {
            return Err(ContentError::AlreadyExists(expected.to_owned()));
        }
        if let Some(lease) = lease {
            self.db.add_lease_resource(
                ns,
                lease,
                &LeaseResource {
                    id: reference.to_owned(),
                    kind: "ingests".into(),
                },
            )?;
        }
        if !expected.is_empty() {
            // Under the mutation guard the collector's disk sweep is either over (and the blob
            // is gone or kept) or not begun (and will see the pin): the blob cannot vanish
            // between this check and the commit that records it.
            let _guard = self.db.mutation_guard();
            if let Some(size) = self.local.blob_size(expected)? {
                if total <= 0 || total == size {
                    return Ok(NsWriter {
                        ns: ns.to_owned(),
                        reference: reference.to_owned(),
                        lease: lease.map(str::to_owned),
                        inner: Inner::Present {
                            digest: expected.to_owned(),
                            size,
                            started_at: berth_metadata::now_nanos(),
                            local: self.local.clone(),
                            key: key(ns, reference),
                            _pin: self.local.pin(expected),
                        },
                    });
                }
            }
        }
        let w = self
            .local
            .writer(&key(ns, reference), total, expected, lease)?;
        Ok(NsWriter {
            ns: ns.to_owned(),
            reference: reference.to_owned(),
            lease: lease.map(str::to_owned),
            inner: Inner::Ingest(Box::new(w)),
        })
    }

    pub fn status(&self, ns: &str, reference: &str) -> Result<IngestStatus, ContentError> {
        validate_ref(reference)?;
        let st = self
            .local
            .status(&key(ns, reference))
            .map_err(|e| match e {
                ContentError::IngestNotFound(_) => {
                    ContentError::IngestNotFound(reference.to_owned())
                }
                other => other,
            })?;
        strip(ns, st).ok_or_else(|| ContentError::IngestNotFound(reference.to_owned()))
    }

    pub fn list_statuses(&self, ns: &str) -> Result<Vec<IngestStatus>, ContentError> {
        Ok(self
            .local
            .list_ingests()?
            .into_iter()
            .filter_map(|s| strip(ns, s))
            .collect())
    }

    pub fn abort(&self, ns: &str, reference: &str) -> Result<(), ContentError> {
        validate_ref(reference)?;
        self.local.abort(&key(ns, reference)).map_err(|e| match e {
            ContentError::IngestNotFound(_) => ContentError::IngestNotFound(reference.to_owned()),
            other => other,
        })
    }
}

enum Inner {
    Ingest(Box<LocalWriter>),
    /// The blob is already on disk (held by another namespace): nothing to copy.
    Present {
        digest: String,
        size: i64,
        started_at: i64,
        /// To fall back to a real ingest if the client sends the bytes anyway.
        local: Arc<LocalStore>,
        key: String,
        /// Keeps the blob from the collector until the commit has recorded it.
        _pin: BlobPin,
    },
}

/// A writer in one namespace; see [`ContentStore::writer`].
pub struct NsWriter {
    ns: String,
    reference: String,
    lease: Option<String>,
    inner: Inner,
}

impl NsWriter {
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// Status with the client's ref (not the namespaced key).
    pub fn status(&self) -> IngestStatus {
        match &self.inner {
            Inner::Ingest(w) => {
                let mut st = w.status();
                st.key = self.reference.clone();
                st
            }
            Inner::Present {
                digest,
                size,
                started_at,
                ..
            } => IngestStatus {
                key: self.reference.clone(),
                offset: *size,
                total: *size,
                expected: digest.clone(),
                started_at: *started_at,
                updated_at: *started_at,
                lease: self.lease.clone(),
            },
        }
    }

    pub fn digest(&self) -> String {
        match &self.inner {
            Inner::Ingest(w) => w.digest(),
            Inner::Present { digest, .. } => digest.clone(),
        }
    }

    pub fn set_total(&mut self, total: i64) {
        if let Inner::Ingest(w) = &mut self.inner {
            w.set_total(total);
        }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ContentError> {
        match &mut self.inner {
            Inner::Ingest(w) => w.write(data),
            Inner::Present { .. } if data.is_empty() => Ok(()),
            Inner::Present { size, .. } => Err(ContentError::FailedPrecondition(format!(
                "all {size} bytes are already present; commit without writing"
            ))),
        }
    }

    pub fn reset(&mut self) -> Result<(), ContentError> {
        match &mut self.inner {
            Inner::Ingest(w) => w.reset(),
            // The client starts over instead of trusting the offset it was given: take its bytes
            // into an ordinary ingest (the commit still finds the blob on disk and copies nothing).
            Inner::Present {
                digest,
                size,
                local,
                key,
                ..
            } => {
                let mut w = local.writer(key, *size, digest, self.lease.as_deref())?;
                w.reset()?;
                self.inner = Inner::Ingest(Box::new(w));
                Ok(())
            }
        }
    }

    /// Verifies size and digest, puts the blob in place and records it in the namespace (and
    /// the lease, if any), all under the collector's mutation guard.
    pub fn commit(
        self,
        store: &ContentStore,
        size: i64,
        expected: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<BlobInfo, ContentError> {
        // A malformed expected digest is not refused here: it cannot match what was written,
        // so the commit fails as a mismatch (FailedPrecondition), as containerd's does.
        let _guard = store.db.mutation_guard();
        let (digest, actual_size) = match self.inner {
            Inner::Ingest(w) => {
                let written = w.status().offset;
                let (digest, _existed) = w.commit(size, expected).map_err(|e| match e {
                    ContentError::IngestAborted(_) => {
                        ContentError::IngestAborted(self.reference.clone())
                    }
                    other => other,
                })?;
                (digest, written)
            }
            Inner::Present {
                digest, size: have, ..
            } => {
                if size > 0 && size != have {
                    return Err(ContentError::SizeMismatch {
                        actual: have,
                        expected: size,
                    });
                }
                if !expected.is_empty() && expected != digest {
                    return Err(ContentError::DigestMismatch {
                        actual: digest,
                        expected: expected.to_owned(),
                    });
                }
                if store.local.blob_size(&digest)?.is_none() {
                    return Err(ContentError::FailedPrecondition(format!(
                        "content {digest} was removed while this write was open; write it again"
                    )));
                }
                (digest, have)
            }
        };
        store
            .db
            .add_blob(
                &self.ns,
                &digest,
                actual_size,
                labels,
                self.lease.as_deref(),
            )
            .map_err(|e| match e {
                MetaError::AlreadyExists(_) => ContentError::AlreadyExists(digest.clone()),
                other => other.into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(MetadataDb::open(&dir.path().join("meta")).unwrap());
        let local = Arc::new(LocalStore::open(&dir.path().join("content")).unwrap());
        (dir, ContentStore::new(local, db))
    }

    #[test]
    fn namespaces_share_bytes_but_not_visibility() {
        let (_d, s) = store();
        let mut w = s.writer("a", "r1", 5, "", None).unwrap();
        w.write(b"hello").unwrap();
        let info = w.commit(&s, 5, &sha(b"hello"), BTreeMap::new()).unwrap();
        assert_eq!(info.size, 5);
        assert!(matches!(
            s.info("b", &info.digest),
            Err(ContentError::NotFound(_))
        ));
        // Already in "a": AlreadyExists at open.
        assert!(matches!(
            s.writer("a", "r2", 5, &info.digest, None),
            Err(ContentError::AlreadyExists(_))
        ));
        // In "b": starts complete, commit is instant.
        let w = s.writer("b", "r3", 5, &info.digest, None).unwrap();
        assert_eq!(w.status().offset, 5);
        w.commit(&s, 5, &info.digest, BTreeMap::new()).unwrap();
        assert_eq!(s.info("b", &info.digest).unwrap().size, 5);
    }

    #[test]
    fn statuses_are_per_namespace_and_refs_are_checked() {
        let (_d, s) = store();
        let mut w = s.writer("a", "x/y", 0, "", None).unwrap();
        w.write(b"123").unwrap();
        drop(w);
        assert_eq!(s.status("a", "x/y").unwrap().offset, 3);
        assert_eq!(s.list_statuses("a").unwrap()[0].key, "x/y");
        assert!(s.list_statuses("b").unwrap().is_empty());
        assert!(matches!(
            s.status("b", "x/y"),
            Err(ContentError::IngestNotFound(_))
        ));
        // Only an empty ref is refused; any other names a hashed directory, as in containerd.
        assert!(matches!(
            s.writer("a", "", 0, "", None),
            Err(ContentError::InvalidArgument(_))
        ));
        for odd in ["a/../b", "..", "a/./b", "a\0b", &"r".repeat(10_000)] {
            let mut w = s.writer("a", odd, 0, "", None).unwrap();
            w.write(b"odd").unwrap();
            drop(w);
            assert_eq!(s.status("a", odd).unwrap().offset, 3, "{odd:?}");
            s.abort("a", odd).unwrap();
        }
        // A malformed expected digest fails the commit as a mismatch.
        let mut w = s.writer("a", "ok", 0, "sha256:nothex", None).unwrap();
        w.write(b"x").unwrap();
        assert!(matches!(
            w.commit(&s, 1, "sha256:nothex", BTreeMap::new()),
            Err(ContentError::DigestMismatch { .. })
        ));
        // Lease that does not exist.
        assert!(matches!(
            s.writer("a", "l", 0, "", Some("nope")),
            Err(ContentError::Meta(MetaError::NotFound(_)))
        ));
    }
}

#[cfg(test)]
mod collection_tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(MetadataDb::open(&dir.path().join("meta")).unwrap());
        let local = Arc::new(LocalStore::open(&dir.path().join("content")).unwrap());
        (dir, ContentStore::new(local, db))
    }

    fn commit(s: &ContentStore, ns: &str, data: &[u8], lease: Option<&str>) -> String {
        let mut w = s.writer(ns, "put", 0, "", lease).unwrap();
        w.write(data).unwrap();
        w.commit(s, 0, "", BTreeMap::new()).unwrap().digest
    }

    #[test]
    fn a_blob_found_on_disk_stays_until_the_writer_that_found_it_commits() {
        let (_d, s) = store();
        let d = commit(&s, "a", b"on disk", None);
        // The collector has swept the record; its disk sweep has not run yet.
        s.delete("a", &d).unwrap();
        let w = s.writer("a", "again", 0, &d, None).unwrap();
        assert_eq!(w.status().offset, 7, "starts complete");
        assert_eq!(s.local().delete_unpinned(&d).unwrap(), None, "kept");
        let info = w.commit(&s, 7, &d, BTreeMap::new()).unwrap();
        assert_eq!(info.digest, d);
        assert_eq!(s.local().delete_unpinned(&d).unwrap(), Some(7), "unpinned");
    }

    #[test]
    fn already_exists_leases_the_blob_to_the_writer() {
        let (_d, s) = store();
        let d = commit(&s, "a", b"held", None);
        s.db().create_lease("a", "l", BTreeMap::new()).unwrap();
        assert!(matches!(
            s.writer("a", "r", 0, &d, Some("l")),
            Err(ContentError::AlreadyExists(_))
        ));
        let held = s.db().list_lease_resources("a", "l").unwrap();
        assert!(
            held.iter().any(|r| r.kind == "content" && r.id == d),
            "{held:?}"
        );
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::*;
    use sha2::{Digest as _, Sha256};

    #[test]
    fn a_client_that_resends_everything_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(MetadataDb::open(&dir.path().join("meta")).unwrap());
        let local = Arc::new(LocalStore::open(&dir.path().join("content")).unwrap());
        let s = ContentStore::new(local, db);
        let data = b"shared bytes";
        let d = format!("sha256:{}", hex::encode(Sha256::digest(data)));
        let mut w = s.writer("a", "r", 0, "", None).unwrap();
        w.write(data).unwrap();
        w.commit(&s, data.len() as i64, &d, BTreeMap::new())
            .unwrap();
        // Namespace b is offered the blob complete, but writes it from the start anyway.
        let mut w = s.writer("b", "r", data.len() as i64, &d, None).unwrap();
        assert_eq!(w.status().offset, data.len() as i64);
        w.reset().unwrap();
        w.write(data).unwrap();
        w.commit(&s, data.len() as i64, &d, BTreeMap::new())
            .unwrap();
        assert_eq!(s.info("b", &d).unwrap().size, data.len() as i64);
        assert!(s.list_statuses("b").unwrap().is_empty());
    }
}
