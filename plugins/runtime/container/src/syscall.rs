//! Every system call the root filesystem set-up makes goes through [`Syscall`], so the order of
//! mounts, device nodes and `pivot_root` is unit-tested on any machine with [`Recorder`] (which
//! logs the privileged calls and performs only the harmless ones inside a scratch directory), and
//! proven for real by the integration tests as root with [`Linux`].

use std::cell::RefCell;
use std::os::unix::fs::{symlink, DirBuilderExt};
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::stat::{Mode, SFlag};

use crate::error::{at, Error, Result};

/// The calls the root filesystem set-up needs.
pub trait Syscall {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()>;
    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()>;
    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()>;
    fn chdir(&self, path: &Path) -> Result<()>;
    /// `mkdir -p`, `mode` for the directories it creates.
    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()>;
    /// Creates an empty file (a bind-mount target); an existing one is fine.
    fn create_file(&self, path: &Path) -> Result<()>;
    /// Creates a symbolic link; an existing entry at `link` is left alone.
    fn symlink(&self, target: &Path, link: &Path) -> Result<()>;
    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()>;
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()>;
    fn sethostname(&self, name: &str) -> Result<()>;
    fn setdomainname(&self, name: &str) -> Result<()>;
    fn write_file(&self, path: &Path, contents: &str) -> Result<()>;
}

/// The real thing.
#[derive(Debug, Default, Clone, Copy)]
pub struct Linux;

/// An io error's errno, for the nix-typed errors of this crate (EIO when it has none).
pub(crate) fn io_to_nix(e: &std::io::Error) -> nix::Error {
    nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

impl Syscall for Linux {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        nix::mount::mount(source, target, fstype, flags, data).map_err(at("mount", target))
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        nix::mount::umount2(target, flags).map_err(at("unmount", target))
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        nix::unistd::pivot_root(new_root, put_old).map_err(at("pivot_root to", new_root))
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        nix::unistd::chdir(path).map_err(at("chdir to", path))
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(mode)
            .create(path)
            .map_err(|e| Error::Path {
                action: "create directory",
                path: path.to_owned(),
                source: io_to_nix(&e),
            })
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.mkdir_all(parent, 0o755)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map(drop)
            .map_err(|e| Error::Path {
                action: "create file",
                path: path.to_owned(),
                source: io_to_nix(&e),
            })
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        match symlink(target, link) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::Path {
                action: "create symlink",
                path: link.to_owned(),
                source: io_to_nix(&e),
            }),
            _ => Ok(()),
        }
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        nix::sys::stat::mknod(path, kind, perm, dev).map_err(at("mknod", path))
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        nix::unistd::chown(
            path,
            uid.map(nix::unistd::Uid::from_raw),
            gid.map(nix::unistd::Gid::from_raw),
        )
        .map_err(at("chown", path))
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        nix::unistd::sethostname(name).map_err(at("set hostname", name))
    }

    fn setdomainname(&self, name: &str) -> Result<()> {
        // SAFETY: the pointer and length describe `name`'s bytes, which outlive the call; the
        // kernel copies them.
        let rc = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
        nix::errno::Errno::result(rc)
            .map(drop)
            .map_err(at("set domain name", name))
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        std::fs::write(path, contents).map_err(|e| Error::Path {
            action: "write",
            path: path.to_owned(),
            source: io_to_nix(&e),
        })
    }
}

/// Records the calls made, in order, as readable lines; directories, files and symlinks are
/// really created (under the scratch root the test gave), so path resolution sees them.
#[derive(Debug, Default)]
pub struct Recorder {
    calls: RefCell<Vec<String>>,
}

impl Recorder {
    pub fn new() -> Self {
        Recorder::default()
    }

    /// The calls so far, e.g. `mount proc -> /r/proc (proc) NOSUID|NODEV|NOEXEC`.
    pub fn calls(&self) -> Vec<String> {
        self.calls.borrow().clone()
    }

    fn log(&self, line: String) {
        self.calls.borrow_mut().push(line);
    }
}

/// `MsFlags(MS_BIND | MS_REC)` → `MS_BIND | MS_REC`.
fn bits(debug: String) -> String {
    let inner = debug
        .split_once('(')
        .map_or(debug.as_str(), |(_, rest)| rest.trim_end_matches(')'));
    inner.replace('"', "")
}

fn show(p: Option<&Path>) -> String {
    p.map_or_else(|| "none".to_owned(), |p| p.display().to_string())
}

impl Syscall for Recorder {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> Result<()> {
        let mut line = format!(
            "mount {} -> {} ({}) {}",
            show(source),
            target.display(),
            fstype.unwrap_or("-"),
            bits(format!("{flags:?}"))
        );
        if let Some(d) = data.filter(|d| !d.is_empty()) {
            line.push_str(&format!(" [{d}]"));
        }
        self.log(line);
        Ok(())
    }

    fn umount2(&self, target: &Path, flags: MntFlags) -> Result<()> {
        self.log(format!(
            "umount {} {}",
            target.display(),
            bits(format!("{flags:?}"))
        ));
        Ok(())
    }

    fn pivot_root(&self, new_root: &Path, put_old: &Path) -> Result<()> {
        self.log(format!(
            "pivot_root {} {}",
            new_root.display(),
            put_old.display()
        ));
        Ok(())
    }

    fn chdir(&self, path: &Path) -> Result<()> {
        self.log(format!("chdir {}", path.display()));
        Ok(())
    }

    fn mkdir_all(&self, path: &Path, mode: u32) -> Result<()> {
        Linux.mkdir_all(path, mode)
    }

    fn create_file(&self, path: &Path) -> Result<()> {
        Linux.create_file(path)
    }

    fn symlink(&self, target: &Path, link: &Path) -> Result<()> {
        self.log(format!(
            "symlink {} -> {}",
            link.display(),
            target.display()
        ));
        Linux.symlink(target, link)
    }

    fn mknod(&self, path: &Path, kind: SFlag, perm: Mode, dev: u64) -> Result<()> {
        self.log(format!(
            "mknod {} {} {:o} {}:{}",
            path.display(),
            bits(format!("{kind:?}")),
            perm.bits(),
            libc::major(dev),
            libc::minor(dev)
        ));
        Ok(())
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> Result<()> {
        self.log(format!("chown {} {uid:?} {gid:?}", path.display()));
        Ok(())
    }

    fn sethostname(&self, name: &str) -> Result<()> {
        self.log(format!("sethostname {name}"));
        Ok(())
    }

    fn setdomainname(&self, name: &str) -> Result<()> {
        self.log(format!("setdomainname {name}"));
        Ok(())
    }

    fn write_file(&self, path: &Path, contents: &str) -> Result<()> {
        self.log(format!("write {} {contents}", path.display()));
        Ok(())
    }
}

/// Resolves `unsafe_path` inside `root` as if `root` were `/`: symbolic links are followed but can
/// never lead out of `root` (an absolute link restarts at `root`, `..` stops at it), as runc's
/// `securejoin` does. Components that do not exist yet are kept as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    use std::path::Component;
    let mut pending: Vec<std::ffi::OsString> = unsafe_path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(Error::Path {
                        action: "resolve",
                        path: unsafe_path.to_owned(),
                        source: nix::Error::ELOOP,
                    });
                }
                let target = std::fs::read_link(&candidate).map_err(|e| Error::Path {
                    action: "read symlink",
                    path: candidate.clone(),
                    source: io_to_nix(&e),
                })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(n) => pending.push(n.to_owned()),
                        Component::ParentDir => pending.push("..".into()),
                        _ => {}
                    }
                }
            }
            _ => resolved.push(part),
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_keeps_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("usr/lib")).unwrap();
        symlink("/etc/../../..", root.join("escape")).unwrap();
        symlink("../usr/lib", root.join("usr/lnk")).unwrap();
        symlink("/usr", root.join("abs")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/escape/passwd")).unwrap(),
            root.join("passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/usr/lnk/x")).unwrap(),
            root.join("usr/lib/x")
        );
        assert_eq!(
            secure_join(root, Path::new("abs/lib")).unwrap(),
            root.join("usr/lib")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../etc")).unwrap(),
            root.join("etc")
        );
        assert!(secure_join(root, Path::new("/loop")).is_err());
    }
}
