//! Loop-backed btrfs filesystems for the tests: the conformance suite hands drivers a temporary
//! directory on whatever `/tmp` is, so each driver root is mapped to a directory of one btrfs
//! made per test process. Making one needs root and `mkfs.btrfs`; without them the tests panic
//! saying so (they never pass by skipping).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// A sparse image file, formatted btrfs and mounted on a loop device (freed by autoclear when
/// the filesystem is unmounted).
pub struct LoopBtrfs {
    dir: PathBuf,
}

impl LoopBtrfs {
    /// A new filesystem of `size` bytes under `/var/tmp/berth-btrfs-<pid>-<n>/`.
    pub fn new(size: u64) -> LoopBtrfs {
        if !nix::unistd::geteuid().is_root() {
            panic!("the btrfs snapshotter's tests mount loop devices and must run as root");
        }
        let mkfs = program("mkfs.btrfs");
        sweep_stale();
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = PathBuf::from(format!("/var/tmp/berth-btrfs-{}-{n}", std::process::id()));
        let fs = LoopBtrfs { dir };
        let (image, mnt) = (fs.image(), fs.mount_point());
        std::fs::create_dir_all(&mnt).expect("create the test filesystem's mount point");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(size))
            .expect("create the btrfs image file");
        run(Command::new(mkfs).arg("-q").arg("-f").arg(&image));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&mnt));
        fs
    }

    fn image(&self) -> PathBuf {
        self.dir.join("image")
    }

    pub fn mount_point(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    fn teardown(dir: &Path) {
        let mnt = dir.join("mnt");
        // Lazy, so a mount a failed test left inside cannot keep the image alive.
        let _ = nix::mount::umount2(&mnt, nix::mount::MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Drop for LoopBtrfs {
    fn drop(&mut self) {
        LoopBtrfs::teardown(&self.dir);
    }
}

/// `name` from btrfs-progs, on `PATH` or in the sbin directories (which a non-login root's
/// `PATH` may lack); a panic saying what to install when it is missing.
pub fn program(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("{name} is missing: install btrfs-progs (apt-get install btrfs-progs)")
        })
}

/// Removes the filesystems of test processes that died before their exit handler ran.
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/var/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("berth-btrfs-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            LoopBtrfs::teardown(&entry.path());
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The process's shared filesystem, made on first use and torn down at exit.
static SHARED: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn teardown_shared() {
    if let Some(mnt) = SHARED.get() {
        if let Some(dir) = mnt.parent() {
            LoopBtrfs::teardown(dir);
        }
    }
}

/// The mount point of the process's shared 2 GiB btrfs.
pub fn shared() -> &'static Path {
    SHARED.get_or_init(|| {
        let fs = LoopBtrfs::new(2 << 30);
        let mnt = fs.mount_point();
        // Torn down by the exit handler instead, once every test is done with it.
        std::mem::forget(fs);
        // SAFETY: `teardown_shared` is an `extern "C" fn()` that never unwinds (it ignores every
        // error) and only touches a static that outlives the process's exit.
        let rc = unsafe { libc::atexit(teardown_shared) };
        assert_eq!(rc, 0, "register the test filesystem's teardown");
        mnt
    })
}

/// Where a driver given `root` (a directory of the conformance suite) keeps its files: a
/// directory of the shared btrfs named after the whole path, so the same root always maps to
/// the same place (a case builds its driver again on one root to test crash recovery).
pub fn on_btrfs(root: &Path) -> PathBuf {
    let name = root
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', "_");
    shared().join("roots").join(name)
}
