//! A process's stdio. Output goes **straight** into the FIFOs the client made (or a `file://`
//! log): the container holds the write end itself, so no copy loop runs in the shim for it.
//! The shim keeps a read end of each output FIFO open (never read) so the container does not get
//! SIGPIPE when the client goes away and comes back, as containerd's shim does. Input goes through
//! a pipe fed by a small task, because only the FIFO's first writer tells a real end-of-input from
//! "no client yet". With a terminal, both directions are copied to and from the pty master.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use crate::error::{Error, Result};

/// The client's stdio as it sent it: paths (FIFOs), `file://` or `binary://` URIs, or empty.
/// With `binary://`, the process's output goes to a logging program the shim starts (containerd's
/// protocol: the program reads stdout on fd 3 and stderr on fd 4, and closes or writes fd 5 once
/// it is ready; `CONTAINER_ID` and `CONTAINER_NAMESPACE` in its environment).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// What the container process gets, and what the shim keeps.
#[derive(Debug)]
pub struct Prepared {
    /// Become fds 0, 1 and 2 of the process (when there is no terminal).
    pub child: [OwnedFd; 3],
    /// Held by the shim while the process lives.
    pub keep: Keep,
}

/// The shim's side of a process's stdio.
#[derive(Debug, Default)]
pub struct Keep {
    /// Read ends of the output FIFOs, never read: they keep a writer from getting EPIPE.
    _holders: Vec<File>,
    /// The stdin FIFO, copied into the process's pipe (or the pty) by a task.
    stdin_fifo: Option<File>,
    /// The write end of the process's stdin pipe (no terminal).
    stdin_pipe: Option<OwnedFd>,
    /// Output FIFO writers for the console copy (terminal only).
    console_out: Option<File>,
    /// Set once the console's output copy has finished (the last byte is in the FIFO).
    copied: Option<watch::Receiver<bool>>,
    /// Tells the stdin copy that the client closed its stdin (CloseIO).
    stdin_closed: Option<std::sync::Arc<tokio::sync::Notify>>,
    /// The pty master (terminal only), for resizes and the copies.
    console: Option<std::sync::Arc<AsyncFd<OwnedFd>>>,
}

fn io_err(action: &'static str, path: &str) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// Registers an owned descriptor with the runtime's reactor.
pub fn watch<T: AsRawFd>(inner: T) -> std::io::Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its descriptor and is moved into the AsyncFd, so the descriptor stays
    // open and the same for the AsyncFd's whole life, and `as_raw_fd` keeps returning it.
    unsafe { AsyncFd::register(inner) }.map_err(|e| e.into_parts().1)
}

fn devnull(write: bool) -> Result<OwnedFd> {
    OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(io_err("open", "/dev/null"))
}

/// Opens an output: a FIFO (a held reader first, then the writer the process gets) or a
/// `file://` log.
fn open_output(spec: &str, holders: &mut Vec<File>) -> Result<OwnedFd> {
    if spec.is_empty() {
        return devnull(true);
    }
    if let Some(path) = spec.strip_prefix("file://") {
        if let Some(dir) = Path::new(path).parent() {
            std::fs::create_dir_all(dir).map_err(io_err("create directory for", path))?;
        }
        return OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(OwnedFd::from)
            .map_err(io_err("open log file", path));
    }
    let path = spec.strip_prefix("fifo://").unwrap_or(spec);
    let holder = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    let writer = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))?;
    set_nonblocking(writer.as_raw_fd(), false)?;
    holders.push(holder);
    Ok(writer.into())
}

/// Sets or clears `O_NONBLOCK` on `fd`.
fn set_nonblocking(fd: RawFd, on: bool) -> Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    // SAFETY: `fd` is open for the whole call (the caller owns it).
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let flags = fcntl(borrowed, FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .and_then(|mut flags| {
            flags.set(OFlag::O_NONBLOCK, on);
            fcntl(borrowed, FcntlArg::F_SETFL(flags))
        });
    flags.map(drop).map_err(|e| Error::Io {
        action: "set O_NONBLOCK on",
        path: format!("fd {fd}"),
        source: e.into(),
    })
}

fn open_stdin_fifo(spec: &str) -> Result<File> {
    let path = spec.strip_prefix("fifo://").unwrap_or(spec);
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err("open", path))
}

impl StdioPaths {
    /// Opens everything before the process is made.
    pub fn prepare(&self, id: &str, namespace: &str) -> Result<Prepared> {
        let mut keep = Keep::default();
        if let Some(uri) = self.stdout.strip_prefix("binary://") {
            let (out, err) = start_logger(uri, id, namespace)?;
            let stdin = self.stdin_for_child(&mut keep)?;
            return Ok(Prepared {
                child: [stdin, out, err],
                keep,
            });
        }
        if self.terminal {
            // The process gets the pty; the FIFOs are the shim's, for the copy.
            if !self.stdin.is_empty() {
                keep.stdin_fifo = Some(open_stdin_fifo(&self.stdin)?);
            }
            if !self.stdout.is_empty() {
                let w = open_output(&self.stdout, &mut keep._holders)?;
                keep.console_out = Some(File::from(w));
            }
            return Ok(Prepared {
                child: [devnull(false)?, devnull(true)?, devnull(true)?],
                keep,
            });
        }
        let stdin = self.stdin_for_child(&mut keep)?;
        let stdout = open_output(&self.stdout, &mut keep._holders)?;
        let stderr = open_output(&self.stderr, &mut keep._holders)?;
        Ok(Prepared {
            child: [stdin, stdout, stderr],
            keep,
        })
    }
}

impl StdioPaths {
    /// The process's stdin: /dev/null, or a pipe the shim feeds from the client's FIFO.
    fn stdin_for_child(&self, keep: &mut Keep) -> Result<OwnedFd> {
        if self.stdin.is_empty() {
            return devnull(false);
        }
        keep.stdin_fifo = Some(open_stdin_fifo(&self.stdin)?);
        let (r, w) = pipe()?;
        keep.stdin_pipe = Some(w);
        Ok(r)
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::Io {
        action: "create a pipe",
        path: String::new(),
        source: e.into(),
    })
}

/// How long a logging program may take to say it is ready.
const LOGGER_READY: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the `binary://PATH?key=value&…` logging program (each query pair becomes two
/// arguments, as containerd passes them) and returns the write ends of the process's stdout and
/// stderr pipes once the program is ready.
fn start_logger(uri: &str, id: &str, namespace: &str) -> Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::process::CommandExt;
    let (path, query) = uri.split_once('?').unwrap_or((uri, ""));
    let mut cmd = std::process::Command::new(path);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        cmd.arg(k);
        if !v.is_empty() {
            cmd.arg(v);
        }
    }
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (ready_r, ready_w) = pipe()?;
    let fds = [out_r.as_raw_fd(), err_r.as_raw_fd(), ready_w.as_raw_fd()];
    cmd.env("CONTAINER_ID", id)
        .env("CONTAINER_NAMESPACE", namespace)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only fcntl and dup2 run between fork and exec, both async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Out of the way of 3..=5 first, then into place (dup2 clears close-on-exec).
            let mut high = [0; 3];
            for (i, fd) in fds.iter().enumerate() {
                high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                if high[i] < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (i, fd) in high.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| Error::Io {
        action: "start the logging program",
        path: path.to_owned(),
        source,
    })?;
    // The shim's reaper collects the program when it exits; only its readiness is awaited.
    drop((out_r, err_r, ready_w));
    let mut pfd = [nix::poll::PollFd::new(
        ready_r.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ready = nix::poll::poll(
        &mut pfd,
        nix::poll::PollTimeout::try_from(LOGGER_READY.as_millis() as i32)
            .unwrap_or(nix::poll::PollTimeout::MAX),
    )
    .unwrap_or(0);
    if ready == 0 {
        return Err(Error::Other(format!(
            "logging program {path} did not get ready within {}s",
            LOGGER_READY.as_secs()
        )));
    }
    Ok((out_w, err_w))
}

impl Keep {
    /// Starts the copies once the process exists: stdin FIFO → pipe (or pty), pty → stdout.
    pub fn start(&mut self, console: Option<OwnedFd>) -> Result<()> {
        let console = match console {
            Some(master) => {
                set_nonblocking(master.as_raw_fd(), true)?;
                Some(std::sync::Arc::new(watch(master).map_err(|e| {
                    Error::Io {
                        action: "watch the console",
                        path: String::new(),
                        source: e,
                    }
                })?))
            }
            None => None,
        };
        let stdin_target = match (&console, self.stdin_pipe.take()) {
            (Some(c), _) => Some(StdinTarget::Console(std::sync::Arc::clone(c))),
            (None, Some(pipe)) => {
                set_nonblocking(pipe.as_raw_fd(), true)?;
                Some(StdinTarget::Pipe(watch(pipe).map_err(|e| Error::Io {
                    action: "watch the stdin pipe",
                    path: String::new(),
                    source: e,
                })?))
            }
            (None, None) => None,
        };
        if let (Some(fifo), Some(target)) = (self.stdin_fifo.take(), stdin_target) {
            let fifo = watch(fifo).map_err(|e| Error::Io {
                action: "watch stdin",
                path: String::new(),
                source: e,
            })?;
            let closed = std::sync::Arc::new(tokio::sync::Notify::new());
            self.stdin_closed = Some(std::sync::Arc::clone(&closed));
            tokio::spawn(copy_stdin(fifo, target, closed));
        }
        if let Some(c) = console {
            let (tx, rx) = watch::channel(false);
            self.copied = Some(rx);
            let out = self.console_out.take();
            let reader = std::sync::Arc::clone(&c);
            tokio::spawn(async move {
                copy_console(&reader, out).await;
                let _ = tx.send(true);
            });
            self.console = Some(c);
        }
        Ok(())
    }

    /// The client closed its stdin: what it wrote before is still passed on, then the process
    /// sees end-of-input.
    pub fn close_stdin(&mut self) {
        if let Some(closed) = self.stdin_closed.take() {
            closed.notify_one();
        }
        self.stdin_pipe = None;
        self.stdin_fifo = None;
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(c) = &self.console else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize through the pointer, valid for the call.
        let rc = unsafe { libc::ioctl(c.get_ref().as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(Error::Io {
                action: "resize the console",
                path: String::new(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// Waits (bounded) until the console's output is all in the FIFO.
    pub async fn drained(&self) {
        if let Some(mut rx) = self.copied.clone() {
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), rx.wait_for(|d| *d)).await;
        }
    }
}

enum StdinTarget {
    Pipe(AsyncFd<OwnedFd>),
    Console(std::sync::Arc<AsyncFd<OwnedFd>>),
}

impl StdinTarget {
    fn fd(&self) -> &AsyncFd<OwnedFd> {
        match self {
            StdinTarget::Pipe(p) => p,
            StdinTarget::Console(c) => c,
        }
    }
}

/// Copies the client's stdin FIFO into the process until the FIFO ends or the client says it
/// closed its stdin (then what is already in the FIFO is still copied).
async fn copy_stdin(
    fifo: AsyncFd<File>,
    target: StdinTarget,
    closed: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut closing = false;
    loop {
        let read = if closing {
            // Only what is there now (the FIFO is non-blocking): EAGAIN means it is drained.
            nix::unistd::read(fifo.get_ref().as_fd(), &mut buf).map_err(std::io::Error::from)
        } else {
            tokio::select! {
                r = read_async(&fifo, &mut buf) => r,
                () = closed.notified() => {
                    closing = true;
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if write_all_async(target.fd(), &buf[..n]).await.is_err() {
            break;
        }
    }
    // End of input: the pipe's write end closes with `target`; a console gets ^D.
    if let StdinTarget::Console(c) = &target {
        let _ = write_all_async(c, &[4]).await;
    }
}

async fn copy_console(console: &AsyncFd<OwnedFd>, out: Option<File>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // EIO: every slave descriptor is closed — the process and its children are gone.
        let n = match read_async(console, &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(f) = &out {
            if std::io::Write::write_all(&mut &*f, &buf[..n]).is_err() {
                // Nobody reads any more; keep draining the console so the process never blocks.
                continue;
            }
        }
    }
}

async fn read_async<T: AsFd + AsRawFd>(fd: &AsyncFd<T>, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| {
            nix::unistd::read(inner.get_ref().as_fd(), buf).map_err(std::io::Error::from)
        }) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all_async<T: AsFd + AsRawFd>(
    fd: &AsyncFd<T>,
    mut data: &[u8],
) -> std::io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| {
            nix::unistd::write(inner.get_ref().as_fd(), data).map_err(std::io::Error::from)
        }) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}
