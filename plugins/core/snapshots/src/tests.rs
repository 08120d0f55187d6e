//! The namespaced store over an in-memory driver: records and driver stay in step on every
//! path, including when the driver fails, and the events tell what happened.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_events::{Event, Exchange};
use berth_metadata::MetadataDb;
use berth_snapshotter_fake::{FakeSnapshotter, Op};
use tokio::sync::broadcast::error::TryRecvError;

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Arc<MetadataDb>,
    fake: Arc<FakeSnapshotter>,
    store: Snapshots,
    events: tokio::sync::broadcast::Receiver<Arc<berth_events::Envelope>>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(dir.path()).unwrap());
    let fake = Arc::new(FakeSnapshotter::new());
    let drivers = HashMap::from([("overlayfs".to_owned(), fake.clone() as Arc<dyn Snapshotter>)]);
    let exchange = Arc::new(Exchange::default());
    let events = exchange.subscribe();
    let store = Snapshots::new(db.clone(), drivers).with_events(Some(exchange));
    Fixture {
        _dir: dir,
        db,
        fake,
        store,
        events,
    }
}

fn new(key: &str, parent: &str) -> NewSnapshot {
    NewSnapshot {
        key: key.into(),
        parent: parent.into(),
        labels: BTreeMap::new(),
        view: false,
    }
}

fn next_event(f: &mut Fixture) -> Option<Event> {
    match f.events.try_recv() {
        Ok(env) => Some(env.event.clone()),
        Err(TryRecvError::Empty) => None,
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn prepare_commit_remove_publish_their_events_under_the_canonical_name() {
    let mut f = fixture();
    // "overlay" is containerd's other name for overlayfs.
    f.store
        .prepare("ns", "overlay", None, new("a", ""))
        .unwrap();
    f.store
        .commit("ns", "overlay", "A", "a", BTreeMap::new(), None)
        .unwrap();
    f.store.remove("ns", "overlayfs", "A").unwrap();
    assert_eq!(
        next_event(&mut f),
        Some(Event::SnapshotPrepare {
            key: "a".into(),
            parent: String::new(),
            snapshotter: "overlayfs".into()
        })
    );
    assert_eq!(
        next_event(&mut f),
        Some(Event::SnapshotCommit {
            key: "a".into(),
            name: "A".into(),
            snapshotter: "overlayfs".into()
        })
    );
    assert_eq!(
        next_event(&mut f),
        Some(Event::SnapshotRemove {
            key: "A".into(),
            snapshotter: "overlayfs".into()
        })
    );
    assert_eq!(next_event(&mut f), None);
}

#[test]
fn a_failed_driver_prepare_leaves_no_record_and_no_event() {
    let mut f = fixture();
    f.fake.fail_next(Op::Prepare);
    assert!(f
        .store
        .prepare("ns", "overlayfs", None, new("a", ""))
        .is_err());
    assert!(matches!(
        f.store.stat("ns", "overlayfs", "a"),
        Err(StoreError::Meta(MetaError::NotFound(_)))
    ));
    assert!(f
        .db
        .list_snapshot_records("ns", "overlayfs")
        .unwrap()
        .is_empty());
    assert_eq!(next_event(&mut f), None);
    // The key is free again.
    f.store
        .prepare("ns", "overlayfs", None, new("a", ""))
        .unwrap();
}

#[test]
fn a_failed_driver_commit_brings_the_active_snapshot_back() {
    let mut f = fixture();
    let mut labels = BTreeMap::new();
    labels.insert("containerd.io/gc.root".to_owned(), "x".to_owned());
    f.store
        .prepare(
            "ns",
            "overlayfs",
            None,
            NewSnapshot {
                labels: labels.clone(),
                ..new("a", "")
            },
        )
        .unwrap();
    next_event(&mut f);
    f.fake.fail_next(Op::Commit);
    assert!(f
        .store
        .commit("ns", "overlayfs", "A", "a", BTreeMap::new(), None)
        .is_err());
    let info = f.store.stat("ns", "overlayfs", "a").unwrap();
    assert_eq!(info.kind, Some(Kind::Active));
    assert_eq!(info.labels, labels, "the active record comes back whole");
    assert!(f.store.stat("ns", "overlayfs", "A").is_err());
    assert_eq!(next_event(&mut f), None);
    // And it can still be committed.
    f.store
        .commit("ns", "overlayfs", "A", "a", BTreeMap::new(), None)
        .unwrap();
}

#[test]
fn remove_drops_the_record_and_leaves_the_driver_snapshot_to_the_collector() {
    let f = fixture();
    f.store
        .prepare("ns", "overlayfs", None, new("a", ""))
        .unwrap();
    let backend = f.fake.keys();
    f.store.remove("ns", "overlayfs", "a").unwrap();
    assert_eq!(
        f.fake.calls(Op::Remove),
        0,
        "no driver call while the client waits"
    );
    assert_eq!(f.fake.keys(), backend);
    let live = f.db.live_snapshot_backends().unwrap();
    assert!(live.get("overlayfs").is_none_or(|s| s.is_empty()));
    assert!(f.store.list("ns", "overlayfs").unwrap().is_empty());
}

#[test]
fn remove_refuses_a_parent_with_children_and_unknown_snapshotters() {
    let f = fixture();
    f.store
        .prepare("ns", "overlayfs", None, new("a", ""))
        .unwrap();
    f.store
        .commit("ns", "overlayfs", "A", "a", BTreeMap::new(), None)
        .unwrap();
    f.store
        .prepare("ns", "overlayfs", None, new("b", "A"))
        .unwrap();
    assert!(matches!(
        f.store.remove("ns", "overlayfs", "A"),
        Err(StoreError::Meta(MetaError::FailedPrecondition(_)))
    ));
    assert!(matches!(
        f.store.remove("ns", "btrfs", "A"),
        Err(StoreError::UnknownSnapshotter(_))
    ));
}

#[test]
fn namespaces_do_not_see_each_other() {
    let f = fixture();
    f.store
        .prepare("one", "overlayfs", None, new("a", ""))
        .unwrap();
    f.store
        .prepare("two", "overlayfs", None, new("a", ""))
        .unwrap();
    assert_eq!(f.fake.keys().len(), 2, "two driver snapshots");
    f.store.remove("one", "overlayfs", "a").unwrap();
    assert!(f.store.stat("two", "overlayfs", "a").is_ok());
    assert!(f.store.stat("one", "overlayfs", "a").is_err());
}

#[test]
fn a_failed_adopt_removes_the_new_record() {
    let f = fixture();
    f.fake.fail_next(Op::Adopt);
    assert!(f
        .store
        .prepare_adopt(
            "ns",
            "overlayfs",
            None,
            new("a", ""),
            std::path::Path::new("/x")
        )
        .is_err());
    assert!(f.store.stat("ns", "overlayfs", "a").is_err());
}

/// A driver whose metadata is a metastore in the metadata database, as berthd's drivers are;
/// it fails after writing its record when told to, like a driver whose disk work failed.
struct SharedDriver {
    ms: berth_snapshotter::MetaStore,
    fail: std::sync::atomic::AtomicBool,
}

impl SharedDriver {
    fn failing(&self) -> Result<(), SnapshotError> {
        if self.fail.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SnapshotError::Io {
                op: "mkdir",
                path: "/nowhere".into(),
                source: std::io::Error::other("disk on fire"),
            });
        }
        Ok(())
    }
}

impl Snapshotter for SharedDriver {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }
    fn update(&self, _: &Info, _: &[String]) -> Result<Info, SnapshotError> {
        Err(SnapshotError::Unsupported("update".into()))
    }
    fn usage(&self, _: &str) -> Result<Usage, SnapshotError> {
        Ok(Usage::default())
    }
    fn mounts(&self, _: &str) -> Result<Vec<Mount>, SnapshotError> {
        Ok(Vec::new())
    }
    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        _: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.ms.write(|tx| {
            tx.create_snapshot(kind, key, parent, BTreeMap::new())?;
            Ok(())
        })?;
        // The record was written into the lent transaction before the failure: it must not
        // be committed either.
        self.failing()?;
        Ok(Vec::new())
    }
    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        self.ms
            .write(|tx| tx.commit_active(key, name, Usage::default(), labels))?;
        self.failing()
    }
    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.ms.write(|tx| tx.remove(key)).map(drop)
    }
    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }
    fn cleanup(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
    fn close(&self) -> Result<(), SnapshotError> {
        self.ms.close()
    }
}

#[test]
fn the_record_and_the_drivers_record_commit_in_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(dir.path()).unwrap());
    let ms = berth_snapshotter::MetaStore::open_shared(
        db.database(),
        "overlayfs",
        &dir.path().join("none"),
    )
    .unwrap();
    let driver = Arc::new(SharedDriver {
        ms,
        fail: false.into(),
    });
    let drivers = HashMap::from([(
        "overlayfs".to_owned(),
        driver.clone() as Arc<dyn Snapshotter>,
    )]);
    let store = Snapshots::new(db.clone(), drivers);
    let driver_keys = || {
        let mut keys = Vec::new();
        driver
            .walk(&mut |i| {
                keys.push(i.name.clone());
                true
            })
            .unwrap();
        keys
    };

    // Both halves land together (the driver's write joined the store's transaction: had it
    // begun its own on the same database, it would have waited for the store's forever).
    store
        .prepare("ns", "overlayfs", None, new("a", ""))
        .unwrap();
    let a = db.get_snapshot_record("ns", "overlayfs", "a").unwrap();
    assert_eq!(driver_keys(), vec![a.backend_key.clone()]);
    assert_eq!(
        store.stat("ns", "overlayfs", "a").unwrap().kind(),
        Kind::Active
    );

    // The driver wrote its record and then failed: neither record is there.
    driver.fail.store(true, std::sync::atomic::Ordering::SeqCst);
    let e = store
        .prepare("ns", "overlayfs", None, new("b", ""))
        .unwrap_err();
    assert!(e.to_string().contains("disk on fire"), "{e}");
    assert!(db.get_snapshot_record("ns", "overlayfs", "b").is_err());
    assert_eq!(driver_keys().len(), 1);

    // The same for a commit: the active snapshot is still there, under its key, on both sides.
    store
        .commit("ns", "overlayfs", "A", "a", BTreeMap::new(), None)
        .unwrap_err();
    assert!(db.get_snapshot_record("ns", "overlayfs", "A").is_err());
    assert_eq!(
        store.stat("ns", "overlayfs", "a").unwrap().kind(),
        Kind::Active
    );
    assert_eq!(driver_keys(), vec![a.backend_key.clone()]);

    driver
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    store
        .commit("ns", "overlayfs", "A", "a", BTreeMap::new(), None)
        .unwrap();
    let committed = db.get_snapshot_record("ns", "overlayfs", "A").unwrap();
    assert_eq!(driver_keys(), vec![committed.backend_key]);
    assert_eq!(
        store.stat("ns", "overlayfs", "A").unwrap().kind(),
        Kind::Committed
    );
}
