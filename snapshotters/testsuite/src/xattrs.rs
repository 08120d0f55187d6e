//! Reading xattrs without following symlinks.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::ops::cstring;

/// The `user.*` and `trusted.*` xattrs of `path` (not following symlinks). Other namespaces
/// (security.*, system.*) depend on the host, not on the snapshotter, and are left out.
pub fn list_xattrs(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let p = cstring(path)?;
    // SAFETY: `p` is a NUL-terminated path alive for the call; with a null buffer and size 0
    // llistxattr writes nothing and returns the size needed.
    let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOTSUP) {
            return Ok(BTreeMap::new());
        }
        return Err(e);
    }
    let mut names = vec![0u8; size as usize];
    // SAFETY: `p` is NUL-terminated and `names` writable for `names.len()` bytes, the most
    // llistxattr writes.
    let got = unsafe { libc::llistxattr(p.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(got as usize);
    let mut out = BTreeMap::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !(name.starts_with(b"user.") || name.starts_with(b"trusted.")) {
            continue;
        }
        let name = String::from_utf8_lossy(name).into_owned();
        out.insert(name.clone(), get_xattr(path, &name)?);
    }
    Ok(out)
}

/// One xattr of `path` (not following symlinks).
pub fn get_xattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cstring(path)?;
    let n = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `p` and `n` are NUL-terminated strings alive for the call; with a null buffer and
    // size 0 lgetxattr writes nothing and returns the size needed.
    let size = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut value = vec![0u8; size as usize];
    // SAFETY: `p` and `n` are NUL-terminated and `value` writable for `value.len()` bytes, the
    // most lgetxattr writes.
    let got = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    if got < 0 {
        return Err(io::Error::last_os_error());
    }
    value.truncate(got as usize);
    Ok(value)
}
