use std::path::PathBuf;

use nix::errno::Errno;

/// Why a mount, an unmount or a temporary mount point failed. Every variant keeps the system's
/// error as its source.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// An option or a path cannot be passed to the kernel: it holds a NUL byte.
    #[error("{value:?} contains a NUL byte, which no mount option or path can hold")]
    ContainsNul {
        value: String,
        #[source]
        source: std::ffi::NulError,
    },
    /// mount(2) refused: `op` says which step (bind, read-only remount, overlay, …).
    #[error("{op} on {}: {source}", target.display())]
    Mount {
        op: &'static str,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    /// A step of the new mount API (`fsopen`, `fsconfig`, `fsmount`, `move_mount`), which overlay
    /// mounts whose options do not fit in a page go through.
    #[error(
        "{call}{} for the overlay on {}: {source} (overlay options longer than a page are passed \
         one layer at a time with lowerdir+, which needs Linux 6.8 or later)",
        key.as_deref().map(|k| format!(" {k}")).unwrap_or_default(),
        target.display()
    )]
    NewMountApi {
        call: &'static str,
        /// The fsconfig parameter being set, if that was the step.
        key: Option<String>,
        target: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("unmount {}: {source}", target.display())]
    Unmount {
        target: PathBuf,
        #[source]
        source: Errno,
    },
    /// The directory of a [`crate::TempMount`] could not be made.
    #[error("create a temporary mount point in {}: {source}", dir.display())]
    TempDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MountError {
    /// The system error behind this one, if the kernel gave one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            MountError::Mount { source, .. }
            | MountError::NewMountApi { source, .. }
            | MountError::Unmount { source, .. } => Some(*source),
            MountError::TempDir { source, .. } => source.raw_os_error().map(Errno::from_raw),
            MountError::ContainsNul { .. } => None,
        }
    }
}
