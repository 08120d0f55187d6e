//! Fixture-tree tests: temporary directories laid out with the files a kernel would show, so
//! the v1 and v2 code paths run without root. The writes each test makes are also recorded (see
//! `fs::recording`) to check their order.

mod v1;
mod v2;

use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::hierarchy::OwnCgroups;
use crate::path::SpecPath;
use crate::{Cgroup, Hierarchy};

/// A fixture tree in a temporary directory.
pub(crate) struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    pub(crate) fn new() -> Tree {
        Tree {
            dir: tempfile::tempdir().expect("make a temporary directory"),
        }
    }

    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes `content` to `rel`, making parent directories.
    pub(crate) fn file(&self, rel: &str, content: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("a file has a parent")).expect("mkdir");
        std::fs::write(&p, content).expect("write fixture file");
        self
    }

    pub(crate) fn dir(&self, rel: &str) -> &Self {
        std::fs::create_dir_all(self.path(rel)).expect("mkdir");
        self
    }

    pub(crate) fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel))
            .unwrap_or_else(|e| panic!("read fixture file {rel}: {e}"))
    }
}

pub(crate) fn resources(json: serde_json::Value) -> LinuxResources {
    serde_json::from_value(json).expect("valid LinuxResources JSON")
}

pub(crate) fn open(h: &Hierarchy, path: &str) -> Cgroup {
    let spec = SpecPath::parse(path).expect("valid path");
    Cgroup::open_with(h, &spec, &OwnCgroups::default()).expect("open the fixture cgroup")
}

/// The recorded writes, with paths relative to `root`.
pub(crate) fn writes_under(root: &Path) -> Vec<(String, String)> {
    crate::fs::recording::take()
        .into_iter()
        .map(|(p, v)| {
            let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
            (rel, v)
        })
        .collect()
}

pub(crate) fn w(path: &str, value: &str) -> (String, String) {
    (path.to_string(), value.to_string())
}
