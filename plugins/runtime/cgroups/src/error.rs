use std::io;
use std::path::PathBuf;

/// Why a cgroup operation failed. Variants that come from the system keep its error as their
/// source; every message names the file or path involved so an operator can look at it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No cgroup filesystem was found in the mount table.
    #[error(
        "no cgroup filesystem is mounted (read {source_name}); mount cgroup2 at /sys/fs/cgroup, or \
         the cgroup v1 controllers under it"
    )]
    NoCgroupMounts { source_name: String },

    /// `cgroupsPath` from the OCI spec cannot be used.
    #[error("invalid linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },

    /// [`crate::Cgroup::open`] found no such cgroup.
    #[error("cgroup {} does not exist (was the container deleted?)", path.display())]
    NotFound { path: PathBuf },

    /// A cgroup directory could not be made.
    #[error("create cgroup directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A cgroup directory could not be removed.
    #[error(
        "remove cgroup {}: {source} (processes may still be in it; kill them and retry)",
        path.display()
    )]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Reading a cgroup file failed.
    #[error("read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The kernel refused a value written to a cgroup file.
    #[error("write {value:?} to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },

    /// A cgroup file held something this crate does not understand.
    #[error("parse {}: {reason}", path.display())]
    Parse { path: PathBuf, reason: String },

    /// The spec asks for a limit this host cannot enforce: its controller (or the file for that
    /// one knob) is missing.
    #[error(
        "the OCI spec sets {setting}, but {} does not exist on this host (is the {controller} \
         controller enabled?); remove the setting or enable the controller",
        file.display()
    )]
    Unsupported {
        setting: String,
        controller: String,
        file: PathBuf,
    },

    /// A resource value is out of range or inconsistent with another.
    #[error("invalid resource {setting}: {reason}")]
    InvalidResource { setting: String, reason: String },

    /// The freezer did not reach the wanted state in time.
    #[error(
        "{} did not reach {want} within {waited_ms} ms (last read {last:?}); a process may be \
         stuck in the kernel — try again",
        path.display()
    )]
    FreezeTimeout {
        path: PathBuf,
        want: &'static str,
        last: String,
        waited_ms: u128,
    },

    /// The host has no freezer for this cgroup.
    #[error(
        "this host has no cgroup freezer (cgroup v1 without the freezer controller mounted, or \
         cgroup v2 on Linux older than 5.2)"
    )]
    NoFreezer,

    /// The OOM notification could not be set up or read.
    #[error("OOM notification on {}: {source}", path.display())]
    Oom {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A signal could not be sent to a process of the cgroup.
    #[error("send {signal} to process {pid}: {source}")]
    Kill {
        pid: i32,
        signal: nix::sys::signal::Signal,
        #[source]
        source: nix::errno::Errno,
    },

    /// The eBPF program that enforces device rules on a v2 cgroup could not be put in place.
    /// `step` says which part failed; a program the kernel refused comes with its verifier log.
    #[error(
        "cgroup v2 device rules for {}: {step}: {source}{}",
        dir.display(),
        verifier_log_suffix(.verifier_log.as_deref())
    )]
    DeviceProgram {
        dir: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
        verifier_log: Option<String>,
    },

    /// Reading the mount table or the process's own cgroup failed.
    #[error("read {}: {source}", path.display())]
    ProcFile {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The system error behind this one, if there is one (e.g. to tell EBUSY from ENOENT).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Create { source, .. }
            | Error::Remove { source, .. }
            | Error::Read { source, .. }
            | Error::Write { source, .. }
            | Error::Oom { source, .. }
            | Error::DeviceProgram { source, .. }
            | Error::ProcFile { source, .. } => source.raw_os_error(),
            Error::Kill { source, .. } => Some(*source as i32),
            _ => None,
        }
    }
}

fn verifier_log_suffix(log: Option<&str>) -> String {
    log.map(|l| format!("; verifier log:\n{l}"))
        .unwrap_or_default()
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
