//! containerd's [`Mount`] and what every caller does with one: mount a list of them on a
//! directory ([`mount_all`]) and take them off again ([`unmount_all`]), hold them on a temporary
//! directory for a while ([`TempMount`]), and read or write an overlay's directories
//! ([`OverlayOptions`]). Snapshotters, the differ, the unpacker, bctr and the runtime share it.
//!
//! `bind` and `overlay` are what Berth's drivers return; any other type goes to mount(2) as it
//! is. Overlay options normally go to mount(2) as one string, which must fit in a page: that is
//! where containerd stops (~400 layers). When they do not fit, the layers are passed one by one
//! through the new mount API (`fsopen`/`fsconfig` with `lowerdir+`, Linux 6.8+), which allows the
//! kernel's full 500-layer stack. How a mount is made is decided apart from making it
//! (`plan.rs`), so those decisions are tested without root.

mod error;
mod fsmount;
mod overlay;
mod plan;
#[cfg(test)]
mod root_tests;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

pub use error::MountError;
pub use overlay::OverlayOptions;

use plan::Plan;

/// A mount, as containerd describes one (`mount -t type -o options source target`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Mount {
    /// The filesystem type (`bind`, `rbind`, `overlay`, `tmpfs`, …).
    pub mount_type: String,
    pub source: String,
    /// Carried for containerd's API; [`mount_all`] mounts on the directory it is given.
    pub target: String,
    /// mount(8)-style options: flags (`ro`, `nosuid`, `rbind`, …) and filesystem options.
    pub options: Vec<String>,
}

impl Mount {
    /// Mounts this on `target`, an existing directory.
    pub fn mount(&self, target: &Path) -> Result<(), MountError> {
        self.check_nul()?;
        match plan::plan(self) {
            Plan::Bind {
                source,
                flags,
                readonly,
            } => {
                nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
                    .map_err(sys("bind mount", target))?;
                if readonly {
                    nix::mount::mount(
                        None::<&str>,
                        target,
                        None::<&str>,
                        flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                        None::<&str>,
                    )
                    .map_err(sys("read-only remount", target))?;
                }
                Ok(())
            }
            Plan::Data {
                source,
                fstype,
                flags,
                data,
            } => nix::mount::mount(
                Some(source),
                target,
                Some(fstype),
                flags,
                Some(data.as_str()),
            )
            .map_err(sys(
                if fstype == "overlay" {
                    "overlay mount"
                } else {
                    "mount"
                },
                target,
            )),
            Plan::OverlayByLayer { params, attrs } => fsmount::overlay(&params, attrs, target),
        }
    }

    /// Whether the options ask for a read-only mount.
    pub fn is_readonly(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// The options of an overlay mount; `None` for any other type.
    pub fn overlay_options(&self) -> Option<OverlayOptions> {
        (self.mount_type == "overlay").then(|| OverlayOptions::parse(&self.options))
    }

    /// No string the kernel will see may hold a NUL byte.
    fn check_nul(&self) -> Result<(), MountError> {
        std::iter::once(&self.mount_type)
            .chain(std::iter::once(&self.source))
            .chain(&self.options)
            .try_for_each(|s| cstring(s).map(drop))
    }
}

fn cstring(s: &str) -> Result<CString, MountError> {
    CString::new(s).map_err(|source| MountError::ContainsNul {
        value: s.to_owned(),
        source,
    })
}

fn sys<'p>(op: &'static str, target: &'p Path) -> impl FnOnce(Errno) -> MountError + 'p {
    move |source| MountError::Mount {
        op,
        target: target.to_owned(),
        source,
    }
}

/// Mounts each of `mounts` on `target` in order (later ones stack on earlier ones). On failure
/// the mounts already made stay; [`unmount_all`] takes them off.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), MountError> {
    mounts.iter().try_for_each(|m| m.mount(target))
}

/// Unmounts everything stacked on `target`; nothing mounted there is not an error. A mount still
/// in use is detached (`MNT_DETACH`): gone from `target` at once, released when its last user
/// leaves.
pub fn unmount_all(target: &Path) -> Result<(), MountError> {
    let fail = |source| MountError::Unmount {
        target: target.to_owned(),
        source,
    };
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EINVAL) => return Ok(()), // nothing (more) mounted here
            Err(Errno::EBUSY) => nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(fail)?,
            Err(e) => return Err(fail(e)),
        }
    }
}

/// Unmounts everything mounted on `target` or anywhere below it, deepest first (a runtime may
/// leave `proc`, `dev` or bind mounts inside a container's root): afterwards a recursive removal
/// of `target` cannot reach into another file system.
pub fn unmount_recursive(target: &Path) -> Result<(), MountError> {
    let fail = |source| MountError::Unmount {
        target: target.to_owned(),
        source,
    };
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(|e| fail(errno_of(&e)))?;
    let mut below: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(target) && p != target)
        .collect();
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    below.dedup();
    for path in below {
        match nix::mount::umount2(&path, MntFlags::MNT_DETACH) {
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(MountError::Unmount {
                    target: path,
                    source: e,
                })
            }
        }
    }
    unmount_all(target)
}

fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// mountinfo writes space, tab, newline and backslash in paths as `\ooo` octal escapes.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'\\')
            .then(|| s.get(i + 1..i + 4))
            .flatten()
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match escaped {
            Some(v) => {
                out.push(v);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[test]
fn mountinfo_escapes_are_undone() {
    assert_eq!(unescape_mountinfo("/a\\040b/c"), "/a b/c");
    assert_eq!(unescape_mountinfo("/plain"), "/plain");
    assert_eq!(unescape_mountinfo("/trailing\\"), "/trailing\\");
}

/// A temporary directory holding `mounts`, unmounted and removed on drop.
///
/// The directory is only ever removed empty (`rmdir`), after its mounts are off: if unmounting
/// fails it stays, with a warning, rather than a recursive removal reaching into what is still
/// mounted there.
#[derive(Debug)]
pub struct TempMount {
    path: PathBuf,
}

impl TempMount {
    /// Mounts `mounts` on a new directory under the system's temporary directory.
    pub fn new(mounts: &[Mount]) -> Result<TempMount, MountError> {
        let path = tempfile::Builder::new()
            .prefix("berth-mount")
            .tempdir()
            .map_err(|source| MountError::TempDir {
                dir: std::env::temp_dir(),
                source,
            })?
            .keep();
        if let Err(e) = mount_all(mounts, &path) {
            // Mounts made before the failing one must not stay behind on the temp dir.
            release(&path);
            return Err(e);
        }
        Ok(TempMount { path })
    }

    /// Where the mounts are.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        release(&self.path);
    }
}

fn release(path: &Path) {
    match unmount_all(path) {
        Ok(()) => {
            if let Err(e) = std::fs::remove_dir(path) {
                let path = path.display();
                tracing::warn!(%path, error = %e, "cannot remove temporary mount point");
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot unmount temporary mount; its directory stays");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_bytes_are_refused_before_any_system_call() {
        let m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec!["lowerdir=/a\0/b".into()],
        };
        // A target that cannot exist: had the kernel been asked, it would say ENOENT.
        let err = m
            .mount(Path::new("/nonexistent/berth-mount-test"))
            .unwrap_err();
        assert!(
            matches!(&err, MountError::ContainsNul { value, .. } if value == "lowerdir=/a\0/b"),
            "{err:?}"
        );
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(err.errno(), None);
    }

    #[test]
    fn overlay_options_are_read_only_from_overlay_mounts() {
        let mut m = Mount {
            mount_type: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec!["ro".into(), "lowerdir=/b:/a".into()],
        };
        assert!(m.is_readonly());
        assert_eq!(
            m.overlay_options().map(|o| o.lowerdirs),
            Some(vec![PathBuf::from("/b"), PathBuf::from("/a")])
        );
        m.mount_type = "bind".into();
        assert_eq!(m.overlay_options(), None);
    }

    #[test]
    fn errors_keep_their_errno_and_name_the_step() {
        let err = sys("overlay mount", Path::new("/t"))(Errno::ENODEV);
        assert_eq!(err.errno(), Some(Errno::ENODEV));
        assert_eq!(
            err.to_string(),
            format!("overlay mount on /t: {}", Errno::ENODEV)
        );
        let err = MountError::NewMountApi {
            call: "fsconfig",
            key: Some("lowerdir+".into()),
            target: "/t".into(),
            source: Errno::EINVAL,
        };
        assert!(
            err.to_string()
                .starts_with("fsconfig lowerdir+ for the overlay on /t: "),
            "{err}"
        );
        assert!(err.to_string().contains("Linux 6.8"), "{err}");
    }
}
