//! The cgroup manager of Berth's shim: it puts a container's processes in a cgroup, applies the
//! OCI spec's `linux.resources`, freezes and thaws, reports containerd's cgroup metrics and
//! notices OOM kills — on cgroup v1, cgroup v2 and the hybrid layout alike.
//!
//! - [`Hierarchy`] says where the cgroup filesystems are (from the mount table, or a fixture
//!   tree for tests); hybrid hosts are v1 for resources.
//! - [`Cgroup`] is one container's cgroup, named by the spec's `linux.cgroupsPath`.
//! - [`Stats`] are plain counters; [`metrics`] turns them into the `io.containerd.cgroups.v1` /
//!   `.v2` messages containerd decodes.
//! - [`OomWatcher`] is a pollable descriptor that fires on OOM events.
//!
//! Layout follows youki's libcgroups: the version-specific code is in `resources::{v1,v2}` and
//! `stats::{v1,v2}`, and everything takes paths, so each piece is tested against fixture trees
//! without root; `tests/root_host.rs` proves it on the real host as root.
//!
//! Device rules are written to the devices controller on v1; on v2, which has no such files,
//! `devices` compiles them into an eBPF program attached to the cgroup (see its module docs for
//! the rules' exact meaning).
//!
//! Not done: systemd as a cgroup driver (the systemd path form is accepted, but directories are
//! made directly), pressure (PSI) and network statistics.

mod cgroup;
mod devices;
mod error;
mod fs;
mod hierarchy;
pub mod metrics;
mod oom;
mod path;
mod resources;
mod stats;

#[cfg(test)]
mod tests;

pub use cgroup::{Cgroup, Entry, FreezerState};
pub use error::{Error, Result};
pub use hierarchy::{Hierarchy, OwnCgroups};
pub use oom::OomWatcher;
pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, HugetlbStats, IoDeviceStats, MemoryEntry, MemoryEvents,
    MemoryStats, OomControl, PidsStats, Stats,
};

/// containerd's cgroup metrics messages (package `io.containerd.cgroups.v1` and `.v2`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod proto {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/io.containerd.cgroups.v1.rs"));
    }
    pub mod v2 {
        include!(concat!(env!("OUT_DIR"), "/io.containerd.cgroups.v2.rs"));
    }
}
