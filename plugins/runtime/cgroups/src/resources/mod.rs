//! OCI `linux.resources` → cgroup files, one module per cgroup version.
//!
//! Conventions both follow:
//! - A setting the spec leaves out is not touched, so `update` with a partial spec changes only
//!   what it names. Zero memory, swap, reservation, CPU shares, quota and period also mean "not
//!   set": Go clients (containerd, kubelet) send zeros for fields they do not use, and runc treats
//!   them so too.
//! - A controller or file the host lacks is only an error when the spec asks for a value in it;
//!   the error names the file.

pub(crate) mod v1;
pub(crate) mod v2;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fs;

/// One controller's directory, or `None` if the host has no such controller.
#[derive(Clone, Copy)]
pub(crate) struct Controller<'a> {
    pub dir: Option<&'a Path>,
    pub name: &'static str,
}

impl<'a> Controller<'a> {
    /// The path of `file`, or the error that says the spec's `setting` cannot be enforced here.
    pub fn file(&self, file: &str, setting: &str) -> Result<PathBuf> {
        let unsupported = |file: PathBuf| Error::Unsupported {
            setting: setting.to_string(),
            controller: self.name.to_string(),
            file,
        };
        let dir = self.dir.ok_or_else(|| unsupported(PathBuf::from(file)))?;
        let path = dir.join(file);
        if !path.exists() {
            return Err(unsupported(path));
        }
        Ok(path)
    }

    /// Whether `file` exists (to choose between alternatives such as `blkio.weight` and
    /// `blkio.bfq.weight`).
    pub fn has(&self, file: &str) -> bool {
        self.dir.is_some_and(|d| d.join(file).exists())
    }

    /// Writes `value` to `file`, which must exist.
    pub fn set(&self, file: &str, setting: &str, value: &str) -> Result<()> {
        fs::write(&self.file(file, setting)?, value)
    }
}

/// `pids.max` (same file on v1 and v2): a limit of zero or less is no limit.
pub(crate) fn pids(c: Controller<'_>, p: &oci_spec::runtime::LinuxPids) -> Result<()> {
    let v = if p.limit() <= 0 {
        "max".to_string()
    } else {
        p.limit().to_string()
    };
    c.set("pids.max", "linux.resources.pids.limit", &v)
}

/// Hugepage limits; `limit_file` and `rsvd_file` name the files for a page size (v1:
/// `hugetlb.<size>.limit_in_bytes`, v2: `hugetlb.<size>.max`, each with a `.rsvd.` twin that
/// newer kernels have and that gets the same limit).
pub(crate) fn hugetlb(
    c: Controller<'_>,
    limits: &[oci_spec::runtime::LinuxHugepageLimit],
    limit_file: fn(&str) -> String,
    rsvd_file: fn(&str) -> String,
) -> Result<()> {
    for h in limits {
        let size = page_size(h.page_size())?;
        let setting = format!("linux.resources.hugepageLimits[{size}]");
        let limit = h.limit().to_string();
        c.set(&limit_file(size), &setting, &limit)?;
        let rsvd = rsvd_file(size);
        if c.has(&rsvd) {
            c.set(&rsvd, &setting, &limit)?;
        }
    }
    Ok(())
}

/// `Some(v)` unless `v` is zero (see the module docs).
pub(crate) fn nonzero_i64(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v != 0)
}

pub(crate) fn nonzero_u64(v: Option<u64>) -> Option<u64> {
    v.filter(|v| *v != 0)
}

/// `major:minor`, refusing negative numbers (which the kernel would read as wildcards).
pub(crate) fn device(setting: &str, major: i64, minor: i64) -> Result<String> {
    if major < 0 || minor < 0 {
        return Err(Error::InvalidResource {
            setting: setting.to_string(),
            reason: format!("device {major}:{minor} has a negative number"),
        });
    }
    Ok(format!("{major}:{minor}"))
}

/// A hugepage size used in a file name (`2MB` in `hugetlb.2MB.max`).
pub(crate) fn page_size(size: &str) -> Result<&str> {
    if size.is_empty() || size.contains('/') || size.contains('.') {
        return Err(Error::InvalidResource {
            setting: "linux.resources.hugepageLimits".to_string(),
            reason: format!("{size:?} is not a page size such as 2MB or 1GB"),
        });
    }
    Ok(size)
}

/// v1 `cpu.shares` (2..262144) → v2 `cpu.weight` (1..10000), mapping the ends of one range
/// onto the ends of the other linearly, as runc does so both agree on a given spec.
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// v1 `blkio.weight` (10..1000) → v2 `io.weight` (1..10000), linearly, as runc does.
pub(crate) fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    let w = u64::from(weight.clamp(10, 1000));
    1 + ((w - 10) * 9999) / 990
}

/// OCI's `memory.swap` is memory + swap (v1's memsw); v2's `memory.swap.max` is swap alone.
/// `None`: leave the file alone; `Some(None)`: "max".
pub(crate) fn swap_to_v2(swap: Option<i64>, limit: Option<i64>) -> Result<Option<Option<u64>>> {
    let Some(swap) = swap else {
        return Ok(None);
    };
    if swap == -1 {
        return Ok(Some(None));
    }
    let invalid = |reason: String| Error::InvalidResource {
        setting: "linux.resources.memory.swap".to_string(),
        reason,
    };
    let limit = match limit {
        Some(l) if l > 0 => l,
        _ => {
            return Err(invalid(
                "a swap limit needs a memory limit (OCI's swap is memory + swap)".to_string(),
            ))
        }
    };
    if swap < limit {
        return Err(invalid(format!(
            "memory+swap {swap} is below the memory limit {limit}"
        )));
    }
    // Checked above: swap >= limit > 0.
    Ok(Some(Some(swap.abs_diff(limit))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_match_runc() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(1), 1, "clamped, no underflow");
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
        assert_eq!(swap_to_v2(Some(300), Some(100)).unwrap(), Some(Some(200)));
        assert_eq!(swap_to_v2(Some(-1), None).unwrap(), Some(None));
        assert_eq!(swap_to_v2(None, Some(1)).unwrap(), None);
        assert!(swap_to_v2(Some(50), Some(100)).is_err());
        assert!(swap_to_v2(Some(50), None).is_err());
    }
}
