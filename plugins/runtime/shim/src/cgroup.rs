//! The shim's side of a container's cgroup: the device rules every container keeps, how the
//! cgroup filesystem is shown inside the container, and the OOM watcher in the shim's reactor.

use std::os::fd::AsRawFd;
use std::path::PathBuf;

use berth_cgroups::{Cgroup, Hierarchy};
use berth_container::CgroupMounts;
use oci_spec::runtime::LinuxResources;

/// The device nodes every container has (`/dev/null` and the others the shim makes, the pty
/// devices) stay usable whatever the spec's device rules deny, as runc always allows them: its
/// allow rules are added after the spec's. `(type, major, minor, access)`; `None` is `*`.
const ALWAYS_ALLOWED: [(&str, Option<i64>, Option<i64>, &str); 11] = [
    ("c", None, None, "m"),
    ("b", None, None, "m"),
    ("c", Some(1), Some(3), "rwm"), // null
    ("c", Some(1), Some(8), "rwm"), // random
    ("c", Some(1), Some(7), "rwm"), // full
    ("c", Some(5), Some(0), "rwm"), // tty
    ("c", Some(1), Some(5), "rwm"), // zero
    ("c", Some(1), Some(9), "rwm"), // urandom
    ("c", Some(5), Some(1), "rwm"), // console
    ("c", Some(136), None, "rwm"),  // pts
    ("c", Some(5), Some(2), "rwm"), // ptmx
];

/// Applies `r` to the cgroup (at Create and on Update), keeping the default device nodes usable.
pub fn apply_resources(cg: &Cgroup, r: &LinuxResources) -> crate::error::Result<()> {
    Ok(cg.apply(&with_default_devices(r))?)
}

/// `r` with [`ALWAYS_ALLOWED`] after its device rules, when it has any.
fn with_default_devices(r: &LinuxResources) -> LinuxResources {
    let mut r = r.clone();
    if let Some(rules) = r.devices().clone().filter(|d| !d.is_empty()) {
        let mut rules = rules;
        for (typ, major, minor, access) in ALWAYS_ALLOWED {
            let rule: Option<oci_spec::runtime::LinuxDeviceCgroup> = serde_json::from_value(
                serde_json::json!({"allow": true, "type": typ, "major": major, "minor": minor, "access": access}),
            )
            .ok();
            rules.extend(rule);
        }
        r.set_devices(Some(rules));
    }
    r
}

/// An OOM watcher as tokio's AsyncFd wants it.
pub struct OomFd(pub berth_cgroups::OomWatcher);

impl AsRawFd for OomFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.0).as_raw_fd()
    }
}

pub fn cgroup_mounts_for(h: &Hierarchy, cg: &Cgroup) -> CgroupMounts {
    match h {
        Hierarchy::V2 { .. } => match cg.dir("") {
            Some(d) => CgroupMounts::V2 {
                host_dir: d.to_owned(),
            },
            None => CgroupMounts::None,
        },
        Hierarchy::V1 { controllers, .. } => {
            let mut dirs: Vec<(String, PathBuf)> = Vec::new();
            for (controller, mountpoint) in controllers {
                let Some(name) = mountpoint.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if dirs.iter().any(|(n, _)| n == name) {
                    continue;
                }
                if let Some(d) = cg.dir(controller) {
                    dirs.push((name.to_owned(), d.to_owned()));
                }
            }
            CgroupMounts::V1 { dirs }
        }
    }
}
