//! What every case builds on: the root check, the case's temporary world ([`Env`]), flat
//! directories and mounting.

use std::collections::BTreeMap;
use std::fs;
use std::ops::Deref;
use std::path::Path;
use std::path::PathBuf;

use berth_mount::TempMount;
use berth_snapshotter::{Mount, Snapshotter};

use crate::ops::{apply, Op};
use crate::{MakeSnapshotter, GC_ROOT};

/// Panics unless running as root: mounting needs it, and a conformance case must never pass by
/// skipping its checks.
pub fn require_root() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this conformance case mounts filesystems and must run as root");
    }
}

/// `result.must("what was being done")`: the value, or a panic naming the step and the error.
pub(crate) trait Must<T> {
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

/// `{GC_ROOT: "berth-conformance"}`, the labels containerd's suite passes everywhere.
pub(crate) fn gc_root() -> BTreeMap<String, String> {
    labels(&[(GC_ROOT, "berth-conformance")])
}

pub(crate) fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Lets the clock move so a timestamp set next is strictly later (the only sleep in the suite).
pub(crate) fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(2));
}

/// One case's world: a temporary directory holding the driver's `root/` and a `work/` area for
/// flat directories, and the driver built on `root/`. The driver is dropped before the directory.
pub(crate) struct Env {
    pub(crate) sn: Option<Box<dyn Snapshotter>>,
    pub(crate) root: PathBuf,
    work: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Env {
    pub(crate) fn new(make: &MakeSnapshotter) -> Env {
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
    pub(crate) fn reopen(&mut self, make: &MakeSnapshotter) {
        self.sn = None;
        self.sn = Some(make(&self.root));
    }

    /// A new empty flat directory: the expected content of a snapshot, built op by op.
    pub(crate) fn flat(&self) -> Flat {
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
pub(crate) struct Flat(tempfile::TempDir);

impl Flat {
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    pub(crate) fn apply(&self, ops: &[Op]) {
        apply(self.path(), ops).must("apply changes to the flat directory");
    }
}

/// Mounts `mounts` on a temporary directory (unmounted on drop).
#[track_caller]
pub(crate) fn mount(mounts: &[Mount], what: &str) -> TempMount {
    assert!(
        !mounts.is_empty(),
        "{what}: the snapshotter returned no mounts"
    );
    TempMount::new(mounts).unwrap_or_else(|e| panic!("mount {what} ({mounts:?}): {e}"))
}
