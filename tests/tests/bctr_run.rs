//! `bctr run`, `bctr tasks` and `bctr containers` against berthd and against a private real
//! containerd (Debian's containerd 1.6 with runc), side by side with containerd's own `ctr`:
//! exit statuses, stdio through the FIFOs, detached tasks, exec, kill, and the tables' shapes.
//! Every test runs on both daemons.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{
    bin, fails, fixtures, ok, output_with_stdin, require_program, require_root, Berthd, Containerd,
};

/// What the tests need of a daemon: its socket, and ctr and bctr pointed at it.
trait Daemon {
    fn socket(&self) -> std::path::PathBuf;
    fn ctr(&self, args: &[&str]) -> Output;
    fn bctr(&self, args: &[&str]) -> Output;
}

impl Daemon for Berthd {
    fn socket(&self) -> std::path::PathBuf {
        Berthd::socket(self)
    }
    fn ctr(&self, args: &[&str]) -> Output {
        Berthd::ctr(self, args)
    }
    fn bctr(&self, args: &[&str]) -> Output {
        Berthd::bctr(self, args)
    }
}

impl Daemon for Containerd {
    fn socket(&self) -> std::path::PathBuf {
        Containerd::socket(self)
    }
    fn ctr(&self, args: &[&str]) -> Output {
        Containerd::ctr(self, args)
    }
    fn bctr(&self, args: &[&str]) -> Output {
        Containerd::bctr(self, args)
    }
}

/// Runs `test` on berthd, then on a private containerd, each with the busybox image imported
/// (by ctr); `test` gets the daemon, the image's name and a tag for unique container ids.
fn on_both(tag: &str, test: impl Fn(&dyn Daemon, &str, &str)) {
    require_root("running containers");
    require_program("runc", "runc");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), &format!("docker.io/library/busybox:{tag}"));
    let archive = archive.to_str().unwrap();
    let berthd = Berthd::start();
    ok(&berthd.ctr(&["images", "import", archive]));
    test(&berthd, &img.name, "b");
    drop(berthd);
    let containerd = Containerd::start();
    ok(&containerd.ctr(&["images", "import", archive]));
    test(&containerd, &img.name, "c");
}

/// `bctr --address <sock> args…` with `input` on its stdin.
fn bctr_with_stdin(c: &dyn Daemon, args: &[&str], input: &[u8]) -> Output {
    output_with_stdin(
        Command::new(bin("bctr"))
            .arg("--address")
            .arg(c.socket())
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE")
            .env_remove("BERTH_ADDRESS")
            .env_remove("CONTAINERD_ADDRESS"),
        input,
    )
}

/// A container id no other test (or daemon) uses: runc's state and the cgroups are per host,
/// not per daemon.
fn cid(daemon: &str, name: &str) -> String {
    format!("bctr-{}-{daemon}-{name}", std::process::id())
}

/// The rows of a table, split on runs of spaces.
fn rows(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// The status column of `tasks ls` for `id`.
fn task_status(c: &dyn Daemon, id: &str) -> Option<String> {
    rows(&ok(&c.bctr(&["tasks", "ls"])))
        .into_iter()
        .skip(1)
        .find(|r| r.first().map(String::as_str) == Some(id))
        .and_then(|r| r.get(2).cloned())
}

fn wait_for_status(c: &dyn Daemon, id: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = task_status(c, id);
        if s.as_deref() == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "task {id} did not become {want} (is {s:?})"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn run_exit_statuses_and_stdio() {
    on_both("run", run_exit_statuses_and_stdio_on);
}

fn run_exit_statuses_and_stdio_on(c: &dyn Daemon, img: &str, tag: &str) {
    let img = img.to_owned();
    let [c1, c2, c3, c4, c5, r1] = ["c1", "c2", "c3", "c4", "c5", "r1"].map(|n| cid(tag, n));
    let out = c.bctr(&["run", "--rm", &img, &c1, "/bin/true"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    let out = c.bctr(&["run", "--rm", &img, &c2, "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        out.stderr.is_empty(),
        "an exit status prints nothing: {out:?}"
    );

    let out = c.bctr(&[
        "run",
        "--rm",
        &img,
        &c3,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2",
    ]);
    assert_eq!(ok(&out), "to-stdout\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "to-stderr\n");

    let out = bctr_with_stdin(
        c,
        &[
            "run",
            "--rm",
            &img,
            &c4,
            "sh",
            "-c",
            "read line; echo got:$line",
        ],
        b"a line on stdin\n",
    );
    assert_eq!(ok(&out), "got:a line on stdin\n");

    // The same with ctr, for the record: bctr's outputs are ctr's.
    let ctr = c.ctr(&[
        "run",
        "--rm",
        &img,
        &r1,
        "sh",
        "-c",
        "echo to-stdout; exit 3",
    ]);
    assert_eq!(ctr.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&ctr.stdout), "to-stdout\n");

    // --env, --cwd, --read-only and the image's environment reach the process.
    let out = c.bctr(&[
        "run",
        "--rm",
        "--env",
        "A=1",
        "--cwd",
        "/tmp",
        "--read-only",
        &img,
        &c5,
        "sh",
        "-c",
        "echo $A $PATH; pwd; touch /x 2>/dev/null || echo read-only",
    ]);
    assert_eq!(
        ok(&out),
        "1 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/tmp\nread-only\n"
    );

    // --rm leaves neither container nor snapshot behind.
    assert_eq!(rows(&ok(&c.bctr(&["containers", "ls"]))).len(), 1);
    let snaps = ok(&c.ctr(&["snapshots", "ls"]));
    assert!(!snaps.contains(&c1) && !snaps.contains(&c4), "{snaps}");

    // What bctr refuses, it refuses before making anything.
    let err = fails(&c.bctr(&["run", "--rm", "-d", &img, "x", "true"]));
    assert!(err.contains("--detach and --rm"), "{err}");
    let err = fails(&c.bctr(&["run", "--seccomp-profile", "/p.json", &img, "x", "true"]));
    assert!(err.contains("seccomp must be set to true"), "{err}");
    assert!(rows(&ok(&c.bctr(&["containers", "ls", "-q"]))).is_empty());
}

#[test]
fn detached_tasks_exec_and_kill() {
    on_both("tasks", detached_tasks_exec_and_kill_on);
}

fn detached_tasks_exec_and_kill_on(c: &dyn Daemon, img: &str, tag: &str) {
    let img = img.to_owned();
    let [d1, d2] = ["d1", "d2"].map(|n| cid(tag, n));
    // sh as the container's pid 1 ignores SIGTERM unless it traps it.
    let script = "trap 'exit 143' TERM; sleep 1000 & wait";
    let out = c.bctr(&["run", "-d", &img, &d1, "sh", "-c", script]);
    assert_eq!(ok(&out), "", "-d prints nothing");
    wait_for_status(c, &d1, "RUNNING");
    ok(&c.ctr(&["run", "-d", &img, &d2, "sh", "-c", script]));

    // tasks ls: ctr's header and shape; both daemons' rows are the same columns.
    let b = rows(&ok(&c.bctr(&["tasks", "ls"])));
    let r = rows(&ok(&c.ctr(&["tasks", "ls"])));
    assert_eq!(b[0], ["TASK", "PID", "STATUS"]);
    assert_eq!(b[0], r[0]);
    let mut bids: Vec<_> = b[1..]
        .iter()
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    let mut rids: Vec<_> = r[1..]
        .iter()
        .map(|r| (r[0].clone(), r[2].clone()))
        .collect();
    bids.sort();
    rids.sort();
    assert_eq!(bids, rids);

    // containers ls: the same table as ctr's, byte for byte.
    assert_eq!(
        ok(&c.bctr(&["containers", "ls"])),
        ok(&c.ctr(&["containers", "ls"]))
    );
    // containers info of ctr's container: what ctr prints.
    assert_eq!(
        ok(&c.bctr(&["containers", "info", &d2])),
        ok(&c.ctr(&["containers", "info", &d2]))
    );

    // exec: output, exit status, and the process is gone afterwards.
    let out = c.bctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        &d1,
        "sh",
        "-c",
        "echo in-exec; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "in-exec\n");
    let ps = rows(&ok(&c.bctr(&["tasks", "ps", &d1])));
    assert_eq!(ps[0], ["PID", "INFO"]);

    // pause / resume.
    ok(&c.bctr(&["tasks", "pause", &d1]));
    wait_for_status(c, &d1, "PAUSED");
    ok(&c.bctr(&["tasks", "resume", &d1]));
    wait_for_status(c, &d1, "RUNNING");

    // metrics: ctr's table.
    let m = ok(&c.bctr(&["tasks", "metrics", &d1]));
    assert_eq!(rows(&m)[0], ["ID", "TIMESTAMP"], "{m}");
    assert_eq!(rows(&m)[1][0], d1, "{m}");
    assert!(m.contains("\nMETRIC"), "{m}");
    assert!(m.contains("pids.current"), "{m}");

    // A running task is not deleted without --force, nor its container.
    fails(&c.bctr(&["tasks", "rm", &d1]));
    fails(&c.bctr(&["containers", "rm", &d1]));

    // kill with the default signal (the image's stop signal, SIGTERM): a waiting attach sees 143.
    let attach = Command::new(bin("bctr"))
        .arg("--address")
        .arg(c.socket())
        .args(["tasks", "attach", &d1])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bctr tasks attach");
    std::thread::sleep(Duration::from_millis(500));
    ok(&c.bctr(&["tasks", "kill", &d1]));
    let out = attach.wait_with_output().expect("attach output");
    assert_eq!(out.status.code(), Some(143), "{out:?}");

    // d2 (ctr's) killed by number, then removed with its task by bctr.
    ok(&c.bctr(&["tasks", "kill", "--signal", "9", &d2]));
    wait_for_status(c, &d2, "STOPPED");
    ok(&c.bctr(&["tasks", "rm", &d2]));
    ok(&c.bctr(&["containers", "rm", &d1, &d2]));
    assert!(rows(&ok(&c.bctr(&["containers", "ls", "-q"]))).is_empty());
    assert!(rows(&ok(&c.bctr(&["tasks", "ls", "-q"]))).is_empty());
}

/// The `Seccomp:` field of /proc/self/status inside a new container run with `flags` (0: no
/// seccomp, 2: a filter).
fn seccomp_mode(c: &dyn Daemon, img: &str, id: &str, flags: &[&str]) -> String {
    let script = "while read k v; do case $k in Seccomp:) echo $v;; esac; done </proc/self/status";
    let mut args = vec!["run", "--rm"];
    args.extend(flags);
    args.extend([img, id, "sh", "-c", script]);
    ok(&c.bctr(&args)).trim().to_owned()
}

/// The `linux.seccomp` section of a container's spec, as real ctr's `containers info` shows it:
/// its fields other than `syscalls`, and every syscall's rule flattened to one line per name
/// (name, action, errno, conditions), sorted. Two profiles that allow and refuse the same calls
/// under the same conditions give the same lines, however their rules are grouped or ordered.
fn seccomp_of(c: &dyn Daemon, id: &str) -> (serde_json::Value, Vec<String>) {
    let info: serde_json::Value =
        serde_json::from_str(&ok(&c.ctr(&["containers", "info", id]))).expect("info is JSON");
    let mut section = info["Spec"]["linux"]["seccomp"].clone();
    assert!(section.is_object(), "{id} has no linux.seccomp: {info}");
    let rules = section
        .as_object_mut()
        .and_then(|o| o.remove("syscalls"))
        .unwrap_or_default();
    let mut lines = Vec::new();
    for rule in rules.as_array().into_iter().flatten() {
        let mut args: Vec<serde_json::Value> = rule["args"].as_array().cloned().unwrap_or_default();
        for a in &mut args {
            // Go omits a zero valueTwo; an explicit 0 means the same.
            if a.get("valueTwo") == Some(&serde_json::json!(0)) {
                a.as_object_mut().map(|o| o.remove("valueTwo"));
            }
        }
        for name in rule["names"].as_array().into_iter().flatten() {
            lines.push(format!(
                "{name} {} errno={} args={}",
                rule["action"],
                rule.get("errnoRet").unwrap_or(&serde_json::Value::Null),
                serde_json::Value::Array(args.clone())
            ));
        }
    }
    lines.sort();
    (section, lines)
}

/// `containers create <flags> <img> <id> true`.
fn create_args<'a>(flags: &[&'a str], img: &'a str, id: &'a str) -> Vec<&'a str> {
    let mut args = vec!["containers", "create"];
    args.extend(flags);
    args.extend([img, id, "true"]);
    args
}

/// Creates a container with ctr and one with bctr, both with `flags`, and asserts that their
/// seccomp sections are the same.
fn same_seccomp_as_ctr(c: &dyn Daemon, img: &str, tag: &str, name: &str, flags: &[&str]) {
    let (r, b) = (
        cid(tag, &format!("{name}-ctr")),
        cid(tag, &format!("{name}-bctr")),
    );
    ok(&c.ctr(&create_args(flags, img, &r)));
    ok(&c.bctr(&create_args(flags, img, &b)));
    let (ctr_section, ctr_rules) = seccomp_of(c, &r);
    let (bctr_section, bctr_rules) = seccomp_of(c, &b);
    ok(&c.ctr(&["containers", "rm", &r, &b]));
    assert_eq!(bctr_section, ctr_section, "{flags:?}");
    let missing: Vec<_> = ctr_rules
        .iter()
        .filter(|l| !bctr_rules.contains(l))
        .collect();
    let extra: Vec<_> = bctr_rules
        .iter()
        .filter(|l| !ctr_rules.contains(l))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{flags:?}: bctr lacks {missing:?}, has more {extra:?}"
    );
    assert_eq!(bctr_rules, ctr_rules, "{flags:?}: the same rules as often");
}

#[test]
fn run_with_default_seccomp() {
    on_both("seccomp", run_with_default_seccomp_on);
}

fn run_with_default_seccomp_on(c: &dyn Daemon, img: &str, tag: &str) {
    let [s1, s2, s3, s4, s5, s6] = ["s1", "s2", "s3", "s4", "s5", "s6"].map(|n| cid(tag, n));
    let out = c.bctr(&["run", "--rm", "--seccomp", img, &s1, "sh", "-c", "echo ok"]);
    assert_eq!(ok(&out), "ok\n");
    // Ordinary programs run under the default profile.
    let script = "ls / >/dev/null && cat /etc/hostname >/dev/null && sleep 0.1 && mkdir /tmp/d \
                  && touch /tmp/d/f && rm -r /tmp/d && id -u && echo fine";
    let out = c.bctr(&["run", "--rm", "--seccomp", img, &s2, "sh", "-c", script]);
    assert_eq!(ok(&out), "0\nfine\n");

    // The process is under a filter with --seccomp, and under none without.
    assert_eq!(seccomp_mode(c, img, &s3, &["--seccomp"]), "2");
    assert_eq!(seccomp_mode(c, img, &s4, &[]), "0");

    // A new user namespace needs no capability, so only the profile stops it (unshare is
    // CAP_SYS_ADMIN's, and clone without namespace flags): allowed without --seccomp, refused
    // with it.
    let script = "/bin/busybox unshare -U true 2>/dev/null && echo allowed || echo refused";
    let out = c.bctr(&["run", "--rm", img, &s5, "sh", "-c", script]);
    assert_eq!(ok(&out), "allowed\n");
    let out = c.bctr(&["run", "--rm", "--seccomp", img, &s6, "sh", "-c", script]);
    assert_eq!(ok(&out), "refused\n");

    // The profile in the spec is ctr's: the default one, and the one of a privileged container
    // (ctr applies --privileged first, so the profile allows what all the capabilities allow).
    same_seccomp_as_ctr(c, img, tag, "default", &["--seccomp"]);
    same_seccomp_as_ctr(c, img, tag, "priv", &["--privileged", "--seccomp"]);
    assert!(rows(&ok(&c.bctr(&["containers", "ls", "-q"]))).is_empty());
}

#[test]
fn run_with_seccomp_profile_file() {
    on_both("seccomp-file", run_with_seccomp_profile_file_on);
}

fn run_with_seccomp_profile_file_on(c: &dyn Daemon, img: &str, tag: &str) {
    let [p1, p2] = ["p1", "p2"].map(|n| cid(tag, n));
    let dir = tempfile::tempdir().unwrap();
    // A Docker-style profile: allow everything but making directories. `comment` is not a spec
    // field; ctr ignores it, and so does bctr.
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                          "comment": "no new directories"}]}"#,
    )
    .unwrap();
    let profile = profile.to_str().unwrap();
    let script =
        "mkdir /tmp/x 2>/dev/null && echo made || echo refused; touch /tmp/y && echo touched";
    let flags = ["--seccomp", "--seccomp-profile", profile];
    let mut args = vec!["run", "--rm"];
    args.extend(flags);
    args.extend([img, p1.as_str(), "sh", "-c", script]);
    assert_eq!(ok(&c.bctr(&args)), "refused\ntouched\n");
    // ctr, for the record, does the same.
    let i = args.len() - 4;
    args[i] = &p2;
    assert_eq!(ok(&c.ctr(&args)), "refused\ntouched\n");
    same_seccomp_as_ctr(c, img, tag, "file", &flags);

    // A file that is not a profile: a clear error, and nothing made.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"defaultAction\": ").unwrap();
    let bad = bad.to_str().unwrap();
    let err = fails(&c.bctr(&[
        "run",
        "--rm",
        "--seccomp",
        "--seccomp-profile",
        bad,
        img,
        &p1,
        "true",
    ]));
    assert!(
        err.contains("decoding seccomp profile failed") && err.contains(bad),
        "{err}"
    );
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let err = fails(&c.bctr(&[
        "run",
        "--rm",
        "--seccomp",
        "--seccomp-profile",
        missing,
        img,
        &p1,
        "true",
    ]));
    assert!(err.contains("cannot load seccomp profile"), "{err}");
    assert!(rows(&ok(&c.bctr(&["containers", "ls", "-q"]))).is_empty());
    let snaps = ok(&c.ctr(&["snapshots", "ls"]));
    assert!(!snaps.contains(&p1), "{snaps}");
}

/// `bctr containers create` writes the spec `ctr containers create` writes, flag for flag (the
/// seccomp profile is compared rule by rule above). Spec building is the client's, so berthd
/// alone serves; the comparison is of the specs as ctr's `containers info` prints them.
#[test]
fn bctr_writes_the_spec_ctr_writes() {
    require_root("running containers");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:specs");
    let berthd = Berthd::start();
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, "A=1\nB=two\n").unwrap();
    let env_file = format!("{}", env_file.display());
    let bind = format!(
        "type=bind,src={},dst=/mnt,options=rbind:ro",
        dir.path().display()
    );
    let device = ["/dev/fuse", "/dev/kmsg"]
        .into_iter()
        .find(|d| std::path::Path::new(d).exists())
        .expect("a device node");
    let device_dir = ["/dev/net", "/dev/cpu", "/dev/input"]
        .into_iter()
        .find(|d| std::path::Path::new(d).is_dir())
        .expect("a directory of device nodes");
    // ctr 1.6's `containers create` lacks --cpus, --cpu-shares and --cgroup: those sets are run
    // (detached, then killed) instead of only created.
    let flag_sets: Vec<(bool, Vec<&str>)> = vec![
        (false, vec![]),
        (false, vec!["--read-only", "--tty"]),
        (false, vec!["--privileged"]),
        (false, vec!["--net-host"]),
        (false, vec!["--allow-new-privs", "--cwd", "/tmp"]),
        (false, vec!["--env", "FOO=bar", "--env-file", &env_file]),
        (
            false,
            vec!["--cpu-quota", "20000", "--cpu-period", "100000"],
        ),
        (
            false,
            vec![
                "--cap-add",
                "CAP_SYS_ADMIN",
                "--cap-add",
                "CAP_NET_ADMIN",
                "--cap-drop",
                "CAP_CHOWN",
            ],
        ),
        (false, vec!["--privileged", "--cap-drop", "CAP_SYS_ADMIN"]),
        (false, vec!["--device", device]),
        (false, vec!["--device", device_dir]),
        (
            false,
            vec![
                "--mount",
                &bind,
                "--mount",
                "type=tmpfs,dst=/scratch,options=size=1m",
            ],
        ),
        (
            false,
            vec![
                "--with-ns",
                "network:/proc/1/ns/net",
                "--with-ns",
                "ipc:/proc/1/ns/ipc",
            ],
        ),
        (
            false,
            vec![
                "--rootfs-propagation",
                "shared",
                "--memory-limit",
                "67108864",
            ],
        ),
        (false, vec!["--annotation", "a=b", "--label", "l=v"]),
        (
            true,
            vec![
                "--cpus",
                "0.5",
                "--cpu-shares",
                "512",
                "--cgroup",
                "/mine/c",
            ],
        ),
        // A user namespace: the container runs on a copy of the image owned by the host ids.
        (
            true,
            vec!["--uidmap", "0:300000:65536", "--gidmap", "0:300000:65536"],
        ),
    ];
    // Capability lists are sets: bctr writes them in containerd's default order (then by
    // number), ctr appends --cap-add's in the order given; they are compared sorted.
    let spec_of = |id: &str| -> String {
        let mut info: serde_json::Value =
            serde_json::from_str(&ok(&berthd.ctr(&["containers", "info", id]))).unwrap();
        if let Some(sets) = info["Spec"]["process"]["capabilities"].as_object_mut() {
            for set in sets.values_mut() {
                if let Some(list) = set.as_array_mut() {
                    list.sort_by_key(|c| c.as_str().unwrap_or_default().to_owned());
                }
            }
        }
        let spec = serde_json::to_string_pretty(&info["Spec"]).unwrap();
        spec.replace(id, "ID")
    };
    let mut differences = Vec::new();
    for (n, (run, flags)) in flag_sets.iter().enumerate() {
        let (r, b) = (format!("spec-{n}-ctr"), format!("spec-{n}-bctr"));
        let args = |id: &str| -> Vec<String> {
            let mut a: Vec<&str> = if *run {
                vec!["run", "-d"]
            } else {
                vec!["containers", "create"]
            };
            a.extend(flags);
            a.extend([img.name.as_str(), id, "sleep", "600"]);
            a.into_iter().map(str::to_owned).collect()
        };
        let (ra, ba) = (args(&r), args(&b));
        // bctr first: with --uidmap it makes the shifted copy of the image, which ctr then finds
        // under containerd's name and uses.
        ok(&berthd.bctr(&ba.iter().map(String::as_str).collect::<Vec<_>>()));
        ok(&berthd.ctr(&ra.iter().map(String::as_str).collect::<Vec<_>>()));
        let (theirs, ours) = (spec_of(&r), spec_of(&b));
        if flags.contains(&"--uidmap") {
            // Both containers run on the shifted copy bctr made, and the process is the mapped
            // root.
            let info: serde_json::Value =
                serde_json::from_str(&ok(&berthd.ctr(&["containers", "info", &b]))).unwrap();
            let key = info["SnapshotKey"].as_str().unwrap().to_owned();
            let snaps = ok(&berthd.ctr(&["snapshots", "ls"]));
            let parent = snaps
                .lines()
                .find(|l| l.starts_with(&format!("{key} ")))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_default()
                .to_owned();
            assert!(parent.ends_with("-300000-300000"), "{snaps}");
            let out = ok(&berthd.bctr(&["tasks", "exec", "--exec-id", "id", &b, "id"]));
            assert!(out.starts_with("uid=0(root) gid=0(root)"), "{out}");
            let host_pid = ok(&berthd.ctr(&["tasks", "ls"]))
                .lines()
                .find(|l| l.starts_with(&format!("{b} ")))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
                .unwrap();
            let status = std::fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap();
            assert!(
                status.lines().any(|l| l.starts_with("Uid:\t300000")),
                "{status}"
            );
        }
        for id in [&r, &b] {
            if *run {
                berthd.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
                berthd.ctr(&["tasks", "rm", "-f", id]);
            }
            ok(&berthd.ctr(&["containers", "rm", id]));
        }
        if theirs != ours {
            let (t, o): (Vec<&str>, Vec<&str>) = (theirs.lines().collect(), ours.lines().collect());
            let only_ctr: Vec<&&str> = t.iter().filter(|l| !o.contains(l)).collect();
            let only_bctr: Vec<&&str> = o.iter().filter(|l| !t.contains(l)).collect();
            differences.push(format!(
                "{flags:?}: ctr only {only_ctr:#?}, bctr only {only_bctr:#?}"
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn run_with_a_log_uri() {
    on_both("loguri", run_with_a_log_uri_on);
}

/// `--log-uri file://…`: the output goes to the file (through the shim), not to bctr's stdout.
fn run_with_a_log_uri_on(c: &dyn Daemon, img: &str, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let uri = format!("file://{}", log.display());
    let id = cid(tag, "loguri");
    let out = ok(&c.bctr(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        img,
        &id,
        "sh",
        "-c",
        "echo to-stdout; echo to-stderr >&2",
    ]));
    assert_eq!(out, "", "nothing on bctr's stdout");
    // Berth's shim gives the container the file itself, so both lines are there when the run
    // returns. runc's shim copies the container's pipes into the file and can still be copying
    // after the task is deleted: containerd gets a few seconds.
    let patience = if tag == "b" {
        Duration::ZERO
    } else {
        Duration::from_secs(5)
    };
    let deadline = Instant::now() + patience;
    let logged = loop {
        let logged = std::fs::read_to_string(&log).unwrap();
        let complete = logged.contains("to-stdout") && logged.contains("to-stderr");
        if complete || Instant::now() >= deadline {
            break logged;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        logged.contains("to-stdout") && logged.contains("to-stderr"),
        "{tag}: {logged:?}"
    );
}
