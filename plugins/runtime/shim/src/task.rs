//! The task this shim serves: one container (its init process) and the processes exec'd into
//! it, with the state machine containerd's runc shim has (created → running → stopped, paused
//! while frozen), the exits the reaper records, and the events each step publishes.
//!
//! Every method runs on the shim's only thread; the state lock is never held across an await.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use berth_cgroups::{Cgroup, Hierarchy};
use berth_container::{CgroupMounts, Created, Mode, Request};
use berth_shim::proto::{events as ev, task as pb, ProcessInfo, Status};
use oci_spec::runtime::{LinuxResources, Process, Spec};
use tokio::sync::watch;

use crate::cgroup::{apply_resources, cgroup_mounts_for, OomFd};
use crate::error::{Error, Result};
use crate::hooks;
use crate::io::{Keep, StdioPaths};
use crate::log::{debug, warning};
use crate::publish::{now, Publisher};
pub use crate::spec::load_spec;

/// How a process ended.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub code: u32,
    pub at: prost_types::Timestamp,
}

/// One process: the init (exec id "") or an exec.
struct Proc {
    exec_id: String,
    pid: i32,
    /// Waiting for Start (init between Create and Start).
    created: Option<Created>,
    /// An exec's process spec until it is started.
    exec_spec: Option<Process>,
    started: bool,
    stdio: StdioPaths,
    keep: Keep,
    exit: watch::Sender<Option<Exit>>,
}

impl Proc {
    fn new(exec_id: &str, stdio: StdioPaths) -> Proc {
        Proc {
            exec_id: exec_id.to_owned(),
            pid: 0,
            created: None,
            exec_spec: None,
            started: false,
            stdio,
            keep: Keep::default(),
            exit: watch::channel(None).0,
        }
    }

    fn exited(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    fn status(&self, paused: bool) -> Status {
        if self.exited().is_some() {
            Status::Stopped
        } else if !self.started {
            Status::Created
        } else if paused {
            Status::Paused
        } else {
            Status::Running
        }
    }
}

struct Container {
    spec: Spec,
    rootfs: PathBuf,
    rootfs_mounted: bool,
    cgroup: Option<Cgroup>,
    init: Proc,
    execs: BTreeMap<String, Proc>,
    paused: bool,
    seccomp: Option<berth_seccomp::Program>,
}

impl Container {
    /// The cgroup, which `what` needs (a container made without one cannot do it).
    fn cgroup(&self, what: &str) -> Result<&Cgroup> {
        self.cgroup
            .as_ref()
            .ok_or_else(|| Error::FailedPrecondition(format!("no cgroup to {what}")))
    }

    fn process(&self, exec_id: &str) -> Result<&Proc> {
        if exec_id.is_empty() {
            Ok(&self.init)
        } else {
            self.execs
                .get(exec_id)
                .ok_or_else(|| Error::ProcessNotFound(exec_id.to_owned()))
        }
    }

    fn process_mut(&mut self, exec_id: &str) -> Result<&mut Proc> {
        if exec_id.is_empty() {
            Ok(&mut self.init)
        } else {
            self.execs
                .get_mut(exec_id)
                .ok_or_else(|| Error::ProcessNotFound(exec_id.to_owned()))
        }
    }
}

pub struct Shim {
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
    publisher: Publisher,
    state: Mutex<Option<Container>>,
    hierarchy: Option<Hierarchy>,
    /// Fires when Shutdown allows the shim to exit.
    pub exit: tokio::sync::Notify,
}

const TASK_CREATE: &str = "containerd.events.TaskCreate";

impl Shim {
    pub fn new(namespace: String, id: String, bundle: PathBuf, publisher: Publisher) -> Shim {
        let hierarchy = match Hierarchy::detect() {
            Ok(h) => Some(h),
            Err(e) => {
                warning!("no cgroup hierarchy: {e}");
                None
            }
        };
        Shim {
            namespace,
            id,
            bundle,
            publisher,
            state: Mutex::new(None),
            hierarchy,
            exit: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Container>> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn check_id(&self, id: &str) -> Result<()> {
        if id != self.id {
            return Err(Error::NotFound(id.to_owned()));
        }
        Ok(())
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Container) -> Result<T>) -> Result<T> {
        self.check_id(id)?;
        let mut g = self.lock();
        let c = g.as_mut().ok_or_else(|| Error::NotFound(id.to_owned()))?;
        f(c)
    }

    pub fn create(self: &Arc<Self>, req: pb::CreateTaskRequest) -> Result<pb::CreateTaskResponse> {
        if req.id != self.id {
            return Err(Error::InvalidArgument(format!(
                "this shim serves {:?}, not {:?}",
                self.id, req.id
            )));
        }
        if self.lock().is_some() {
            return Err(Error::AlreadyExists(req.id));
        }
        if !req.checkpoint.is_empty() {
            return Err(Error::Unsupported(
                "restore from a checkpoint is not supported".into(),
            ));
        }
        let bundle = if req.bundle.is_empty() {
            self.bundle.clone()
        } else {
            PathBuf::from(&req.bundle)
        };
        let t0 = std::time::Instant::now();
        let spec = load_spec(&bundle.join("config.json"))?;
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_else(|| PathBuf::from("rootfs"));
        let rootfs = if root.is_absolute() {
            root
        } else {
            bundle.join(root)
        };
        let mounts: Vec<berth_mount::Mount> = req
            .rootfs
            .iter()
            .map(|m| berth_mount::Mount {
                mount_type: m.r#type.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                options: m.options.clone(),
            })
            .collect();
        if !mounts.is_empty() {
            std::fs::create_dir_all(&rootfs).map_err(|source| Error::Io {
                action: "create",
                path: rootfs.display().to_string(),
                source,
            })?;
            berth_mount::mount_all(&mounts, &rootfs)?;
        }
        debug!(
            "create {}: spec and rootfs mount {:?}",
            self.id,
            t0.elapsed()
        );
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut container = Container {
            spec,
            rootfs,
            rootfs_mounted: !mounts.is_empty(),
            cgroup: None,
            init: Proc::new("", stdio),
            execs: BTreeMap::new(),
            paused: false,
            seccomp: None,
        };
        match self.create_init(&mut container) {
            Ok(()) => {}
            Err(e) => {
                cleanup(&mut container);
                return Err(e);
            }
        }
        let pid = container.init.pid;
        debug!("create {}: done in {:?}", self.id, t0.elapsed());
        crate::initpid::record(&self.bundle, pid);
        if let Some(cg) = &container.cgroup {
            self.watch_oom(cg);
        }
        *self.lock() = Some(container);
        self.publisher.publish(
            "/tasks/create",
            TASK_CREATE,
            &ev::TaskCreate {
                container_id: req.id.clone(),
                bundle: bundle.display().to_string(),
                rootfs: req.rootfs,
                io: Some(ev::TaskIo {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                }),
                checkpoint: String::new(),
                pid: pid as u32,
            },
        );
        Ok(pb::CreateTaskResponse { pid: pid as u32 })
    }

    fn create_init(&self, c: &mut Container) -> Result<()> {
        let linux = c.spec.linux().clone().unwrap_or_default();
        let mut cgroup_mounts = CgroupMounts::None;
        if let Some(h) = &self.hierarchy {
            let path = linux
                .cgroups_path()
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| format!("/{}/{}", self.namespace, self.id));
            let t = std::time::Instant::now();
            let cg = Cgroup::create(h, &path)?;
            debug!(
                "create {}: cgroup {path} made in {:?}",
                self.id,
                t.elapsed()
            );
            c.cgroup = Some(cg.clone());
            cgroup_mounts = cgroup_mounts_for(h, &cg);
        }
        if let Some(s) = linux.seccomp() {
            c.seccomp = Some(berth_seccomp::compile(s)?);
        }
        let process = c
            .spec
            .process()
            .clone()
            .ok_or_else(|| Error::InvalidArgument("the spec has no process".into()))?;
        // No LSM support yet: say so rather than pretend (runc applies these).
        if let Some(p) = process
            .apparmor_profile()
            .as_deref()
            .filter(|p| !p.is_empty())
        {
            warning!("apparmor profile {p:?} ignored: not supported by this shim");
        }
        if let Some(l) = process.selinux_label().as_deref().filter(|l| !l.is_empty()) {
            warning!("selinux label {l:?} ignored: not supported by this shim");
        }
        if let Some(l) = linux.mount_label().as_deref().filter(|l| !l.is_empty()) {
            warning!("selinux mount label {l:?} ignored: not supported by this shim");
        }
        let t = std::time::Instant::now();
        let (created, keep) = self.launch(&Launch {
            spec: &c.spec,
            process: &process,
            mode: Mode::Init {
                rootfs: &c.rootfs,
                cgroups: &cgroup_mounts,
            },
            stdio: &c.init.stdio,
            cgroup: c.cgroup.as_ref(),
            seccomp: c.seccomp.as_ref(),
            oom_score_adj: process.oom_score_adj(),
        })?;
        debug!(
            "create {}: container process ready in {:?} ({})",
            self.id,
            t.elapsed(),
            if created.direct {
                "cloned directly"
            } else {
                "through an intermediate"
            }
        );
        c.init.pid = created.pid;
        c.init.keep = keep;
        // Limits apply once the container's filesystem is made, as with runc: a device rule
        // that denies mknod must not stop /dev from being populated.
        if let (Some(cg), Some(r)) = (&c.cgroup, linux.resources()) {
            if let Err(e) = apply_resources(cg, r) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(created.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                return Err(e);
            }
        }
        c.init.created = Some(created);
        Ok(())
    }

    /// Makes a process (the init or an exec) up to Ready: its stdio, the container set-up in
    /// forked processes (berth-container), then the shim's side of its stdio.
    fn launch(&self, l: &Launch<'_>) -> Result<(Created, Keep)> {
        let prepared = l.stdio.prepare(&self.id, &self.namespace)?;
        let entry = l.cgroup.map(Cgroup::entry).transpose()?.unwrap_or_default();
        let seccomp = l.seccomp;
        let load = move || -> std::result::Result<(), String> {
            match seccomp {
                Some(p) => p.load().map_err(|e| format!("load seccomp filter: {e}")),
                None => Ok(()),
            }
        };
        let request = Request {
            spec: l.spec,
            process: l.process,
            mode: l.mode,
            stdio: [
                prepared.child[0].as_raw_fd(),
                prepared.child[1].as_raw_fd(),
                prepared.child[2].as_raw_fd(),
            ],
            terminal: l.stdio.terminal,
            before_exec: Some(&load),
            cgroup_dir: entry.clone_into.as_ref().map(AsRawFd::as_raw_fd),
            cgroup_tasks: &entry.own_tasks,
        };
        let mut parent = Parent {
            cgroup: l.cgroup,
            oom_score_adj: l.oom_score_adj,
            spec: l.spec,
            bundle: &self.bundle,
            id: &self.id,
        };
        let mut created = berth_container::create(&request, &mut parent)?;
        // The process has its own copies now.
        drop(prepared.child);
        let mut keep = prepared.keep;
        keep.start(created.console.take())?;
        if let Some(size) = l.process.console_size() {
            keep.resize(size.width() as u32, size.height() as u32)?;
        }
        Ok((created, keep))
    }

    fn watch_oom(self: &Arc<Self>, cg: &Cgroup) {
        let watcher = match cg.oom_watcher() {
            Ok(w) => OomFd(w),
            Err(e) => {
                debug!("no OOM notifications: {e}");
                return;
            }
        };
        let shim = Arc::clone(self);
        tokio::spawn(async move {
            let mut fd = match crate::io::watch(watcher) {
                Ok(fd) => fd,
                Err(e) => {
                    warning!("watch OOM events: {e}");
                    return;
                }
            };
            loop {
                let Ok(mut guard) = fd.readable_mut().await else {
                    return;
                };
                guard.clear_ready();
                match guard.get_inner_mut().0.oom_kills() {
                    Ok(0) => {}
                    Ok(_) => shim.publisher.publish(
                        "/tasks/oom",
                        "containerd.events.TaskOOM",
                        &ev::TaskOom {
                            container_id: shim.id.clone(),
                        },
                    ),
                    // The cgroup is gone (deleted): stop watching.
                    Err(_) => return,
                }
                if shim.lock().is_none() {
                    return;
                }
            }
        });
    }

    pub fn start(&self, req: pb::StartRequest) -> Result<pb::StartResponse> {
        self.check_id(&req.id)?;
        if !req.exec_id.is_empty() {
            return self.start_exec(&req.exec_id);
        }
        let (created, pid) = {
            let mut g = self.lock();
            let c = g.as_mut().ok_or_else(|| Error::NotFound(req.id.clone()))?;
            let created = c.init.created.take().ok_or_else(|| {
                Error::FailedPrecondition(format!("container {} is not in created state", self.id))
            })?;
            (created, c.init.pid)
        };
        created.start()?;
        {
            let mut g = self.lock();
            if let Some(c) = g.as_mut() {
                c.init.started = true;
            }
        }
        self.publisher.publish(
            "/tasks/start",
            "containerd.events.TaskStart",
            &ev::TaskStart {
                container_id: self.id.clone(),
                pid: pid as u32,
            },
        );
        if let Some(c) = self.lock().as_ref() {
            if let Err(e) = hooks::run_poststart(&c.spec, &self.bundle, &self.id, pid) {
                warning!("poststart hook: {e}");
            }
        }
        Ok(pb::StartResponse { pid: pid as u32 })
    }

    pub fn exec(&self, req: pb::ExecProcessRequest) -> Result<()> {
        let any = req
            .spec
            .ok_or_else(|| Error::InvalidArgument("exec without a process spec".into()))?;
        let process: Process = serde_json::from_slice(&any.value)
            .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
        self.with(&req.id, |c| {
            if c.init.exited().is_some() {
                // containerd's shim answers this one with Unknown, in these words.
                return Err(Error::Other("cannot exec in a stopped state".into()));
            }
            if c.execs.contains_key(&req.exec_id) {
                return Err(Error::AlreadyExists(format!("exec {}", req.exec_id)));
            }
            let mut p = Proc::new(
                &req.exec_id,
                StdioPaths {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                },
            );
            p.exec_spec = Some(process);
            c.execs.insert(req.exec_id.clone(), p);
            Ok(())
        })?;
        self.publisher.publish(
            "/tasks/exec-added",
            "containerd.events.TaskExecAdded",
            &ev::TaskExecAdded {
                container_id: self.id.clone(),
                exec_id: req.exec_id,
            },
        );
        Ok(())
    }

    fn start_exec(&self, exec_id: &str) -> Result<pb::StartResponse> {
        let pid = {
            let mut g = self.lock();
            let Container {
                spec,
                cgroup,
                seccomp,
                init,
                execs,
                ..
            } = g.as_mut().ok_or_else(|| Error::NotFound(self.id.clone()))?;
            if init.exited().is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "container {} is stopped",
                    self.id
                )));
            }
            let p = execs
                .get_mut(exec_id)
                .ok_or_else(|| Error::ProcessNotFound(exec_id.to_owned()))?;
            let process = p.exec_spec.take().ok_or_else(|| {
                Error::FailedPrecondition(format!("exec {exec_id} was already started"))
            })?;
            let (created, keep) = self.launch(&Launch {
                spec,
                process: &process,
                mode: Mode::Exec { init_pid: init.pid },
                stdio: &p.stdio,
                cgroup: cgroup.as_ref(),
                seccomp: seccomp.as_ref(),
                oom_score_adj: process.oom_score_adj(),
            })?;
            p.pid = created.pid;
            p.keep = keep;
            created.start()?;
            p.started = true;
            p.pid
        };
        self.publisher.publish(
            "/tasks/exec-started",
            "containerd.events.TaskExecStarted",
            &ev::TaskExecStarted {
                container_id: self.id.clone(),
                exec_id: exec_id.to_owned(),
                pid: pid as u32,
            },
        );
        Ok(pb::StartResponse { pid: pid as u32 })
    }

    pub fn state(&self, req: pb::StateRequest) -> Result<pb::StateResponse> {
        let bundle = self.bundle.display().to_string();
        self.with(&req.id, |c| {
            let paused = c.paused;
            let p = c.process(&req.exec_id)?;
            let exit = p.exited();
            Ok(pb::StateResponse {
                id: req.id.clone(),
                bundle,
                pid: p.pid as u32,
                status: p.status(paused) as i32,
                stdin: p.stdio.stdin.clone(),
                stdout: p.stdio.stdout.clone(),
                stderr: p.stdio.stderr.clone(),
                terminal: p.stdio.terminal,
                exit_status: exit.map_or(0, |e| e.code),
                exited_at: exit.map(|e| e.at),
                exec_id: p.exec_id.clone(),
            })
        })
    }

    pub fn kill(&self, req: pb::KillRequest) -> Result<()> {
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal {}", req.signal)))?;
        self.with(&req.id, |c| {
            let cgroup = c.cgroup.clone();
            let p = c.process(&req.exec_id)?;
            if req.all && req.exec_id.is_empty() {
                if let Some(cg) = &cgroup {
                    cg.kill_all(signal)?;
                    return Ok(());
                }
            }
            if p.exited().is_some() || p.pid == 0 {
                return Err(Error::Finished);
            }
            match nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid), signal) {
                Ok(()) => Ok(()),
                Err(nix::Error::ESRCH) => Err(Error::Finished),
                Err(e) => Err(Error::Io {
                    action: "kill",
                    path: p.pid.to_string(),
                    source: e.into(),
                }),
            }
        })
    }

    /// Subscribes to a process's exit.
    pub fn waiter(&self, id: &str, exec_id: &str) -> Result<watch::Receiver<Option<Exit>>> {
        self.with(id, |c| Ok(c.process(exec_id)?.exit.subscribe()))
    }

    pub async fn delete(&self, req: pb::DeleteRequest) -> Result<pb::DeleteResponse> {
        self.check_id(&req.id)?;
        if !req.exec_id.is_empty() {
            let p = self.with(&req.id, |c| {
                let p = c.process(&req.exec_id)?;
                if p.started && p.exited().is_none() {
                    return Err(Error::FailedPrecondition(format!(
                        "cannot delete a running process: exec {}",
                        req.exec_id
                    )));
                }
                c.execs
                    .remove(&req.exec_id)
                    .ok_or_else(|| Error::ProcessNotFound(req.exec_id.clone()))
            })?;
            p.keep.drained().await;
            let exit = p.exited();
            return Ok(pb::DeleteResponse {
                pid: p.pid as u32,
                exit_status: exit.map_or(0, |e| e.code),
                exited_at: exit.map(|e| e.at),
            });
        }
        // A created init that never started is killed first, as runc's shim does.
        let mut rx = self.with(&req.id, |c| {
            if c.init.started && c.init.exited().is_none() {
                return Err(Error::FailedPrecondition(format!(
                    "cannot delete a running task: {}",
                    req.id
                )));
            }
            if !c.init.started && c.init.exited().is_none() && c.init.pid > 0 {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(c.init.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Ok(c.init.exit.subscribe())
        })?;
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            rx.wait_for(Option::is_some),
        )
        .await;
        let mut container = self
            .lock()
            .take()
            .ok_or_else(|| Error::NotFound(req.id.clone()))?;
        container.init.keep.drained().await;
        for p in container.execs.values() {
            p.keep.drained().await;
        }
        let t = std::time::Instant::now();
        cleanup(&mut container);
        debug!(
            "delete {}: cgroup and rootfs cleaned up in {:?}",
            self.id,
            t.elapsed()
        );
        let exit = container.init.exited().unwrap_or(Exit {
            code: 137,
            at: now(),
        });
        if let Err(e) = hooks::run_poststop(&container.spec, &self.bundle, &self.id) {
            warning!("poststop hook: {e}");
        }
        crate::initpid::forget(&self.bundle);
        self.publisher.publish(
            "/tasks/delete",
            "containerd.events.TaskDelete",
            &ev::TaskDelete {
                container_id: self.id.clone(),
                pid: container.init.pid as u32,
                exit_status: exit.code,
                exited_at: Some(exit.at),
                id: String::new(),
            },
        );
        Ok(pb::DeleteResponse {
            pid: container.init.pid as u32,
            exit_status: exit.code,
            exited_at: Some(exit.at),
        })
    }

    pub fn pids(&self, req: pb::PidsRequest) -> Result<pb::PidsResponse> {
        self.with(&req.id, |c| {
            let mut pids = match &c.cgroup {
                Some(cg) => cg.procs()?,
                None => vec![c.init.pid],
            };
            pids.sort_unstable();
            Ok(pb::PidsResponse {
                processes: pids
                    .into_iter()
                    .map(|pid| ProcessInfo {
                        pid: pid as u32,
                        info: None,
                    })
                    .collect(),
            })
        })
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        self.with(id, |c| {
            let cg = c.cgroup("freeze")?;
            cg.freeze()?;
            c.paused = true;
            Ok(())
        })?;
        self.publisher.publish(
            "/tasks/paused",
            "containerd.events.TaskPaused",
            &ev::TaskPaused {
                container_id: self.id.clone(),
            },
        );
        Ok(())
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        self.with(id, |c| {
            let cg = c.cgroup("thaw")?;
            cg.thaw()?;
            c.paused = false;
            Ok(())
        })?;
        self.publisher.publish(
            "/tasks/resumed",
            "containerd.events.TaskResumed",
            &ev::TaskResumed {
                container_id: self.id.clone(),
            },
        );
        Ok(())
    }

    pub fn update(&self, req: pb::UpdateTaskRequest) -> Result<()> {
        let any = req
            .resources
            .ok_or_else(|| Error::InvalidArgument("update without resources".into()))?;
        let resources: LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| Error::InvalidArgument(format!("resources: {e}")))?;
        self.with(&req.id, |c| {
            apply_resources(c.cgroup("update")?, &resources)
        })
    }

    pub fn stats(&self, id: &str) -> Result<pb::StatsResponse> {
        self.with(id, |c| {
            let cg = c.cgroup("read stats from")?;
            let (type_url, value) = cg.metrics()?;
            Ok(pb::StatsResponse {
                stats: Some(prost_types::Any { type_url, value }),
            })
        })
    }

    pub fn resize_pty(&self, req: pb::ResizePtyRequest) -> Result<()> {
        self.with(&req.id, |c| {
            c.process(&req.exec_id)?.keep.resize(req.width, req.height)
        })
    }

    pub fn close_io(&self, req: pb::CloseIoRequest) -> Result<()> {
        self.with(&req.id, |c| {
            if req.stdin {
                c.process_mut(&req.exec_id)?.keep.close_stdin();
            }
            Ok(())
        })
    }

    pub fn connect(&self, id: &str) -> Result<pb::ConnectResponse> {
        self.check_id(id)?;
        let pid = self.lock().as_ref().map_or(0, |c| c.init.pid);
        Ok(pb::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: pid as u32,
            version: env!("CARGO_PKG_VERSION").to_owned(),
        })
    }

    /// Exits the shim once its container is deleted (containerd's rule).
    pub fn shutdown(&self, id: &str) -> Result<()> {
        self.check_id(id)?;
        if self.lock().is_none() {
            self.exit.notify_one();
        }
        Ok(())
    }

    /// The reaper's report: `pid` exited with `code` (128 + the signal for a killed one).
    pub fn reaped(&self, pid: i32, code: u32) {
        let at = now();
        let mut events = Vec::new();
        {
            let mut g = self.lock();
            let Some(c) = g.as_mut() else { return };
            let is_init = c.init.pid == pid;
            for p in std::iter::once(&mut c.init).chain(c.execs.values_mut()) {
                if p.pid == pid && p.exited().is_none() {
                    p.exit.send_replace(Some(Exit { code, at }));
                    events.push(ev::TaskExit {
                        container_id: self.id.clone(),
                        id: if p.exec_id.is_empty() {
                            self.id.clone()
                        } else {
                            p.exec_id.clone()
                        },
                        pid: pid as u32,
                        exit_status: code,
                        exited_at: Some(at),
                    });
                }
            }
            if is_init {
                // Without a pid namespace of its own the container's other processes outlive
                // its init; they go with it, as with runc.
                let own_pid_ns = c
                    .spec
                    .linux()
                    .as_ref()
                    .and_then(|l| l.namespaces().as_ref())
                    .is_some_and(|ns| {
                        ns.iter().any(|n| {
                            n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid
                                && n.path().as_ref().is_none_or(|p| p.as_os_str().is_empty())
                        })
                    });
                if !own_pid_ns {
                    if let Some(cg) = &c.cgroup {
                        let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
                    }
                }
            }
        }
        for e in events {
            self.publisher
                .publish("/tasks/exit", "containerd.events.TaskExit", &e);
        }
    }
}

/// What differs between making the init and making an exec'd process.
struct Launch<'a> {
    spec: &'a Spec,
    process: &'a Process,
    mode: Mode<'a>,
    stdio: &'a StdioPaths,
    cgroup: Option<&'a Cgroup>,
    seccomp: Option<&'a berth_seccomp::Program>,
    oom_score_adj: Option<i32>,
}

/// The shim's part while a process is made: cgroup, OOM score, hooks.
struct Parent<'a> {
    cgroup: Option<&'a Cgroup>,
    oom_score_adj: Option<i32>,
    spec: &'a Spec,
    bundle: &'a Path,
    id: &'a str,
}

impl berth_container::Parent for Parent<'_> {
    fn joined(&mut self, pid: i32, in_cgroup: bool) -> std::result::Result<(), String> {
        if let Some(cg) = self.cgroup.filter(|_| !in_cgroup) {
            let t = std::time::Instant::now();
            cg.add_process(pid).map_err(|e| e.to_string())?;
            debug!("{}: joined the cgroup in {:?}", self.id, t.elapsed());
        }
        if let Some(score) = self.oom_score_adj {
            // containerd's restrict_oom_score_adj: never below the shim's own score, which an
            // unprivileged (or CAP_SYS_RESOURCE-less) parent could not lower anyway.
            let own = std::fs::read_to_string("/proc/self/oom_score_adj")
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .unwrap_or(0);
            let score = score.max(own);
            std::fs::write(format!("/proc/{pid}/oom_score_adj"), score.to_string())
                .map_err(|e| format!("set oom_score_adj {score}: {e}"))?;
        }
        Ok(())
    }

    fn hooks(&mut self, pid: i32) -> std::result::Result<Vec<u8>, String> {
        hooks::run_create_runtime(self.spec, self.bundle, self.id, pid).map_err(|e| e.to_string())
    }
}

/// Undoes what Create did: the cgroup and the rootfs mount.
fn cleanup(c: &mut Container) {
    if let Some(cg) = c.cgroup.take() {
        let _ = cg.kill_all(nix::sys::signal::Signal::SIGKILL);
        if let Err(e) = cg.delete() {
            warning!("remove cgroup: {e}");
        }
    }
    if c.rootfs_mounted {
        if let Err(e) = berth_mount::unmount_recursive(&c.rootfs) {
            warning!("unmount {}: {e}", c.rootfs.display());
        }
        c.rootfs_mounted = false;
    }
}
