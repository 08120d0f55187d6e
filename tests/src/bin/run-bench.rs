//! Container run benchmark: `ctr run --rm IMAGE id /bin/true` on berthd and on containerd, the
//! same `ctr`, the same shim (Debian's containerd-shim-runc-v2 + runc), in alternating rounds.
//! Each run is the whole path a user waits for: snapshot prepare, container create, task create
//! (shim start, runc create), wait, start, exit, task delete (shim shutdown), container delete.
//! Prints the median and p90 per daemon and berthd's median as a share of containerd's.
//!
//! ```sh
//! cargo build --release --bins && target/release/run-bench [rounds] [runs-per-round]
//! ```
//! Run as root. Defaults: 4 rounds of 10 runs per daemon.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::{fixtures, ok, require_program, require_root, Berthd, Containerd};

fn run(ctr: &Path, socket: &Path, image: &str, id: &str) -> Duration {
    let t = Instant::now();
    let out = Command::new(ctr)
        .arg("--address")
        .arg(socket)
        .args(["run", "--rm", image, id, "/bin/true"])
        .env_remove("CONTAINERD_NAMESPACE")
        .output()
        .expect("run ctr");
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "ctr run {id} on {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v[v.len() / 2];
    let p90 = v[(v.len() * 9 / 10).min(v.len() - 1)];
    (median, p90)
}

fn main() {
    require_root("running containers");
    let ctr = require_program("ctr", "containerd");
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let runs: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);

    let dir = tempfile::tempdir().expect("tempdir");
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:runbench");
    let archive = archive.to_str().expect("utf-8 path");
    let berthd = Berthd::start_quiet();
    let containerd = Containerd::start();
    ok(&berthd.ctr(&["images", "import", archive]));
    ok(&containerd.ctr(&["images", "import", archive]));
    let sockets = [
        ("berthd", berthd.socket()),
        ("containerd", containerd.socket()),
    ];

    // One warm-up run each (page cache, shim binary).
    for (name, sock) in &sockets {
        run(&ctr, sock, &img.name, &format!("rb-warm-{name}"));
    }
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    for r in 0..rounds {
        // Alternate which daemon goes first, so drift hits both alike.
        let order: [usize; 2] = if r % 2 == 0 { [0, 1] } else { [1, 0] };
        for &d in &order {
            let (name, sock) = &sockets[d];
            for i in 0..runs {
                let id = format!("rb-{name}-{r}-{i}");
                samples[d].push(run(&ctr, sock, &img.name, &id));
            }
        }
    }
    println!(
        "ctr run --rm {} /bin/true, {rounds} rounds x {runs} runs per daemon",
        img.name
    );
    println!("{:<12} {:>12} {:>12}", "daemon", "median", "p90");
    let mut medians = Vec::new();
    for (d, (name, _)) in sockets.iter().enumerate() {
        let (median, p90) = stats(samples[d].clone());
        medians.push(median);
        println!("{name:<12} {:>9.1} ms {:>9.1} ms", ms(median), ms(p90));
    }
    println!(
        "berthd / containerd (median): {:.2}",
        medians[0].as_secs_f64() / medians[1].as_secs_f64()
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
