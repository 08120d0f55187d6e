//! Disk usage of a snapshot's directory, as `du` counts it.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::{SnapshotError, Usage};

/// Bytes and inodes under `dir` (not following symlinks, hardlinks counted once).
pub fn disk_usage(dir: &Path) -> Result<Usage, SnapshotError> {
    let mut seen = std::collections::HashSet::new();
    let mut usage = Usage::default();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let meta = fs::symlink_metadata(&d).map_err(SnapshotError::io("stat", &d))?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.inodes += 1;
            usage.size += (meta.blocks() * 512) as i64;
        }
        if meta.is_dir() {
            for entry in fs::read_dir(&d).map_err(SnapshotError::io("read dir", &d))? {
                let entry = entry.map_err(SnapshotError::io("read dir", &d))?;
                let p = entry.path();
                let m = entry.metadata().map_err(SnapshotError::io("stat", &p))?;
                if m.is_dir() {
                    stack.push(p);
                } else if seen.insert((m.dev(), m.ino())) {
                    usage.inodes += 1;
                    usage.size += (m.blocks() * 512) as i64;
                }
            }
        }
    }
    Ok(usage)
}
