//! The `io.containerd.runtime.v2.task` plugin: every task is run by a shim v2 binary, one shim
//! per task, as containerd does (its `docs/runtime-v2.md`). berthd lays out the bundle, starts the
//! shim (`<shim> start`), drives the task over the shim's ttrpc API and, when the shim is gone,
//! cleans up after it (`<shim> delete`). Shims outlive berthd: at start-up every bundle left in
//! the state directory is reconnected, or cleaned up if its shim died meanwhile.
//!
//! Which shim serves which runtime name is the `runtimes` table of this plugin's config; by
//! default `io.containerd.runc.v2` is served by Berth's own shim (`containerd-shim-berth-v1`); a
//! name that is not in the table resolves as containerd resolves it (`io.containerd.x.v2` →
//! `containerd-shim-x-v2` on `PATH` or beside berthd; an absolute path as it is).

mod bundle;
mod error;
mod task;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use berth_events::{Event, Exchange};
use berth_plugin::{types, Instance, Registration};
use berth_shim::proto::{task as pb, Mount};
use berth_shim::{resolve_runtime_binary, EventsServer, ShimCommand, TaskClient};
use serde::Deserialize;

pub use bundle::Bundle;
pub use error::{Error, Result};
pub use task::{Exit, Task};

/// This plugin's config: `[plugins."io.containerd.runtime.v2.task"]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Runtime name (as clients send it) → the shim that serves it.
    pub runtimes: BTreeMap<String, RuntimeEntry>,
}

/// One row of the runtimes table, in the shape of containerd's CRI runtimes.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeEntry {
    /// The shim runtime name to use instead (resolved to `containerd-shim-<x>-<y>`).
    pub runtime_type: Option<String>,
    /// The shim binary itself, an absolute path; wins over `runtime_type`.
    pub runtime_path: Option<PathBuf>,
}

/// The runtime name `ctr run` and containerd's clients send by default.
pub const RUNC_V2: &str = "io.containerd.runc.v2";
/// Berth's own shim (`containerd-shim-berth-v1`).
pub const BERTH_V1: &str = "io.containerd.berth.v1";

/// Built-in rows of the runtimes table, used when the config has no row of that name: Berth's
/// shim serves `io.containerd.runc.v2`, so what users get by default is Berth's runtime. A row
/// in the config wins (e.g. `runtime_path = "/usr/bin/containerd-shim-runc-v2"` to use runc).
fn default_runtime(name: &str) -> Option<RuntimeEntry> {
    (name == RUNC_V2).then(|| RuntimeEntry {
        runtime_type: Some(BERTH_V1.to_owned()),
        runtime_path: None,
    })
}

/// What a task is made from (the Tasks service gathers it from the container and the request).
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    /// The OCI runtime spec, JSON.
    pub spec: Vec<u8>,
    pub rootfs: Vec<Mount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// The runtime name (or an absolute shim path).
    pub runtime: String,
    pub runtime_options: Option<prost_types::Any>,
    /// Options for this task, preferred over the runtime's.
    pub task_options: Option<prost_types::Any>,
}

/// Where the manager keeps its files and how shims reach berthd.
#[derive(Debug, Clone)]
pub struct Options {
    /// `<root>/io.containerd.runtime.v2.task`: work directories.
    pub root: PathBuf,
    /// `<state>/io.containerd.runtime.v2.task`: bundles.
    pub state: PathBuf,
    /// berthd's gRPC socket; shims get it as `-address`, and serve events at `<it>.ttrpc`.
    pub grpc_address: String,
    pub config: Config,
}

type Key = (String, String);

/// How long a shim may take to answer Connect (after a restart, a shim that does not answer in
/// this time is taken for dead).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) struct Inner {
    opts: Options,
    ttrpc_address: String,
    publish_binary: PathBuf,
    events: Arc<Exchange>,
    tasks: Mutex<HashMap<Key, Arc<Task>>>,
    /// Tasks being created: a second Create for the same id is refused at once.
    creating: Mutex<HashSet<Key>>,
}

/// The runtime: the tasks of every namespace and the shims that run them.
pub struct TaskManager {
    inner: Arc<Inner>,
    events_server: Mutex<Option<EventsServer>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these maps leaves it consistent (single inserts/removes).
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TaskManager {
    /// Starts the shim events service and reconnects to the shims of tasks that were running
    /// when berthd last stopped.
    pub async fn new(opts: Options, events: Arc<Exchange>) -> Result<TaskManager> {
        for dir in [&opts.root, &opts.state] {
            std::fs::create_dir_all(dir).map_err(error::io("create", dir))?;
        }
        let ttrpc_address = format!("{}.ttrpc", opts.grpc_address);
        let sink = Arc::clone(&events);
        let events_server = EventsServer::start(Path::new(&ttrpc_address), move |e| {
            sink.forward(berth_events::Envelope {
                timestamp: e.timestamp,
                namespace: e.namespace,
                topic: e.topic,
                event: Event::Opaque {
                    type_url: e.type_url,
                    value: e.value,
                },
            });
        })
        .await?;
        let publish_binary = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("berthd"));
        let inner = Arc::new(Inner {
            opts,
            ttrpc_address,
            publish_binary,
            events,
            tasks: Mutex::new(HashMap::new()),
            creating: Mutex::new(HashSet::new()),
        });
        inner.load_existing().await;
        Ok(TaskManager {
            inner,
            events_server: Mutex::new(Some(events_server)),
        })
    }

    pub fn get(&self, namespace: &str, id: &str) -> Option<Arc<Task>> {
        lock(&self.inner.tasks)
            .get(&(namespace.to_owned(), id.to_owned()))
            .cloned()
    }

    /// The tasks of `namespace`, by id.
    pub fn list(&self, namespace: &str) -> Vec<Arc<Task>> {
        let mut tasks: Vec<_> = lock(&self.inner.tasks)
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, t)| Arc::clone(t))
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        tasks
    }

    /// Every task of every namespace.
    pub fn all(&self) -> Vec<Arc<Task>> {
        lock(&self.inner.tasks).values().cloned().collect()
    }

    /// Lays out the bundle, starts a shim and creates the task in it. Whatever fails, nothing is
    /// left behind: no bundle, no shim.
    pub async fn create(&self, namespace: &str, id: &str, opts: CreateOpts) -> Result<Arc<Task>> {
        let key = (namespace.to_owned(), id.to_owned());
        {
            let tasks = lock(&self.inner.tasks);
            let mut creating = lock(&self.inner.creating);
            if tasks.contains_key(&key) || !creating.insert(key.clone()) {
                return Err(Error::AlreadyExists(id.to_owned()));
            }
        }
        let created = self.inner.create(namespace, id, opts).await;
        lock(&self.inner.creating).remove(&key);
        let task = created?;
        lock(&self.inner.tasks).insert(key, Arc::clone(&task));
        Inner::watch(&self.inner, &task);
        Ok(task)
    }

    /// Deletes a stopped task: the shim deletes the container, exits, and the bundle goes.
    pub async fn delete(&self, namespace: &str, id: &str) -> Result<Exit> {
        let task = self
            .get(namespace, id)
            .ok_or_else(|| Error::NotFound(id.to_owned()))?;
        match task.client().delete(id, "").await {
            Ok(resp) => {
                self.inner.forget(&task);
                if let Err(e) = task.client().shutdown(id).await {
                    tracing::warn!(%namespace, %id, error = %e, "shim shutdown");
                }
                task.stop();
                task.bundle.delete()?;
                let exit = Exit::from_delete(&resp);
                task.set_gone(exit);
                Ok(exit)
            }
            Err(e) if e.is_closed() => {
                // The shim died under us: clean up after it as after any dead shim.
                Ok(Inner::shim_died(&self.inner, &task)
                    .await
                    .unwrap_or(task::UNKNOWN_EXIT))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Stops serving shim events (shims keep running; they find berthd again when it is back).
    pub async fn close(&self) {
        let server = lock(&self.events_server).take();
        if let Some(server) = server {
            server.shutdown().await;
        }
        for task in self.all() {
            task.stop();
        }
    }
}

impl Inner {
    fn resolve(&self, runtime: &str) -> berth_shim::Result<PathBuf> {
        let builtin;
        let entry = match self.opts.config.runtimes.get(runtime) {
            Some(e) => Some(e),
            None => {
                builtin = default_runtime(runtime);
                builtin.as_ref()
            }
        };
        if let Some(path) = entry.and_then(|e| e.runtime_path.as_ref()) {
            return resolve_runtime_binary(&path.to_string_lossy(), None);
        }
        let name = entry
            .and_then(|e| e.runtime_type.as_deref())
            .unwrap_or(runtime);
        resolve_runtime_binary(name, Some(&self.publish_binary))
    }

    fn command(&self, bundle: &Bundle, binary: PathBuf) -> ShimCommand {
        ShimCommand {
            binary,
            namespace: bundle.namespace.clone(),
            id: bundle.id.clone(),
            bundle: bundle.path.clone(),
            grpc_address: self.opts.grpc_address.clone(),
            ttrpc_address: self.ttrpc_address.clone(),
            publish_binary: self.publish_binary.clone(),
            debug: tracing::enabled!(tracing::Level::DEBUG),
        }
    }

    async fn create(&self, namespace: &str, id: &str, opts: CreateOpts) -> Result<Arc<Task>> {
        let bundle = Bundle::at(&self.opts.root, &self.opts.state, namespace, id)?;
        serde_json::from_slice::<serde_json::Value>(&opts.spec).map_err(Error::InvalidSpec)?;
        let binary = self.resolve(&opts.runtime).map_err(Error::ResolveRuntime)?;
        bundle.create(&opts.spec)?;
        let command = self.command(&bundle, binary);
        let log = match task::copy_shim_log(&bundle) {
            Ok(log) => log,
            Err(e) => {
                let _ = bundle.delete();
                return Err(e);
            }
        };
        let options = opts.task_options.as_ref().or(opts.runtime_options.as_ref());
        let address = match command.start(options).await {
            Ok(a) => a,
            Err(e) => {
                log.abort();
                let _ = bundle.delete();
                return Err(Error::StartShim(e));
            }
        };
        let started = async {
            bundle.write(bundle::SHIM_BINARY, &command.binary.to_string_lossy())?;
            let client = TaskClient::connect(&address).await?;
            Ok::<_, Error>(client)
        }
        .await;
        let client = match started {
            Ok(c) => c,
            Err(e) => {
                self.discard(&command, None, &bundle).await;
                log.abort();
                return Err(e);
            }
        };
        let request = pb::CreateTaskRequest {
            id: id.to_owned(),
            bundle: bundle.path.to_string_lossy().into_owned(),
            rootfs: opts.rootfs,
            terminal: opts.terminal,
            stdin: opts.stdin,
            stdout: opts.stdout,
            stderr: opts.stderr,
            checkpoint: String::new(),
            parent_checkpoint: String::new(),
            options: options.cloned(),
        };
        if let Err(e) = client.create(&request).await {
            self.discard(&command, Some(&client), &bundle).await;
            log.abort();
            return Err(Error::CreateTask(e));
        }
        // The shim's pid, to notice when it dies: from `shim.pid`, which containerd's shims and
        // Berth's write at start; asked over Connect (one more round trip) from a shim that
        // does not.
        let shim_pid = match task::recorded_shim_pid(&bundle) {
            Some(pid) => Some(pid),
            None => match client.connect_task(id, CONNECT_TIMEOUT).await {
                Ok(c) => task::shim_pid(c.shim_pid),
                Err(e) => {
                    tracing::warn!(%id, error = %e, "shim connect");
                    None
                }
            },
        };
        Ok(Arc::new(Task::new(
            &opts.runtime,
            bundle,
            client,
            command,
            shim_pid,
            log,
        )))
    }

    /// Takes down a shim whose task never came to be: ask it to delete and exit, make sure with
    /// `<shim> delete`, remove the bundle.
    async fn discard(&self, command: &ShimCommand, client: Option<&TaskClient>, bundle: &Bundle) {
        if let Some(client) = client {
            let _ = client.delete(&bundle.id, "").await;
            let _ = client.shutdown(&bundle.id).await;
        }
        if let Err(e) = command.delete().await {
            tracing::warn!(id = %bundle.id, error = %e, "shim delete after a failed create");
        }
        if let Err(e) = bundle.delete() {
            tracing::warn!(id = %bundle.id, error = %e, "remove bundle after a failed create");
        }
    }

    /// Removes a task from the table; true if it was there (so only one path cleans it up).
    fn forget(&self, task: &Task) -> bool {
        lock(&self.tasks)
            .remove(&(task.namespace.clone(), task.id.clone()))
            .is_some()
    }

    /// Watches the shim's process; when it exits while its task is still in the table, the
    /// shim died without being asked to, and is cleaned up after.
    fn watch(this: &Arc<Inner>, task: &Arc<Task>) {
        let weak: Weak<Inner> = Arc::downgrade(this);
        let watched = Arc::downgrade(task);
        let Some(pid) = task.shim_pid() else {
            tracing::warn!(id = %task.id, "shim pid unknown: its death will be noticed only by failing calls");
            return;
        };
        let handle = tokio::spawn(async move {
            task::wait_for_process(pid).await;
            let (Some(inner), Some(task)) = (weak.upgrade(), watched.upgrade()) else {
                return;
            };
            Inner::shim_died(&inner, &task).await;
        });
        task.set_watcher(handle);
    }

    /// Cleans up after a shim that is gone: `<shim> delete`, the bundle, and the task reported
    /// exited (with the status the shim binary knows, else 255). Returns the exit, or `None` if
    /// another path already cleaned this task up.
    async fn shim_died(this: &Arc<Inner>, task: &Arc<Task>) -> Option<Exit> {
        if !this.forget(task) {
            return None;
        }
        tracing::warn!(namespace = %task.namespace, id = %task.id, "shim disconnected; cleaning up after it");
        Some(this.clean_dead(&task.command, &task.bundle, task).await)
    }

    async fn clean_dead(&self, command: &ShimCommand, bundle: &Bundle, task: &Task) -> Exit {
        let exit = match command.delete().await {
            Ok(resp) => Exit::from_delete(&resp),
            Err(e) => {
                tracing::warn!(id = %bundle.id, error = %e, "failed to clean up after dead shim");
                task::UNKNOWN_EXIT.now()
            }
        };
        task.stop();
        remove_dead_socket(bundle);
        if let Err(e) = bundle.delete() {
            tracing::warn!(id = %bundle.id, error = %e, "remove bundle of dead shim");
        }
        self.publish_exit(&bundle.namespace, &bundle.id, exit);
        task.set_gone(exit);
        exit
    }

    fn publish_exit(&self, namespace: &str, id: &str, exit: Exit) {
        self.events.publish(
            namespace,
            Event::TaskExit {
                container_id: id.to_owned(),
                id: id.to_owned(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: exit.exited_at,
            },
        );
        self.events.publish(
            namespace,
            Event::TaskDelete {
                container_id: id.to_owned(),
                id: String::new(),
                pid: exit.pid,
                exit_status: exit.status,
                exited_at: exit.exited_at,
            },
        );
    }

    /// Reconnects to the shim of every bundle in the state directory; a bundle whose shim is
    /// gone is cleaned up with `<shim> delete` and its task reported exited.
    async fn load_existing(self: &Arc<Self>) {
        let dirs = |p: &Path| -> Vec<String> {
            std::fs::read_dir(p)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        };
        for namespace in dirs(&self.opts.state) {
            for id in dirs(&self.opts.state.join(&namespace)) {
                if let Err(e) = self.load(&namespace, &id).await {
                    tracing::warn!(%namespace, %id, error = %e, "could not recover task");
                }
            }
        }
    }

    async fn load(self: &Arc<Self>, namespace: &str, id: &str) -> Result<()> {
        let bundle = Bundle::at(&self.opts.root, &self.opts.state, namespace, id)?;
        let Some(binary) = bundle.read(bundle::SHIM_BINARY)? else {
            // The shim never started (berthd died in Create): nothing runs, nothing to report.
            tracing::info!(%namespace, %id, "removing the bundle of a task that never started");
            return bundle.delete();
        };
        let command = self.command(&bundle, PathBuf::from(binary));
        let log = task::copy_shim_log(&bundle)?;
        let connected = async {
            let address = bundle
                .read(bundle::ADDRESS)?
                .ok_or_else(|| Error::NotFound(format!("{id} shim address")))?;
            let client = TaskClient::connect(&address).await?;
            let connect = client.connect_task(id, CONNECT_TIMEOUT).await?;
            Ok::<_, Error>((client, connect.shim_pid))
        }
        .await;
        match connected {
            Ok((client, shim_pid)) => {
                // The runtime name is not kept; the container record has it.
                let runtime = command.binary.to_string_lossy().into_owned();
                let shim_pid =
                    task::shim_pid(shim_pid).or_else(|| task::recorded_shim_pid(&bundle));
                let task = Arc::new(Task::new(&runtime, bundle, client, command, shim_pid, log));
                lock(&self.tasks).insert((namespace.to_owned(), id.to_owned()), Arc::clone(&task));
                Inner::watch(self, &task);
                tracing::info!(%namespace, %id, "reconnected to shim");
            }
            Err(e) => {
                tracing::warn!(%namespace, %id, error = %e, "shim is gone; cleaning up after it");
                let task = Task::orphan(bundle.clone(), command.clone(), log);
                self.clean_dead(&command, &bundle, &task).await;
            }
        }
        Ok(())
    }
}

/// A shim that was killed leaves its socket (`/run/containerd/s/<hash>` for runc's); once
/// nothing answers on it, it goes with the task.
fn remove_dead_socket(bundle: &Bundle) {
    let Ok(Some(address)) = bundle.read(bundle::ADDRESS) else {
        return;
    };
    let Some(path) = address.strip_prefix("unix://") else {
        return;
    };
    // Abstract sockets (`unix://@…`) have no file.
    if path.starts_with('@') {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if is_socket && std::os::unix::net::UnixStream::connect(path).is_err() {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(%path, error = %e, "remove dead shim's socket");
        }
    }
}

/// The `io.containerd.runtime.v2.task` plugin.
pub fn registration() -> Registration {
    Registration::new(types::RUNTIME_V2, "task", &[types::EVENT], |ctx| {
        let config: Config = ctx.config()?;
        let events = ctx.get_as::<Exchange>(types::EVENT)?;
        let opts = Options {
            root: ctx.root().to_owned(),
            state: ctx.state().to_owned(),
            grpc_address: ctx.address().to_owned(),
            config,
        };
        // Plugins initialise on a blocking thread of the daemon's runtime.
        let handle = tokio::runtime::Handle::current();
        let manager = Arc::new(
            handle
                .block_on(TaskManager::new(opts, events))
                .map_err(berth_plugin::InitError::failed)?,
        );
        let closing = Arc::clone(&manager);
        ctx.on_close(move || {
            handle.block_on(closing.close());
            Ok::<_, berth_plugin::CloseError>(())
        });
        Ok(manager as Instance)
    })
}
