//! The same `ctr run` flags on berthd (Berth's shim) and on a private containerd 1.6 (runc's shim
//! and runc), and what the container sees compared line by line: identity, hostname,
//! capabilities, no_new_privs, seccomp, cgroups, rlimits, umask, cwd, environment, the mount
//! table, `/dev`, the OOM score, the cgroup filesystem and whether the root is writable. Each
//! difference found this way was a compatibility bug (HOME, the OOM score, `/dev/ptmx` under
//! `--privileged`, the `name=systemd` hierarchy, an empty mount source).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use berth_tests::{fixtures, ok, require_program, require_root, Berthd, Containerd};

/// Printed inside the container. Sizes that depend on the host's memory are dropped from tmpfs
/// options; the root's overlay line names each daemon's own snapshot paths, so it is left out.
const PROBE: &str = r#"id; echo host=$(hostname); grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status
cat /proc/self/cgroup; ulimit -a; echo umask=$(umask); echo cwd=$(pwd); env | sort
sed "s/,size=[0-9]*k//; s/,nr_inodes=[0-9]*//" /proc/self/mounts | grep -v "^overlay / " | sort
stat -c "%A %U %G %t:%T %N" /dev /dev/*
echo oom=$(cat /proc/self/oom_score_adj); ls /sys/fs/cgroup | sort
touch /probe 2>/dev/null && echo root=rw || echo root=ro"#;

/// A difference kept on purpose: with `flag`, runc shows line `runc` where Berth shows `berth`.
struct Known {
    flag: &'static str,
    runc: &'static str,
    berth: &'static str,
}

const KNOWN: &[Known] = &[
    // runc mounts mqueue in a user namespace before its gid is mapped, so the directory's group
    // is the overflow gid (nogroup); Berth's set-up runs as the namespace's root, whose it is.
    Known {
        flag: "--uidmap",
        runc: "drwxrwxrwt root UNKNOWN 0:0 /dev/mqueue",
        berth: "drwxrwxrwt root root 0:0 /dev/mqueue",
    },
];

fn probe(ctr_out: Output, id: &str) -> String {
    let mut text = String::from_utf8_lossy(&ctr_out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&ctr_out.stderr));
    text.replace(id, "ID")
}

/// containerd (runc) and berthd, the test image imported in both; index 0 is containerd.
struct Both {
    ctr: PathBuf,
    image: String,
    sockets: [PathBuf; 2],
    _daemons: (Containerd, Berthd),
    dir: tempfile::TempDir,
}

impl Both {
    fn start() -> Both {
        require_root("running containers");
        let ctr = require_program("ctr", "containerd");
        let dir = tempfile::tempdir().unwrap();
        let (img, archive) =
            fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:parity");
        let (containerd, berthd) = (Containerd::start(), Berthd::start());
        let both = Both {
            ctr,
            image: img.name.clone(),
            sockets: [containerd.socket(), berthd.socket()],
            _daemons: (containerd, berthd),
            dir,
        };
        for sock in &both.sockets {
            ok(&both.ctr(sock, &["images", "import", archive.to_str().unwrap()]));
        }
        both
    }

    /// `ctr --address <sock> args…` in the default namespace, stdin closed.
    fn ctr(&self, sock: &Path, args: &[&str]) -> Output {
        Command::new(&self.ctr)
            .arg("--address")
            .arg(sock)
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

/// Runs `run(socket, container id)` on containerd and on berthd (each its own id: the two
/// share the host's cgroup tree); the lines only one side printed, but the `KNOWN` differences
/// for these `flags`.
fn compare(
    both: &Both,
    flags: &[&str],
    id: &str,
    run: impl Fn(&Path, &str) -> String,
) -> Option<String> {
    let theirs = run(&both.sockets[0], &format!("{id}-c"));
    let ours = run(&both.sockets[1], &format!("{id}-b"));
    let known: Vec<(&str, &str)> = KNOWN
        .iter()
        .filter(|k| flags.contains(&k.flag))
        .map(|k| (k.runc, k.berth))
        .collect();
    let (t, o): (Vec<&str>, Vec<&str>) = (theirs.lines().collect(), ours.lines().collect());
    let only_theirs: Vec<&&str> = t
        .iter()
        .filter(|l| !o.contains(l) && !known.iter().any(|k| k.0 == **l))
        .collect();
    let only_ours: Vec<&&str> = o
        .iter()
        .filter(|l| !t.contains(l) && !known.iter().any(|k| k.1 == **l))
        .collect();
    (!(only_theirs.is_empty() && only_ours.is_empty())).then(|| {
        format!(
            "{flags:?}:\n  containerd+runc only: {only_theirs:#?}\n  berthd only: {only_ours:#?}"
        )
    })
}

#[test]
fn ctr_run_flags_give_the_container_what_runc_gives_it() {
    let both = Both::start();
    let shared = both.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("file"), "x").unwrap();
    // A network namespace to join by path, held by a process of our own.
    let mut holder = Command::new(require_program("unshare", "util-linux"))
        .args(["--net", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let netns = format!("/proc/{}/ns/net", holder.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while std::fs::read_link(&netns).ok() == std::fs::read_link("/proc/self/ns/net").ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "unshare made no netns"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let bind = format!(
        "type=bind,src={},dst=/mnt,options=rbind:ro",
        shared.display()
    );
    let with_ns = format!("network:{netns}");
    // A host device to add that the default spec lacks (the VM has no /dev/fuse).
    let device = ["/dev/fuse", "/dev/kmsg", "/dev/loop-control"]
        .into_iter()
        .find(|d| Path::new(d).exists())
        .expect("a device node to pass with --device");

    // Every `ctr run` flag of containerd 1.6 that changes what the container sees, but `--tty`
    // (needs a terminal), `--cni`, `--gpus`, `--rdt-class` and AppArmor (not on this host).
    let flag_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--read-only"],
        vec!["--privileged"],
        vec!["--net-host"],
        vec!["--allow-new-privs"],
        vec!["--no-pivot"],
        vec!["--cwd", "/tmp"],
        // runc makes a missing working directory for the first process.
        vec!["--cwd", "/new/deep/dir"],
        vec!["--env", "FOO=bar", "--env", "HOME=/elsewhere"],
        vec!["--memory-limit", "67108864"],
        vec!["--cpus", "0.5", "--cpu-shares", "512"],
        vec!["--cap-add", "CAP_SYS_ADMIN", "--cap-drop", "CAP_CHOWN"],
        vec!["--seccomp"],
        vec!["--device", device],
        vec!["--mount", &bind],
        vec!["--mount", "type=tmpfs,dst=/scratch,options=size=1m"],
        vec!["--with-ns", &with_ns],
        vec!["--rootfs-propagation", "shared"],
        vec!["--cgroup", "/berth-parity/c"],
        vec!["--uidmap", "0:300000:65536", "--gidmap", "0:300000:65536"],
    ];
    let mut differences = Vec::new();
    for (n, flags) in flag_sets.iter().enumerate() {
        let differs = compare(&both, flags, &format!("parity-{n}"), |sock, id| {
            let mut args = vec!["run", "--rm"];
            args.extend(flags);
            args.extend([both.image.as_str(), id, "sh", "-c", PROBE]);
            let out = both.ctr(sock, &args);
            assert!(
                out.status.success(),
                "{flags:?} on {}: {out:?}",
                sock.display()
            );
            probe(out, id)
        });
        differences.extend(differs.map(|d| format!("ctr run {d}")));
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// The same for a process exec'd into a running container (`ctr tasks exec`), which Berth's shim
/// makes by another path (joining the container's namespaces).
#[test]
fn ctr_exec_gives_the_process_what_runc_gives_it() {
    let both = Both::start();
    let ids = ["parity-exec-c", "parity-exec-b"];
    for (sock, id) in both.sockets.iter().zip(ids) {
        ok(&both.ctr(sock, &["run", "-d", &both.image, id, "sleep", "600"]));
    }
    let flag_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--cwd", "/tmp"],
        vec!["--user", "1000"],
        vec!["--user", "berth"],
    ];
    let mut differences = Vec::new();
    for (n, flags) in flag_sets.iter().enumerate() {
        let differs = compare(&both, flags, "parity-exec", |sock, id| {
            let exec_id = format!("probe{n}");
            let mut args = vec!["tasks", "exec", "--exec-id", &exec_id];
            args.extend(flags);
            args.extend([id, "sh", "-c", PROBE]);
            let out = both.ctr(sock, &args);
            assert!(
                out.status.success(),
                "exec {flags:?} on {}: {out:?}",
                sock.display()
            );
            probe(out, id)
        });
        differences.extend(differs.map(|d| format!("ctr tasks exec {d}")));
    }
    // An exec'd process's working directory must exist: runc's message, from both.
    for (sock, id) in both.sockets.iter().zip(ids) {
        let out = both.ctr(
            sock,
            &[
                "tasks",
                "exec",
                "--exec-id",
                "nocwd",
                "--cwd",
                "/nope",
                id,
                "pwd",
            ],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {out:?}", sock.display());
        assert!(
            err.contains(
                r#"chdir to cwd ("/nope") set in config.json failed: no such file or directory"#
            ),
            "{}: {err}",
            sock.display()
        );
    }
    for (sock, id) in both.sockets.iter().zip(ids) {
        both.ctr(sock, &["tasks", "kill", "-s", "SIGKILL", id]);
        both.ctr(sock, &["tasks", "rm", "-f", id]);
        both.ctr(sock, &["containers", "rm", id]);
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
