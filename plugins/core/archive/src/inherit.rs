//! Giving implied directories their parents' metadata after the fact.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ArchiveError;

/// For each directory in `dirs` (relative to `target`), copies owner, mode, times and xattrs
/// (never `trusted.*` or `user.overlay.*`, which are overlay's own) from the first of `parents`
/// (nearest first) that has a directory there — what [`crate::ApplyOptions::parents`] does
/// during extraction, for layers extracted before their parents existed.
pub fn inherit_dir_metadata(
    target: &Path,
    dirs: &[PathBuf],
    parents: &[PathBuf],
) -> Result<(), ArchiveError> {
    for rel in dirs {
        let dst = target.join(rel);
        for p in parents {
            let src = p.join(rel);
            let Ok(meta) = std::fs::symlink_metadata(&src) else {
                continue;
            };
            if !meta.is_dir() {
                break; // replaced by a non-directory below: keep the defaults
            }
            let io = |e: std::io::Error| ArchiveError::io(&dst, "inheriting directory metadata", e);
            nix::unistd::chown(
                &dst,
                Some(nix::unistd::Uid::from_raw(meta.uid())),
                Some(nix::unistd::Gid::from_raw(meta.gid())),
            )
            .map_err(|e| io(e.into()))?;
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
                .map_err(io)?;
            if let Ok(names) = xattr::list(&src) {
                for name in names {
                    let n = name.to_string_lossy();
                    if n.starts_with("trusted.") || n.starts_with("user.overlay.") {
                        continue;
                    }
                    if let Ok(Some(v)) = xattr::get(&src, &name) {
                        xattr::set(&dst, &name, &v).map_err(io)?;
                    }
                }
            }
            let at = nix::sys::time::TimeSpec::new(meta.atime(), meta.atime_nsec());
            let mt = nix::sys::time::TimeSpec::new(meta.mtime(), meta.mtime_nsec());
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                &dst,
                &at,
                &mt,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| io(e.into()))?;
            break;
        }
    }
    Ok(())
}
