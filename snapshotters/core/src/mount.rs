//! Turning containerd mount descriptions into real mounts.
//!
//! `bind` and `overlay` are what Berth's drivers return. Overlay options normally go to
//! mount(2) as one string, which must fit in a page: that is where containerd stops (~400
//! layers). When the options do not fit, the layers are passed one by one through the new mount
//! API (`fsopen`/`fsconfig` with `lowerdir+`, Linux 6.8+), which allows the kernel's full
//! 500-layer stack.

use std::ffi::CString;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::{Mount, SnapshotError};

/// What mount(2) accepts as its data argument.
const PAGE_LIMIT: usize = 4095;

fn flags_and_data(options: &[String]) -> (MsFlags, Vec<String>, bool) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut readonly = false;
    for o in options {
        match o.as_str() {
            "ro" => readonly = true,
            "rw" => {}
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" => {}
            other => data.push(other.to_owned()),
        }
    }
    (flags, data, readonly)
}

/// Mounts `m` on `target`.
pub fn mount(m: &Mount, target: &Path) -> Result<(), SnapshotError> {
    let (mut flags, data, readonly) = flags_and_data(&m.options);
    let err = SnapshotError::errno;
    match m.mount_type.as_str() {
        "bind" | "rbind" => {
            flags |= MsFlags::MS_BIND;
            if m.mount_type == "rbind" {
                flags |= MsFlags::MS_REC;
            }
            nix::mount::mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(err("bind mount", target))?;
            if readonly {
                // A bind mount takes MS_RDONLY only on a remount.
                nix::mount::mount(
                    None::<&str>,
                    target,
                    None::<&str>,
                    flags | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
                    None::<&str>,
                )
                .map_err(err("read-only remount", target))?;
            }
            Ok(())
        }
        "overlay" => {
            let joined = data.join(",");
            if readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            if joined.len() <= PAGE_LIMIT {
                nix::mount::mount(
                    Some("overlay"),
                    target,
                    Some("overlay"),
                    flags,
                    Some(joined.as_str()),
                )
                .map_err(err("overlay mount", target))
            } else {
                mount_overlay_by_layer(&data, readonly, target)
            }
        }
        other => {
            if readonly {
                flags |= MsFlags::MS_RDONLY;
            }
            let joined = data.join(",");
            nix::mount::mount(
                Some(m.source.as_str()),
                target,
                Some(other),
                flags,
                Some(joined.as_str()),
            )
            .map_err(err("mount", target))
        }
    }
}

/// Mounts each of `mounts` on `target` in order (later ones stack on earlier ones).
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<(), SnapshotError> {
    for m in mounts {
        mount(m, target)?;
    }
    Ok(())
}

/// Unmounts everything stacked on `target`.
pub fn unmount_all(target: &Path) -> Result<(), SnapshotError> {
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) => return Ok(()), // nothing (more) mounted here
            Err(nix::errno::Errno::EBUSY) => {
                // Something still uses it; detach so the caller can go on.
                return nix::mount::umount2(target, MntFlags::MNT_DETACH)
                    .map_err(SnapshotError::errno("unmount", target));
            }
            Err(e) => return Err(SnapshotError::errno("unmount", target)(e)),
        }
    }
}

fn cstr(s: &str) -> Result<CString, SnapshotError> {
    CString::new(s)
        .map_err(|_| SnapshotError::InvalidArgument(format!("mount option {s:?} contains NUL")))
}

/// Overlay through the new mount API, one `lowerdir+` per layer.
fn mount_overlay_by_layer(
    options: &[String],
    readonly: bool,
    target: &Path,
) -> Result<(), SnapshotError> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_RDONLY: libc::c_uint = 1;
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

    let fail = |what: &str| {
        let e = std::io::Error::last_os_error();
        SnapshotError::Io {
            op: "overlay mount (new mount API)",
            path: target.to_owned(),
            source: std::io::Error::new(e.kind(), format!("{what}: {e}")),
        }
    };
    let fstype = cstr("overlay")?;
    // SAFETY: plain syscalls with valid NUL-terminated strings; every fd is closed below.
    let fsfd =
        unsafe { libc::syscall(libc::SYS_fsopen, fstype.as_ptr(), FSOPEN_CLOEXEC) } as libc::c_int;
    if fsfd < 0 {
        return Err(fail("fsopen"));
    }
    let close = |fd: libc::c_int| unsafe {
        libc::close(fd);
    };
    let set = |key: &str, value: Option<&str>| -> Result<(), SnapshotError> {
        let k = cstr(key)?;
        let r = match value {
            Some(v) => {
                let v = cstr(v)?;
                unsafe {
                    libc::syscall(
                        libc::SYS_fsconfig,
                        fsfd,
                        FSCONFIG_SET_STRING,
                        k.as_ptr(),
                        v.as_ptr(),
                        0,
                    )
                }
            }
            None => unsafe {
                libc::syscall(
                    libc::SYS_fsconfig,
                    fsfd,
                    FSCONFIG_SET_FLAG,
                    k.as_ptr(),
                    std::ptr::null::<libc::c_char>(),
                    0,
                )
            },
        };
        if r < 0 {
            return Err(fail(&format!("fsconfig {key}")));
        }
        Ok(())
    };
    let result = (|| {
        for o in options {
            match o.split_once('=') {
                Some(("lowerdir", dirs)) => {
                    for d in dirs.split(':').filter(|d| !d.is_empty()) {
                        set("lowerdir+", Some(d))?;
                    }
                }
                Some((k, v)) => set(k, Some(v))?,
                None => set(o, None)?,
            }
        }
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fsfd,
                FSCONFIG_CMD_CREATE,
                std::ptr::null::<libc::c_char>(),
                std::ptr::null::<libc::c_char>(),
                0,
            )
        };
        if r < 0 {
            return Err(fail("fsconfig create"));
        }
        let attr = if readonly { MOUNT_ATTR_RDONLY } else { 0 };
        let mfd =
            unsafe { libc::syscall(libc::SYS_fsmount, fsfd, FSMOUNT_CLOEXEC, attr) } as libc::c_int;
        if mfd < 0 {
            return Err(fail("fsmount"));
        }
        let empty = cstr("")?;
        let tgt = cstr(&target.to_string_lossy())?;
        let r = unsafe {
            libc::syscall(
                libc::SYS_move_mount,
                mfd,
                empty.as_ptr(),
                libc::AT_FDCWD,
                tgt.as_ptr(),
                MOVE_MOUNT_F_EMPTY_PATH,
            )
        };
        close(mfd);
        if r < 0 {
            return Err(fail("move_mount"));
        }
        Ok(())
    })();
    close(fsfd);
    result
}

/// A temporary mount point holding `mounts`, unmounted and removed on drop.
pub struct TempMount {
    dir: tempfile::TempDir,
}

impl TempMount {
    pub fn new(mounts: &[Mount]) -> Result<TempMount, SnapshotError> {
        let dir = tempfile::Builder::new()
            .prefix("berth-mount")
            .tempdir()
            .map_err(SnapshotError::io("create mount point", Path::new("/tmp")))?;
        if let Err(e) = mount_all(mounts, dir.path()) {
            // Mounts made before the failing one must not stay behind on the temp dir.
            let _ = unmount_all(dir.path());
            return Err(e);
        }
        Ok(TempMount { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        if let Err(e) = unmount_all(self.dir.path()) {
            tracing::warn!(error = %e, "cannot unmount temporary mount");
        }
    }
}
