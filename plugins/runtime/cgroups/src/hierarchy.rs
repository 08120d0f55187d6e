//! Which cgroup layout this host has, read from the mount table.
//!
//! Three layouts exist in the wild:
//! - **v2** (most hosts today): one `cgroup2` mount, usually `/sys/fs/cgroup`;
//! - **v1**: one `cgroup` mount per controller (or per group of co-mounted controllers such as
//!   `cpu,cpuacct`), usually under `/sys/fs/cgroup/<name>`;
//! - **hybrid**: the v1 mounts plus a `cgroup2` at `/sys/fs/cgroup/unified` that holds few or no
//!   controllers (systemd uses it to track processes). Resources are v1 there, so hybrid is
//!   [`Hierarchy::V1`] with `unified` set; the container is also placed in the unified tree so
//!   tools that look there find it.
//!
//! Detection takes the mount table as text so every layout is unit-tested, and the constructors
//! [`Hierarchy::v2_at`] / [`Hierarchy::v1_at`] point the manager at fixture trees.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The v1 controllers this crate knows by name; other words in a v1 mount's options (`rw`,
/// `clone_children`, …) are mount options, not controllers. Named hierarchies without a
/// controller (`name=systemd`) are kept too, under that name, for membership only (as runc:
/// systemd and the tools reading it find the container there).
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// Where the cgroup filesystems of this host are mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v1, possibly hybrid.
    V1 {
        /// Controller name → its mount point. Co-mounted controllers (`cpu,cpuacct`) map to the
        /// same directory; a named hierarchy is `name=<name>`.
        controllers: BTreeMap<String, PathBuf>,
        /// The `cgroup2` mount of a hybrid host (`/sys/fs/cgroup/unified`); it carries no
        /// resources we set, only membership.
        unified: Option<PathBuf>,
    },
    /// The unified hierarchy.
    V2 {
        /// The `cgroup2` mount point.
        root: PathBuf,
    },
}

impl Hierarchy {
    /// The layout of this host, from `/proc/self/mountinfo`.
    pub fn detect() -> Result<Hierarchy> {
        let path = Path::new("/proc/self/mountinfo");
        let text = std::fs::read_to_string(path).map_err(|source| Error::ProcFile {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_mountinfo(&text).map_err(|e| match e {
            Error::NoCgroupMounts { .. } => Error::NoCgroupMounts {
                source_name: path.display().to_string(),
            },
            e => e,
        })
    }

    /// Parses a mount table in `/proc/<pid>/mountinfo` format. If any v1 controller is mounted
    /// the layout is v1 (hybrid if a `cgroup2` is mounted too); otherwise the `cgroup2` mount is
    /// the v2 root, preferring `/sys/fs/cgroup` when several exist (bind mounts into containers).
    pub fn from_mountinfo(text: &str) -> Result<Hierarchy> {
        let mut controllers = BTreeMap::new();
        let mut named = BTreeMap::new();
        let mut cgroup2: Vec<PathBuf> = Vec::new();
        for line in text.lines() {
            let Some(m) = MountLine::parse(line) else {
                continue;
            };
            match m.fstype {
                "cgroup2" => cgroup2.push(m.mount_point),
                "cgroup" => {
                    for opt in m.super_options.split(',') {
                        let map = if V1_CONTROLLERS.contains(&opt) {
                            &mut controllers
                        } else if opt.starts_with("name=") {
                            &mut named
                        } else {
                            continue;
                        };
                        // The first mount of a hierarchy wins; later ones are bind mounts.
                        map.entry(opt.to_string())
                            .or_insert_with(|| m.mount_point.clone());
                    }
                }
                _ => {}
            }
        }
        let preferred = |mounts: &[PathBuf]| {
            mounts
                .iter()
                .find(|p| *p == Path::new("/sys/fs/cgroup"))
                .or_else(|| mounts.first())
                .cloned()
        };
        // A named v1 hierarchy alone does not make a v1 host: v2 hosts may mount `name=systemd`
        // for old containers.
        if !controllers.is_empty() {
            controllers.append(&mut named);
            return Ok(Hierarchy::V1 {
                controllers,
                unified: preferred(&cgroup2),
            });
        }
        match preferred(&cgroup2) {
            Some(root) => Ok(Hierarchy::V2 { root }),
            None => Err(Error::NoCgroupMounts {
                source_name: "the given mount table".to_string(),
            }),
        }
    }

    /// A v2 hierarchy rooted at `root` (a fixture tree in tests).
    pub fn v2_at(root: &Path) -> Hierarchy {
        Hierarchy::V2 {
            root: root.to_path_buf(),
        }
    }

    /// A v1 hierarchy whose controllers are mounted at the given directories (a fixture tree in
    /// tests), with an optional unified mount for the hybrid layout.
    pub fn v1_at<I, S, P>(controllers: I, unified: Option<&Path>) -> Hierarchy
    where
        I: IntoIterator<Item = (S, P)>,
        S: Into<String>,
        P: Into<PathBuf>,
    {
        Hierarchy::V1 {
            controllers: controllers
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            unified: unified.map(Path::to_path_buf),
        }
    }

    /// Whether this is cgroup v2 (resources and metrics follow the v2 interface).
    pub fn is_v2(&self) -> bool {
        matches!(self, Hierarchy::V2 { .. })
    }
}

/// The fields of one mountinfo line this module needs.
struct MountLine<'a> {
    mount_point: PathBuf,
    fstype: &'a str,
    super_options: &'a str,
}

impl<'a> MountLine<'a> {
    /// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`: the
    /// mount point is field 5; after the ` - ` separator come type, source and super options.
    /// Malformed lines return `None`; the kernel does not write them, and a detector that fails on
    /// one odd line would leave the shim unable to start.
    fn parse(line: &'a str) -> Option<Self> {
        let (pre, post) = line.split_once(" - ")?;
        let mount_point = pre.split(' ').nth(4)?;
        let mut post = post.split(' ');
        let fstype = post.next()?;
        let _source = post.next()?;
        let super_options = post.next().unwrap_or("");
        Some(MountLine {
            mount_point: PathBuf::from(unescape_octal(mount_point)),
            fstype,
            super_options,
        })
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroups this process is in, from `/proc/self/cgroup`: controller → path ("" is the v2
/// entry). Relative `cgroupsPath` values are placed under these, as runc's cgroupfs driver does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnCgroups(pub BTreeMap<String, String>);

impl OwnCgroups {
    /// The current process's cgroups.
    pub fn current() -> Result<OwnCgroups> {
        let path = Path::new("/proc/self/cgroup");
        let text = std::fs::read_to_string(path).map_err(|source| Error::ProcFile {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self::parse(&text))
    }

    /// Parses `hierarchy-id:controller-list:path` lines. Co-mounted controllers (`cpu,cpuacct`)
    /// each get the path; `name=systemd` entries are kept under that name.
    pub fn parse(text: &str) -> OwnCgroups {
        let mut map = BTreeMap::new();
        for line in text.lines() {
            let mut it = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
                continue;
            };
            if ctrls.is_empty() {
                map.insert(String::new(), path.to_string());
            } else {
                for c in ctrls.split(',') {
                    map.insert(c.to_string(), path.to_string());
                }
            }
        }
        OwnCgroups(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const V2: &str = "\
22 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p2 rw
26 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
27 26 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:3 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const V1_COMOUNT: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
34 30 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,cpu,cpuacct
35 30 0:31 / /sys/fs/cgroup/net_cls,net_prio rw,nosuid,nodev,noexec,relatime shared:16 - cgroup cgroup rw,net_cls,net_prio
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:17 - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:18 - cgroup cgroup rw,pids
";

    #[test]
    fn hybrid_is_v1_with_unified() {
        let Hierarchy::V1 {
            controllers,
            unified,
        } = Hierarchy::from_mountinfo(HYBRID).unwrap()
        else {
            panic!("hybrid must be v1");
        };
        assert_eq!(
            unified.as_deref(),
            Some(Path::new("/sys/fs/cgroup/unified"))
        );
        assert_eq!(controllers["memory"], Path::new("/sys/fs/cgroup/memory"));
        assert_eq!(controllers["cpuacct"], Path::new("/sys/fs/cgroup/cpuacct"));
        assert_eq!(
            controllers["name=systemd"],
            Path::new("/sys/fs/cgroup/systemd")
        );
        assert!(!controllers.contains_key("rw"));
        assert_eq!(controllers.len(), 9);
    }

    #[test]
    fn pure_v2() {
        assert_eq!(
            Hierarchy::from_mountinfo(V2).unwrap(),
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn a_named_v1_hierarchy_alone_leaves_a_v2_host_v2() {
        let with_systemd_v1 = format!(
            "{V2}40 27 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
        );
        assert_eq!(
            Hierarchy::from_mountinfo(&with_systemd_v1).unwrap(),
            Hierarchy::V2 {
                root: "/sys/fs/cgroup".into()
            }
        );
    }

    #[test]
    fn v1_comounted_controllers_share_a_directory() {
        let Hierarchy::V1 {
            controllers,
            unified,
        } = Hierarchy::from_mountinfo(V1_COMOUNT).unwrap()
        else {
            panic!("v1 expected");
        };
        assert_eq!(unified, None);
        assert_eq!(controllers["cpu"], Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(controllers["cpuacct"], controllers["cpu"]);
        assert_eq!(
            controllers["net_prio"],
            Path::new("/sys/fs/cgroup/net_cls,net_prio")
        );
        assert!(controllers.contains_key("memory") && controllers.contains_key("pids"));
    }

    #[test]
    fn no_cgroup_mount_is_an_error() {
        let err = Hierarchy::from_mountinfo("22 1 259:2 / / rw - ext4 /dev/x rw\n").unwrap_err();
        assert!(matches!(err, Error::NoCgroupMounts { .. }), "{err}");
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        let text = "27 26 0:23 / /tmp/a\\040b rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            Hierarchy::from_mountinfo(text).unwrap(),
            Hierarchy::V2 {
                root: "/tmp/a b".into()
            }
        );
    }

    #[test]
    fn own_cgroups_parse() {
        let own = OwnCgroups::parse(
            "12:cpu,cpuacct:/user.slice\n1:name=systemd:/user.slice/session-1.scope\n0::/user.slice/session-1.scope\n",
        );
        assert_eq!(own.0["cpu"], "/user.slice");
        assert_eq!(own.0["cpuacct"], "/user.slice");
        assert_eq!(own.0[""], "/user.slice/session-1.scope");
    }
}
