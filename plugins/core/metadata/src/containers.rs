//! Container records: what a container pins (its snapshot, through the collector) and what a task
//! is made from (runtime, spec). No state: running is the tasks service's business.
//!
//! Runtime options, the spec and extensions are protobuf `Any`s on the wire; the store keeps them
//! as opaque `(type_url, bytes)` pairs and never decodes them.

use std::collections::BTreeMap;

use berth_events::Event;
use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use crate::record::{
    apply_label_paths, decode, encode, ensure_namespace, now_nanos, validate_labels,
};
use crate::schema::CONTAINERS;
use crate::{identifiers, MetaError, MetadataDb};

/// A protobuf `Any`, kept opaque.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AnyValue {
    pub type_url: String,
    #[serde(with = "hex_bytes")]
    pub value: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Runtime {
    pub name: String,
    #[serde(default)]
    pub options: Option<AnyValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Container {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    pub image: String,
    pub runtime: Runtime,
    /// Required: containerd refuses a container without a spec.
    pub spec: Option<AnyValue>,
    pub snapshotter: String,
    pub snapshot_key: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub extensions: BTreeMap<String, AnyValue>,
    pub sandbox: String,
}

/// What the `CONTAINERS` table stores under `(namespace, id)`; the collector reads it too.
#[derive(Serialize, Deserialize)]
pub(crate) struct ContainerRecord {
    #[serde(default)]
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default)]
    image: String,
    runtime: Runtime,
    #[serde(default)]
    spec: Option<AnyValue>,
    #[serde(default)]
    pub(crate) snapshotter: String,
    #[serde(default)]
    pub(crate) snapshot_key: String,
    created_at: i64,
    updated_at: i64,
    #[serde(default)]
    extensions: BTreeMap<String, AnyValue>,
    #[serde(default)]
    sandbox: String,
}

impl ContainerRecord {
    fn new(c: &Container, created_at: i64, updated_at: i64) -> Self {
        ContainerRecord {
            labels: c.labels.clone(),
            image: c.image.clone(),
            runtime: c.runtime.clone(),
            spec: c.spec.clone(),
            snapshotter: c.snapshotter.clone(),
            snapshot_key: c.snapshot_key.clone(),
            created_at,
            updated_at,
            extensions: c.extensions.clone(),
            sandbox: c.sandbox.clone(),
        }
    }

    fn container(self, id: &str) -> Container {
        Container {
            id: id.to_owned(),
            labels: self.labels,
            image: self.image,
            runtime: self.runtime,
            spec: self.spec,
            snapshotter: self.snapshotter,
            snapshot_key: self.snapshot_key,
            created_at: self.created_at,
            updated_at: self.updated_at,
            extensions: self.extensions,
            sandbox: self.sandbox,
        }
    }
}

/// containerd's `validateContainer`, with its messages.
fn validate(c: &Container) -> Result<(), MetaError> {
    identifiers::validate(&c.id).map_err(|e| prefixed("container.ID", e))?;
    if c.extensions.keys().any(String::is_empty) {
        return Err(MetaError::InvalidArgument(
            "container.Extension keys must not be zero-length".into(),
        ));
    }
    validate_labels(&c.labels).map_err(|e| prefixed("containers.Labels", e))?;
    if c.runtime.name.is_empty() {
        return Err(MetaError::InvalidArgument(
            "container.Runtime.Name must be set".into(),
        ));
    }
    if c.spec.is_none() {
        return Err(MetaError::InvalidArgument(
            "container.Spec must be set".into(),
        ));
    }
    if !c.snapshot_key.is_empty() && c.snapshotter.is_empty() {
        return Err(MetaError::InvalidArgument(
            "container.Snapshotter must be set if container.SnapshotKey is set".into(),
        ));
    }
    Ok(())
}

/// `<prefix>: ` in front of an invalid argument's message, as containerd wraps its errors.
fn prefixed(prefix: &str, e: MetaError) -> MetaError {
    match e {
        MetaError::InvalidArgument(m) => MetaError::InvalidArgument(format!("{prefix}: {m}")),
        e => e,
    }
}

fn not_found(id: &str) -> MetaError {
    MetaError::NotFound(format!("container {id:?}"))
}

fn key(ns: &str, id: &str) -> String {
    format!("containers/{ns}/{id}")
}

impl MetadataDb {
    pub fn get_container(&self, ns: &str, id: &str) -> Result<Container, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(CONTAINERS)?;
        let v = t
            .get((ns, id))?
            .ok_or_else(|| MetaError::NotFound(format!("container {id:?} in namespace {ns:?}")))?;
        Ok(decode::<ContainerRecord>(&key(ns, id), v.value())?.container(id))
    }

    /// Every container of `ns`, by id; the caller filters.
    pub fn list_containers(&self, ns: &str) -> Result<Vec<Container>, MetaError> {
        let rtx = self.read()?;
        let t = rtx.open_table(CONTAINERS)?;
        let mut out = Vec::new();
        for entry in t.range((ns, "")..)? {
            let (k, v) = entry?;
            let (kns, id) = k.value();
            if kns != ns {
                break;
            }
            out.push(decode::<ContainerRecord>(&key(ns, id), v.value())?.container(id));
        }
        Ok(out)
    }

    pub fn create_container(&self, ns: &str, c: &Container) -> Result<Container, MetaError> {
        validate(c).map_err(|e| prefixed("create container failed validation", e))?;
        let wtx = self.write()?;
        let created = {
            ensure_namespace(&wtx, ns)?;
            let mut t = wtx.open_table(CONTAINERS)?;
            if t.get((ns, c.id.as_str()))?.is_some() {
                return Err(MetaError::AlreadyExists(format!("container {:?}", c.id)));
            }
            let now = now_nanos();
            let rec = ContainerRecord::new(c, now, now);
            t.insert((ns, c.id.as_str()), encode(&rec)?.as_slice())?;
            rec.container(&c.id)
        };
        wtx.commit()?;
        self.publish(
            ns,
            Event::ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime_name: created.runtime.name.clone(),
            },
        );
        Ok(created)
    }

    /// Field paths as containerd takes them: `labels`, `labels.<k>`, `spec`, `extensions`,
    /// `extensions.<k>`, `image`, `snapshotkey`. None means all of these, and then the
    /// snapshotter and runtime name must be unchanged (they are immutable).
    pub fn update_container(
        &self,
        ns: &str,
        c: &Container,
        paths: &[String],
    ) -> Result<Container, MetaError> {
        if c.id.is_empty() {
            return Err(MetaError::InvalidArgument(
                "must specify a container id".into(),
            ));
        }
        let wtx = self.write()?;
        let (updated, changed_snapshot) = {
            let mut t = wtx.open_table(CONTAINERS)?;
            let mut rec: ContainerRecord = match t.get((ns, c.id.as_str()))? {
                Some(v) => decode(&key(ns, &c.id), v.value())?,
                None => return Err(not_found(&c.id)),
            };
            let old_key = rec.snapshot_key.clone();
            let full = [
                "labels".to_owned(),
                "spec".to_owned(),
                "extensions".to_owned(),
                "image".to_owned(),
                "snapshotkey".to_owned(),
            ];
            let paths = if paths.is_empty() {
                if rec.snapshotter != c.snapshotter {
                    return Err(MetaError::InvalidArgument(
                        "container.Snapshotter field is immutable".into(),
                    ));
                }
                if rec.runtime.name != c.runtime.name {
                    return Err(MetaError::InvalidArgument(
                        "container.Runtime.Name field is immutable".into(),
                    ));
                }
                &full[..]
            } else {
                paths
            };
            for p in apply_label_paths(&mut rec.labels, &c.labels, paths) {
                if let Some(k) = p.strip_prefix("extensions.") {
                    match c.extensions.get(k) {
                        Some(v) => rec.extensions.insert(k.to_owned(), v.clone()),
                        None => rec.extensions.remove(k),
                    };
                    continue;
                }
                match p {
                    "spec" => rec.spec = c.spec.clone(),
                    "extensions" => rec.extensions = c.extensions.clone(),
                    "image" => rec.image = c.image.clone(),
                    "snapshotkey" => rec.snapshot_key = c.snapshot_key.clone(),
                    _ => {
                        return Err(MetaError::InvalidArgument(format!(
                            "cannot update {p:?} field on {:?}",
                            c.id
                        )))
                    }
                }
            }
            rec.updated_at = now_nanos();
            let updated = rec.container(&c.id);
            validate(&updated).map_err(|e| prefixed("update failed validation", e))?;
            let rec = ContainerRecord::new(&updated, updated.created_at, updated.updated_at);
            t.insert((ns, c.id.as_str()), encode(&rec)?.as_slice())?;
            let changed = old_key != updated.snapshot_key;
            (updated, changed)
        };
        wtx.commit()?;
        if changed_snapshot {
            // The old snapshot may have lost its last reference.
            self.dereferenced();
        }
        self.publish(
            ns,
            Event::ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone(),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        Ok(updated)
    }

    pub fn delete_container(&self, ns: &str, id: &str) -> Result<(), MetaError> {
        let wtx = self.write()?;
        {
            let mut t = wtx.open_table(CONTAINERS)?;
            if t.remove((ns, id))?.is_none() {
                // containerd's wording here: `container <id>`, unquoted.
                return Err(MetaError::NotFound(format!("container {id}")));
            }
        }
        wtx.commit()?;
        self.dereferenced();
        self.publish(ns, Event::ContainerDelete { id: id.to_owned() });
        Ok(())
    }
}

/// `Any` bytes as a hex string, so records stay readable JSON.
mod hex_bytes {
    use serde::{
        de::{Error, Visitor},
        Deserializer, Serializer,
    };

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_str(HexVisitor)
    }

    /// Decodes straight from the JSON text: no intermediate string for a spec of kilobytes.
    struct HexVisitor;

    impl Visitor<'_> for HexVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a hex string")
        }

        fn visit_str<E: Error>(self, s: &str) -> Result<Vec<u8>, E> {
            hex::decode(s).map_err(|e| E::custom(format!("invalid hex: {e}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str) -> Container {
        Container {
            id: id.into(),
            runtime: Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(AnyValue {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{\"ociVersion\":\"1.1.0\"}".to_vec(),
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            image: "docker.io/library/busybox:latest".into(),
            ..Default::default()
        }
    }

    fn open() -> (tempfile::TempDir, MetadataDb) {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        (dir, db)
    }

    #[test]
    fn crud_round_trips_every_field() {
        let (_dir, db) = open();
        let mut c = container("c1");
        c.extensions.insert(
            "ext".into(),
            AnyValue {
                type_url: "t".into(),
                value: vec![0, 1, 255],
            },
        );
        c.runtime.options = Some(AnyValue {
            type_url: "o".into(),
            value: vec![7],
        });
        c.sandbox = "sb".into();
        let created = db.create_container("n", &c).unwrap();
        assert!(created.created_at > 0);
        assert_eq!(created.created_at, created.updated_at);
        let got = db.get_container("n", "c1").unwrap();
        assert_eq!(got, created);
        assert_eq!(got.extensions["ext"].value, vec![0, 1, 255]);
        assert_eq!(db.list_containers("n").unwrap().len(), 1);
        assert!(db.list_containers("m").unwrap().is_empty());
        db.delete_container("n", "c1").unwrap();
        assert!(matches!(
            db.delete_container("n", "c1"),
            Err(MetaError::NotFound(_))
        ));
        assert!(matches!(
            db.get_container("n", "c1"),
            Err(MetaError::NotFound(_))
        ));
    }

    #[test]
    fn validation_and_conflicts_as_containerd() {
        let (_dir, db) = open();
        db.create_container("n", &container("c1")).unwrap();
        let e = db.create_container("n", &container("c1")).unwrap_err();
        assert_eq!(e.to_string(), "container \"c1\": already exists");
        let mut no_spec = container("c2");
        no_spec.spec = None;
        let e = db.create_container("n", &no_spec).unwrap_err();
        assert_eq!(
            e.to_string(),
            "create container failed validation: container.Spec must be set: invalid argument"
        );
        let mut no_runtime = container("c2");
        no_runtime.runtime.name.clear();
        assert!(matches!(
            db.create_container("n", &no_runtime),
            Err(MetaError::InvalidArgument(_))
        ));
        let mut no_snapshotter = container("c2");
        no_snapshotter.snapshotter.clear();
        assert!(matches!(
            db.create_container("n", &no_snapshotter),
            Err(MetaError::InvalidArgument(_))
        ));
        assert!(matches!(
            db.create_container("n", &container("bad id")),
            Err(MetaError::InvalidArgument(_))
        ));
    }

    #[test]
    fn update_follows_field_paths_and_keeps_immutables() {
        let (_dir, db) = open();
        let created = db.create_container("n", &container("c1")).unwrap();
        let mut up = container("c1");
        up.labels.insert("a".into(), "b".into());
        up.image = "other".into();
        let got = db.update_container("n", &up, &["labels.a".into()]).unwrap();
        assert_eq!(got.labels["a"], "b");
        assert_eq!(got.image, created.image, "only the named path changes");
        assert_eq!(got.created_at, created.created_at);
        assert!(got.updated_at >= created.updated_at);
        // No paths: every mutable field, but the snapshotter must not change.
        let got = db.update_container("n", &up, &[]).unwrap();
        assert_eq!(got.image, "other");
        let mut moved = up.clone();
        moved.snapshotter = "native".into();
        let e = db.update_container("n", &moved, &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "container.Snapshotter field is immutable: invalid argument"
        );
        let e = db
            .update_container("n", &up, &["snapshotter".into()])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot update \"snapshotter\" field on \"c1\": invalid argument"
        );
        // Removing a label by path.
        up.labels.clear();
        let got = db.update_container("n", &up, &["labels.a".into()]).unwrap();
        assert!(got.labels.is_empty());
        assert!(matches!(
            db.update_container("n", &container("nope"), &[]),
            Err(MetaError::NotFound(_))
        ));
    }

    #[test]
    fn changes_are_announced_and_deletion_wakes_the_collector() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (_dir, db) = open();
        let ex = std::sync::Arc::new(berth_events::Exchange::default());
        let mut rx = ex.subscribe();
        db.set_events(ex);
        let calls = std::sync::Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        db.on_dereference(move || {
            c.fetch_add(1, Ordering::SeqCst);
        });
        db.create_container("n", &container("c1")).unwrap();
        assert!(db.create_container("n", &container("c1")).is_err());
        db.update_container("n", &container("c1"), &["labels".into()])
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        db.delete_container("n", "c1").unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let topics: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|e| e.topic.clone())
            .collect();
        assert_eq!(
            topics,
            [
                "/containers/create",
                "/containers/update",
                "/containers/delete"
            ]
        );
    }

    #[test]
    fn any_bytes_are_stored_as_hex_and_read_back() {
        let v = AnyValue {
            type_url: "t".into(),
            value: (0..=255u8).collect(),
        };
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("000102"), "{json}");
        assert!(json.contains("fdfeff"), "{json}");
        assert_eq!(serde_json::from_str::<AnyValue>(&json).unwrap(), v);
        // Upper case reads as well; odd lengths and non-hex are refused.
        let upper: AnyValue = serde_json::from_str(r#"{"type_url":"t","value":"0AFF"}"#).unwrap();
        assert_eq!(upper.value, [0x0a, 0xff]);
        for bad in ["0", "zz", "0g"] {
            let json = format!(r#"{{"type_url":"t","value":"{bad}"}}"#);
            assert!(serde_json::from_str::<AnyValue>(&json).is_err(), "{bad}");
        }
    }
}
