//! The three ways the binary runs: `start` (make the server, print its address), the server
//! itself, and `delete` (clean up after a server that is gone).

use std::io::{Read, Write};
use std::os::fd::{IntoRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::args::Args;
use crate::error::{Error, Result};
use crate::log::{debug, warning};
use crate::publish::{now, Publisher};
use crate::task::Shim;

/// How long the shim waits after a request before it gives its start-up memory back.
const IDLE: std::time::Duration = std::time::Duration::from_millis(300);

/// Where sockets of shims live, as for containerd's own shims.
const SOCKET_DIR: &str = "/run/containerd/s";

fn io(action: &'static str, path: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// containerd's rule: `unix:///run/containerd/s/<sha256 of address/namespace/id>`.
fn socket_path(args: &Args) -> PathBuf {
    let key = Path::new(&args.address)
        .join(&args.namespace)
        .join(&args.id);
    let digest = Sha256::digest(key.as_os_str().as_encoded_bytes());
    Path::new(SOCKET_DIR).join(hex::encode(digest))
}

pub fn start(args: &Args) -> Result<()> {
    // The daemon writes the runtime options to stdin; they carry nothing this shim uses yet,
    // but they are read so the writer never sees a closed pipe.
    let mut options = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut options);
    let cwd = std::env::current_dir().map_err(io("read", "the current directory"))?;
    let path = socket_path(args);
    std::fs::create_dir_all(SOCKET_DIR).map_err(io("create", SOCKET_DIR))?;
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(Error::AlreadyExists(format!(
                "{}: a shim already serves {}",
                args.id,
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener =
        UnixListener::bind(&path).map_err(io("listen on", path.display().to_string()))?;
    // The server is this process forked, not a new exec of the binary: the start path is on
    // every container's critical path, and the image is already loaded. This process is still
    // single-threaded here (no runtime yet), so the child may run anything.
    // SAFETY: single-threaded at this point; the child either serves and exits or exits.
    let child = match unsafe { nix::unistd::fork() } {
        Err(e) => {
            return Err(Error::Io {
                action: "fork",
                path: "the shim server".into(),
                source: e.into(),
            })
        }
        Ok(nix::unistd::ForkResult::Child) => {
            let code = match become_server(args, listener) {
                Ok(()) => 0,
                Err(e) => {
                    crate::log::write("error", format_args!("shim server: {e}"));
                    1
                }
            };
            std::process::exit(code);
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => child,
    };
    adjust_oom_score(child.as_raw())?;
    let address = format!("unix://{}", path.display());
    std::fs::write(cwd.join("address"), &address).map_err(io("write", "address"))?;
    std::fs::write(cwd.join("shim.pid"), child.as_raw().to_string())
        .map_err(io("write", "shim.pid"))?;
    let mut out = std::io::stdout();
    out.write_all(address.as_bytes())
        .and_then(|()| out.flush())
        .map_err(io("print", "the address"))?;
    Ok(())
}

/// containerd's `AdjustOOMScore`: the server gets one more than the daemon that runs `start`,
/// so under memory pressure the kernel takes a shim before the daemon; the containers inherit
/// it unless their spec sets a score. Raising a score needs no privilege.
fn adjust_oom_score(server: i32) -> Result<()> {
    let daemon = format!(
        "/proc/{}/oom_score_adj",
        std::os::unix::process::parent_id()
    );
    let score: i32 = std::fs::read_to_string(&daemon)
        .map_err(io("read", daemon.as_str()))?
        .trim()
        .parse()
        .map_err(|_| Error::Io {
            action: "parse",
            path: daemon.clone(),
            source: std::io::ErrorKind::InvalidData.into(),
        })?;
    let path = format!("/proc/{server}/oom_score_adj");
    std::fs::write(&path, (score + 1).min(1000).to_string()).map_err(io("write", path.as_str()))
}

/// In the forked child of `start`: detach from the caller (own session, stdio to /dev/null so
/// the caller's pipes see end-of-file when `start` exits), serve on the listener.
fn become_server(args: &Args, listener: UnixListener) -> Result<()> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(io("open", "/dev/null"))?;
    for fd in 0..3 {
        // SAFETY: replaces this process's stdio descriptors 0–2, which nothing holds as an
        // owned fd; the returned descriptor is the same number, not a new owner.
        unsafe { nix::unistd::dup2_raw(&devnull, fd) }
            .map(std::mem::forget)
            .map_err(|e| io("redirect", "stdio")(e.into()))?;
    }
    nix::unistd::setsid().map_err(|e| io("start", "a session")(e.into()))?;
    serve(args, listener.into())
}

/// Serves the task API on `listener` (fd 3 when containerd or a script starts the binary with
/// no action; the listener `start` made when it forked).
pub fn serve(args: &Args, listener: OwnedFd) -> Result<()> {
    crate::log::open_fifo(args.debug);
    // Orphans of the container (its daemons, the children of exec'd processes) become ours to
    // reap; so does the container process itself, whose parent exits while it is made.
    // SAFETY: prctl with plain integers.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        warning!("not a child subreaper: {}", std::io::Error::last_os_error());
    }
    // One thread, no blocking pool: containers are forked from this process, which is only
    // safe single-threaded — and a thread is memory the shim does not need.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(io("start", "the runtime"))?;
    rt.block_on(run(args, listener))
}

async fn run(args: &Args, listener: OwnedFd) -> Result<()> {
    let bundle = std::env::current_dir().map_err(io("read", "the current directory"))?;
    let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        .map_err(io("watch", "SIGCHLD"))?;
    let publisher = Publisher::start(std::env::var("TTRPC_ADDRESS").ok(), args.namespace.clone());
    let shim = Arc::new(Shim::new(
        args.namespace.clone(),
        args.id.clone(),
        bundle.clone(),
        publisher,
    ));
    let reaper = Arc::clone(&shim);
    tokio::spawn(async move {
        while sigchld.recv().await.is_some() {
            reap(&reaper);
        }
    });
    // SAFETY: `listener` is an owned, listening unix socket; its ownership passes to the server
    // here (into_raw_fd), and nothing else uses the descriptor.
    let server = unsafe { ttrpc::r#async::Server::new().add_unix_listener(listener.into_raw_fd()) };
    let mut server = server
        .map_err(|e| Error::Io {
            action: "serve",
            path: "the shim socket".into(),
            source: std::io::Error::other(e.to_string()),
        })?
        .register_service(crate::service::task_service(
            Arc::clone(&shim),
            berth_idle_trim::Trimmer::start(IDLE),
        ));
    server.start().await.map_err(|e| Error::Io {
        action: "serve",
        path: "fd 3".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    debug!("serving {}", args.id);
    shim.exit.notified().await;
    // Let the Shutdown answer go out before the connection closes.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let _ = server.shutdown().await;
    if let Ok(address) = std::fs::read_to_string(bundle.join("address")) {
        if let Some(path) = address.trim().strip_prefix("unix://") {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

/// Collects every exited child and reports it (128 + signal for a killed one, as a shell does).
fn reap(shim: &Shim) {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => shim.reaped(pid.as_raw(), code as u32),
            Ok(WaitStatus::Signaled(pid, sig, _)) => shim.reaped(pid.as_raw(), 128 + sig as u32),
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Cleans up after a shim server that is gone: the container's processes, cgroup and rootfs
/// mount; prints the DeleteResponse containerd expects (SIGKILL's 137, now).
pub fn delete(args: &Args) -> Result<()> {
    let bundle = if args.bundle.is_empty() {
        std::env::current_dir().map_err(io("read", "the current directory"))?
    } else {
        PathBuf::from(&args.bundle)
    };
    let pid = crate::initpid::recorded(&bundle);
    // Only if the pid still names the container's init (it may have been reused since).
    crate::initpid::kill_recorded(&bundle);
    if let Ok(spec) = crate::task::load_spec(&bundle.join("config.json")) {
        let path = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| format!("/{}/{}", args.namespace, args.id));
        if let Ok(h) = berth_cgroups::Hierarchy::detect() {
            if let Ok(cg) = berth_cgroups::Cgroup::open(&h, &path) {
                let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
                if let Err(e) = cg.delete() {
                    eprintln!("remove cgroup {path}: {e}");
                }
            }
        }
    }
    let rootfs = bundle.join("rootfs");
    if rootfs.exists() {
        if let Err(e) = berth_mount::unmount_recursive(&rootfs) {
            eprintln!("unmount {}: {e}", rootfs.display());
        }
    }
    let resp = berth_shim::proto::task::DeleteResponse {
        pid: pid.max(0) as u32,
        exit_status: 137,
        exited_at: Some(now()),
    };
    let mut out = std::io::stdout();
    out.write_all(&resp.encode_to_vec())
        .and_then(|()| out.flush())
        .map_err(io("print", "the delete response"))?;
    Ok(())
}
