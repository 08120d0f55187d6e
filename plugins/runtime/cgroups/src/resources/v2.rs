//! OCI resources on cgroup v2: one directory, files named by controller.
//!
//! `devices` has no v2 file either: the rules become an eBPF program attached to the cgroup
//! (`crate::devices`).
//!
//! Not enforced on v2, as with runc's cgroupfs driver:
//! - `memory.swappiness`, `memory.disableOOMKiller`, kernel memory and `network`: no v2 file.
//!   Logged at debug.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxMemory, LinuxRdma, LinuxResources};
use tracing::debug;

use super::{
    blkio_weight_to_io_weight, device, nonzero_i64, nonzero_u64, shares_to_weight, swap_to_v2,
    Controller,
};
use crate::error::{Error, Result};
use crate::fs;

pub(crate) fn apply(dir: &Path, r: &LinuxResources) -> Result<()> {
    // On v2 a controller's files appear only where it is enabled, so "does the file exist" is the
    // controller check; `name` only feeds the error message.
    let ctrl = |name: &'static str| Controller {
        dir: Some(dir),
        name,
    };
    if let Some(cpu) = r.cpu() {
        self::cpu(ctrl("cpu"), ctrl("cpuset"), cpu)?;
    }
    if let Some(m) = r.memory() {
        memory(ctrl("memory"), m)?;
    }
    if let Some(p) = r.pids() {
        super::pids(ctrl("pids"), p)?;
    }
    if let Some(b) = r.block_io() {
        io(ctrl("io"), b)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        super::hugetlb(
            ctrl("hugetlb"),
            limits,
            |size| format!("hugetlb.{size}.max"),
            |size| format!("hugetlb.{size}.rsvd.max"),
        )?;
    }
    if let Some(rdma) = r.rdma() {
        self::rdma(ctrl("rdma"), rdma)?;
    }
    if let Some(rules) = r.devices() {
        crate::devices::apply(dir, rules)?;
    }
    if r.network().is_some() {
        debug!("cgroup v2: linux.resources.network has no v2 controller and is not applied");
    }
    if let Some(unified) = r.unified() {
        self::unified(dir, unified)?;
    }
    Ok(())
}

fn cpu(c: Controller, cpuset: Controller, cpu: &LinuxCpu) -> Result<()> {
    if let Some(shares) = nonzero_u64(cpu.shares()) {
        c.set(
            "cpu.weight",
            "linux.resources.cpu.shares",
            &shares_to_weight(shares).to_string(),
        )?;
    }
    let quota = nonzero_i64(cpu.quota());
    let period = nonzero_u64(cpu.period());
    if quota.is_some() || period.is_some() {
        // "max" is v2's "no quota"; the period is kept by the kernel when not written.
        let q = match quota {
            Some(q) if q > 0 => q.to_string(),
            Some(_) => "max".to_string(),
            None => read_current_quota(&c)?,
        };
        let value = match period {
            Some(p) => format!("{q} {p}"),
            None => q,
        };
        c.set("cpu.max", "linux.resources.cpu.quota", &value)?;
    }
    if let Some(b) = cpu.burst() {
        c.set("cpu.max.burst", "linux.resources.cpu.burst", &b.to_string())?;
    }
    if let Some(i) = cpu.idle() {
        c.set("cpu.idle", "linux.resources.cpu.idle", &i.to_string())?;
    }
    if nonzero_i64(cpu.realtime_runtime()).is_some() || nonzero_u64(cpu.realtime_period()).is_some()
    {
        return Err(Error::InvalidResource {
            setting: "linux.resources.cpu.realtimeRuntime".to_string(),
            reason: "cgroup v2 has no realtime CPU controller".to_string(),
        });
    }
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        cpuset.set("cpuset.cpus", "linux.resources.cpu.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        cpuset.set("cpuset.mems", "linux.resources.cpu.mems", mems)?;
    }
    Ok(())
}

/// The quota half of `cpu.max`, so a spec that sets only the period keeps the quota.
fn read_current_quota(c: &Controller) -> Result<String> {
    let path = c.file("cpu.max", "linux.resources.cpu.period")?;
    Ok(fs::read(&path)?
        .split_whitespace()
        .next()
        .unwrap_or("max")
        .to_string())
}

fn memory(c: Controller, m: &LinuxMemory) -> Result<()> {
    let limit = nonzero_i64(m.limit());
    let swap = nonzero_i64(m.swap());
    // Swap first: it does not depend on memory.max in v2, and runc orders it so too.
    match swap_to_v2(swap, limit)? {
        Some(Some(s)) => c.set(
            "memory.swap.max",
            "linux.resources.memory.swap",
            &s.to_string(),
        )?,
        Some(None) => c.set("memory.swap.max", "linux.resources.memory.swap", "max")?,
        None => {}
    }
    if let Some(l) = limit {
        let v = if l < 0 {
            "max".to_string()
        } else {
            l.to_string()
        };
        c.set("memory.max", "linux.resources.memory.limit", &v)?;
    }
    if let Some(r) = nonzero_i64(m.reservation()) {
        let v = if r < 0 {
            "max".to_string()
        } else {
            r.to_string()
        };
        c.set("memory.low", "linux.resources.memory.reservation", &v)?;
    }
    if m.swappiness().is_some() || m.disable_oom_killer() == Some(true) || m.kernel().is_some() {
        debug!("cgroup v2: memory swappiness, disableOOMKiller and kernel limits have no v2 file and are not applied");
    }
    Ok(())
}

fn io(c: Controller, b: &LinuxBlockIo) -> Result<()> {
    // BFQ's weight uses the same 1..1000 scale as the spec; the generic io.weight (io.cost) uses
    // 1..10000. BFQ first: it is the scheduler that honours weights on most hosts.
    let bfq = c.has("io.bfq.weight");
    let (file, convert): (&str, fn(u16) -> u64) = if bfq {
        ("io.bfq.weight", u64::from)
    } else {
        ("io.weight", blkio_weight_to_io_weight)
    };
    let setting = "linux.resources.blockIO.weight";
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        c.set(file, setting, &convert(w).to_string())?;
    }
    for wd in b.weight_device().iter().flatten() {
        let setting = "linux.resources.blockIO.weightDevice";
        if let Some(w) = wd.weight() {
            let dev = device(setting, wd.major(), wd.minor())?;
            c.set(file, setting, &format!("{dev} {}", convert(w)))?;
        }
    }
    if b.leaf_weight().is_some() {
        debug!("cgroup v2: linux.resources.blockIO.leafWeight has no v2 file and is not applied");
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "rbps",
            "linux.resources.blockIO.throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "wbps",
            "linux.resources.blockIO.throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "riops",
            "linux.resources.blockIO.throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "wiops",
            "linux.resources.blockIO.throttleWriteIOPSDevice",
        ),
    ];
    for (list, key, setting) in throttles {
        for t in list.iter().flatten() {
            let dev = device(setting, t.major(), t.minor())?;
            // The kernel merges each line into the device's existing limits.
            c.set("io.max", setting, &format!("{dev} {key}={}", t.rate()))?;
        }
    }
    Ok(())
}

/// `rdma.max`: `<device> hca_handle=<n> hca_object=<n>` (same format on v1 and v2).
pub(crate) fn rdma(c: Controller, rdma: &HashMap<String, LinuxRdma>) -> Result<()> {
    let mut devices: Vec<_> = rdma.iter().collect();
    devices.sort_by(|a, b| a.0.cmp(b.0));
    for (dev, limits) in devices {
        let mut value = dev.clone();
        if let Some(h) = limits.hca_handles() {
            value.push_str(&format!(" hca_handle={h}"));
        }
        if let Some(o) = limits.hca_objects() {
            value.push_str(&format!(" hca_object={o}"));
        }
        c.set("rdma.max", "linux.resources.rdma", &value)?;
    }
    Ok(())
}

/// `linux.resources.unified`: file name → value, written as given, in name order, after every
/// other setting so they take precedence.
fn unified(dir: &Path, unified: &HashMap<String, String>) -> Result<()> {
    let mut keys: Vec<_> = unified.iter().collect();
    keys.sort();
    for (key, value) in keys {
        let invalid = |reason: &str| Error::InvalidResource {
            setting: format!("linux.resources.unified[{key:?}]"),
            reason: reason.to_string(),
        };
        if key.is_empty() || key.contains('/') || key.starts_with('.') {
            return Err(invalid("not a file name in the cgroup directory"));
        }
        if matches!(
            key.as_str(),
            "cgroup.procs" | "cgroup.threads" | "cgroup.subtree_control" | "cgroup.kill"
        ) {
            return Err(invalid("membership files cannot be set as resources"));
        }
        let controller = key.split('.').next().unwrap_or_default();
        let path = dir.join(key);
        if !path.exists() {
            return Err(Error::Unsupported {
                setting: format!("linux.resources.unified[{key:?}]"),
                controller: controller.to_string(),
                file: path,
            });
        }
        fs::write(&path, value)?;
    }
    Ok(())
}
