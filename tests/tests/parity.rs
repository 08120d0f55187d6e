//! The same `ctr run` flags on berthd (Berth's shim) and on a private containerd 1.6 (runc's shim
//! and runc), and what the container sees compared line by line: identity, hostname,
//! capabilities, no_new_privs, seccomp, cgroups, rlimits, umask, cwd, environment, the mount
//! table, `/dev`, the OOM score, the cgroup filesystem and whether the root is writable. Each
//! difference found this way was a compatibility bug (HOME, the OOM score, `/dev/ptmx` under
//! `--privileged`, the `name=systemd` hierarchy, an empty mount source).

use std::path::Path;
use std::process::{Command, Stdio};

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

fn probe(ctr_out: std::process::Output, id: &str) -> String {
    let mut text = String::from_utf8_lossy(&ctr_out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&ctr_out.stderr));
    text.replace(id, "ID")
}

#[test]
fn ctr_run_flags_give_the_container_what_runc_gives_it() {
    require_root("running containers");
    let ctr = require_program("ctr", "containerd");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:parity");
    let archive = archive.to_str().unwrap();
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    ok(&berthd.ctr(&["images", "import", archive]));
    ok(&containerd.ctr(&["images", "import", archive]));

    let shared = dir.path().join("shared");
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
        let run = |sock: &Path, id: &str| {
            let out = Command::new(&ctr)
                .arg("--address")
                .arg(sock)
                .arg("run")
                .arg("--rm")
                .args(flags)
                .args([img.name.as_str(), id, "sh", "-c", PROBE])
                .env_remove("CONTAINERD_NAMESPACE")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{flags:?} on {}: {out:?}",
                sock.display()
            );
            probe(out, id)
        };
        let theirs = run(&containerd.socket(), &format!("parity-c{n}"));
        let ours = run(&berthd.socket(), &format!("parity-b{n}"));
        let known: Vec<(&str, &str)> = KNOWN
            .iter()
            .filter(|k| flags.contains(&k.flag))
            .map(|k| (k.runc, k.berth))
            .collect();
        let lines = |t: &str| t.lines().map(str::to_owned).collect::<Vec<_>>();
        let (t, o) = (lines(&theirs), lines(&ours));
        let only_theirs: Vec<&String> = t
            .iter()
            .filter(|l| !o.contains(l) && !known.iter().any(|k| k.0 == l.as_str()))
            .collect();
        let only_ours: Vec<&String> = o
            .iter()
            .filter(|l| !t.contains(l) && !known.iter().any(|k| k.1 == l.as_str()))
            .collect();
        if !(only_theirs.is_empty() && only_ours.is_empty()) {
            differences.push(format!(
                "ctr run {flags:?}:\n  containerd+runc only: {only_theirs:#?}\n  berthd only: {only_ours:#?}"
            ));
        }
    }
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

/// The same for a process exec'd into a running container (`ctr tasks exec`), which Berth's shim
/// makes by another path (joining the container's namespaces).
#[test]
fn ctr_exec_gives_the_process_what_runc_gives_it() {
    require_root("running containers");
    let ctr = require_program("ctr", "containerd");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:parity");
    let archive = archive.to_str().unwrap();
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let sockets = [containerd.socket(), berthd.socket()];
    for sock in &sockets {
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(sock)
            .args(["images", "import", archive])
            .output()
            .unwrap();
        ok(&out);
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(sock)
            .args([
                "run",
                "-d",
                img.name.as_str(),
                "parity-exec",
                "sleep",
                "600",
            ])
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        ok(&out);
    }
    let flag_sets: Vec<Vec<&str>> = vec![
        vec![],
        vec!["--cwd", "/tmp"],
        vec!["--user", "1000"],
        vec!["--user", "berth"],
    ];
    let mut differences = Vec::new();
    for (n, flags) in flag_sets.iter().enumerate() {
        let outputs: Vec<String> = sockets
            .iter()
            .map(|sock| {
                let out = Command::new(&ctr)
                    .arg("--address")
                    .arg(sock)
                    .args(["tasks", "exec", "--exec-id", &format!("probe{n}")])
                    .args(flags)
                    .args(["parity-exec", "sh", "-c", PROBE])
                    .env_remove("CONTAINERD_NAMESPACE")
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "exec {flags:?} on {}: {out:?}",
                    sock.display()
                );
                probe(out, "parity-exec")
            })
            .collect();
        if outputs[0] != outputs[1] {
            differences.push(format!(
                "ctr tasks exec {flags:?}:\n--- containerd+runc\n{}\n--- berthd\n{}",
                outputs[0], outputs[1]
            ));
        }
    }
    // An exec'd process's working directory must exist: runc's message, from both.
    for sock in &sockets {
        let out = Command::new(&ctr)
            .arg("--address")
            .arg(sock)
            .args(["tasks", "exec", "--exec-id", "nocwd", "--cwd", "/nope"])
            .args(["parity-exec", "pwd"])
            .env_remove("CONTAINERD_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
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
    for sock in &sockets {
        for args in [
            &["tasks", "kill", "-s", "SIGKILL", "parity-exec"][..],
            &["tasks", "rm", "-f", "parity-exec"],
            &["containers", "rm", "parity-exec"],
        ] {
            let _ = Command::new(&ctr)
                .arg("--address")
                .arg(sock)
                .args(args)
                .env_remove("CONTAINERD_NAMESPACE")
                .output();
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}
