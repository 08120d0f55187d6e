//! The conformance suite against the `dir-snapshotter` binary, through the driver berthd uses for
//! `[proxy_plugins]` (`berth_snapshotter_proxy::ProxySnapshotter`): every case talks gRPC to a
//! server process of its own, started on the case's root. Dropping the driver kills that process
//! with SIGKILL, so the crash case restarts the server after a real crash.
//!
//! The cases that mount need root and panic without it (they never pass by skipping); `cp` must
//! be on `PATH`.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use berth_snapshotter::{Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, Usage};
use berth_snapshotter_proxy::ProxySnapshotter;

const SERVER: &str = env!("CARGO_BIN_EXE_dir-snapshotter");

/// The runtime the proxy drivers' calls run on (multi-threaded: the test threads block on its
/// handle, and only its own workers drive the sockets then).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("build the tokio runtime")
    })
}

/// A running `dir-snapshotter` and its log.
struct Server {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Server {
    /// Starts the server on `root`, with its socket and log beside `root`, and waits until it
    /// accepts connections.
    fn start(root: &Path) -> Server {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let socket = root.with_file_name(format!("dir-snapshotter-{n}.sock"));
        let log = root.with_file_name(format!("dir-snapshotter-{n}.log"));
        let out = File::create(&log).expect("create the server's log");
        let child = Command::new(SERVER)
            .arg(root)
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup the log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("start {SERVER}: {e}"));
        let mut server = Server { child, socket, log };
        server.wait_ready();
        server
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "dir-snapshotter exited ({status}) before serving: {}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "dir-snapshotter not serving on {} after 30s: {}",
                self.socket.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The proxy driver berthd would make for `[proxy_plugins.dir] address = <socket>` (made
    /// inside the runtime, as berthd makes it: its channel starts a task there).
    fn proxy(&self) -> ProxySnapshotter {
        let address = self.socket.to_str().expect("a UTF-8 socket path");
        let _in_runtime = runtime().enter();
        ProxySnapshotter::new("dir", address, runtime().handle().clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy driver and the server behind it, which goes (SIGKILL) when the driver is dropped.
struct Served {
    proxy: ProxySnapshotter,
    _server: Server,
}

impl Snapshotter for Served {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.proxy.stat(key)
    }
    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.proxy.update(info, paths)
    }
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        self.proxy.usage(key)
    }
    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        self.proxy.mounts(key)
    }
    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        self.proxy.create(kind, key, parent, labels)
    }
    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        self.proxy.commit(name, key, labels)
    }
    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.proxy.remove(key)
    }
    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.proxy.walk(f)
    }
    fn cleanup(&self) -> Result<(), SnapshotError> {
        self.proxy.cleanup()
    }
    fn close(&self) -> Result<(), SnapshotError> {
        self.proxy.close()
    }
}

fn make(root: &Path) -> Box<dyn Snapshotter> {
    let server = Server::start(root);
    Box::new(Served {
        proxy: server.proxy(),
        _server: server,
    })
}

mod conformance {
    // The snapshots are `<root>/snapshots/<id>` (SnapshotDirs), the suite's default, and full
    // copies can rename anything: no quirks.
    berth_snapshotter_testsuite::conformance_tests!(super::make);
}

/// SIGTERM stops the server cleanly: it exits 0, removes its socket and closes its metadata
/// file (which another process can then open, and which holds what was made). No mounts, so no
/// root needed.
#[test]
fn sigterm_closes_the_metadata_and_removes_the_socket() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let root = tmp.path().join("root");
    std::fs::create_dir(&root).expect("create the root");
    let mut server = Server::start(&root);
    let proxy = server.proxy();
    proxy.prepare("a", "", BTreeMap::new()).expect("prepare a");
    proxy
        .commit("A", "a", BTreeMap::new())
        .expect("commit a as A");
    proxy.view("v", "A", BTreeMap::new()).expect("view v of A");

    let pid =
        nix::unistd::Pid::from_raw(i32::try_from(server.child.id()).expect("a pid fits in pid_t"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    let status = server.child.wait().expect("wait for dir-snapshotter");
    assert!(status.success(), "exit {status}: {}", server.log_text());
    assert!(!server.socket.exists(), "the socket is removed on SIGTERM");

    let ms = MetaStore::open(&root.join("metadata.redb"))
        .expect("the metadata file is closed and unlocked");
    let (_, info, _) = ms.get_info("A").expect("A is recorded");
    assert_eq!(info.kind(), Kind::Committed);
    let (id, info, _) = ms.get_info("v").expect("v is recorded");
    assert_eq!((info.kind(), info.parent.as_str()), (Kind::View, "A"));
    assert!(root.join("snapshots").join(id).is_dir());
}
