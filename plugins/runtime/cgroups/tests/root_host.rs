//! The manager on this host's real cgroup filesystems (v1, v2 or hybrid, whatever is mounted).
//! These tests need root and say so, rather than passing without checking anything. Each uses
//! a cgroup of its own under `/berth-test`, removed at the end even when an assertion fails.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_cgroups::{Cgroup, FreezerState, Hierarchy};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::ForkResult;
use prost::Message;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates real cgroups and needs root: run `cargo test -p berth-cgroups` as root"
    );
}

/// A cgroup that is killed and removed when dropped, with the children spawned into it.
struct Scratch {
    cg: Option<Cgroup>,
    children: Vec<Child>,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        require_root();
        let h = Hierarchy::detect().expect("detect the host's cgroup layout");
        let path = format!("/berth-test/{}-{name}", std::process::id());
        let cg = Cgroup::create(&h, &path).expect("create the test cgroup");
        Scratch {
            cg: Some(cg),
            children: Vec::new(),
        }
    }

    fn cg(&self) -> &Cgroup {
        self.cg.as_ref().expect("present until drop")
    }

    /// Starts `sh -c script` stopped at a `read`, joins it to the cgroup, then lets it go, so
    /// that nothing it does happens outside the cgroup.
    fn spawn(&mut self, script: &str) -> u32 {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read _go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sh");
        let pid = child.id();
        self.cg()
            .add_process(pid as i32)
            .expect("add the child to the cgroup");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(b"go\n")
            .expect("release the child");
        self.children.push(child);
        pid
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(cg) = self.cg.take() {
            let _ = cg.thaw();
            let _ = cg.kill_all(Signal::SIGKILL);
            for c in &mut self.children {
                let _ = c.kill();
                let _ = c.wait();
            }
            let parents: Vec<_> = cg
                .dirs()
                .iter()
                .filter_map(|d| d.parent().map(|p| p.to_path_buf()))
                .collect();
            if let Err(e) = cg.delete() {
                eprintln!("cleanup: {e}");
            }
            // `/berth-test` itself; busy while another test still has its cgroup there.
            for p in parents {
                let _ = std::fs::remove_dir(p);
            }
        }
    }
}

/// The memory limit file's value, whichever version this host has.
fn memory_limit(cg: &Cgroup) -> String {
    let dir = cg.dir("memory").expect("memory controller");
    let file = if cg.is_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    std::fs::read_to_string(dir.join(file))
        .expect("read memory limit")
        .trim()
        .to_string()
}

fn resources(json: &str) -> oci_spec::runtime::LinuxResources {
    serde_json::from_str(json).expect("valid LinuxResources JSON")
}

#[test]
fn create_join_limit_freeze_stats_delete() {
    let mut s = Scratch::new("lifecycle");
    let dirs: Vec<_> = s.cg().dirs().iter().map(|d| d.to_path_buf()).collect();
    assert!(
        dirs.iter().all(|d| d.is_dir()),
        "created in every hierarchy"
    );

    let pid = s.spawn("exec sleep 30");
    assert!(s.cg().procs().unwrap().contains(&(pid as i32)));

    s.cg()
        .apply(&resources(
            r#"{"memory": {"limit": 67108864}, "pids": {"limit": 20}, "cpu": {"shares": 512}}"#,
        ))
        .expect("apply limits");
    assert_eq!(memory_limit(s.cg()), "67108864");
    let pids_max = std::fs::read_to_string(s.cg().dir("pids").unwrap().join("pids.max")).unwrap();
    assert_eq!(pids_max.trim(), "20");

    s.cg().freeze().expect("freeze");
    assert_eq!(s.cg().freezer_state().unwrap(), FreezerState::Frozen);
    s.cg().thaw().expect("thaw");
    assert_eq!(s.cg().freezer_state().unwrap(), FreezerState::Thawed);

    let stats = s.cg().stats().expect("stats");
    let pids = stats.pids.expect("pids stats");
    assert!(pids.current >= 1, "{pids:?}");
    assert_eq!(pids.limit, Some(20));
    let mem = stats.memory.expect("memory stats");
    assert_eq!(mem.usage.limit, 67_108_864);
    // The child was released just now: its exec's pages are charged once it has run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while s.cg().stats().unwrap().memory.unwrap().usage.usage == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no memory charged to the cgroup"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let (url, bytes) = s.cg().metrics().expect("metrics");
    if s.cg().is_v2() {
        let m = berth_cgroups::proto::v2::Metrics::decode(bytes.as_slice()).unwrap();
        assert_eq!(url, "io.containerd.cgroups.v2.Metrics");
        assert_eq!(m.memory.unwrap().usage_limit, 67_108_864);
    } else {
        let m = berth_cgroups::proto::v1::Metrics::decode(bytes.as_slice()).unwrap();
        assert_eq!(url, "io.containerd.cgroups.v1.Metrics");
        assert_eq!(m.memory.unwrap().usage.unwrap().limit, 67_108_864);
        assert_eq!(m.pids.unwrap().limit, 20);
    }

    s.cg().kill_all(Signal::SIGKILL).expect("kill all");
    let status = s.children[0].wait().unwrap();
    assert!(!status.success(), "killed");
    let cg = s.cg.take().unwrap();
    let start = Instant::now();
    cg.delete()
        .expect("delete right after the last process exited");
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(dirs.iter().all(|d| !d.exists()), "removed everywhere");
}

#[test]
fn oom_kill_is_reported() {
    let mut s = Scratch::new("oom");
    // Memory and memory+swap equal: the child cannot escape into swap.
    let swap_file = if s.cg().is_v2() {
        "memory.swap.max"
    } else {
        "memory.memsw.limit_in_bytes"
    };
    let limits = if s.cg().dir("memory").unwrap().join(swap_file).exists() {
        r#"{"memory": {"limit": 16777216, "swap": 16777216}}"#
    } else {
        r#"{"memory": {"limit": 16777216}}"#
    };
    s.cg()
        .apply(&resources(limits))
        .expect("apply memory limit");
    let mut watcher = s.cg().oom_watcher().expect("OOM watcher");
    assert_eq!(watcher.oom_kills().unwrap(), 0);

    // The shell doubles a string until the kernel kills it.
    s.spawn("a=x; while :; do a=$a$a; done");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut kills = 0;
    while kills == 0 && Instant::now() < deadline {
        let mut fds = [PollFd::new(watcher.as_fd(), PollFlags::POLLIN)];
        poll(&mut fds, PollTimeout::from(500u16)).expect("poll");
        kills += watcher.oom_kills().expect("read OOM count");
    }
    assert!(kills >= 1, "no OOM event within 10s");
    let status = s.children[0].wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let mem = s.cg().stats().unwrap().memory.unwrap();
    let counted = match (&mem.events, &mem.oom_control) {
        (Some(e), _) => e.oom_kill,
        (None, Some(o)) => o.oom_kill,
        _ => 0,
    };
    assert!(counted >= 1, "{mem:?}");
}

/// A scratch cgroup on this host's cgroup2 mount (the root on v2, the unified mount on a
/// hybrid host), under `/berth-test-v2`. Panics on a pure v1 host.
fn on_cgroup2(name: &str) -> Scratch {
    require_root();
    let root = match Hierarchy::detect().expect("detect") {
        Hierarchy::V2 { root } => root,
        Hierarchy::V1 {
            unified: Some(u), ..
        } => u,
        Hierarchy::V1 { unified: None, .. } => {
            panic!("this test needs a cgroup2 mount (v2 or hybrid host); this host is pure v1")
        }
    };
    let h = Hierarchy::v2_at(&root);
    let path = format!("/berth-test-v2/{}-{name}", std::process::id());
    let cg = Cgroup::create(&h, &path).expect("create on cgroup2");
    Scratch {
        cg: Some(cg),
        children: Vec::new(),
    }
}

/// The v2 code on this host's real cgroup2 mount — the unified one of a hybrid host (where it
/// has few controllers, but membership, freezing and `cgroup.kill` work), or the root on v2.
#[test]
fn v2_membership_freeze_and_kill_on_the_cgroup2_mount() {
    let mut s = on_cgroup2("lifecycle");
    assert!(s.cg().is_v2());
    let pid = s.spawn("exec sleep 30");
    assert_eq!(s.cg().procs().unwrap(), vec![pid as i32]);

    s.cg().freeze().expect("freeze via cgroup.freeze");
    assert_eq!(s.cg().freezer_state().unwrap(), FreezerState::Frozen);
    s.cg().thaw().expect("thaw");
    assert_eq!(s.cg().freezer_state().unwrap(), FreezerState::Thawed);

    let stats = s.cg().stats().expect("stats");
    assert!(stats.cpu.is_some(), "cpu.stat exists in every v2 cgroup");

    s.cg().kill_all(Signal::SIGKILL).expect("kill all");
    let status = s.children[0].wait().unwrap();
    assert!(!status.success());
    let dir = s.cg().dir("").unwrap().to_path_buf();
    s.cg.take().unwrap().delete().expect("delete");
    assert!(!dir.exists());
    let _ = std::fs::remove_dir(dir.parent().unwrap());
}

/// What opening `/dev/null` and `/dev/zero` read-write gives a process in `cg`: 0 or the errno.
/// The child is forked, joined to the cgroup while it waits on a pipe, and only then opens.
fn opens_in(cg: &Cgroup) -> [i32; 2] {
    let (go_r, go_w) = nix::unistd::pipe().expect("pipe");
    let (res_r, res_w) = nix::unistd::pipe().expect("pipe");
    // SAFETY: the test binary has other threads, so the child sticks to async-signal-safe calls
    // (read, open, write, _exit) on memory that exists before the fork.
    match unsafe { nix::unistd::fork() }.expect("fork") {
        ForkResult::Child => {
            let mut go = [0u8; 1];
            let mut results = [0i32; 2];
            // SAFETY: `go` is a writable one-byte buffer; the descriptor is this child's copy.
            unsafe { libc::read(go_r.as_raw_fd(), go.as_mut_ptr().cast(), 1) };
            for (i, dev) in [c"/dev/null", c"/dev/zero"].iter().enumerate() {
                // SAFETY: `dev` is a NUL-terminated path.
                let fd = unsafe { libc::open(dev.as_ptr(), libc::O_RDWR) };
                results[i] = if fd < 0 { Errno::last_raw() } else { 0 };
            }
            // SAFETY: `results` is 8 readable bytes; `_exit` skips the parent's atexit handlers
            // and destructors, which must not run twice.
            unsafe {
                libc::write(res_w.as_raw_fd(), results.as_ptr().cast(), 8);
                libc::_exit(0)
            }
        }
        ForkResult::Parent { child } => {
            drop(go_r);
            drop(res_w);
            let joined = cg.add_process(child.as_raw());
            // Released even if joining failed, so the child never hangs.
            nix::unistd::write(&go_w, b"g").expect("release the child");
            drop(go_w);
            let mut bytes = [0u8; 8];
            let mut res = std::fs::File::from(res_r);
            let read = std::io::Read::read_exact(&mut res, &mut bytes);
            waitpid(child, None).expect("wait for the child");
            joined.expect("add the child to the cgroup");
            read.expect("the child's results");
            let errno = |b: &[u8]| i32::from_ne_bytes(b.try_into().expect("4 bytes"));
            [errno(&bytes[..4]), errno(&bytes[4..])]
        }
    }
}

/// Device rules on cgroup v2: the eBPF program is attached, enforced, and replaced on update.
/// On a hybrid host this is the unified mount, where a device program is enforced as well.
#[test]
fn v2_device_rules_are_enforced_by_an_ebpf_program() {
    let s = on_cgroup2("devices");
    let eperm = libc::EPERM;
    // Outside the rules both open; otherwise the test would prove nothing.
    for dev in ["/dev/null", "/dev/zero"] {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dev)
            .unwrap_or_else(|e| panic!("open {dev} outside the test cgroup: {e}"));
    }

    let rules = |allowed_minor: u32| {
        resources(&format!(
            r#"{{"devices": [
                {{"allow": false, "access": "rwm"}},
                {{"allow": true, "type": "c", "major": 1, "minor": {allowed_minor}, "access": "rwm"}}
            ]}}"#
        ))
    };
    s.cg()
        .apply(&rules(3))
        .expect("apply: allow only /dev/null (1:3)");
    assert_eq!(opens_in(s.cg()), [0, eperm], "[/dev/null, /dev/zero]");

    // An update replaces the program: were the old one still attached, both would be denied.
    s.cg()
        .apply(&rules(5))
        .expect("update: allow only /dev/zero (1:5)");
    assert_eq!(
        opens_in(s.cg()),
        [eperm, 0],
        "[/dev/null, /dev/zero] after update"
    );

    s.cg()
        .apply(&resources(
            r#"{"devices": [{"allow": true, "access": "rwm"}]}"#,
        ))
        .expect("update: allow everything");
    assert_eq!(
        opens_in(s.cg()),
        [0, 0],
        "[/dev/null, /dev/zero] with allow-all"
    );

    // A long list passes the kernel's verifier (which walks every path of the program): 2,000
    // rules for devices that do not exist, and read-only /dev/zero after them.
    let mut long: Vec<serde_json::Value> =
        vec![serde_json::json!({"allow": false, "access": "rwm"})];
    long.extend((0..2000).map(|i| {
        serde_json::json!({"allow": true, "type": "c", "major": 4000, "minor": i, "access": "r"})
    }));
    long.push(
        serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}),
    );
    long.push(
        serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}),
    );
    let long = serde_json::from_value(serde_json::json!({ "devices": long })).unwrap();
    s.cg().apply(&long).expect("apply 2,000 device rules");
    assert_eq!(
        opens_in(s.cg()),
        [0, eperm],
        "/dev/zero is read-only, opened read-write"
    );
}
