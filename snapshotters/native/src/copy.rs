//! Copying a directory tree with everything a container image can hold: ownership, modes
//! (setuid/setgid/sticky), xattrs, hardlinks, symlinks, device nodes, fifos, sockets, sparse files
//! and timestamps. Regular files are reflinked where the filesystem can (btrfs, xfs), otherwise
//! copied in the kernel with copy_file_range, hole by hole for sparse files.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use berth_snapshotter::SnapshotError;
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchownat, Gid, Uid};

/// `FICLONE` from linux/fs.h.
const FICLONE: libc::c_ulong = 0x4004_9409;

struct Copier {
    /// (dev, ino) of a source file with several links -> its first copy, so links stay links.
    links: HashMap<(u64, u64), std::path::PathBuf>,
}

/// Copies the contents of `src` into the existing directory `dst`, and `src`'s own attributes
/// onto `dst`.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), SnapshotError> {
    let mut c = Copier {
        links: HashMap::new(),
    };
    c.copy_dir_contents(src, dst)?;
    let meta = fs::symlink_metadata(src).map_err(SnapshotError::io("stat", src))?;
    finish(src, dst, &meta)
}

impl Copier {
    fn copy_dir_contents(&mut self, src: &Path, dst: &Path) -> Result<(), SnapshotError> {
        for entry in fs::read_dir(src).map_err(SnapshotError::io("read dir", src))? {
            let entry = entry.map_err(SnapshotError::io("read dir", src))?;
            let s = entry.path();
            let d = dst.join(entry.file_name());
            let meta = fs::symlink_metadata(&s).map_err(SnapshotError::io("stat", &s))?;
            self.copy_entry(&s, &d, &meta)?;
        }
        Ok(())
    }

    fn copy_entry(&mut self, s: &Path, d: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
        let ft = meta.file_type();
        if !ft.is_dir() && meta.nlink() > 1 {
            if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                return fs::hard_link(first, d).map_err(SnapshotError::io("link", d));
            }
        }
        if ft.is_dir() {
            fs::create_dir(d).map_err(SnapshotError::io("mkdir", d))?;
            self.copy_dir_contents(s, d)?;
        } else if ft.is_file() {
            copy_file(s, d, meta)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(s).map_err(SnapshotError::io("readlink", s))?;
            std::os::unix::fs::symlink(&target, d).map_err(SnapshotError::io("symlink", d))?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            mknod(
                d,
                kind,
                Mode::from_bits_truncate(meta.mode() & 0o7777),
                meta.rdev(),
            )
            .map_err(SnapshotError::errno("mknod", d))?;
        }
        if !ft.is_dir() && meta.nlink() > 1 {
            self.links.insert((meta.dev(), meta.ino()), d.to_owned());
        }
        finish(s, d, meta)
    }
}

/// Ownership, then mode (chown clears setuid/setgid), xattrs, then times (last, since the other
/// changes touch ctime/mtime of directories).
fn finish(s: &Path, d: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
    let is_link = meta.file_type().is_symlink();
    fchownat(
        nix::fcntl::AT_FDCWD,
        d,
        Some(Uid::from_raw(meta.uid())),
        Some(Gid::from_raw(meta.gid())),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(SnapshotError::errno("chown", d))?;
    if !is_link {
        fs::set_permissions(d, fs::Permissions::from_mode(meta.mode() & 0o7777))
            .map_err(SnapshotError::io("chmod", d))?;
    }
    copy_xattrs(s, d)?;
    let atime = TimeSpec::new(meta.atime(), meta.atime_nsec());
    let mtime = TimeSpec::new(meta.mtime(), meta.mtime_nsec());
    utimensat(
        nix::fcntl::AT_FDCWD,
        d,
        &atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(SnapshotError::errno("set times", d))?;
    Ok(())
}

fn copy_xattrs(s: &Path, d: &Path) -> Result<(), SnapshotError> {
    let names = match xattr::list(s) {
        Ok(n) => n,
        // A filesystem without xattrs has none to copy.
        Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => return Ok(()),
        Err(e) => return Err(SnapshotError::io("list xattrs", s)(e)),
    };
    for name in names {
        if let Some(value) = xattr::get(s, &name).map_err(SnapshotError::io("get xattr", s))? {
            xattr::set(d, &name, &value).map_err(SnapshotError::io("set xattr", d))?;
        }
    }
    Ok(())
}

fn copy_file(s: &Path, d: &Path, meta: &fs::Metadata) -> Result<(), SnapshotError> {
    let src = File::open(s).map_err(SnapshotError::io("open", s))?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(d)
        .map_err(SnapshotError::io("create", d))?;
    let len = meta.len();
    if len == 0 {
        return Ok(());
    }
    // SAFETY: `dst` and `src` are open files borrowed for the call; FICLONE takes the source
    // descriptor as its plain integer argument and writes through no pointer.
    if unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    let sparse = (meta.blocks() * 512) < len;
    if sparse {
        copy_sparse(&src, &dst, len, d)?;
    } else {
        copy_range(&src, &dst, 0, len, d)?;
    }
    Ok(())
}

/// Copies bytes [off, off+len) with copy_file_range, falling back to read/write where the kernel
/// or filesystem refuses.
fn copy_range(src: &File, dst: &File, off: u64, len: u64, d: &Path) -> Result<(), SnapshotError> {
    let mut in_off = off as i64;
    let mut out_off = off as i64;
    let end = (off + len) as i64;
    while in_off < end {
        let want = (end - in_off).min(1 << 30) as usize;
        // SAFETY: both descriptors are open files borrowed for the call; the offset pointers are
        // to this function's own `i64`s, which copy_file_range reads and advances.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut in_off,
                dst.as_raw_fd(),
                &mut out_off,
                want,
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV)
                | Some(libc::ENOSYS)
                | Some(libc::EINVAL)
                | Some(libc::EOPNOTSUPP) => {
                    copy_plain(src, dst, in_off as u64, (end - in_off) as u64, d)
                }
                _ => Err(SnapshotError::io("copy", d)(e)),
            };
        }
        if n == 0 {
            break; // source shrank underneath us
        }
    }
    Ok(())
}

fn copy_plain(src: &File, dst: &File, off: u64, len: u64, d: &Path) -> Result<(), SnapshotError> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = off;
    let end = off + len;
    while pos < end {
        let want = ((end - pos) as usize).min(buf.len());
        let n = src
            .read_at(&mut buf[..want], pos)
            .map_err(SnapshotError::io("read", d))?;
        if n == 0 {
            break;
        }
        dst.write_all_at(&buf[..n], pos)
            .map_err(SnapshotError::io("write", d))?;
        pos += n as u64;
    }
    Ok(())
}

/// Copies only the data extents, leaving holes as holes.
fn copy_sparse(src: &File, dst: &File, len: u64, d: &Path) -> Result<(), SnapshotError> {
    dst.set_len(len).map_err(SnapshotError::io("truncate", d))?;
    let fd = src.as_raw_fd();
    let mut pos: i64 = 0;
    let end = len as i64;
    while pos < end {
        // SAFETY: `fd` belongs to `src`, open for the whole loop; lseek takes no pointers.
        let data = unsafe { libc::lseek(fd, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole remains
            }
            // SEEK_DATA unsupported: copy everything.
            return copy_range(src, dst, 0, len, d);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        let hole = if hole < 0 { end } else { hole.min(end) };
        copy_range(src, dst, data as u64, (hole - data) as u64, d)?;
        pos = hole;
    }
    Ok(())
}
