//! Thin, safe wrappers over the `*at` family of syscalls.
//!
//! Everything in this crate that touches a layer's target addresses files as (directory fd, single
//! name) and never by a full path, so the kernel cannot be made to follow a symlink we did not
//! choose to follow. The wrappers return `io::Result` so callers can attach the entry name.

use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

pub(crate) const O_DIR_PATH: libc::c_int =
    libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A C string for one name; a NUL byte inside cannot name a file.
pub(crate) fn cstr(name: &[u8]) -> io::Result<CString> {
    CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "name contains a NUL byte"))
}

pub(crate) fn openat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `name` is a NUL-terminated string and `dir` an open descriptor, both borrowed
        // for the whole call; openat only reads them and returns a new descriptor or -1.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                flags | libc::O_CLOEXEC,
                mode as libc::c_uint,
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned `fd` as a new descriptor that nothing else owns;
            // the OwnedFd becomes its only owner and closes it once.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

pub(crate) fn open_path(path: &std::path::Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(path.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; open only reads it.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    cvt(fd)?;
    // SAFETY: open succeeded, so `fd` is a new descriptor that nothing else owns; the OwnedFd
    // becomes its only owner.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `fstatat` with `AT_SYMLINK_NOFOLLOW`: the name itself, never what it points to.
pub(crate) fn lstatat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; `st` points to writable
    // memory the size of a `stat`, which the kernel fills on success.
    cvt(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            st.as_mut_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    // SAFETY: fstatat succeeded (cvt returned early otherwise), so it wrote the whole `stat`.
    Ok(unsafe { st.assume_init() })
}

/// `lstatat` that maps "does not exist" to `None`.
pub(crate) fn lstatat_opt(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<libc::stat>> {
    match lstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn fstat(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `fd` is open for the call and `st` points to writable memory the size of a `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: fstat succeeded (cvt returned early otherwise), so it wrote the whole `stat`.
    Ok(unsafe { st.assume_init() })
}

pub(crate) fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

pub(crate) fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; mkdirat only reads them.
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub(crate) fn mknodat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mode: libc::mode_t,
    dev: libc::dev_t,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; mknodat only reads them.
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, dev) }).map(drop)
}

pub(crate) fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    // SAFETY: `target` and `name` are NUL-terminated and `dir` open for the call; symlinkat only
    // reads them.
    cvt(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

/// `linkat` without `AT_SYMLINK_FOLLOW`: a hard link to a symlink links the symlink itself.
pub(crate) fn linkat(
    old_dir: BorrowedFd<'_>,
    old_name: &CStr,
    new_dir: BorrowedFd<'_>,
    new_name: &CStr,
) -> io::Result<()> {
    // SAFETY: both names are NUL-terminated and both directories open for the call; linkat only
    // reads them.
    cvt(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old_name.as_ptr(),
            new_dir.as_raw_fd(),
            new_name.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub(crate) fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: `name` is NUL-terminated and `dir` open; `buf` is writable for `buf.len()` bytes,
        // the most readlinkat writes (it adds no NUL).
        let n = unsafe {
            libc::readlinkat(
                dir.as_raw_fd(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n < buf.len() {
            buf.truncate(n);
            return Ok(buf);
        }
        // Possibly truncated: grow and ask again (Linux caps targets at PATH_MAX anyway).
        if buf.len() > 64 * 1024 {
            return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
        }
        buf.resize(buf.len() * 4, 0);
    }
}

pub(crate) fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: libc::c_int) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; unlinkat only reads them.
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub(crate) fn fchownat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    uid: u32,
    gid: u32,
) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; fchownat only reads them.
    cvt(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            name.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: `fd` is open for the call; fchown takes no pointers.
    cvt(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

pub(crate) fn fchmod(fd: BorrowedFd<'_>, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `fd` is open for the call; fchmod takes no pointers.
    cvt(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

/// chmod of a name that is known not to be a symlink (Linux cannot chmod symlinks).
pub(crate) fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: libc::mode_t) -> io::Result<()> {
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; fchmodat only reads them.
    cvt(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

/// A (seconds, nanoseconds) instant as tar headers and `utimensat` see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Time {
    pub sec: i64,
    pub nsec: i64,
}

impl Time {
    fn timespec(self) -> libc::timespec {
        libc::timespec {
            tv_sec: self.sec as libc::time_t,
            tv_nsec: self.nsec as _,
        }
    }
}

pub(crate) fn utimensat_nofollow(
    dir: BorrowedFd<'_>,
    name: &CStr,
    atime: Time,
    mtime: Time,
) -> io::Result<()> {
    let ts = [atime.timespec(), mtime.timespec()];
    // SAFETY: `name` is NUL-terminated and `dir` open for the call; `ts` is the two-element array
    // utimensat reads (access, then modification time).
    cvt(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            name.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

pub(crate) fn futimens(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> io::Result<()> {
    let ts = [atime.timespec(), mtime.timespec()];
    // SAFETY: `fd` is open for the call; `ts` is the two-element array futimens reads.
    cvt(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

pub(crate) fn syncfs(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is open for the call; syncfs takes no pointers.
    cvt(unsafe { libc::syncfs(fd.as_raw_fd()) }).map(drop)
}

/// `/proc/self/fd/<dir>/<name>`: lets the `l*xattr` calls (which have no `*at` form on older
/// kernels) reach exactly `name` inside an already-resolved directory, without following `name`.
pub(crate) fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    cstr(&p)
}

/// Where an xattr operation lands: an open regular file or directory, or a name in a directory
/// (for symlinks, devices and fifos, which cannot be opened for the `f*xattr` calls).
#[derive(Clone, Copy)]
pub(crate) enum XattrTarget<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

pub(crate) fn set_xattr(target: XattrTarget<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let key = cstr(key)?;
    let ret = match target {
        // SAFETY: `key` is NUL-terminated, `fd` open and `value` readable for `value.len()`
        // bytes for the call; fsetxattr only reads them.
        XattrTarget::Fd(fd) => unsafe {
            libc::fsetxattr(
                fd.as_raw_fd(),
                key.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        },
        XattrTarget::At(dir, name) => {
            let p = proc_path(dir, name)?;
            // SAFETY: `p` and `key` are NUL-terminated and `value` readable for `value.len()`
            // bytes for the call; lsetxattr only reads them.
            unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    key.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            }
        }
    };
    cvt(ret).map(drop)
}

/// Every xattr of the target as (key, value), sorted by key. Filesystems without xattr support
/// answer with an empty list.
pub(crate) fn list_xattrs(target: XattrTarget<'_>) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let path = match target {
        XattrTarget::At(dir, name) => Some(proc_path(dir, name)?),
        XattrTarget::Fd(_) => None,
    };
    let list = |buf: &mut [u8]| -> isize {
        match (&target, &path) {
            // SAFETY: `fd` is open and `buf` writable for `buf.len()` bytes, the most flistxattr
            // writes (a zero length only asks the size and writes nothing).
            (XattrTarget::Fd(fd), _) => unsafe {
                libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
            },
            // SAFETY: `p` is NUL-terminated and `buf` writable for `buf.len()` bytes, the most
            // llistxattr writes.
            (_, Some(p)) => unsafe {
                libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            },
            (_, None) => -1,
        }
    };
    let get = |key: &CStr, buf: &mut [u8]| -> isize {
        match (&target, &path) {
            // SAFETY: `key` is NUL-terminated, `fd` open and `buf` writable for `buf.len()`
            // bytes, the most fgetxattr writes.
            (XattrTarget::Fd(fd), _) => unsafe {
                libc::fgetxattr(
                    fd.as_raw_fd(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            },
            // SAFETY: `p` and `key` are NUL-terminated and `buf` writable for `buf.len()` bytes,
            // the most lgetxattr writes.
            (_, Some(p)) => unsafe {
                libc::lgetxattr(p.as_ptr(), key.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
            },
            (_, None) => -1,
        }
    };

    let names = loop {
        let size = list(&mut []);
        if size < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENOTSUP) {
                return Ok(Vec::new());
            }
            return Err(e);
        }
        let mut buf = vec![0u8; size as usize];
        let n = list(&mut buf);
        if n < 0 {
            let e = io::Error::last_os_error();
            // The list grew between the two calls: ask again.
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue;
            }
            return Err(e);
        }
        buf.truncate(n as usize);
        break buf;
    };

    let mut out = Vec::new();
    for key in names.split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let ckey = cstr(key)?;
        let value = loop {
            let size = get(&ckey, &mut []);
            if size < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break None; // removed meanwhile
                }
                return Err(e);
            }
            let mut buf = vec![0u8; size as usize];
            let n = get(&ckey, &mut buf);
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ERANGE) {
                    continue;
                }
                if e.raw_os_error() == Some(libc::ENODATA) {
                    break None;
                }
                return Err(e);
            }
            buf.truncate(n as usize);
            break Some(buf);
        };
        if let Some(v) = value {
            out.push((key.to_vec(), v));
        }
    }
    out.sort();
    Ok(out)
}

/// The names in a directory (without `.` and `..`), sorted bytewise so walks are deterministic.
pub(crate) fn read_dir_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    // A fresh O_RDONLY descriptor: `dir` may be an O_PATH one, which getdents refuses, and
    // fdopendir takes ownership of what it is given.
    let fd = openat(dir, c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    // SAFETY: `fd` is an open directory descriptor; on success the DIR stream owns it.
    let dirp = unsafe { libc::fdopendir(fd.as_raw_fd()) };
    if dirp.is_null() {
        // fdopendir failed: `fd` is still ours and closes on return.
        return Err(io::Error::last_os_error());
    }
    // The stream owns the descriptor now, and closedir closes it.
    let _ = std::os::fd::IntoRawFd::into_raw_fd(fd);
    struct Closer(*mut libc::DIR);
    impl Drop for Closer {
        fn drop(&mut self) {
            // SAFETY: `self.0` is the stream fdopendir returned, not closed before: Closer is
            // made once per stream and this is its only closedir.
            unsafe { libc::closedir(self.0) };
        }
    }
    let _closer = Closer(dirp);
    let mut names = Vec::new();
    loop {
        // readdir signals errors only through errno, so clear it first.
        nix::errno::Errno::clear();
        // SAFETY: `dirp` is an open stream used by this thread only (it never leaves this
        // function), as readdir requires.
        let ent = unsafe { libc::readdir64(dirp) };
        if ent.is_null() {
            let e = io::Error::last_os_error();
            if e.raw_os_error().unwrap_or(0) != 0 {
                return Err(e);
            }
            break;
        }
        // SAFETY: `ent` is non-null, so it points to the entry readdir just returned, valid until
        // the next readdir on `dirp`; its d_name is a NUL-terminated array, copied out below
        // before that next call.
        let name = unsafe { CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` in `dir` and, if it is a directory, everything below it, never following a
/// symlink. A missing name is not an error (like `os.RemoveAll`).
///
/// The walk keeps its own stack instead of recursing: a layer can nest directories thousands
/// deep (symlinks let one member continue where another stopped, past `PATH_MAX`), and a
/// recursive walk then overflows the thread's stack, which aborts the whole daemon. Depth is
/// bounded by open descriptors instead (one per level), which fails with `EMFILE`.
pub(crate) fn remove_all_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    let ok_if_gone = |r: io::Result<()>| match r {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        other => other,
    };
    let st = match lstatat_opt(dir, name)? {
        Some(st) => st,
        None => return Ok(()),
    };
    if !is_dir(&st) {
        return ok_if_gone(unlinkat(dir, name, 0));
    }
    /// A directory being emptied: its descriptor, the children still to remove (popped from
    /// the end) and its own name in the level above.
    struct Level {
        fd: OwnedFd,
        todo: Vec<Vec<u8>>,
        name: CString,
    }
    let open = |parent: BorrowedFd<'_>, name: &CStr| -> io::Result<Level> {
        let fd = openat(parent, name, O_DIR_PATH, 0)?;
        let mut todo = read_dir_names(fd.as_fd())?;
        todo.reverse();
        Ok(Level {
            fd,
            todo,
            name: name.to_owned(),
        })
    };
    let mut stack = vec![open(dir, name)?];
    while let Some(top) = stack.last_mut() {
        let Some(child) = top.todo.pop() else {
            let Some(done) = stack.pop() else { break };
            let parent = stack.last().map_or(dir, |l| l.fd.as_fd());
            ok_if_gone(unlinkat(parent, &done.name, libc::AT_REMOVEDIR))?;
            continue;
        };
        let child = cstr(&child)?;
        match lstatat_opt(top.fd.as_fd(), &child)? {
            None => {}
            Some(st) if is_dir(&st) => {
                let level = open(top.fd.as_fd(), &child)?;
                stack.push(level);
            }
            Some(_) => ok_if_gone(unlinkat(top.fd.as_fd(), &child, 0))?,
        }
    }
    Ok(())
}

/// Bytes of a path as an `OsStr`, for messages and `Path` joins.
pub(crate) fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}
