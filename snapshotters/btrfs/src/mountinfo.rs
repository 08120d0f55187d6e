//! Which mount a directory is on, from `/proc/self/mountinfo`: the btrfs driver's mounts name the
//! filesystem's block device, which only the mount table knows.

use std::path::{Path, PathBuf};

/// One line of mountinfo, the fields the driver needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub mount_point: PathBuf,
    pub fs_type: String,
    /// The mount source: the block device for a disk filesystem (`/dev/loop0`, `/dev/vda2`).
    pub source: String,
}

/// The mount `path` is on: of the entries whose mount point contains `path` (after resolving
/// symlinks), the last of the longest, which is the one on top.
pub fn lookup(path: &Path) -> std::io::Result<MountEntry> {
    let path = std::fs::canonicalize(path)?;
    let table = std::fs::read_to_string("/proc/self/mountinfo")?;
    find(&table, &path).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no mount holds {}", path.display()),
        )
    })
}

fn find(table: &str, path: &Path) -> Option<MountEntry> {
    let mut best: Option<MountEntry> = None;
    for entry in table.lines().filter_map(parse_line) {
        if !path.starts_with(&entry.mount_point) {
            continue;
        }
        let longer = best
            .as_ref()
            .is_none_or(|b| entry.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len());
        if longer {
            best = Some(entry);
        }
    }
    best
}

/// `id parent major:minor root mount-point options [optional…] - fstype source super-options`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let (left, right) = line.split_once(" - ")?;
    let mount_point = left.split(' ').nth(4)?;
    let mut right = right.split(' ');
    let fs_type = right.next()?;
    let source = right.next()?;
    Some(MountEntry {
        mount_point: PathBuf::from(unescape(mount_point)),
        fs_type: unescape(fs_type),
        source: unescape(source),
    })
}

/// The kernel writes space, tab, newline and backslash in mountinfo as `\ooo` octal escapes.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
63 27 0:47 / /var/lib/berth\\040root rw,relatime shared:40 - btrfs /dev/loop0 rw,subvolid=5,subvol=/
64 63 0:48 / /var/lib/berth\\040root/io.containerd.snapshotter.v1.btrfs rw - btrfs /dev/loop1 rw
65 27 0:49 / /var/lib/berth rw - tmpfs tmpfs rw
";

    #[test]
    fn the_longest_mount_point_holding_the_path_wins() {
        let e = find(
            TABLE,
            Path::new("/var/lib/berth root/io.containerd.snapshotter.v1.btrfs/snapshots"),
        )
        .unwrap();
        assert_eq!(e.fs_type, "btrfs");
        assert_eq!(e.source, "/dev/loop1");
        let e = find(TABLE, Path::new("/var/lib/berth root/other")).unwrap();
        assert_eq!(e.source, "/dev/loop0");
        assert_eq!(e.mount_point, Path::new("/var/lib/berth root"));
        // A prefix of the name is not a parent directory.
        let e = find(TABLE, Path::new("/var/lib/berthx")).unwrap();
        assert_eq!(
            (e.fs_type.as_str(), e.source.as_str()),
            ("ext4", "/dev/vda")
        );
        let e = find(TABLE, Path::new("/var/lib/berth/x")).unwrap();
        assert_eq!(e.fs_type, "tmpfs");
    }

    #[test]
    fn a_later_mount_on_the_same_point_hides_the_earlier() {
        let table = format!("{TABLE}66 65 0:50 / /var/lib/berth rw - btrfs /dev/sdb1 rw\n");
        let e = find(&table, Path::new("/var/lib/berth/x")).unwrap();
        assert_eq!(
            (e.fs_type.as_str(), e.source.as_str()),
            ("btrfs", "/dev/sdb1")
        );
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }
}
