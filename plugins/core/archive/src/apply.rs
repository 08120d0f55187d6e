//! Applying a layer tarball onto a directory (containerd's `archive.Apply`).

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::digest::{parse_sha256, DigestingReader};
use crate::fsutil::{self, cstr, is_dir, Time, XattrTarget, O_DIR_PATH};
use crate::header_guard::HeaderGuard;
use crate::resolve::{resolve_dir, Follow, ResolvedDir};
use crate::ArchiveError;

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const WHITEOUT_OPAQUE: &[u8] = b".wh..wh..opq";
/// Linux limits; checked up front so the error names the entry rather than surfacing ENAMETOOLONG.
const PATH_MAX: usize = 4096;
const NAME_MAX: usize = 255;
/// Read size for file contents: large enough that the decompressor and the disk see big chunks.
const COPY_BUF: usize = 1024 * 1024;

/// Which xattr namespace overlayfs reads its whiteout metadata from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrPrefix {
    /// `trusted.overlay.*`: the classic, root-only form.
    Trusted,
    /// `user.overlay.*`: overlay mounted with `userxattr` (rootless / user namespaces).
    User,
}

impl XattrPrefix {
    pub fn as_str(self) -> &'static str {
        match self {
            XattrPrefix::Trusted => "trusted.",
            XattrPrefix::User => "user.",
        }
    }
}

/// How whiteout entries (`.wh.<name>`, `.wh..wh..opq`) are realised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WhiteoutMode {
    /// The target already holds the parent layers' files (native, btrfs, devmapper snapshots):
    /// whiteouts delete `<name>`, an opaque marker deletes every child of its directory that this
    /// layer did not itself write.
    #[default]
    Delete,
    /// The target is an empty overlayfs upper directory: a whiteout becomes a 0/0 character
    /// device, an opaque marker the `<prefix>overlay.opaque=y` xattr on its directory.
    Overlay { xattr_prefix: XattrPrefix },
}

/// A function mapping (uid, gid) from the layer to the ids written on disk.
pub type IdMapFn = Box<dyn Fn(u32, u32) -> (u32, u32) + Send + Sync>;

/// Ownership remapping for user namespaces.
pub enum IdMap {
    /// Add these to every uid / gid (the usual single-range user namespace mapping). An id that
    /// would overflow is an error naming the entry.
    Offset { uid: u32, gid: u32 },
    /// Any other mapping.
    Func(IdMapFn),
}

impl IdMap {
    fn map(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        match self {
            IdMap::Offset { uid: du, gid: dg } => {
                Some((uid.checked_add(*du)?, gid.checked_add(*dg)?))
            }
            IdMap::Func(f) => Some(f(uid, gid)),
        }
    }
}

impl std::fmt::Debug for IdMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdMap::Offset { uid, gid } => write!(f, "Offset {{ uid: {uid}, gid: {gid} }}"),
            IdMap::Func(_) => f.write_str("Func(..)"),
        }
    }
}

/// Options for [`apply`]. The default deletes for whiteouts, keeps the layer's owners, refuses
/// device nodes and does not sync.
#[derive(Debug, Default)]
pub struct ApplyOptions {
    pub whiteouts: WhiteoutMode,
    /// Remap owners (user namespaces). `None` writes the layer's ids unchanged.
    pub id_map: Option<IdMap>,
    /// Do not chown at all (rootless extraction): files belong to the applying user.
    pub no_same_owner: bool,
    /// Create character and block devices. Even when set, they are only created when running as
    /// root; otherwise a device entry is refused with an error naming it. Fifos are always made.
    pub allow_devices: bool,
    /// `syncfs` the target's filesystem once at the end, instead of an fsync per file.
    pub sync: bool,
    /// `sha256:<hex>` the uncompressed stream must hash to; a mismatch is an error (the target
    /// then holds the unverified content and should be discarded by the caller).
    pub expected_diff_id: Option<String>,
    /// Parent layer directories, nearest first (overlay mode): a directory this layer implies but
    /// does not list copies owner, mode, times and xattrs from the first parent that has it, so
    /// the upper directory does not mask the lower one's metadata (containerd's `WithParents`).
    pub parents: Vec<PathBuf>,
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyStats {
    /// `sha256:<hex>` of the uncompressed tar stream, trailing padding included (the diff_id).
    pub diff_id: String,
    /// Uncompressed bytes read.
    pub size: u64,
    /// Tar members seen (whiteouts included).
    pub entries: u64,
    /// Whiteout and opaque markers processed.
    pub whiteouts: u64,
    /// Members ignored: the root itself, PAX global headers, AUFS metadata (`.wh..wh.*`).
    pub ignored: u64,
    /// Extended attributes not applied (unsupported by the filesystem, `trusted.*` without
    /// root, or overlayfs control attributes that a layer must not forge).
    pub skipped_xattrs: u64,
    /// Directories the layer implied without listing them (relative to the target). Without
    /// `parents` they get default metadata; [`crate::inherit_dir_metadata`] can fix them up
    /// once the parent layers exist (Berth extracts layers in parallel, before their parents).
    pub implied_dirs: Vec<PathBuf>,
}

/// Applies a tar stream (already decompressed, see [`crate::decompress`]) onto `target`.
///
/// Every entry is confined to `target`: names are cleaned (a leading `/` is dropped, a `..` that
/// would climb above the target is refused), symlinks in parent directories are resolved with
/// `target` as `/`, the entry's own name is never followed, and hard links may only point at
/// names inside `target`. On error the target is left partly applied; callers discard it.
pub fn apply<R: Read>(
    reader: R,
    target: &Path,
    opts: &ApplyOptions,
) -> Result<ApplyStats, ArchiveError> {
    let expected = match &opts.expected_diff_id {
        Some(d) => {
            parse_sha256(d)?;
            Some(d.clone())
        }
        None => None,
    };
    // O_RDONLY rather than O_PATH: syncfs needs a real descriptor.
    let root = fsutil::open_path(target, libc::O_RDONLY | libc::O_DIRECTORY)
        .map_err(|e| ArchiveError::io(target, "opening target directory", e))?;
    let mut parents = Vec::with_capacity(opts.parents.len());
    for p in &opts.parents {
        let fd = fsutil::open_path(p, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| ArchiveError::io(p, "opening parent directory", e))?;
        parents.push(fd);
    }

    let mut digesting = DigestingReader::new(reader);
    let mut applier = Applier::new(root, parents, opts);
    {
        // Buffer so tar's 512-byte header reads do not each reach the decompressor.
        let buffered = BufReader::with_capacity(256 * 1024, &mut digesting);
        // The guard refuses oversized PAX / GNU long-name headers before the tar crate buffers
        // them whole; it must be what the crate reads, so it sits above the buffer.
        let mut archive = tar::Archive::new(HeaderGuard::new(buffered));
        let mut last: Option<String> = None;
        for entry in archive.entries().map_err(|e| stream_error(&last, e))? {
            let mut entry = entry.map_err(|e| stream_error(&last, e))?;
            let name = display_name(&entry.path_bytes());
            applier.entry(&mut entry, &name)?;
            last = Some(name);
        }
        // The diff_id covers the whole stream, including the zero blocks and any padding after
        // the end-of-archive marker, so read it to the end (past the guard: the archive is over).
        let mut rest = archive.into_inner().into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(|e| stream_error(&last, e))?;
    }
    applier.finish(target)?;

    let stats = ApplyStats {
        diff_id: digesting.digest(),
        size: digesting.size(),
        ..applier.state.stats
    };
    if let Some(expected) = expected {
        if expected != stats.diff_id {
            return Err(ArchiveError::DigestMismatch {
                expected,
                actual: stats.diff_id,
            });
        }
    }
    Ok(stats)
}

/// An error reading the stream after entry `after`. The header guard's refusal reaches us through
/// the tar crate as an `io::Error` carrying the typed error; it is taken back out, so the caller
/// sees its kind (InvalidArgument) and not a generic stream failure.
fn stream_error(after: &Option<String>, source: io::Error) -> ArchiveError {
    let stream = |source| ArchiveError::Stream {
        after: after.clone(),
        source,
    };
    if !source.get_ref().is_some_and(|e| e.is::<ArchiveError>()) {
        return stream(source);
    }
    let kind = source.kind();
    match source.into_inner().map(|e| e.downcast::<ArchiveError>()) {
        Some(Ok(e)) => match *e {
            ArchiveError::HeaderTooLarge {
                what,
                header,
                size,
                limit,
                after: _,
            } => ArchiveError::HeaderTooLarge {
                what,
                header,
                size,
                limit,
                after: after.clone(),
            },
            other => other,
        },
        Some(Err(e)) => stream(io::Error::new(kind, e)),
        None => stream(io::Error::from(kind)),
    }
}

/// The entry's name for messages: lossy UTF-8, cut short if absurdly long.
pub(crate) fn display_name(raw: &[u8]) -> String {
    const MAX: usize = 256;
    if raw.len() <= MAX {
        return String::from_utf8_lossy(raw).into_owned();
    }
    format!(
        "{}…({} bytes)",
        String::from_utf8_lossy(&raw[..MAX]),
        raw.len()
    )
}

/// Splits a member name into clean components relative to the root, like containerd's
/// `filepath.Clean` + join at `/`, except that a `..` climbing above the root is refused rather
/// than silently clamped: such a name is never produced by an honest layer.
pub(crate) fn clean_name(raw: &[u8]) -> Result<Vec<&[u8]>, String> {
    if raw.len() > PATH_MAX {
        return Err(format!(
            "name is {} bytes, longer than {PATH_MAX}",
            raw.len()
        ));
    }
    if raw.contains(&0) {
        return Err("name contains a NUL byte".into());
    }
    let mut comps: Vec<&[u8]> = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if comps.pop().is_none() {
                    return Err("name escapes the target through \"..\"".into());
                }
            }
            c if c.len() > NAME_MAX => {
                return Err(format!(
                    "path component is {} bytes, longer than {NAME_MAX}",
                    c.len()
                ))
            }
            c => comps.push(c),
        }
    }
    Ok(comps)
}

fn join_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Parses a PAX time (`"1700000000.123456789"`, possibly negative).
pub(crate) fn parse_pax_time(v: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(v).ok()?.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = match s.split_once('.') {
        Some((a, b)) => (a, b),
        None => (s, ""),
    };
    let sec: i64 = if secs.is_empty() {
        0
    } else {
        secs.parse().ok()?
    };
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let nsec: i64 = digits.parse().ok()?;
    Some(if !neg {
        Time { sec, nsec }
    } else if nsec == 0 {
        Time { sec: -sec, nsec: 0 }
    } else {
        Time {
            sec: -sec - 1,
            nsec: 1_000_000_000 - nsec,
        }
    })
}

/// A numeric header field, with an empty one (all NULs or spaces) read as 0 as Go's archive/tar
/// and GNU tar do; some writers leave fields they do not care about blank.
fn lenient<T: Default>(parsed: io::Result<T>, raw: &[u8]) -> io::Result<T> {
    match parsed {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        other => other,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    File,
    Dir,
    Symlink,
    Hardlink,
    Char,
    Block,
    Fifo,
}

/// Metadata of a directory whose mode and times are set at the end: creating children changes
/// a directory's mtime, and a read-only mode would stop us creating them.
struct DirMeta {
    mode: u32,
    atime: Time,
    mtime: Time,
}

/// Everything the entry's header and PAX records say about it, read before touching the disk.
struct Meta {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Time,
    atime: Time,
    xattrs: Vec<(String, Vec<u8>)>,
    link: Option<Vec<u8>>,
    dev: (u32, u32),
}

struct State<'o> {
    opts: &'o ApplyOptions,
    is_root: bool,
    parents: Vec<OwnedFd>,
    /// Real paths written by this layer and all their ancestors (Delete mode): an opaque marker
    /// keeps these and removes the rest.
    keep: HashSet<Vec<u8>>,
    dirs: HashMap<Vec<u8>, DirMeta>,
    dir_order: Vec<Vec<u8>>,
    stats: ApplyStats,
}

struct Applier<'o> {
    root: OwnedFd,
    /// Resolved parent directories by the name used in the archive. Cleared whenever something is
    /// removed, since a cached descriptor could then point at a directory no longer in the tree.
    cache: HashMap<Vec<u8>, Rc<ResolvedDir>>,
    buf: Vec<u8>,
    state: State<'o>,
}

impl<'o> Applier<'o> {
    fn new(root: OwnedFd, parents: Vec<OwnedFd>, opts: &'o ApplyOptions) -> Self {
        Applier {
            root,
            cache: HashMap::new(),
            buf: vec![0u8; COPY_BUF],
            state: State {
                opts,
                is_root: fsutil::is_root(),
                parents,
                keep: HashSet::new(),
                dirs: HashMap::new(),
                dir_order: Vec::new(),
                stats: ApplyStats {
                    diff_id: String::new(),
                    size: 0,
                    entries: 0,
                    whiteouts: 0,
                    ignored: 0,
                    skipped_xattrs: 0,
                    implied_dirs: Vec::new(),
                },
            },
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), ArchiveError> {
        self.state.stats.entries += 1;
        let raw = entry.path_bytes().into_owned();
        let etype = entry.header().entry_type();
        if etype.is_pax_global_extensions() {
            self.state.stats.ignored += 1;
            return Ok(());
        }
        let comps = clean_name(&raw).map_err(|r| ArchiveError::invalid(name, r))?;
        let Some((&base, parent)) = comps.split_last() else {
            // containerd ignores members that resolve to the root itself.
            self.state.stats.ignored += 1;
            return Ok(());
        };

        if let Some(original) = base.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(entry, name, parent, original);
        }

        let meta = self.read_meta(entry, name, &raw)?;
        let dir = self.parent(name, parent)?;
        let cbase = cstr(base).map_err(|e| ArchiveError::entry(name, "invalid name", e))?;

        // A hard link's source must exist before anything at the destination is removed, and
        // linking a name to itself is a no-op rather than a removal followed by a failure.
        let link_src = match meta.kind {
            Kind::Hardlink => Some(self.link_source(name, &meta)?),
            _ => None,
        };

        // containerd's rule: an existing directory stays if the entry is a directory too (the
        // two merge); anything else at the name is removed, never written through.
        let mut merge = false;
        if let Some(st) = fsutil::lstatat_opt(dir.fd.as_fd(), &cbase)
            .map_err(|e| ArchiveError::entry(name, "lstat", e))?
        {
            if let Some((src_dir, src_name)) = &link_src {
                let src = fsutil::lstatat(src_dir.fd.as_fd(), src_name)
                    .map_err(|e| ArchiveError::entry(name, "lstat link target", e))?;
                if src.st_dev == st.st_dev && src.st_ino == st.st_ino {
                    self.state.mark(join_path(&dir.path, base));
                    return Ok(());
                }
            }
            if is_dir(&st) && meta.kind == Kind::Dir {
                merge = true;
            } else {
                fsutil::remove_all_at(dir.fd.as_fd(), &cbase)
                    .map_err(|e| ArchiveError::entry(name, "removing existing path", e))?;
                self.cache.clear();
            }
        }

        let real = join_path(&dir.path, base);
        let dfd = dir.fd.as_fd();
        match meta.kind {
            Kind::File => {
                let fd = fsutil::openat(
                    dfd,
                    &cbase,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(|e| ArchiveError::entry(name, "creating file", e))?;
                let mut file = File::from(fd);
                copy_data(entry, &mut file, &mut self.buf)
                    .map_err(|e| ArchiveError::entry(name, "writing file contents", e))?;
                let fd = file.as_fd();
                self.state
                    .chown(name, |uid, gid| fsutil::fchown(fd, uid, gid), &meta)?;
                self.state.set_xattrs(name, XattrTarget::Fd(fd), &meta)?;
                // After chown, which clears setuid/setgid.
                fsutil::fchmod(fd, meta.mode).map_err(|e| ArchiveError::entry(name, "chmod", e))?;
                fsutil::futimens(fd, meta.atime, meta.mtime)
                    .map_err(|e| ArchiveError::entry(name, "setting times", e))?;
            }
            Kind::Dir => {
                if !merge {
                    // Owner-only until the real mode is set at the end.
                    fsutil::mkdirat(dfd, &cbase, 0o700)
                        .map_err(|e| ArchiveError::entry(name, "mkdir", e))?;
                }
                let fd = fsutil::openat(
                    dfd,
                    &cbase,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                    0,
                )
                .map_err(|e| ArchiveError::entry(name, "opening directory", e))?;
                let fd = fd.as_fd();
                self.state
                    .chown(name, |uid, gid| fsutil::fchown(fd, uid, gid), &meta)?;
                self.state.set_xattrs(name, XattrTarget::Fd(fd), &meta)?;
                self.state.defer_dir(
                    real.clone(),
                    DirMeta {
                        mode: meta.mode,
                        atime: meta.atime,
                        mtime: meta.mtime,
                    },
                );
            }
            Kind::Symlink => {
                let target = meta.link.as_deref().unwrap_or_default();
                if target.is_empty() {
                    return Err(ArchiveError::invalid(name, "symlink with an empty target"));
                }
                let ctarget =
                    cstr(target).map_err(|e| ArchiveError::entry(name, "symlink target", e))?;
                fsutil::symlinkat(&ctarget, dfd, &cbase)
                    .map_err(|e| ArchiveError::entry(name, "creating symlink", e))?;
                self.state.chown(
                    name,
                    |uid, gid| fsutil::fchownat_nofollow(dfd, &cbase, uid, gid),
                    &meta,
                )?;
                self.state
                    .set_xattrs(name, XattrTarget::At(dfd, &cbase), &meta)?;
                // No chmod: Linux symlinks have no mode of their own.
                fsutil::utimensat_nofollow(dfd, &cbase, meta.atime, meta.mtime)
                    .map_err(|e| ArchiveError::entry(name, "setting times", e))?;
            }
            Kind::Hardlink => {
                let Some((src_dir, src_name)) = &link_src else {
                    return Err(ArchiveError::invalid(name, "hard link without a target"));
                };
                fsutil::linkat(src_dir.fd.as_fd(), src_name, dfd, &cbase)
                    .map_err(|e| ArchiveError::entry(name, "creating hard link", e))?;
                // The inode keeps the metadata its own entry gave it: a link member must not be
                // able to re-own or re-mode a file it merely names.
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let (fmt, dev) = match meta.kind {
                    Kind::Char => (libc::S_IFCHR, libc::makedev(meta.dev.0, meta.dev.1)),
                    Kind::Block => (libc::S_IFBLK, libc::makedev(meta.dev.0, meta.dev.1)),
                    _ => (libc::S_IFIFO, 0),
                };
                fsutil::mknodat(dfd, &cbase, fmt | 0o600, dev)
                    .map_err(|e| ArchiveError::entry(name, "mknod", e))?;
                self.state.chown(
                    name,
                    |uid, gid| fsutil::fchownat_nofollow(dfd, &cbase, uid, gid),
                    &meta,
                )?;
                self.state
                    .set_xattrs(name, XattrTarget::At(dfd, &cbase), &meta)?;
                // We just created it, so it is not a symlink and chmod cannot be redirected.
                fsutil::fchmodat(dfd, &cbase, meta.mode)
                    .map_err(|e| ArchiveError::entry(name, "chmod", e))?;
                fsutil::utimensat_nofollow(dfd, &cbase, meta.atime, meta.mtime)
                    .map_err(|e| ArchiveError::entry(name, "setting times", e))?;
            }
        }
        self.state.mark(real);
        Ok(())
    }

    /// Reads the header, PAX records and link name, validating what can be validated early.
    fn read_meta<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        raw: &[u8],
    ) -> Result<Meta, ArchiveError> {
        let hdr = entry.header().clone();
        let etype = hdr.entry_type();
        let kind = match etype {
            // Old tars mark directories as regular files whose name ends in `/`.
            tar::EntryType::Regular if raw.ends_with(b"/") => Kind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                Kind::File
            }
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Char => Kind::Char,
            tar::EntryType::Block => Kind::Block,
            tar::EntryType::Fifo => Kind::Fifo,
            other => {
                return Err(ArchiveError::invalid(
                    name,
                    format!("unsupported tar entry type {:?}", other.as_byte() as char),
                ))
            }
        };
        if matches!(kind, Kind::Char | Kind::Block) {
            if !self.state.opts.allow_devices {
                return Err(ArchiveError::invalid(
                    name,
                    "device nodes are not allowed (ApplyOptions::allow_devices is off)",
                ));
            }
            if !self.state.is_root {
                return Err(ArchiveError::invalid(
                    name,
                    "creating device nodes needs root",
                ));
            }
        }
        let bad =
            |what: &str, e: io::Error| ArchiveError::invalid(name, format!("bad {what}: {e}"));
        let old = hdr.as_old();
        let mode = lenient(hdr.mode(), &old.mode).map_err(|e| bad("mode", e))? & 0o7777;
        let uid = lenient(hdr.uid(), &old.uid).map_err(|e| bad("uid", e))?;
        let gid = lenient(hdr.gid(), &old.gid).map_err(|e| bad("gid", e))?;
        let (uid, gid) = match (u32::try_from(uid), u32::try_from(gid)) {
            (Ok(u), Ok(g)) => (u, g),
            _ => {
                return Err(ArchiveError::invalid(
                    name,
                    format!("owner {uid}:{gid} out of range"),
                ))
            }
        };
        let (uid, gid) = match &self.state.opts.id_map {
            Some(m) => m.map(uid, gid).ok_or_else(|| {
                ArchiveError::invalid(name, format!("owner {uid}:{gid} cannot be remapped"))
            })?,
            None => (uid, gid),
        };
        let header_mtime = Time {
            sec: i64::try_from(lenient(hdr.mtime(), &old.mtime).map_err(|e| bad("mtime", e))?)
                .unwrap_or(i64::MAX),
            nsec: 0,
        };
        let gnu_atime = hdr
            .as_gnu()
            .and_then(|g| g.atime().ok())
            .filter(|t| *t != 0)
            .map(|t| Time {
                sec: i64::try_from(t).unwrap_or(i64::MAX),
                nsec: 0,
            });
        let dev = if matches!(kind, Kind::Char | Kind::Block) {
            (
                hdr.device_major()
                    .map_err(|e| bad("device major", e))?
                    .unwrap_or(0),
                hdr.device_minor()
                    .map_err(|e| bad("device minor", e))?
                    .unwrap_or(0),
            )
        } else {
            (0, 0)
        };

        let mut xattrs = Vec::new();
        let (mut mtime, mut atime) = (None, None);
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
            for rec in pax {
                let rec = rec.map_err(|e| bad("PAX record", e))?;
                let Ok(key) = rec.key() else { continue };
                if let Some(x) = key.strip_prefix("SCHILY.xattr.") {
                    xattrs.push((x.to_owned(), rec.value_bytes().to_vec()));
                } else if key == "mtime" {
                    mtime = parse_pax_time(rec.value_bytes());
                } else if key == "atime" {
                    atime = parse_pax_time(rec.value_bytes());
                }
            }
        }
        let mtime = mtime.unwrap_or(header_mtime);
        // containerd sets atime to the later of atime and mtime.
        let atime = atime.or(gnu_atime).map_or(mtime, |a| a.max(mtime));

        let link = match kind {
            Kind::Symlink | Kind::Hardlink => {
                let l = entry
                    .link_name_bytes()
                    .map(|l| l.into_owned())
                    .unwrap_or_default();
                if l.len() >= PATH_MAX {
                    return Err(ArchiveError::invalid(
                        name,
                        "link target is longer than 4095 bytes",
                    ));
                }
                Some(l)
            }
            _ => None,
        };
        Ok(Meta {
            kind,
            mode,
            uid,
            gid,
            mtime,
            atime,
            xattrs,
            link,
            dev,
        })
    }

    /// Resolves (creating as needed) the directory that will hold an entry.
    fn parent(&mut self, name: &str, comps: &[&[u8]]) -> Result<Rc<ResolvedDir>, ArchiveError> {
        let key = comps.join(&b'/');
        if let Some(d) = self.cache.get(&key) {
            return Ok(d.clone());
        }
        let state = &mut self.state;
        let mut hook = |parent: BorrowedFd<'_>, dname: &CStr, real: &[u8]| {
            state.implicit_dir(parent, dname, real)
        };
        let resolved = resolve_dir(self.root.as_fd(), comps, Follow::InRoot, Some(&mut hook))
            .map_err(|e| ArchiveError::entry(name, "resolving parent directory", e))?;
        let resolved = Rc::new(resolved);
        if self.cache.len() > 4096 {
            self.cache.clear();
        }
        self.cache.insert(key, resolved.clone());
        Ok(resolved)
    }

    /// The directory and name a hard link points at, resolved inside the root. The last
    /// component is not followed: a link to a symlink links the symlink (as containerd does).
    fn link_source(
        &mut self,
        name: &str,
        meta: &Meta,
    ) -> Result<(Rc<ResolvedDir>, std::ffi::CString), ArchiveError> {
        let raw = meta.link.as_deref().unwrap_or_default();
        let comps = clean_name(raw)
            .map_err(|r| ArchiveError::invalid(name, format!("hard link target: {r}")))?;
        let Some((&base, parent)) = comps.split_last() else {
            return Err(ArchiveError::invalid(
                name,
                "hard link to the root directory",
            ));
        };
        let dir = resolve_dir(self.root.as_fd(), parent, Follow::InRoot, None)
            .map_err(|e| ArchiveError::entry(name, "resolving hard link target", e))?;
        let cbase = cstr(base).map_err(|e| ArchiveError::entry(name, "hard link target", e))?;
        let st = fsutil::lstatat(dir.fd.as_fd(), &cbase).map_err(|e| {
            ArchiveError::entry(name, format!("hard link target {:?}", display_name(raw)), e)
        })?;
        if is_dir(&st) {
            return Err(ArchiveError::invalid(name, "hard link to a directory"));
        }
        Ok((Rc::new(dir), cbase))
    }

    fn whiteout<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
        parent: &[&[u8]],
        original: &[u8],
    ) -> Result<(), ArchiveError> {
        let base = [WHITEOUT_PREFIX, original].concat();
        if base == WHITEOUT_OPAQUE {
            let dir = self.parent(name, parent)?;
            self.state.stats.whiteouts += 1;
            match self.state.opts.whiteouts {
                WhiteoutMode::Delete => {
                    self.state
                        .opaque_delete(dir.fd.as_fd(), &dir.path)
                        .map_err(|e| ArchiveError::entry(name, "clearing opaque directory", e))?;
                    self.cache.clear();
                }
                WhiteoutMode::Overlay { xattr_prefix } => {
                    let fd =
                        fsutil::openat(dir.fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                            .map_err(|e| {
                                ArchiveError::entry(name, "opening opaque directory", e)
                            })?;
                    let key = format!("{}overlay.opaque", xattr_prefix.as_str());
                    fsutil::set_xattr(XattrTarget::Fd(fd.as_fd()), key.as_bytes(), b"y")
                        .map_err(|e| ArchiveError::entry(name, format!("setting {key}"), e))?;
                }
            }
            return Ok(());
        }
        if original.starts_with(WHITEOUT_PREFIX) {
            // Other `.wh..wh.*` names are AUFS bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`).
            self.state.stats.ignored += 1;
            return Ok(());
        }
        if original.is_empty() || original == b"." || original == b".." {
            return Err(ArchiveError::invalid(name, "invalid whiteout name"));
        }
        let dir = self.parent(name, parent)?;
        let corig = cstr(original).map_err(|e| ArchiveError::entry(name, "invalid name", e))?;
        self.state.stats.whiteouts += 1;
        // Only ever the name itself is removed; the parent was resolved inside the root.
        fsutil::remove_all_at(dir.fd.as_fd(), &corig)
            .map_err(|e| ArchiveError::entry(name, "removing whited-out path", e))?;
        self.cache.clear();
        if let WhiteoutMode::Overlay { .. } = self.state.opts.whiteouts {
            fsutil::mknodat(dir.fd.as_fd(), &corig, libc::S_IFCHR, 0)
                .map_err(|e| ArchiveError::entry(name, "creating whiteout device", e))?;
            if !self.state.opts.no_same_owner {
                let hdr = entry.header();
                let uid = hdr
                    .uid()
                    .ok()
                    .and_then(|u| u32::try_from(u).ok())
                    .unwrap_or(0);
                let gid = hdr
                    .gid()
                    .ok()
                    .and_then(|g| u32::try_from(g).ok())
                    .unwrap_or(0);
                let (uid, gid) = match &self.state.opts.id_map {
                    Some(m) => m.map(uid, gid).unwrap_or((uid, gid)),
                    None => (uid, gid),
                };
                fsutil::fchownat_nofollow(dir.fd.as_fd(), &corig, uid, gid)
                    .map_err(|e| ArchiveError::entry(name, "chown whiteout device", e))?;
            }
        }
        Ok(())
    }

    /// Sets the deferred directory modes and times (deepest first), then syncs if asked.
    fn finish(&mut self, target: &Path) -> Result<(), ArchiveError> {
        let order = std::mem::take(&mut self.state.dir_order);
        for path in order.iter().rev() {
            let Some(meta) = self.state.dirs.get(path) else {
                continue;
            };
            let comps: Vec<&[u8]> = path.split(|b| *b == b'/').collect();
            // The path is symlink-free as recorded; if a later entry removed or replaced the
            // directory, it no longer resolves (or is not a directory) and there is nothing to do.
            let Ok(dir) = resolve_dir(self.root.as_fd(), &comps, Follow::Never, None) else {
                continue;
            };
            let name = display_name(path);
            let fd = fsutil::openat(dir.fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)
                .map_err(|e| ArchiveError::entry(&name, "opening directory", e))?;
            fsutil::fchmod(fd.as_fd(), meta.mode)
                .map_err(|e| ArchiveError::entry(&name, "chmod", e))?;
            fsutil::futimens(fd.as_fd(), meta.atime, meta.mtime)
                .map_err(|e| ArchiveError::entry(&name, "setting times", e))?;
        }
        if self.state.opts.sync {
            fsutil::syncfs(self.root.as_fd()).map_err(|e| ArchiveError::io(target, "syncfs", e))?;
        }
        Ok(())
    }
}

impl State<'_> {
    fn chown(
        &self,
        name: &str,
        f: impl FnOnce(u32, u32) -> io::Result<()>,
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        if self.opts.no_same_owner {
            return Ok(());
        }
        f(meta.uid, meta.gid).map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EPERM) || e.raw_os_error() == Some(libc::EINVAL) {
                " (not root or id not mapped in this user namespace; consider no_same_owner or id_map)"
            } else {
                ""
            };
            ArchiveError::entry(name, format!("chown to {}:{}{hint}", meta.uid, meta.gid), e)
        })
    }

    fn set_xattrs(
        &mut self,
        name: &str,
        target: XattrTarget<'_>,
        meta: &Meta,
    ) -> Result<(), ArchiveError> {
        for (key, value) in &meta.xattrs {
            // overlayfs reads these to decide what is whited out, opaque or redirected; a layer
            // must not be able to forge them, only our own whiteout conversion writes them.
            if key.starts_with("trusted.overlay.") || key.starts_with("user.overlay.") {
                tracing::warn!(
                    entry = name,
                    xattr = key.as_str(),
                    "overlay xattr in layer ignored"
                );
                self.stats.skipped_xattrs += 1;
                continue;
            }
            if key.starts_with("trusted.") && !self.is_root {
                self.stats.skipped_xattrs += 1;
                continue;
            }
            match fsutil::set_xattr(target, key.as_bytes(), value) {
                Ok(()) => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::ENOTSUP)
                        || (e.raw_os_error() == Some(libc::EPERM)
                            && key.starts_with("user.")
                            && !matches!(meta.kind, Kind::File | Kind::Dir)) =>
                {
                    // The filesystem has no such namespace, or user.* on a symlink/device
                    // (which Linux forbids): containerd warns and goes on.
                    tracing::warn!(entry = name, xattr = key.as_str(), error = %e, "xattr in layer ignored");
                    self.stats.skipped_xattrs += 1;
                }
                Err(e) => return Err(ArchiveError::entry(name, format!("setting xattr {key}"), e)),
            }
        }
        Ok(())
    }

    fn defer_dir(&mut self, path: Vec<u8>, meta: DirMeta) {
        if self.dirs.insert(path.clone(), meta).is_none() {
            self.dir_order.push(path);
        }
    }

    /// Records that this layer wrote `path` (and so every ancestor), for opaque markers.
    fn mark(&mut self, path: Vec<u8>) {
        if self.opts.whiteouts != WhiteoutMode::Delete {
            return;
        }
        let mut p = path;
        loop {
            let parent = p.iter().rposition(|b| *b == b'/').map(|i| p[..i].to_vec());
            if !self.keep.insert(p) {
                break;
            }
            match parent {
                Some(pp) => p = pp,
                None => break,
            }
        }
    }

    /// Delete-mode opaque marker: removes every child not written by this layer, descending into
    /// directories this layer wrote or wrote below. With its own stack rather than recursion,
    /// as [`fsutil::remove_all_at`]: the kept tree is as deep as the layer chose to make it.
    fn opaque_delete(&mut self, dir: BorrowedFd<'_>, dir_path: &[u8]) -> io::Result<()> {
        let names = |fd: BorrowedFd<'_>| -> io::Result<Vec<Vec<u8>>> {
            let mut n = fsutil::read_dir_names(fd)?;
            n.reverse(); // popped from the end: sorted order
            Ok(n)
        };
        let mut stack = vec![(dir.try_clone_to_owned()?, dir_path.to_vec(), names(dir)?)];
        while let Some((fd, path, todo)) = stack.last_mut() {
            let Some(child) = todo.pop() else {
                stack.pop();
                continue;
            };
            let real = join_path(path, &child);
            let cchild = cstr(&child)?;
            if !self.keep.contains(&real) {
                fsutil::remove_all_at(fd.as_fd(), &cchild)?;
                continue;
            }
            let st = fsutil::lstatat(fd.as_fd(), &cchild)?;
            if is_dir(&st) {
                let sub = fsutil::openat(fd.as_fd(), &cchild, O_DIR_PATH, 0)?;
                let todo = names(sub.as_fd())?;
                stack.push((sub, real, todo));
            }
        }
        Ok(())
    }

    /// Creates a directory the layer implies without listing it (`a/b/c` with no `a/b/` member).
    fn implicit_dir(&mut self, parent: BorrowedFd<'_>, name: &CStr, real: &[u8]) -> io::Result<()> {
        fsutil::mkdirat(parent, name, 0o755)?;
        // mkdir applied the umask.
        fsutil::fchmodat(parent, name, 0o755)?;
        self.mark(real.to_vec());
        {
            use std::os::unix::ffi::OsStrExt;
            self.stats
                .implied_dirs
                .push(PathBuf::from(std::ffi::OsStr::from_bytes(real)));
        }
        let comps: Vec<&[u8]> = real.split(|b| *b == b'/').collect();
        for p in 0..self.parents.len() {
            let found = match resolve_dir(self.parents[p].as_fd(), &comps, Follow::InRoot, None) {
                Ok(d) => d,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT)) => continue,
                // Replaced by a non-directory in that parent: default metadata.
                Err(_) => break,
            };
            let src = fsutil::openat(
                found.fd.as_fd(),
                c".",
                libc::O_RDONLY | libc::O_DIRECTORY,
                0,
            )?;
            let st = fsutil::fstat(src.as_fd())?;
            let dst = fsutil::openat(
                parent,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )?;
            fsutil::fchown(dst.as_fd(), st.st_uid, st.st_gid)?;
            for (k, v) in fsutil::list_xattrs(XattrTarget::Fd(src.as_fd()))? {
                // As containerd's copy-up: never trusted.* (overlay's own state lives there).
                if k.starts_with(b"trusted.") || k.starts_with(b"user.overlay.") {
                    continue;
                }
                fsutil::set_xattr(XattrTarget::Fd(dst.as_fd()), &k, &v)?;
            }
            self.defer_dir(
                real.to_vec(),
                DirMeta {
                    mode: st.st_mode & 0o7777,
                    atime: Time {
                        sec: st.st_atime,
                        nsec: st.st_atime_nsec,
                    },
                    mtime: Time {
                        sec: st.st_mtime,
                        nsec: st.st_mtime_nsec,
                    },
                },
            );
            break;
        }
        Ok(())
    }
}

/// Streams an entry's data into the file with a large buffer.
fn copy_data(src: &mut impl Read, dst: &mut File, buf: &mut [u8]) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match src.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        dst.write_all(&buf[..n])?;
        total += n as u64;
    }
}
