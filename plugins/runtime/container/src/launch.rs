//! Making a process of a container, in three stages joined by a socket pair (`sync`):
//!
//! 1. **the shim** (caller of [`create`]) forks an *intermediate* process; it writes the user
//!    namespace's id maps and places the intermediate in the container's cgroup
//!    ([`Parent::joined`]) before the intermediate goes on;
//! 2. **the intermediate** joins the namespaces given by path, unshares the new ones (the pid
//!    namespace applies to its children only), forks the container's process, reports that pid
//!    and exits; the shim, a child subreaper, inherits the process;
//! 3. **the container process** sets up the root filesystem (init only), its stdio or console,
//!    hostname, sysctls, rlimits, user, capabilities and cwd, resolves the executable, reports
//!    Ready and waits for Start, then runs the last hook (seccomp) and execs.
//!
//! A container's first process with no user namespace and nothing to join (what `ctr run` asks
//! for by default) skips stage 2: the shim clones it straight into its new namespaces (and its
//! v2 cgroup) with `clone3`, and it joins its v1 cgroups and makes its cgroup namespace itself.
//!
//! The forks happen in a single-threaded shim, so the children may allocate; they never return
//! into the caller: every path ends in `_exit`.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;
use nix::unistd::{ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::error::{sys, Error, Result};
use crate::process;
use crate::rootfs::{self, CgroupMounts, RootfsOptions};
use crate::sync::{self, Channel, Kind};
use crate::syscall::Linux;

/// What kind of process is made.
#[derive(Debug, Clone, Copy)]
pub enum Mode<'a> {
    /// The container's first process: new namespaces, the root filesystem.
    Init {
        /// The root filesystem, absolute, already mounted.
        rootfs: &'a Path,
        cgroups: &'a CgroupMounts,
    },
    /// Another process in a running container: joins the namespaces of `init_pid`.
    Exec { init_pid: i32 },
}

/// Everything [`create`] needs.
pub struct Request<'a> {
    pub spec: &'a Spec,
    /// For init, the spec's process; for an exec, its own.
    pub process: &'a Process,
    pub mode: Mode<'a>,
    /// Descriptors that become fds 0, 1 and 2 (when there is no terminal).
    pub stdio: [RawFd; 3],
    /// Give the process a pty; its master side comes back in [`Created::console`].
    pub terminal: bool,
    /// Run in the process right before `execve` (seccomp is loaded here).
    pub before_exec: Option<&'a dyn Fn() -> std::result::Result<(), String>>,
    /// A cgroup v2 directory to start the processes in (`clone3` with `CLONE_INTO_CGROUP`):
    /// no migration afterwards, whose write lock costs a RCU grace period (milliseconds) per
    /// container. `None`, or a kernel without it, falls back to [`Parent::joined`] migrating.
    pub cgroup_dir: Option<RawFd>,
    /// cgroup v1 `tasks` files, open for writing: the process the shim forks (the intermediate,
    /// or the container process when there is none), single-threaded, writes `0` to each first
    /// thing and so joins those hierarchies itself, which the kernel does without the
    /// migration's write lock.
    pub cgroup_tasks: &'a [(PathBuf, File)],
}

/// The shim's part while the container is made.
pub trait Parent {
    /// The intermediate process exists (the container's process will be its child): place it in
    /// the cgroup (unless `in_cgroup`: it was started there or joined by itself), set its OOM
    /// score.
    fn joined(&mut self, pid: i32, in_cgroup: bool) -> std::result::Result<(), String>;
    /// The container process is about to `pivot_root`: run the hooks that run in the runtime's
    /// namespaces now (`prestart`, `createRuntime`) and return the container's state (JSON),
    /// which the process gives its own hooks (`createContainer`, `startContainer`).
    fn hooks(&mut self, pid: i32) -> std::result::Result<Vec<u8>, String>;
}

/// A created process, waiting for Start.
#[derive(Debug)]
pub struct Created {
    pub pid: i32,
    /// The console's master side when a terminal was asked for.
    pub console: Option<OwnedFd>,
    /// Cloned straight from the caller, without the intermediate process.
    pub direct: bool,
    channel: Channel,
}

impl Created {
    /// Lets the process exec. Errors from exec itself come back here (a missing shared library,
    /// a denied execve).
    pub fn start(self) -> Result<()> {
        self.channel.send(Kind::Start, b"")?;
        match self.channel.recv()? {
            None => Ok(()),
            Some(m) if m.kind == Kind::Error => Err(Error::Child(
                String::from_utf8_lossy(&m.payload).into_owned(),
            )),
            Some(m) => Err(Error::Handshake(format!(
                "unexpected {:?} after start",
                m.kind
            ))),
        }
    }
}

/// The namespaces of the spec (or of the container an exec joins): what to join, what to make.
#[derive(Debug)]
struct Namespaces {
    /// Opened before the fork (paths such as `/proc/<pid>/ns/net` are the shim's view).
    join: Vec<(CloneFlags, File)>,
    new: CloneFlags,
}

fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// `/proc/<pid>/ns/<name>` names, in the order they are joined: the user namespace first (it
/// owns the others), the mount namespace last (it changes the root the others' paths are in).
const NS_ORDER: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("pid", CloneFlags::CLONE_NEWPID),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

fn open_ns(path: &Path) -> Result<File> {
    File::open(path).map_err(|e| Error::Io {
        action: "open namespace",
        source: std::io::Error::new(e.kind(), format!("{}: {e}", path.display())),
    })
}

fn order_of(flag: CloneFlags) -> usize {
    NS_ORDER
        .iter()
        .position(|(_, f)| *f == flag)
        .unwrap_or(NS_ORDER.len())
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            join: Vec::new(),
            new: CloneFlags::empty(),
        }
    }
}

impl Namespaces {
    fn of_spec(spec: &Spec) -> Result<Namespaces> {
        let mut ns = Namespaces::default();
        for n in spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or_default()
        {
            let flag = clone_flag(n.typ());
            match n.path() {
                Some(p) if !p.as_os_str().is_empty() => ns.join.push((flag, open_ns(p)?)),
                _ => ns.new.insert(flag),
            }
        }
        ns.join.sort_by_key(|(f, _)| order_of(*f));
        Ok(ns)
    }

    /// Every namespace of `pid` that is not already ours.
    fn of_process(pid: i32) -> Result<Namespaces> {
        let mut ns = Namespaces::default();
        for (name, flag) in NS_ORDER {
            let theirs = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            let ours = PathBuf::from(format!("/proc/self/ns/{name}"));
            let (Ok(t), Ok(o)) = (std::fs::metadata(&theirs), std::fs::metadata(&ours)) else {
                continue;
            };
            if t.ino() != o.ino() || t.dev() != o.dev() {
                ns.join.push((flag, open_ns(&theirs)?));
            }
        }
        Ok(ns)
    }

    fn has(&self, flag: CloneFlags) -> bool {
        self.new.contains(flag) || self.join.iter().any(|(f, _)| *f == flag)
    }
}

/// Makes the process and leaves it waiting for [`Created::start`].
pub fn create(req: &Request<'_>, parent: &mut dyn Parent) -> Result<Created> {
    let ns = match req.mode {
        Mode::Init { .. } => Namespaces::of_spec(req.spec)?,
        Mode::Exec { init_pid } => Namespaces::of_process(init_pid)?,
    };
    if matches!(req.mode, Mode::Init { .. })
        && ns.join.is_empty()
        && !ns.new.contains(CloneFlags::CLONE_NEWUSER)
    {
        if let Some(created) = create_direct(req, parent, &ns)? {
            return Ok(created);
        }
    }
    // Resolved now, in the shim, where errors are easy to report; the maps are written by the
    // shim for the intermediate once it has its user namespace.
    let (ours, theirs) = sync::pair()?;
    let (forked, cloned_into) = fork_into(req.cgroup_dir)?;
    // On a hybrid host the v1 hierarchies are what counts; the unified one is a courtesy.
    let in_cgroup = cloned_into || !req.cgroup_tasks.is_empty();
    match forked {
        ForkResult::Child => {
            drop(ours);
            let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                intermediate(req, &ns, &theirs)
            })) {
                Ok(Ok(())) => 0,
                Ok(Err(e)) => {
                    let _ = theirs.send(Kind::Error, e.to_string().as_bytes());
                    1
                }
                Err(_) => {
                    let _ = theirs.send(Kind::Error, b"container set-up panicked");
                    2
                }
            };
            // SAFETY: _exit ends the forked process without running the shim's destructors or
            // atexit handlers, which belong to the parent.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(ns);
            let created = drive(req, parent, &ours, child, in_cgroup, false);
            // The intermediate exits right after reporting the pid (or on an error): reap it
            // here, not in the shim's reaper, which would take it for a container process.
            let _ = nix::sys::wait::waitpid(child, None);
            let (pid, console) = created?;
            Ok(Created {
                pid,
                console,
                direct: false,
                channel: ours,
            })
        }
    }
}

/// The shim's side of the handshake, up to Ready.
fn drive(
    req: &Request<'_>,
    parent: &mut dyn Parent,
    ch: &Channel,
    // The process the shim forked: the intermediate, or the container process itself when it
    // was cloned `direct`ly (then no Pid message comes).
    child: Pid,
    in_cgroup: bool,
    direct: bool,
) -> Result<(i32, Option<OwnedFd>)> {
    let first = ch
        .recv()?
        .ok_or_else(|| Error::Handshake("the forked process exited before it reported".into()))?;
    match first.kind {
        Kind::UserNs => write_id_maps(req.spec, child.as_raw())?,
        Kind::NoUserNs => {}
        Kind::Error => {
            return Err(Error::Child(
                String::from_utf8_lossy(&first.payload).into_owned(),
            ))
        }
        k => return Err(Error::Handshake(format!("unexpected {k:?}"))),
    }
    if let Err(e) = parent.joined(child.as_raw(), in_cgroup) {
        let _ = ch.send(Kind::Error, e.as_bytes());
        return Err(Error::Child(e));
    }
    ch.send(Kind::Go, b"")?;
    let pid = if direct {
        child.as_raw()
    } else {
        let m = ch.expect(Kind::Pid)?;
        i32::from_le_bytes(
            m.payload
                .as_slice()
                .try_into()
                .map_err(|_| Error::Handshake("bad pid message".into()))?,
        )
    };
    let mut console = None;
    loop {
        let m = ch
            .recv()?
            .ok_or_else(|| Error::Handshake("the container process exited during set-up".into()))?;
        match m.kind {
            Kind::Console => console = m.fd,
            Kind::Hooks => match parent.hooks(pid) {
                Ok(state) => ch.send(Kind::Go, &state)?,
                Err(e) => {
                    let _ = ch.send(Kind::Error, e.as_bytes());
                    return Err(Error::Child(e));
                }
            },
            Kind::Ready => return Ok((pid, console)),
            Kind::Error => {
                return Err(Error::Child(
                    String::from_utf8_lossy(&m.payload).into_owned(),
                ))
            }
            k => return Err(Error::Handshake(format!("unexpected {k:?}"))),
        }
    }
}

/// `include/uapi/linux/sched.h` (libc's constant is an overflowing `c_int`).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `clone3`'s arguments (`struct clone_args`, the size of its second version, with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3` as a fork (no `CLONE_VM`, no stack: the child continues here with a copy of this
/// single-threaded process), with `flags` and, when `cgroup` is given, `CLONE_INTO_CGROUP`.
fn clone3(flags: u64, cgroup: Option<RawFd>) -> nix::Result<ForkResult> {
    let mut args = CloneArgs {
        flags: flags | cgroup.map_or(0, |_| CLONE_INTO_CGROUP),
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.map_or(0, |fd| fd as u64),
        ..CloneArgs::default()
    };
    // SAFETY: clone3 without CLONE_VM and without a stack behaves as fork; `args` is valid for
    // the call and its size is the one passed. The callers are single-threaded (see `create`)
    // and their children end in `_exit` or `execve`. Unlike glibc's fork, the raw call leaves
    // glibc's cached thread id in the child at the parent's; nothing the child runs reads it
    // (no pthread calls; only an `abort` would signal the wrong thread, and still end it).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match rc {
        0 => Ok(ForkResult::Child),
        pid if pid > 0 => Ok(ForkResult::Parent {
            child: Pid::from_raw(pid as i32),
        }),
        _ => Err(nix::Error::last()),
    }
}

/// What `clone3` answers when the kernel lacks it (before 5.3) or `CLONE_INTO_CGROUP` (before
/// 5.7), or cannot start a process in that cgroup.
fn unsupported(e: nix::Error) -> bool {
    matches!(
        e,
        nix::Error::ENOSYS | nix::Error::E2BIG | nix::Error::EINVAL
    )
}

/// `clone3` with `flags`, straight into the cgroup `dir` when given and the kernel can (5.7+;
/// else the caller migrates the child); returns whether the child started there. `None` when
/// the kernel has no `clone3` for this at all.
fn clone3_into(
    flags: u64,
    dir: Option<RawFd>,
    action: &'static str,
) -> Result<Option<(ForkResult, bool)>> {
    if dir.is_some() {
        match clone3(flags, dir) {
            Ok(forked) => return Ok(Some((forked, true))),
            Err(e) if unsupported(e) => {}
            Err(e) => return Err(sys(action)(e)),
        }
    }
    match clone3(flags, None) {
        Ok(forked) => Ok(Some((forked, false))),
        Err(e) if unsupported(e) => Ok(None),
        Err(e) => Err(sys(action)(e)),
    }
}

/// Forks, straight into the cgroup `dir` when given and the kernel can (5.7+); returns whether
/// the child started there.
fn fork_into(dir: Option<RawFd>) -> Result<(ForkResult, bool)> {
    if dir.is_some() {
        if let Some(forked) = clone3_into(0, dir, "clone3 into the cgroup")? {
            return Ok(forked);
        }
    }
    // SAFETY: the shim is single-threaded when it creates containers (its runtime has one
    // thread and no blocking pool), so the child may allocate; the child never returns: it ends
    // in `_exit`.
    let forked = unsafe { nix::unistd::fork() }.map_err(sys("fork"))?;
    Ok((forked, false))
}

/// The container's init cloned straight from the shim, in its new namespaces (and its v2
/// cgroup), when there is no user namespace to map and no namespace to join: then nothing needs
/// the intermediate process, whose fork, exit and extra handshake step cost every container. The
/// cgroup namespace is the exception: made by the child once it is in its cgroup, since a clone
/// would root it at the shim's. `None` when the kernel cannot (`clone3` before 5.3): the caller
/// goes through the intermediate.
fn create_direct(
    req: &Request<'_>,
    parent: &mut dyn Parent,
    ns: &Namespaces,
) -> Result<Option<Created>> {
    let (ours, theirs) = sync::pair()?;
    let flags = (ns.new - CloneFlags::CLONE_NEWCGROUP).bits() as u64;
    let Some((forked, cloned_into)) =
        clone3_into(flags, req.cgroup_dir, "clone the container process")?
    else {
        return Ok(None);
    };
    let in_cgroup = cloned_into || !req.cgroup_tasks.is_empty();
    match forked {
        ForkResult::Child => {
            drop(ours);
            run_container_process(&theirs, || {
                join_cgroup_tasks(req)?;
                theirs.send(Kind::NoUserNs, b"")?;
                theirs.expect(Kind::Go)?;
                if ns.new.contains(CloneFlags::CLONE_NEWCGROUP) {
                    nix::sched::unshare(CloneFlags::CLONE_NEWCGROUP)
                        .map_err(sys("unshare the cgroup namespace"))?;
                }
                container_process(req, ns, &theirs)
            })
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            match drive(req, parent, &ours, child, in_cgroup, true) {
                Ok((pid, console)) => Ok(Some(Created {
                    pid,
                    console,
                    direct: true,
                    channel: ours,
                })),
                Err(e) => {
                    // It failed or was told to stop; it is the shim's child: reap it here, not
                    // in the shim's reaper, which would take it for a container's exit.
                    let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                    let _ = nix::sys::wait::waitpid(child, None);
                    Err(e)
                }
            }
        }
    }
}

/// Joins the container's v1 cgroups by writing `0` to each hierarchy's `tasks` (the process
/// moves itself, which the kernel does without the migration's write lock); before any
/// namespace changes, as the files belong to the host's cgroup filesystem.
fn join_cgroup_tasks(req: &Request<'_>) -> Result<()> {
    for (path, file) in req.cgroup_tasks {
        use std::io::Write;
        (&*file).write_all(b"0").map_err(|e| Error::Io {
            action: "join the cgroup",
            source: std::io::Error::new(e.kind(), format!("write 0 to {}: {e}", path.display())),
        })?;
    }
    Ok(())
}

fn write_id_maps(spec: &Spec, pid: i32) -> Result<()> {
    let linux = spec.linux().as_ref();
    for (file, maps) in [
        ("uid_map", linux.and_then(|l| l.uid_mappings().as_ref())),
        ("gid_map", linux.and_then(|l| l.gid_mappings().as_ref())),
    ] {
        let Some(maps) = maps.filter(|m| !m.is_empty()) else {
            return Err(Error::Spec(
                "a new user namespace needs uidMappings and gidMappings".into(),
            ));
        };
        let text: String = maps
            .iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect();
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text).map_err(|e| Error::Io {
            action: "write id map",
            source: std::io::Error::new(e.kind(), format!("{path}: {e}")),
        })?;
    }
    Ok(())
}

/// Stage 2, in the forked intermediate.
fn intermediate(req: &Request<'_>, ns: &Namespaces, ch: &Channel) -> Result<()> {
    join_cgroup_tasks(req)?;
    for (flag, file) in &ns.join {
        nix::sched::setns(file, *flag).map_err(sys("join a namespace"))?;
    }
    let user_ns = ns.new.contains(CloneFlags::CLONE_NEWUSER);
    if user_ns {
        nix::sched::unshare(CloneFlags::CLONE_NEWUSER)
            .map_err(sys("unshare the user namespace"))?;
        ch.send(Kind::UserNs, b"")?;
    } else {
        ch.send(Kind::NoUserNs, b"")?;
    }
    ch.expect(Kind::Go)?;
    if user_ns || ns.join.iter().any(|(f, _)| *f == CloneFlags::CLONE_NEWUSER) {
        // Become the namespace's root (uid 0 is mapped by now) so the set-up is privileged in it.
        let root_u = nix::unistd::Uid::from_raw(0);
        let root_g = nix::unistd::Gid::from_raw(0);
        nix::unistd::setresgid(root_g, root_g, root_g)
            .map_err(sys("setgid 0 in the user namespace"))?;
        nix::unistd::setresuid(root_u, root_u, root_u)
            .map_err(sys("setuid 0 in the user namespace"))?;
    }
    let rest = ns.new - CloneFlags::CLONE_NEWUSER;
    if !rest.is_empty() {
        nix::sched::unshare(rest).map_err(sys("unshare namespaces"))?;
    }
    // The container process shares the channel with this one, and the shim reads its messages
    // in order: Pid first. A gate keeps the process from speaking before the pid is out (an exec
    // reaches Ready in a few syscalls, which under load can beat this process's one send).
    let (gate_r, gate_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
    // SAFETY: single-threaded (this process was forked from a single-threaded shim); the child
    // ends in `_exit` or `execve`.
    match unsafe { nix::unistd::fork() }.map_err(sys("fork the container process"))? {
        ForkResult::Parent { child } => {
            drop(gate_r);
            ch.send(Kind::Pid, &child.as_raw().to_le_bytes())?;
            nix::unistd::write(&gate_w, b"p").map_err(sys("open the gate"))?;
            Ok(())
        }
        ForkResult::Child => {
            drop(gate_w);
            let mut byte = [0u8; 1];
            // End of file without the byte: this process failed to report the pid; give up.
            if !matches!(nix::unistd::read(&gate_r, &mut byte), Ok(1)) {
                // SAFETY: see `create`.
                unsafe { libc::_exit(1) }
            }
            drop(gate_r);
            run_container_process(ch, || container_process(req, ns, ch))
        }
    }
}

/// Runs the container process's set-up, which returns only on failure (or panics): the error
/// goes to the shim and the process ends.
fn run_container_process(ch: &Channel, setup: impl FnOnce() -> Result<Infallible>) -> ! {
    let msg = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(setup)) {
        Ok(Ok(never)) => match never {},
        Ok(Err(e)) => e.to_string(),
        Err(_) => "container set-up panicked".to_owned(),
    };
    let _ = ch.send(Kind::Error, msg.as_bytes());
    // SAFETY: see `create`.
    unsafe { libc::_exit(1) }
}

/// Stage 3, in the container's process. Returns only on error.
fn container_process(req: &Request<'_>, ns: &Namespaces, ch: &Channel) -> Result<Infallible> {
    let sys = Linux;
    let user_ns = ns.has(CloneFlags::CLONE_NEWUSER);
    let mut pty_slave: Option<PathBuf> = None;
    let mut hook_state = Vec::new();
    match req.mode {
        Mode::Init { rootfs, cgroups } => {
            if !ns.new.contains(CloneFlags::CLONE_NEWNS) {
                return Err(Error::Spec(
                    "the container needs its own mount namespace".into(),
                ));
            }
            let opts = RootfsOptions {
                rootfs,
                cgroups,
                cgroup_ns: ns.new.contains(CloneFlags::CLONE_NEWCGROUP),
                user_ns,
            };
            rootfs::prepare(&sys, req.spec, &opts)?;
            if req.terminal {
                let (master, slave) = open_pty(&rootfs.join("dev/ptmx"))?;
                // `/dev/console` is the terminal too, as in runc.
                let console = rootfs.join("dev/console");
                if rootfs.join("dev").is_dir() {
                    crate::syscall::Syscall::create_file(&sys, &console)?;
                    crate::syscall::Syscall::mount(
                        &sys,
                        Some(&rootfs.join(slave.strip_prefix("/").unwrap_or(&slave))),
                        &console,
                        None,
                        nix::mount::MsFlags::MS_BIND,
                        None,
                    )?;
                }
                ch.send_with_fd(Kind::Console, b"", Some(master.as_raw_fd()))?;
                pty_slave = Some(slave);
            }
            if has_hooks(req.spec) {
                ch.send(Kind::Hooks, b"")?;
                hook_state = ch.expect(Kind::Go)?.payload;
                // In the container's namespaces, the host's filesystem still visible.
                let create = req
                    .spec
                    .hooks()
                    .as_ref()
                    .and_then(|h| h.create_container().as_ref());
                crate::hooks::run_all(create, &hook_state).map_err(Error::Child)?;
            }
            rootfs::pivot(&sys, rootfs)?;
            if ns.new.contains(CloneFlags::CLONE_NEWUTS) {
                if let Some(h) = req.spec.hostname().as_deref() {
                    crate::syscall::Syscall::sethostname(&sys, h)?;
                }
                if let Some(d) = req.spec.domainname().as_deref() {
                    crate::syscall::Syscall::setdomainname(&sys, d)?;
                }
            }
            for (key, value) in req
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.sysctl().as_ref())
                .into_iter()
                .flatten()
            {
                let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
                crate::syscall::Syscall::write_file(&sys, &path, value)?;
            }
            // Last, as runc: masked and read-only paths (/proc/sys among them) and a read-only
            // root come after the sysctls were written.
            rootfs::finish(&sys, req.spec)?;
        }
        Mode::Exec { .. } => {
            if req.terminal {
                let (master, slave) = open_pty(Path::new("/dev/ptmx"))?;
                ch.send_with_fd(Kind::Console, b"", Some(master.as_raw_fd()))?;
                pty_slave = Some(slave);
            }
        }
    }
    setup_stdio(req, pty_slave.as_deref())?;
    process::set_rlimits(req.process)?;
    process::drop_bounding(req.process)?;
    process::set_user(req.process, user_ns)?;
    process::set_capabilities(req.process)?;
    process::chdir_cwd(req.process)?;
    let exe = process::resolve_executable(req.process)?;
    process::set_no_new_privileges(req.process)?;
    ch.send(Kind::Ready, b"")?;
    match ch.recv()? {
        Some(m) if m.kind == Kind::Start => {}
        // The shim went away or gave up on this container: do not run it.
        _ => {
            // SAFETY: see `create`.
            unsafe { libc::_exit(1) }
        }
    }
    if let Mode::Init { .. } = req.mode {
        // In the container, its root in place, right before the user's program.
        let start = req
            .spec
            .hooks()
            .as_ref()
            .and_then(|h| h.start_container().as_ref());
        crate::hooks::run_all(start, &hook_state).map_err(Error::Child)?;
    }
    if let Some(hook) = req.before_exec {
        hook().map_err(Error::Child)?;
    }
    close_other_fds();
    reset_signals();
    let err = nix::unistd::execve(&exe.path, &exe.argv, &exe.envp).unwrap_err();
    let name = req
        .process
        .args()
        .as_ref()
        .and_then(|a| a.first().cloned())
        .unwrap_or_default();
    Err(Error::Exec {
        name,
        reason: sync::lower_first(err.desc()),
    })
}

/// Whether the spec has hooks to run while the container is made (the shim's and its own).
fn has_hooks(spec: &Spec) -> bool {
    spec.hooks().as_ref().is_some_and(|h| {
        [
            h.prestart(),
            h.create_runtime(),
            h.create_container(),
            h.start_container(),
        ]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| !v.is_empty()))
    })
}

/// Opens a new pty through `ptmx` (the container's devpts instance) and returns its master and
/// the slave's path as the container will see it (`/dev/pts/N`).
fn open_pty(ptmx: &Path) -> Result<(OwnedFd, PathBuf)> {
    use nix::fcntl::{open, OFlag};
    let fd = open(
        ptmx,
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(crate::error::at("open", ptmx))?;
    // SAFETY: fd is an open pty master we own.
    let rc = unsafe { libc::unlockpt(fd.as_raw_fd()) };
    nix::errno::Errno::result(rc).map_err(sys("unlock the pty"))?;
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCGPTN writes one int through the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGPTN, &mut n) };
    nix::errno::Errno::result(rc).map_err(sys("read the pty number"))?;
    Ok((fd, PathBuf::from(format!("/dev/pts/{n}"))))
}

fn setup_stdio(req: &Request<'_>, pty_slave: Option<&Path>) -> Result<()> {
    nix::unistd::setsid().map_err(sys("setsid"))?;
    let fds: [RawFd; 3] = if let Some(slave) = pty_slave {
        let fd = nix::fcntl::open(
            slave,
            nix::fcntl::OFlag::O_RDWR,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(crate::error::at("open", slave))?;
        // SAFETY: TIOCSCTTY takes an int argument; fd is the open slave.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
        nix::errno::Errno::result(rc).map_err(sys("make the pty the controlling terminal"))?;
        let raw = fd.as_raw_fd();
        std::mem::forget(fd);
        [raw; 3]
    } else {
        req.stdio
    };
    // Move every source out of 0..=2 first so that a dup2 never overwrites a later source.
    let mut high = [0; 3];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC only duplicates a descriptor this process holds.
        let rc = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10) };
        high[i] = nix::errno::Errno::result(rc).map_err(sys("duplicate stdio"))?;
    }
    for (target, fd) in high.iter().enumerate() {
        // SAFETY: dup2 between descriptors this process holds; fds 0-2 are meant to be replaced.
        let rc = unsafe { libc::dup2(*fd, target as RawFd) };
        nix::errno::Errno::result(rc).map_err(sys("dup2 stdio"))?;
    }
    Ok(())
}

/// Marks every descriptor above 2 close-on-exec, so that nothing of the shim leaks into the
/// container (the start channel is already close-on-exec and tells the shim exec happened).
fn close_other_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags on descriptors we own.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc != 0 {
        // Older kernels: walk /proc/self/fd.
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            let fds: Vec<RawFd> = dir
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|fd| *fd > 2)
                .collect();
            for fd in fds {
                // SAFETY: setting FD_CLOEXEC on a descriptor number; a stale number fails harmlessly.
                unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            }
        }
    }
}

/// The process starts with every signal at its default action and none blocked: the shim's
/// own dispositions (Rust ignores SIGPIPE, the runtime catches SIGCHLD) must not leak in, as an
/// ignored SIGPIPE would survive execve.
fn reset_signals() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL is always sound; invalid numbers fail harmlessly.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    // SAFETY: an empty set, initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn namespaces_join_user_first_and_mount_last() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, "").unwrap();
            p.display().to_string()
        };
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","linux":{{"namespaces":[
                {{"type":"mount","path":"{}"}},
                {{"type":"network","path":"{}"}},
                {{"type":"pid"}},
                {{"type":"user","path":"{}"}},
                {{"type":"uts","path":""}},
                {{"type":"ipc"}}]}}}}"#,
            path("mnt"),
            path("net"),
            path("user")
        ));
        let ns = Namespaces::of_spec(&s).unwrap();
        let joined: Vec<CloneFlags> = ns.join.iter().map(|(f, _)| *f).collect();
        assert_eq!(
            joined,
            vec![
                CloneFlags::CLONE_NEWUSER,
                CloneFlags::CLONE_NEWNET,
                CloneFlags::CLONE_NEWNS
            ]
        );
        // An empty path means a new namespace, as in runc.
        assert_eq!(
            ns.new,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC
        );
        assert!(ns.has(CloneFlags::CLONE_NEWUSER) && !ns.has(CloneFlags::CLONE_NEWCGROUP));
    }

    #[test]
    fn a_missing_namespace_path_is_named() {
        let s = spec(
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"network","path":"/proc/999999999/ns/net"}]}}"#,
        );
        let err = Namespaces::of_spec(&s).unwrap_err().to_string();
        assert!(err.contains("/proc/999999999/ns/net"), "{err}");
    }

    #[test]
    fn an_exec_joins_nothing_of_its_own_process() {
        let ns = Namespaces::of_process(std::process::id() as i32).unwrap();
        assert!(ns.join.is_empty());
        assert!(ns.new.is_empty());
    }
}
