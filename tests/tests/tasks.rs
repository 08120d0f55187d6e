//! Issues 11 and 12, tasks end to end: containerd's own `ctr` runs containers on berthd through
//! the default runtime `io.containerd.runc.v2`, which is Berth's own shim
//! (`containerd-shim-berth-v1`, no runc), and what it sees (exit codes, stdio, cgroups, events,
//! errors) is what containerd with runc gives it. Every test checks that nothing is left behind:
//! no shim, no bundle, no mount.
//!
//! Container ids are unique across tests: runc keeps its state in `/run/containerd/runc/<ns>`,
//! shared by every daemon on the host, and the tests of one binary run in parallel.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_api::containers::{
    containers_client::ContainersClient, Container, CreateContainerRequest,
};
use berth_api::tasks::{tasks_client::TasksClient, CreateTaskRequest, GetRequest, WaitRequest};
use berth_tests::{
    fails, fixtures, in_a_terminal, ok, require_program, require_root, shims_of, Berthd, Containerd,
};

const RUNC_SHIM: &str = "/usr/bin/containerd-shim-runc-v2";

/// berthd (or containerd) with the fixture image imported.
struct Fixture {
    berthd: Berthd,
    image: String,
    _dir: tempfile::TempDir,
}

fn requirements() {
    require_root("running containers");
    require_program("ctr", "containerd");
    require_program("runc", "runc");
    assert!(
        Path::new(RUNC_SHIM).exists(),
        "{RUNC_SHIM} is missing: install Debian's containerd package"
    );
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        Fixture::with_args(tag, &[])
    }

    fn with_args(tag: &str, args: &[&str]) -> Fixture {
        requirements();
        let berthd = Berthd::start_with(args);
        let dir = tempfile::tempdir().unwrap();
        let (img, archive) =
            fixtures::busybox_oci_archive(dir.path(), &format!("docker.io/library/busybox:{tag}"));
        ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
        Fixture {
            berthd,
            image: img.name,
            _dir: dir,
        }
    }

    fn ctr(&self, args: &[&str]) -> Output {
        self.berthd.ctr(args)
    }

    /// `ctr run --rm IMAGE id args…` with `flags` before the image.
    fn run(&self, flags: &[&str], id: &str, args: &[&str]) -> Output {
        let mut all = vec!["run", "--rm"];
        all.extend_from_slice(flags);
        all.push(&self.image);
        all.push(id);
        all.extend_from_slice(args);
        self.ctr(&all)
    }

    fn ctr_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(require_program("ctr", "containerd"));
        cmd.arg("--address")
            .arg(self.berthd.socket())
            .args(args)
            .env_remove("CONTAINERD_NAMESPACE");
        cmd
    }

    fn bundle(&self, id: &str) -> PathBuf {
        self.berthd
            .state()
            .join("io.containerd.runtime.v2.task/default")
            .join(id)
    }

    /// Nothing of task `id` is left: no bundle, no work directory, no shim, no mount.
    fn assert_clean(&self, id: &str) {
        assert!(
            !self.bundle(id).exists(),
            "bundle of {id} left behind; berthd's log:\n{}",
            self.berthd.log()
        );
        assert!(
            !self
                .berthd
                .root()
                .join("io.containerd.runtime.v2.task/default")
                .join(id)
                .exists(),
            "work directory of {id} left behind"
        );
        wait_until(&format!("the shim of {id} to exit"), || {
            shims_of(&self.berthd.socket(), id).is_empty()
        });
        let dir = self.berthd.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<_> = mounts
            .lines()
            .filter(|l| l.contains(&dir) && l.contains(id))
            .collect();
        assert!(left.is_empty(), "mounts of {id} left: {left:#?}");
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The TASK/PID/STATUS rows of `ctr tasks ls`.
fn task_rows(out: &str) -> Vec<(String, String)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            Some((cols.first()?.to_string(), cols.get(2)?.to_string()))
        })
        .collect()
}

/// `ctr events` in the background, writing to a file.
struct Events {
    child: Child,
    path: PathBuf,
}

impl Events {
    fn start(f: &Fixture, dir: &Path) -> Events {
        let path = dir.join("events.out");
        let child = f
            .ctr_command(&["events"])
            .stdout(std::fs::File::create(&path).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Subscribed once a probe namespace's creation shows up.
        let mut n = 0;
        wait_until("ctr events to subscribe", || {
            n += 1;
            ok(&f.ctr(&["namespaces", "create", &format!("probe{n}")]));
            std::fs::read_to_string(&path)
                .unwrap()
                .contains("/namespaces/create")
        });
        Events { child, path }
    }

    fn wait_for(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let mut got = String::new();
        wait_until(what, || {
            got = std::fs::read_to_string(&self.path).unwrap();
            done(&got)
        });
        got
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn ctr_run_exit_codes_stdio_and_cgroup() {
    let f = Fixture::new("run");
    let true_ = f.run(&[], "run-true", &["/bin/true"]);
    assert_eq!(true_.status.code(), Some(0), "{true_:?}");
    let three = f.run(&[], "run-exit3", &["sh", "-c", "exit 3"]);
    assert_eq!(three.status.code(), Some(3), "{three:?}");

    // pid 1 in its own pid namespace, in its own cgroup (named after namespace and id, as ctr
    // asks).
    let out = ok(&f.run(
        &[],
        "run-cgroup",
        &["sh", "-c", "echo $$; cat /proc/self/cgroup"],
    ));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("1"), "{out}");
    // In every hierarchy: each v1 controller's and, on a hybrid host, the unified one (`0::`).
    let hierarchies: Vec<&str> = lines.collect();
    assert!(!hierarchies.is_empty(), "{out}");
    for line in hierarchies {
        assert!(
            line.ends_with(":/default/run-cgroup"),
            "not in its own cgroup in this hierarchy: {line}\n{out}"
        );
    }

    // What runc gives a process beside its spec: HOME from the image's /etc/passwd when the
    // environment has none, and the shim's OOM score, one above the daemon's (containerd's
    // AdjustOOMScore).
    let daemon_pid = f.berthd.child.as_ref().expect("berthd runs").id();
    let daemon_score: i32 = std::fs::read_to_string(format!("/proc/{daemon_pid}/oom_score_adj"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let out = ok(&f.run(
        &[],
        "run-home",
        &["sh", "-c", "echo home=$HOME; cat /proc/self/oom_score_adj"],
    ));
    assert_eq!(
        out,
        format!("home=/root\n{}\n", (daemon_score + 1).min(1000)),
        "{out}"
    );

    // A line piped into ctr reaches the process's stdin.
    let piped = berth_tests::output_with_stdin(
        &mut f.ctr_command(&[
            "run",
            "--rm",
            &f.image,
            "run-stdin",
            "sh",
            "-c",
            "read line; echo got:$line",
        ]),
        b"hello stdin\n",
    );
    assert_eq!(ok(&piped).trim(), "got:hello stdin");

    for id in ["run-true", "run-exit3", "run-cgroup", "run-stdin"] {
        f.assert_clean(id);
    }
    assert_eq!(ok(&f.ctr(&["containers", "ls", "-q"])).trim(), "");
}

#[test]
fn ctr_run_with_a_terminal() {
    let f = Fixture::new("tty");
    // `script` gives ctr a pty of its own; ctr -t gives the container one.
    let out = in_a_terminal(&format!(
        "{} --address {} run --rm -t {} run-tty sh -c 'test -t 0 && test -t 1 && echo on-a-tty; exit 5'",
        require_program("ctr", "containerd").display(),
        f.berthd.socket().display(),
        f.image
    ));
    assert!(stdout(&out).contains("on-a-tty"), "{out:?}");
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    f.assert_clean("run-tty");
}

#[test]
fn detached_task_lifecycle_exec_pause_metrics_kill() {
    let f = Fixture::new("detached");
    let dir = tempfile::tempdir().unwrap();
    let events = Events::start(&f, dir.path());
    let id = "life-c3";
    ok(&f.ctr(&["run", "-d", &f.image, id, "sleep", "1000"]));

    let ls = ok(&f.ctr(&["tasks", "ls"]));
    assert_eq!(
        task_rows(&ls),
        [(id.to_owned(), "RUNNING".to_owned())],
        "{ls}"
    );
    let pid = ls
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let ps = ok(&f.ctr(&["tasks", "ps", id]));
    assert!(ps.lines().any(|l| l.starts_with(&pid)), "{ps}");

    // exec: a process in the container's namespaces, with its own id.
    let listing = ok(&f.ctr(&["tasks", "exec", "--exec-id", "e1", id, "ls", "/"]));
    assert!(listing.lines().any(|l| l == "bin"), "{listing}");
    let exec3 = f.ctr(&["tasks", "exec", "--exec-id", "e3", id, "sh", "-c", "exit 3"]);
    assert_eq!(exec3.status.code(), Some(3), "{exec3:?}");

    // An exec id in use is refused, with containerd's code.
    let mut long = f
        .ctr_command(&["tasks", "exec", "--exec-id", "e2", id, "sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("exec e2 to start", || {
        ok(&f.ctr(&["tasks", "ps", id])).lines().count() >= 3
    });
    let dup = fails(&f.ctr(&["tasks", "exec", "--exec-id", "e2", id, "true"]));
    assert!(dup.contains("already exists"), "{dup}");
    // SIGTERM ends the exec'd sleep (not pid 1): 128 + 15.
    ok(&f.ctr(&["tasks", "kill", "--exec-id", "e2", id]));
    let status = long.wait().unwrap();
    assert_eq!(status.code(), Some(143), "exec e2");

    ok(&f.ctr(&["tasks", "pause", id]));
    assert_eq!(task_rows(&ok(&f.ctr(&["tasks", "ls"])))[0].1, "PAUSED");
    ok(&f.ctr(&["tasks", "resume", id]));
    assert_eq!(task_rows(&ok(&f.ctr(&["tasks", "ls"])))[0].1, "RUNNING");

    // Metrics as the shim reports them (cgroup v1 or v2 types), decoded by ctr.
    let metrics = ok(&f.ctr(&["tasks", "metrics", id]));
    assert!(metrics.contains("pids.current"), "{metrics}");
    assert!(metrics.contains("memory."), "{metrics}");

    ok(&f.ctr(&["tasks", "kill", "-s", "SIGKILL", id]));
    let got = events.wait_for("the task's exit event", |e| {
        e.contains(&format!(
            "/tasks/exit {{\"container_id\":\"{id}\",\"id\":\"{id}\""
        ))
    });
    assert!(got.contains("\"exit_status\":137"), "{got}");
    for topic in [
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
    ] {
        assert!(got.contains(topic), "no {topic} event:\n{got}");
    }
    // Killing a stopped task: containerd's answer.
    let dead = fails(&f.ctr(&["tasks", "kill", id]));
    assert!(
        dead.contains("process already finished: not found"),
        "{dead}"
    );

    ok(&f.ctr(&["tasks", "rm", id]));
    events.wait_for("the delete event", |e| e.contains("/tasks/delete"));
    ok(&f.ctr(&["containers", "rm", id]));
    f.assert_clean(id);
}

#[test]
fn memory_hog_is_oom_killed_with_an_event() {
    let f = Fixture::new("oom");
    let dir = tempfile::tempdir().unwrap();
    let events = Events::start(&f, dir.path());
    // tmpfs pages cannot be reclaimed without swap: past 16 MiB the cgroup's OOM killer acts.
    let out = f.run(
        &["--memory-limit", "16777216"],
        "oom-hog",
        &[
            "/bin/busybox",
            "dd",
            "if=/dev/zero",
            "of=/dev/shm/fill",
            "bs=1M",
            "count=60",
        ],
    );
    assert_eq!(out.status.code(), Some(137), "{out:?}");
    events.wait_for("an OOM event", |e| {
        e.contains("/tasks/oom {\"container_id\":\"oom-hog\"")
    });
    f.assert_clean("oom-hog");
}

#[test]
fn bind_mounts_and_root_file_system_writes() {
    let f = Fixture::new("mounts");
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("in"), "from the host\n").unwrap();
    let src = host.path().display().to_string();
    let rw = format!("type=bind,src={src},dst=/mnt,options=rbind:rw");
    let out = ok(&f.run(
        &["--mount", &rw],
        "mnt-rw",
        &[
            "sh",
            "-c",
            "cat /mnt/in && echo from the container > /mnt/out",
        ],
    ));
    assert_eq!(out, "from the host\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("out")).unwrap(),
        "from the container\n"
    );
    let ro = format!("type=bind,src={src},dst=/mnt,options=rbind:ro");
    let denied = f.run(
        &["--mount", &ro],
        "mnt-ro",
        &["sh", "-c", "echo x > /mnt/ro"],
    );
    assert_ne!(denied.status.code(), Some(0), "{denied:?}");
    assert!(!host.path().join("ro").exists());

    // A file written in the container's root lands in its snapshot's upper layer only.
    let id = "rootfs-w";
    ok(&f.ctr(&[
        "run",
        "-d",
        &f.image,
        id,
        "sh",
        "-c",
        "echo written > /written; sleep 1000",
    ]));
    let mnt = tempfile::tempdir().unwrap();
    let mounts = ok(&f.ctr(&["snapshots", "mounts", mnt.path().to_str().unwrap(), id]));
    let option = |name: &str| -> Vec<String> {
        let opts = mounts.split(" -o ").nth(1).unwrap_or_default().trim();
        opts.split(',')
            .filter_map(|o| o.strip_prefix(&format!("{name}=")))
            .flat_map(|v| v.split(':').map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    let upper = PathBuf::from(&option("upperdir")[0]);
    wait_until("the file to be written", || upper.join("written").exists());
    let lowers = option("lowerdir");
    assert!(!lowers.is_empty(), "{mounts}");
    for lower in &lowers {
        assert!(
            !Path::new(lower).join("written").exists(),
            "image layer {lower} changed"
        );
    }
    ok(&f.ctr(&["tasks", "kill", "-s", "SIGKILL", id]));
    wait_until("the task to stop", || {
        task_rows(&ok(&f.ctr(&["tasks", "ls"])))
            .iter()
            .all(|(t, s)| t != id || s == "STOPPED")
    });
    ok(&f.ctr(&["tasks", "rm", id]));
    ok(&f.ctr(&["containers", "rm", id]));
    // The container's snapshot, upper layer included, goes with it (the collector removes the
    // directory right after).
    wait_until("the upper layer to go", || !upper.exists());
    for lower in &lowers {
        assert!(Path::new(lower).exists(), "image layer {lower} went");
    }
    for id in ["mnt-rw", "mnt-ro", "rootfs-w"] {
        f.assert_clean(id);
    }
}

#[test]
fn tasks_survive_a_berthd_sigkill() {
    let mut f = Fixture::new("restart");
    // r1 keeps running; r2's shim is killed while berthd is down; r3 exits while it is down.
    ok(&f.ctr(&["run", "-d", &f.image, "rst-r1", "sleep", "1000"]));
    ok(&f.ctr(&["run", "-d", &f.image, "rst-r2", "sleep", "1000"]));
    ok(&f.ctr(&[
        "run",
        "-d",
        &f.image,
        "rst-r3",
        "sh",
        "-c",
        "sleep 1; exit 7",
    ]));
    let r2_socket = std::fs::read_to_string(f.bundle("rst-r2").join("address")).unwrap();
    let r2_socket = PathBuf::from(r2_socket.trim().trim_start_matches("unix://"));
    assert!(r2_socket.exists(), "{}", r2_socket.display());
    let mut child = f.berthd.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    for pid in shims_of(&f.berthd.socket(), "rst-r2") {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    f.berthd.restart();

    let rows = task_rows(&ok(&f.ctr(&["tasks", "ls"])));
    assert!(
        rows.contains(&("rst-r1".into(), "RUNNING".into())),
        "{rows:?}"
    );
    assert!(
        rows.contains(&("rst-r3".into(), "STOPPED".into())),
        "{rows:?}"
    );
    assert!(!rows.iter().any(|(t, _)| t == "rst-r2"), "{rows:?}");
    // The dead shim was cleaned up with `<shim> delete`: no bundle, and the log says so.
    assert!(!f.bundle("rst-r2").exists());
    assert!(
        f.berthd.log().contains("shim is gone"),
        "{}",
        f.berthd.log()
    );

    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(f.berthd.channel());
    let wait = |id: &str| {
        let mut tasks = TasksClient::new(channel.clone());
        let req = ns(WaitRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        rt.block_on(tasks.wait(req))
            .map(|r| r.into_inner().exit_status)
    };
    assert_eq!(wait("rst-r3").unwrap(), 7);
    ok(&f.ctr(&["tasks", "kill", "-s", "SIGKILL", "rst-r1"]));
    assert_eq!(wait("rst-r1").unwrap(), 137);
    let gone = wait("rst-r2").unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound, "{gone:?}");

    for id in ["rst-r1", "rst-r2", "rst-r3"] {
        let _ = f.ctr(&["tasks", "rm", id]);
        ok(&f.ctr(&["containers", "rm", id]));
        f.assert_clean(id);
    }
    for ctrl in ["pids", "memory", ""] {
        let cg = Path::new("/sys/fs/cgroup")
            .join(ctrl)
            .join("default/rst-r1");
        assert!(!cg.exists(), "cgroup {} left", cg.display());
    }
}

#[test]
fn runtimes_table_maps_runtime_names_to_shims() {
    let conf = tempfile::tempdir().unwrap();
    let path = conf.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"version = 2
[plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.mine.v1"]
  runtime_path = "{RUNC_SHIM}"
[plugins."io.containerd.runtime.v2.task".runtimes."io.containerd.alias.v1"]
  runtime_type = "io.containerd.runc.v2"
"#
        ),
    )
    .unwrap();
    let f = Fixture::with_args("table", &["--config", path.to_str().unwrap()]);
    for (id, runtime) in [
        ("tbl-path", "io.containerd.mine.v1"),
        ("tbl-type", "io.containerd.alias.v1"),
        ("tbl-abs", RUNC_SHIM),
    ] {
        let out = ok(&f.run(&["--runtime", runtime], id, &["echo", "hello", runtime]));
        assert_eq!(out.trim(), format!("hello {runtime}"));
        f.assert_clean(id);
    }
    // Without the table, a name that names no installed shim is refused before anything starts.
    let missing = fails(&f.run(
        &["--runtime", "io.containerd.mine.v2"],
        "tbl-none",
        &["true"],
    ));
    assert!(
        missing.contains("binary not installed \"containerd-shim-mine-v2\""),
        "{missing}"
    );
    f.assert_clean("tbl-none");
}

#[test]
fn containerds_go_client_runs_updates_and_deletes_a_task() {
    let f = Fixture::new("goclient");
    let prog = berth_tests::go_build("tasks", "berth-go-tasks");
    let out = Command::new(&prog)
        .arg(f.berthd.socket())
        .arg(&f.image)
        .arg("go-task")
        .output()
        .expect("run the Go program");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Go program failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "task created true",
        "task started",
        "task updated",
        "exec exit 4 out from-exec",
        // Update reached the cgroup: the shim's metrics (v1 or v2) show the new limit.
        "memory limit 67108864",
        "task exit 137",
        "deleted",
    ];
    assert_eq!(stdout.lines().collect::<Vec<_>>(), want, "{stdout}");
    f.assert_clean("go-task");
    assert_eq!(
        ok(&f.ctr(&["snapshots", "ls"])).lines().count(),
        4,
        "only the image's 3 layers remain"
    );
}

/// A daemon to compare with: its socket and a way to run ctr against it.
trait Daemon {
    fn ctr(&self, args: &[&str]) -> Output;
    fn socket(&self) -> PathBuf;
}

impl Daemon for Berthd {
    fn ctr(&self, args: &[&str]) -> Output {
        Berthd::ctr(self, args)
    }
    fn socket(&self) -> PathBuf {
        Berthd::socket(self)
    }
}

impl Daemon for Containerd {
    fn ctr(&self, args: &[&str]) -> Output {
        Containerd::ctr(self, args)
    }
    fn socket(&self) -> PathBuf {
        Containerd::socket(self)
    }
}

/// What a failing ctr said, from its last `: ` on (containerd's error class: `not found`,
/// `already exists`, `unknown`…), and its exit code.
fn failure_class(out: &Output) -> (Option<i32>, String) {
    let err = fails(out);
    let last = err
        .lines()
        .rev()
        .find(|l| l.starts_with("ctr: "))
        .unwrap_or("")
        .to_owned();
    (
        out.status.code(),
        last.rsplit(": ").next().unwrap_or("").to_owned(),
    )
}

/// `msg` as a request in the `default` namespace.
fn ns<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", "default".parse().unwrap());
    r
}

/// The gRPC answer to Tasks.Create for a container made with `spec` and no rootfs.
async fn create_with_spec(socket: &Path, id: &str, spec: &[u8]) -> tonic::Status {
    let channel = bctr::client::connect(&socket.display().to_string())
        .await
        .unwrap();
    let mut containers = ContainersClient::new(channel.clone());
    containers
        .create(ns(CreateContainerRequest {
            container: Some(Container {
                id: id.to_owned(),
                runtime: Some(berth_api::containers::container::Runtime {
                    name: "io.containerd.runc.v2".into(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: spec.to_vec(),
                }),
                ..Default::default()
            }),
        }))
        .await
        .unwrap();
    let mut tasks = TasksClient::new(channel);
    let err = tasks
        .create(ns(CreateTaskRequest {
            container_id: id.to_owned(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    let get = tasks
        .get(ns(GetRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(get.code(), tonic::Code::NotFound, "{get:?}");
    err
}

#[test]
fn bad_input_gets_containerd_codes_and_leaks_nothing() {
    let f = Fixture::new("bad");
    let containerd = Containerd::start();
    let dir = tempfile::tempdir().unwrap();
    let (_, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:bad");
    ok(&containerd.ctr(&["images", "import", archive.to_str().unwrap()]));
    let image = f.image.clone();

    // Each case on each daemon, with distinct ids (runc state is shared between them).
    let cases = |d: &dyn Daemon, tag: &str| -> Vec<(String, (Option<i32>, String))> {
        let id = |n: &str| format!("bad-{n}-{tag}");
        let mut got = Vec::new();
        let mut case = |name: &str, out: Output| got.push((name.to_owned(), failure_class(&out)));
        case(
            "unknown runtime",
            d.ctr(&[
                "run",
                "--rm",
                "--runtime",
                "io.containerd.nope.v9",
                &image,
                &id("rt"),
                "true",
            ]),
        );
        case(
            "missing executable",
            d.ctr(&["run", "--rm", &image, &id("exe"), "/no/such/program"]),
        );
        ok(&d.ctr(&["run", "-d", &image, &id("dup"), "sleep", "1000"]));
        case("duplicate task", d.ctr(&["tasks", "start", &id("dup")]));
        ok(&d.ctr(&["tasks", "exec", "--exec-id", "x", &id("dup"), "true"]));
        ok(&d.ctr(&["tasks", "kill", "-s", "SIGKILL", &id("dup")]));
        std::thread::sleep(Duration::from_millis(300));
        case("kill stopped", d.ctr(&["tasks", "kill", &id("dup")]));
        case(
            "exec in stopped",
            d.ctr(&["tasks", "exec", "--exec-id", "x", &id("dup"), "true"]),
        );
        ok(&d.ctr(&["tasks", "rm", &id("dup")]));
        case(
            "task of no container",
            d.ctr(&["tasks", "start", &id("none")]),
        );
        let _ = d.ctr(&["containers", "rm", &id("rt"), &id("exe"), &id("dup")]);
        got
    };
    let ours = cases(&f.berthd, "b");
    let theirs = cases(&containerd, "c");
    assert_eq!(ours, theirs);

    // Through the API: a spec that is not JSON, a container without a root file system.
    let spec_err = |d: &dyn Daemon, tag: &str| {
        let bad = f.block_on(create_with_spec(
            &d.socket(),
            &format!("bad-json-{tag}"),
            b"{not json",
        ));
        let empty = f.block_on(create_with_spec(
            &d.socket(),
            &format!("bad-rootfs-{tag}"),
            br#"{"ociVersion":"1.0.2","process":{"args":["/bin/true"],"cwd":"/"},"root":{"path":"rootfs"},"linux":{}}"#,
        ));
        (bad.code(), empty.code(), empty.message().to_owned())
    };
    // Same codes; the second message is the runtime's own (runc's and Berth's differ in words).
    let (ours, theirs) = (spec_err(&f.berthd, "b"), spec_err(&containerd, "c"));
    assert_eq!(
        (ours.0, ours.1),
        (theirs.0, theirs.1),
        "{ours:?} vs {theirs:?}"
    );
    assert!(
        ours.2.starts_with("failed to create shim task: ") && ours.2.contains("mount namespace"),
        "{ours:?}"
    );

    for n in ["rt", "exe", "dup", "json", "rootfs"] {
        f.assert_clean(&format!("bad-{n}-b"));
    }
    let bundles = f
        .berthd
        .state()
        .join("io.containerd.runtime.v2.task/default");
    let left: Vec<_> = std::fs::read_dir(&bundles)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "bundles left: {left:?}");
}
