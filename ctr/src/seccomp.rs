//! Seccomp profiles for `bctr run --seccomp` and `--seccomp-profile FILE`, as containerd 1.6's
//! `contrib/seccomp` makes them for `ctr run`.
//!
//! The default profile follows containerd 1.6's default profile (itself derived from Docker's): a
//! call that no rule allows fails with `EPERM` (`SCMP_ACT_ERRNO`, runc's default errno); the
//! [`BASELINE`] groups are allowed to every container; the [`CONDITIONAL`] rules add or restrict
//! calls according to the host (its architecture and kernel) and to the capabilities in the
//! spec's bounding set — a capability that lets a process do something also lets it make the
//! calls that do it. The profile is data: changing the policy means changing a table, not code.
//!
//! The rules are written out in containerd's order (baseline, host rules, one group per bounding
//! capability in the spec's order, then the rules for a missing `CAP_SYS_ADMIN`), so the same
//! spec gives the same profile as ctr's, rule for rule, except that containerd lists the
//! baseline alphabetically where bctr groups it by purpose.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot load seccomp profile {path:?}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "decoding seccomp profile failed {path:?}: {source} (expected a JSON seccomp profile as in \
         the OCI runtime spec's linux.seccomp: defaultAction, architectures, syscalls)"
    )]
    Decode {
        path: PathBuf,
        source: serde_json::Error,
    },
}

// -------------------------------------------------------------------------------------------
// The baseline: what every container may call, grouped by what the calls are for.

/// Opening, reading, writing and closing files and other descriptors.
const FILE_IO: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "close",
    "close_range",
    "dup",
    "dup2",
    "dup3",
    "fcntl",
    "fcntl64",
    "flock",
    "ioctl",
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "lseek",
    "_llseek",
    "sendfile",
    "sendfile64",
    "splice",
    "tee",
    "vmsplice",
    "copy_file_range",
    "readahead",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "truncate",
    "truncate64",
    "ftruncate",
    "ftruncate64",
    "sync",
    "syncfs",
    "fsync",
    "fdatasync",
    "sync_file_range",
    "pipe",
    "pipe2",
];

/// Looking at the file system tree and changing names, modes, owners, times and attributes in it.
/// (Mounting is not here: it needs `CAP_SYS_ADMIN`.)
const FILE_SYSTEM: &[&str] = &[
    "stat",
    "stat64",
    "lstat",
    "lstat64",
    "fstat",
    "fstat64",
    "fstatat64",
    "newfstatat",
    "statx",
    "statfs",
    "statfs64",
    "fstatfs",
    "fstatfs64",
    "access",
    "faccessat",
    "faccessat2",
    "readlink",
    "readlinkat",
    "getcwd",
    "chdir",
    "fchdir",
    "getdents",
    "getdents64",
    "umask",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "chmod",
    "fchmod",
    "fchmodat",
    "chown",
    "chown32",
    "fchown",
    "fchown32",
    "fchownat",
    "lchown",
    "lchown32",
    "utime",
    "utimes",
    "utimensat",
    "utimensat_time64",
    "futimesat",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "inotify_init",
    "inotify_init1",
    "inotify_add_watch",
    "inotify_rm_watch",
    "fanotify_mark",
];

/// Waiting for descriptors and asynchronous I/O.
const EVENTS_AND_ASYNC_IO: &[&str] = &[
    "select",
    "_newselect",
    "pselect6",
    "pselect6_time64",
    "poll",
    "ppoll",
    "ppoll_time64",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_wait",
    "epoll_wait_old",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd",
    "eventfd2",
    "io_setup",
    "io_destroy",
    "io_submit",
    "io_cancel",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The process's own memory.
const MEMORY: &[&str] = &[
    "brk",
    "mmap",
    "mmap2",
    "munmap",
    "mremap",
    "remap_file_pages",
    "mprotect",
    "madvise",
    "mincore",
    "msync",
    "mlock",
    "mlock2",
    "mlockall",
    "munlock",
    "munlockall",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
];

/// Making, running, waiting for and ending processes and threads, and what a process may learn
/// or restrict about itself. `clone` and `clone3` are not here: the conditional rules decide.
const PROCESSES: &[&str] = &[
    "fork",
    "vfork",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "wait4",
    "waitid",
    "waitpid",
    "getpid",
    "getppid",
    "gettid",
    "getpgid",
    "getpgrp",
    "setpgid",
    "getsid",
    "setsid",
    "set_tid_address",
    "set_robust_list",
    "get_robust_list",
    "futex",
    "futex_time64",
    "futex_waitv",
    "rseq",
    "set_thread_area",
    "get_thread_area",
    "restart_syscall",
    "prctl",
    "capget",
    "capset",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
    "pidfd_open",
    "pidfd_send_signal",
    "process_mrelease",
    "uname",
    "sysinfo",
    "getcpu",
    "getrandom",
];

/// Scheduling, priorities and resource limits (the kernel checks `CAP_SYS_NICE` and
/// `CAP_SYS_RESOURCE` itself where raising them needs it).
const SCHEDULING_AND_LIMITS: &[&str] = &[
    "sched_yield",
    "sched_getaffinity",
    "sched_setaffinity",
    "sched_getattr",
    "sched_setattr",
    "sched_getparam",
    "sched_setparam",
    "sched_getscheduler",
    "sched_setscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "getpriority",
    "setpriority",
    "ioprio_get",
    "ioprio_set",
    "getrlimit",
    "ugetrlimit",
    "setrlimit",
    "prlimit64",
    "getrusage",
    "times",
];

/// User and group IDs (changing them is `CAP_SETUID` / `CAP_SETGID`'s business, which the kernel
/// checks).
const CREDENTIALS: &[&str] = &[
    "getuid",
    "getuid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getegid",
    "getegid32",
    "getresuid",
    "getresuid32",
    "getresgid",
    "getresgid32",
    "getgroups",
    "getgroups32",
    "setuid",
    "setuid32",
    "setgid",
    "setgid32",
    "setreuid",
    "setreuid32",
    "setregid",
    "setregid32",
    "setresuid",
    "setresuid32",
    "setresgid",
    "setresgid32",
    "setfsuid",
    "setfsuid32",
    "setfsgid",
    "setfsgid32",
    "setgroups",
    "setgroups32",
];

/// Signals.
const SIGNALS: &[&str] = &[
    "kill",
    "tkill",
    "tgkill",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigpending",
    "rt_sigqueueinfo",
    "rt_tgsigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "sigaltstack",
    "sigprocmask",
    "sigreturn",
    "signalfd",
    "signalfd4",
    "pause",
];

/// Clocks, sleeps and timers. `adjtimex` and `clock_adjtime` are here because they only read
/// unless the caller has `CAP_SYS_TIME`; setting the clock is in the conditional rules.
const TIME: &[&str] = &[
    "time",
    "gettimeofday",
    "clock_gettime",
    "clock_gettime64",
    "clock_getres",
    "clock_getres_time64",
    "adjtimex",
    "clock_adjtime",
    "clock_adjtime64",
    "nanosleep",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "alarm",
    "getitimer",
    "setitimer",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
];

/// Sockets.
const NETWORK: &[&str] = &[
    "socket",
    "socketpair",
    "socketcall",
    "bind",
    "connect",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "send",
    "sendto",
    "sendmsg",
    "sendmmsg",
    "recv",
    "recvfrom",
    "recvmsg",
    "recvmmsg",
    "recvmmsg_time64",
    "shutdown",
];

/// System V and POSIX inter-process communication (the container has its own IPC namespace).
const IPC: &[&str] = &[
    "ipc",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "semctl",
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_notify",
    "mq_getsetattr",
];

/// Allowed to every container, whatever its capabilities: one rule, the profile's first.
pub const BASELINE: &[&[&str]] = &[
    FILE_IO,
    FILE_SYSTEM,
    EVENTS_AND_ASYNC_IO,
    MEMORY,
    PROCESSES,
    SCHEDULING_AND_LIMITS,
    CREDENTIALS,
    SIGNALS,
    TIME,
    NETWORK,
    IPC,
];

// -------------------------------------------------------------------------------------------
// The conditional rules.

/// When a conditional rule is part of the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum When {
    /// On every host (the rule's [`Arches`] still apply).
    Always,
    /// When the host's kernel is at least this (version, major revision).
    KernelAtLeast(u64, u64),
    /// When the spec's bounding set holds this capability.
    Has(&'static str),
    /// When the spec's bounding set lacks this capability.
    Lacks(&'static str),
}

/// The host architectures (Go's `GOARCH` names, which containerd switches on) a rule is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arches {
    Any,
    Only(&'static [&'static str]),
    Except(&'static [&'static str]),
}

impl Arches {
    fn holds(self, arch: &str) -> bool {
        match self {
            Arches::Any => true,
            Arches::Only(list) => list.contains(&arch),
            Arches::Except(list) => !list.contains(&arch),
        }
    }
}

/// What the rule does with the calls it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Allow,
    /// Fail with `ENOSYS`, so a C library falls back to an older call instead of giving up.
    FailNotImplemented,
}

/// A condition on one argument of the call (all of a rule's conditions must hold; several rules
/// for the same call are alternatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArgIs {
    /// Argument `index` equals `value`.
    Equal { index: usize, value: u64 },
    /// Argument `index`, masked with `mask`, equals `value`.
    MaskedEqual { index: usize, mask: u64, value: u64 },
}

/// One rule of the default profile.
#[derive(Debug, Clone, Copy)]
struct Rule {
    when: When,
    arches: Arches,
    names: &'static [&'static str],
    action: Action,
    args: &'static [ArgIs],
}

/// A rule allowing `names` on every host, without conditions.
const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        when: When::Always,
        arches: Arches::Any,
        names,
        action: Action::Allow,
        args: &[],
    }
}

impl Rule {
    const fn when(self, when: When) -> Rule {
        Rule { when, ..self }
    }
    const fn on(self, arches: Arches) -> Rule {
        Rule { arches, ..self }
    }
    const fn if_args(self, args: &'static [ArgIs]) -> Rule {
        Rule { args, ..self }
    }
    const fn action(self, action: Action) -> Rule {
        Rule { action, ..self }
    }
}

/// `personality(2)` values a container may switch to: Linux, Linux with the 3 GB address space
/// (`ADDR_LIMIT_3GB`), 32-bit Linux (`PER_LINUX32`), both, and `0xffffffff`, which only queries.
const PERSONA_LINUX: &[ArgIs] = &[ArgIs::Equal {
    index: 0,
    value: 0x0,
}];
const PERSONA_LINUX32: &[ArgIs] = &[ArgIs::Equal {
    index: 0,
    value: 0x0008,
}];
const PERSONA_LINUX_3GB: &[ArgIs] = &[ArgIs::Equal {
    index: 0,
    value: 0x20000,
}];
const PERSONA_LINUX32_3GB: &[ArgIs] = &[ArgIs::Equal {
    index: 0,
    value: 0x20008,
}];
const PERSONA_QUERY: &[ArgIs] = &[ArgIs::Equal {
    index: 0,
    value: 0xffff_ffff,
}];

/// The `clone(2)` flags that make new namespaces (`linux/sched.h`): `CLONE_NEWNS`,
/// `CLONE_NEWCGROUP`, `CLONE_NEWUTS`, `CLONE_NEWIPC`, `CLONE_NEWUSER`, `CLONE_NEWPID`,
/// `CLONE_NEWNET`.
const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// s390 swaps `clone`'s first two arguments, so its flags are the second.
const S390: &[&str] = &["s390", "s390x"];

/// `clone` without any namespace flag (flags in argument `index`).
const CLONE_NO_NAMESPACES_ARG0: &[ArgIs] = &[ArgIs::MaskedEqual {
    index: 0,
    mask: CLONE_NAMESPACE_FLAGS,
    value: 0,
}];
const CLONE_NO_NAMESPACES_ARG1: &[ArgIs] = &[ArgIs::MaskedEqual {
    index: 1,
    mask: CLONE_NAMESPACE_FLAGS,
    value: 0,
}];

/// Everything the default profile allows beyond [`BASELINE`], and when.
const CONDITIONAL: &[Rule] = &[
    // personality(2), for the values above only: other personas change how the kernel
    // treats the process (e.g. READ_IMPLIES_EXEC, ADDR_NO_RANDOMIZE).
    allow(&["personality"]).if_args(PERSONA_LINUX),
    allow(&["personality"]).if_args(PERSONA_LINUX32),
    allow(&["personality"]).if_args(PERSONA_LINUX_3GB),
    allow(&["personality"]).if_args(PERSONA_LINUX32_3GB),
    allow(&["personality"]).if_args(PERSONA_QUERY),
    // Before Linux 4.8 ptrace could be used to get around seccomp; since then it is allowed.
    allow(&["ptrace"]).when(When::KernelAtLeast(4, 8)),
    // Calls a C library needs on some architectures only.
    allow(&["sync_file_range2", "swapcontext"]).on(Arches::Only(&["ppc64le"])),
    allow(&[
        "arm_fadvise64_64",
        "arm_sync_file_range",
        "sync_file_range2",
        "breakpoint",
        "cacheflush",
        "set_tls",
    ])
    .on(Arches::Only(&["arm", "arm64"])),
    allow(&["arch_prctl", "modify_ldt"]).on(Arches::Only(&["amd64"])),
    allow(&["modify_ldt"]).on(Arches::Only(&["386"])),
    allow(&[
        "s390_pci_mmio_read",
        "s390_pci_mmio_write",
        "s390_runtime_instr",
    ])
    .on(Arches::Only(S390)),
    allow(&["riscv_flush_icache"]).on(Arches::Only(&["riscv64"])),
    // What a capability lets a process do, it may make the calls for.
    allow(&["open_by_handle_at"]).when(When::Has("CAP_DAC_READ_SEARCH")),
    allow(&[
        "bpf",
        "clone",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "name_to_handle_at",
        "open_tree",
        "perf_event_open",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
    ])
    .when(When::Has("CAP_SYS_ADMIN")),
    allow(&["reboot"]).when(When::Has("CAP_SYS_BOOT")),
    allow(&["chroot"]).when(When::Has("CAP_SYS_CHROOT")),
    allow(&["delete_module", "init_module", "finit_module"]).when(When::Has("CAP_SYS_MODULE")),
    allow(&["acct"]).when(When::Has("CAP_SYS_PACCT")),
    allow(&[
        "kcmp",
        "pidfd_getfd",
        "process_madvise",
        "process_vm_readv",
        "process_vm_writev",
        "ptrace",
    ])
    .when(When::Has("CAP_SYS_PTRACE")),
    allow(&["iopl", "ioperm"]).when(When::Has("CAP_SYS_RAWIO")),
    allow(&["settimeofday", "stime", "clock_settime", "clock_settime64"])
        .when(When::Has("CAP_SYS_TIME")),
    allow(&["vhangup"]).when(When::Has("CAP_SYS_TTY_CONFIG")),
    allow(&["get_mempolicy", "mbind", "set_mempolicy"]).when(When::Has("CAP_SYS_NICE")),
    allow(&["syslog"]).when(When::Has("CAP_SYSLOG")),
    allow(&["bpf"]).when(When::Has("CAP_BPF")),
    allow(&["perf_event_open"]).when(When::Has("CAP_PERFMON")),
    // Without CAP_SYS_ADMIN a process may still make threads and processes, but not namespaces
    // (unshare and setns are not allowed at all then). clone3 passes its flags in memory, which
    // seccomp cannot look at, so it fails with ENOSYS and the C library falls back to clone.
    allow(&["clone"])
        .when(When::Lacks("CAP_SYS_ADMIN"))
        .on(Arches::Except(S390))
        .if_args(CLONE_NO_NAMESPACES_ARG0),
    allow(&["clone"])
        .when(When::Lacks("CAP_SYS_ADMIN"))
        .on(Arches::Only(S390))
        .if_args(CLONE_NO_NAMESPACES_ARG1),
    allow(&["clone3"])
        .when(When::Lacks("CAP_SYS_ADMIN"))
        .action(Action::FailNotImplemented),
];

// -------------------------------------------------------------------------------------------
// Building the profile.

/// What the default profile depends on besides the spec: the machine the container runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Go's `GOARCH` name of this machine (`amd64`, `arm64`, …), as containerd switches on it.
    pub arch: String,
    /// The kernel's (version, major revision), `None` when it could not be read.
    pub kernel: Option<(u64, u64)>,
}

impl Host {
    /// This machine.
    pub fn current() -> Host {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| parse_kernel_release(&r));
        Host {
            arch: berth_oci::platform::host_arch().to_owned(),
            kernel,
        }
    }
}

/// The (version, major revision) of a kernel release such as `6.1.0-18-amd64` or `3.12-1`: the
/// first two numbers, as containerd's `kernelversion` reads them.
pub fn parse_kernel_release(release: &str) -> Option<(u64, u64)> {
    let mut parts = release.trim().splitn(2, '.');
    let leading = |s: &str| -> Option<u64> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    let version = leading(parts.next()?)?;
    let major = leading(parts.next()?)?;
    Some((version, major))
}

/// The seccomp architectures a filter for `goarch` covers: the native one and those whose
/// binaries the kernel also runs there (32-bit x86 and x32 on amd64, 32-bit ARM on arm64, …),
/// as containerd lists them. None for the architectures containerd does not list, which leaves
/// the runtime to use its native one.
pub fn architectures(goarch: &str) -> Vec<Arch> {
    match goarch {
        "amd64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "arm64" => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        "mips64" | "mips64n32" => vec![
            Arch::ScmpArchMips,
            Arch::ScmpArchMips64,
            Arch::ScmpArchMips64n32,
        ],
        "mipsel64" | "mipsel64n32" => vec![
            Arch::ScmpArchMipsel,
            Arch::ScmpArchMipsel64,
            Arch::ScmpArchMipsel64n32,
        ],
        "s390x" => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
        // There is no SCMP_ARCH_RISCV32.
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        _ => Vec::new(),
    }
}

/// The spec form of one rule.
fn syscall(names: Vec<String>, rule: &Rule) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names);
    match rule.action {
        Action::Allow => {
            s.set_action(LinuxSeccompAction::ScmpActAllow);
        }
        Action::FailNotImplemented => {
            s.set_action(LinuxSeccompAction::ScmpActErrno);
            s.set_errno_ret(u32::try_from(nix::errno::Errno::ENOSYS as i32).ok());
        }
    }
    let args: Vec<LinuxSeccompArg> = rule
        .args
        .iter()
        .map(|a| {
            let (index, value, value_two, op) = match *a {
                ArgIs::Equal { index, value } => {
                    (index, value, None, LinuxSeccompOperator::ScmpCmpEq)
                }
                // containerd writes no valueTwo when it is 0; neither does bctr.
                ArgIs::MaskedEqual { index, mask, value } => (
                    index,
                    mask,
                    (value != 0).then_some(value),
                    LinuxSeccompOperator::ScmpCmpMaskedEq,
                ),
            };
            let builder = LinuxSeccompArgBuilder::default()
                .index(index)
                .value(value)
                .op(op);
            let builder = match value_two {
                Some(v) => builder.value_two(v),
                None => builder,
            };
            // Every field of the builder has a default, so building cannot fail.
            builder.build().unwrap_or_default()
        })
        .collect();
    // No conditions is written as no `args` at all, as containerd does.
    s.set_args((!args.is_empty()).then_some(args));
    s
}

/// The names of a rule, owned.
fn names(list: &[&str]) -> Vec<String> {
    list.iter().map(|n| (*n).to_owned()).collect()
}

/// containerd's default profile for a container whose bounding capabilities are `bounding`
/// (`CAP_…` names, in the order the spec lists them), on `host`.
pub fn default_profile(bounding: &[String], host: &Host) -> LinuxSeccomp {
    let has = |cap: &str| bounding.iter().any(|c| c == cap);
    let mut rules = vec![syscall(
        BASELINE.iter().flat_map(|g| names(g)).collect(),
        &allow(&[]),
    )];
    // Host rules first, in table order.
    for rule in CONDITIONAL.iter().filter(|r| r.arches.holds(&host.arch)) {
        let applies = match rule.when {
            When::Always => true,
            When::KernelAtLeast(v, m) => host.kernel.is_some_and(|k| k >= (v, m)),
            When::Has(_) | When::Lacks(_) => false,
        };
        if applies {
            rules.push(syscall(names(rule.names), rule));
        }
    }
    // Then one group per capability, in the order of the bounding set, as containerd walks it.
    for cap in bounding {
        for rule in CONDITIONAL {
            if matches!(rule.when, When::Has(c) if c == cap) && rule.arches.holds(&host.arch) {
                rules.push(syscall(names(rule.names), rule));
            }
        }
    }
    // Last, what holds for a container without a capability.
    for rule in CONDITIONAL.iter().filter(|r| r.arches.holds(&host.arch)) {
        if matches!(rule.when, When::Lacks(cap) if !has(cap)) {
            rules.push(syscall(names(rule.names), rule));
        }
    }
    let mut profile = LinuxSeccomp::default();
    // SCMP_ACT_ERRNO without a defaultErrnoRet: runc makes it EPERM, and containerd 1.6 writes
    // none either.
    profile.set_default_action(LinuxSeccompAction::ScmpActErrno);
    let arches = architectures(&host.arch);
    profile.set_architectures((!arches.is_empty()).then_some(arches));
    profile.set_syscalls(Some(rules));
    profile
}

/// A profile file for `--seccomp-profile`, as containerd's `seccomp.WithProfile` reads it: a JSON
/// document of the spec's `linux.seccomp` shape. Fields the spec does not have (a Docker
/// profile's `archMap`, `includes`, `excludes`, `comment`) are ignored, as containerd ignores
/// them; `architectures` and `syscalls` are taken as written.
pub fn load_profile(path: &Path) -> Result<LinuxSeccomp, SeccompError> {
    let bytes = std::fs::read(path).map_err(|source| SeccompError::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| SeccompError::Decode {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn host(arch: &str) -> Host {
        Host {
            arch: arch.to_owned(),
            kernel: Some((6, 1)),
        }
    }

    fn caps(list: &[&str]) -> Vec<String> {
        list.iter().map(|c| (*c).to_owned()).collect()
    }

    /// Every name a rule of `p` allows without argument conditions.
    fn allowed(p: &LinuxSeccomp) -> BTreeSet<String> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.action() == LinuxSeccompAction::ScmpActAllow && s.args().is_none())
            .flat_map(|s| s.names().iter().cloned())
            .collect()
    }

    const DEFAULT_CAPS: &[&str] = &[
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];

    #[test]
    fn baseline_has_no_duplicates_and_no_gated_calls() {
        let all: Vec<&str> = BASELINE.iter().flat_map(|g| g.iter().copied()).collect();
        let set: BTreeSet<&str> = all.iter().copied().collect();
        assert_eq!(all.len(), set.len(), "a call is listed twice");
        // containerd 1.6's baseline has 349 calls.
        assert_eq!(all.len(), 349);
        for gated in CONDITIONAL.iter().flat_map(|r| r.names.iter()) {
            assert!(
                !set.contains(gated),
                "{gated} is both baseline and conditional"
            );
        }
    }

    #[test]
    fn default_capabilities_on_amd64() {
        let p = default_profile(&caps(DEFAULT_CAPS), &host("amd64"));
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(p.default_errno_ret(), None);
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let a = allowed(&p);
        for call in ["read", "execve", "wait4", "arch_prctl", "chroot", "ptrace"] {
            assert!(a.contains(call), "{call}");
        }
        for call in [
            "mount",
            "unshare",
            "setns",
            "reboot",
            "init_module",
            "clone3",
        ] {
            assert!(!a.contains(call), "{call}");
        }
        let rules = p.syscalls().as_ref().unwrap();
        // clone only without namespace flags in its first argument…
        let clone = rules.iter().find(|s| s.names() == &["clone"]).unwrap();
        let arg = clone.args().as_ref().unwrap()[0];
        assert_eq!(arg.index(), 0);
        assert_eq!(arg.value(), 0x7e02_0000);
        assert_eq!(arg.value_two(), None);
        assert_eq!(arg.op(), LinuxSeccompOperator::ScmpCmpMaskedEq);
        // …and clone3 fails with ENOSYS.
        let clone3 = rules.iter().find(|s| s.names() == &["clone3"]).unwrap();
        assert_eq!(clone3.action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3.errno_ret(), Some(38));
        // Five personality rules, one value each.
        let personas: BTreeSet<u64> = rules
            .iter()
            .filter(|s| s.names() == &["personality"])
            .map(|s| s.args().as_ref().unwrap()[0].value())
            .collect();
        assert_eq!(
            personas,
            [0, 8, 0x20000, 0x20008, 0xffff_ffff].into_iter().collect()
        );
        // Rule order: baseline, personalities, ptrace, arch, CAP_SYS_CHROOT, clone, clone3.
        let firsts: Vec<&str> = rules.iter().map(|s| s.names()[0].as_str()).collect();
        assert_eq!(
            &firsts[1..],
            [
                "personality",
                "personality",
                "personality",
                "personality",
                "personality",
                "ptrace",
                "arch_prctl",
                "chroot",
                "clone",
                "clone3"
            ]
        );
    }

    #[test]
    fn capabilities_add_calls() {
        let mut bounding = caps(DEFAULT_CAPS);
        bounding.extend(caps(&[
            "CAP_SYS_ADMIN",
            "CAP_SYS_PTRACE",
            "CAP_SYS_MODULE",
            "CAP_SYS_BOOT",
            "CAP_SYS_TIME",
        ]));
        let p = default_profile(&bounding, &host("amd64"));
        let a = allowed(&p);
        for call in [
            "mount",
            "unshare",
            "setns",
            "clone",
            "clone3",
            "process_vm_readv",
            "init_module",
            "reboot",
            "clock_settime",
        ] {
            assert!(a.contains(call), "{call}");
        }
        // With CAP_SYS_ADMIN, neither the conditional clone nor the clone3 refusal.
        let rules = p.syscalls().as_ref().unwrap();
        assert!(rules
            .iter()
            .all(|s| s.args().is_none() || s.names() == &["personality"]));
        assert!(rules
            .iter()
            .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow));
        // The capability groups come in the bounding set's order.
        let firsts: Vec<&str> = rules.iter().map(|s| s.names()[0].as_str()).collect();
        let tail = &firsts[firsts.len() - 5..];
        assert_eq!(
            tail,
            ["bpf", "kcmp", "delete_module", "reboot", "settimeofday"]
        );
        // Without CAP_SYS_CHROOT, no chroot.
        let p = default_profile(&caps(&["CAP_KILL"]), &host("amd64"));
        assert!(!allowed(&p).contains("chroot"));
    }

    #[test]
    fn architectures_follow_the_host() {
        let arm = default_profile(&caps(DEFAULT_CAPS), &host("arm64"));
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchArm, Arch::ScmpArchAarch64][..])
        );
        let a = allowed(&arm);
        assert!(a.contains("set_tls") && a.contains("cacheflush"));
        assert!(!a.contains("arch_prctl"));

        let s390 = default_profile(&caps(DEFAULT_CAPS), &host("s390x"));
        let clone = s390
            .syscalls()
            .iter()
            .flatten()
            .find(|s| s.names() == &["clone"])
            .unwrap();
        assert_eq!(clone.args().as_ref().unwrap()[0].index(), 1);

        // containerd lists no architectures for ppc64le: the runtime's native one applies.
        let ppc = default_profile(&caps(DEFAULT_CAPS), &host("ppc64le"));
        assert_eq!(ppc.architectures(), &None);
        assert!(allowed(&ppc).contains("swapcontext"));
    }

    #[test]
    fn ptrace_needs_kernel_4_8() {
        let mut h = host("amd64");
        h.kernel = Some((4, 7));
        assert!(!allowed(&default_profile(&caps(DEFAULT_CAPS), &h)).contains("ptrace"));
        h.kernel = None;
        assert!(!allowed(&default_profile(&caps(DEFAULT_CAPS), &h)).contains("ptrace"));
        h.kernel = Some((4, 8));
        assert!(allowed(&default_profile(&caps(DEFAULT_CAPS), &h)).contains("ptrace"));
    }

    #[test]
    fn kernel_releases() {
        assert_eq!(parse_kernel_release("6.1.0-18-amd64\n"), Some((6, 1)));
        assert_eq!(parse_kernel_release("3.12-1-amd64"), Some((3, 12)));
        assert_eq!(parse_kernel_release("4.8"), Some((4, 8)));
        assert_eq!(parse_kernel_release("garbage"), None);
        assert_eq!(parse_kernel_release("5"), None);
    }

    #[test]
    fn profile_json_is_containerds_shape() {
        let p = default_profile(&caps(DEFAULT_CAPS), &host("amd64"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(v["architectures"][0], "SCMP_ARCH_X86_64");
        assert!(v["syscalls"][0].get("args").is_none());
        assert_eq!(
            v["syscalls"][1]["args"],
            serde_json::json!([{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}])
        );
    }

    #[test]
    fn profile_files() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("p.json");
        std::fs::write(
            &good,
            r#"{"defaultAction":"SCMP_ACT_ALLOW","archMap":[],"syscalls":[
                {"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","comment":"no"}]}"#,
        )
        .unwrap();
        let p = load_profile(&good).unwrap();
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActAllow);
        assert_eq!(
            p.syscalls().as_ref().unwrap()[0].names(),
            &["mkdir", "mkdirat"]
        );

        let bad = dir.path().join("bad.json");
        std::fs::write(&bad, "{not json").unwrap();
        let err = load_profile(&bad).unwrap_err();
        assert!(matches!(err, SeccompError::Decode { .. }));
        assert!(err.to_string().contains("decoding seccomp profile failed"));

        let err = load_profile(&dir.path().join("missing.json")).unwrap_err();
        assert!(matches!(err, SeccompError::Read { .. }));
        assert!(err.to_string().contains("cannot load seccomp profile"));
    }
}
