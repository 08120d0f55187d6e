//! Container run benchmark: `ctr run --rm IMAGE id /bin/true` on berthd (with its default
//! runtime, Berth's own shim) and on containerd 1.6 (runc's shim and runc), the same `ctr`, in
//! alternating rounds. Each run is the whole path a user waits for: snapshot prepare, container
//! create, task create (shim start, container creation), wait, start, exit, task delete (shim
//! shutdown), container delete. Prints, per daemon: the median and p90 of single runs, the
//! median wall time of 10 concurrent runs, the daemon's RSS right after all runs and after 3 s
//! idle, the RSS and PSS of one shim per running container, the CPU one run costs (the whole
//! machine's, and `ctr`'s own) — and berthd's figures as a share of containerd's.
//!
//! A third server, `ctr-alone`, shows the floor under both: one run is recorded through a proxy
//! in front of berthd, and a server that does no work answers every later run's calls with those
//! recorded answers at once (`berth_tests::replay`). Its times are `ctr`'s own plus the least any
//! gRPC server costs; no daemon driven by this `ctr` can be faster.
//!
//! ```sh
//! cargo build --release --bins && target/release/run-bench [rounds] [runs-per-round]
//! ```
//! Run as root. Defaults: 4 rounds of 10 runs per daemon. `RUN_BENCH_CALLS=1` lists the calls
//! of the recorded run on stderr.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_tests::{fixtures, ok, replay, require_program, require_root, Berthd, Containerd};

/// `n` runs at once; the wall time until the last one is done.
fn concurrent(ctr: &Path, socket: &Path, image: &str, tag: &str, n: usize) -> Duration {
    let t = Instant::now();
    let children: Vec<_> = (0..n)
        .map(|i| {
            Command::new(ctr)
                .arg("--address")
                .arg(socket)
                .args(["run", "--rm", image, &format!("{tag}-{i}"), "/bin/true"])
                .env_remove("CONTAINERD_NAMESPACE")
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("run ctr")
        })
        .collect();
    for mut c in children {
        assert!(
            c.wait().expect("wait ctr").success(),
            "concurrent ctr run failed"
        );
    }
    t.elapsed()
}

/// A `/proc/<pid>/status` or `smaps_rollup` field, in kB.
fn kb(pid: u32, file: &str, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// CPU time so far: the whole machine's busy time (`/proc/stat`: user, nice, system, irq,
/// softirq) and that of this process's reaped children — the `ctr` processes.
#[derive(Clone, Copy, Default)]
struct Cpu {
    machine: Duration,
    ctr: Duration,
}

impl Cpu {
    fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let ticks: u64 = stat
            .lines()
            .next()
            .expect("cpu line")
            .split_whitespace()
            .skip(1)
            .take(7)
            .enumerate()
            .filter(|(i, _)| !matches!(i, 3 | 4)) // idle, iowait
            .map(|(_, v)| v.parse::<u64>().expect("tick count"))
            .sum();
        // SAFETY: sysconf with a valid name has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        // SAFETY: getrusage fills the zeroed struct it is given; rusage is plain integers.
        let usage = unsafe {
            let mut u: libc::rusage = std::mem::zeroed();
            assert_eq!(
                libc::getrusage(libc::RUSAGE_CHILDREN, &mut u),
                0,
                "getrusage"
            );
            u
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Cpu {
            machine: Duration::from_millis(ticks * 1000 / hz),
            ctr: tv(usage.ru_utime) + tv(usage.ru_stime),
        }
    }

    fn since(self, start: Cpu) -> Cpu {
        Cpu {
            machine: self.machine.saturating_sub(start.machine),
            ctr: self.ctr.saturating_sub(start.ctr),
        }
    }

    fn add(&mut self, other: Cpu) {
        self.machine += other.machine;
        self.ctr += other.ctr;
    }
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
    // ctr alone: one run recorded through a proxy in front of berthd, then its answers replayed
    // at once by a server that does no work (see berth_tests::replay).
    let recording = replay::record(&berthd.socket(), &dir.path().join("proxy.sock"), |s| {
        replay::ctr_run_true(&ctr, s, &img.name, "rb-recorded");
    });
    if std::env::var_os("RUN_BENCH_CALLS").is_some() {
        for call in &recording.calls {
            let answer = match &call.answer {
                Ok(bytes) => format!("{} bytes", bytes.len()),
                Err((code, message)) => format!("{code:?}: {message}"),
            };
            eprintln!("{} ({} bytes) -> {answer}", call.method, call.request.len());
        }
    }
    let replay_socket = dir.path().join("replay.sock");
    let _replayer = replay::Replayer::start(
        &replay_socket,
        &recording,
        &dir.path().join("replay-rootfs"),
    );
    let sockets = [
        ("berthd", berthd.socket()),
        ("containerd", containerd.socket()),
        ("ctr-alone", replay_socket),
    ];

    // One warm-up run each (page cache, shim binary).
    for (name, sock) in &sockets {
        replay::ctr_run_true(&ctr, sock, &img.name, &format!("rb-warm-{name}"));
    }
    let mut samples: [Vec<Duration>; 3] = Default::default();
    let mut cpu = [Cpu::default(); 3];
    for r in 0..rounds {
        // Rotate which server goes first, so drift hits all alike.
        let order = rotation(r);
        for &d in &order {
            let (name, sock) = &sockets[d];
            let start = Cpu::now();
            for i in 0..runs {
                let id = format!("rb-{name}-{r}-{i}");
                samples[d].push(replay::ctr_run_true(&ctr, sock, &img.name, &id));
            }
            cpu[d].add(Cpu::now().since(start));
        }
    }
    // 10 at once, alternating.
    let mut burst: [Vec<Duration>; 3] = Default::default();
    for r in 0..rounds {
        let order = rotation(r);
        for &d in &order {
            let (name, sock) = &sockets[d];
            burst[d].push(concurrent(
                &ctr,
                sock,
                &img.name,
                &format!("rc-{name}-{r}"),
                10,
            ));
        }
    }
    // Memory: each daemon after all those runs; one shim per running container.
    let daemon_pids = [
        berthd.child.as_ref().map(std::process::Child::id),
        containerd.pid(),
    ];
    let busy_rss: Vec<u64> = daemon_pids
        .iter()
        .map(|p| p.map_or(0, |p| kb(p, "status", "VmRSS:")))
        .collect();
    // Then idle for a while, as a daemon mostly is (berthd trims its memory after 2 s of quiet).
    std::thread::sleep(Duration::from_secs(3));
    let mut daemon_rss = [0u64; 2];
    let mut shim_mem = [(0u64, 0u64); 2];
    for (d, (name, sock)) in sockets[..2].iter().enumerate() {
        daemon_rss[d] = daemon_pids[d].map_or(0, |p| kb(p, "status", "VmRSS:"));
        let ids: Vec<String> = (0..3).map(|i| format!("rm-{name}-{i}")).collect();
        for id in &ids {
            let out = Command::new(&ctr)
                .arg("--address")
                .arg(sock)
                .args(["run", "-d", &img.name, id, "sleep", "1000"])
                .env_remove("CONTAINERD_NAMESPACE")
                .output()
                .expect("ctr run -d");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // Let the shims settle into their idle state.
        std::thread::sleep(Duration::from_secs(2));
        let mut rss = Vec::new();
        let mut pss = Vec::new();
        for id in &ids {
            let pid = *berth_tests::shims_of(sock, id).first().expect("shim pid");
            rss.push(kb(pid, "status", "VmRSS:"));
            pss.push(kb(pid, "smaps_rollup", "Pss:"));
        }
        shim_mem[d] = (
            rss.iter().sum::<u64>() / rss.len() as u64,
            pss.iter().sum::<u64>() / pss.len() as u64,
        );
        for id in &ids {
            let ctr_do = |args: &[&str]| {
                Command::new(&ctr)
                    .arg("--address")
                    .arg(sock)
                    .args(args)
                    .env_remove("CONTAINERD_NAMESPACE")
                    .output()
                    .expect("ctr")
            };
            ctr_do(&["tasks", "kill", "-s", "SIGKILL", id]);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ctr_do(&["tasks", "rm", id]).status.success() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            ctr_do(&["containers", "rm", id]);
        }
    }

    println!(
        "ctr run --rm {} /bin/true, {rounds} rounds x {runs} runs per server (berthd: Berth's shim; \
         containerd: runc's; ctr-alone: berthd's recorded answers replayed by a server doing nothing)",
        img.name
    );
    println!(
        "{:<12} {:>10} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "server", "median", "p90", "10 at once", "RSS busy", "RSS idle", "shim RSS", "shim PSS"
    );
    let mut medians = Vec::new();
    let mut bursts = Vec::new();
    for (d, (name, _)) in sockets.iter().enumerate() {
        let (median, p90) = stats(samples[d].clone());
        let (burst_median, _) = stats(burst[d].clone());
        medians.push(median);
        bursts.push(burst_median);
        let memory = if d < 2 {
            format!(
                "{:>7.1} MB {:>7.1} MB {:>7.2} MB {:>7.2} MB",
                busy_rss[d] as f64 / 1024.0,
                daemon_rss[d] as f64 / 1024.0,
                shim_mem[d].0 as f64 / 1024.0,
                shim_mem[d].1 as f64 / 1024.0,
            )
        } else {
            String::new()
        };
        println!(
            "{name:<12} {:>7.1} ms {:>7.1} ms {:>9.1} ms {memory}",
            ms(median),
            ms(p90),
            ms(burst_median),
        );
    }
    // Where the CPU of one run goes: 10 at once on a small machine is bound by it.
    println!(
        "{:<12} {:>16} {:>10} {:>36}",
        "CPU per run", "machine busy", "ctr", "the rest (daemon, shim, container)"
    );
    let per_run = |t: Duration| ms(t) / (rounds * runs) as f64;
    for (d, (name, _)) in sockets.iter().enumerate() {
        println!(
            "{name:<12} {:>13.1} ms {:>7.1} ms {:>33.1} ms",
            per_run(cpu[d].machine),
            per_run(cpu[d].ctr),
            per_run(cpu[d].machine.saturating_sub(cpu[d].ctr)),
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "berthd / containerd: single run {:.2}, 10 at once {:.2}, idle daemon RSS {:.2}, shim RSS {:.2}",
        ratio(medians[0], medians[1]),
        ratio(bursts[0], bursts[1]),
        daemon_rss[0] as f64 / daemon_rss[1].max(1) as f64,
        shim_mem[0].0 as f64 / shim_mem[1].0.max(1) as f64,
    );
    println!(
        "ctr alone / containerd: single run {:.2}, 10 at once {:.2} (the floor under any daemon's ratio)",
        ratio(medians[2], medians[1]),
        ratio(bursts[2], bursts[1]),
    );
}

/// The order the three servers take in round `r`: each goes first, second and third in turn.
fn rotation(r: usize) -> [usize; 3] {
    [r % 3, (r + 1) % 3, (r + 2) % 3]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
