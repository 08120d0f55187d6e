//! From the OCI spec's `linux.cgroupsPath` to a directory in each hierarchy.
//!
//! Three forms arrive:
//! - absolute (`/berth/default/c1`): below the hierarchy's root;
//! - relative (`berth/c1`): below the cgroup of the calling process, as runc's cgroupfs driver
//!   places it — on v1 below our own cgroup in that controller; on v2 below its *parent*, because
//!   our own cgroup holds processes and the kernel lets no cgroup hold processes and enable
//!   controllers for children at once;
//! - systemd (`slice:prefix:name`, what containerd's CRI sends with `SystemdCgroup = true`):
//!   `kubepods-besteffort-pod1.slice:cri-containerd:abc` becomes
//!   `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope`.
//!   Berth has no systemd driver: the directories are made directly, at the same place systemd
//!   would put them, so tools and kubelet find the container where they expect it.
//!
//! `..` and `.` are resolved lexically and can never climb above the root.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A parsed `cgroupsPath`: components below the root (or below our own cgroup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SpecPath {
    /// Clean, relative components (`berth/default/c1`).
    pub rel: PathBuf,
    /// Whether `rel` is below the hierarchy root (absolute and systemd forms) rather than below
    /// the calling process's cgroup.
    pub from_root: bool,
}

impl SpecPath {
    pub(crate) fn parse(cgroups_path: &str) -> Result<SpecPath> {
        let invalid = |reason: &str| Error::InvalidPath {
            path: cgroups_path.to_string(),
            reason: reason.to_string(),
        };
        if cgroups_path.is_empty() {
            return Err(invalid(
                "it is empty; the caller must choose a default (e.g. /berth/<namespace>/<id>)",
            ));
        }
        if let Some(systemd) = parse_systemd(cgroups_path) {
            let abs = systemd.map_err(|r: String| invalid(&r))?;
            return Ok(SpecPath {
                rel: clean(&abs),
                from_root: true,
            });
        }
        let rel = clean(cgroups_path);
        if rel.as_os_str().is_empty() {
            return Err(invalid(
                "it names the root cgroup, which a container must not use",
            ));
        }
        Ok(SpecPath {
            rel,
            from_root: cgroups_path.starts_with('/'),
        })
    }
}

/// Lexical clean: drops empty and `.` components, `..` removes the previous one (never above the
/// start).
fn clean(path: &str) -> PathBuf {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.iter().collect()
}

/// `slice:prefix:name` → `/<expanded slice>/<unit>`, or `None` if `path` is not in this form
/// (exactly three colon-separated parts, no `/` in the first two, the slice empty or ending in
/// `.slice`).
fn parse_systemd(path: &str) -> Option<Result<String, String>> {
    let parts: Vec<&str> = path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return None;
    };
    if slice.contains('/')
        || prefix.contains('/')
        || !(slice.is_empty() || slice.ends_with(".slice"))
    {
        return None;
    }
    Some((|| {
        if name.is_empty() || name.contains('/') {
            return Err("the systemd form needs a unit name without '/'".to_string());
        }
        // systemd's default parent for system services, as runc uses.
        let slice = if slice.is_empty() {
            "system.slice"
        } else {
            slice
        };
        let parent = expand_slice(slice)?;
        let unit = if name.ends_with(".slice") {
            name.to_string()
        } else if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        Ok(format!("{}/{unit}", parent.trim_end_matches('/')))
    })())
}

/// systemd nests slices by their dash-separated prefix: `a-b-c.slice` lives in `a-b.slice`,
/// which lives in `a.slice`. `-.slice` is the root slice.
pub(crate) fn expand_slice(slice: &str) -> Result<String, String> {
    let Some(base) = slice.strip_suffix(".slice") else {
        return Err(format!("{slice:?} is not a slice name (no .slice suffix)"));
    };
    if slice.contains('/') {
        return Err(format!("slice name {slice:?} contains '/'"));
    }
    if base == "-" {
        return Ok("/".to_string());
    }
    let mut path = String::new();
    let mut prefix = String::new();
    for component in base.split('-') {
        if component.is_empty() {
            return Err(format!(
                "slice name {slice:?} has an empty dash-separated component"
            ));
        }
        if !prefix.is_empty() {
            prefix.push('-');
        }
        prefix.push_str(component);
        path.push('/');
        path.push_str(&prefix);
        path.push_str(".slice");
    }
    Ok(path)
}

/// The directory of `spec` in a hierarchy mounted at `mount`. `own` is the calling process's
/// cgroup in that hierarchy (from `/proc/self/cgroup`), used for relative paths; on v2 its
/// parent is used (see the module docs).
pub(crate) fn dir_in(mount: &Path, spec: &SpecPath, own: Option<&str>, v2: bool) -> PathBuf {
    if spec.from_root {
        return mount.join(&spec.rel);
    }
    let mut base = clean(own.unwrap_or("/"));
    if v2 {
        base.pop();
    }
    mount.join(base).join(&spec.rel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_and_relative() {
        let p = SpecPath::parse("/berth/default/c1").unwrap();
        assert_eq!(p.rel, Path::new("berth/default/c1"));
        assert!(p.from_root);
        let p = SpecPath::parse("berth/c1").unwrap();
        assert!(!p.from_root);
        assert_eq!(
            dir_in(
                Path::new("/sys/fs/cgroup/memory"),
                &p,
                Some("/user.slice"),
                false
            ),
            Path::new("/sys/fs/cgroup/memory/user.slice/berth/c1")
        );
        // v2: below the parent of our own (populated) cgroup.
        assert_eq!(
            dir_in(
                Path::new("/sys/fs/cgroup"),
                &p,
                Some("/user.slice/session-1.scope"),
                true
            ),
            Path::new("/sys/fs/cgroup/user.slice/berth/c1")
        );
    }

    #[test]
    fn dot_dot_cannot_escape() {
        let p = SpecPath::parse("/../../etc/x").unwrap();
        assert_eq!(p.rel, Path::new("etc/x"));
        assert_eq!(
            dir_in(Path::new("/sys/fs/cgroup"), &p, None, true),
            Path::new("/sys/fs/cgroup/etc/x")
        );
        assert!(SpecPath::parse("/a/..").is_err(), "root is refused");
        assert!(SpecPath::parse("").is_err());
    }

    #[test]
    fn systemd_form_expands_slices() {
        let p = SpecPath::parse("kubepods-besteffort-pod1.slice:cri-containerd:abc").unwrap();
        assert!(p.from_root);
        assert_eq!(
            p.rel,
            Path::new(
                "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope"
            )
        );
        let p = SpecPath::parse(":berth:c1").unwrap();
        assert_eq!(p.rel, Path::new("system.slice/berth-c1.scope"));
        let p = SpecPath::parse("-.slice:p:c1").unwrap();
        assert_eq!(p.rel, Path::new("p-c1.scope"));
        let p = SpecPath::parse("machine.slice::sub.slice").unwrap();
        assert_eq!(p.rel, Path::new("machine.slice/sub.slice"));
        assert!(SpecPath::parse("a--b.slice:p:n").is_err());
        assert!(SpecPath::parse("a.slice:p:").is_err());
        // Not the systemd form: a plain path with colons.
        let p = SpecPath::parse("/a:b:c").unwrap();
        assert_eq!(p.rel, Path::new("a:b:c"));
    }

    #[test]
    fn expand_slice_examples() {
        assert_eq!(expand_slice("-.slice").unwrap(), "/");
        assert_eq!(expand_slice("a.slice").unwrap(), "/a.slice");
        assert_eq!(expand_slice("a-b.slice").unwrap(), "/a.slice/a-b.slice");
        assert!(expand_slice("-a.slice").is_err());
        assert!(expand_slice("a-.slice").is_err());
        assert!(expand_slice("a").is_err());
    }
}
