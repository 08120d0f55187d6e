//! The check against a real root: metadata, content store and the native driver opened through
//! their plugin registrations, as `berthd check` opens them, and the collector's own scheduler
//! for the repair.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use berth_content_store::ContentStore;
use berth_gc::Scheduler;
use berth_metadata::MetadataDb;
use berth_plugin::registry::{InitOptions, Initialised};
use berth_plugin::{types, Registry};
use berth_snapshots::{NewSnapshot, Snapshots};
use berth_snapshotter::SnapshotterInstance;

use super::*;

const NS: &str = "default";
const SN: &str = "native";

struct Opened {
    init: Initialised,
    stores: Stores,
    scheduler: Scheduler,
    snapshots: Arc<Snapshots>,
}

fn get<T: Send + Sync + 'static>(init: &Initialised, plugin_type: &str, id: &str) -> Arc<T> {
    init.get(plugin_type, id)
        .unwrap_or_else(|| panic!("{plugin_type}.{id} not ready"))
        .downcast::<T>()
        .unwrap_or_else(|_| panic!("{plugin_type}.{id} has another type"))
}

/// Opens the stores in `root` as berthd check does; the collector's own collections are put off
/// (the check runs the one it needs).
fn open(rt: &tokio::runtime::Runtime, root: &Path) -> Opened {
    let mut reg = Registry::new();
    reg.register(berth_metadata::registration()).unwrap();
    reg.register(berth_content_store::registration()).unwrap();
    reg.register(berth_snapshotter_native::registration())
        .unwrap();
    reg.register(berth_snapshots::registration()).unwrap();
    reg.register(berth_gc::registration()).unwrap();
    let gc: toml::Value = toml::from_str("startup_delay = \"8760h\"\ninterval = \"0s\"").unwrap();
    let opts = InitOptions {
        root: root.join("root"),
        state: root.join("state"),
        address: String::new(),
        configs: BTreeMap::from([("io.containerd.gc.v1.scheduler".to_owned(), gc)]),
        disabled: Vec::new(),
        required: vec![
            "io.containerd.snapshotter.v1.native".to_owned(),
            "io.containerd.gc.v1.scheduler".to_owned(),
        ],
    };
    let init = {
        // The scheduler's loop is spawned on the runtime while it initialises.
        let _rt = rt.enter();
        reg.init_all(opts).unwrap()
    };
    let driver = get::<SnapshotterInstance>(&init, types::SNAPSHOTTER, SN)
        .0
        .clone();
    let stores = Stores {
        db: get::<MetadataDb>(&init, types::METADATA, "redb"),
        content: get::<ContentStore>(&init, types::CONTENT, "content"),
        drivers: BTreeMap::from([(SN.to_owned(), driver)]),
        unavailable: BTreeMap::new(),
    };
    let scheduler = (*get::<Scheduler>(&init, types::GC, "scheduler")).clone();
    let snapshots = get::<Snapshots>(&init, types::SERVICE, berth_snapshots::PLUGIN_ID);
    Opened {
        init,
        stores,
        scheduler,
        snapshots,
    }
}

fn root_label() -> BTreeMap<String, String> {
    BTreeMap::from([(berth_metadata::gc::ROOT_LABEL.to_owned(), "kept".to_owned())])
}

fn blob(o: &Opened, reference: &str, bytes: &[u8]) -> String {
    let cs = &o.stores.content;
    let mut w = cs.writer(NS, reference, 0, "", None).unwrap();
    w.write(bytes).unwrap();
    w.commit(cs, bytes.len() as i64, "", root_label())
        .unwrap()
        .digest
}

fn blob_file(o: &Opened, digest: &str) -> PathBuf {
    o.stores.content.local().blob_path(digest)
}

fn prepare(o: &Opened, key: &str, parent: &str) -> String {
    let new = NewSnapshot {
        key: key.to_owned(),
        parent: parent.to_owned(),
        labels: root_label(),
        view: false,
    };
    o.snapshots.prepare(NS, SN, None, new).unwrap();
    o.stores
        .db
        .get_snapshot_record(NS, SN, key)
        .unwrap()
        .backend_key
}

fn commit(o: &Opened, name: &str, key: &str) -> String {
    o.snapshots
        .commit(NS, SN, name, key, root_label(), None)
        .unwrap();
    o.stores
        .db
        .get_snapshot_record(NS, SN, name)
        .unwrap()
        .backend_key
}

fn repair(rt: &tokio::runtime::Runtime, o: &Opened) -> Report {
    let scheduler = o.scheduler.clone();
    let mut collect = || rt.block_on(scheduler.collect_now());
    check(&o.stores, Mode::Repair(&mut collect)).unwrap()
}

/// The damage [`damaged_root`] did, to say what must be reported.
struct Damage {
    corrupt: String,
    deleted: String,
    /// `(key, backend key)` of each damaged snapshot record.
    gone: (String, String),
    work: (String, String),
    work_dir: PathBuf,
    g: (String, String),
    leaf: (String, String),
    /// The driver snapshot of the record deleted under `G`.
    f_backend: String,
    orphan: String,
}

/// A root with one of each problem the check knows, next to sound content that must survive.
fn damaged_root(o: &Opened) -> (Damage, String) {
    let good = blob(o, "good", b"sound bytes");
    let corrupt = blob(o, "corrupt", b"bytes to flip");
    let deleted = blob(o, "deleted", b"bytes to delete");

    // A flipped byte (the file is read-only, as every committed blob).
    let path = blob_file(o, &corrupt);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    // A file gone from under its record.
    std::fs::remove_file(blob_file(o, &deleted)).unwrap();

    let driver = o.stores.drivers[SN].clone();
    // A record whose driver snapshot is gone.
    let gone = prepare(o, "gone", "");
    driver.remove(&gone).unwrap();
    // A record whose driver snapshot lost its directory.
    let work = prepare(o, "work", "");
    let work_dir = PathBuf::from(&driver.mounts(&work).unwrap()[0].source);
    std::fs::remove_dir_all(&work_dir).unwrap();
    // A chain F <- G <- leaf whose bottom record is gone: G has no parent record, leaf stands
    // on an unsound parent, F's driver snapshot is left without a record.
    prepare(o, "f-active", "");
    let f_backend = commit(o, "F", "f-active");
    prepare(o, "g-active", "F");
    let g = commit(o, "G", "g-active");
    let leaf = prepare(o, "leaf", "G");
    o.stores.db.delete_snapshot_record(NS, SN, "F").unwrap();
    // A driver snapshot no record points to.
    driver.prepare("orphan", "", BTreeMap::new()).unwrap();
    // A sound snapshot that must stay.
    prepare(o, "sound", "");
    (
        Damage {
            corrupt,
            deleted,
            gone: ("gone".into(), gone),
            work: ("work".into(), work),
            work_dir,
            g: ("G".into(), g),
            leaf: ("leaf".into(), leaf),
            f_backend,
            orphan: "orphan".to_owned(),
        },
        good,
    )
}

fn missing_snapshot((key, backend_key): &(String, String), fault: SnapshotFault) -> Finding {
    Finding::MissingSnapshot {
        namespace: NS.to_owned(),
        snapshotter: SN.to_owned(),
        key: key.clone(),
        backend_key: backend_key.clone(),
        fault,
    }
}

fn unreferenced(backend_key: &str) -> Finding {
    Finding::UnreferencedSnapshot {
        snapshotter: SN.to_owned(),
        backend_key: backend_key.to_owned(),
    }
}

#[test]
fn report_finds_each_problem_repair_fixes_each_and_a_second_check_is_clean() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = open(&rt, dir.path());
    let (d, good) = damaged_root(&o);
    // Offline, as berthd check runs: the stores as the next start opens them.
    assert!(o.init.close().is_empty());
    drop(o);
    let o = open(&rt, dir.path());

    let report = check(&o.stores, Mode::Report).unwrap();
    let mut flipped = b"bytes to flip".to_vec();
    flipped[0] ^= 0xff;
    let expected = [
        Finding::CorruptBlob {
            digest: d.corrupt.clone(),
            actual: Some(berth_oci::Digest::sha256(&flipped).into_string()),
        },
        Finding::MissingBlob {
            namespace: NS.to_owned(),
            digest: d.deleted.clone(),
        },
        missing_snapshot(&d.g, SnapshotFault::NoParentRecord("F".into())),
        missing_snapshot(&d.gone, SnapshotFault::NotInDriver),
        missing_snapshot(&d.leaf, SnapshotFault::ParentUnsound("G".into())),
        missing_snapshot(&d.work, SnapshotFault::PathGone(d.work_dir.clone())),
        unreferenced(&d.f_backend),
        unreferenced(&d.orphan),
    ];
    assert_eq!(report.found, expected, "{report}");
    assert!(!report.clean());
    assert_eq!(report.remaining, report.found);
    assert!(report.actions.is_empty() && report.collected.is_none());
    let text = report.to_string();
    for line in [
        format!("corrupt blob {} (its bytes hash to sha256:", d.corrupt),
        format!("missing blob {} (namespace default)", d.deleted),
        format!(
            "missing snapshot native/work (namespace default): {} of {} is gone",
            d.work_dir.display(),
            d.work.1
        ),
        "missing snapshot native/leaf (namespace default): its parent G is missing".into(),
        "unreferenced snapshot native orphan (no record points to it)".into(),
        "check: 8 problem(s) found (berthd check --repair repairs them); checked 2 blob(s), \
         3 blob record(s), 5 snapshot record(s), 6 driver snapshot(s), 0 ingest(s)"
            .into(),
    ] {
        assert!(text.contains(&line), "{line:?} not in:\n{text}");
    }
    // Reporting changed nothing.
    assert!(blob_file(&o, &d.corrupt).exists());
    assert!(o.stores.db.get_snapshot_record(NS, SN, "gone").is_ok());

    let report = repair(&rt, &o);
    assert!(report.clean(), "{report}");
    // With repair the corrupt file goes first, so its record is missing too; the deleted records
    // leave their driver snapshots unreferenced, and the collection takes them.
    let mut found = report.found.clone();
    found.sort();
    let mut want = expected.to_vec();
    want.push(Finding::MissingBlob {
        namespace: NS.to_owned(),
        digest: d.corrupt.clone(),
    });
    for (_, backend_key) in [&d.g, &d.leaf, &d.work] {
        want.push(unreferenced(backend_key));
    }
    want.sort();
    assert_eq!(found, want, "{report}");
    let stats = report.collected.as_ref().unwrap();
    let mut removed: Vec<&str> = stats.snapshots.iter().map(|(_, k)| k.as_str()).collect();
    removed.sort();
    let mut want_removed = vec![
        d.f_backend.as_str(),
        d.g.1.as_str(),
        d.leaf.1.as_str(),
        d.work.1.as_str(),
        d.orphan.as_str(),
    ];
    want_removed.sort();
    assert_eq!(removed, want_removed, "{report}");
    let text = report.to_string();
    assert!(
        text.contains("check: 12 problem(s) found, 12 repaired, 0 remain"),
        "{text}"
    );
    assert!(
        text.contains(&format!("repair: removed blob file {}", d.corrupt)),
        "{text}"
    );
    assert!(
        text.contains("repair: deleted snapshot record native/leaf (namespace default)"),
        "{text}"
    );

    let again = check(&o.stores, Mode::Report).unwrap();
    assert!(again.clean() && again.found.is_empty(), "{again}");
    assert!(again.to_string().starts_with("check: clean;"), "{again}");
    // The sound content is untouched.
    assert!(o.stores.content.info(NS, &good).is_ok());
    assert!(blob_file(&o, &good).exists());
    let sound = o.stores.db.get_snapshot_record(NS, SN, "sound").unwrap();
    assert!(o.stores.drivers[SN].stat(&sound.backend_key).is_ok());
    assert!(o.init.close().is_empty());
}

#[test]
fn unreferenced_blobs_and_leased_ingests_are_collected() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = open(&rt, dir.path());
    let db = &o.stores.db;
    let cs = &o.stores.content;
    // A blob file whose records are gone (the collector's sweep was cut short).
    let stray = blob(&o, "stray", b"nobody's");
    // Deleting the record directly: the daemon would have collected at once.
    db.delete_blob(NS, &stray).unwrap();
    // An ingest whose lease is gone, one without a lease (a client may resume it).
    db.create_lease(NS, "l", BTreeMap::new()).unwrap();
    let mut w = cs.writer(NS, "leased", 0, "", Some("l")).unwrap();
    w.write(b"half").unwrap();
    drop(w);
    db.delete_lease(NS, "l").unwrap();
    let mut w = cs.writer(NS, "resumable", 0, "", None).unwrap();
    w.write(b"half too").unwrap();
    drop(w);

    let report = check(&o.stores, Mode::Report).unwrap();
    assert_eq!(
        report.found,
        [
            Finding::UnreferencedBlob {
                digest: stray.clone()
            },
            Finding::UnreferencedIngest {
                key: "default/leased".into(),
                lease: "l".into()
            },
        ],
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.contains("note: ingest default/resumable: 8 bytes, idle "),
        "{text}"
    );

    let report = repair(&rt, &o);
    assert!(report.clean(), "{report}");
    let stats = report.collected.as_ref().unwrap();
    assert_eq!(stats.deleted_files, std::slice::from_ref(&stray));
    assert_eq!(stats.ingests, ["default/leased"]);
    assert!(!blob_file(&o, &stray).exists());
    let again = check(&o.stores, Mode::Report).unwrap();
    assert!(again.found.is_empty(), "{again}");
    assert!(o.init.close().is_empty());
}

#[test]
fn an_image_left_incomplete_by_a_repair_is_noted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = open(&rt, dir.path());
    let layer = blob(&o, "layer", b"layer bytes");
    let cs = &o.stores.content;
    let mut w = cs.writer(NS, "manifest", 0, "", None).unwrap();
    w.write(b"{}").unwrap();
    let labels = BTreeMap::from([(
        format!("{}.l.0", berth_metadata::gc::REF_CONTENT),
        layer.clone(),
    )]);
    let manifest = w.commit(cs, 2, "", labels).unwrap();
    o.stores
        .db
        .create_image(
            NS,
            &berth_metadata::Image {
                name: "example.com/app:1".into(),
                target: berth_metadata::Descriptor {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: manifest.digest,
                    size: 2,
                    annotations: BTreeMap::new(),
                },
                ..Default::default()
            },
        )
        .unwrap();
    std::fs::remove_file(blob_file(&o, &layer)).unwrap();

    let report = repair(&rt, &o);
    assert!(report.clean(), "{report}");
    assert_eq!(
        report.notes,
        [Note::IncompleteImage {
            namespace: NS.into(),
            name: "example.com/app:1".into(),
            missing: vec![layer],
        }]
    );
    assert!(o.init.close().is_empty());
}

#[test]
fn errors_keep_their_source() {
    use std::error::Error as _;
    let e = CheckError::snapshot("native")(berth_snapshotter::SnapshotError::NotFound("x".into()));
    assert_eq!(e.to_string(), "snapshotter native: x: not found");
    assert!(e.source().is_some());
    let e = CheckError::ReadBlob {
        path: "/blobs/sha256/ab".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    assert!(e.source().unwrap().is::<std::io::Error>());
}
