//! Unpack benchmark: imports one generated many-layer image three ways and prints the times.
//!
//! - containerd: Debian's containerd with `ctr images import` (the client unpacks layer by layer);
//! - berthd, ctr: the same `ctr images import` against berthd;
//! - berthd, bctr: `bctr images import`, where berthd unpacks in parallel itself.
//!
//! Run as root, from a release build (debug builds measure the debug build):
//!
//! ```sh
//! cargo build --release --bins && target/release/unpack-bench [layers] [files-per-layer] [kib-per-file]
//! ```
//!
//! Each configuration starts from an empty daemon; times include import and unpack (overlayfs).

use std::time::{Duration, Instant};

use berth_tests::fixtures::{self, FixtureImage, LayerBuilder, PlatformImage};
use berth_tests::{ok, Berthd, Containerd};

fn image(layers: usize, files: usize, kib: usize) -> FixtureImage {
    let mut ls = Vec::new();
    for l in 0..layers {
        let mut b = LayerBuilder::new().dir(&format!("data/l{l}"), 0o755);
        for f in 0..files {
            let data = fixtures::large_blob_bytes(kib * 1024, (l * files + f) as u64 + 1);
            b = b.file(&format!("data/l{l}/f{f:05}"), 0o644, data);
        }
        ls.push(b.build());
    }
    let primary = PlatformImage::new("linux", fixtures::host_arch(), ls, &["/bin/true"]);
    FixtureImage::new("docker.io/library/bench:latest", primary, Vec::new())
}

fn time(f: impl FnOnce()) -> Duration {
    let t = Instant::now();
    f();
    t.elapsed()
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (layers, files, kib) = (
        args.first().copied().unwrap_or(8),
        args.get(1).copied().unwrap_or(400),
        args.get(2).copied().unwrap_or(32),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    eprintln!("building image: {layers} layers x {files} files x {kib} KiB ...");
    let img = image(layers, files, kib);
    let archive = dir.path().join("bench.tar");
    fixtures::write_oci_archive(&archive, std::slice::from_ref(&img));
    let a = archive.to_str().expect("utf-8 path");
    let mb = (layers * files * kib) as f64 / 1024.0;

    let containerd = Containerd::start();
    let t_containerd = time(|| {
        ok(&containerd.ctr(&["images", "import", a]));
    });
    drop(containerd);

    let berthd = Berthd::start();
    let t_berth_ctr = time(|| {
        ok(&berthd.ctr(&["images", "import", a]));
    });
    drop(berthd);

    let berthd = Berthd::start();
    let t_berth_bctr = time(|| {
        ok(&berthd.bctr(&["images", "import", a]));
    });
    drop(berthd);

    println!(
        "image: {layers} layers, {} files, {mb:.0} MiB uncompressed",
        layers * files
    );
    println!(
        "{:<32} {:>10} {:>12}",
        "import + unpack (overlayfs)", "seconds", "MiB/s"
    );
    for (name, t) in [
        ("containerd 1.6, ctr", t_containerd),
        ("berthd, ctr (client unpack)", t_berth_ctr),
        ("berthd, bctr (daemon unpack)", t_berth_bctr),
    ] {
        println!(
            "{name:<32} {:>10.2} {:>12.1}",
            t.as_secs_f64(),
            mb / t.as_secs_f64()
        );
    }
}
