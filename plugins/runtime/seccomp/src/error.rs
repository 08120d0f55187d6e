use nix::errno::Errno;

/// Why a spec's `linux.seccomp` could not be turned into a filter. Raised in the parent, before
/// any process is forked, so the container fails to be created with this message instead of
/// starting unconfined.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// An action Berth cannot carry out. Today that is `SCMP_ACT_NOTIFY`, which needs a listener
    /// socket (`listenerPath`) and a seccomp agent that Berth's shim does not run yet.
    #[error(
        "{action} is not supported ({place}): Berth has no seccomp agent to hand the notify fd \
         to; use SCMP_ACT_ERRNO or SCMP_ACT_TRACE for these calls instead"
    )]
    Unsupported {
        action: &'static str,
        /// Where in the profile: `defaultAction` or the rule for a syscall.
        place: String,
    },
    /// A flag the kernel only accepts together with something Berth does not do.
    #[error(
        "seccomp flag {flag} is not supported: it only applies to SCMP_ACT_NOTIFY listeners, \
         which Berth does not support; remove it from linux.seccomp.flags"
    )]
    UnsupportedFlag { flag: &'static str },
    /// `errnoRet`/`defaultErrnoRet` does not fit the 16 bits a seccomp return value has.
    #[error(
        "{place}: errno return value {value} is out of range (seccomp carries 16 bits; errnos \
         are at most 4095)"
    )]
    ErrnoOutOfRange { place: String, value: u32 },
    /// A rule without a syscall name.
    #[error(
        "a rule in linux.seccomp.syscalls has an empty syscall name; remove it or name the call"
    )]
    EmptySyscallName,
    /// A condition on an argument a system call does not have (they have six at most).
    #[error(
        "the rule for {syscall} has a condition on argument {index}: system calls have \
         arguments 0 to 5"
    )]
    ArgumentIndex { syscall: String, index: usize },
    /// libseccomp does not know an architecture of the profile (its version may predate it).
    #[error("add architecture {arch} to the seccomp filter (libseccomp {version}): {source}")]
    Architecture {
        arch: String,
        version: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// libseccomp refused a rule (a condition it cannot express, an action the kernel lacks…).
    #[error("add the seccomp rule for {syscall} ({action}): {source}")]
    Rule {
        syscall: String,
        action: String,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// Another libseccomp call failed: `op` says which.
    #[error("libseccomp: {op}: {source}")]
    Libseccomp {
        op: &'static str,
        #[source]
        source: libseccomp::error::SeccompError,
    },
    /// The memfd the program is exported through could not be made or read back.
    #[error("{op} the memfd the seccomp program is exported to: {source}")]
    Export {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// libseccomp's export is not a whole number of BPF instructions. A libseccomp bug; nothing
    /// the profile can fix.
    #[error("libseccomp exported {len} bytes of BPF, not a whole number of 8-byte instructions")]
    MalformedExport { len: usize },
    /// The compiled program is longer than the kernel accepts (`BPF_MAXINSNS`).
    #[error(
        "the seccomp filter has {instructions} BPF instructions, more than the kernel's limit of \
         {max}; the profile has too many rules or conditions"
    )]
    TooLong { instructions: usize, max: usize },
}

/// Why [`crate::Program::load`] failed. It is built without allocating, so it can be returned
/// in a forked child; report it there with its `errno` (as runc does, through the exit code or a
/// pipe to the parent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoadError {
    /// The kernel needs no_new_privs or CAP_SYS_ADMIN to install a filter.
    #[error(
        "seccomp(SECCOMP_SET_MODE_FILTER): {source}: the process has neither no_new_privs nor \
         CAP_SYS_ADMIN; set PR_SET_NO_NEW_PRIVS before loading or keep CAP_SYS_ADMIN until then"
    )]
    NeedsNoNewPrivs {
        #[source]
        source: Errno,
    },
    /// `SECCOMP_FILTER_FLAG_TSYNC` was asked for, and a thread of the process could not take the
    /// filter (it has diverging filters of its own).
    #[error(
        "seccomp(SECCOMP_SET_MODE_FILTER) with SECCOMP_FILTER_FLAG_TSYNC: thread {tid} cannot be \
         synchronised to the new filter"
    )]
    ThreadNotSynchronised { tid: libc::c_long },
    /// Any other refusal; `EINVAL` usually means the kernel does not know one of the flags.
    #[error("seccomp(SECCOMP_SET_MODE_FILTER, flags {flags:#x}): {source}")]
    Kernel {
        flags: libc::c_ulong,
        #[source]
        source: Errno,
    },
}

impl LoadError {
    /// The system error behind this one, if the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            LoadError::NeedsNoNewPrivs { source } | LoadError::Kernel { source, .. } => {
                Some(*source)
            }
            LoadError::ThreadNotSynchronised { .. } => None,
        }
    }
}
