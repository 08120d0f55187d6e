//! Writing the difference of two directory trees as a layer (containerd's walking differ plus
//! `archive.WriteDiff` / `ChangeWriter`).
//!
//! # How a change is detected
//!
//! Both trees are walked together, each directory's names sorted bytewise, so the output order is
//! deterministic: a directory, then its children, depth first. A name only in `lower` becomes a
//! `.wh.<name>` whiteout; a name only in `upper` is added (with everything below it). For a name in
//! both, the entry is unchanged only if all of these match:
//!
//! * file type, permission bits (setuid/setgid/sticky included), uid, gid, and for devices the
//!   device number;
//! * the xattrs that travel in layers (all but overlayfs' own `*.overlay.*` and
//!   `security.selinux`, which is host policy);
//! * for non-directories, the mtime's seconds (the tar records whole seconds); for regular files
//!   also the size, and for symlinks the target.
//!
//! Directory mtimes are not compared: adding a child changes them, and a directory with changed
//! children is written anyway as their parent. For regular files whose size and mtime seconds
//! match, the content question is settled as in containerd's continuity: if the nanoseconds differ
//! the file is taken as modified; if both nanosecond parts are zero (a filesystem or an extraction
//! that kept only whole seconds, where equal times prove nothing) the contents are compared byte by
//! byte; if they are equal and non-zero the file is taken as unchanged. The last case is a
//! heuristic: a rewrite of the same size that also restores the exact nanosecond mtime is missed,
//! which in practice takes a deliberate `utimensat`.
//!
//! Hard links: upper names sharing an inode are written once as a file and then as tar hard links
//! to the first name, as long as any name of that inode changed (unchanged names of such an inode
//! are written too, so the link survives in the applied result).

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::SystemTime;

use crate::digest::DigestingWriter;
use crate::fsutil::{self, cstr, is_dir, os, XattrTarget, O_DIR_PATH};
use crate::resolve::{resolve_dir, Follow};
use crate::ArchiveError;

/// Options for [`write_diff`] and [`write_diff_gzip`].
#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Clamp mtimes to this instant (containerd's `WithModTimeUpperBound`, used for reproducible
    /// builds with `SOURCE_DATE_EPOCH`).
    pub mod_time_upper_bound: Option<SystemTime>,
    /// gzip level 0–9 for [`write_diff_gzip`]; `None` is 6, gzip's default.
    pub gzip_level: Option<u32>,
}

/// What a diff wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffStats {
    /// `sha256:<hex>` of the uncompressed tar (the layer's diff_id).
    pub diff_id: String,
    /// Size of the uncompressed tar.
    pub size: u64,
    /// Digest of the compressed blob, for [`write_diff_gzip`].
    pub compressed_digest: Option<String>,
    /// Size of the compressed blob, for [`write_diff_gzip`].
    pub compressed_size: Option<u64>,
    /// Tar members written (whiteouts, hard links and parent directories included).
    pub entries: u64,
}

/// Writes the changes from `lower` to `upper` as an uncompressed OCI layer tar into `out`.
pub fn write_diff<W: Write>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<DiffStats, ArchiveError> {
    let (changes, upper_root) = compute(lower, upper)?;
    let mut digesting = DigestingWriter::new(out);
    let entries = {
        let buffered = BufWriter::with_capacity(1024 * 1024, &mut digesting);
        write_tar(&changes, upper_root.as_fd(), upper, opts, buffered)?
    };
    digesting
        .flush()
        .map_err(|e| ArchiveError::io(upper, "writing diff", e))?;
    Ok(DiffStats {
        diff_id: digesting.digest(),
        size: digesting.size(),
        compressed_digest: None,
        compressed_size: None,
        entries,
    })
}

/// Like [`write_diff`], gzip-compressed (`application/vnd.oci.image.layer.v1.tar+gzip`).
pub fn write_diff_gzip<W: Write>(
    lower: &Path,
    upper: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<DiffStats, ArchiveError> {
    let level = opts.gzip_level.unwrap_or(6).min(9);
    let (changes, upper_root) = compute(lower, upper)?;
    let werr = |e| ArchiveError::io(upper, "writing diff", e);
    let mut compressed = DigestingWriter::new(out);
    let (diff_id, size, entries) = {
        let gz = flate2::write::GzEncoder::new(&mut compressed, flate2::Compression::new(level));
        let mut plain = DigestingWriter::new(gz);
        let entries = {
            let buffered = BufWriter::with_capacity(1024 * 1024, &mut plain);
            write_tar(&changes, upper_root.as_fd(), upper, opts, buffered)?
        };
        let (diff_id, size) = (plain.digest(), plain.size());
        plain.into_inner().finish().map_err(werr)?;
        (diff_id, size, entries)
    };
    compressed.flush().map_err(werr)?;
    Ok(DiffStats {
        diff_id,
        size,
        compressed_digest: Some(compressed.digest()),
        compressed_size: Some(compressed.size()),
        entries,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeKind {
    Add,
    Modify,
    Delete,
    /// Unchanged, but shares its inode with other names: written only if one of them changed.
    UnchangedLinked,
    /// An unchanged directory on the way to changes: written only if something below it is.
    Parent,
}

struct Change {
    /// Relative path, components joined by `/`.
    path: Vec<u8>,
    kind: ChangeKind,
    /// The upper side's stat (absent for deletions).
    st: Option<libc::stat>,
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    [dir, b"/", name].concat()
}

fn ftype(st: &libc::stat) -> libc::mode_t {
    st.st_mode & libc::S_IFMT
}

/// The xattrs that travel in layers.
fn exported_xattr(key: &[u8]) -> bool {
    !(key.starts_with(b"trusted.overlay.")
        || key.starts_with(b"user.overlay.")
        || key == b"security.selinux")
}

fn xattrs_at(dir: BorrowedFd<'_>, name: &CString) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut x = fsutil::list_xattrs(XattrTarget::At(dir, name))?;
    x.retain(|(k, _)| exported_xattr(k));
    Ok(x)
}

struct Walker<'p> {
    lower: &'p Path,
    upper: &'p Path,
    buf_a: Vec<u8>,
    buf_b: Vec<u8>,
}

fn compute(lower: &Path, upper: &Path) -> Result<(Vec<Change>, OwnedFd), ArchiveError> {
    let lower_root = fsutil::open_path(lower, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| ArchiveError::io(lower, "opening lower directory", e))?;
    let upper_root = fsutil::open_path(upper, libc::O_PATH | libc::O_DIRECTORY)
        .map_err(|e| ArchiveError::io(upper, "opening upper directory", e))?;
    let mut w = Walker {
        lower,
        upper,
        buf_a: vec![0; 256 * 1024],
        buf_b: vec![0; 256 * 1024],
    };
    let mut changes = Vec::new();
    w.walk(
        Some(lower_root.as_fd()),
        upper_root.as_fd(),
        b"",
        &mut changes,
    )?;
    Ok((changes, upper_root))
}

/// A directory pair being walked: upper's, lower's when there is one, and its path.
struct Dir {
    lower: Option<OwnedFd>,
    upper: OwnedFd,
    rel: Vec<u8>,
}

/// A directory on the walk's stack, with how far through its names the walk is.
struct Frame {
    dir: Dir,
    unames: Vec<Vec<u8>>,
    lnames: Vec<Vec<u8>>,
    i: usize,
    j: usize,
}

impl Walker<'_> {
    fn uerr(&self, rel: &[u8], op: &'static str) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        let p = self.upper.join(os(rel));
        move |e| ArchiveError::io(p, op, e)
    }

    fn lerr(&self, rel: &[u8], op: &'static str) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
        let p = self.lower.join(os(rel));
        move |e| ArchiveError::io(p, op, e)
    }

    /// Walks both trees in step, depth first, names in order, with its own stack of open
    /// directories rather than recursion: a container can nest directories thousands deep, and a
    /// recursive walk would overflow the thread's stack and abort the daemon. Depth costs one or
    /// two open descriptors per level instead (an error, `EMFILE`, when there are too many).
    fn walk(
        &mut self,
        lower: Option<BorrowedFd<'_>>,
        upper: BorrowedFd<'_>,
        rel: &[u8],
        out: &mut Vec<Change>,
    ) -> Result<(), ArchiveError> {
        let root = Dir {
            lower: lower
                .map(|l| l.try_clone_to_owned())
                .transpose()
                .map_err(self.lerr(rel, "dup"))?,
            upper: upper.try_clone_to_owned().map_err(self.uerr(rel, "dup"))?,
            rel: rel.to_vec(),
        };
        let mut stack = vec![self.frame(root)?];
        while let Some(top) = stack.last_mut() {
            let ord = match (top.unames.get(top.i), top.lnames.get(top.j)) {
                (None, None) => {
                    stack.pop();
                    continue;
                }
                (Some(u), Some(l)) => u.cmp(l),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
            };
            let dir = &top.dir;
            let descend = match (ord, dir.lower.as_ref()) {
                (Ordering::Less, _) | (Ordering::Equal, None) => {
                    top.i += 1;
                    let name = &top.unames[top.i - 1];
                    self.added(dir.upper.as_fd(), name, &dir.rel, out)?
                }
                (Ordering::Equal, Some(lower)) => {
                    top.i += 1;
                    top.j += 1;
                    let name = &top.unames[top.i - 1];
                    self.both(lower.as_fd(), dir.upper.as_fd(), name, &dir.rel, out)?
                }
                (Ordering::Greater, _) => {
                    out.push(Change {
                        path: join(&dir.rel, &top.lnames[top.j]),
                        kind: ChangeKind::Delete,
                        st: None,
                    });
                    top.j += 1;
                    None
                }
            };
            if let Some(sub) = descend {
                let frame = self.frame(sub)?;
                stack.push(frame);
            }
        }
        Ok(())
    }

    /// A directory to walk, with the sorted names of both sides.
    fn frame(&self, dir: Dir) -> Result<Frame, ArchiveError> {
        let unames = fsutil::read_dir_names(dir.upper.as_fd())
            .map_err(self.uerr(&dir.rel, "reading directory"))?;
        let lnames = match &dir.lower {
            Some(l) => fsutil::read_dir_names(l.as_fd())
                .map_err(self.lerr(&dir.rel, "reading directory"))?,
            None => Vec::new(),
        };
        Ok(Frame {
            dir,
            unames,
            lnames,
            i: 0,
            j: 0,
        })
    }

    /// A name only in upper: it and everything below it are added. Returns the directory to
    /// descend into, if it is one.
    fn added(
        &mut self,
        upper: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        out: &mut Vec<Change>,
    ) -> Result<Option<Dir>, ArchiveError> {
        let path = join(rel, name);
        let cname = cstr(name).map_err(self.uerr(&path, "name"))?;
        let st = fsutil::lstatat(upper, &cname).map_err(self.uerr(&path, "lstat"))?;
        if ftype(&st) == libc::S_IFSOCK {
            return Ok(None); // sockets do not travel in layers
        }
        out.push(Change {
            path: path.clone(),
            kind: ChangeKind::Add,
            st: Some(st),
        });
        if !is_dir(&st) {
            return Ok(None);
        }
        let sub = fsutil::openat(upper, &cname, O_DIR_PATH, 0).map_err(self.uerr(&path, "open"))?;
        Ok(Some(Dir {
            lower: None,
            upper: sub,
            rel: path,
        }))
    }

    /// A name in both trees. Returns the directory to descend into, if upper's is one.
    fn both(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        out: &mut Vec<Change>,
    ) -> Result<Option<Dir>, ArchiveError> {
        let path = join(rel, name);
        let cname = cstr(name).map_err(self.uerr(&path, "name"))?;
        let ust = fsutil::lstatat(upper, &cname).map_err(self.uerr(&path, "lstat"))?;
        let lst = fsutil::lstatat(lower, &cname).map_err(self.lerr(&path, "lstat"))?;
        if ftype(&ust) == libc::S_IFSOCK {
            // A socket cannot be carried, so the lower entry is simply gone.
            if ftype(&lst) != libc::S_IFSOCK {
                out.push(Change {
                    path,
                    kind: ChangeKind::Delete,
                    st: None,
                });
            }
            return Ok(None);
        }
        if is_dir(&ust) {
            let kind = if !is_dir(&lst) {
                ChangeKind::Add
            } else if self.changed(lower, upper, &cname, &path, &lst, &ust)? {
                ChangeKind::Modify
            } else {
                ChangeKind::Parent
            };
            out.push(Change {
                path: path.clone(),
                kind,
                st: Some(ust),
            });
            let usub =
                fsutil::openat(upper, &cname, O_DIR_PATH, 0).map_err(self.uerr(&path, "open"))?;
            let lsub = if is_dir(&lst) {
                Some(
                    fsutil::openat(lower, &cname, O_DIR_PATH, 0)
                        .map_err(self.lerr(&path, "open"))?,
                )
            } else {
                None
            };
            return Ok(Some(Dir {
                lower: lsub,
                upper: usub,
                rel: path,
            }));
        }
        let kind = if self.changed(lower, upper, &cname, &path, &lst, &ust)? {
            ChangeKind::Modify
        } else if ust.st_nlink > 1 {
            ChangeKind::UnchangedLinked
        } else {
            return Ok(None);
        };
        out.push(Change {
            path,
            kind,
            st: Some(ust),
        });
        Ok(None)
    }

    /// Whether a name present in both trees differs (see the module docs for the rules).
    fn changed(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        name: &CString,
        path: &[u8],
        l: &libc::stat,
        u: &libc::stat,
    ) -> Result<bool, ArchiveError> {
        if l.st_dev == u.st_dev && l.st_ino == u.st_ino {
            return Ok(false); // the very same file
        }
        if l.st_mode != u.st_mode || l.st_uid != u.st_uid || l.st_gid != u.st_gid {
            return Ok(true);
        }
        let t = ftype(u);
        if (t == libc::S_IFCHR || t == libc::S_IFBLK) && l.st_rdev != u.st_rdev {
            return Ok(true);
        }
        if t != libc::S_IFDIR && l.st_mtime != u.st_mtime {
            return Ok(true);
        }
        if t == libc::S_IFREG && l.st_size != u.st_size {
            return Ok(true);
        }
        if t == libc::S_IFLNK {
            let lt = fsutil::readlinkat(lower, name).map_err(self.lerr(path, "readlink"))?;
            let ut = fsutil::readlinkat(upper, name).map_err(self.uerr(path, "readlink"))?;
            if lt != ut {
                return Ok(true);
            }
        }
        let lx = xattrs_at(lower, name).map_err(self.lerr(path, "reading xattrs"))?;
        let ux = xattrs_at(upper, name).map_err(self.uerr(path, "reading xattrs"))?;
        if lx != ux {
            return Ok(true);
        }
        if t != libc::S_IFREG {
            return Ok(false);
        }
        match (l.st_mtime_nsec, u.st_mtime_nsec) {
            (0, 0) if u.st_size == 0 => Ok(false),
            (0, 0) => self.contents_differ(lower, upper, name, path),
            (a, b) if a != b => Ok(true),
            _ => Ok(false),
        }
    }

    fn contents_differ(
        &mut self,
        lower: BorrowedFd<'_>,
        upper: BorrowedFd<'_>,
        name: &CString,
        path: &[u8],
    ) -> Result<bool, ArchiveError> {
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW;
        let lf = fsutil::openat(lower, name, flags, 0).map_err(self.lerr(path, "open"))?;
        let uf = fsutil::openat(upper, name, flags, 0).map_err(self.uerr(path, "open"))?;
        let (mut lf, mut uf) = (std::fs::File::from(lf), std::fs::File::from(uf));
        loop {
            let a = read_full(&mut lf, &mut self.buf_a).map_err(self.lerr(path, "read"))?;
            let b = read_full(&mut uf, &mut self.buf_b).map_err(self.uerr(path, "read"))?;
            if self.buf_a[..a] != self.buf_b[..b] {
                return Ok(true);
            }
            if a == 0 {
                return Ok(false);
            }
        }
    }
}

/// Reads until the buffer is full or the file ends.
fn read_full(f: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads exactly `remaining` bytes, failing if the file ends early (it shrank after it was
/// stat'ed), so the tar never gets a member shorter than its header says.
struct Exact<R> {
    inner: io::Take<R>,
    remaining: u64,
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && self.remaining > 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while the diff was written",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct TarOut<'a, W: Write> {
    builder: tar::Builder<W>,
    upper: BorrowedFd<'a>,
    upper_path: &'a Path,
    mtime_bound: Option<i64>,
    /// The last parent directory resolved in upper; entries come grouped by directory.
    parent: Option<(Vec<u8>, OwnedFd)>,
    entries: u64,
}

fn write_tar<W: Write>(
    changes: &[Change],
    upper: BorrowedFd<'_>,
    upper_path: &Path,
    opts: &DiffOptions,
    out: W,
) -> Result<u64, ArchiveError> {
    let mut builder = tar::Builder::new(out);
    builder.mode(tar::HeaderMode::Complete);
    let mtime_bound =
        opts.mod_time_upper_bound
            .map(|t| match t.duration_since(SystemTime::UNIX_EPOCH) {
                Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                Err(_) => 0,
            });
    let mut t = TarOut {
        builder,
        upper,
        upper_path,
        mtime_bound,
        parent: None,
        entries: 0,
    };

    let key = |st: &libc::stat| (st.st_dev, st.st_ino);
    let linked = |c: &Change| c.st.filter(|st| !is_dir(st) && st.st_nlink > 1);
    let changed_inodes: HashSet<_> = changes
        .iter()
        .filter(|c| matches!(c.kind, ChangeKind::Add | ChangeKind::Modify))
        .filter_map(linked)
        .map(|st| key(&st))
        .collect();
    let mut first_name: HashMap<(libc::dev_t, libc::ino_t), Vec<u8>> = HashMap::new();
    // Unchanged directories on the path to the current position, written before the first
    // change below them (as containerd's includeParents does).
    let mut pending: Vec<&Change> = Vec::new();

    for c in changes {
        while let Some(top) = pending.last() {
            if c.path.starts_with(&top.path) && c.path.get(top.path.len()) == Some(&b'/') {
                break;
            }
            pending.pop();
        }
        match c.kind {
            ChangeKind::Parent => {
                pending.push(c);
                continue;
            }
            ChangeKind::UnchangedLinked => match linked(c) {
                Some(st) if changed_inodes.contains(&key(&st)) => {}
                _ => continue,
            },
            _ => {}
        }
        for p in pending.drain(..) {
            t.member(p, None)?;
        }
        match (c.kind, c.st) {
            (ChangeKind::Delete, _) => t.whiteout(&c.path)?,
            (_, Some(st)) => {
                if let Some(lst) = linked(c) {
                    if let Some(first) = first_name.get(&key(&lst)) {
                        t.member(c, Some(first))?;
                        continue;
                    }
                    first_name.insert(key(&st), c.path.clone());
                }
                t.member(c, None)?;
            }
            (_, None) => {}
        }
    }
    let mut out = t
        .builder
        .into_inner()
        .map_err(|e| ArchiveError::io(upper_path, "writing diff", e))?;
    out.flush()
        .map_err(|e| ArchiveError::io(upper_path, "writing diff", e))?;
    Ok(t.entries)
}

/// Puts `value` in a 100-byte name field, or in a PAX record when it does not fit (keeping a
/// truncated copy in the field for readers without PAX).
fn set_name_field(
    field: &mut [u8; 100],
    value: &[u8],
    pax_key: &'static str,
    pax: &mut Vec<(String, Vec<u8>)>,
) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
    if value.len() > field.len() {
        pax.push((pax_key.to_owned(), value.to_vec()));
    }
}

impl<W: Write> TarOut<'_, W> {
    fn err<'s>(
        &'s self,
        rel: &[u8],
        op: &'static str,
    ) -> impl FnOnce(io::Error) -> ArchiveError + 's {
        let p = self.upper_path.join(os(rel));
        move |e| ArchiveError::io(p, op, e)
    }

    /// The upper directory holding `rel`, resolved without following any symlink.
    fn parent_of(&mut self, rel: &[u8]) -> Result<(BorrowedFd<'_>, CString), ArchiveError> {
        let (dir, base) = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => (&rel[..i], &rel[i + 1..]),
            None => (&rel[..0], rel),
        };
        let cbase = cstr(base).map_err(self.err(rel, "name"))?;
        if self.parent.as_ref().is_none_or(|(p, _)| p != dir) {
            let comps: Vec<&[u8]> = if dir.is_empty() {
                Vec::new()
            } else {
                dir.split(|b| *b == b'/').collect()
            };
            let resolved = resolve_dir(self.upper, &comps, Follow::Never, None)
                .map_err(self.err(dir, "opening directory"))?;
            self.parent = Some((dir.to_vec(), resolved.fd));
        }
        let fd = match &self.parent {
            Some((_, fd)) => fd.as_fd(),
            None => self.upper,
        };
        Ok((fd, cbase))
    }

    fn clamp_mtime(&self, sec: i64) -> u64 {
        let sec = match self.mtime_bound {
            Some(b) => sec.min(b),
            None => sec,
        };
        u64::try_from(sec).unwrap_or(0)
    }

    fn append(
        &mut self,
        rel: &[u8],
        mut header: tar::Header,
        pax: Vec<(String, Vec<u8>)>,
        data: &mut dyn Read,
    ) -> Result<(), ArchiveError> {
        let werr = |e| ArchiveError::io(self.upper_path.join(os(rel)), "writing tar member", e);
        if !pax.is_empty() {
            self.builder
                .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(werr)?;
        }
        header.set_cksum();
        self.builder.append(&header, data).map_err(werr)?;
        self.entries += 1;
        Ok(())
    }

    fn whiteout(&mut self, rel: &[u8]) -> Result<(), ArchiveError> {
        let name = match rel.iter().rposition(|b| *b == b'/') {
            Some(i) => [&rel[..=i], b".wh.", &rel[i + 1..]].concat(),
            None => [b".wh.".as_slice(), rel].concat(),
        };
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        // containerd ≥ 2.0 dates whiteouts at the epoch, so diffs are reproducible.
        h.set_mtime(0);
        let mut pax = Vec::new();
        set_name_field(&mut h.as_old_mut().name, &name, "path", &mut pax);
        self.append(rel, h, pax, &mut io::empty())
    }

    /// Writes one upper entry: in full, or as a hard link to `link_to`.
    fn member(&mut self, c: &Change, link_to: Option<&Vec<u8>>) -> Result<(), ArchiveError> {
        let Some(st) = c.st else { return Ok(()) };
        let rel = c.path.as_slice();
        let mut h = tar::Header::new_ustar();
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        // Beyond the 7 octal digits ustar has, give readers the exact value in PAX as Go does.
        if st.st_uid > 0o7777777 {
            pax.push(("uid".into(), st.st_uid.to_string().into_bytes()));
        }
        if st.st_gid > 0o7777777 {
            pax.push(("gid".into(), st.st_gid.to_string().into_bytes()));
        }
        h.set_mtime(self.clamp_mtime(st.st_mtime));
        h.set_size(0);

        let mut name = rel.to_vec();
        if is_dir(&st) {
            name.push(b'/');
        }
        set_name_field(&mut h.as_old_mut().name, &name, "path", &mut pax);

        if let Some(target) = link_to {
            h.set_entry_type(tar::EntryType::Link);
            set_name_field(&mut h.as_old_mut().linkname, target, "linkpath", &mut pax);
            return self.append(rel, h, pax, &mut io::empty());
        }

        let (dir, cbase) = self.parent_of(rel)?;
        for (k, v) in xattrs_at(dir, &cbase).map_err(self.err(rel, "reading xattrs"))? {
            match String::from_utf8(k) {
                Ok(k) => pax.push((format!("SCHILY.xattr.{k}"), v)),
                // PAX keys are UTF-8; a name that is not cannot be carried.
                Err(k) => tracing::warn!(path = %self.upper_path.join(os(rel)).display(),
                    xattr = %String::from_utf8_lossy(k.as_bytes()), "xattr with a non-UTF-8 name not written"),
            }
        }

        match ftype(&st) {
            libc::S_IFDIR => {
                h.set_entry_type(tar::EntryType::Directory);
                self.append(rel, h, pax, &mut io::empty())
            }
            libc::S_IFLNK => {
                let (dir, cbase) = self.parent_of(rel)?;
                let target = fsutil::readlinkat(dir, &cbase).map_err(self.err(rel, "readlink"))?;
                h.set_entry_type(tar::EntryType::Symlink);
                set_name_field(&mut h.as_old_mut().linkname, &target, "linkpath", &mut pax);
                self.append(rel, h, pax, &mut io::empty())
            }
            libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO => {
                let t = ftype(&st);
                h.set_entry_type(match t {
                    libc::S_IFCHR => tar::EntryType::Char,
                    libc::S_IFBLK => tar::EntryType::Block,
                    _ => tar::EntryType::Fifo,
                });
                if t != libc::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev))
                        .map_err(self.err(rel, "device number"))?;
                    h.set_device_minor(libc::minor(st.st_rdev))
                        .map_err(self.err(rel, "device number"))?;
                }
                self.append(rel, h, pax, &mut io::empty())
            }
            libc::S_IFREG => {
                let (dir, cbase) = self.parent_of(rel)?;
                let fd = fsutil::openat(dir, &cbase, libc::O_RDONLY | libc::O_NOFOLLOW, 0)
                    .map_err(self.err(rel, "open"))?;
                let now = fsutil::fstat(fd.as_fd()).map_err(self.err(rel, "fstat"))?;
                if now.st_ino != st.st_ino || now.st_size != st.st_size {
                    return Err(ArchiveError::io(
                        self.upper_path.join(os(rel)),
                        "reading file",
                        io::Error::other("file changed while the diff was written"),
                    ));
                }
                let size = u64::try_from(st.st_size).unwrap_or(0);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                if size >= 8 * 1024 * 1024 * 1024 {
                    pax.push(("size".into(), size.to_string().into_bytes()));
                }
                let exact = Exact {
                    inner: std::fs::File::from(fd).take(size),
                    remaining: size,
                };
                let mut data = BufReader::with_capacity(1024 * 1024, exact);
                self.append(rel, h, pax, &mut data)
            }
            _ => Ok(()), // sockets are filtered earlier; nothing else exists
        }
    }
}
