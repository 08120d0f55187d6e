//! Path resolution that cannot leave a root directory.
//!
//! A layer is hostile input: an earlier entry may have made `a` a symlink to `/etc` or to
//! `../../..`, and a later entry `a/passwd` must not land outside the target. We never hand a
//! multi-component path to the kernel. Instead each component is opened with
//! `O_PATH|O_DIRECTORY|O_NOFOLLOW` relative to the directory reached so far; a symlink met on the
//! way is read and its target spliced into the remaining components, with an absolute target
//! restarting at the root and `..` never climbing above it. That is the meaning of
//! `openat2(RESOLVE_IN_ROOT)` and of containerd's `fs.RootPath` (the root acts as `/`), done in
//! user space so it behaves the same on every kernel. Nothing else writes to the target while a
//! layer is applied, so there is no race to guard against between the steps.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::fsutil::{self, cstr, O_DIR_PATH};

/// What to do with a symlink met in a directory component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Follow {
    /// Follow it, treating the root as `/` (in-root resolution).
    InRoot,
    /// Refuse it (`ENOTDIR`): used for paths already known to be symlink-free.
    Never,
}

/// The most symlinks one resolution may follow, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: u32 = 40;

/// A directory reached from the root.
pub(crate) struct ResolvedDir {
    /// `O_PATH` descriptor of the directory.
    pub fd: OwnedFd,
    /// Its real path below the root, components joined by `/`, with no symlinks in it
    /// (empty for the root itself).
    pub path: Vec<u8>,
}

/// Called for a missing component when creating: `(parent, name, real path of the new dir)`.
pub(crate) type CreateHook<'h> = &'h mut dyn FnMut(BorrowedFd<'_>, &CStr, &[u8]) -> io::Result<()>;

fn join(stack: &[(OwnedFd, Vec<u8>)], last: Option<&[u8]>) -> Vec<u8> {
    let mut p = Vec::new();
    for name in stack.iter().map(|(_, n)| n.as_slice()).chain(last) {
        if !p.is_empty() {
            p.push(b'/');
        }
        p.extend_from_slice(name);
    }
    p
}

/// Resolves the directory named by `comps` below `root`. With `create`, missing components are
/// made by the hook (which must create a directory named `name` in `parent`); without, a missing
/// component is `ENOENT`. A component that is neither a directory nor (with [`Follow::InRoot`]) a
/// symlink is `ENOTDIR`.
pub(crate) fn resolve_dir(
    root: BorrowedFd<'_>,
    comps: &[&[u8]],
    follow: Follow,
    mut create: Option<CreateHook<'_>>,
) -> io::Result<ResolvedDir> {
    let mut pending: VecDeque<Vec<u8>> = comps.iter().map(|c| c.to_vec()).collect();
    let mut stack: Vec<(OwnedFd, Vec<u8>)> = Vec::new();
    let mut links = 0u32;

    while let Some(comp) = pending.pop_front() {
        if comp.is_empty() || comp == b"." {
            continue;
        }
        if comp == b".." {
            // Clamped at the root: popping an empty stack leaves us there.
            stack.pop();
            continue;
        }
        let cur = stack.last().map(|(fd, _)| fd.as_fd()).unwrap_or(root);
        let name = cstr(&comp)?;
        match fsutil::openat(cur, &name, O_DIR_PATH, 0) {
            Ok(fd) => stack.push((fd, comp)),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let Some(hook) = create.as_mut() else {
                    return Err(e);
                };
                let real = join(&stack, Some(&comp));
                hook(cur, &name, &real)?;
                let fd = fsutil::openat(cur, &name, O_DIR_PATH, 0)?;
                stack.push((fd, comp));
            }
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTDIR)
                    || e.raw_os_error() == Some(libc::ELOOP) =>
            {
                let st = fsutil::lstatat(cur, &name)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFLNK || follow == Follow::Never {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = fsutil::readlinkat(cur, &name)?;
                if target.first() == Some(&b'/') {
                    // Absolute targets are relative to the root, never the host's `/`.
                    stack.clear();
                }
                for part in target.split(|b| *b == b'/').rev() {
                    pending.push_front(part.to_vec());
                }
            }
            Err(e) => return Err(e),
        }
    }

    let path = join(&stack, None);
    let fd = match stack.pop() {
        Some((fd, _)) => fd,
        None => root.try_clone_to_owned()?,
    };
    Ok(ResolvedDir { fd, path })
}
