//! File-tree changes ("appliers", after containerd's fstest) and [`apply`].

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::path::PathBuf;

/// One change to a file tree; paths are relative to the tree's root (a leading `/` is allowed).
#[derive(Debug, Clone)]
pub enum Op {
    /// Writes (creates or truncates) a regular file, then sets its mode.
    File {
        path: String,
        content: Vec<u8>,
        mode: u32,
    },
    /// Creates a directory if missing, then sets its mode.
    Dir {
        path: String,
        mode: u32,
    },
    Symlink {
        target: String,
        path: String,
    },
    /// A hardlink `path` to the existing `existing`.
    Link {
        existing: String,
        path: String,
    },
    /// lchown.
    Chown {
        path: String,
        uid: u32,
        gid: u32,
    },
    /// Removes a file or a whole directory tree; a missing path is fine.
    RemoveAll {
        path: String,
    },
    Rename {
        from: String,
        to: String,
    },
    /// lsetxattr.
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
    /// lremovexattr.
    RemoveXattr {
        path: String,
        name: String,
    },
}

pub fn file(path: &str, content: impl AsRef<[u8]>, mode: u32) -> Op {
    Op::File {
        path: path.into(),
        content: content.as_ref().to_vec(),
        mode,
    }
}

pub fn dir(path: &str, mode: u32) -> Op {
    Op::Dir {
        path: path.into(),
        mode,
    }
}

pub fn symlink(target: &str, path: &str) -> Op {
    Op::Symlink {
        target: target.into(),
        path: path.into(),
    }
}

pub fn link(existing: &str, path: &str) -> Op {
    Op::Link {
        existing: existing.into(),
        path: path.into(),
    }
}

pub fn chown(path: &str, uid: u32, gid: u32) -> Op {
    Op::Chown {
        path: path.into(),
        uid,
        gid,
    }
}

pub fn remove_all(path: &str) -> Op {
    Op::RemoveAll { path: path.into() }
}

pub fn rename(from: &str, to: &str) -> Op {
    Op::Rename {
        from: from.into(),
        to: to.into(),
    }
}

pub fn set_xattr(path: &str, name: &str, value: impl AsRef<[u8]>) -> Op {
    Op::SetXattr {
        path: path.into(),
        name: name.into(),
        value: value.as_ref().to_vec(),
    }
}

pub fn remove_xattr(path: &str, name: &str) -> Op {
    Op::RemoveXattr {
        path: path.into(),
        name: name.into(),
    }
}

fn under(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

pub(crate) fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check_rc(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn apply_one(root: &Path, op: &Op) -> io::Result<()> {
    match op {
        Op::File {
            path,
            content,
            mode,
        } => {
            let p = under(root, path);
            fs::write(&p, content)?;
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
        }
        Op::Dir { path, mode } => {
            let p = under(root, path);
            if fs::symlink_metadata(&p).is_err() {
                fs::DirBuilder::new().mode(*mode).create(&p)?;
            }
            fs::set_permissions(&p, fs::Permissions::from_mode(*mode))
        }
        Op::Symlink { target, path } => std::os::unix::fs::symlink(target, under(root, path)),
        Op::Link { existing, path } => fs::hard_link(under(root, existing), under(root, path)),
        Op::Chown { path, uid, gid } => {
            std::os::unix::fs::lchown(under(root, path), Some(*uid), Some(*gid))
        }
        Op::RemoveAll { path } => {
            let p = under(root, path);
            match fs::symlink_metadata(&p) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
                Ok(m) if m.is_dir() => fs::remove_dir_all(&p),
                Ok(_) => fs::remove_file(&p),
            }
        }
        Op::Rename { from, to } => fs::rename(under(root, from), under(root, to)),
        Op::SetXattr { path, name, value } => {
            let p = cstring(&under(root, path))?;
            let n = CString::new(name.as_str()).map_err(io::Error::other)?;
            // SAFETY: `p` and `n` are NUL-terminated strings alive for the call and
            // `value` is readable for `value.len()` bytes; lsetxattr only reads them.
            check_rc(unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    n.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            })
        }
        Op::RemoveXattr { path, name } => {
            let p = cstring(&under(root, path))?;
            let n = CString::new(name.as_str()).map_err(io::Error::other)?;
            // SAFETY: `p` and `n` are NUL-terminated strings alive for the call;
            // lremovexattr only reads them.
            check_rc(unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) })
        }
    }
}

/// Applies `ops` in order to the tree at `root`; the error names the op that failed.
pub fn apply(root: &Path, ops: &[Op]) -> io::Result<()> {
    for op in ops {
        apply_one(root, op).map_err(|e| io::Error::new(e.kind(), format!("{op:?}: {e}")))?;
    }
    Ok(())
}
