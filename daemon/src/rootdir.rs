//! berthd's own hold on its directories: the root private to root (0700: it holds every
//! namespace's layers, image names and in-flight ingests), the state traversable but not
//! listable (0711: runtimes reach bundles through it), both tightened at start if an older
//! daemon or an admin left them open, and the root locked so that a second daemon on the same
//! root refuses to start instead of serving with broken stores.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The lock file in the root; it holds the pid of the daemon that owns the root.
pub const LOCK_FILE: &str = "berthd.lock";

#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "root {root} is in use by another berthd ({owner}); every daemon needs a root of its own"
    )]
    InUse { root: PathBuf, owner: String },
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> RootError {
    let path = path.to_owned();
    move |source| RootError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dir` with `mode`, or narrows an existing one's permissions to at most `mode`.
fn ensure_dir(dir: &Path, mode: u32) -> Result<(), RootError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io("create", dir))?;
    let meta = std::fs::metadata(dir).map_err(io("stat", dir))?;
    let current = meta.permissions().mode() & 0o7777;
    let narrowed = current & mode;
    if narrowed != current {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(narrowed))
            .map_err(io("chmod", dir))?;
        tracing::warn!(dir = %dir.display(), from = format!("{current:o}"), to = format!("{narrowed:o}"), "tightened permissions");
    }
    Ok(())
}

/// Holds the root for as long as it lives (the kernel releases the flock however berthd exits).
#[derive(Debug)]
pub struct RootLock {
    _lock: nix::fcntl::Flock<File>,
}

/// Prepares root (0700) and state (0711) and locks the root.
pub fn claim(root: &Path, state: &Path) -> Result<RootLock, RootError> {
    ensure_dir(root, 0o700)?;
    ensure_dir(state, 0o711)?;
    let path = root.join(LOCK_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io("open", &path))?;
    let mut lock = match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
    {
        Ok(l) => l,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let owner = match pid.trim() {
                "" => "pid unknown".to_owned(),
                p => format!("pid {p}"),
            };
            return Err(RootError::InUse {
                root: root.to_owned(),
                owner,
            });
        }
        Err((_, e)) => return Err(io("lock", &path)(std::io::Error::from(e))),
    };
    lock.set_len(0).map_err(io("truncate", &path))?;
    lock.rewind().map_err(io("rewind", &path))?;
    writeln!(lock, "{}", std::process::id()).map_err(io("write", &path))?;
    Ok(RootLock { _lock: lock })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn directories_are_made_private_and_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("r"), dir.path().join("s"));
        let lock = claim(&root, &state).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&state), 0o711);
        drop(lock);
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
        let _lock = claim(&root, &state).unwrap();
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&state), 0o711);
    }

    #[test]
    fn a_second_claim_on_a_root_names_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (root, state) = (dir.path().join("r"), dir.path().join("s"));
        let _first = claim(&root, &state).unwrap();
        // flock locks belong to the open file description: a second open in this process
        // conflicts just as another process would.
        let err = claim(&root, &state).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
    }
}
