//! Overlay through the new mount API (`fsopen`, `fsconfig`, `fsmount`, `move_mount`), for
//! options that do not fit in mount(2)'s one page: each layer is its own `lowerdir+` parameter
//! (Linux 6.8+), which allows the kernel's full 500-layer stack.
//!
//! The libc crate has the system call numbers but no wrappers, so they are made with
//! `libc::syscall`; every descriptor they return is an [`OwnedFd`] at once.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use crate::plan::FsParam;
use crate::{cstring, MountError};

// linux/mount.h
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// Takes ownership of the descriptor a system call returned, or its error.
fn owned(ret: libc::c_long) -> Result<OwnedFd, Errno> {
    if ret < 0 {
        return Err(Errno::last());
    }
    // A descriptor is a non-negative int; anything else would be a kernel bug.
    let raw = RawFd::try_from(ret).map_err(|_| Errno::EOVERFLOW)?;
    // SAFETY: `raw` was just returned by the kernel as a new descriptor of this process, which
    // nothing else holds; the OwnedFd is its only owner and closes it once.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn check(ret: libc::c_long) -> Result<(), Errno> {
    if ret < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// One `fsconfig` call setting `key` (to `value`, or as a flag).
fn set(fs: &OwnedFd, key: &CStr, value: Option<&CStr>) -> Result<(), Errno> {
    let (cmd, value) = match value {
        Some(v) => (FSCONFIG_SET_STRING, v.as_ptr()),
        None => (FSCONFIG_SET_FLAG, std::ptr::null()),
    };
    // SAFETY: `fs` is an open filesystem context; `key` (and `value` when set) are NUL-terminated
    // strings that outlive the call, and the kernel only reads them; FSCONFIG_SET_FLAG takes a
    // null value and FSCONFIG_SET_STRING a string, matching `cmd`; aux is unused (0).
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            cmd,
            key.as_ptr(),
            value,
            0,
        )
    })
}

/// Mounts an overlay configured by `params` on `target`, with the `fsmount` attributes `attrs`.
pub(crate) fn overlay(params: &[FsParam<'_>], attrs: u32, target: &Path) -> Result<(), MountError> {
    let fail = |call: &'static str, key: Option<&str>| {
        let key = key.map(str::to_owned);
        move |source| MountError::NewMountApi {
            call,
            key,
            target: target.to_owned(),
            source,
        }
    };
    // Every string is converted before the first system call: a bad option fails cleanly.
    let params = params
        .iter()
        .map(|p| match p {
            FsParam::Flag(k) => Ok((*k, cstring(k)?, None)),
            FsParam::String { key, value } => Ok((*key, cstring(key)?, Some(cstring(value)?))),
        })
        .collect::<Result<Vec<(&str, CString, Option<CString>)>, MountError>>()?;
    let target_c =
        CString::new(target.as_os_str().as_bytes()).map_err(|source| MountError::ContainsNul {
            value: target.display().to_string(),
            source,
        })?;

    // SAFETY: fsopen reads the NUL-terminated literal "overlay" and takes plain flags; it returns
    // a new descriptor, which `owned` takes.
    let fs = owned(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) })
        .map_err(fail("fsopen", None))?;
    for (name, key, value) in &params {
        set(&fs, key, value.as_deref()).map_err(fail("fsconfig", Some(name)))?;
    }
    // SAFETY: `fs` is an open, fully configured filesystem context; FSCONFIG_CMD_CREATE takes no
    // key or value (null pointers) and no aux (0).
    check(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })
    .map_err(fail("fsconfig create", None))?;
    // SAFETY: `fs` holds a created superblock; fsmount takes plain flags and attributes and
    // returns a new descriptor of a detached mount, which `owned` takes.
    let mnt =
        owned(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, attrs) })
            .map_err(fail("fsmount", None))?;
    // SAFETY: `mnt` is the detached mount just made; the empty path with MOVE_MOUNT_F_EMPTY_PATH
    // means `mnt` itself; `target_c` is a NUL-terminated path that outlives the call, resolved
    // from the working directory (AT_FDCWD) when relative; the kernel only reads both strings.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            mnt.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target_c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })
    .map_err(fail("move_mount", None))
    // `mnt` and `fs` close here; the mount stays, attached at `target`.
}
