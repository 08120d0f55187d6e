//! Pull benchmark: one many-file image pulled from a local registry (Debian's docker-registry on
//! 127.0.0.1, plain HTTP) into an empty daemon, with unpack into overlayfs, three ways:
//!
//! - containerd 1.6 with `ctr images pull --plain-http` (ctr fetches and unpacks client-side);
//! - berthd with `bctr images pull` (the daemon's Transfer service: parallel downloads into
//!   resumable ingests, then the daemon-side unpack);
//! - berthd with the same `ctr images pull --plain-http`;
//! - and, to show where the time goes, berthd with `bctr images pull --no-unpack` (download only).
//!
//! Run as root, from a release build:
//!
//! ```sh
//! cargo build --release --bins && target/release/pull-bench [layers] [files-per-layer] [kib-per-file] [runs]
//! ```
//!
//! The three configurations alternate `runs` times (each on a fresh daemon); medians are
//! printed with their share of containerd's.

use std::time::{Duration, Instant};

use berth_tests::registry::Registry;
use berth_tests::{fixtures, ok, Berthd, Containerd};

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (layers, files, kib, runs) = (
        args.first().copied().unwrap_or(8),
        args.get(1).copied().unwrap_or(400),
        args.get(2).copied().unwrap_or(32),
        args.get(3).copied().unwrap_or(3).max(1),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("building image: {layers} layers x {files} files x {kib} KiB ...");
    let img = fixtures::many_file_image("docker.io/library/pullbench:latest", layers, files, kib);
    let archive = dir.path().join("bench.tar");
    fixtures::write_oci_archive(&archive, std::slice::from_ref(&img));
    let mb = (layers * files * kib) as f64 / 1024.0;

    let registry = Registry::start(None);
    let remote = format!("{}/library/pullbench:latest", registry.host());
    {
        let seeder = Berthd::start_quiet();
        ok(&seeder.ctr(&["images", "import", archive.to_str().expect("utf-8")]));
        ok(&seeder.ctr(&["images", "tag", &img.name, &remote]));
        ok(&seeder.ctr(&["images", "push", "--plain-http", &remote]));
    }

    let (mut t_containerd, mut t_bctr, mut t_ctr, mut t_fetch) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in 0..runs {
        let order: [usize; 4] = if r % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [3, 2, 1, 0]
        };
        for which in order {
            match which {
                0 => {
                    let containerd = Containerd::start();
                    t_containerd.push(time(|| {
                        ok(&containerd.ctr(&["images", "pull", "--plain-http", &remote]));
                    }));
                }
                1 => {
                    let berthd = Berthd::start_quiet();
                    t_bctr.push(time(|| {
                        ok(&berthd.bctr(&["images", "pull", "--quiet", &remote]));
                    }));
                }
                2 => {
                    let berthd = Berthd::start_quiet();
                    t_ctr.push(time(|| {
                        ok(&berthd.ctr(&["images", "pull", "--plain-http", &remote]));
                    }));
                }
                _ => {
                    let berthd = Berthd::start_quiet();
                    t_fetch.push(time(|| {
                        ok(&berthd.bctr(&["images", "pull", "--quiet", "--no-unpack", &remote]));
                    }));
                }
            }
        }
    }

    println!(
        "image: {layers} layers, {} files, {mb:.0} MiB uncompressed; {runs} run(s), median",
        layers * files
    );
    println!(
        "{:<38} {:>10} {:>12} {:>8}",
        "pull + unpack (overlayfs)", "seconds", "MiB/s", "ratio"
    );
    let base = median(t_containerd.clone()).as_secs_f64();
    for (name, t) in [
        ("containerd 1.6, ctr pull", t_containerd),
        ("berthd, bctr pull (Transfer)", t_bctr),
        ("berthd, ctr pull (client-side)", t_ctr),
        ("berthd, bctr pull --no-unpack", t_fetch),
    ] {
        let t = median(t).as_secs_f64();
        println!("{name:<38} {t:>10.2} {:>12.1} {:>8.2}", mb / t, t / base);
    }
}
