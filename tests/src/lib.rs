//! Harness for the end-to-end tests: starts real `berthd` (and, for comparison, real `containerd`)
//! processes on temporary roots and sockets, and runs `ctr`/`bctr` against them.
//!
//! Binaries are taken from the cargo target directory next to the test executable, so run
//! `cargo build --workspace --bins` before `cargo test` (the README's test command does).
//! Prerequisites that are missing make a test fail with a message saying what to install; no test
//! passes by skipping.

pub mod fixtures;
pub mod grpc;
pub mod h2raw;
pub mod hostile;
pub mod registry;
pub mod replay;
pub mod streams;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// `target/<profile>/`, where cargo put berthd and bctr.
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // Tests run from target/<profile>/deps/<test>-<hash>; this crate's binaries (benchmarks)
    // from target/<profile>/<name>.
    let dir = exe.parent().expect("binary has a directory");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_owned()
    } else {
        dir.to_owned()
    }
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} not found: build the binaries first with `cargo build --workspace --bins`",
        p.display()
    );
    p
}

/// Fails the test unless running as root; say which test needs it.
pub fn require_root(what: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "{what} needs root (it binds sockets under /run-like dirs and starts containerd); run the tests as root"
    );
}

/// Fails the test unless `prog` is on PATH, naming the Debian package that provides it.
pub fn require_program(prog: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(prog);
        if p.is_file() {
            return p;
        }
    }
    panic!("`{prog}` is not installed: apt-get install {package} (the README's test command does this)");
}

/// Waits until something accepts connections on `sock`.
pub fn wait_for_socket(sock: &Path, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if std::os::unix::net::UnixStream::connect(sock).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "daemon exited ({status}) before serving {}:\n{}",
                sock.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "daemon did not serve {} within 20 s",
            sock.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A running berthd on its own temporary root, state and socket; stopped with SIGTERM on drop.
pub struct Berthd {
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub extra_args: Vec<String>,
    /// `--log-level`; tests log at debug, benchmarks at info (as containerd runs).
    pub log_level: &'static str,
}

impl Berthd {
    pub fn start() -> Berthd {
        Berthd::start_with(&[])
    }

    /// Starts berthd logging at `info`, as a production daemon (and the comparison containerd)
    /// runs: for benchmarks, where debug logging would be measured too.
    pub fn start_quiet() -> Berthd {
        Berthd::start_at(&[], "info")
    }

    /// Starts berthd with extra arguments (e.g. `--config <file>`).
    pub fn start_with(args: &[&str]) -> Berthd {
        Berthd::start_at(args, "debug")
    }

    fn start_at(args: &[&str], log_level: &'static str) -> Berthd {
        Berthd::start_prepared(args, log_level, |_| {})
    }

    /// Starts berthd after `prepare` has run on its (empty) temporary directory: for tests that
    /// mount something at `<dir>/root` first.
    pub fn start_after(prepare: impl FnOnce(&Path)) -> Berthd {
        Berthd::start_prepared(&[], "debug", prepare)
    }

    fn start_prepared(
        args: &[&str],
        log_level: &'static str,
        prepare: impl FnOnce(&Path),
    ) -> Berthd {
        let dir = tempfile::Builder::new()
            .prefix("berthd-test")
            .tempdir()
            .expect("tempdir");
        prepare(dir.path());
        let mut d = Berthd {
            dir,
            child: None,
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            log_level,
        };
        d.spawn();
        d
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("berthd.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("berthd.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The berthd command line this instance runs with, for tests that start a second one.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(bin("berthd"));
        cmd.arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.state())
            .arg("--address")
            .arg(self.socket())
            .arg("--log-level")
            .arg(self.log_level)
            .args(&self.extra_args);
        cmd
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.log_path()).expect("log file");
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd");
        wait_for_socket(&self.socket(), &mut child, &self.log_path());
        // The socket accepts connections from the moment berthd claims it, before its plugins
        // have started (clients just wait); a test that looks at the disk must wait until start-up
        // (and its repairs) is over, which berthd logs as it begins to serve.
        let deadline = Instant::now() + Duration::from_secs(20);
        let serving = |log: &str| log.contains("server: serving") || log.contains("\"serving\"");
        while !serving(&self.log()) {
            if let Ok(Some(status)) = child.try_wait() {
                panic!("berthd exited ({status}) during start-up:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "berthd did not start serving within 20 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        self.child = Some(child);
    }

    /// Stops with SIGTERM and returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("berthd is running");
        terminate(&mut child)
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
        self.spawn();
    }

    /// Runs `ctr --address <socket> args…`.
    pub fn ctr(&self, args: &[&str]) -> Output {
        run_client(&require_program("ctr", "containerd"), &self.socket(), args)
    }

    /// Runs `bctr --address <socket> args…`.
    pub fn bctr(&self, args: &[&str]) -> Output {
        run_client(&bin("bctr"), &self.socket(), args)
    }

    pub async fn channel(&self) -> tonic::transport::Channel {
        bctr::client::connect(&self.socket().display().to_string())
            .await
            .expect("connect to berthd")
    }
}

/// Kills and deletes every task a test left behind on the daemon at `socket` (bundles under
/// `state`): shims outlive their daemon, and a container must not keep running (or keep its root
/// file system mounted) inside a temporary directory that is about to be removed.
pub fn reap_tasks(state: &Path, socket: &Path) {
    let Ok(ctr) = which("ctr") else { return };
    {
        let bundles = state.join("io.containerd.runtime.v2.task");
        let dirs = |p: &Path| -> Vec<String> {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        };
        for ns in dirs(&bundles) {
            for id in dirs(&bundles.join(&ns)) {
                let _ = run_client(
                    &ctr,
                    socket,
                    &["-n", &ns, "tasks", "kill", "-a", "-s", "SIGKILL", &id],
                );
                let _ = run_client(
                    &ctr,
                    socket,
                    &["-n", &ns, "tasks", "delete", "--force", &id],
                );
            }
        }
    }
}

fn which(prog: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .ok_or(())
}

impl Drop for Berthd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            reap_tasks(&self.state(), &self.socket());
            terminate(&mut child);
        }
    }
}

/// SIGTERM, then SIGKILL if the process has not exited within 10 s.
pub fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn run_client(prog: &Path, sock: &Path, args: &[&str]) -> Output {
    Command::new(prog)
        .arg("--address")
        .arg(sock)
        .args(args)
        .env_remove("CONTAINERD_NAMESPACE")
        .env_remove("BERTH_ADDRESS")
        .env_remove("CONTAINERD_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", prog.display()))
}

/// A private containerd (Debian's package) on its own root and socket, for comparing answers.
/// Its start-up garbage collection is turned off (`startup_delay = "0s"`), as berthd's runs
/// before serving: otherwise it would race with a test's first, unreferenced, content.
pub struct Containerd {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    pub fn start() -> Containerd {
        Containerd::start_with("")
    }

    /// Starts containerd with `extra` appended to its config (e.g. `[proxy_plugins.x]`).
    pub fn start_with(extra: &str) -> Containerd {
        require_root("starting a real containerd");
        let bin = require_program("containerd", "containerd");
        let dir = tempfile::Builder::new()
            .prefix("containerd-test")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let config = format!(
            "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n\
             [plugins.\"io.containerd.gc.v1.scheduler\"]\n  startup_delay = \"0s\"\n",
            root = d.join("root").display(),
            state = d.join("state").display(),
            sock = d.join("containerd.sock").display(),
            opt = d.join("opt").display(),
        );
        std::fs::write(d.join("config.toml"), format!("{config}{extra}"))
            .expect("write containerd config");
        let log_path = d.join("containerd.log");
        let log = std::fs::File::create(&log_path).expect("log");
        // Berth's shim (`containerd-shim-berth-v1`, beside the test binaries) is found on PATH,
        // as containerd finds every shim.
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path =
            std::env::join_paths(std::iter::once(bin_dir()).chain(std::env::split_paths(&path)))
                .expect("PATH");
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(d.join("config.toml"))
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        wait_for_socket(&d.join("containerd.sock"), &mut child, &log_path);
        Containerd {
            dir,
            child: Some(child),
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        run_client(&require_program("ctr", "containerd"), &self.socket(), args)
    }

    pub fn bctr(&self, args: &[&str]) -> Output {
        run_client(&bin("bctr"), &self.socket(), args)
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            reap_tasks(&self.dir.path().join("state"), &self.socket());
            terminate(&mut child);
        }
    }
}

/// Runs `cmd` with `input` on its stdin (closed once written), collecting stdout and stderr.
/// The input is written from a thread, so a command that answers while it reads cannot block
/// on a full pipe; one that exits before reading it all says so through its status.
pub fn output_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("command output");
    let _ = writer.join();
    out
}

/// stdout of a command that must succeed.
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "command failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// stderr of a command that must fail.
pub fn fails(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "command should have failed:\nstdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `berthd snapshotter serve <name>`: one of Berth's snapshotters alone on a socket, for a
/// containerd or another berthd to use as a proxy plugin. Stopped with SIGTERM on drop.
pub struct SnapshotterServer {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
}

impl SnapshotterServer {
    pub fn start(name: &str) -> SnapshotterServer {
        let dir = tempfile::Builder::new()
            .prefix("berth-snapshotter")
            .tempdir()
            .expect("tempdir");
        let log_path = dir.path().join("log");
        let log = std::fs::File::create(&log_path).expect("log");
        let sock = dir.path().join("snapshotter.sock");
        let mut child = Command::new(bin("berthd"))
            .arg("--root")
            .arg(dir.path().join("root"))
            .args(["snapshotter", "serve", name, "--address"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("spawn berthd snapshotter serve");
        wait_for_socket(&sock, &mut child, &log_path);
        SnapshotterServer {
            dir,
            child: Some(child),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("snapshotter.sock")
    }

    /// Where the served driver keeps its snapshots.
    pub fn snapshots_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!(
            "root/io.containerd.snapshotter.v1.{name}/snapshots"
        ))
    }
}

impl Drop for SnapshotterServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child);
        }
    }
}

/// Builds the Go program in `tests/go/<dir>` offline, in GOPATH mode, against Debian's packaged
/// sources (containerd's Go client and its dependencies), into `target/go/<out>`.
pub fn go_build(dir: &str, out: &str) -> PathBuf {
    let go = require_program("go", "golang-go");
    assert!(
        Path::new("/usr/share/gocode/src/github.com/containerd/containerd").is_dir(),
        "containerd's Go sources are missing: apt-get install golang-github-containerd-containerd-dev \
         (the README's test command does this)"
    );
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let target = manifest.join("../target/go");
    let gopath = target.join("gopath");
    let src = gopath.join("src");
    std::fs::create_dir_all(&src).expect("gopath");
    let link = src.join(format!("berth{dir}"));
    if std::fs::symlink_metadata(&link).is_err() {
        std::os::unix::fs::symlink(manifest.join("go").join(dir), &link).expect("link sources");
    }
    let out = target.join(out);
    let build = Command::new(go)
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&link)
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("{}:/usr/share/gocode", gopath.display()))
        .env("GOCACHE", target.join("cache"))
        .env("GOFLAGS", "")
        .output()
        .expect("run go build");
    assert!(
        build.status.success(),
        "go build of tests/go/{dir} failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    out
}

/// Pids of the shims serving task `id` for the daemon at `socket` (any shim binary: Berth's,
/// runc's), found by their command lines.
pub fn shims_of(socket: &Path, id: &str) -> Vec<u32> {
    let socket = socket.display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let has = |k: &str, v: &str| args.windows(2).any(|w| w[0] == k && w[1] == v);
            (args.first()?.contains("containerd-shim")
                && has("-id", id)
                && has("-address", &socket))
            .then_some(pid)
        })
        .collect()
}

/// Runs the shell command `cmd` under `script`, which gives it a terminal of its own (so that
/// `ctr -t` has one to pass on to the container).
pub fn in_a_terminal(cmd: &str) -> Output {
    Command::new(require_program("script", "bsdutils"))
        .args(["-qec", cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("run script")
}

/// The virtualenv's python with `grpcio` from PyPI (scripts/test.sh makes it).
pub fn grpcio_python() -> PathBuf {
    let python = std::env::var_os("BERTH_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", "import grpc"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "{} cannot import grpc: create it with `python3 -m venv target/pyvenv && \
         target/pyvenv/bin/pip install grpcio` (scripts/test.sh does this)",
        python.display()
    );
    python
}
