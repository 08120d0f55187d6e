//! Leases: named holds that protect everything created under them from the collector until the
//! lease is deleted or expires (`containerd.io/gc.expire`, an RFC 3339 time).

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::record::{decode, encode, ensure_namespace, now_nanos};
use crate::schema::{LEASES, LEASE_RESOURCES};
use crate::{digest, MetaError, MetadataDb};

/// The label that gives a lease its expiry time (RFC 3339).
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Lease {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub created_at: i64,
}

impl Lease {
    /// When the lease expires, in nanoseconds since the epoch; `None` if it never does (an
    /// unparsable expiry is treated as none, so a typo never frees data early).
    pub fn expires_at(&self) -> Option<i64> {
        let v = self.labels.get(EXPIRE_LABEL)?;
        let t = chrono::DateTime::parse_from_rfc3339(v).ok()?;
        t.timestamp_nanos_opt()
    }
}

/// The labels of a lease that expires `ttl` from now: the collector ignores it after that, so
/// what a job that died left under it is freed without anyone deleting the lease.
pub fn expiring_in(ttl: std::time::Duration) -> BTreeMap<String, String> {
    let at = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now() + ttl);
    BTreeMap::from([(
        EXPIRE_LABEL.to_owned(),
        at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )])
}

/// Something a lease holds: `content` (a digest), `ingests` (a write ref) or
/// `snapshots/<snapshotter>` (a snapshot key).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LeaseResource {
    pub id: String,
    pub kind: String,
}

#[derive(Serialize, Deserialize)]
struct LeaseRecord {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    created_at: i64,
}

/// containerd accepts any non-empty lease id (its clients generate ids like `923647050-_eNA`,
/// which the identifier rule would refuse; it takes control characters and any length too), and
/// so does berthd: ids are keys, never paths. Messages that echo an id are cut short at the
/// service edge.
fn validate_id(id: &str) -> Result<(), MetaError> {
    if id.is_empty() {
        return Err(MetaError::InvalidArgument(
            "lease id must be provided".into(),
        ));
    }
    Ok(())
}

fn lease_missing(id: &str) -> MetaError {
    MetaError::NotFound(format!("lease {id:?}"))
}

fn validate_resource(r: &LeaseResource) -> Result<(), MetaError> {
    match r.kind.as_str() {
        "content" => digest::validate(&r.id).map_err(|e| {
            MetaError::InvalidArgument(format!("invalid content resource id {}: {e}", r.id))
        }),
        "ingests" if !r.id.is_empty() => Ok(()),
        k if k.strip_prefix("snapshots/").is_some_and(|s| !s.is_empty()) && !r.id.is_empty() => {
            Ok(())
        }
        k => Err(MetaError::InvalidArgument(format!(
            "invalid resource type {k}"
        ))),
    }
}

/// Adds a resource to a lease inside an open transaction (used when objects are created under a
/// lease header).
pub(crate) fn attach(
    wtx: &redb::WriteTransaction,
    ns: &str,
    lease: &str,
    kind: &str,
    id: &str,
) -> Result<(), MetaError> {
    if wtx.open_table(LEASES)?.get((ns, lease))?.is_none() {
        return Err(lease_missing(lease));
    }
    wtx.open_table(LEASE_RESOURCES)?
        .insert((ns, lease, kind, id), ())?;
    Ok(())
}

impl MetadataDb {
    pub fn create_lease(
        &self,
        ns: &str,
        id: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Lease, MetaError> {
        validate_id(id)?;
        // containerd does not limit lease labels (other objects' labels are limited).
        let wtx = self.write()?;
        let lease = {
            ensure_namespace(&wtx, ns)?;
            let mut t = wtx.open_table(LEASES)?;
            if t.get((ns, id))?.is_some() {
                return Err(MetaError::AlreadyExists(format!("lease {id:?}")));
            }
            let rec = LeaseRecord {
                labels,
                created_at: now_nanos(),
            };
            t.insert((ns, id), encode(&rec)?.as_slice())?;
            Lease {
                id: id.to_owned(),
                labels: rec.labels,
                created_at: rec.created_at,
            }
        };
        wtx.commit()?;
        Ok(lease)
    }

    pub fn get_lease(&self, ns: &str, id: &str) -> Result<Lease, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(LEASES)?;
        let v = t
            .get((ns, id))?
            .ok_or_else(|| MetaError::NotFound(format!("lease {id:?}")))?;
        let rec: LeaseRecord = decode(&format!("leases/{ns}/{id}"), v.value())?;
        Ok(Lease {
            id: id.to_owned(),
            labels: rec.labels,
            created_at: rec.created_at,
        })
    }

    pub fn list_leases(&self, ns: &str) -> Result<Vec<Lease>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(LEASES)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, id) = k.value();
            if kns != ns {
                break;
            }
            let rec: LeaseRecord = decode(&format!("leases/{ns}/{id}"), v.value())?;
            out.push(Lease {
                id: id.to_owned(),
                labels: rec.labels,
                created_at: rec.created_at,
            });
        }
        Ok(out)
    }

    /// Deletes a lease and its hold on its resources (the resources themselves stay until the
    /// collector finds nothing else refers to them).
    pub fn delete_lease(&self, ns: &str, id: &str) -> Result<(), MetaError> {
        let wtx = self.write()?;
        {
            let mut t = wtx.open_table(LEASES)?;
            if t.remove((ns, id))?.is_none() {
                return Err(MetaError::NotFound(format!("lease {id:?}")));
            }
            remove_resources(&wtx, ns, id)?;
        }
        wtx.commit()?;
        self.dereferenced();
        Ok(())
    }

    /// Whether some lease in any namespace has passed its expiry (the collector's timer asks this
    /// so it collects only when time itself has changed what is garbage).
    pub fn has_expired_lease(&self, now: i64) -> Result<bool, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(LEASES)?;
        for entry in t.iter()? {
            let (k, v) = entry?;
            let (ns, id) = k.value();
            let rec: LeaseRecord = decode(&format!("leases/{ns}/{id}"), v.value())?;
            let lease = Lease {
                id: id.to_owned(),
                labels: rec.labels,
                created_at: rec.created_at,
            };
            if lease.expires_at().is_some_and(|t| t <= now) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn add_lease_resource(
        &self,
        ns: &str,
        lease: &str,
        r: &LeaseResource,
    ) -> Result<(), MetaError> {
        let wtx = self.write()?;
        // A missing lease is reported before a bad resource, as containerd does.
        if wtx.open_table(LEASES)?.get((ns, lease))?.is_none() {
            return Err(lease_missing(lease));
        }
        validate_resource(r)?;
        attach(&wtx, ns, lease, &r.kind, &r.id)?;
        wtx.commit()?;
        Ok(())
    }

    pub fn delete_lease_resource(
        &self,
        ns: &str,
        lease: &str,
        r: &LeaseResource,
    ) -> Result<(), MetaError> {
        let wtx = self.write()?;
        {
            if wtx.open_table(LEASES)?.get((ns, lease))?.is_none() {
                return Err(lease_missing(lease));
            }
            validate_resource(r)?;
            wtx.open_table(LEASE_RESOURCES)?
                .remove((ns, lease, r.kind.as_str(), r.id.as_str()))?;
        }
        wtx.commit()?;
        self.dereferenced();
        Ok(())
    }

    /// Whether some lease in `ns` holds the ingest `reference` (the collector's timer asks, to
    /// notice an ingest that outlived its lease).
    pub fn ingest_leased(&self, ns: &str, reference: &str) -> Result<bool, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(LEASE_RESOURCES)?;
        for entry in t.range((ns, "", "", "")..)? {
            let (k, _) = entry?;
            let (kns, _, kind, id) = k.value();
            if kns != ns {
                break;
            }
            if kind == "ingests" && id == reference {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub fn list_lease_resources(
        &self,
        ns: &str,
        lease: &str,
    ) -> Result<Vec<LeaseResource>, MetaError> {
        let rtx = self.read()?;
        if rtx.open_table(LEASES)?.get((ns, lease))?.is_none() {
            return Err(lease_missing(lease));
        }
        let t = rtx.open_table(LEASE_RESOURCES)?;
        let mut out = Vec::new();
        for entry in t.range((ns, lease, "", "")..)? {
            let (k, _) = entry?;
            let (kns, kl, kind, id) = k.value();
            if kns != ns || kl != lease {
                break;
            }
            out.push(LeaseResource {
                id: id.to_owned(),
                kind: kind.to_owned(),
            });
        }
        Ok(out)
    }
}

pub(crate) fn remove_resources(
    wtx: &redb::WriteTransaction,
    ns: &str,
    lease: &str,
) -> Result<(), MetaError> {
    let mut t = wtx.open_table(LEASE_RESOURCES)?;
    let keys: Vec<(String, String)> = {
        let mut keys = Vec::new();
        for entry in t.range((ns, lease, "", "")..)? {
            let (k, _) = entry?;
            let (kns, kl, kind, id) = k.value();
            if kns != ns || kl != lease {
                break;
            }
            keys.push((kind.to_owned(), id.to_owned()));
        }
        keys
    };
    for (kind, id) in keys {
        t.remove((ns, lease, kind.as_str(), id.as_str()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_and_resources() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        db.create_lease("ns", "l1", BTreeMap::new()).unwrap();
        assert!(matches!(
            db.create_lease("ns", "l1", BTreeMap::new()),
            Err(MetaError::AlreadyExists(_))
        ));
        let r = LeaseResource {
            id: format!("sha256:{}", "b".repeat(64)),
            kind: "content".into(),
        };
        db.add_lease_resource("ns", "l1", &r).unwrap();
        let bad = LeaseResource {
            id: "x".into(),
            kind: "bogus".into(),
        };
        assert!(matches!(
            db.add_lease_resource("ns", "l1", &bad),
            Err(MetaError::InvalidArgument(_))
        ));
        assert!(matches!(
            db.add_lease_resource("ns", "nope", &r),
            Err(MetaError::NotFound(_))
        ));
        assert_eq!(
            db.list_lease_resources("ns", "l1").unwrap(),
            vec![r.clone()]
        );
        let ingest = LeaseResource {
            id: "ref/1".into(),
            kind: "ingests".into(),
        };
        assert!(!db.ingest_leased("ns", "ref/1").unwrap());
        db.add_lease_resource("ns", "l1", &ingest).unwrap();
        assert!(db.ingest_leased("ns", "ref/1").unwrap());
        assert!(!db.ingest_leased("other", "ref/1").unwrap());
        db.delete_lease_resource("ns", "l1", &ingest).unwrap();
        db.delete_lease("ns", "l1").unwrap();
        assert!(!db.ingest_leased("ns", "ref/1").unwrap());
        assert!(matches!(
            db.list_lease_resources("ns", "l1"),
            Err(MetaError::NotFound(_))
        ));
        db.create_lease("ns", "l1", BTreeMap::new()).unwrap();
        assert!(db.list_lease_resources("ns", "l1").unwrap().is_empty());
    }

    #[test]
    fn expiry_parses_offsets() {
        let l = Lease {
            labels: BTreeMap::from([(
                EXPIRE_LABEL.to_owned(),
                "2030-01-01T01:00:00+01:00".to_owned(),
            )]),
            ..Default::default()
        };
        assert_eq!(l.expires_at(), Some(1_893_456_000_000_000_000));
        let never = Lease::default();
        assert_eq!(never.expires_at(), None);
    }

    #[test]
    fn expiring_in_writes_utc_seconds_that_parse_back() {
        let before = now_nanos();
        let l = Lease {
            labels: expiring_in(std::time::Duration::from_secs(3600)),
            ..Default::default()
        };
        let label = &l.labels[EXPIRE_LABEL];
        assert!(label.ends_with('Z') && !label.contains('.'), "{label}");
        let at = l.expires_at().expect("parses");
        // To the second: up to one second earlier than an hour from `before`.
        assert!(
            at >= before + 3_599_000_000_000 && at <= now_nanos() + 3_600_000_000_000,
            "{label}"
        );
    }
}
