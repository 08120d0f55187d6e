//! Unit tests. Tarballs are built with the `tar` crate's low-level header API, writing names and
//! link targets into the raw header fields, so hostile members (`../x`, `/abs`) can be expressed.

mod apply_tests;
mod diff_tests;
mod header_limit_tests;
mod hostile_tests;
mod whiteout_tests;

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fsutil::{self, XattrTarget};

pub(crate) fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it chowns, creates device nodes and sets trusted.* xattrs): run \
         `cargo test -p berth-archive` as root"
    );
}

/// One tar member to build.
#[derive(Clone)]
pub(crate) struct E {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    data: Vec<u8>,
    link: Vec<u8>,
    dev: (u32, u32),
    pax: Vec<(String, Vec<u8>)>,
    gnu_long_name: bool,
}

impl E {
    fn new(name: impl AsRef<[u8]>, kind: tar::EntryType) -> E {
        E {
            name: name.as_ref().to_vec(),
            kind,
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            data: Vec::new(),
            link: Vec::new(),
            dev: (0, 0),
            pax: Vec::new(),
            gnu_long_name: false,
        }
    }
    pub(crate) fn file(name: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, tar::EntryType::Regular);
        e.data = data.as_ref().to_vec();
        e
    }
    pub(crate) fn dir(name: impl AsRef<[u8]>) -> E {
        E::new(name, tar::EntryType::Directory).mode(0o755)
    }
    pub(crate) fn symlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, tar::EntryType::Symlink).mode(0o777);
        e.link = target.as_ref().to_vec();
        e
    }
    pub(crate) fn hardlink(name: impl AsRef<[u8]>, target: impl AsRef<[u8]>) -> E {
        let mut e = E::new(name, tar::EntryType::Link);
        e.link = target.as_ref().to_vec();
        e
    }
    pub(crate) fn char_dev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(name, tar::EntryType::Char).mode(0o666);
        e.dev = (major, minor);
        e
    }
    pub(crate) fn block_dev(name: impl AsRef<[u8]>, major: u32, minor: u32) -> E {
        let mut e = E::new(name, tar::EntryType::Block).mode(0o660);
        e.dev = (major, minor);
        e
    }
    pub(crate) fn fifo(name: impl AsRef<[u8]>) -> E {
        E::new(name, tar::EntryType::Fifo)
    }
    pub(crate) fn mode(mut self, mode: u32) -> E {
        self.mode = mode;
        self
    }
    pub(crate) fn owner(mut self, uid: u64, gid: u64) -> E {
        self.uid = uid;
        self.gid = gid;
        self
    }
    pub(crate) fn mtime(mut self, mtime: u64) -> E {
        self.mtime = mtime;
        self
    }
    pub(crate) fn pax(mut self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax.push((key.to_owned(), value.as_ref().to_vec()));
        self
    }
    pub(crate) fn xattr(self, key: &str, value: impl AsRef<[u8]>) -> E {
        self.pax(&format!("SCHILY.xattr.{key}"), value)
    }
    /// Carry the name in a GNU `L` long-name member instead of a PAX record.
    pub(crate) fn gnu_long(mut self) -> E {
        self.gnu_long_name = true;
        self
    }
}

fn raw_field(field: &mut [u8; 100], value: &[u8]) {
    let n = value.len().min(100);
    field[..n].copy_from_slice(&value[..n]);
}

/// Builds a tar from members, bypassing the `tar` crate's path validation.
pub(crate) fn tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut pax = e.pax.clone();
        if e.name.len() > 100 && e.gnu_long_name {
            let mut h = tar::Header::new_gnu();
            raw_field(&mut h.as_old_mut().name, b"././@LongLink");
            h.set_entry_type(tar::EntryType::GNULongName);
            h.set_size(e.name.len() as u64 + 1);
            h.set_mode(0o644);
            h.set_cksum();
            let mut data = e.name.clone();
            data.push(0);
            b.append(&h, data.as_slice()).unwrap();
        } else if e.name.len() > 100 {
            pax.push(("path".into(), e.name.clone()));
        }
        if e.link.len() > 100 {
            pax.push(("linkpath".into(), e.link.clone()));
        }
        if !pax.is_empty() {
            b.append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .unwrap();
        }
        let mut h = if e.gnu_long_name {
            tar::Header::new_gnu()
        } else {
            tar::Header::new_ustar()
        };
        raw_field(&mut h.as_old_mut().name, &e.name);
        raw_field(&mut h.as_old_mut().linkname, &e.link);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        if matches!(e.kind, tar::EntryType::Char | tar::EntryType::Block) {
            h.set_device_major(e.dev.0).unwrap();
            h.set_device_minor(e.dev.1).unwrap();
        }
        h.set_cksum();
        b.append(&h, e.data.as_slice()).unwrap();
    }
    b.into_inner().unwrap()
}

pub(crate) fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// (name, type, link target) of every member of a tar.
pub(crate) fn list_tar(data: &[u8]) -> Vec<(String, tar::EntryType, Option<String>)> {
    let mut a = tar::Archive::new(data);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        out.push((
            String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            e.header().entry_type(),
            e.link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned()),
        ));
    }
    out
}

pub(crate) fn lxattrs(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let parent = path.parent().unwrap();
    let dir = fsutil::open_path(parent, libc::O_PATH | libc::O_DIRECTORY).unwrap();
    let name = CString::new(path.file_name().unwrap().as_bytes()).unwrap();
    fsutil::list_xattrs(XattrTarget::At(dir.as_fd(), &name)).unwrap()
}

pub(crate) fn lxattr(path: &Path, key: &str) -> Option<Vec<u8>> {
    lxattrs(path)
        .into_iter()
        .find(|(k, _)| k == key.as_bytes())
        .map(|(_, v)| v)
}

pub(crate) fn set_lxattr(path: &Path, key: &str, value: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let k = CString::new(key).unwrap();
    // SAFETY: `p` and `k` are NUL-terminated strings alive for the call and `value` is readable
    // for `value.len()` bytes; lsetxattr only reads them.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "lsetxattr {key} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub(crate) fn set_times(path: &Path, sec: i64, nsec: i64) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: `p` is a NUL-terminated path alive for the call and `ts` the two-element array
    // utimensat reads.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {}", path.display());
}

pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

pub(crate) fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `p` is a NUL-terminated path alive for the call; mknod only reads it.
    let r = unsafe { libc::mknod(p.as_ptr(), mode, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

/// Everything observable about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub rdev: u64,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub nlink: u64,
}

/// A full description of a tree (the root itself under "").
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    fn visit(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        let path = root.join(rel);
        let md = std::fs::symlink_metadata(&path).unwrap();
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_file() {
            "file"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_char_device() {
            "char"
        } else if ft.is_block_device() {
            "block"
        } else if ft.is_fifo() {
            "fifo"
        } else {
            "socket"
        };
        let xattrs = lxattrs(&path);
        out.insert(
            rel.to_path_buf(),
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                size: if ft.is_dir() { 0 } else { md.size() },
                content: ft.is_file().then(|| std::fs::read(&path).unwrap()),
                link: ft.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                rdev: md.rdev(),
                xattrs,
                mtime: (md.mtime(), md.mtime_nsec()),
                ino: md.ino(),
                nlink: md.nlink(),
            },
        );
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                visit(root, &rel.join(n), out);
            }
        }
    }
    visit(root, Path::new(""), &mut out);
    out
}

/// Two sibling directories: `target` (where layers go) and `sentinel` (which must never change).
pub(crate) struct Env {
    _tmp: tempfile::TempDir,
    pub target: PathBuf,
    pub sentinel: PathBuf,
    before: BTreeMap<PathBuf, Node>,
}

impl Env {
    pub(crate) fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        let sentinel = tmp.path().join("sentinel");
        std::fs::create_dir(&target).unwrap();
        std::fs::create_dir(&sentinel).unwrap();
        std::fs::write(sentinel.join("secret"), b"do not touch").unwrap();
        std::fs::write(sentinel.join("passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        std::fs::create_dir(sentinel.join("sub")).unwrap();
        std::fs::write(sentinel.join("sub/file"), b"nested").unwrap();
        let before = snapshot(&sentinel);
        Env {
            _tmp: tmp,
            target,
            sentinel,
            before,
        }
    }

    /// The sentinel is byte-for-byte, inode-for-inode, mtime-for-mtime unchanged.
    pub(crate) fn assert_sentinel_intact(&self, case: &str) {
        assert_eq!(
            snapshot(&self.sentinel),
            self.before,
            "{case}: the sentinel directory outside the target changed"
        );
    }

    /// The sentinel's absolute path as seen from inside the target (for absolute-name attacks).
    pub(crate) fn sentinel_abs(&self) -> String {
        self.sentinel.display().to_string()
    }
}
