//! The conformance suite, crash repair through the fault hook, and a full pool, on real
//! device-mapper: a loop-backed thin pool made once per test process (sparse files under
//! `TMPDIR`), each case with a device-name prefix of its own.
//!
//! Built only with `--features vm-tests` (this host's kernel has no device-mapper); it needs
//! root, `/dev/mapper/control`, `losetup` and `dmsetup`, and fails loudly without them.
//! `scripts/vm-tests.sh` runs it in the VM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use berth_plugin::{Classify, ErrorKind};
use berth_snapshotter::{Kind, Snapshotter};
use berth_snapshotter_devmapper::devices::State;
use berth_snapshotter_devmapper::{fault, Config, DevmapperSnapshotter};
use berth_snapshotter_testsuite::Quirks;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (is it installed?)"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop-backed thin pool of `data` bytes, named `name`; `error_if_no_space` so a full pool
/// fails writes at once instead of queueing them for a minute.
fn make_pool(name: &str, data: u64) -> String {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the devmapper tests need root"
    );
    for module in ["dm_thin_pool", "loop"] {
        let _ = Command::new("modprobe").arg(module).status();
    }
    assert!(
        Path::new("/dev/mapper/control").exists(),
        "the devmapper tests need a kernel with device-mapper (/dev/mapper/control is missing): run them in the VM (scripts/vm-tests.sh)"
    );
    let dir = tempfile::Builder::new()
        .prefix("berth-dm-pool-")
        .tempdir()
        .expect("pool directory")
        .keep();
    let file = |n: &str, size: u64| -> PathBuf {
        let p = dir.join(n);
        std::fs::File::create(&p)
            .and_then(|f| f.set_len(size))
            .expect("sparse file");
        p
    };
    let (data_file, meta_file) = (file("data", data), file("meta", 64 << 20));
    let data_dev = run(Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&data_file));
    let meta_dev = run(Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&meta_file));
    let table = format!(
        "0 {} thin-pool {meta_dev} {data_dev} 128 0 2 skip_block_zeroing error_if_no_space",
        data / 512
    );
    run(Command::new("dmsetup").args(["create", name, "--table", &table]));
    name.to_owned()
}

/// The pool of the case whose root is `root`: one per case (a case builds its driver again on
/// the same root to test crash recovery, and gets the same pool back).
fn pool_for(root: &Path) -> String {
    static POOLS: Mutex<BTreeMap<PathBuf, String>> = Mutex::new(BTreeMap::new());
    let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    pools
        .entry(root.to_owned())
        .or_insert_with(|| make_pool(&format!("{}-pool", prefix_of(root)), 1 << 30))
        .clone()
}

fn settings(pool: &str, prefix: &str) -> berth_snapshotter_devmapper::Settings {
    Config {
        pool_name: pool.to_owned(),
        base_image_size: "64MB".into(),
        device_prefix: prefix.to_owned(),
        ..Config::default()
    }
    .settings()
    .expect("valid settings")
    .expect("a pool is configured")
}

/// A prefix of its own for each case's root (`…/berth-conformance-XXXX/root`).
fn prefix_of(root: &Path) -> String {
    let dir = root
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tail = dir.rsplit('-').next().unwrap_or("x");
    format!("bt-{tail}")
}

fn open(root: &Path) -> DevmapperSnapshotter {
    DevmapperSnapshotter::new(root, settings(&pool_for(root), &prefix_of(root)))
        .unwrap_or_else(|e| panic!("open the devmapper snapshotter on {}: {e}", root.display()))
}

mod conformance {
    use super::*;

    fn make(root: &Path) -> Box<dyn Snapshotter> {
        Box::new(open(root))
    }

    /// The driver keeps no directory per snapshot; its scratch directory is where a crash
    /// leaves files, and what cleanup empties.
    fn scratch_dir(root: &Path) -> PathBuf {
        root.join("tmp")
    }

    berth_snapshotter_testsuite::conformance_tests!(
        make,
        Quirks {
            snapshots_dir: scratch_dir,
            ..Quirks::default()
        }
    );
}

/// Whether thin id `id` exists in `pool`: `create_thin` of a taken id fails; a free one is
/// created and deleted again.
fn thin_exists(pool: &str, id: u64) -> bool {
    let create = Command::new("dmsetup")
        .args(["message", pool, "0", &format!("create_thin {id}")])
        .output()
        .expect("dmsetup");
    if create.status.success() {
        run(Command::new("dmsetup").args(["message", pool, "0", &format!("delete {id}")]));
        false
    } else {
        true
    }
}

fn dm_device_exists(name: &str) -> bool {
    Command::new("dmsetup")
        .args(["info", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs this test binary's `crash_child` in a child process that aborts at `point`.
fn crash_at(root: &Path, point: &str) {
    let status = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "crash_child", "--include-ignored", "--nocapture"])
        .env(fault::ENV, point)
        .env("BERTH_DM_CRASH_ROOT", root)
        .env("BERTH_DM_CRASH_POOL", pool_for(root))
        .status()
        .expect("run the crashing child");
    assert!(
        !status.success(),
        "the child should have aborted at {point}, but exited with {status}"
    );
}

/// The child of [`crash_at`]: prepares `after-crash` on `base`, and is aborted by the fault hook
/// on the way.
#[test]
#[ignore = "a helper: crash tests run it in a child process, with the fault hook set"]
fn crash_child() {
    let root = PathBuf::from(std::env::var_os("BERTH_DM_CRASH_ROOT").expect("BERTH_DM_CRASH_ROOT"));
    let pool = std::env::var("BERTH_DM_CRASH_POOL").expect("BERTH_DM_CRASH_POOL");
    let sn = DevmapperSnapshotter::new(&root, settings(&pool, &prefix_of(&root))).expect("open");
    let _ = sn.prepare("after-crash", "base", Default::default());
    panic!(
        "the fault hook {:?} did not abort",
        std::env::var(fault::ENV)
    );
}

fn crash_case(point: &str, left_state: State) {
    let tmp = tempfile::Builder::new()
        .prefix("berth-conformance-")
        .tempdir()
        .unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).unwrap();
    {
        let sn = open(&root);
        sn.prepare("base-active", "", Default::default()).unwrap();
        sn.commit("base", "base-active", Default::default())
            .unwrap();
        sn.close().unwrap();
    }
    crash_at(&root, point);
    let prefix = prefix_of(&root);
    // What the crash left: a device record in `left_state` whose thin device is in the pool.
    let left = {
        let store =
            berth_snapshotter_devmapper::devices::DeviceStore::open(&root.join("devices.redb"))
                .unwrap();
        let all = store.all().unwrap();
        store.close().unwrap();
        all.into_iter()
            .find(|d| d.name == format!("{prefix}-snap-2"))
            .unwrap_or_else(|| panic!("no record of the crashed snapshot's device"))
    };
    assert_eq!(left.state, left_state, "{left:?}");
    assert!(
        thin_exists(&pool_for(&root), left.thin_id),
        "the crash left no thin device {left:?}"
    );

    // A restart repairs: the device is gone from the pool and from device-mapper, its record
    // too, and the snapshots are what they were.
    let sn = open(&root);
    assert!(
        !thin_exists(&pool_for(&root), left.thin_id),
        "thin device {} leaked",
        left.thin_id
    );
    assert!(
        !dm_device_exists(&left.name),
        "dm device {} left",
        left.name
    );
    let devices = sn.devices().unwrap();
    assert!(
        devices.iter().all(|d| d.name != left.name),
        "record left: {devices:?}"
    );
    assert!(
        devices.iter().all(|d| !d.state.interrupted()),
        "{devices:?}"
    );
    let mut names = Vec::new();
    sn.walk(&mut |i| {
        names.push((i.name.clone(), i.kind()));
        true
    })
    .unwrap();
    assert_eq!(names, vec![("base".to_string(), Kind::Committed)]);
    // Every remaining record has its thin device.
    for d in &devices {
        assert!(
            thin_exists(&pool_for(&root), d.thin_id),
            "{d:?} has no thin device"
        );
    }
    // And work goes on: the same snapshot again.
    sn.prepare("after-crash", "base", Default::default())
        .expect("prepare after the repair");
    sn.close().unwrap();
}

#[test]
fn crash_after_create_snap_is_repaired() {
    crash_case("after-create-snap", State::Creating);
}

#[test]
fn crash_after_activation_before_the_record_is_repaired() {
    crash_case("after-activate", State::Activated);
}

#[test]
fn a_full_pool_is_resource_exhausted_and_the_driver_keeps_serving() {
    let pool = make_pool(&format!("berth-full-{}", std::process::id()), 256 << 20);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let sn = DevmapperSnapshotter::new(&root, settings(&pool, "full")).expect("open");
    let mounts = sn.prepare("filler", "", Default::default()).unwrap();
    {
        let m = berth_mount::TempMount::new(&mounts).expect("mount filler");
        // 64 MB of base device, 256 MB of pool: several files fill the pool (each device is
        // 64 MB, so fill four of them).
        let _ = std::fs::write(m.path().join("fill"), vec![0x5a; 60 << 20]);
        nix::unistd::sync();
    }
    let mut fillers = vec!["filler".to_string()];
    for i in 0..8 {
        let key = format!("filler-{i}");
        match sn.prepare(&key, "", Default::default()) {
            Ok(mounts) => {
                fillers.push(key);
                let m = berth_mount::TempMount::new(&mounts).expect("mount");
                let _ = std::fs::write(m.path().join("fill"), vec![0xa5; 60 << 20]);
                nix::unistd::sync();
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::ResourceExhausted, "{e}");
                assert!(e.to_string().contains("out of space"), "{e}");
                break;
            }
        }
    }
    let err = sn
        .prepare("one-more", "", Default::default())
        .expect_err("the pool is full");
    assert_eq!(err.kind(), ErrorKind::ResourceExhausted, "{err}");
    // Still serving: stat, walk, remove.
    sn.stat("filler").unwrap();
    sn.walk(&mut |_| true).unwrap();
    for key in &fillers {
        sn.remove(key).unwrap();
    }
    sn.close().unwrap();
}
