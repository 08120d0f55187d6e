//! The btrfs snapshotter in berthd, driven by containerd's `ctr`: skipped (with the reason) when
//! its root is not on btrfs; on a loop-backed btrfs mounted at its root, images import onto it,
//! containers run on it through Berth's runtime, and hostile layers sent through `Diff.Apply`
//! stay inside their snapshot.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;

use berth_tests::fixtures;
use berth_tests::{bin, hostile, ok, reap_tasks, require_program, require_root, Berthd};

const PLUGIN: &str = "io.containerd.snapshotter.v1.btrfs";

/// The STATUS column of `ctr plugins ls` for the btrfs snapshotter.
fn btrfs_status(berthd: &Berthd) -> String {
    let out = ok(&berthd.ctr(&["plugins", "ls", "id==btrfs"]));
    let line = out
        .lines()
        .find(|l| l.starts_with("io.containerd.snapshotter.v1 "))
        .unwrap_or_else(|| panic!("plugins ls lists no btrfs snapshotter:\n{out}"));
    line.split_whitespace().last().unwrap().to_owned()
}

/// berthd whose btrfs plugin root is a fresh loop-backed btrfs, mounted before it starts. On
/// drop: berthd stops (its tasks reaped), then the filesystem is unmounted (the loop device goes
/// with it, autoclear), then berthd's directory and the image are removed.
struct OnBtrfs {
    berthd: Option<Berthd>,
    mount_point: PathBuf,
    _image_dir: tempfile::TempDir,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl OnBtrfs {
    fn start() -> OnBtrfs {
        require_root("mounting a loop-backed btrfs");
        let mkfs = require_program("mkfs.btrfs", "btrfs-progs");
        let image_dir = tempfile::Builder::new()
            .prefix("berth-btrfs-it-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let image = image_dir.path().join("image");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(1 << 30))
            .unwrap();
        run(Command::new(mkfs).arg("-q").arg("-f").arg(&image));
        let mut mount_point = PathBuf::new();
        let berthd = Berthd::start_after(|dir| {
            mount_point = dir.join("root").join(PLUGIN);
            std::fs::create_dir_all(&mount_point).unwrap();
            run(Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(&mount_point));
        });
        OnBtrfs {
            berthd: Some(berthd),
            mount_point,
            _image_dir: image_dir,
        }
    }

    fn berthd(&self) -> &Berthd {
        self.berthd.as_ref().unwrap()
    }

    /// Stops berthd and unmounts the filesystem, which must not be busy any more (no container
    /// or snapshot mount left behind).
    fn finish(mut self) {
        let mut berthd = self.berthd.take().unwrap();
        reap_tasks(&berthd.state(), &berthd.socket());
        assert!(berthd.stop().success(), "berthd:\n{}", berthd.log());
        nix::mount::umount(&self.mount_point)
            .unwrap_or_else(|e| panic!("unmount {} after berthd: {e}", self.mount_point.display()));
    }
}

impl Drop for OnBtrfs {
    fn drop(&mut self) {
        if let Some(mut berthd) = self.berthd.take() {
            // A failed test: berthd stops first, then the filesystem goes (lazily, whatever is
            // still mounted from it), and only then is berthd's directory removed.
            if let Some(mut child) = berthd.child.take() {
                reap_tasks(&berthd.state(), &berthd.socket());
                berth_tests::terminate(&mut child);
            }
            let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
            drop(berthd);
        }
    }
}

#[test]
fn skipped_when_its_root_is_not_on_btrfs() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    assert_eq!(btrfs_status(&berthd), "skip");
    let detail = ok(&berthd.ctr(&["plugins", "ls", "-d", "id==btrfs"]));
    let root = berthd.root().join(PLUGIN);
    assert!(
        detail.contains(&format!("{} is not on btrfs (", root.display())),
        "{detail}"
    );
    assert!(root.is_dir(), "the plugin's root is made before the check");
}

#[test]
fn images_import_and_containers_run_on_btrfs() {
    let f = OnBtrfs::start();
    assert!(
        bin("containerd-shim-berth-v1").exists(),
        "containerd-shim-berth-v1 is not built: cargo build --workspace --bins"
    );
    let berthd = f.berthd();
    assert_eq!(btrfs_status(berthd), "ok", "{}", berthd.log());

    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:btrfs");
    let out = ok(&berthd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "btrfs",
        archive.to_str().unwrap(),
    ]));
    assert!(
        out.contains("unpacking docker.io/library/busybox:btrfs"),
        "{out}"
    );

    // One committed snapshot per layer, each a read-only subvolume of the filesystem.
    let ls = ok(&berthd.ctr(&["snapshots", "--snapshotter", "btrfs", "ls"]));
    let committed = ls
        .lines()
        .filter(|l| l.trim_end().ends_with("Committed"))
        .count();
    assert_eq!(committed, img.layers.len(), "{ls}");
    let snapshots = f.mount_point.join("snapshots");
    let subvolumes: Vec<_> = std::fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(subvolumes.len(), img.layers.len(), "{subvolumes:?}");
    for s in &subvolumes {
        assert_eq!(
            std::fs::metadata(s).unwrap().ino(),
            256,
            "{} is a subvolume",
            s.display()
        );
    }

    let out = berthd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "btrfs",
        &img.name,
        "btrfs-true",
        "/bin/true",
    ]);
    assert!(
        out.status.success(),
        "ctr run /bin/true on btrfs: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        berthd.log()
    );
    // The container's root is its own writable subvolume of the image's top layer.
    let out = ok(&berthd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "btrfs",
        &img.name,
        "btrfs-write",
        "sh",
        "-c",
        "stat -f -c %t / && echo written > /new && cat /new",
    ]));
    // BTRFS_SUPER_MAGIC, in the hexadecimal busybox prints.
    assert_eq!(out, "9123683e\nwritten\n");
    // The layers' active subvolumes went with their commits, the containers' with the
    // collection that followed their removal: only the committed layers remain.
    let active = f.mount_point.join("active");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left: Vec<_> = std::fs::read_dir(&active)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "active subvolumes left: {left:?}\n{}",
            berthd.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    f.finish();
}

#[test]
fn hostile_layers_stay_inside_a_btrfs_snapshot() {
    let f = OnBtrfs::start();
    let berthd = f.berthd();
    assert_eq!(btrfs_status(berthd), "ok", "{}", berthd.log());
    // Outside every snapshot, on the same filesystem and beside it.
    let sentinels: Vec<PathBuf> = vec![
        f.mount_point.join("sentinel"),
        berthd.root().join("sentinel"),
    ];
    for s in &sentinels {
        std::fs::write(s, b"untouched").unwrap();
    }
    let cases = hostile::escape_layers(&sentinels[0], &f.mount_point);
    let rt = tokio::runtime::Runtime::new().unwrap();
    for (name, tar) in &cases {
        let (mounts, applied) = rt.block_on(async {
            let ch = berthd.channel().await;
            hostile::apply_to_new_snapshot(&ch, "btrfs", &format!("hostile-{name}"), tar).await
        });
        assert_eq!(mounts[0].r#type, "btrfs", "{mounts:?}");
        for s in &sentinels {
            assert_eq!(
                std::fs::read(s).unwrap(),
                b"untouched",
                "{name} escaped to {}",
                s.display()
            );
        }
        hostile::assert_contained_or_refused(name, applied);
    }
    f.finish();
}
