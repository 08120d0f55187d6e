//! A process's standard streams, as containerd's `cio` gives them: the client makes FIFOs in a
//! fresh directory (`<dir>/<id>-stdin`, `-stdout`, `-stderr`), passes their paths in the create or
//! exec request, and copies between them and its own stdin/stdout/stderr while the shim holds the
//! other ends. With a terminal there is no stderr FIFO (the pty merges it into stdout).
//!
//! The copies are plain threads doing blocking reads and writes, so a process's exit never waits
//! on them: a read of our stdin that never returns is simply abandoned when bctr exits. Until the
//! shim has opened its side, bctr holds a write end of each output FIFO itself, or its reader
//! would see end-of-file at once; [`Io::release`] lets go once the process has started.
//!
//! Also here: forwarding bctr's signals to the process (ctr's `--sig-proxy` behaviour), the local
//! terminal in raw mode, and the terminal's size passed on at start and on every SIGWINCH.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use berth_api::tasks::{tasks_client::TasksClient, CloseIoRequest, KillRequest, ResizePtyRequest};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::sys::termios::{self, SetArg, Termios};
use tokio::sync::oneshot;
use tonic::Code;

use super::{CmdError, Ctx};

/// Where bctr makes its FIFO directories unless `--fifo-dir` says otherwise (ctr uses
/// `/run/containerd/fifo`).
pub const DEFAULT_FIFO_DIR: &str = "/run/berth/fifo";

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> CmdError {
    move |e| CmdError::Failed(format!("{what}: {e}"))
}

/// The FIFO paths of one process; empty for a stream it does not have.
#[derive(Debug, Clone, Default)]
pub struct Fifos {
    /// The directory bctr made for them, removed by [`Fifos::remove`]; `None` for FIFOs found
    /// on a running task (`attach`).
    pub dir: Option<PathBuf>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

impl Fifos {
    /// Makes a new directory under `root` and the FIFOs of process `id` in it.
    pub fn create(root: &Path, id: &str, terminal: bool) -> Result<Fifos, CmdError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(io_err(format!("failed to create {}", root.display())))?;
        let dir = nix::unistd::mkdtemp(&root.join("XXXXXX")).map_err(|e| {
            CmdError::Failed(format!(
                "failed to create a FIFO directory in {}: {e}",
                root.display()
            ))
        })?;
        let path = |s: &str| dir.join(format!("{id}-{s}")).display().to_string();
        let mut fifos = Fifos {
            dir: Some(dir.clone()),
            stdin: path("stdin"),
            stdout: path("stdout"),
            stderr: if terminal {
                String::new()
            } else {
                path("stderr")
            },
            terminal,
        };
        for p in [&fifos.stdin, &fifos.stdout, &fifos.stderr] {
            if p.is_empty() {
                continue;
            }
            if let Err(e) = nix::unistd::mkfifo(Path::new(p), Mode::from_bits_truncate(0o700)) {
                fifos.remove();
                return Err(CmdError::Failed(format!("failed to create fifo {p}: {e}")));
            }
        }
        // Make sure the directory is not left behind by a failure before `remove`.
        fifos.dir = Some(dir);
        Ok(fifos)
    }

    /// Removes the FIFO directory bctr made (nothing for FIFOs it found).
    pub fn remove(&self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Removes the FIFOs of a task bctr no longer attaches to (`tasks rm`): the files, and their
/// directory when that is then empty.
pub fn remove_fifo_paths(paths: &[&str]) {
    let mut dirs = Vec::new();
    for p in paths.iter().filter(|p| !p.is_empty()) {
        let path = Path::new(p);
        if std::fs::symlink_metadata(path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_fifo()
        }) {
            let _ = std::fs::remove_file(path);
            if let Some(d) = path.parent() {
                dirs.push(d.to_owned());
            }
        }
    }
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// The client's side of a process's FIFOs while it runs.
pub struct Io {
    holders: Vec<File>,
    outputs: Vec<oneshot::Receiver<()>>,
    /// Fires at the end of our stdin with bctr's end of the stdin FIFO, which stays open until
    /// the process has started: a FIFO that nobody holds open loses what was written to it.
    stdin_eof: Option<oneshot::Receiver<File>>,
}

/// A non-blocking open, then blocking I/O: opening a FIFO's read end this way does not wait for
/// a writer.
fn open_fifo(path: &str, write: bool) -> Result<File, CmdError> {
    let mut o = OpenOptions::new();
    if write {
        o.write(true);
    } else {
        o.read(true);
    }
    let f = o
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(io_err(format!("failed to open fifo {path}")))?;
    Ok(f)
}

fn set_blocking(f: &File, path: &str) -> Result<(), CmdError> {
    let flags = fcntl(f.as_fd(), FcntlArg::F_GETFL)
        .map_err(|e| CmdError::Failed(format!("fifo {path}: {e}")))?;
    let mut flags = OFlag::from_bits_truncate(flags);
    flags.remove(OFlag::O_NONBLOCK);
    fcntl(f.as_fd(), FcntlArg::F_SETFL(flags))
        .map_err(|e| CmdError::Failed(format!("fifo {path}: {e}")))?;
    Ok(())
}

fn copy_out(mut from: File, to_stderr: bool, done: oneshot::Sender<()>) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let wrote = if to_stderr {
                        let mut e = std::io::stderr().lock();
                        e.write_all(&buf[..n]).and_then(|()| e.flush())
                    } else {
                        let mut o = std::io::stdout().lock();
                        o.write_all(&buf[..n]).and_then(|()| o.flush())
                    };
                    if wrote.is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let _ = done.send(());
    });
}

impl Io {
    /// Opens our ends of `fifos` and starts copying: stdin to the process (when `stdin`), the
    /// process's stdout and stderr to ours.
    pub fn attach(fifos: &Fifos, stdin: bool) -> Result<Io, CmdError> {
        let mut io = Io {
            holders: Vec::new(),
            outputs: Vec::new(),
            stdin_eof: None,
        };
        for (path, to_stderr) in [(&fifos.stdout, false), (&fifos.stderr, true)] {
            if path.is_empty() {
                continue;
            }
            let reader = open_fifo(path, false)?;
            io.holders.push(open_fifo(path, true)?);
            set_blocking(&reader, path)?;
            let (tx, rx) = oneshot::channel();
            copy_out(reader, to_stderr, tx);
            io.outputs.push(rx);
        }
        if stdin && !fifos.stdin.is_empty() {
            // Read-write, so the open never waits for (or fails without) the shim's reader.
            let mut w = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifos.stdin)
                .map_err(io_err(format!("failed to open fifo {}", fifos.stdin)))?;
            let (tx, rx) = oneshot::channel();
            std::thread::spawn(move || {
                let mut input = std::io::stdin();
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            if w.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        Err(_) => break,
                    }
                }
                let _ = tx.send(w);
            });
            io.stdin_eof = Some(rx);
        }
        Ok(io)
    }

    /// Lets go of the write ends bctr held on the output FIFOs: once the process has started, the
    /// shim holds its own, and the copies end when it closes them.
    pub fn release(&mut self) {
        self.holders.clear();
    }

    /// When our stdin ends, closes the process's stdin (`CloseIO`), as ctr's stdin closer does.
    pub fn close_stdin_on_eof(&mut self, ctx: &Ctx, id: &str, exec_id: &str) {
        let Some(eof) = self.stdin_eof.take() else {
            return;
        };
        let (ctx, id, exec_id) = (ctx.clone(), id.to_owned(), exec_id.to_owned());
        tokio::spawn(async move {
            if let Ok(fifo) = eof.await {
                drop(fifo);
                let _ = TasksClient::new(ctx.channel.clone())
                    .close_io(ctx.request(CloseIoRequest {
                        container_id: id,
                        exec_id,
                        stdin: true,
                    }))
                    .await;
            }
        });
    }

    /// Waits until everything the process wrote has been copied out.
    pub async fn wait(mut self) {
        self.release();
        for rx in self.outputs.drain(..) {
            let _ = rx.await;
        }
    }
}

/// The signals bctr passes on to the process it runs: every one it can catch, as ctr's
/// `ForwardAllSignals` (SIGURG, used by Go's runtime, SIGCHLD and SIGPIPE, which bctr's own
/// writes to a closed pipe would raise, are not among them).
const FORWARDED: [nix::libc::c_int; 18] = [
    nix::libc::SIGHUP,
    nix::libc::SIGINT,
    nix::libc::SIGQUIT,
    nix::libc::SIGABRT,
    nix::libc::SIGUSR1,
    nix::libc::SIGUSR2,
    nix::libc::SIGALRM,
    nix::libc::SIGTERM,
    nix::libc::SIGCONT,
    nix::libc::SIGTSTP,
    nix::libc::SIGTTIN,
    nix::libc::SIGTTOU,
    nix::libc::SIGXCPU,
    nix::libc::SIGXFSZ,
    nix::libc::SIGVTALRM,
    nix::libc::SIGPROF,
    nix::libc::SIGIO,
    nix::libc::SIGPWR,
];

/// Forwards the signals bctr receives to process `exec_id` (empty: the init process) of task
/// `id`, until the task is gone. The returned handles stop forwarding when aborted.
pub fn forward_signals(ctx: &Ctx, id: &str, exec_id: &str) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut handles = Vec::new();
    for sig in FORWARDED {
        let Ok(mut stream) = signal(SignalKind::from_raw(sig)) else {
            continue;
        };
        let (ctx, id, exec_id) = (ctx.clone(), id.to_owned(), exec_id.to_owned());
        handles.push(tokio::spawn(async move {
            while stream.recv().await.is_some() {
                let r = TasksClient::new(ctx.channel.clone())
                    .kill(ctx.request(KillRequest {
                        container_id: id.clone(),
                        exec_id: exec_id.clone(),
                        signal: sig as u32,
                        all: false,
                    }))
                    .await;
                match r {
                    Err(s) if s.code() == Code::NotFound => return,
                    Err(s) => eprintln!("bctr: forward signal {sig}: {}", s.message()),
                    Ok(_) => {}
                }
            }
        }));
    }
    handles
}

nix::ioctl_read_bad!(tiocgwinsz, nix::libc::TIOCGWINSZ, nix::libc::winsize);

/// The local terminal in raw mode until dropped (containerd's `console.SetRaw` / `Reset`).
pub struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    pub fn enable() -> Result<RawTerminal, CmdError> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())
            .map_err(|_| CmdError::Failed("provided file is not a console".into()))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw)
            .map_err(|e| CmdError::Failed(format!("failed to set the terminal raw: {e}")))?;
        Ok(RawTerminal { saved })
    }

    /// The terminal's size, `(width, height)`.
    pub fn size() -> Option<(u32, u32)> {
        let mut ws = nix::libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live,
        // properly aligned local; `fd` is our stdin, open for the whole call.
        unsafe { tiocgwinsz(fd, &mut ws) }.ok()?;
        Some((u32::from(ws.ws_col), u32::from(ws.ws_row)))
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// Awaits `waiter` (the process's Wait) while keeping the process attached as ctr does: with a
/// terminal, its pty follows our window size; without, our signals are forwarded to it. The
/// helpers stop when the wait ends.
pub async fn wait_attached<T>(
    ctx: &Ctx,
    id: &str,
    exec_id: &str,
    terminal: bool,
    waiter: tokio::task::JoinHandle<T>,
) -> Result<T, tokio::task::JoinError> {
    let helpers: Vec<tokio::task::JoinHandle<()>> = if terminal {
        handle_resize(ctx, id, exec_id).await.into_iter().collect()
    } else {
        forward_signals(ctx, id, exec_id)
    };
    let status = waiter.await;
    for h in helpers {
        h.abort();
    }
    status
}

/// ctr's `HandleConsoleResize`: the terminal's size now, and again on every SIGWINCH.
pub async fn handle_resize(
    ctx: &Ctx,
    id: &str,
    exec_id: &str,
) -> Option<tokio::task::JoinHandle<()>> {
    async fn resize(ctx: &Ctx, id: &str, exec_id: &str) {
        let Some((width, height)) = RawTerminal::size() else {
            return;
        };
        if let Err(s) = TasksClient::new(ctx.channel.clone())
            .resize_pty(ctx.request(ResizePtyRequest {
                container_id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                width,
                height,
            }))
            .await
        {
            eprintln!("bctr: resize pty: {}", s.message());
        }
    }
    resize(ctx, id, exec_id).await;
    let mut winch =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()?;
    let (ctx, id, exec_id) = (ctx.clone(), id.to_owned(), exec_id.to_owned());
    Some(tokio::spawn(async move {
        while winch.recv().await.is_some() {
            resize(&ctx, &id, &exec_id).await;
        }
    }))
}
