//! The snapshotter conformance suite every Berth storage driver runs.
//!
//! It holds containerd's snapshot test-suite cases (`core/snapshots/testsuite`, same scenarios
//! and expectations) and Berth's own: deep chains, hardlinks, xattrs, concurrency, crash recovery
//! and error codes.
//!
//! Every case is a `pub fn case(make: &MakeSnapshotter)`. It creates a fresh temporary root,
//! builds the driver with `make(root)`, runs one scenario and panics saying what deviated. Cases
//! that mount need root and panic when run without it; they never skip silently.
//!
//! File trees are written with [`Op`] lists (containerd's fstest "appliers"). Each change goes
//! both to a snapshot's mount and to a plain "flat" directory. The mount must then look exactly
//! like the flat directory ([`assert_same_tree`]): same entries, types, contents, modes,
//! owners, symlink targets, `user.*`/`trusted.*` xattrs and hardlink groups.
//!
//! A driver runs the suite from its own tests, in a module of its own (each case becomes a
//! `#[test]` of that name):
//!
//! ```ignore
//! #[cfg(test)]
//! mod conformance {
//!     fn make(root: &std::path::Path) -> Box<dyn berth_snapshotter::Snapshotter> {
//!         Box::new(crate::OverlaySnapshotter::new(root).expect("open overlay snapshotter"))
//!     }
//!     // Every case every driver must pass. `Quirks` is optional (default: all true).
//!     berth_snapshotter::conformance_tests!(make, berth_snapshotter::testsuite::Quirks {
//!         rename_lower_dirs: false,
//!         ..Default::default()
//!     });
//!     // Cases only some drivers run, with their arguments if they take any.
//!     berth_snapshotter::conformance_extra_tests!(make; deep_chain_500, deep_chain(200));
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::fs;
use std::io;
use std::ops::Deref;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Barrier;

use berth_mount::TempMount;

use crate::{Info, Kind, Mount, SnapshotError, Snapshotter};

/// Builds the driver under test on the given root directory.
pub type MakeSnapshotter = dyn Fn(&Path) -> Box<dyn Snapshotter>;

/// The label containerd's suite puts on every snapshot (to keep it from garbage collection).
pub const GC_ROOT: &str = "containerd.io/gc.root";

/// How a driver legitimately differs from the default expectations.
#[derive(Debug, Clone, Copy)]
pub struct Quirks {
    /// Whether a directory that comes from a lower layer can be renamed. overlayfs without
    /// `redirect_dir` answers EXDEV, and containerd's suite skips that step for overlayfs too.
    pub rename_lower_dirs: bool,
    /// The directory holding one entry per snapshot, where `cleanup` removes entries that have
    /// no metadata record (`<root>/snapshots` for native and overlayfs).
    pub snapshots_dir: fn(&Path) -> PathBuf,
}

impl Default for Quirks {
    fn default() -> Self {
        Quirks {
            rename_lower_dirs: true,
            snapshots_dir: default_snapshots_dir,
        }
    }
}

/// `<root>/snapshots`, where native and overlayfs keep `<id>/` per snapshot.
pub fn default_snapshots_dir(root: &Path) -> PathBuf {
    root.join("snapshots")
}

/// Expands to one `#[test] fn` per conformance case that every driver must pass.
///
/// `conformance_tests!(make)` or `conformance_tests!(make, quirks)`, where `make` is a function
/// or closure `Fn(&Path) -> Box<dyn Snapshotter>` and `quirks` a
/// [`Quirks`](crate::testsuite::Quirks). Invoke it inside a module of its own.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!($make, $crate::testsuite::Quirks::default());
    };
    ($make:expr, $quirks:expr) => {
        $crate::conformance_extra_tests!($make;
            basic,
            stat_active,
            stat_committed,
            transitivity,
            prepare_view_failing,
            update,
            remove,
            walk,
            layer_file_update,
            remove_directory_in_lower_layer,
            chown,
            directory_permission_on_commit,
            remove_intermediate_snapshot,
            deleted_files_in_child_snapshot,
            move_file_from_lower_layer,
            view_readonly,
            stat_in_walk,
            close_twice,
            root_permission,
            layers_128_mount,
            hardlinks_across_layers,
            xattrs,
            concurrent_prepare_commit,
            error_codes,
            commit_labels,
        );
        #[test]
        fn rename() {
            let quirks: $crate::testsuite::Quirks = $quirks;
            $crate::testsuite::rename_with(&$make, quirks.rename_lower_dirs)
        }
        #[test]
        fn crash_recovery() {
            let quirks: $crate::testsuite::Quirks = $quirks;
            $crate::testsuite::crash_recovery_in(&$make, quirks.snapshots_dir)
        }
    };
}

/// Expands to one `#[test] fn` per named case, for cases only some drivers run:
/// `conformance_extra_tests!(make; deep_chain_500, deep_chain(200))`. A case's extra arguments
/// follow in parentheses; the test is named after the case.
#[macro_export]
macro_rules! conformance_extra_tests {
    ($make:expr; $($case:ident $(( $($arg:expr),* $(,)? ))?),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::testsuite::$case(&$make $($(, $arg)*)?)
            }
        )+
    };
}

// ---------------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------------

/// Panics unless running as root: mounting needs it, and a conformance case must never pass by
/// skipping its checks.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this conformance case mounts filesystems and must run as root");
    }
}

/// `result.must("what was being done")`: the value, or a panic naming the step and the error.
trait Must<T> {
    fn must(self, what: &str) -> T;
}

impl<T, E: std::fmt::Display + std::fmt::Debug> Must<T> for Result<T, E> {
    #[track_caller]
    fn must(self, what: &str) -> T {
        match self {
            Ok(v) => v,
            Err(e) => panic!("{what}: {e} ({e:?})"),
        }
    }
}

/// Asserts that `$result` is `Err(SnapshotError::$variant(_))`; the rest is a format! message
/// naming the operation.
macro_rules! expect_err {
    ($result:expr, $variant:ident, $($what:tt)+) => {{
        let what = format!($($what)+);
        match $result {
            Err(SnapshotError::$variant(_)) => {}
            Err(other) => panic!(
                "{what}: expected SnapshotError::{}, got {other:?} ({other})",
                stringify!($variant)
            ),
            Ok(v) => panic!(
                "{what}: expected SnapshotError::{}, but it succeeded with {v:?}",
                stringify!($variant)
            ),
        }
    }};
}

/// `{GC_ROOT: "berth-conformance"}`, the labels containerd's suite passes everywhere.
fn gc_root() -> BTreeMap<String, String> {
    labels(&[(GC_ROOT, "berth-conformance")])
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lets the clock move so a timestamp set next is strictly later (the only sleep in the suite).
fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(2));
}

/// One case's world: a temporary directory holding the driver's `root/` and a `work/` area for
/// flat directories, and the driver built on `root/`. The driver is dropped before the directory.
struct Env {
    sn: Option<Box<dyn Snapshotter>>,
    root: PathBuf,
    work: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    fn new(make: &MakeSnapshotter) -> Env {
        let tmp = tempfile::Builder::new()
            .prefix("berth-conformance-")
            .tempdir()
            .must("create the case's temporary directory");
        let root = tmp.path().join("root");
        let work = tmp.path().join("work");
        fs::create_dir(&root).must("create the snapshotter root");
        fs::create_dir(&work).must("create the work directory");
        let sn = make(&root);
        Env {
            sn: Some(sn),
            root,
            work,
            _tmp: tmp,
        }
    }

    /// Drops the driver without closing it (as a crash would) and builds it again on the same root.
    fn reopen(&mut self, make: &MakeSnapshotter) {
        self.sn = None;
        self.sn = Some(make(&self.root));
    }

    /// A new empty flat directory: the expected content of a snapshot, built op by op.
    fn flat(&self) -> Flat {
        Flat(
            tempfile::Builder::new()
                .prefix("flat-")
                .tempdir_in(&self.work)
                .must("create a flat directory"),
        )
    }
}

impl Deref for Env {
    type Target = dyn Snapshotter;
    fn deref(&self) -> &Self::Target {
        self.sn.as_deref().expect("the snapshotter is open")
    }
}

/// A plain directory holding what a snapshot should look like.
struct Flat(tempfile::TempDir);

impl Flat {
    fn path(&self) -> &Path {
        self.0.path()
    }

    fn apply(&self, ops: &[Op]) {
        apply(self.path(), ops).must("apply changes to the flat directory");
    }
}

/// Mounts `mounts` on a temporary directory (unmounted on drop).
#[track_caller]
fn mount(mounts: &[Mount], what: &str) -> TempMount {
    assert!(
        !mounts.is_empty(),
        "{what}: the snapshotter returned no mounts"
    );
    TempMount::new(mounts).unwrap_or_else(|e| panic!("mount {what} ({mounts:?}): {e}"))
}

// --- appliers --------------------------------------------------------------------------------

/// File-tree changes ("appliers", after containerd's fstest) and [`apply`].
pub mod ops {
    use super::*;

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

    pub(super) fn cstring(p: &Path) -> io::Result<CString> {
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
}

use ops::cstring;
pub use ops::{apply, dir, file, link, remove_all, remove_xattr, set_xattr, symlink, Op};

// --- xattrs ----------------------------------------------------------------------------------

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

// --- tree comparison -------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
    Special { kind: &'static str, rdev: u64 },
}

impl Content {
    fn kind(&self) -> &'static str {
        match self {
            Content::Dir => "directory",
            Content::File(_) => "file",
            Content::Symlink(_) => "symlink",
            Content::Special { kind, .. } => kind,
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    content: Content,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
    ino: u64,
}

/// Every entry under `root` (not `root` itself), keyed by `/relative/path`.
fn scan_tree(root: &Path) -> io::Result<BTreeMap<String, Node>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let path = entry.path();
            let rel_path = format!("{rel}/{}", entry.file_name().to_string_lossy());
            let meta = fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            let content = if ft.is_dir() {
                stack.push((path.clone(), rel_path.clone()));
                Content::Dir
            } else if ft.is_file() {
                Content::File(fs::read(&path)?)
            } else if ft.is_symlink() {
                Content::Symlink(fs::read_link(&path)?)
            } else {
                let kind = if ft.is_char_device() {
                    "char device"
                } else if ft.is_block_device() {
                    "block device"
                } else if ft.is_fifo() {
                    "fifo"
                } else {
                    "socket"
                };
                Content::Special {
                    kind,
                    rdev: meta.rdev(),
                }
            };
            let node = Node {
                content,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                xattrs: list_xattrs(&path)?,
                ino: meta.ino(),
            };
            out.insert(rel_path, node);
        }
    }
    Ok(out)
}

/// Groups of paths sharing an inode (hardlinks), for non-directories.
fn link_groups(tree: &BTreeMap<String, Node>) -> BTreeSet<Vec<String>> {
    let mut by_ino: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for (path, node) in tree {
        if node.content != Content::Dir {
            by_ino.entry(node.ino).or_default().push(path.clone());
        }
    }
    by_ino.into_values().filter(|g| g.len() > 1).collect()
}

fn show_bytes(b: &[u8]) -> String {
    match std::str::from_utf8(b) {
        Ok(s) if s.len() <= 80 => format!("{s:?}"),
        _ => format!("<{} bytes>", b.len()),
    }
}

fn show_xattrs(x: &BTreeMap<String, Vec<u8>>) -> String {
    let parts: Vec<String> = x
        .iter()
        .map(|(k, v)| format!("{k}={}", show_bytes(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// How the tree at `actual` differs from the tree at `expected` (empty when they match). The
/// roots themselves are not compared; nlink is not compared either (a whiteout over one name of
/// a lower hardlink cannot lower the other's count), hardlink groups are.
pub fn tree_differences(expected: &Path, actual: &Path) -> io::Result<Vec<String>> {
    let want = scan_tree(expected)?;
    let got = scan_tree(actual)?;
    let mut diffs = Vec::new();
    for (path, w) in &want {
        let Some(g) = got.get(path) else {
            diffs.push(format!("{path}: missing (expected a {})", w.content.kind()));
            continue;
        };
        if w.content.kind() != g.content.kind() {
            diffs.push(format!(
                "{path}: is a {}, expected a {}",
                g.content.kind(),
                w.content.kind()
            ));
            continue;
        }
        match (&w.content, &g.content) {
            (Content::File(a), Content::File(b)) if a != b => diffs.push(format!(
                "{path}: content {}, expected {}",
                show_bytes(b),
                show_bytes(a)
            )),
            (Content::Symlink(a), Content::Symlink(b)) if a != b => diffs.push(format!(
                "{path}: symlink to {}, expected to {}",
                b.display(),
                a.display()
            )),
            (Content::Special { rdev: a, .. }, Content::Special { rdev: b, .. }) if a != b => {
                diffs.push(format!("{path}: device {b:#x}, expected {a:#x}"))
            }
            _ => {}
        }
        if w.mode != g.mode {
            diffs.push(format!(
                "{path}: mode {:04o}, expected {:04o}",
                g.mode, w.mode
            ));
        }
        if (w.uid, w.gid) != (g.uid, g.gid) {
            diffs.push(format!(
                "{path}: owner {}:{}, expected {}:{}",
                g.uid, g.gid, w.uid, w.gid
            ));
        }
        if w.xattrs != g.xattrs {
            diffs.push(format!(
                "{path}: xattrs {}, expected {}",
                show_xattrs(&g.xattrs),
                show_xattrs(&w.xattrs)
            ));
        }
    }
    for (path, g) in &got {
        if !want.contains_key(path) {
            diffs.push(format!("{path}: unexpected {}", g.content.kind()));
        }
    }
    let (wl, gl) = (link_groups(&want), link_groups(&got));
    if wl != gl {
        diffs.push(format!("hardlink groups {gl:?}, expected {wl:?}"));
    }
    Ok(diffs)
}

/// Panics, listing every difference, unless the tree at `actual` matches the one at `expected`.
#[track_caller]
pub fn assert_same_tree(expected: &Path, actual: &Path, context: &str) {
    let diffs = tree_differences(expected, actual)
        .unwrap_or_else(|e| panic!("{context}: cannot compare trees: {e}"));
    if !diffs.is_empty() {
        panic!(
            "{context}: the mount differs from the expected tree in {} place(s):\n  {}",
            diffs.len(),
            diffs.join("\n  ")
        );
    }
}

// --- scenario helpers ------------------------------------------------------------------------

/// Prepares `name-active` on `parent`, checks its mount shows `flat` (the parent's content),
/// applies `ops` to the mount and to `flat`, checks again, and commits it as `name`. With
/// `full_check` false only the mount and one file are checked (for very long chains).
fn commit_layer_checked(
    sn: &dyn Snapshotter,
    name: &str,
    parent: &str,
    ops: &[Op],
    flat: &Flat,
    full_check: bool,
) {
    let key = format!("{name}-active");
    let mounts = sn
        .prepare(&key, parent, gc_root())
        .must(&format!("prepare {key:?} on parent {parent:?}"));
    {
        let m = mount(&mounts, &format!("active snapshot {key:?}"));
        if full_check {
            assert_same_tree(
                flat.path(),
                m.path(),
                &format!(
                    "active snapshot {key:?} before any change (should show parent {parent:?})"
                ),
            );
        }
        apply(m.path(), ops).must(&format!("write into active snapshot {key:?}"));
        flat.apply(ops);
        if full_check {
            assert_same_tree(
                flat.path(),
                m.path(),
                &format!("active snapshot {key:?} after the changes"),
            );
        }
    }
    sn.commit(name, &key, gc_root())
        .must(&format!("commit {key:?} as {name:?}"));
}

fn commit_layer(sn: &dyn Snapshotter, name: &str, parent: &str, ops: &[Op], flat: &Flat) {
    commit_layer_checked(sn, name, parent, ops, flat, true);
}

/// Views committed `name`, checks the view shows `flat`, and removes the view.
fn check_view(sn: &dyn Snapshotter, name: &str, flat: &Flat) {
    let key = format!("{name}-view");
    let mounts = sn
        .view(&key, name, gc_root())
        .must(&format!("view {key:?} of {name:?}"));
    {
        let m = mount(&mounts, &format!("view {key:?}"));
        assert_same_tree(flat.path(), m.path(), &format!("view of {name:?}"));
    }
    sn.remove(&key).must(&format!("remove view {key:?}"));
}

/// containerd's checkSnapshots: commits a chain of layers `<prefix>-1`, `<prefix>-2`, … (one per
/// op list), checking each active snapshot and a view of each committed one against a flat
/// directory that got the same changes. Returns the layers' names and the flat directory.
fn check_layers(env: &Env, prefix: &str, layers: &[&[Op]]) -> (Vec<String>, Flat) {
    let flat = env.flat();
    let mut names: Vec<String> = Vec::new();
    for (i, ops) in layers.iter().enumerate() {
        let name = format!("{prefix}-{}", i + 1);
        let parent = names.last().cloned().unwrap_or_default();
        commit_layer(&**env, &name, &parent, ops, &flat);
        check_view(&**env, &name, &flat);
        names.push(name);
    }
    (names, flat)
}

fn walk_all(sn: &dyn Snapshotter) -> Vec<Info> {
    let mut all = Vec::new();
    sn.walk(&mut |i| {
        all.push(i.clone());
        true
    })
    .must("walk");
    all
}

fn names(infos: &[Info]) -> BTreeSet<String> {
    infos.iter().map(|i| i.name.clone()).collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[track_caller]
fn assert_info(i: &Info, name: &str, kind: Kind, parent: &str) {
    assert_eq!(i.name, name, "stat/walk of {name:?}: wrong name in {i:?}");
    assert_eq!(i.kind, Some(kind), "{name:?}: wrong kind in {i:?}");
    assert_eq!(i.parent, parent, "{name:?}: wrong parent in {i:?}");
}

/// The name of the `SnapshotError` variant a call returned ("Ok" if none) and what it said.
fn outcome<T: std::fmt::Debug>(r: Result<T, SnapshotError>) -> (&'static str, String) {
    let variant = match &r {
        Ok(_) => "Ok",
        Err(SnapshotError::NotFound(_)) => "NotFound",
        Err(SnapshotError::AlreadyExists(_)) => "AlreadyExists",
        Err(SnapshotError::FailedPrecondition(_)) => "FailedPrecondition",
        Err(SnapshotError::InvalidArgument(_)) => "InvalidArgument",
        Err(SnapshotError::Unsupported(_)) => "Unsupported",
        Err(SnapshotError::Io { .. }) => "Io",
        Err(SnapshotError::Storage(_)) => "Storage",
        Err(SnapshotError::Mount(_)) => "Mount",
    };
    (variant, format!("{r:?}"))
}

/// containerd's createNamedSnapshots/baseTestSnapshots: committed `c1`, `c2` (on c1), active
/// `a1` (on c2), view `v1` (on c2), with every name prefixed by `prefix`.
fn chain_with_active_and_view(sn: &dyn Snapshotter, prefix: &str) {
    let n = |s: &str| format!("{prefix}{s}");
    sn.prepare(&n("c1-a"), "", gc_root()).must("prepare c1-a");
    sn.commit(&n("c1"), &n("c1-a"), gc_root()).must("commit c1");
    sn.prepare(&n("c2-a"), &n("c1"), gc_root())
        .must("prepare c2-a");
    sn.commit(&n("c2"), &n("c2-a"), gc_root()).must("commit c2");
    sn.prepare(&n("a1"), &n("c2"), gc_root()).must("prepare a1");
    sn.view(&n("v1"), &n("c2"), gc_root()).must("view v1");
}

// ---------------------------------------------------------------------------------------------
// containerd's cases
// ---------------------------------------------------------------------------------------------

/// The whole life cycle: prepare and fill a snapshot, commit it, prepare a child that shows the
/// parent's content, change it, commit it, view the result, and remove everything in order (a
/// parent with a child cannot go first). Keys may contain `/`.
pub fn basic(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let initial = [
        file("/foo", "foo\n", 0o777),
        dir("/a", 0o755),
        dir("/a/b", 0o755),
        dir("/a/b/c", 0o755),
        symlink("foo", "/foo-link"),
    ];
    let diff = [
        file("/bar", "bar\n", 0o777),
        file("/foo", "bar\n", 0o777),
        remove_all("/a/b"),
    ];
    let flat = env.flat();
    let (preparing, committed) = ("/work/preparing", "/work/committed");
    let (next, next_committed, view) = ("/work/nextlayer", "/work/committed-next", "/work/view");

    let mounts = env.prepare(preparing, "", gc_root()).must("prepare");
    {
        let m = mount(&mounts, preparing);
        apply(m.path(), &initial).must("write the first layer");
    }
    flat.apply(&initial);
    env.commit(committed, preparing, gc_root()).must("commit");
    let si = env.stat(committed).must("stat committed");
    assert_info(&si, committed, Kind::Committed, "");
    assert_eq!(si.labels, gc_root(), "labels of {committed:?}");
    expect_err!(
        env.stat(preparing),
        NotFound,
        "stat of {preparing:?} after its commit"
    );

    let mounts = env
        .prepare(next, committed, gc_root())
        .must("prepare the next layer");
    {
        let m = mount(&mounts, next);
        assert_same_tree(flat.path(), m.path(), "a child snapshot before changes");
        apply(m.path(), &diff).must("write the second layer");
    }
    flat.apply(&diff);
    let ni = env.stat(next).must("stat the active child");
    assert_info(&ni, next, Kind::Active, committed);
    env.commit(next_committed, next, gc_root())
        .must("commit the child");
    let si2 = env.stat(next_committed).must("stat the committed child");
    assert_info(&si2, next_committed, Kind::Committed, committed);
    expect_err!(
        env.stat(next),
        NotFound,
        "stat of {next:?} after its commit"
    );

    let walked = walk_all(&*env);
    assert_eq!(
        walked.len(),
        2,
        "walk should list the two committed snapshots: {walked:?}"
    );
    for want in [&si, &si2] {
        let got = walked.iter().find(|i| i.name == want.name);
        assert_eq!(got, Some(want), "walk must report what stat reports");
    }

    let mounts = env.view(view, next_committed, gc_root()).must("view");
    {
        let m = mount(&mounts, view);
        assert_same_tree(flat.path(), m.path(), "view of both layers");
    }
    env.remove(view).must("remove the view");
    expect_err!(
        env.remove(committed),
        FailedPrecondition,
        "remove of {committed:?} while {next_committed:?} is its child"
    );
    env.remove(next_committed).must("remove the child");
    env.remove(committed)
        .must("remove the parent once childless");
    assert!(walk_all(&*env).is_empty(), "everything was removed");
}

/// Stat of a prepared snapshot reports it Active, with its name, no parent and its labels.
pub fn stat_active(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let key = "/work/preparing";
    let mounts = env.prepare(key, "", gc_root()).must("prepare");
    {
        let m = mount(&mounts, key);
        fs::write(m.path().join("foo"), "foo\n").must("write into the active snapshot");
    }
    let si = env.stat(key).must("stat");
    assert_info(&si, key, Kind::Active, "");
    assert_eq!(si.labels, gc_root(), "labels of {key:?}");
}

/// Stat of a committed snapshot reports it Committed, under its new name, with no parent.
pub fn stat_committed(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let (key, name) = ("/work/preparing", "/work/committed");
    let mounts = env.prepare(key, "", gc_root()).must("prepare");
    {
        let m = mount(&mounts, key);
        fs::write(m.path().join("foo"), "foo\n").must("write into the active snapshot");
    }
    env.commit(name, key, gc_root()).must("commit");
    let si = env.stat(name).must("stat");
    assert_info(&si, name, Kind::Committed, "");
    assert_eq!(si.labels, gc_root(), "labels of {name:?}");
}

/// A <- B: B's parent is A, and A (reached through B's parent) has none; B's view shows B's
/// version of the file both layers wrote.
pub fn transitivity(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let flat = env.flat();
    commit_layer(&*env, "snapA", "", &[file("/foo", "foo\n", 0o777)], &flat);
    commit_layer(
        &*env,
        "snapB",
        "snapA",
        &[file("/foo", "foo bar\n", 0o777)],
        &flat,
    );
    let a = env.stat("snapA").must("stat snapA");
    let b = env.stat("snapB").must("stat snapB");
    let b_parent = env.stat(&b.parent).must("stat snapB's parent");
    assert_eq!(a.parent, "", "snapA has no parent");
    assert_eq!(b.parent, "snapA", "snapB's parent");
    assert_eq!(b_parent.parent, "", "the parent of snapB's parent");
    check_view(&*env, "snapB", &flat);
}

/// A key in use cannot be taken again by Prepare or View (AlreadyExists), and the failed call
/// leaves the existing snapshot as it was.
pub fn prepare_view_failing(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("preparing", "", gc_root()).must("prepare");
    env.commit("snapA", "preparing", gc_root()).must("commit");

    env.prepare("newlayer", "snapA", gc_root())
        .must("prepare newlayer");
    expect_err!(
        env.view("newlayer", "snapA", gc_root()),
        AlreadyExists,
        "view with an active snapshot's key"
    );
    env.prepare("prepLayer", "snapA", gc_root())
        .must("prepare prepLayer");
    expect_err!(
        env.prepare("prepLayer", "snapA", gc_root()),
        AlreadyExists,
        "second prepare with one key"
    );
    env.view("viewLayer", "snapA", gc_root())
        .must("view viewLayer");
    expect_err!(
        env.view("viewLayer", "snapA", gc_root()),
        AlreadyExists,
        "second view with one key"
    );

    assert_info(
        &env.stat("newlayer").must("stat"),
        "newlayer",
        Kind::Active,
        "snapA",
    );
    assert_info(
        &env.stat("prepLayer").must("stat"),
        "prepLayer",
        Kind::Active,
        "snapA",
    );
    assert_info(
        &env.stat("viewLayer").must("stat"),
        "viewLayer",
        Kind::View,
        "snapA",
    );
}

/// Update replaces all labels (no field path or `labels`) or single ones (`labels.<k>`; a key
/// absent from the request is deleted), never the parent; an unknown path is InvalidArgument
/// and changes nothing. created_at never moves; updated_at moves forward on each update. Checked
/// on committed, active and view snapshots with and without parent.
pub fn update(make: &MakeSnapshotter) {
    let env = Env::new(make);
    let t1 = now_nanos();
    chain_with_active_and_view(&*env, "");
    env.prepare("a2", "", gc_root()).must("prepare a2");
    env.view("v2", "", gc_root()).must("view v2");
    let t2 = now_nanos();

    let cases = [
        ("c1", Kind::Committed, ""),
        ("c2", Kind::Committed, "c1"),
        ("a1", Kind::Active, "c2"),
        ("a2", Kind::Active, ""),
        ("v1", Kind::View, "c2"),
        ("v2", Kind::View, ""),
    ];
    for (name, kind, parent) in cases {
        let st = env.stat(name).must(&format!("stat {name}"));
        assert!(
            t1 <= st.created_at && st.created_at <= t2,
            "{name}: created_at {} is not between {t1} and {t2}",
            st.created_at
        );
        assert_eq!(
            st.created_at, st.updated_at,
            "{name}: updated_at right after creation"
        );
        assert_info(&st, name, kind, parent);
        let created = st.created_at;

        // No field path: all labels replaced; the parent in the request is ignored.
        let want = labels(&[
            ("l1", "v1"),
            ("l2", "v2"),
            ("l3", "v3"),
            (GC_ROOT, "updated"),
        ]);
        let mut req = st.clone();
        req.parent = "doesnotexist".into();
        req.labels = want.clone();
        tick();
        let u1 = now_nanos();
        let st = env.update(&req, &[]).must(&format!("update {name}"));
        let u2 = now_nanos();
        assert_eq!(st.created_at, created, "{name}: update moved created_at");
        assert!(
            u1 <= st.updated_at && st.updated_at <= u2,
            "{name}: updated_at {} is not between {u1} and {u2}",
            st.updated_at
        );
        assert_info(&st, name, kind, parent);
        assert_eq!(st.labels, want, "{name}: labels after replacing them all");
        assert_eq!(env.stat(name).must("stat"), st, "{name}: stat after update");

        // `labels.<k>` paths: l1 set, l2 (absent from the request) deleted, l4 not touched.
        let mut req = st.clone();
        req.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
        tick();
        let before = st.updated_at;
        let st = env
            .update(&req, &["labels.l1".into(), "labels.l2".into()])
            .must(&format!("update {name} by label paths"));
        let want = labels(&[("l1", "updated"), ("l3", "v3"), (GC_ROOT, "updated")]);
        assert_eq!(
            st.labels, want,
            "{name}: labels after updating labels.l1 and labels.l2"
        );
        assert!(
            st.updated_at > before,
            "{name}: updated_at did not move forward"
        );
        assert_eq!(st.created_at, created, "{name}: update moved created_at");

        // `labels`: all replaced.
        let mut req = st.clone();
        req.labels = labels(&[("l4", "v4"), (GC_ROOT, "updated")]);
        let st = env
            .update(&req, &["labels".into()])
            .must(&format!("update {name} by the labels path"));
        assert_eq!(
            st.labels, req.labels,
            "{name}: labels after updating `labels`"
        );

        // An immutable field: InvalidArgument, nothing changed.
        let mut req = st.clone();
        req.parent = "doesnotexist".into();
        req.labels = labels(&[("l5", "v5")]);
        expect_err!(
            env.update(&req, &["parent".into()]),
            InvalidArgument,
            "update of {name} with field path \"parent\""
        );
        assert_eq!(
            env.stat(name).must("stat"),
            st,
            "{name}: a failed update changed it"
        );
    }
}

/// Keys are reusable once removed, across kinds: prepare, remove, view under the same key,
/// remove, prepare again, and commit it under the name of a removed committed snapshot.
pub fn remove(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("committed-a", "", gc_root())
        .must("prepare committed-a");
    env.commit("committed-1", "committed-a", gc_root())
        .must("commit committed-1");
    env.prepare("reuse-1", "committed-1", gc_root())
        .must("prepare reuse-1");
    env.remove("reuse-1").must("remove active reuse-1");
    env.view("reuse-1", "committed-1", gc_root())
        .must("view reuse-1 after removal");
    env.remove("reuse-1").must("remove view reuse-1");
    env.prepare("reuse-1", "", gc_root())
        .must("prepare reuse-1 again");
    env.remove("committed-1").must("remove committed-1");
    env.commit("committed-1", "reuse-1", gc_root())
        .must("commit reuse-1 as committed-1");
    assert_info(
        &env.stat("committed-1").must("stat"),
        "committed-1",
        Kind::Committed,
        "",
    );
    expect_err!(
        env.stat("reuse-1"),
        NotFound,
        "stat of reuse-1 after its commit"
    );
    assert_eq!(
        names(&walk_all(&*env)),
        set(&["committed-1"]),
        "what walk lists at the end"
    );
}

/// Walk reports every snapshot once with its kind, parent and labels; the queries of
/// containerd's filter test (done here on the reported infos) select the same sets; returning
/// false stops the walk.
pub fn walk(make: &MakeSnapshotter) {
    let env = Env::new(make);
    let gc = || labels(&[(GC_ROOT, "check-walk")]);
    let gc_l = |l: &str| labels(&[(GC_ROOT, "check-walk"), ("l", l)]);
    env.prepare("a-np", "", gc()).must("prepare a-np");
    env.prepare("p-tmp", "", gc()).must("prepare p-tmp");
    env.commit("p", "p-tmp", gc()).must("commit p");
    env.prepare("a", "p", gc()).must("prepare a");
    env.view("v", "p", gc()).must("view v");
    env.prepare("p-wl-tmp", "", gc()).must("prepare p-wl-tmp");
    env.commit("p-wl", "p-wl-tmp", gc_l("1"))
        .must("commit p-wl");
    env.prepare("a-wl", "p-wl", gc_l("2")).must("prepare a-wl");
    env.view("v-wl", "p-wl", gc_l("3")).must("view v-wl");
    env.prepare("a-np-wl", "", gc_l("2"))
        .must("prepare a-np-wl");

    let all = walk_all(&*env);
    assert_eq!(
        all.len(),
        names(&all).len(),
        "walk reported a snapshot twice: {all:?}"
    );
    let expected = [
        ("a-np", Kind::Active, "", gc()),
        ("p", Kind::Committed, "", gc()),
        ("a", Kind::Active, "p", gc()),
        ("v", Kind::View, "p", gc()),
        ("p-wl", Kind::Committed, "", gc_l("1")),
        ("a-wl", Kind::Active, "p-wl", gc_l("2")),
        ("v-wl", Kind::View, "p-wl", gc_l("3")),
        ("a-np-wl", Kind::Active, "", gc_l("2")),
    ];
    assert_eq!(
        all.len(),
        expected.len(),
        "walk should list 8 snapshots: {all:?}"
    );
    for (name, kind, parent, labels) in &expected {
        let i = all
            .iter()
            .find(|i| i.name == *name)
            .unwrap_or_else(|| panic!("walk did not report {name:?}: {all:?}"));
        assert_info(i, name, *kind, parent);
        assert_eq!(&i.labels, labels, "walk: labels of {name:?}");
    }

    type Query = (&'static str, fn(&Info) -> bool, &'static [&'static str]);
    let gc_ok = |i: &Info| i.labels.get(GC_ROOT).map(String::as_str) == Some("check-walk");
    #[rustfmt::skip]
    let queries: [Query; 10] = [
        ("gc.root==check-walk",      |i| i.labels.get(GC_ROOT).is_some_and(|v| v == "check-walk"),
                                     &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"]),
        ("kind==active",             |i| i.kind == Some(Kind::Active), &["a-np", "a", "a-wl", "a-np-wl"]),
        ("kind==view",               |i| i.kind == Some(Kind::View), &["v", "v-wl"]),
        ("kind==committed",          |i| i.kind == Some(Kind::Committed), &["p", "p-wl"]),
        ("name==p or name==a-np-wl", |i| i.name == "p" || i.name == "a-np-wl", &["p", "a-np-wl"]),
        ("name==a-wl,labels.l",      |i| i.name == "a-wl" && i.labels.contains_key("l"), &["a-wl"]),
        ("parent==p",                |i| i.parent == "p", &["a", "v"]),
        ("parent!=\"\"",             |i| !i.parent.is_empty(), &["a", "v", "a-wl", "v-wl"]),
        ("labels.l",                 |i| i.labels.contains_key("l"), &["p-wl", "a-wl", "v-wl", "a-np-wl"]),
        ("labels.l==2",              |i| i.labels.get("l").is_some_and(|v| v == "2"), &["a-wl", "a-np-wl"]),
    ];
    for (query, pred, want) in queries {
        let got: BTreeSet<String> = all
            .iter()
            .filter(|i| gc_ok(i) && pred(i))
            .map(|i| i.name.clone())
            .collect();
        assert_eq!(got, set(want), "walk, query {query}");
    }

    let mut calls = 0;
    env.walk(&mut |_| {
        calls += 1;
        false
    })
    .must("walk that stops at once");
    assert_eq!(calls, 1, "walk must stop when the callback returns false");
}

/// A file changed in an upper layer shows its new content and mode (docker#21555). containerd
/// repeats it 5 times across second boundaries to catch mtime-based diffing; the repetitions
/// are kept, the sleeps are not (a snapshotter never diffs by mtime).
pub fn layer_file_update(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/etc", 0o700),
        file("/etc/hosts", "mydomain 10.0.0.1", 0o644),
        file("/etc/profile", "PATH=/usr/bin", 0o644),
    ];
    let l2 = [
        file("/etc/hosts", "mydomain 10.0.0.2", 0o644),
        file("/etc/profile", "PATH=/usr/bin", 0o666),
        dir("/root", 0o700),
        file("/root/.bashrc", "PATH=/usr/sbin:/usr/bin", 0o644),
    ];
    for round in 0..5 {
        check_layers(&env, &format!("round{round}"), &[&l1, &l2]);
    }
}

/// A directory removed and created again in an upper layer hides the lower one's files, and a
/// third layer adds to the new directory (docker#25244).
pub fn remove_directory_in_lower_layer(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [dir("/lib", 0o700), file("/lib/hidden", "", 0o644)];
    let l2 = [
        remove_all("/lib"),
        dir("/lib", 0o700),
        file("/lib/not-hidden", "", 0o644),
    ];
    let l3 = [file("/lib/newfile", "", 0o644)];
    check_layers(&env, "layer", &[&l1, &l2, &l3]);
}

/// Ownership changed in an upper layer on lower directories and files shows in the child
/// (docker#20240, #24913, #28391).
pub fn chown(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/opt", 0o700),
        dir("/opt/a", 0o700),
        dir("/opt/a/b", 0o700),
        file("/opt/a/b/file.txt", "hello", 0o644),
    ];
    let l2 = [
        ops::chown("/opt", 1, 1),
        ops::chown("/opt/a", 1, 1),
        ops::chown("/opt/a/b", 1, 1),
        ops::chown("/opt/a/b/file.txt", 1, 1),
    ];
    check_layers(&env, "layer", &[&l1, &l2]);
}

/// Directory owners and modes survive commits across three layers, including directories
/// removed and recreated (docker#27298).
pub fn directory_permission_on_commit(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/dir1", 0o700),
        dir("/dir2", 0o700),
        dir("/dir3", 0o700),
        dir("/dir4", 0o700),
        file("/dir4/f1", "...", 0o644),
        dir("/dir5", 0o700),
        file("/dir5/f1", "...", 0o644),
        ops::chown("/dir1", 1, 1),
        ops::chown("/dir2", 1, 1),
        ops::chown("/dir3", 1, 1),
        ops::chown("/dir5", 1, 1),
        ops::chown("/dir5/f1", 1, 1),
    ];
    let l2 = [
        ops::chown("/dir2", 0, 0),
        remove_all("/dir3"),
        ops::chown("/dir4", 1, 1),
        ops::chown("/dir4/f1", 1, 1),
    ];
    let l3 = [
        dir("/dir3", 0o700),
        ops::chown("/dir3", 1, 1),
        remove_all("/dir5"),
        dir("/dir5", 0o700),
        ops::chown("/dir5", 1, 1),
    ];
    check_layers(&env, "layer", &[&l1, &l2, &l3]);
}

/// In base <- intermediate <- top, the intermediate layer cannot be removed while top exists
/// (FailedPrecondition); top first, then intermediate, then base can.
pub fn remove_intermediate_snapshot(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let mounts = env.prepare("base", "", gc_root()).must("prepare base");
    drop(mount(&mounts, "base"));
    env.commit("committed-base", "base", gc_root())
        .must("commit base");
    env.prepare("intermediate", "committed-base", gc_root())
        .must("prepare intermediate");
    env.commit("committed-inter", "intermediate", gc_root())
        .must("commit intermediate");
    env.prepare("toplayer", "committed-inter", gc_root())
        .must("prepare top");
    expect_err!(
        env.remove("committed-inter"),
        FailedPrecondition,
        "remove of the intermediate layer while the top layer exists"
    );
    env.remove("toplayer").must("remove top");
    env.remove("committed-inter").must("remove intermediate");
    env.remove("committed-base").must("remove base");
    assert!(walk_all(&*env).is_empty(), "everything was removed");
}

/// A file deleted in a child layer stays deleted in the grandchild.
pub fn deleted_files_in_child_snapshot(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        file("/foo", "foo\n", 0o777),
        file("/foobar", "foobar\n", 0o777),
    ];
    let l2 = [remove_all("/foobar")];
    check_layers(&env, "layer", &[&l1, &l2, &[]]);
}

/// Files moved from a lower layer (a new copy in a new directory, a hardlink then removal of
/// the original, removal of the old directory) end up only at their new place.
pub fn move_file_from_lower_layer(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/dir1", 0o700),
        file("/dir1/f1", "Hello", 0o644),
        dir("dir2", 0o700),
        file("dir2/f2", "...", 0o644),
    ];
    let l2 = [
        dir("/dir3", 0o700),
        file("/dir3/f1", "Hello", 0o644),
        remove_all("/dir1"),
        link("dir2/f2", "dir3/f2"),
        remove_all("dir2/f2"),
    ];
    check_layers(&env, "layer", &[&l1, &l2]);
}

/// A view's mount is read-only for real (not just in its options): creating a file, a
/// directory or overwriting a file fails, with or without a parent, and the content stays.
pub fn view_readonly(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let flat = env.flat();
    commit_layer(
        &*env,
        "committed",
        "",
        &[file("/existing", "original\n", 0o644)],
        &flat,
    );
    for (view, parent) in [("view", "committed"), ("view-no-parent", "")] {
        let mounts = env
            .view(view, parent, gc_root())
            .must(&format!("view {view}"));
        {
            let m = mount(&mounts, view);
            let p = m.path();
            assert!(
                fs::write(p.join("testfile"), "testcontent").is_err(),
                "creating a file in view {view:?} should fail (EROFS) but succeeded"
            );
            assert!(
                fs::create_dir(p.join("testdir")).is_err(),
                "creating a directory in view {view:?} should fail but succeeded"
            );
            if parent.is_empty() {
                assert!(
                    fs::read_dir(p).must("list the view").next().is_none(),
                    "view {view:?} is empty"
                );
            } else {
                assert!(
                    fs::write(p.join("existing"), "changed").is_err(),
                    "overwriting a file in view {view:?} should fail but succeeded"
                );
                assert_same_tree(
                    flat.path(),
                    p,
                    &format!("view {view:?} after failed writes"),
                );
            }
        }
        env.remove(view).must(&format!("remove view {view}"));
    }
    check_view(&*env, "committed", &flat);
    env.remove("committed").must("remove committed");
}

/// Stat can be called from inside a walk callback and reports exactly what the walk does
/// (timestamps included).
pub fn stat_in_walk(make: &MakeSnapshotter) {
    let env = Env::new(make);
    let prefix = "stats-in-walk-";
    chain_with_active_and_view(&*env, prefix);
    let mut seen = 0;
    env.walk(&mut |i| {
        if i.name.starts_with(prefix) {
            let st = env
                .stat(&i.name)
                .must(&format!("stat {} inside walk", i.name));
            assert_eq!(&st, i, "stat inside walk differs from the walked info");
            seen += 1;
        }
        true
    })
    .must("walk");
    assert_eq!(seen, 4, "walk should report c1, c2, a1 and v1");
}

/// Close can be called twice, after some work, without error.
pub fn close_twice(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("closeTwice-prepare", "", gc_root())
        .must("prepare");
    env.commit("closeTwice", "closeTwice-prepare", gc_root())
        .must("commit");
    env.remove("closeTwice").must("remove");
    env.close().must("the first close");
    env.close().must("the second close");
}

/// The root directory of a new snapshot without parent is mode 0755.
pub fn root_permission(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let mounts = env.prepare("preparing", "", gc_root()).must("prepare");
    let m = mount(&mounts, "preparing");
    let mode = fs::metadata(m.path()).must("stat the mount's root").mode() & 0o7777;
    assert_eq!(
        mode, 0o755,
        "root of a new snapshot: mode {mode:04o}, expected 0755"
    );
}

/// Renames in an upper layer: a file renamed over another, a file renamed away, and (unless the
/// driver cannot, see [`Quirks::rename_lower_dirs`]) a lower directory renamed (docker#25409).
pub fn rename_with(make: &MakeSnapshotter, rename_lower_dirs: bool) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        dir("/dir1", 0o700),
        dir("/somefiles", 0o700),
        file("/somefiles/f1", "was here first!", 0o644),
        file("/somefiles/f2", "nothing interesting", 0o644),
    ];
    let mut l2 = Vec::new();
    if rename_lower_dirs {
        l2.push(ops::rename("/dir1", "/dir2"));
    }
    l2.extend([
        file("/somefiles/f1-overwrite", "new content 1", 0o644),
        ops::rename("/somefiles/f1-overwrite", "/somefiles/f1"),
        ops::rename("/somefiles/f2", "/somefiles/f3"),
    ]);
    check_layers(&env, "layer", &[&l1, &l2]);
}

/// [`rename_with`] including the rename of a lower directory.
pub fn rename(make: &MakeSnapshotter) {
    rename_with(make, true)
}

/// The ops of layer `i` (0 = lowest) of containerd's 128-layer scenario.
fn stacked_layer_ops(i: usize) -> Vec<Op> {
    if i == 0 {
        return vec![
            file("/bottom", "way at the bottom\n", 0o777),
            file("/overwriteme", "FIRST!\n", 0o777),
            dir("/addhere", 0o755),
            dir("/onlyme", 0o755),
            file("/onlyme/bottom", "bye!\n", 0o777),
        ];
    }
    vec![
        file("/overwriteme", format!("{i} WAS HERE!\n"), 0o777),
        file(&format!("/addhere/file-{i}"), "same\n", 0o755),
        remove_all("/onlyme"),
        dir("/onlyme", 0o755),
        file(&format!("/onlyme/file-{i}"), "only me!\n", 0o777),
    ]
}

/// A chain of `layers` committed layers, each overwriting one file, adding one, and replacing a
/// directory; every `check_every`th active snapshot (and the last) is compared in full before and
/// after its changes, and a view of the top shows everything.
fn stacked_layers(make: &MakeSnapshotter, layers: usize, check_every: usize) {
    require_root();
    assert!(layers > 0, "a chain needs at least one layer");
    let env = Env::new(make);
    let flat = env.flat();
    let mut parent = String::new();
    for i in 0..layers {
        let name = format!("committed-{i}");
        let full = i % check_every == 0 || i + 1 == layers;
        commit_layer_checked(&*env, &name, &parent, &stacked_layer_ops(i), &flat, full);
        parent = name;
    }
    let mounts = env
        .view("fullview", &parent, gc_root())
        .must("view the top layer");
    let m = mount(&mounts, &format!("a view of {layers} layers"));
    assert_same_tree(
        flat.path(),
        m.path(),
        &format!("view of the top of {layers} layers"),
    );
    let added = fs::read_dir(m.path().join("addhere"))
        .must("list /addhere")
        .count();
    assert_eq!(
        added,
        layers - 1,
        "files added by the layers above the lowest"
    );
}

/// containerd's 128LayersMount: a chain of 128 committed layers, each active snapshot checked
/// in full before and after its changes; the top's view shows what all 128 did.
pub fn layers_128_mount(make: &MakeSnapshotter) {
    stacked_layers(make, 128, 1)
}

/// The 128-layer scenario with `layers` layers, checked in full every 50 layers (mounting
/// every layer still): the limit a driver claims to support.
pub fn deep_chain(make: &MakeSnapshotter, layers: usize) {
    stacked_layers(make, layers, 50)
}

/// 500 layers: the kernel's overlay stack limit, beyond the single mount(2) page of options.
pub fn deep_chain_500(make: &MakeSnapshotter) {
    deep_chain(make, 500)
}

// ---------------------------------------------------------------------------------------------
// Berth's cases
// ---------------------------------------------------------------------------------------------

/// Hardlinks: files linked inside one layer stay one inode with the right link count in later
/// layers' views; a hardlink made in an upper layer to a lower layer's file is one inode with
/// it (nlink 2), and a write through one name shows through the other.
pub fn hardlinks_across_layers(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        file("/f1", "one\n", 0o644),
        file("/g1", "group\n", 0o640),
        link("/g1", "/g2"),
        dir("/d", 0o755),
        link("/g1", "/d/g3"),
    ];
    let l2 = [
        link("/f1", "/f1-link"),
        file("/f1-link", "one, rewritten through the link\n", 0o600),
        file("/h1", "in-layer\n", 0o644),
        link("/h1", "/h2"),
    ];
    let l3 = [file("/unrelated", "x", 0o644)];
    let (names, _flat) = check_layers(&env, "layer", &[&l1, &l2, &l3]);

    let top = names.last().expect("three layers");
    let mounts = env
        .view("hardlinks-view", top, gc_root())
        .must("view the top");
    let m = mount(&mounts, "hardlinks-view");
    let st =
        |p: &str| fs::symlink_metadata(m.path().join(p)).must(&format!("stat /{p} in the view"));
    for (a, b, nlink) in [
        ("f1", "f1-link", 2),
        ("g1", "g2", 3),
        ("g1", "d/g3", 3),
        ("h1", "h2", 2),
    ] {
        assert_eq!(
            st(a).ino(),
            st(b).ino(),
            "/{a} and /{b} should be one inode in the view"
        );
        assert_eq!(st(a).nlink(), nlink, "nlink of /{a} in the view");
    }
    let f1 = fs::read(m.path().join("f1")).must("read /f1");
    assert_eq!(
        f1, b"one, rewritten through the link\n",
        "/f1 after a write through /f1-link"
    );
}

/// `user.*` and `trusted.*` xattrs on files, directories and symlinks survive commit, show in a
/// child's active snapshot and in views, and changes to them in an upper layer (added,
/// replaced, removed) show in views of it.
pub fn xattrs(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let l1 = [
        file("/f", "data\n", 0o644),
        set_xattr("/f", "user.color", "blue"),
        set_xattr("/f", "trusted.level", "1"),
        dir("/d", 0o755),
        set_xattr("/d", "user.dir", "yes"),
        set_xattr("/d", "trusted.dir", "t"),
        file("/d/inner", "inner\n", 0o644),
        set_xattr("/d/inner", "user.inner", [0u8, 1, 2, 255]),
        symlink("f", "/link"),
        set_xattr("/link", "trusted.link", "on the symlink"),
    ];
    let l2 = [
        set_xattr("/f", "user.added", "new"),
        set_xattr("/f", "trusted.level", "2"),
        remove_xattr("/d", "user.dir"),
        file("/g", "g\n", 0o644),
        set_xattr("/g", "user.g", ""),
    ];
    let (names, _flat) = check_layers(&env, "layer", &[&l1, &l2, &[]]);

    // The tree checks compare xattrs; make sure there were some to compare.
    let mounts = env
        .view("xattr-view", &names[2], gc_root())
        .must("view the top");
    let m = mount(&mounts, "xattr-view");
    let got = list_xattrs(&m.path().join("f")).must("list /f's xattrs");
    let want: BTreeMap<String, Vec<u8>> = [
        ("trusted.level", "2"),
        ("user.added", "new"),
        ("user.color", "blue"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
    .collect();
    assert_eq!(got, want, "xattrs of /f in a view two layers up");
    let d = list_xattrs(&m.path().join("d")).must("list /d's xattrs");
    assert_eq!(
        d.keys().collect::<Vec<_>>(),
        ["trusted.dir"],
        "xattrs of /d (user.dir removed)"
    );
}

/// Threads prepare, write and commit on one committed parent at the same time: all succeed,
/// each commit is its own snapshot with the parent as parent, and each view shows the parent's
/// content plus exactly that thread's changes.
pub fn concurrent_prepare_commit(make: &MakeSnapshotter) {
    require_root();
    const THREADS: usize = 8;
    let env = Env::new(make);
    let base_ops = [file("/shared", "base\n", 0o644), dir("/dir", 0o755)];
    commit_layer(&*env, "base", "", &base_ops, &env.flat());
    let thread_ops = |i: usize| {
        vec![
            file(&format!("/thread-{i}"), format!("written by {i}\n"), 0o644),
            file("/shared", format!("overwritten by {i}\n"), 0o644),
            file(&format!("/dir/{i}"), "", 0o600),
        ]
    };

    let barrier = Barrier::new(THREADS);
    let sn: &dyn Snapshotter = &*env;
    std::thread::scope(|s| {
        for i in 0..THREADS {
            let (barrier, ops) = (&barrier, thread_ops(i));
            s.spawn(move || {
                let key = format!("concurrent-{i}-active");
                barrier.wait();
                let mounts = sn
                    .prepare(&key, "base", gc_root())
                    .must(&format!("thread {i}: prepare"));
                {
                    let m = mount(&mounts, &key);
                    apply(m.path(), &ops).must(&format!("thread {i}: write"));
                }
                sn.commit(&format!("concurrent-{i}"), &key, gc_root())
                    .must(&format!("thread {i}: commit"));
            });
        }
    });

    let all = walk_all(&*env);
    for i in 0..THREADS {
        let name = format!("concurrent-{i}");
        let info = all
            .iter()
            .find(|x| x.name == name)
            .unwrap_or_else(|| panic!("walk does not list {name:?}: {all:?}"));
        assert_info(info, &name, Kind::Committed, "base");
        let flat = env.flat();
        flat.apply(&base_ops);
        flat.apply(&thread_ops(i));
        check_view(&*env, &name, &flat);
    }
    assert_eq!(
        all.len(),
        THREADS + 1,
        "walk lists base and one snapshot per thread: {all:?}"
    );
}

/// [`crash_recovery_in`] for drivers keeping `<root>/snapshots/<id>/`.
pub fn crash_recovery(make: &MakeSnapshotter) {
    crash_recovery_in(make, default_snapshots_dir)
}

/// After a crash (the driver dropped without close, an active snapshot left in place, and
/// leftovers of interrupted work in `snapshots_dir(root)`: directories named like the next ids
/// and like temporary and trash directories, none with a metadata record), a driver built again
/// on the same root reports every snapshot as before; `cleanup` removes every leftover (and is
/// idempotent) and nothing else: the committed, active and view snapshots all still mount with
/// their content, and new snapshots start empty.
pub fn crash_recovery_in(make: &MakeSnapshotter, snapshots_dir: fn(&Path) -> PathBuf) {
    require_root();
    let mut env = Env::new(make);
    let base_ops = [file("/base", "base\n", 0o644), dir("/etc", 0o755)];
    let active_ops = [file("/active", "active\n", 0o600), remove_all("/etc")];
    let base = env.flat();
    commit_layer(&*env, "crash-base", "", &base_ops, &base);
    let active = env.flat();
    active.apply(&base_ops);
    let mounts = env
        .prepare("crash-active", "crash-base", gc_root())
        .must("prepare crash-active");
    {
        let m = mount(&mounts, "crash-active");
        apply(m.path(), &active_ops).must("write into crash-active");
    }
    active.apply(&active_ops);
    env.view("crash-view", "crash-base", gc_root())
        .must("view crash-view");
    env.prepare("crash-removed", "", gc_root())
        .must("prepare crash-removed");
    env.remove("crash-removed").must("remove crash-removed");
    let before = walk_all(&*env);

    // Crash: no close, no cleanup. Then leftovers appear where the driver keeps snapshots.
    env.sn = None;
    let dir = snapshots_dir(&env.root);
    let entries: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the driver keeps no snapshots directory at {} ({e}); pass Quirks::snapshots_dir",
                dir.display()
            )
        })
        .map(|e| {
            e.must("list the snapshots directory")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let next_id = entries
        .iter()
        .filter_map(|n| n.parse::<u64>().ok())
        .max()
        .unwrap_or(0)
        + 1;
    let strays: Vec<String> = vec![
        next_id.to_string(),
        (next_id + 1).to_string(),
        "new-crashed".into(),
        "rm-crashed".into(),
    ];
    for stray in &strays {
        let p = dir.join(stray).join("fs");
        fs::create_dir_all(&p).must("create a stray directory");
        fs::write(p.join("stray"), "left by a crash\n").must("create a stray file");
    }

    env.reopen(make);
    assert_eq!(
        walk_all(&*env),
        before,
        "after a restart walk must report the same snapshots"
    );
    env.cleanup().must("cleanup after a crash");
    for stray in &strays {
        assert!(
            !dir.join(stray).exists(),
            "cleanup left {} (it has no metadata record)",
            dir.join(stray).display()
        );
    }
    env.cleanup().must("a second cleanup");
    assert_eq!(
        walk_all(&*env),
        before,
        "cleanup must not change the records"
    );

    check_view(&*env, "crash-base", &base);
    let mounts = env.mounts("crash-view").must("mounts of crash-view");
    {
        let m = mount(&mounts, "crash-view");
        assert_same_tree(base.path(), m.path(), "crash-view after a restart");
        assert!(
            fs::write(m.path().join("x"), "x").is_err(),
            "crash-view is still read-only"
        );
    }
    let mounts = env.mounts("crash-active").must("mounts of crash-active");
    {
        let m = mount(&mounts, "crash-active");
        assert_same_tree(active.path(), m.path(), "crash-active after a restart");
    }
    env.commit("crash-top", "crash-active", gc_root())
        .must("commit crash-active after a restart");
    check_view(&*env, "crash-top", &active);
    let empty = env.flat();
    for key in ["fresh-1", "fresh-2"] {
        let mounts = env
            .prepare(key, "", gc_root())
            .must("prepare after a restart");
        let m = mount(&mounts, key);
        assert_same_tree(
            empty.path(),
            m.path(),
            &format!("new snapshot {key:?} after cleanup"),
        );
    }
}

/// Every failure has containerd's error code and leaves no trace: NotFound for unknown keys
/// and missing parents, InvalidArgument for a parent that is not committed, an empty key or
/// oversized labels, AlreadyExists for a key or name in use, FailedPrecondition for committing
/// anything but an active snapshot, for the mounts of a committed one and for removing a
/// snapshot with children. Afterwards everything still works.
pub fn error_codes(make: &MakeSnapshotter) {
    require_root();
    let env = Env::new(make);
    let flat = env.flat();
    commit_layer(&*env, "base", "", &[file("/f", "base\n", 0o644)], &flat);
    env.prepare("active", "base", gc_root())
        .must("prepare active");
    env.view("view", "base", gc_root()).must("view view");
    let unknown = Info {
        name: "unknown".into(),
        ..Info::default()
    };
    let big = labels(&[("big", &"x".repeat(5000))]);
    let mut too_big = env.stat("active").must("stat active");
    too_big.labels = big.clone();
    let none = BTreeMap::new;

    // What was tried, the code containerd answers, what the driver answered (in this order).
    #[rustfmt::skip]
    let outcomes = [
        ("stat of an unknown key",           "NotFound",           outcome(env.stat("unknown"))),
        ("usage of an unknown key",          "NotFound",           outcome(env.usage("unknown"))),
        ("mounts of an unknown key",         "NotFound",           outcome(env.mounts("unknown"))),
        ("update of an unknown key",         "NotFound",           outcome(env.update(&unknown, &[]))),
        ("remove of an unknown key",         "NotFound",           outcome(env.remove("unknown"))),
        ("commit of an unknown key",         "NotFound",           outcome(env.commit("c", "unknown", none()))),
        ("prepare on a missing parent",      "NotFound",           outcome(env.prepare("p1", "missing", none()))),
        ("view of a missing parent",         "NotFound",           outcome(env.view("v1", "missing", none()))),
        ("prepare on an active parent",      "InvalidArgument",    outcome(env.prepare("p2", "active", none()))),
        ("prepare on a view parent",         "InvalidArgument",    outcome(env.prepare("p3", "view", none()))),
        ("view of an active parent",         "InvalidArgument",    outcome(env.view("v3", "active", none()))),
        ("prepare with an empty key",        "InvalidArgument",    outcome(env.prepare("", "", none()))),
        ("prepare with a 5000-byte label",   "InvalidArgument",    outcome(env.prepare("p4", "", big))),
        ("update with a 5000-byte label",    "InvalidArgument",    outcome(env.update(&too_big, &[]))),
        ("prepare with an active key",       "AlreadyExists",      outcome(env.prepare("active", "", none()))),
        ("view with an active key",          "AlreadyExists",      outcome(env.view("active", "base", none()))),
        ("prepare with a committed name",    "AlreadyExists",      outcome(env.prepare("base", "", none()))),
        ("commit to a name in use",          "AlreadyExists",      outcome(env.commit("base", "active", none()))),
        ("commit of a view",                 "FailedPrecondition", outcome(env.commit("c2", "view", none()))),
        ("commit of a committed snapshot",   "FailedPrecondition", outcome(env.commit("c3", "base", none()))),
        ("mounts of a committed snapshot",   "FailedPrecondition", outcome(env.mounts("base"))),
        ("remove of a snapshot with a child", "FailedPrecondition", outcome(env.remove("base"))),
    ];
    for (what, want, (got, detail)) in outcomes {
        assert_eq!(
            got, want,
            "{what}: expected SnapshotError::{want}, got {detail}"
        );
    }

    for key in ["c", "p1", "v1", "p2", "p3", "v3", "p4", "c2", "c3"] {
        expect_err!(
            env.stat(key),
            NotFound,
            "stat of {key:?}, whose creation failed"
        );
    }
    assert_eq!(
        names(&walk_all(&*env)),
        set(&["base", "active", "view"]),
        "snapshots after the failures"
    );
    assert_info(
        &env.stat("active").must("stat"),
        "active",
        Kind::Active,
        "base",
    );
    assert_eq!(
        env.stat("active").must("stat").labels,
        gc_root(),
        "labels of active after a failed update"
    );
    assert_info(&env.stat("view").must("stat"), "view", Kind::View, "base");

    let mounts = env.mounts("active").must("mounts of active");
    {
        let m = mount(&mounts, "active");
        assert_same_tree(flat.path(), m.path(), "active after the failures");
    }
    check_view(&*env, "base", &flat);
    env.commit("top", "active", gc_root())
        .must("commit active after the failures");
    env.remove("view").must("remove view");
    expect_err!(
        env.remove("base"),
        FailedPrecondition,
        "remove of base while top is its child"
    );
    env.remove("top").must("remove top");
    env.remove("base").must("remove base");
    assert!(walk_all(&*env).is_empty(), "everything was removed");
}

/// Commit's labels replace the active snapshot's labels, they are not merged with them
/// (containerd's `CommitActive`: "Replace labels, do not inherit"). Not yet in
/// [`conformance_tests!`]: `MetaStore`'s `Tx::commit_active` merges them, so every driver would
/// fail it; it moves into the macro once the store is fixed.
pub fn commit_labels(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("a", "", labels(&[("from-prepare", "1"), (GC_ROOT, "p")]))
        .must("prepare");
    env.commit("c", "a", labels(&[("from-commit", "2")]))
        .must("commit");
    assert_eq!(
        env.stat("c").must("stat").labels,
        labels(&[("from-commit", "2")]),
        "labels of a committed snapshot are the ones given to commit"
    );
}

// ---------------------------------------------------------------------------------------------
// The suite run on a reference driver
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::metastore::Snapshot;
    use crate::{MetaStore, Usage};

    /// A test double. As a copy driver, each snapshot is a full copy (`cp -a`) of its parent in
    /// `<root>/snapshots/<id>/fs`, mounted as one bind mount (read-only for a view). As an
    /// overlay driver, nothing is copied and a snapshot with parents is an overlay of their `fs`
    /// (so the suite's expectations are checked against overlayfs and `mount.rs`'s deep stacks).
    struct CopyDriver {
        root: PathBuf,
        ms: MetaStore,
        overlay: bool,
    }

    fn cp_a(from: &Path, to: &Path) -> Result<(), SnapshotError> {
        let out = Command::new("cp")
            .arg("-a")
            .arg("--")
            .arg(from.join("."))
            .arg(to)
            .output()
            .map_err(SnapshotError::io("run cp", from))?;
        if !out.status.success() {
            return Err(SnapshotError::Io {
                op: "cp -a",
                path: from.to_owned(),
                source: io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
            });
        }
        Ok(())
    }

    fn usage_of(dir: &Path) -> Result<Usage, SnapshotError> {
        let mut seen = BTreeSet::new();
        let mut usage = Usage::default();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).map_err(SnapshotError::io("read dir", &d))? {
                let p = entry.map_err(SnapshotError::io("read dir", &d))?.path();
                let m = fs::symlink_metadata(&p).map_err(SnapshotError::io("stat", &p))?;
                if m.is_dir() {
                    stack.push(p);
                }
                if seen.insert(m.ino()) {
                    usage.inodes += 1;
                    usage.size += m.len() as i64;
                }
            }
        }
        Ok(usage)
    }

    impl CopyDriver {
        fn open(root: &Path) -> Result<CopyDriver, SnapshotError> {
            let snapshots = root.join("snapshots");
            fs::create_dir_all(&snapshots).map_err(SnapshotError::io("create", &snapshots))?;
            Ok(CopyDriver {
                root: root.to_owned(),
                ms: MetaStore::open(&root.join("metadata.redb"))?,
                overlay: false,
            })
        }

        fn open_overlay(root: &Path) -> Result<CopyDriver, SnapshotError> {
            Ok(CopyDriver {
                overlay: true,
                ..CopyDriver::open(root)?
            })
        }

        fn snapshots(&self) -> PathBuf {
            self.root.join("snapshots")
        }

        fn fs_dir(&self, id: &str) -> PathBuf {
            self.snapshots().join(id).join("fs")
        }

        fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
            let mode = if s.kind == Kind::View { "ro" } else { "rw" };
            let bind = |id: &str| {
                vec![Mount {
                    mount_type: "bind".into(),
                    source: self.fs_dir(id).display().to_string(),
                    target: String::new(),
                    options: vec!["rbind".into(), mode.into()],
                }]
            };
            if !self.overlay || s.parent_ids.is_empty() {
                return bind(&s.id);
            }
            if s.kind == Kind::View && s.parent_ids.len() == 1 {
                // overlayfs needs two lower layers when it has no upper one.
                return bind(&s.parent_ids[0]);
            }
            let mut options = vec!["index=off".to_string()];
            if s.kind == Kind::Active {
                let dir = self.snapshots().join(&s.id);
                options.push(format!("workdir={}", dir.join("work").display()));
                options.push(format!("upperdir={}", dir.join("fs").display()));
            } else {
                options.push("ro".into());
            }
            let lower: Vec<String> = s
                .parent_ids
                .iter()
                .map(|id| self.fs_dir(id).display().to_string())
                .collect();
            options.push(format!("lowerdir={}", lower.join(":")));
            vec![Mount {
                mount_type: "overlay".into(),
                source: "overlay".into(),
                target: String::new(),
                options,
            }]
        }

        fn create(
            &self,
            kind: Kind,
            key: &str,
            parent: &str,
            labels: BTreeMap<String, String>,
        ) -> Result<Vec<Mount>, SnapshotError> {
            let snapshots = self.snapshots();
            let tmp = tempfile::Builder::new()
                .prefix("new-")
                .tempdir_in(&snapshots)
                .map_err(SnapshotError::io("create", &snapshots))?;
            let fs_dir = tmp.path().join("fs");
            fs::create_dir(&fs_dir).map_err(SnapshotError::io("create", &fs_dir))?;
            fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755))
                .map_err(SnapshotError::io("chmod", &fs_dir))?;
            if self.overlay {
                let work = tmp.path().join("work");
                fs::create_dir(&work).map_err(SnapshotError::io("create", &work))?;
            }
            let s = self.ms.write(|tx| {
                let s = tx.create_snapshot(kind, key, parent, labels)?;
                match s.parent_ids.first() {
                    Some(pid) if !self.overlay => cp_a(&self.fs_dir(pid), &fs_dir)?,
                    _ => {}
                }
                let dest = snapshots.join(&s.id);
                fs::rename(tmp.path(), &dest).map_err(SnapshotError::io("rename", &dest))?;
                Ok(s)
            })?;
            Ok(self.mounts_for(&s))
        }
    }

    impl Snapshotter for CopyDriver {
        fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
            Ok(self.ms.get_info(key)?.1)
        }

        fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
            self.ms.write(|tx| tx.update_info(info, paths))
        }

        fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
            let (id, info, usage) = self.ms.get_info(key)?;
            match info.kind() {
                Kind::Active => usage_of(&self.fs_dir(&id)),
                _ => Ok(usage),
            }
        }

        fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
            Ok(self.mounts_for(&self.ms.get_snapshot(key)?))
        }

        fn prepare(
            &self,
            key: &str,
            parent: &str,
            labels: BTreeMap<String, String>,
        ) -> Result<Vec<Mount>, SnapshotError> {
            self.create(Kind::Active, key, parent, labels)
        }

        fn view(
            &self,
            key: &str,
            parent: &str,
            labels: BTreeMap<String, String>,
        ) -> Result<Vec<Mount>, SnapshotError> {
            self.create(Kind::View, key, parent, labels)
        }

        fn commit(
            &self,
            name: &str,
            key: &str,
            labels: BTreeMap<String, String>,
        ) -> Result<(), SnapshotError> {
            let (id, _, _) = self.ms.get_info(key)?;
            let usage = usage_of(&self.fs_dir(&id))?;
            self.ms
                .write(|tx| tx.commit_active(key, name, usage, labels))
                .map(drop)
        }

        fn remove(&self, key: &str) -> Result<(), SnapshotError> {
            let trash = self.ms.write(|tx| {
                let (id, _) = tx.remove(key)?;
                let (dir, trash) = (
                    self.snapshots().join(&id),
                    self.snapshots().join(format!("rm-{id}")),
                );
                fs::rename(&dir, &trash).map_err(SnapshotError::io("rename", &dir))?;
                Ok(trash)
            })?;
            fs::remove_dir_all(&trash).map_err(SnapshotError::io("remove", &trash))
        }

        fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
            self.ms.walk(f)
        }

        fn cleanup(&self) -> Result<(), SnapshotError> {
            let ids = self.ms.ids()?;
            let snapshots = self.snapshots();
            for entry in
                fs::read_dir(&snapshots).map_err(SnapshotError::io("read dir", &snapshots))?
            {
                let entry = entry.map_err(SnapshotError::io("read dir", &snapshots))?;
                if !ids.contains_key(&*entry.file_name().to_string_lossy()) {
                    let p = entry.path();
                    fs::remove_dir_all(&p).map_err(SnapshotError::io("remove", &p))?;
                }
            }
            Ok(())
        }

        fn close(&self) -> Result<(), SnapshotError> {
            Ok(())
        }
    }

    fn make(root: &Path) -> Box<dyn Snapshotter> {
        Box::new(CopyDriver::open(root).expect("open the copy driver"))
    }

    crate::conformance_tests!(make);
    crate::conformance_extra_tests!(make; deep_chain(60));

    /// The suite on the overlay double, as the overlayfs driver runs it.
    mod overlay {
        use super::*;

        fn make(root: &Path) -> Box<dyn Snapshotter> {
            Box::new(CopyDriver::open_overlay(root).expect("open the overlay double"))
        }

        crate::conformance_tests!(
            make,
            Quirks {
                rename_lower_dirs: false,
                ..Quirks::default()
            }
        );
        crate::conformance_extra_tests!(make; deep_chain_500);
    }

    /// The checks must be able to fail: the tree comparison sees each kind of difference.
    #[test]
    fn tree_differences_are_found() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let ops = [
            file("/f", "x", 0o644),
            link("/f", "/f2"),
            symlink("f", "/s"),
            dir("/d", 0o755),
            set_xattr("/d", "user.k", "v"),
        ];
        apply(a.path(), &ops).unwrap();
        apply(b.path(), &ops).unwrap();
        assert!(tree_differences(a.path(), b.path()).unwrap().is_empty());
        let changes = [
            file("/f", "y", 0o600),
            remove_all("/f2"),
            file("/f2", "x", 0o644),
            remove_all("/s"),
            symlink("elsewhere", "/s"),
            ops::chown("/d", 1, 1),
            set_xattr("/d", "user.k", "w"),
            file("/extra", "", 0o644),
        ];
        apply(b.path(), &changes).unwrap();
        let diffs = tree_differences(a.path(), b.path()).unwrap().join("\n");
        for want in [
            "/f: content \"y\"",
            "/f: mode 0600",
            "/s: symlink to elsewhere",
            "/d: owner 1:1",
            "/d: xattrs {user.k=\"w\"}",
            "/extra: unexpected file",
            "hardlink groups",
        ] {
            assert!(diffs.contains(want), "{want:?} not reported in:\n{diffs}");
        }
    }

    /// A driver whose views are writable fails `view_readonly`.
    #[test]
    #[should_panic(expected = "should fail (EROFS) but succeeded")]
    fn writable_views_are_caught() {
        struct Writable(CopyDriver);
        impl Snapshotter for Writable {
            fn stat(&self, k: &str) -> Result<Info, SnapshotError> {
                self.0.stat(k)
            }
            fn update(&self, i: &Info, p: &[String]) -> Result<Info, SnapshotError> {
                self.0.update(i, p)
            }
            fn usage(&self, k: &str) -> Result<Usage, SnapshotError> {
                self.0.usage(k)
            }
            fn mounts(&self, k: &str) -> Result<Vec<Mount>, SnapshotError> {
                self.0.mounts(k)
            }
            fn prepare(
                &self,
                k: &str,
                p: &str,
                l: BTreeMap<String, String>,
            ) -> Result<Vec<Mount>, SnapshotError> {
                self.0.prepare(k, p, l)
            }
            fn view(
                &self,
                k: &str,
                p: &str,
                l: BTreeMap<String, String>,
            ) -> Result<Vec<Mount>, SnapshotError> {
                let mut m = self.0.view(k, p, l)?;
                m[0].options.retain(|o| o != "ro");
                Ok(m)
            }
            fn commit(
                &self,
                n: &str,
                k: &str,
                l: BTreeMap<String, String>,
            ) -> Result<(), SnapshotError> {
                self.0.commit(n, k, l)
            }
            fn remove(&self, k: &str) -> Result<(), SnapshotError> {
                self.0.remove(k)
            }
            fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
                self.0.walk(f)
            }
            fn cleanup(&self) -> Result<(), SnapshotError> {
                self.0.cleanup()
            }
            fn close(&self) -> Result<(), SnapshotError> {
                self.0.close()
            }
        }
        super::view_readonly(&|root| Box::new(Writable(CopyDriver::open(root).unwrap())));
    }
}
