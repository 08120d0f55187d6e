//! One container's cgroup: where it lives in each hierarchy, and the operations the shim needs.
//! Resource limits, statistics and OOM notification are in their own modules; this one makes,
//! joins, freezes, signals and removes.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::LinuxResources;
use tracing::debug;

use crate::error::{Error, Result};
use crate::fs;
use crate::hierarchy::{Hierarchy, OwnCgroups};
use crate::path::{dir_in, SpecPath};
use crate::stats::Stats;

/// Controllers a v2 cgroup gets enabled from the root down, when the parent offers them.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "io", "memory", "pids", "hugetlb", "rdma"];

/// How long `freeze`/`thaw` wait for the kernel to report the new state by default.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long `delete` retries a cgroup that is still busy (its last processes are exiting).
const REMOVE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where a cgroup lives.
#[derive(Debug, Clone)]
pub(crate) enum Layout {
    V1 {
        /// Controller → this cgroup's directory in that controller's hierarchy.
        dirs: BTreeMap<String, PathBuf>,
        /// The directory in a hybrid host's unified hierarchy (membership only).
        unified: Option<PathBuf>,
    },
    V2 {
        dir: PathBuf,
        root: PathBuf,
    },
}

/// The state of a cgroup's freezer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreezerState {
    Thawed,
    /// v1 only: the kernel is still stopping tasks.
    Freezing,
    Frozen,
}

/// How a new process enters a cgroup without being migrated afterwards.
///
/// Moving a whole process (a write to `cgroup.procs`) takes the kernel's global threadgroup
/// write lock, and the first taking in a while waits for an RCU grace period: 5–10 ms per
/// container on this kind of host, most of a container's start. Two ways in skip the lock: being
/// forked straight into a v2 cgroup (`clone3` with `CLONE_INTO_CGROUP`), and a single-threaded
/// process moving its own thread by writing `0` to a v1 hierarchy's `tasks` file (the kernel
/// needs no threadgroup stability for the writer itself). The files are opened here, by the
/// caller, so that the child only writes.
#[derive(Debug, Default)]
pub struct Entry {
    /// The v2 directory to fork the process into; on a hybrid host the unified hierarchy's,
    /// where membership is a courtesy (`None` when it cannot be opened).
    pub clone_into: Option<File>,
    /// Each v1 hierarchy's `tasks` file, open for writing: the new process writes `0` to each
    /// before it makes another thread or process.
    pub own_tasks: Vec<(PathBuf, File)>,
}

/// A container's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    pub(crate) layout: Layout,
    pub(crate) freeze_timeout: Duration,
}

impl Cgroup {
    /// Creates (`mkdir -p`) the cgroup for the OCI `linux.cgroupsPath` in every hierarchy.
    /// Accepted forms (see `path.rs`): absolute, relative to our own cgroup, and systemd's
    /// `slice:prefix:name`. On v2 the controllers the parent offers are enabled in every
    /// ancestor's `cgroup.subtree_control`, from the root down; on v1 a new cpuset cgroup gets
    /// `cpuset.cpus`/`cpuset.mems` from its parent, since the kernel leaves them empty and
    /// refuses to add a process to a cpuset with no CPUs (ENOSPC).
    pub fn create(h: &Hierarchy, cgroups_path: &str) -> Result<Cgroup> {
        let spec = SpecPath::parse(cgroups_path)?;
        let own = own_cgroups_for(&spec)?;
        Self::create_with(h, &spec, &own)
    }

    pub(crate) fn create_with(h: &Hierarchy, spec: &SpecPath, own: &OwnCgroups) -> Result<Cgroup> {
        let cg = Self::locate(h, spec, own);
        match &cg.layout {
            Layout::V1 { dirs, unified } => {
                for dir in unique(dirs.values()) {
                    mkdir_all(dir)?;
                }
                let cpuset_mount = match h {
                    Hierarchy::V1 { controllers, .. } => controllers.get("cpuset"),
                    Hierarchy::V2 { .. } => None,
                };
                if let (Some(dir), Some(mount)) = (dirs.get("cpuset"), cpuset_mount) {
                    inherit_cpuset(mount, dir)?;
                }
                if let Some(dir) = unified {
                    // Membership in the unified tree is a courtesy to tools reading it; resources
                    // are v1 on a hybrid host, so failing here must not fail the container.
                    if let Err(e) = mkdir_all(dir) {
                        debug!(error = %e, "hybrid host: not placing the container in the unified hierarchy");
                    }
                }
            }
            Layout::V2 { dir, root } => {
                enable_controllers_down_to(root, dir)?;
                mkdir_all(dir)?;
            }
        }
        Ok(cg)
    }

    /// Opens a cgroup that already exists (after a shim restart, for `update` or `delete`). On v1,
    /// controllers in which the directory is missing are left out.
    pub fn open(h: &Hierarchy, cgroups_path: &str) -> Result<Cgroup> {
        let spec = SpecPath::parse(cgroups_path)?;
        let own = own_cgroups_for(&spec)?;
        Self::open_with(h, &spec, &own)
    }

    pub(crate) fn open_with(h: &Hierarchy, spec: &SpecPath, own: &OwnCgroups) -> Result<Cgroup> {
        let mut cg = Self::locate(h, spec, own);
        match &mut cg.layout {
            Layout::V1 { dirs, unified } => {
                let first = dirs.values().next().cloned();
                dirs.retain(|ctrl, dir| {
                    let ok = dir.is_dir();
                    if !ok {
                        debug!(controller = %ctrl, dir = %dir.display(), "cgroup missing in this controller; leaving it out");
                    }
                    ok
                });
                if unified.as_deref().is_some_and(|u| !u.is_dir()) {
                    *unified = None;
                }
                if dirs.is_empty() {
                    return Err(Error::NotFound {
                        path: first.unwrap_or_else(|| spec.rel.clone()),
                    });
                }
            }
            Layout::V2 { dir, .. } => {
                if !dir.is_dir() {
                    return Err(Error::NotFound { path: dir.clone() });
                }
            }
        }
        Ok(cg)
    }

    fn locate(h: &Hierarchy, spec: &SpecPath, own: &OwnCgroups) -> Cgroup {
        let layout = match h {
            Hierarchy::V1 {
                controllers,
                unified,
            } => Layout::V1 {
                dirs: controllers
                    .iter()
                    .map(|(c, mount)| {
                        let own = own.0.get(c).map(String::as_str);
                        (c.clone(), dir_in(mount, spec, own, false))
                    })
                    .collect(),
                unified: unified
                    .as_ref()
                    .map(|u| dir_in(u, spec, own.0.get("").map(String::as_str), true)),
            },
            Hierarchy::V2 { root } => Layout::V2 {
                dir: dir_in(root, spec, own.0.get("").map(String::as_str), true),
                root: root.clone(),
            },
        };
        Cgroup {
            layout,
            freeze_timeout: FREEZE_TIMEOUT,
        }
    }

    /// Whether this cgroup follows the v2 interface.
    pub fn is_v2(&self) -> bool {
        matches!(self.layout, Layout::V2 { .. })
    }

    /// This cgroup's directory for `controller` (v1), or its only directory (v2, where
    /// `controller` is ignored).
    pub fn dir(&self, controller: &str) -> Option<&Path> {
        match &self.layout {
            Layout::V1 { dirs, .. } => dirs.get(controller).map(PathBuf::as_path),
            Layout::V2 { dir, .. } => Some(dir),
        }
    }

    /// Every directory of this cgroup, each once (co-mounted v1 controllers share one), the
    /// hybrid unified one last.
    pub fn dirs(&self) -> Vec<&Path> {
        match &self.layout {
            Layout::V1 { dirs, unified } => unique(dirs.values())
                .into_iter()
                .chain(unified.as_deref())
                .collect(),
            Layout::V2 { dir, .. } => vec![dir],
        }
    }

    /// Opens what a new process needs to enter this cgroup by itself (see [`Entry`]).
    pub fn entry(&self) -> Result<Entry> {
        let open_dir = |dir: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(dir)
        };
        match &self.layout {
            Layout::V1 { dirs, unified } => {
                let mut own_tasks = Vec::new();
                for dir in unique(dirs.values()) {
                    let path = dir.join("tasks");
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .map_err(|source| Error::Write {
                            path: path.clone(),
                            value: "0".into(),
                            source,
                        })?;
                    own_tasks.push((path, file));
                }
                let clone_into = unified.as_deref().and_then(|d| match open_dir(d) {
                    Ok(f) => Some(f),
                    Err(e) => {
                        debug!(error = %e, "hybrid host: process not placed in the unified hierarchy");
                        None
                    }
                });
                Ok(Entry {
                    clone_into,
                    own_tasks,
                })
            }
            Layout::V2 { dir, .. } => Ok(Entry {
                clone_into: Some(open_dir(dir).map_err(|source| Error::Read {
                    path: dir.clone(),
                    source,
                })?),
                own_tasks: Vec::new(),
            }),
        }
    }

    /// Moves process `pid` (all its threads) into the cgroup.
    pub fn add_process(&self, pid: i32) -> Result<()> {
        let value = pid.to_string();
        match &self.layout {
            Layout::V1 { dirs, unified } => {
                for dir in unique(dirs.values()) {
                    fs::write(&dir.join("cgroup.procs"), &value)?;
                }
                if let Some(dir) = unified.as_deref().filter(|d| d.is_dir()) {
                    if let Err(e) = fs::write(&dir.join("cgroup.procs"), &value) {
                        debug!(error = %e, "hybrid host: process not placed in the unified hierarchy");
                    }
                }
                Ok(())
            }
            Layout::V2 { dir, .. } => fs::write(&dir.join("cgroup.procs"), &value),
        }
    }

    /// Sets the resource limits of the OCI spec (on create and on `update`).
    pub fn apply(&self, r: &LinuxResources) -> Result<()> {
        match &self.layout {
            Layout::V1 { dirs, .. } => crate::resources::v1::apply(dirs, r),
            Layout::V2 { dir, .. } => crate::resources::v2::apply(dir, r),
        }
    }

    /// The cgroup's counters.
    pub fn stats(&self) -> Result<Stats> {
        match &self.layout {
            Layout::V1 { dirs, .. } => crate::stats::v1::read(dirs),
            Layout::V2 { dir, .. } => crate::stats::v2::read(dir),
        }
    }

    /// The counters as containerd's metrics message: its type URL and encoded bytes, ready for a
    /// `google.protobuf.Any` in the shim's Stats reply.
    pub fn metrics(&self) -> Result<(String, Vec<u8>)> {
        Ok(crate::metrics::encode(&self.stats()?, self.is_v2()))
    }

    /// Every process in the cgroup (v2: this cgroup only, not its descendants).
    pub fn procs(&self) -> Result<Vec<i32>> {
        let dirs: Vec<&Path> = match &self.layout {
            Layout::V1 { dirs, .. } => unique(dirs.values()),
            Layout::V2 { dir, .. } => vec![dir],
        };
        let mut pids = BTreeSet::new();
        for dir in dirs {
            let path = dir.join("cgroup.procs");
            for line in fs::read(&path)?.lines() {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                pids.insert(line.parse::<i32>().map_err(|_| Error::Parse {
                    path: path.clone(),
                    reason: format!("{line:?} is not a process id"),
                })?);
            }
        }
        Ok(pids.into_iter().collect())
    }

    /// The freezer's state.
    pub fn freezer_state(&self) -> Result<FreezerState> {
        match &self.layout {
            Layout::V1 { dirs, .. } => {
                let dir = dirs.get("freezer").ok_or(Error::NoFreezer)?;
                let path = dir.join("freezer.state");
                match fs::read(&path)?.trim() {
                    "THAWED" => Ok(FreezerState::Thawed),
                    "FREEZING" => Ok(FreezerState::Freezing),
                    "FROZEN" => Ok(FreezerState::Frozen),
                    other => Err(Error::Parse {
                        path,
                        reason: format!("unknown freezer state {other:?}"),
                    }),
                }
            }
            Layout::V2 { dir, .. } => {
                let events = fs::read_flat_keyed_opt(&dir.join("cgroup.events"))?;
                match events.get("frozen") {
                    Some(1) => Ok(FreezerState::Frozen),
                    Some(_) => Ok(FreezerState::Thawed),
                    None => Err(Error::NoFreezer),
                }
            }
        }
    }

    /// Stops every process of the cgroup, waiting until the kernel says they are stopped.
    pub fn freeze(&self) -> Result<()> {
        self.set_frozen(true)
    }

    /// Lets the processes of a frozen cgroup run again.
    pub fn thaw(&self) -> Result<()> {
        self.set_frozen(false)
    }

    fn set_frozen(&self, frozen: bool) -> Result<()> {
        let (file, value, want) = match (&self.layout, frozen) {
            (Layout::V1 { dirs, .. }, _) => {
                let dir = dirs.get("freezer").ok_or(Error::NoFreezer)?;
                let v = if frozen { "FROZEN" } else { "THAWED" };
                (dir.join("freezer.state"), v, v)
            }
            (Layout::V2 { dir, .. }, _) => {
                let file = dir.join("cgroup.freeze");
                if !file.exists() {
                    return Err(Error::NoFreezer);
                }
                let (v, w) = if frozen {
                    ("1", "frozen 1")
                } else {
                    ("0", "frozen 0")
                };
                (file, v, w)
            }
        };
        let want_state = if frozen {
            FreezerState::Frozen
        } else {
            FreezerState::Thawed
        };
        fs::write(&file, value)?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        let mut polls = 0u32;
        loop {
            let state = self.freezer_state()?;
            if state == want_state {
                return Ok(());
            }
            if start.elapsed() >= self.freeze_timeout {
                let last = format!("{state:?}");
                if frozen {
                    // Leave nothing half-frozen: a container stuck in FREEZING cannot be
                    // killed cleanly or resumed by the user.
                    let _ = fs::write(&file, if self.is_v2() { "0" } else { "THAWED" });
                }
                return Err(Error::FreezeTimeout {
                    path: file,
                    want,
                    last,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(10));
            polls += 1;
            // v1 can stay in FREEZING when a task was forking while it was asked; asking again
            // retries the tasks that escaped.
            if frozen && !self.is_v2() && polls >= 20 {
                polls = 0;
                fs::write(&file, value)?;
            }
        }
    }

    /// Sends `sig` to every process of the cgroup. On v2 with `cgroup.kill` (Linux 5.14) SIGKILL
    /// is one write; otherwise the cgroup is frozen while the processes are signalled, so that a
    /// process cannot fork a child that escapes the list, then thawed.
    pub fn kill_all(&self, sig: Signal) -> Result<()> {
        // Nothing to signal: skip the freeze (a v1 freeze can take a scheduler tick or more).
        if self.procs()?.is_empty() {
            return Ok(());
        }
        if let Layout::V2 { dir, .. } = &self.layout {
            let kill_file = dir.join("cgroup.kill");
            if sig == Signal::SIGKILL && kill_file.exists() {
                return fs::write(&kill_file, "1");
            }
        }
        // Without a freezer (or if freezing timed out) the processes are still signalled: a kill
        // that might miss a just-forked child beats no kill at all.
        let frozen = match self.freeze() {
            Ok(()) => true,
            Err(e) => {
                debug!(error = %e, "signalling the cgroup's processes without freezing it");
                false
            }
        };
        let result = self.signal_each(sig);
        if frozen {
            self.thaw()?;
        }
        result
    }

    fn signal_each(&self, sig: Signal) -> Result<()> {
        for pid in self.procs()? {
            match kill(Pid::from_raw(pid), sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Kill {
                        pid,
                        signal: sig,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Removes the cgroup (and any child cgroups the container made) from every hierarchy.
    /// A cgroup that is already gone is fine; one that is busy because its last processes are
    /// still exiting is retried for a short while.
    pub fn delete(self) -> Result<()> {
        for dir in self.dirs() {
            remove_tree(dir)?;
        }
        Ok(())
    }
}

fn own_cgroups_for(spec: &SpecPath) -> Result<OwnCgroups> {
    if spec.from_root {
        Ok(OwnCgroups::default())
    } else {
        OwnCgroups::current()
    }
}

/// The distinct paths among `paths`, in order.
fn unique<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> Vec<&'a Path> {
    let mut seen = BTreeSet::new();
    paths
        .filter(|p| seen.insert(p.as_path()))
        .map(PathBuf::as_path)
        .collect()
}

fn mkdir_all(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Create {
        path: dir.to_path_buf(),
        source,
    })
}

/// Fills empty `cpuset.cpus`/`cpuset.mems` from the parent, for every level from the mount down
/// to `dir`, so that each level has something to copy from its own parent.
fn inherit_cpuset(mount: &Path, dir: &Path) -> Result<()> {
    let Ok(rel) = dir.strip_prefix(mount) else {
        return Ok(());
    };
    let mut parent = mount.to_path_buf();
    for component in rel.components() {
        let child = parent.join(component);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let Some(current) = fs::read_opt(&child.join(file))? else {
                continue;
            };
            if !current.trim().is_empty() {
                continue;
            }
            let from_parent = fs::read(&parent.join(file))?;
            let from_parent = from_parent.trim();
            if !from_parent.is_empty() {
                fs::write(&child.join(file), from_parent)?;
            }
        }
        parent = child;
    }
    Ok(())
}

/// Enables [`V2_CONTROLLERS`] in `cgroup.subtree_control` of `root` and of every directory
/// between it and `dir` (not `dir` itself, which will hold processes), making the directories
/// on the way. Controllers a level does not offer are skipped; a level that refuses (it holds
/// processes, or a controller is in threaded mode) is logged and passed, and the limits that
/// need the controller then fail with a clear error when applied.
fn enable_controllers_down_to(root: &Path, dir: &Path) -> Result<()> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut level = root.to_path_buf();
    let components: Vec<_> = rel.components().collect();
    for (i, component) in components.iter().enumerate() {
        enable_controllers(&level)?;
        level.push(component);
        if i + 1 < components.len() {
            mkdir_all(&level)?;
        }
    }
    Ok(())
}

fn enable_controllers(level: &Path) -> Result<()> {
    let Some(available) = fs::read_opt(&level.join("cgroup.controllers"))? else {
        return Ok(());
    };
    let enabled = fs::read_opt(&level.join("cgroup.subtree_control"))?.unwrap_or_default();
    let enabled: BTreeSet<&str> = enabled.split_whitespace().collect();
    let missing: Vec<&str> = available
        .split_whitespace()
        .filter(|c| V2_CONTROLLERS.contains(c) && !enabled.contains(c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let file = level.join("cgroup.subtree_control");
    let all = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    if fs::write(&file, &all).is_ok() {
        return Ok(());
    }
    // One write is all-or-nothing; retry one controller at a time to enable what can be.
    for c in missing {
        if let Err(e) = fs::write(&file, &format!("+{c}")) {
            debug!(controller = c, error = %e, "cannot enable controller");
        }
    }
    Ok(())
}

/// Removes `dir` and the cgroups below it, deepest first. Missing is fine; EBUSY is retried
/// until [`REMOVE_TIMEOUT`].
fn remove_tree(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Remove {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&entry.path())?;
        }
    }
    let start = Instant::now();
    let mut pause = Duration::from_millis(2);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < REMOVE_TIMEOUT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            Err(source) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}
