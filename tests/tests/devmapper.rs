//! The devmapper snapshotter in berthd, driven by containerd's `ctr`.
//!
//! On any host: skipped with the reason when no pool is configured, and, on a kernel without
//! device-mapper (this build host), skipped saying so even when one is. The `vm_*` tests need
//! device-mapper, root, `losetup` and `dmsetup`: they are marked ignored so the host run does not
//! fail for the kernel it has, and `scripts/vm-tests.sh` runs them (`--ignored vm_`) in the VM,
//! where they fail loudly if anything is missing. There, on a loop-backed thin pool: images import
//! and containers run; berthd aborted between a thin snapshot's creation and its metadata commit
//! is repaired at restart (pool and records agree); a full pool gives a clear "resource
//! exhausted" error and berthd keeps serving; hostile layers applied through Diff.Apply stay
//! inside their thin device.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_tests::{bin, ok, reap_tasks, require_program, require_root, wait_for_socket, Berthd};
use berth_tests::{fixtures, hostile};

const PLUGIN: &str = "io.containerd.snapshotter.v1.devmapper";

/// STATUS and the detail of `ctr plugins ls -d` for the devmapper snapshotter.
fn devmapper_status(berthd: &Berthd) -> (String, String) {
    let out = ok(&berthd.ctr(&["plugins", "ls", "id==devmapper"]));
    let line = out
        .lines()
        .find(|l| l.starts_with("io.containerd.snapshotter.v1 "))
        .unwrap_or_else(|| panic!("plugins ls lists no devmapper snapshotter:\n{out}"));
    let status = line.split_whitespace().last().unwrap().to_owned();
    let detail = ok(&berthd.ctr(&["plugins", "ls", "-d", "id==devmapper"]));
    (status, detail)
}

fn config(dir: &Path, pool: &str, extra: &str) -> PathBuf {
    config_sized(dir, pool, "64MB", extra)
}

fn config_sized(dir: &Path, pool: &str, base_image_size: &str, extra: &str) -> PathBuf {
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\n[plugins.\"{PLUGIN}\"]\n  pool_name = \"{pool}\"\n  base_image_size = \"{base_image_size}\"\n{extra}"
        ),
    )
    .unwrap();
    cfg
}

fn has_device_mapper() -> bool {
    Path::new("/dev/mapper/control").exists()
}

#[test]
fn skipped_when_not_configured_or_without_device_mapper() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    let (status, detail) = devmapper_status(&berthd);
    assert_eq!(status, "skip", "{detail}");
    assert!(
        detail.contains("devmapper not configured: set pool_name"),
        "{detail}"
    );
    drop(berthd);

    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "berth-no-such-pool", "");
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let (status, detail) = devmapper_status(&berthd);
    if has_device_mapper() {
        // The VM: device-mapper is there, the pool is not; the plugin fails saying which.
        assert_eq!(status, "error", "{detail}");
        assert!(detail.contains("berth-no-such-pool"), "{detail}");
    } else {
        assert_eq!(status, "skip", "{detail}");
        assert!(
            detail.contains("device-mapper is not available: "),
            "{detail}"
        );
    }
    // Whatever devmapper did, berthd serves.
    ok(&berthd.ctr(&["version"]));
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A loop-backed thin pool (as `snapshotters/devmapper/scripts/create-pool.sh` makes, but failing
/// writes at once when full), removed on drop with whatever devices are left on it.
struct ThinPool {
    name: String,
    loops: Vec<String>,
    _dir: tempfile::TempDir,
}

impl ThinPool {
    fn new(name: &str, data: u64) -> ThinPool {
        require_root("device-mapper");
        for module in ["dm_thin_pool", "loop"] {
            let _ = Command::new("modprobe").arg(module).status();
        }
        assert!(
            has_device_mapper(),
            "this test needs a kernel with device-mapper (no /dev/mapper/control): scripts/vm-tests.sh runs it in a VM"
        );
        require_program("dmsetup", "dmsetup");
        require_program("losetup", "mount");
        let dir = tempfile::Builder::new()
            .prefix("berth-dm-")
            .tempdir()
            .unwrap();
        let file = |n: &str, size: u64| {
            let p = dir.path().join(n);
            std::fs::File::create(&p)
                .and_then(|f| f.set_len(size))
                .unwrap();
            p
        };
        let (data_file, meta_file) = (file("data", data), file("meta", 32 << 20));
        let data_dev = run(Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&data_file));
        let meta_dev = run(Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&meta_file));
        let table = format!(
            "0 {} thin-pool {meta_dev} {data_dev} 128 0 1 error_if_no_space",
            data / 512
        );
        run(Command::new("dmsetup").args(["create", name, "--table", &table]));
        ThinPool {
            name: name.to_owned(),
            loops: vec![data_dev, meta_dev],
            _dir: dir,
        }
    }

    /// Whether thin id `id` exists in the pool: `create_thin` of a taken id fails; a free one is
    /// created and deleted again.
    fn thin_exists(&self, id: u64) -> bool {
        let create = Command::new("dmsetup")
            .args(["message", &self.name, "0", &format!("create_thin {id}")])
            .output()
            .unwrap();
        if create.status.success() {
            run(Command::new("dmsetup").args([
                "message",
                &self.name,
                "0",
                &format!("delete {id}"),
            ]));
            false
        } else {
            true
        }
    }

    /// The dm devices of this pool's snapshots (`<pool>-snap-*`).
    fn snapshot_devices(&self) -> Vec<String> {
        let ls = run(Command::new("dmsetup").args(["ls"]));
        ls.lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with(&format!("{}-snap-", self.name)))
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for ThinPool {
    fn drop(&mut self) {
        let ls = Command::new("dmsetup").arg("ls").output();
        if let Ok(ls) = ls {
            for line in String::from_utf8_lossy(&ls.stdout).lines() {
                if let Some(n) = line.split_whitespace().next() {
                    if n.starts_with(&format!("{}-", self.name)) {
                        let _ = Command::new("umount")
                            .arg(format!("/dev/mapper/{n}"))
                            .output();
                        let _ = Command::new("dmsetup").args(["remove", n]).output();
                    }
                }
            }
        }
        let _ = Command::new("dmsetup")
            .args(["remove", &self.name])
            .output();
        for l in &self.loops {
            let _ = Command::new("losetup").args(["-d", l]).output();
        }
    }
}

/// The device records in a stopped berthd's `devices.redb`: (name, thin id, state).
fn device_records(berthd: &Berthd) -> Vec<(String, u64, String)> {
    let path = berthd.root().join(PLUGIN).join("devices.redb");
    let db = redb::Database::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    use redb::{ReadableDatabase, ReadableTable};
    let rtx = db.begin_read().unwrap();
    let t = rtx
        .open_table(redb::TableDefinition::<&str, &[u8]>::new("devices"))
        .unwrap();
    t.iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            let rec: serde_json::Value = serde_json::from_slice(v.value()).unwrap();
            (
                k.value().to_owned(),
                rec["thin_id"].as_u64().unwrap(),
                rec["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn import(berthd: &Berthd, dir: &Path, name: &str) -> fixtures::FixtureImage {
    let (img, archive) = fixtures::busybox_oci_archive(dir, name);
    let out = ok(&berthd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "devmapper",
        archive.to_str().unwrap(),
    ]));
    assert!(out.contains(&format!("unpacking {name}")), "{out}");
    img
}

#[test]
#[ignore = "needs device-mapper: scripts/vm-tests.sh runs it in the VM"]
fn vm_images_import_and_containers_run_on_devmapper() {
    let pool = ThinPool::new("berth-it-run", 1 << 30);
    assert!(
        bin("containerd-shim-berth-v1").exists(),
        "containerd-shim-berth-v1 is not built: cargo build --workspace --bins"
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pool.name, "");
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let (status, detail) = devmapper_status(&berthd);
    assert_eq!(status, "ok", "{detail}\n{}", berthd.log());

    let img = import(&berthd, dir.path(), "docker.io/library/busybox:devmapper");
    let ls = ok(&berthd.ctr(&["snapshots", "--snapshotter", "devmapper", "ls"]));
    let committed = ls
        .lines()
        .filter(|l| l.trim_end().ends_with("Committed"))
        .count();
    assert_eq!(committed, img.layers.len(), "{ls}");
    // Committed layers are deactivated: no snapshot device is active.
    assert_eq!(pool.snapshot_devices(), Vec::<String>::new());

    let out = berthd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "devmapper",
        &img.name,
        "dm-true",
        "/bin/true",
    ]);
    assert!(
        out.status.success(),
        "ctr run /bin/true on devmapper: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        berthd.log()
    );
    // The container's root is a thin device with ext4 on it, and writable.
    let out = ok(&berthd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "devmapper",
        &img.name,
        "dm-write",
        "sh",
        "-c",
        "stat -f -c %t / && echo written > /new && cat /new",
    ]));
    // EXT4_SUPER_MAGIC, in the hexadecimal busybox prints.
    assert_eq!(out, "ef53\nwritten\n");
    reap_tasks(&berthd.state(), &berthd.socket());
}

/// `fs_type = "xfs"`: the base device gets xfs (mkfs.xfs refuses less than 300 MB, so a bigger
/// base; thin provisioning allocates only what is written), snapshots mount as xfs with
/// `nouuid` (every snapshot carries its base's UUID), and containers run on it.
#[test]
#[ignore = "needs device-mapper: scripts/vm-tests.sh runs it in the VM"]
fn vm_containers_run_on_xfs_thin_devices() {
    require_program("mkfs.xfs", "xfsprogs");
    let pool = ThinPool::new("berth-it-xfs", 2 << 30);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_sized(dir.path(), &pool.name, "512MB", "  fs_type = \"xfs\"\n");
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let (status, detail) = devmapper_status(&berthd);
    assert_eq!(status, "ok", "{detail}\n{}", berthd.log());
    let img = import(&berthd, dir.path(), "docker.io/library/busybox:xfs");
    let out = ok(&berthd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "devmapper",
        &img.name,
        "xfs-write",
        "sh",
        "-c",
        "stat -f -c %t / && echo written > /new && cat /new",
    ]));
    // XFS_SUPER_MAGIC ("XFSB"), in the hexadecimal busybox prints.
    assert_eq!(out, "58465342\nwritten\n");
    reap_tasks(&berthd.state(), &berthd.socket());
}

#[test]
#[ignore = "needs device-mapper: scripts/vm-tests.sh runs it in the VM"]
fn vm_hostile_layers_stay_inside_a_devmapper_snapshot() {
    let pool = ThinPool::new("berth-it-hostile", 1 << 30);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pool.name, "");
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let (status, detail) = devmapper_status(&berthd);
    assert_eq!(status, "ok", "{detail}\n{}", berthd.log());
    // Outside every snapshot: beside berthd's root, which a `..` or a symlink would reach.
    let sentinel = berthd.root().join("sentinel");
    std::fs::write(&sentinel, b"untouched").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, tar) in hostile::escape_layers(&sentinel, &berthd.root()) {
        let (mounts, applied) = rt.block_on(async {
            let ch = berthd.channel().await;
            hostile::apply_to_new_snapshot(&ch, "devmapper", &format!("hostile-{name}"), &tar).await
        });
        assert_eq!(mounts[0].r#type, "ext4", "{mounts:?}");
        assert_eq!(
            std::fs::read(&sentinel).unwrap(),
            b"untouched",
            "{name} escaped"
        );
        hostile::assert_contained_or_refused(name, applied);
    }
}

#[test]
#[ignore = "needs device-mapper: scripts/vm-tests.sh runs it in the VM"]
fn vm_crash_between_thin_snapshot_and_metadata_commit_is_repaired() {
    let pool = ThinPool::new("berth-it-crash", 1 << 30);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pool.name, "");
    let mut berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let img = import(&berthd, dir.path(), "docker.io/library/busybox:dmcrash");
    let ls = ok(&berthd.ctr(&["snapshots", "--snapshotter", "devmapper", "ls"]));
    let top = ls
        .lines()
        .filter(|l| l.trim_end().ends_with("Committed"))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .find(|k| !ls.lines().any(|l| l.split_whitespace().nth(1) == Some(k)))
        .unwrap_or_else(|| panic!("no top layer in\n{ls}"));
    assert!(berthd.stop().success(), "{}", berthd.log());
    let before = device_records(&berthd);
    assert_eq!(
        before.len(),
        img.layers.len() + 1,
        "base and layers: {before:?}"
    );

    // berthd with the fault hook: the Prepare creates the thin snapshot in the pool, then the
    // process aborts before the device's record and the snapshot's metadata are committed.
    let log = std::fs::File::create(berthd.log_path()).unwrap();
    let mut child = berthd
        .command()
        .env("BERTH_DEVMAPPER_FAULT", "after-create-snap")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_for_socket(&berthd.socket(), &mut child, &berthd.log_path());
    let out = berthd.ctr(&[
        "snapshots",
        "--snapshotter",
        "devmapper",
        "prepare",
        "crashing",
        &top,
    ]);
    assert!(
        !out.status.success(),
        "prepare should have died with berthd"
    );
    let status = child.wait().unwrap();
    assert!(!status.success(), "berthd should have aborted: {status}");
    assert!(
        berthd.log().contains("aborting here on purpose"),
        "{}",
        berthd.log()
    );
    let crashed = device_records(&berthd);
    let new: Vec<_> = crashed.iter().filter(|r| !before.contains(r)).collect();
    assert_eq!(new.len(), 1, "one device being created: {crashed:?}");
    let (name, thin_id, state) = new[0].clone();
    assert_eq!(state, "Creating", "{new:?}");
    assert!(
        pool.thin_exists(thin_id),
        "the crash left thin device {thin_id}"
    );

    // Restart: the repair deletes the half-created device; pool, records and snapshots agree.
    berthd.restart();
    let ls = ok(&berthd.ctr(&["snapshots", "--snapshotter", "devmapper", "ls"]));
    assert!(!ls.contains("crashing"), "{ls}");
    assert_eq!(ls.lines().count(), img.layers.len() + 1, "{ls}");
    assert!(
        berthd.log().contains("creation or removal was interrupted"),
        "{}",
        berthd.log()
    );
    // Work goes on: the same Prepare succeeds now.
    ok(&berthd.ctr(&[
        "snapshots",
        "--snapshotter",
        "devmapper",
        "prepare",
        "after",
        &top,
    ]));
    ok(&berthd.ctr(&["snapshots", "--snapshotter", "devmapper", "rm", "after"]));
    assert!(berthd.stop().success(), "{}", berthd.log());
    let after = device_records(&berthd);
    assert!(
        after
            .iter()
            .all(|(n, _, s)| n != &name && (s == "Deactivated" || s == "Activated")),
        "{after:?}"
    );
    let ids: Vec<u64> = after.iter().map(|r| r.1).collect();
    let max = ids.iter().chain([&thin_id]).max().copied().unwrap_or(0);
    for id in 0..=max + 2 {
        assert_eq!(
            pool.thin_exists(id),
            ids.contains(&id),
            "thin id {id}: in the pool iff a record has it ({after:?})"
        );
    }
    assert_eq!(pool.snapshot_devices(), Vec::<String>::new());
}

#[test]
#[ignore = "needs device-mapper: scripts/vm-tests.sh runs it in the VM"]
fn vm_a_full_pool_is_resource_exhausted_and_berthd_keeps_serving() {
    // 48 MB of pool under a 64 MB file system: the pool fills before the file system does.
    let pool = ThinPool::new("berth-it-full", 48 << 20);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &pool.name, "");
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let img = import(&berthd, dir.path(), "docker.io/library/busybox:dmfull");
    // A container fills its root until the pool has no block left (the pool errors writes at
    // once), and stays (no --rm) holding them.
    let _ = berthd.ctr(&[
        "run",
        "--snapshotter",
        "devmapper",
        &img.name,
        "dm-fill",
        "sh",
        "-c",
        "dd if=/dev/zero of=/fill bs=1M count=60; sync",
    ]);
    let status = run(Command::new("dmsetup").args(["status", &pool.name]));
    let out = berthd.ctr(&[
        "snapshots",
        "--snapshotter",
        "devmapper",
        "prepare",
        "no-room",
        "",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "prepare on a full pool ({status})");
    assert!(
        stderr.contains("out of space"),
        "a clear error: {stderr} (pool: {status})"
    );
    // berthd still serves.
    ok(&berthd.ctr(&["version"]));
    ok(&berthd.ctr(&["snapshots", "--snapshotter", "devmapper", "ls"]));
    ok(&berthd.ctr(&["containers", "rm", "dm-fill"]));
    reap_tasks(&berthd.state(), &berthd.socket());
}
