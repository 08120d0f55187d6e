//! Issue 12, Berth's own runtime: what `containerd-shim-berth-v1` does to a container, seen from
//! inside it and from the host — limits (pids, CPU), seccomp, capabilities, masked and read-only
//! paths, user namespaces, runc's kind of message for a missing executable — and the shim
//! driven by a real containerd (`ctr run --runtime io.containerd.berth.v1`).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use berth_tests::{
    bin, fails, fixtures, in_a_terminal, ok, require_program, require_root, Berthd, Containerd,
};

/// A daemon (berthd or containerd) with the fixture image imported.
struct Fixture<D> {
    daemon: D,
    image: String,
    _dir: tempfile::TempDir,
}

trait Ctr {
    fn ctr(&self, args: &[&str]) -> Output;
}

impl Ctr for Berthd {
    fn ctr(&self, args: &[&str]) -> Output {
        Berthd::ctr(self, args)
    }
}

impl Ctr for Containerd {
    fn ctr(&self, args: &[&str]) -> Output {
        Containerd::ctr(self, args)
    }
}

fn requirements() {
    require_root("running containers");
    require_program("ctr", "containerd");
    assert!(
        bin("containerd-shim-berth-v1").exists(),
        "containerd-shim-berth-v1 is not built: cargo build --bins"
    );
}

impl<D: Ctr> Fixture<D> {
    fn with(daemon: D, tag: &str) -> Fixture<D> {
        let dir = tempfile::tempdir().unwrap();
        let (img, archive) =
            fixtures::busybox_oci_archive(dir.path(), &format!("docker.io/library/busybox:{tag}"));
        ok(&daemon.ctr(&["images", "import", archive.to_str().unwrap()]));
        Fixture {
            daemon,
            image: img.name,
            _dir: dir,
        }
    }

    /// `ctr run --rm FLAGS IMAGE id ARGS…`
    fn run(&self, flags: &[&str], id: &str, args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(flags);
        all.push(&self.image);
        all.push(id);
        all.extend_from_slice(args);
        self.daemon.ctr(&all)
    }
}

fn berthd(tag: &str) -> Fixture<Berthd> {
    requirements();
    Fixture::with(Berthd::start(), tag)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn isolation_capabilities_masked_and_read_only_paths() {
    let f = berthd("iso");
    // ctr's masked paths that this host has (a masked path the host lacks proves nothing).
    let masked: Vec<(&str, bool)> = [
        "/proc/kcore",
        "/proc/keys",
        "/proc/timer_list",
        "/proc/sched_debug",
        "/proc/acpi",
        "/proc/scsi",
        "/sys/firmware",
    ]
    .into_iter()
    .filter_map(|p| std::fs::metadata(p).ok().map(|m| (p, m.is_dir())))
    .collect();
    assert!(
        masked.len() >= 2,
        "too few maskable paths on this host: {masked:?}"
    );
    let probes: String = masked
        .iter()
        .map(|(p, dir)| {
            if *dir {
                format!("echo {p}=$(ls -A {p} | wc -l); ")
            } else {
                format!("echo {p}=$(cat {p} | wc -c); ")
            }
        })
        .collect();
    let script = format!(
        "grep -E '^Cap(Eff|Bnd|Prm|Inh|Amb)' /proc/self/status; {probes}\
         echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo sysrq-writable || echo sysrq-ro; \
         mknod /kmsg c 1 11 && (echo probe > /kmsg) 2>/dev/null && echo kmsg-open || echo kmsg-denied; \
         echo x > /dev/null && echo null-open; \
         echo pid=$$"
    );
    let out = ok(&f.run(
        &["--cap-drop", "CAP_NET_RAW", "--cap-drop", "CAP_CHOWN"],
        "rt-iso",
        &["sh", "-c", &script],
    ));
    let field = |name: &str| -> u64 {
        let line = out
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing: {out}"));
        u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
    };
    let eff = field("CapEff:");
    // containerd's default set (0xa80425fb) without CAP_CHOWN (0) and CAP_NET_RAW (13).
    assert_eq!(eff, 0xa80425fb & !(1 << 0) & !(1 << 13), "{out}");
    assert_eq!(field("CapBnd:"), eff, "{out}");
    assert_eq!(field("CapPrm:"), eff, "{out}");
    assert_eq!(field("CapInh:"), 0, "{out}");
    assert_eq!(field("CapAmb:"), 0, "{out}");
    // Masked: files read as /dev/null, directories are empty.
    for (p, _) in &masked {
        assert!(out.contains(&format!("{p}=0\n")), "{p} not masked:\n{out}");
    }
    // Read-only: /proc/sys.
    assert!(out.contains("sysrq-ro"), "{out}");
    // Device rules (ctr's: deny all, allow the default nodes): a node the container can make
    // (CAP_MKNOD) cannot be opened — v1's devices controller, v2's eBPF program — while
    // /dev/null can.
    assert!(out.contains("kmsg-denied"), "{out}");
    assert!(out.contains("null-open"), "{out}");
    assert!(out.contains("pid=1"), "{out}");
}

#[test]
fn seccomp_profile_denies_mkdir_with_eperm() {
    let f = berthd("sec");
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("deny-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
           "syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    )
    .unwrap();
    let out = ok(&f.run(
        &["--seccomp", "--seccomp-profile", profile.to_str().unwrap()],
        "rt-sec",
        &[
            "sh",
            "-c",
            "mkdir /made 2>&1; echo rc=$?; touch /file && echo touched",
        ],
    ));
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("rc=1"), "{out}");
    assert!(out.contains("touched"), "{out}");
    // containerd's default profile: an ordinary program still runs.
    assert_eq!(
        ok(&f.run(
            &["--seccomp"],
            "rt-sec2",
            &["sh", "-c", "mkdir /d && echo fine"]
        ))
        .trim(),
        "fine"
    );
}

#[test]
fn missing_executable_is_named_as_runc_names_it() {
    let f = berthd("exe");
    let err = fails(&f.run(&[], "rt-exe", &["/no/such/program"]));
    assert!(
        err.contains(
            r#"exec: "/no/such/program": stat /no/such/program: no such file or directory"#
        ),
        "{err}"
    );
    let err = fails(&f.run(&[], "rt-exe2", &["nosuchcommand"]));
    assert!(
        err.contains(r#"exec: "nosuchcommand": executable file not found in $PATH"#),
        "{err}"
    );
}

#[test]
fn user_namespace_maps_ids() {
    let f = berthd("userns");
    // The container's root is an unprivileged uid on the host: as with runc, the bundle's path
    // must be traversable by it (the test's private directory is 0700).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(f.daemon.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let out = ok(&f.run(
        &["--uidmap", "0:200000:65536", "--gidmap", "0:200000:65536"],
        "rt-userns",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; ls /dev/null",
        ],
    ));
    let maps: Vec<Vec<&str>> = out
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(maps, vec![vec!["0", "200000", "65536"]; 2], "{out}");
    assert!(out.contains("\n0\n"), "{out}");
    assert!(out.contains("/dev/null"), "{out}");
}

/// The container's cgroup directory for `controller` on this host (v1 or v2), as ctr names it.
fn cgroup_dir(controller_v1: &str, id: &str) -> std::path::PathBuf {
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if v2 {
        Path::new("/sys/fs/cgroup/default").join(id)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller_v1)
            .join("default")
            .join(id)
    }
}

#[test]
fn pids_limit_contains_a_fork_bomb() {
    let f = berthd("pids");
    let bctr = |args: &[&str]| {
        let mut c = Command::new(bin("bctr"));
        c.arg("--address").arg(f.daemon.socket()).args(args);
        c.output().unwrap()
    };
    ok(&bctr(&[
        "run",
        "-d",
        "--pids-limit",
        "12",
        &f.image,
        "rt-pids",
        "sh",
        "-c",
        // The bomb runs in a child shell (a shell that cannot fork gives up); pid 1 stays.
        "sh -c 'i=0; while [ $i -lt 200 ]; do sleep 1000 & i=$((i+1)); done' 2>/dev/null; exec sleep 1000",
    ]));
    let dir = cgroup_dir("pids", "rt-pids");
    let procs = dir.join("cgroup.procs");
    let count = || {
        std::fs::read_to_string(&procs)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    // pids.events counts the forks the limit refused.
    wait_until("the bomb to hit the limit", || {
        std::fs::read_to_string(dir.join("pids.events"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .is_some_and(|refused| refused > 0)
    });
    let n = count();
    assert!((10..=12).contains(&n), "{n} processes under pids.max 12");
    // The bomb's own shell gives up and exits meanwhile: ps may see one fewer.
    let ps = ok(&f.daemon.ctr(&["tasks", "ps", "rt-pids"]));
    let listed = ps.lines().count() - 1;
    assert!(
        (10..=n).contains(&listed),
        "{listed} listed, {n} in the cgroup: {ps}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("pids.max"))
            .unwrap()
            .trim(),
        "12"
    );
    ok(&f
        .daemon
        .ctr(&["tasks", "kill", "-a", "-s", "SIGKILL", "rt-pids"]));
    wait_until("the task to stop", || {
        stdout(&f.daemon.ctr(&["tasks", "ls"])).contains("STOPPED")
    });
    ok(&f.daemon.ctr(&["tasks", "rm", "rt-pids"]));
    ok(&f.daemon.ctr(&["containers", "rm", "rt-pids"]));
    assert!(!procs.exists(), "the cgroup outlived its task");
}

/// CPU time used by the container's cgroup, in microseconds.
fn cpu_usage_us(id: &str) -> u64 {
    let v2 = cgroup_dir("cpu", id).join("cpu.stat");
    if let Ok(s) = std::fs::read_to_string(&v2) {
        if let Some(l) = s.lines().find(|l| l.starts_with("usage_usec")) {
            return l.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    let ns: u64 = std::fs::read_to_string(cgroup_dir("cpuacct", id).join("cpuacct.usage"))
        .expect("cpuacct.usage")
        .trim()
        .parse()
        .unwrap();
    ns / 1000
}

#[test]
fn cpus_half_caps_cpu_time() {
    let f = berthd("cpus");
    ok(&f.daemon.ctr(&[
        "run",
        "-d",
        "--cpus",
        "0.5",
        &f.image,
        "rt-cpus",
        "sh",
        "-c",
        "while :; do :; done",
    ]));
    std::thread::sleep(Duration::from_millis(300));
    let (t0, u0) = (Instant::now(), cpu_usage_us("rt-cpus"));
    std::thread::sleep(Duration::from_secs(2));
    let (t1, u1) = (Instant::now(), cpu_usage_us("rt-cpus"));
    let share = (u1 - u0) as f64 / (t1 - t0).as_micros() as f64;
    ok(&f.daemon.ctr(&["tasks", "kill", "-s", "SIGKILL", "rt-cpus"]));
    wait_until("the task to stop", || {
        stdout(&f.daemon.ctr(&["tasks", "ls"])).contains("STOPPED")
    });
    ok(&f.daemon.ctr(&["tasks", "rm", "rt-cpus"]));
    ok(&f.daemon.ctr(&["containers", "rm", "rt-cpus"]));
    // A busy loop alone would take a whole CPU; the quota allows half (loosely: the machine is
    // shared with other tests).
    assert!(share < 0.65, "CPU share {share:.2} above the 0.5 quota");
    assert!(share > 0.1, "CPU share {share:.2}: the loop hardly ran");
}

#[test]
fn real_containerd_runs_berths_shim() {
    requirements();
    let f = Fixture::with(Containerd::start(), "cd");
    let rt = ["--runtime", "io.containerd.berth.v1"];
    assert_eq!(ok(&f.run(&rt, "rt-cd-true", &["/bin/true"])), "");
    let out = f.run(
        &rt,
        "rt-cd-exit",
        &["sh", "-c", "echo out; echo err >&2; exit 7"],
    );
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(stdout(&out), "out\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    // stdin
    let out = berth_tests::output_with_stdin(
        Command::new(require_program("ctr", "containerd"))
            .arg("--address")
            .arg(f.daemon.socket())
            .args(["run", "--rm"])
            .args(rt)
            .args([&f.image, "rt-cd-stdin", "sh", "-c", "tr a-z A-Z"]),
        b"hello shim\n",
    );
    assert_eq!(stdout(&out), "HELLO SHIM\n", "{out:?}");
    // a pty (`script` gives ctr a terminal of its own)
    let out = in_a_terminal(&format!(
        "{} --address {} run --rm -t --runtime io.containerd.berth.v1 {} rt-cd-tty sh -c 'test -t 0 && test -t 1 && echo on-a-tty; exit 5'",
        require_program("ctr", "containerd").display(),
        f.daemon.socket().display(),
        f.image
    ));
    assert!(stdout(&out).contains("on-a-tty"), "{out:?}");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
}

#[test]
fn exec_with_a_pty_gets_the_clients_size() {
    // ctr sends its terminal's size (ResizePty) once the process has started; the process
    // looks a little later, as an interactive program would.
    let f = berthd("execpty");
    ok(&f
        .daemon
        .ctr(&["run", "-d", &f.image, "rt-execpty", "sleep", "1000"]));
    let ctr = require_program("ctr", "containerd");
    let out = in_a_terminal(&format!(
        "stty cols 101 rows 37; {} --address {} tasks exec -t --exec-id e1 rt-execpty sh -c 'sleep 0.5; test -t 0 && stty size; exit 3'",
        ctr.display(),
        f.daemon.socket().display()
    ));
    assert!(stdout(&out).contains("37 101"), "{out:?}");
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    ok(&f
        .daemon
        .ctr(&["tasks", "kill", "-s", "SIGKILL", "rt-execpty"]));
    wait_until("the task to stop", || {
        stdout(&f.daemon.ctr(&["tasks", "ls"])).contains("STOPPED")
    });
    ok(&f.daemon.ctr(&["tasks", "rm", "rt-execpty"]));
}

/// A root filesystem directory with busybox and the applets the tests call.
fn busybox_rootfs(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).expect("busybox-static");
    for applet in [
        "sh", "cat", "hostname", "touch", "sleep", "readlink", "echo",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    root
}

#[test]
fn spec_hooks_sysctls_rlimits_hostname_and_a_read_only_root() {
    requirements();
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let rootfs = busybox_rootfs(dir.path());
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).unwrap();
    // startContainer runs as the container's user (uid 1000 below).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&marks, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut spec: serde_json::Value =
        serde_json::from_str(&ok(&berthd.ctr(&["oci", "spec"]))).unwrap();
    spec["root"] = serde_json::json!({"path": rootfs, "readonly": true});
    spec["hostname"] = "berth-box".into();
    spec["process"]["args"] = serde_json::json!([
        "sh",
        "-c",
        "hostname; echo nofile=$(ulimit -n)/$(ulimit -Hn); \
         echo fwd=$(cat /proc/sys/net/ipv4/ip_forward); \
         touch /probe 2>/dev/null && echo rw || echo ro; \
         echo x > /dev/null && echo devnull-ok; \
         echo user=$(id -u):$(id -g) groups=$(id -G) umask=$(umask) \
         caps=$(grep CapEff /proc/self/status | cut -f2)"
    ]);
    spec["process"]["user"] =
        serde_json::json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 20], "umask": 63});
    spec["process"]["env"] = serde_json::json!(["PATH=/bin"]);
    spec["process"]["rlimits"] =
        serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]);
    // `ctr oci spec` names the namespace's cgroup (`/default`), shared by every container.
    spec["linux"]["cgroupsPath"] = "/default/rt-spec".into();
    spec["linux"]["sysctl"] = serde_json::json!({"net.ipv4.ip_forward": "1"});
    let hook = |name: &str| {
        serde_json::json!([{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("cat > {}/{name}.json", marks.display())],
        }])
    };
    // createContainer runs in the container before pivot_root (host paths); startContainer in
    // the container, its root in place: it writes through a bind mount of `marks`.
    let in_container = serde_json::json!([{
        "path": "/bin/sh",
        "args": ["sh", "-c", "cat > /marks/startContainer.json"],
        "env": ["PATH=/bin"],
    }]);
    spec["hooks"] = serde_json::json!({
        "createRuntime": hook("createRuntime"),
        "createContainer": hook("createContainer"),
        "startContainer": in_container,
        "poststart": hook("poststart"),
        "poststop": hook("poststop"),
    });
    std::fs::create_dir_all(rootfs.join("marks")).unwrap();
    spec["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"destination": "/marks", "type": "bind", "source": marks, "options": ["rbind", "rw"]}));
    let spec_path = dir.path().join("config.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let out = ok(&berthd.ctr(&[
        "run",
        "--rm",
        "--config",
        spec_path.to_str().unwrap(),
        "rt-spec",
    ]));
    assert_eq!(
        out,
        "berth-box\nnofile=123/456\nfwd=1\nro\ndevnull-ok\n\
         user=1000:1000 groups=1000 10 20 umask=0077 caps=0000000000000000\n"
    );
    for (name, status) in [
        ("createRuntime", "creating"),
        ("createContainer", "creating"),
        ("startContainer", "creating"),
        ("poststart", "running"),
        ("poststop", "stopped"),
    ] {
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(marks.join(format!("{name}.json")))
                .unwrap_or_else(|e| panic!("the {name} hook did not run: {e}")),
        )
        .unwrap();
        assert_eq!(state["id"], "rt-spec", "{name}: {state}");
        assert_eq!(state["status"], status, "{name}: {state}");
    }
}

#[test]
fn binary_log_uri_feeds_a_logging_program() {
    let f = berthd("logger");
    let dir = tempfile::tempdir().unwrap();
    let logger = dir.path().join("logger.sh");
    // containerd's protocol: stdout on fd 3, stderr on fd 4, ready when fd 5 closes.
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\necho \"$CONTAINER_NAMESPACE/$CONTAINER_ID $1=$2\" > {d}/env\n\
             cat <&3 > {d}/out & cat <&4 > {d}/err & wait\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).unwrap();
    let uri = format!("binary://{}?tag=x1", logger.display());
    ok(&f.run(
        &["--log-uri", &uri],
        "rt-logger",
        &["sh", "-c", "echo to-out; echo to-err >&2"],
    ));
    let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap_or_default();
    wait_until("the logger to write", || {
        read("out") == "to-out\n" && read("err") == "to-err\n"
    });
    assert_eq!(read("env"), "default/rt-logger tag=x1\n");
}

#[test]
fn a_container_joins_another_ones_namespace_by_path() {
    let f = berthd("withns");
    ok(&f
        .daemon
        .ctr(&["run", "-d", &f.image, "rt-ns-a", "sleep", "1000"]));
    let ps = ok(&f.daemon.ctr(&["tasks", "ls"]));
    let pid: u32 = ps
        .lines()
        .find(|l| l.starts_with("rt-ns-a "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("pid of rt-ns-a");
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let ours = ok(&f.run(
        &["--with-ns", &format!("network:/proc/{pid}/ns/net")],
        "rt-ns-b",
        &["readlink", "/proc/self/ns/net"],
    ));
    assert_eq!(ours.trim(), theirs.to_str().unwrap());
    let own = ok(&f.run(&[], "rt-ns-c", &["readlink", "/proc/self/ns/net"]));
    assert_ne!(own.trim(), theirs.to_str().unwrap());
    // A namespace to join needs the intermediate process; a container with only new ones (and
    // no user namespace) is cloned straight from the shim, which the shim's debug log says.
    let log = f.daemon.log();
    for (id, how) in [
        ("rt-ns-b", "through an intermediate"),
        ("rt-ns-c", "cloned directly"),
    ] {
        assert!(
            log.lines().any(
                |l| l.contains(&format!("create {id}: container process ready")) && l.contains(how)
            ),
            "{id} {how}:\n{log}"
        );
    }
    ok(&f.daemon.ctr(&["tasks", "kill", "-s", "SIGKILL", "rt-ns-a"]));
    wait_until("the task to stop", || {
        stdout(&f.daemon.ctr(&["tasks", "ls"])).contains("STOPPED")
    });
    ok(&f.daemon.ctr(&["tasks", "rm", "rt-ns-a"]));
}

#[test]
fn stdin_arrives_whole_before_end_of_input() {
    // ctr closes its stdin FIFO and then calls CloseIO; what it wrote before must all reach the
    // process (the shim drains the FIFO before it ends the process's input).
    let f = berthd("stdin");
    let data = vec![b'x'; 4 << 20];
    let out = berth_tests::output_with_stdin(
        Command::new(require_program("ctr", "containerd"))
            .arg("--address")
            .arg(f.daemon.socket())
            .args(["run", "--rm", &f.image, "rt-stdin", "wc", "-c"]),
        &data,
    );
    assert_eq!(stdout(&out).trim(), (4 << 20).to_string(), "{out:?}");
}
