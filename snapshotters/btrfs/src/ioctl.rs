//! btrfs through its ioctls (`linux/btrfs.h`): subvolumes made, snapshotted, flagged read-only,
//! identified and destroyed, and the quota tree read for a subvolume's exclusive bytes. No
//! `btrfs` program is run.
//!
//! Every function takes paths and returns [`std::io::Error`]s; the driver adds what it was doing.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use nix::errno::Errno;

/// The inode number of every subvolume's root directory (`BTRFS_FIRST_FREE_OBJECTID`).
pub const FIRST_FREE_OBJECTID: u64 = 256;
/// `BTRFS_SUBVOL_RDONLY`: the flag of a read-only subvolume (and of a read-only snapshot request).
const SUBVOL_RDONLY: u64 = 1 << 1;
/// `BTRFS_SUBVOL_NAME_MAX`.
const SUBVOL_NAME_MAX: usize = 4039;
/// `BTRFS_PATH_NAME_MAX`.
const PATH_NAME_MAX: usize = 4087;
/// `BTRFS_INO_LOOKUP_PATH_MAX`.
const INO_LOOKUP_PATH_MAX: usize = 4080;

/// `BTRFS_QUOTA_TREE_OBJECTID`: the tree holding the qgroups when quotas are enabled.
const QUOTA_TREE_OBJECTID: u64 = 8;
/// `BTRFS_QGROUP_STATUS_KEY` (one item, `(0, 240, 0)`).
const QGROUP_STATUS_KEY: u32 = 240;
/// `BTRFS_QGROUP_INFO_KEY` (one item per qgroup, `(0, 242, qgroupid)`).
const QGROUP_INFO_KEY: u32 = 242;
/// `BTRFS_QGROUP_STATUS_FLAG_ON`.
const QGROUP_STATUS_FLAG_ON: u64 = 1 << 0;
/// `BTRFS_QGROUP_STATUS_FLAG_RESCAN`: a rescan is running, the numbers are not final.
const QGROUP_STATUS_FLAG_RESCAN: u64 = 1 << 1;
/// `BTRFS_QGROUP_STATUS_FLAG_INCONSISTENT`: the numbers are wrong until a rescan.
const QGROUP_STATUS_FLAG_INCONSISTENT: u64 = 1 << 2;

/// `struct btrfs_ioctl_vol_args` (SNAP_DESTROY).
#[repr(C)]
pub struct VolArgs {
    fd: i64,
    name: [u8; PATH_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_vol_args_v2` (SUBVOL_CREATE_V2, SNAP_CREATE_V2). The kernel's unions are
/// flattened to the members Berth uses: `unused` (size and qgroup_inherit, left zero) and `name`.
#[repr(C)]
pub struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    unused: [u64; 4],
    name: [u8; SUBVOL_NAME_MAX + 1],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
pub struct InoLookupArgs {
    treeid: u64,
    objectid: u64,
    name: [u8; INO_LOOKUP_PATH_MAX],
}

/// `struct btrfs_ioctl_search_key`.
#[repr(C)]
#[derive(Default)]
struct SearchKey {
    tree_id: u64,
    min_objectid: u64,
    max_objectid: u64,
    min_offset: u64,
    max_offset: u64,
    min_transid: u64,
    max_transid: u64,
    min_type: u32,
    max_type: u32,
    nr_items: u32,
    unused: u32,
    unused1: [u64; 4],
}

/// `BTRFS_SEARCH_ARGS_BUFSIZE`.
const SEARCH_BUF: usize = 4096 - std::mem::size_of::<SearchKey>();

/// `struct btrfs_ioctl_search_args`.
#[repr(C)]
pub struct SearchArgs {
    key: SearchKey,
    buf: [u8; SEARCH_BUF],
}

/// `struct btrfs_ioctl_search_header`, which precedes each item in [`SearchArgs::buf`].
const SEARCH_HEADER_LEN: usize = 32;

// The kernel's sizes, which are part of the ioctl numbers.
const _: () = assert!(std::mem::size_of::<VolArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<VolArgsV2>() == 4096);
const _: () = assert!(std::mem::size_of::<InoLookupArgs>() == 4096);
const _: () = assert!(std::mem::size_of::<SearchKey>() == 104);
const _: () = assert!(std::mem::size_of::<SearchArgs>() == 4096);

/// `BTRFS_IOCTL_MAGIC`.
const MAGIC: u8 = 0x94;

mod sys {
    use super::{InoLookupArgs, SearchArgs, VolArgs, VolArgsV2, MAGIC};
    nix::ioctl_none!(sync, MAGIC, 8);
    nix::ioctl_write_ptr!(snap_destroy, MAGIC, 15, VolArgs);
    nix::ioctl_readwrite!(tree_search, MAGIC, 17, SearchArgs);
    nix::ioctl_readwrite!(ino_lookup, MAGIC, 18, InoLookupArgs);
    nix::ioctl_write_ptr!(snap_create_v2, MAGIC, 23, VolArgsV2);
    nix::ioctl_write_ptr!(subvol_create_v2, MAGIC, 24, VolArgsV2);
    nix::ioctl_read!(subvol_getflags, MAGIC, 25, u64);
    nix::ioctl_write_ptr!(subvol_setflags, MAGIC, 26, u64);
}

fn open_dir(path: &Path) -> io::Result<File> {
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}

/// `path`'s directory (opened) and its last component, checked to fit in `N` bytes with the NUL.
fn parent_and_name<const N: usize>(path: &Path) -> io::Result<(File, [u8; N])> {
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidInput, why.to_owned());
    let name = path
        .file_name()
        .ok_or_else(|| invalid("a subvolume path must end with a name"))?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name);
    if bytes.len() >= N || bytes.contains(&0) {
        return Err(invalid("subvolume name too long or not a C string"));
    }
    let mut buf = [0u8; N];
    buf[..bytes.len()].copy_from_slice(bytes);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((open_dir(parent)?, buf))
}

fn check(r: nix::Result<libc::c_int>) -> io::Result<()> {
    r.map(|_| ()).map_err(io::Error::from)
}

/// Whether `path` lies on a btrfs filesystem (statfs's `f_type` is `BTRFS_SUPER_MAGIC`).
pub fn is_btrfs(path: &Path) -> io::Result<bool> {
    let st = nix::sys::statfs::statfs(path).map_err(io::Error::from)?;
    Ok(st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC)
}

/// Whether `path` (on btrfs) is the root directory of a subvolume.
pub fn is_subvolume(path: &Path) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    Ok(meta.is_dir() && meta.ino() == FIRST_FREE_OBJECTID)
}

/// Creates an empty subvolume at `path` (`BTRFS_IOC_SUBVOL_CREATE_V2`).
pub fn create_subvolume(path: &Path) -> io::Result<()> {
    let (dir, name) = parent_and_name::<{ SUBVOL_NAME_MAX + 1 }>(path)?;
    let args = VolArgsV2 {
        fd: 0,
        transid: 0,
        flags: 0,
        unused: [0; 4],
        name,
    };
    // SAFETY: `dir` is an open directory for the whole call and `args` is a valid, initialised
    // `btrfs_ioctl_vol_args_v2` (4096 bytes, the size encoded in the request) that outlives it;
    // the kernel only reads it.
    check(unsafe { sys::subvol_create_v2(dir.as_raw_fd(), &args) })
}

/// Snapshots the subvolume `source` at `path` (`BTRFS_IOC_SNAP_CREATE_V2`), read-only if asked.
pub fn snapshot(source: &Path, path: &Path, readonly: bool) -> io::Result<()> {
    let src = open_dir(source)?;
    let (dir, name) = parent_and_name::<{ SUBVOL_NAME_MAX + 1 }>(path)?;
    let args = VolArgsV2 {
        fd: i64::from(src.as_raw_fd()),
        transid: 0,
        flags: if readonly { SUBVOL_RDONLY } else { 0 },
        unused: [0; 4],
        name,
    };
    // SAFETY: `dir` and `src` are open for the whole call (the kernel reads the source fd from
    // `args`); `args` is a valid `btrfs_ioctl_vol_args_v2` of the encoded size that the kernel
    // only reads.
    check(unsafe { sys::snap_create_v2(dir.as_raw_fd(), &args) })
}

/// Destroys the subvolume at `path` (`BTRFS_IOC_SNAP_DESTROY`), read-only or not. Subvolumes
/// nested inside it (a container may make some) are destroyed first.
pub fn delete_subvolume(path: &Path) -> io::Result<()> {
    match destroy(path) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTEMPTY) => {
            // Nested subvolumes hold it. Removing their entries changes this subvolume, so it
            // must be writable for that.
            if readonly(path)? {
                set_readonly(path, false)?;
            }
            for nested in nested_subvolumes(path)? {
                delete_subvolume(&nested)?;
            }
            destroy(path)
        }
        other => other,
    }
}

fn destroy(path: &Path) -> io::Result<()> {
    let (dir, name) = parent_and_name::<{ PATH_NAME_MAX + 1 }>(path)?;
    let args = VolArgs { fd: 0, name };
    // SAFETY: `dir` is open for the whole call; `args` is a valid `btrfs_ioctl_vol_args` of the
    // encoded size (4096 bytes) that the kernel only reads.
    check(unsafe { sys::snap_destroy(dir.as_raw_fd(), &args) })
}

/// The roots of the subvolumes directly inside the subvolume `path` (not inside those).
fn nested_subvolumes(path: &Path) -> io::Result<Vec<std::path::PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![path.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            let p = entry.path();
            if is_subvolume(&p)? {
                found.push(p);
            } else {
                stack.push(p);
            }
        }
    }
    Ok(found)
}

/// Removes whatever is at `path`: subvolumes (through [`delete_subvolume`]), directories with
/// subvolumes anywhere inside, files. Nothing there is not an error.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return fs::remove_file(path);
    }
    if meta.ino() == FIRST_FREE_OBJECTID {
        return delete_subvolume(path);
    }
    for entry in fs::read_dir(path)? {
        remove_tree(&entry?.path())?;
    }
    fs::remove_dir(path)
}

fn flags(sub: &File) -> io::Result<u64> {
    let mut flags = 0u64;
    // SAFETY: `sub` is open for the call and `flags` is a valid u64 the kernel writes into.
    check(unsafe { sys::subvol_getflags(sub.as_raw_fd(), &mut flags) })?;
    Ok(flags)
}

/// Whether the subvolume `path` is read-only (`BTRFS_IOC_SUBVOL_GETFLAGS`).
pub fn readonly(path: &Path) -> io::Result<bool> {
    Ok(flags(&open_dir(path)?)? & SUBVOL_RDONLY != 0)
}

/// Makes the subvolume `path` read-only or writable (`BTRFS_IOC_SUBVOL_SETFLAGS`).
pub fn set_readonly(path: &Path, readonly: bool) -> io::Result<()> {
    let sub = open_dir(path)?;
    let current = flags(&sub)?;
    let wanted = if readonly {
        current | SUBVOL_RDONLY
    } else {
        current & !SUBVOL_RDONLY
    };
    if wanted == current {
        return Ok(());
    }
    // SAFETY: `sub` is open for the call and `wanted` is a valid u64 the kernel only reads.
    check(unsafe { sys::subvol_setflags(sub.as_raw_fd(), &wanted) })
}

/// The id of the subvolume holding `path`: the tree of its inodes, found by looking up the
/// subvolume root's inode (`BTRFS_IOC_INO_LOOKUP` with objectid 256 answers with the tree id).
pub fn subvolume_id(path: &Path) -> io::Result<u64> {
    let dir = open_dir(path)?;
    let mut args = InoLookupArgs {
        treeid: 0,
        objectid: FIRST_FREE_OBJECTID,
        name: [0; INO_LOOKUP_PATH_MAX],
    };
    // SAFETY: `dir` is open for the call; `args` is a valid `btrfs_ioctl_ino_lookup_args` of the
    // encoded size that the kernel reads and writes (tree id and path) in place.
    check(unsafe { sys::ino_lookup(dir.as_raw_fd(), &mut args) })?;
    Ok(args.treeid)
}

/// Commits the filesystem's current transaction (`BTRFS_IOC_SYNC`), which is also when quota
/// accounting catches up with recent writes.
pub fn sync(path: &Path) -> io::Result<()> {
    let dir = open_dir(path)?;
    // SAFETY: `dir` is open for the call; the request takes no argument.
    check(unsafe { sys::sync(dir.as_raw_fd()) })
}

/// One item of a quota-tree search: its type, offset and data.
struct Item {
    kind: u32,
    offset: u64,
    data: Vec<u8>,
}

/// The items of the quota tree with objectid 0 between `(kind, min_offset)` and
/// `(kind, max_offset)`, at most `max_items`; `None` when the filesystem has no quota tree
/// (quotas are off). Needs CAP_SYS_ADMIN.
fn search_quota_tree(
    fs: &File,
    kind: u32,
    min_offset: u64,
    max_offset: u64,
    max_items: u32,
) -> io::Result<Option<Vec<Item>>> {
    let mut args = SearchArgs {
        key: SearchKey {
            tree_id: QUOTA_TREE_OBJECTID,
            min_objectid: 0,
            max_objectid: 0,
            min_offset,
            max_offset,
            min_transid: 0,
            max_transid: u64::MAX,
            min_type: kind,
            max_type: kind,
            nr_items: max_items,
            ..SearchKey::default()
        },
        buf: [0; SEARCH_BUF],
    };
    // SAFETY: `fs` is open for the call; `args` is a valid `btrfs_ioctl_search_args` of the
    // encoded size (4096 bytes) that the kernel reads (the key) and fills in place (the key's
    // item count and `buf`, never beyond it).
    match unsafe { sys::tree_search(fs.as_raw_fd(), &mut args) } {
        Ok(_) => {}
        // No quota tree: quotas were never enabled, or were disabled.
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let u64_at = |b: &[u8], at: usize| -> Option<u64> {
        Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let short = || io::Error::new(io::ErrorKind::InvalidData, "short btrfs tree search reply");
    let mut items = Vec::new();
    let mut at = 0usize;
    for _ in 0..args.key.nr_items {
        // struct btrfs_ioctl_search_header { transid, objectid, offset: u64; type, len: u32 }
        let offset = u64_at(&args.buf, at + 16).ok_or_else(short)?;
        let kind = u32_at(&args.buf, at + 24).ok_or_else(short)?;
        let len = u32_at(&args.buf, at + 28).ok_or_else(short)? as usize;
        let start = at + SEARCH_HEADER_LEN;
        let data = args.buf.get(start..start + len).ok_or_else(short)?.to_vec();
        items.push(Item { kind, offset, data });
        at = start + len;
    }
    Ok(Some(items))
}

/// Bytes only the subvolume `subvolid` holds (its level-0 qgroup's `excl`), read from the quota
/// tree of the filesystem `path` is on, after a sync so the accounting includes recent writes.
/// `None` when quotas are off, still being rescanned, or inconsistent, or the qgroup is missing:
/// then the number would be wrong and the caller measures another way.
pub fn qgroup_exclusive(path: &Path, subvolid: u64) -> io::Result<Option<u64>> {
    let fs = open_dir(path)?;
    let Some(status) = search_quota_tree(&fs, QGROUP_STATUS_KEY, 0, u64::MAX, 1)? else {
        return Ok(None);
    };
    // struct btrfs_qgroup_status_item { version, generation, flags, rescan: __le64 }
    let flags = match status.first() {
        Some(item) if item.kind == QGROUP_STATUS_KEY && item.data.len() >= 24 => {
            u64::from_le_bytes(item.data[16..24].try_into().unwrap_or_default())
        }
        _ => return Ok(None),
    };
    if flags & QGROUP_STATUS_FLAG_ON == 0
        || flags & (QGROUP_STATUS_FLAG_RESCAN | QGROUP_STATUS_FLAG_INCONSISTENT) != 0
    {
        return Ok(None);
    }
    sync(path)?;
    let Some(info) = search_quota_tree(&fs, QGROUP_INFO_KEY, subvolid, subvolid, 1)? else {
        return Ok(None);
    };
    // struct btrfs_qgroup_info_item { generation, rfer, rfer_cmpr, excl, excl_cmpr: __le64 }
    Ok(info
        .iter()
        .find(|i| i.kind == QGROUP_INFO_KEY && i.offset == subvolid && i.data.len() >= 32)
        .and_then(|i| i.data[24..32].try_into().ok())
        .map(u64::from_le_bytes))
}
