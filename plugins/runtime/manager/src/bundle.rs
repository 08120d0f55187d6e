//! A task's bundle, laid out as containerd lays it out so that any shim v2 binary finds what it
//! expects: `<state>/<ns>/<id>/` holds `config.json` (the OCI spec), `rootfs/` (mounted by the
//! shim from the mounts in Create), `work` (a link to `<root>/<ns>/<id>`, the runtime's scratch
//! space), `log` (a FIFO the shim writes its log to), and what the shim writes itself
//! (`address`, `shim.pid`). berthd adds `shim-binary-path`, to find the shim again after a
//! restart.

use std::path::{Path, PathBuf};

use crate::error::{io, Error, Result};

pub const CONFIG: &str = "config.json";
pub const ADDRESS: &str = "address";
pub const SHIM_PID: &str = "shim.pid";
pub const SHIM_BINARY: &str = "shim-binary-path";
pub const LOG: &str = "log";

#[derive(Debug, Clone)]
pub struct Bundle {
    pub namespace: String,
    pub id: String,
    pub path: PathBuf,
    work: PathBuf,
}

/// Ids and namespaces name directories: anything that could step out of its parent is refused
/// (the containers and namespaces stores validate them already; this is the last line).
fn check_component(s: &str) -> Result<()> {
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(Error::InvalidId(s.to_owned()));
    }
    Ok(())
}

impl Bundle {
    /// The bundle of `namespace`/`id` under `state` (work space under `root`), as it is on disk.
    pub fn at(root: &Path, state: &Path, namespace: &str, id: &str) -> Result<Bundle> {
        check_component(namespace)?;
        check_component(id)?;
        Ok(Bundle {
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            path: state.join(namespace).join(id),
            work: root.join(namespace).join(id),
        })
    }

    /// Creates the bundle with `spec` as its `config.json`. A bundle left behind by a task that
    /// no longer exists is replaced.
    pub fn create(&self, spec: &[u8]) -> Result<()> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if self.path.exists() {
            tracing::warn!(path = %self.path.display(), "removing a stale bundle");
            self.delete()?;
        }
        let parent = |p: &Path| p.parent().map(Path::to_owned).unwrap_or_default();
        for dir in [parent(&self.path), parent(&self.work)] {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o711)
                .create(&dir)
                .map_err(io("create", &dir))?;
        }
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.path)
            .map_err(io("create bundle", &self.path))?;
        let made = (|| {
            let rootfs = self.rootfs();
            std::fs::DirBuilder::new()
                .mode(0o711)
                .create(&rootfs)
                .map_err(io("create", &rootfs))?;
            match std::fs::remove_dir_all(&self.work) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove stale work directory", &self.work)(e))
                }
                _ => {}
            }
            std::fs::DirBuilder::new()
                .mode(0o711)
                .create(&self.work)
                .map_err(io("create", &self.work))?;
            let link = self.path.join("work");
            std::os::unix::fs::symlink(&self.work, &link).map_err(io("link", &link))?;
            let config = self.path.join(CONFIG);
            std::fs::write(&config, spec).map_err(io("write", &config))?;
            std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o666))
                .map_err(io("chmod", &config))?;
            let log = self.path.join(LOG);
            nix::unistd::mkfifo(&log, nix::sys::stat::Mode::from_bits_truncate(0o700))
                .map_err(|e| io("mkfifo", &log)(std::io::Error::from_raw_os_error(e as i32)))?;
            if let Some((uid, gid)) = remapped_root(spec) {
                // A container in a user namespace makes its root filesystem as its own root,
                // an unprivileged uid on the host: it must be able to enter the bundle (as
                // containerd 1.7 prepares it: owned by that uid, 0710).
                nix::unistd::chown(
                    &self.path,
                    Some(nix::unistd::Uid::from_raw(uid)),
                    Some(nix::unistd::Gid::from_raw(gid)),
                )
                .map_err(|e| {
                    io("chown", &self.path)(std::io::Error::from_raw_os_error(e as i32))
                })?;
                std::fs::set_permissions(&self.path, std::fs::Permissions::from_mode(0o710))
                    .map_err(io("chmod", &self.path))?;
            }
            Ok(())
        })();
        if made.is_err() {
            let _ = self.delete();
        }
        made
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// A file the shim or berthd wrote, trimmed; `None` when it is not there.
    pub fn read(&self, name: &str) -> Result<Option<String>> {
        let path = self.file(name);
        match std::fs::read_to_string(&path) {
            Ok(s) => Ok(Some(s.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("read", &path)(e)),
        }
    }

    pub fn write(&self, name: &str, value: &str) -> Result<()> {
        let path = self.file(name);
        std::fs::write(&path, value).map_err(io("write", &path))
    }

    /// Removes the bundle and its work directory. Whatever is mounted on or below the rootfs
    /// is unmounted first (the shim should have done it; a recursive removal must never reach
    /// into a mounted file system). What is left in the rootfs directory then is what a runtime
    /// made there when no root file system was mounted (runc creates its mount points).
    pub fn delete(&self) -> Result<()> {
        let rootfs = self.rootfs();
        if rootfs.exists() {
            berth_mount::unmount_recursive(&rootfs)
                .map_err(|e| Error::Unmount(rootfs.display().to_string(), e))?;
        }
        for dir in [&self.path, &self.work] {
            match std::fs::remove_dir_all(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io("remove", dir)(e))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The host uid and gid of the container's root when the spec asks for a new user namespace
/// with mappings for it.
fn remapped_root(spec: &[u8]) -> Option<(u32, u32)> {
    let v: serde_json::Value = serde_json::from_slice(spec).ok()?;
    let linux = v.get("linux")?;
    let new_userns = linux.get("namespaces")?.as_array()?.iter().any(|n| {
        n.get("type").and_then(|t| t.as_str()) == Some("user")
            && n.get("path")
                .and_then(|p| p.as_str())
                .is_none_or(str::is_empty)
    });
    if !new_userns {
        return None;
    }
    let host_of_root = |key: &str| -> Option<u32> {
        linux.get(key)?.as_array()?.iter().find_map(|m| {
            let container = m.get("containerID")?.as_u64()?;
            let host = m.get("hostID")?.as_u64()?;
            let size = m.get("size")?.as_u64()?;
            (container == 0 && size > 0).then_some(host as u32)
        })
    };
    Some((host_of_root("uidMappings")?, host_of_root("gidMappings")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_is_laid_out_as_containerd_lays_it_out_and_goes_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("root"), dir.path().join("state"));
        let b = Bundle::at(&root, &state, "ns", "c1").unwrap();
        b.create(br#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(b.path, state.join("ns/c1"));
        assert!(b.rootfs().is_dir());
        assert_eq!(
            std::fs::read_link(b.path.join("work")).unwrap(),
            root.join("ns/c1")
        );
        assert_eq!(
            b.read(CONFIG).unwrap().unwrap(),
            r#"{"ociVersion":"1.0.2"}"#
        );
        use std::os::unix::fs::FileTypeExt;
        assert!(std::fs::metadata(b.file(LOG))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(b.read(ADDRESS).unwrap(), None);
        // A stale bundle is replaced, not an error.
        b.write(ADDRESS, "unix:///x").unwrap();
        b.create(b"{}").unwrap();
        assert_eq!(b.read(ADDRESS).unwrap(), None);
        b.delete().unwrap();
        assert!(!b.path.exists() && !root.join("ns/c1").exists());
        b.delete().unwrap();
    }

    #[test]
    fn ids_that_leave_their_directory_are_refused() {
        let p = Path::new("/tmp");
        for bad in ["", ".", "..", "a/b"] {
            assert!(Bundle::at(p, p, "ns", bad).is_err(), "{bad:?}");
            assert!(Bundle::at(p, p, bad, "id").is_err(), "{bad:?}");
        }
    }
}
