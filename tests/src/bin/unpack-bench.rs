//! Unpack benchmark: imports one generated many-layer image three ways and prints the times.
//!
//! - containerd: Debian's containerd with `ctr images import` (the client unpacks layer by layer);
//! - berthd, ctr: the same `ctr images import` against berthd;
//! - berthd, bctr: `bctr images import`, where berthd unpacks in parallel itself.
//!
//! Run as root, from a release build (debug builds measure the debug build):
//!
//! ```sh
//! cargo build --release --bins && target/release/unpack-bench [layers] [files-per-layer] [kib-per-file] [btrfs] [runs]
//! ```
//!
//! Each configuration starts from an empty daemon; times include import and unpack. The
//! snapshotter is overlayfs, or with `btrfs` the btrfs snapshotter of both daemons on one
//! loop-backed btrfs (a fresh directory of it bind-mounted as each daemon's btrfs root; needs
//! `mkfs.btrfs`). With `runs` > 1 the three configurations alternate and medians are printed.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::fixtures;
use berth_tests::{ok, require_program, require_root, Berthd, Containerd};

const BTRFS_PLUGIN: &str = "io.containerd.snapshotter.v1.btrfs";

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One loop-backed btrfs for every daemon of the run; unmounted (and its image removed) on drop.
struct LoopBtrfs {
    mount_point: PathBuf,
    binds: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl LoopBtrfs {
    fn new() -> LoopBtrfs {
        require_root("mounting a loop-backed btrfs");
        let mkfs = require_program("mkfs.btrfs", "btrfs-progs");
        let dir = tempfile::Builder::new()
            .prefix("berth-unpack-bench-")
            .tempdir_in("/var/tmp")
            .expect("tempdir");
        let image = dir.path().join("image");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(16 << 30))
            .expect("sparse image");
        run(Command::new(mkfs).arg("-q").arg("-f").arg(&image));
        let mount_point = dir.path().join("mnt");
        std::fs::create_dir(&mount_point).expect("mount point");
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mount_point));
        LoopBtrfs {
            mount_point,
            binds: Vec::new(),
            _dir: dir,
        }
    }

    /// Bind-mounts a fresh directory of the filesystem, `name`, at `target`.
    fn bind(&mut self, name: &str, target: &Path) {
        let source = self.mount_point.join(name);
        std::fs::create_dir_all(&source).expect("btrfs directory");
        std::fs::create_dir_all(target).expect("bind target");
        run(Command::new("mount").arg("--bind").arg(&source).arg(target));
        self.binds.push(target.to_owned());
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        for b in self.binds.iter().rev() {
            let _ = nix::mount::umount2(b, nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = nix::mount::umount2(&self.mount_point, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let raw: Vec<String> = std::env::args().skip(1).collect();
    let btrfs = raw.iter().any(|a| a == "btrfs");
    let args: Vec<usize> = raw.iter().filter_map(|a| a.parse().ok()).collect();
    let (layers, files, kib) = (
        args.first().copied().unwrap_or(8),
        args.get(1).copied().unwrap_or(400),
        args.get(2).copied().unwrap_or(32),
    );
    let runs = args.get(3).copied().unwrap_or(1).max(1);
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("building image: {layers} layers x {files} files x {kib} KiB ...");
    let img = fixtures::many_file_image("docker.io/library/bench:latest", layers, files, kib);
    let archive = dir.path().join("bench.tar");
    fixtures::write_oci_archive(&archive, std::slice::from_ref(&img));
    let a = archive.to_str().expect("utf-8 path");
    let mb = (layers * files * kib) as f64 / 1024.0;
    let sn = if btrfs { "btrfs" } else { "overlayfs" };
    let mut fs = btrfs.then(LoopBtrfs::new);

    let (mut t_containerd, mut t_berth_ctr, mut t_berth_bctr) =
        (Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let extra = match &mut fs {
            Some(fs) => {
                let root = fs.mount_point.join(format!("containerd-{r}"));
                std::fs::create_dir_all(&root).expect("containerd btrfs root");
                format!(
                    "[plugins.\"{BTRFS_PLUGIN}\"]\n  root_path = \"{}\"\n",
                    root.display()
                )
            }
            None => String::new(),
        };
        let containerd = Containerd::start_with(&extra);
        t_containerd.push(time(|| {
            ok(&containerd.ctr(&["images", "import", "--snapshotter", sn, a]));
        }));
        drop(containerd);

        for (client, times) in [("ctr", &mut t_berth_ctr), ("bctr", &mut t_berth_bctr)] {
            let berthd = match &mut fs {
                Some(fs) => Berthd::start_after(|d| {
                    fs.bind(
                        &format!("berthd-{client}-{r}"),
                        &d.join("root").join(BTRFS_PLUGIN),
                    )
                }),
                None => Berthd::start(),
            };
            times.push(time(|| {
                let args = ["images", "import", "--snapshotter", sn, a];
                ok(&if client == "ctr" {
                    berthd.ctr(&args)
                } else {
                    berthd.bctr(&args)
                });
            }));
            drop(berthd);
        }
    }

    println!(
        "image: {layers} layers, {} files, {mb:.0} MiB uncompressed; {runs} run(s), median",
        layers * files
    );
    println!(
        "{:<32} {:>10} {:>12} {:>8}",
        format!("import + unpack ({sn})"),
        "seconds",
        "MiB/s",
        "ratio"
    );
    let base = median(t_containerd.clone()).as_secs_f64();
    for (name, t) in [
        ("containerd 1.6, ctr", t_containerd),
        ("berthd, ctr (client unpack)", t_berth_ctr),
        ("berthd, bctr (daemon unpack)", t_berth_bctr),
    ] {
        let t = median(t).as_secs_f64();
        println!("{name:<32} {:>10.2} {:>12.1} {:>8.2}", t, mb / t, t / base);
    }
}
