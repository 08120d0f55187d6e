//! One task: its shim connection, its bundle, and what berthd knows when the shim is gone.

use std::sync::Mutex;
use std::time::Duration;

use berth_shim::proto::task as pb;
use berth_shim::{ShimCommand, TaskClient};
use tokio::io::AsyncBufReadExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::bundle::{self, Bundle};
use crate::error::{io, Result};
use crate::lock;

/// How a task's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: u32,
    pub status: u32,
    /// Nanoseconds since the Unix epoch.
    pub exited_at: i64,
}

/// The exit reported when nobody knows how a task ended (containerd's 255).
pub(crate) const UNKNOWN_EXIT: Exit = Exit {
    pid: 0,
    status: 255,
    exited_at: 0,
};

fn nanos(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    })
}

impl Exit {
    pub(crate) fn from_delete(resp: &pb::DeleteResponse) -> Exit {
        Exit {
            pid: resp.pid,
            status: resp.exit_status,
            exited_at: nanos(resp.exited_at.as_ref()),
        }
    }

    pub(crate) fn now(self) -> Exit {
        Exit {
            exited_at: berth_events::now_nanos(),
            ..self
        }
    }
}

pub struct Task {
    pub namespace: String,
    pub id: String,
    /// The runtime name the task was created with (after a restart: the shim binary's path).
    pub runtime: String,
    pub(crate) bundle: Bundle,
    client: Option<TaskClient>,
    pub(crate) command: ShimCommand,
    /// The shim's process, as the shim's Connect reported it (or its `shim.pid` file).
    shim_pid: Option<i32>,
    /// Set once the shim is gone, with the exit berthd reports for the task.
    gone: watch::Sender<Option<Exit>>,
    log: JoinHandle<()>,
    watcher: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .field("bundle", &self.bundle.path)
            .finish()
    }
}

/// The pid a shim wrote to `shim.pid` at start, if it did.
pub(crate) fn recorded_shim_pid(bundle: &Bundle) -> Option<i32> {
    bundle
        .read(bundle::SHIM_PID)
        .ok()
        .flatten()
        .and_then(|s| s.parse().ok())
        .and_then(shim_pid)
}

/// A shim's pid as Connect reports it (0 when a shim does not say).
pub(crate) fn shim_pid(reported: u32) -> Option<i32> {
    i32::try_from(reported).ok().filter(|&p| p > 0)
}

impl Task {
    pub(crate) fn new(
        runtime: &str,
        bundle: Bundle,
        client: TaskClient,
        command: ShimCommand,
        shim_pid: Option<i32>,
        log: JoinHandle<()>,
    ) -> Task {
        Task {
            namespace: bundle.namespace.clone(),
            id: bundle.id.clone(),
            runtime: runtime.to_owned(),
            bundle,
            client: Some(client),
            command,
            shim_pid,
            gone: watch::channel(None).0,
            log,
            watcher: Mutex::new(None),
        }
    }

    /// A task found on disk whose shim cannot be reached; only cleaned up.
    pub(crate) fn orphan(bundle: Bundle, command: ShimCommand, log: JoinHandle<()>) -> Task {
        Task {
            namespace: bundle.namespace.clone(),
            id: bundle.id.clone(),
            runtime: String::new(),
            bundle,
            client: None,
            command,
            shim_pid: None,
            gone: watch::channel(None).0,
            log,
            watcher: Mutex::new(None),
        }
    }

    /// The shim's task API, for the calls that pass straight through.
    ///
    /// # Panics
    /// Never for tasks the manager hands out: only orphans, which stay inside it, lack one.
    pub fn client(&self) -> &TaskClient {
        self.client
            .as_ref()
            .expect("tasks handed out by the manager have a shim client")
    }

    pub fn bundle_path(&self) -> &std::path::Path {
        &self.bundle.path
    }

    /// The shim's pid.
    pub fn shim_pid(&self) -> Option<i32> {
        self.shim_pid.filter(|&p| p > 0)
    }

    /// Waits for a process of the task (`exec_id` empty: the init process) to exit. If the shim
    /// dies meanwhile, the exit berthd recorded while cleaning up after it is the answer: a
    /// waiter never hangs on a dead shim.
    pub async fn wait(&self, exec_id: &str) -> Result<Exit> {
        let mut gone = self.gone.subscribe();
        let waited = tokio::select! {
            r = self.client().wait(&self.id, exec_id) => r,
            _ = gone.wait_for(Option::is_some) => Err(berth_shim::Error::Closed),
        };
        match waited {
            Ok(resp) => Ok(Exit {
                pid: 0,
                status: resp.exit_status,
                exited_at: nanos(resp.exited_at.as_ref()),
            }),
            Err(e) if e.is_closed() => {
                // The cleanup after a dead shim is on its way (the watcher saw the shim exit, or
                // will); give it the time `<shim> delete` takes.
                let recorded =
                    tokio::time::timeout(Duration::from_secs(90), gone.wait_for(Option::is_some))
                        .await;
                match recorded {
                    Ok(Ok(exit)) => Ok(exit.unwrap_or(UNKNOWN_EXIT)),
                    _ => Ok(UNKNOWN_EXIT.now()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn set_gone(&self, exit: Exit) {
        self.gone.send_replace(Some(exit));
    }

    pub(crate) fn set_watcher(&self, handle: JoinHandle<()>) {
        if let Some(old) = lock(&self.watcher).replace(handle) {
            old.abort();
        }
    }

    /// Stops copying the shim's log and watching its process (not the shim itself).
    pub(crate) fn stop(&self) {
        self.log.abort();
        if let Some(w) = lock(&self.watcher).take() {
            // The watcher may be the caller (cleaning up after a dead shim): aborting a task
            // from inside itself takes effect at its next await, after the cleanup returns.
            w.abort();
        }
    }
}

/// Copies what the shim writes to its `log` FIFO into berthd's log. The FIFO is opened for
/// reading and writing, so opening never blocks and the shim's open for writing finds a reader.
pub(crate) fn copy_shim_log(bundle: &Bundle) -> Result<JoinHandle<()>> {
    let path = bundle.file(bundle::LOG);
    let receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&path)
        .map_err(io("open shim log", &path))?;
    let (namespace, id) = (bundle.namespace.clone(), bundle.id.clone());
    Ok(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(receiver).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "berth::shim", %namespace, %id, "{line}");
        }
    }))
}

/// Returns when process `pid` has exited (at once if there is no such process).
pub(crate) async fn wait_for_process(pid: i32) {
    use rustix::process::{pidfd_open, Pid, PidfdFlags};
    let Some(pid) = Pid::from_raw(pid) else {
        return;
    };
    match pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => {
            // A pidfd polls readable once its process has exited.
            // SAFETY: `fd` is an open pidfd owned by the AsyncFd from here on, so the descriptor
            // stays open and the same for the AsyncFd's whole life.
            let registered = unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            };
            if let Ok(afd) = registered {
                let _ = afd.readable().await;
                return;
            }
            poll_process(pid).await;
        }
        Err(rustix::io::Errno::SRCH) => {}
        // No pidfd (a kernel before 5.3): look once a second.
        Err(_) => poll_process(pid).await,
    }
}

async fn poll_process(pid: rustix::process::Pid) {
    while rustix::process::test_kill_process(pid).is_ok() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
