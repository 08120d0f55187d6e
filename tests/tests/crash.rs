//! Issue 15, defect 4 and the start of the crash driver: berthd SIGKILLed at random moments of
//! image imports (bctr's server-side parallel unpack and ctr's client-side one), image deletion
//! and collection, restarted each time. Afterwards, with every image deleted and one collection
//! run, nothing may be left: no snapshot directory or staging directory, no blob, no ingest; and
//! the same import still succeeds. The seed is printed; `BERTH_CRASH_SEED=<n>` replays a run.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{bin, fixtures, ok, require_program, require_root, Berthd};

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn seed() -> u64 {
    match std::env::var("BERTH_CRASH_SEED") {
        Ok(s) => s.parse().expect("BERTH_CRASH_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        }
    }
}

fn client(prog: &Path, berthd: &Berthd, args: &[&str]) -> Child {
    Command::new(prog)
        .arg("--address")
        .arg(berthd.socket())
        .args(args)
        .env_remove("CONTAINERD_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn sigkill(berthd: &mut Berthd) {
    let mut child = berthd.child.take().expect("berthd runs");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Entries of `dir` (none if it does not exist).
fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sigkill_during_import_delete_and_gc_leaks_nothing() {
    require_root("overlay snapshots");
    let ctr = require_program("ctr", "containerd");
    let bctr = bin("bctr");
    let seed = seed();
    println!("crash driver seed: {seed} (BERTH_CRASH_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:crash");
    let archive = archive.to_str().unwrap().to_owned();
    let mut berthd = Berthd::start();

    let started = Instant::now();
    let rounds = 40;
    for round in 0..rounds {
        // One of: an import through berthd's server-side unpack, one through ctr's client-side
        // unpack, or a delete (which wakes the collector); killed after 0–60 ms.
        let what = rng.below(3);
        let mut job = match what {
            0 => client(&bctr, &berthd, &["images", "import", &archive]),
            1 => client(&ctr, &berthd, &["images", "import", &archive]),
            _ => client(&ctr, &berthd, &["images", "rm", "--sync", &img.name]),
        };
        std::thread::sleep(Duration::from_millis(rng.below(60)));
        sigkill(&mut berthd);
        let _ = job.kill();
        let _ = job.wait();
        berthd.restart();
        assert!(
            berthd.bctr(&["version"]).status.success(),
            "round {round} (seed {seed}): berthd did not come back:\n{}",
            berthd.log()
        );
    }
    println!("{rounds} kills in {:?}", started.elapsed());

    // Everything deleted and collected: nothing of it may remain on disk. Imports that were cut
    // short leave their leases (as with containerd, a lease keeps an import's content for 24 h);
    // an operator cleaning up deletes those too.
    let _ = berthd.ctr(&["images", "rm", "--sync", &img.name]);
    let leases = ok(&berthd.ctr(&["leases", "ls", "-q"]));
    for lease in leases.lines().filter(|l| !l.is_empty()) {
        ok(&berthd.ctr(&["leases", "rm", lease]));
    }
    ok(&berthd.bctr(&["gc"]));
    let state = format!(
        "snapshots:\n{}\nleases:\n{}",
        ok(&berthd.ctr(&["snapshots", "ls"])),
        ok(&berthd.ctr(&["leases", "ls"]))
    );
    let root = berthd.root();
    let overlay = root.join("io.containerd.snapshotter.v1.overlayfs");
    let content = root.join("io.containerd.content.v1.content");
    let leftovers = [
        ("snapshot", entries(&overlay.join("snapshots"))),
        ("staging", entries(&overlay.join("staging"))),
        (
            "native snapshot",
            entries(&root.join("io.containerd.snapshotter.v1.native/snapshots")),
        ),
        ("blob", entries(&content.join("blobs/sha256"))),
        ("ingest", entries(&content.join("ingest"))),
    ];
    for (what, left) in &leftovers {
        assert!(
            left.is_empty(),
            "seed {seed}: {what} directories left after deleting everything and collecting: {left:?}\n{state}"
        );
    }
    let snapshots = ok(&berthd.ctr(&["snapshots", "ls"]));
    assert_eq!(snapshots.lines().count(), 1, "seed {seed}: {snapshots}");

    // And the same import works, both ways.
    ok(&berthd.bctr(&["images", "import", &archive]));
    ok(&berthd.ctr(&["images", "check"]));
    ok(&berthd.ctr(&["images", "rm", "--sync", &img.name]));
    ok(&berthd.ctr(&["images", "import", &archive]));
}
