//! OCI resources on cgroup v1 (and hybrid hosts): one directory per controller.

use std::collections::BTreeMap;
use std::path::PathBuf;

use nix::errno::Errno;
use oci_spec::runtime::{
    LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxMemory, LinuxNetwork, LinuxResources,
};
use tracing::debug;

use super::{device, nonzero_i64, nonzero_u64, Controller};
use crate::error::{Error, Result};
use crate::fs;

pub(crate) fn apply(dirs: &BTreeMap<String, PathBuf>, r: &LinuxResources) -> Result<()> {
    let ctrl = |name: &'static str| Controller {
        dir: dirs.get(name).map(PathBuf::as_path),
        name,
    };
    if r.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err(Error::InvalidResource {
            setting: "linux.resources.unified".to_string(),
            reason: "it names cgroup v2 files, and this host uses cgroup v1".to_string(),
        });
    }
    if let Some(cpu) = r.cpu() {
        cpuset(ctrl("cpuset"), cpu)?;
    }
    if let Some(devices) = r.devices() {
        self::devices(ctrl("devices"), devices)?;
    }
    if let Some(m) = r.memory() {
        memory(ctrl("memory"), m)?;
    }
    if let Some(c) = r.cpu() {
        self::cpu(ctrl("cpu"), c)?;
    }
    if let Some(p) = r.pids() {
        super::pids(ctrl("pids"), p)?;
    }
    if let Some(b) = r.block_io() {
        blkio(ctrl("blkio"), b)?;
    }
    if let Some(limits) = r.hugepage_limits() {
        super::hugetlb(
            ctrl("hugetlb"),
            limits,
            |size| format!("hugetlb.{size}.limit_in_bytes"),
            |size| format!("hugetlb.{size}.rsvd.limit_in_bytes"),
        )?;
    }
    if let Some(n) = r.network() {
        network(ctrl("net_cls"), ctrl("net_prio"), n)?;
    }
    if let Some(rdma) = r.rdma() {
        super::v2::rdma(ctrl("rdma"), rdma)?;
    }
    Ok(())
}

fn cpuset(c: Controller, cpu: &LinuxCpu) -> Result<()> {
    if let Some(cpus) = cpu.cpus().as_deref().filter(|s| !s.is_empty()) {
        c.set("cpuset.cpus", "linux.resources.cpu.cpus", cpus)?;
    }
    if let Some(mems) = cpu.mems().as_deref().filter(|s| !s.is_empty()) {
        c.set("cpuset.mems", "linux.resources.cpu.mems", mems)?;
    }
    Ok(())
}

/// Writes the rules in order, as the kernel applies each on top of the last. A spec usually
/// starts with "deny all"; on `update` of a running container that means a short window in which
/// its devices are denied before the allow rules follow.
fn devices(c: Controller, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    for rule in rules {
        let typ = rule.typ().unwrap_or_default().as_str().to_string();
        let num = |n: Option<i64>| match n {
            Some(n) if n >= 0 => n.to_string(),
            _ => "*".to_string(),
        };
        let access = rule.access().as_deref().unwrap_or("rwm");
        let value = format!("{typ} {}:{} {access}", num(rule.major()), num(rule.minor()));
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        c.set(file, "linux.resources.devices", &value)?;
    }
    Ok(())
}

fn memory(c: Controller, m: &LinuxMemory) -> Result<()> {
    let limit = nonzero_i64(m.limit());
    let mut swap = nonzero_i64(m.swap());
    if limit == Some(-1) && swap.is_none() {
        // Unlimited memory with an unset swap means unlimited memory+swap too; otherwise an old
        // memsw limit would still cap the container.
        swap = Some(-1);
    }
    const LIMIT: &str = "memory.limit_in_bytes";
    const MEMSW: &str = "memory.memsw.limit_in_bytes";
    match (limit, swap) {
        (Some(l), Some(s)) => {
            if l != -1 && s != -1 && s < l {
                return Err(Error::InvalidResource {
                    setting: "linux.resources.memory.swap".to_string(),
                    reason: format!("memory+swap {s} is below the memory limit {l}"),
                });
            }
            // The kernel keeps limit <= memsw at every step: when memsw grows it must be written
            // first, when it shrinks the limit must shrink first.
            let current = fs::read_u64(&c.file(LIMIT, "linux.resources.memory.limit")?)?;
            let swap_first = s == -1 || current < s.unsigned_abs();
            let write_limit = || c.set(LIMIT, "linux.resources.memory.limit", &l.to_string());
            let write_swap = || c.set(MEMSW, "linux.resources.memory.swap", &s.to_string());
            if swap_first {
                write_swap()?;
                write_limit()?;
            } else {
                write_limit()?;
                write_swap()?;
            }
        }
        (Some(l), None) => c.set(LIMIT, "linux.resources.memory.limit", &l.to_string())?,
        (None, Some(s)) => c.set(MEMSW, "linux.resources.memory.swap", &s.to_string())?,
        (None, None) => {}
    }
    if let Some(r) = nonzero_i64(m.reservation()) {
        c.set(
            "memory.soft_limit_in_bytes",
            "linux.resources.memory.reservation",
            &r.to_string(),
        )?;
    }
    if let Some(s) = m.swappiness() {
        if s > 100 {
            return Err(Error::InvalidResource {
                setting: "linux.resources.memory.swappiness".to_string(),
                reason: format!("{s} is above 100"),
            });
        }
        c.set(
            "memory.swappiness",
            "linux.resources.memory.swappiness",
            &s.to_string(),
        )?;
    }
    if let Some(disable) = m.disable_oom_killer() {
        c.set(
            "memory.oom_control",
            "linux.resources.memory.disableOOMKiller",
            if disable { "1" } else { "0" },
        )?;
    }
    if let Some(k) = nonzero_i64(m.kernel_tcp()) {
        c.set(
            "memory.kmem.tcp.limit_in_bytes",
            "linux.resources.memory.kernelTCP",
            &k.to_string(),
        )?;
    }
    if m.kernel().is_some() {
        // Kernel memory limits are deprecated (Linux 5.4) and gone (6.1); runc ignores them too.
        debug!("linux.resources.memory.kernel is deprecated and not applied");
    }
    Ok(())
}

fn cpu(c: Controller, cpu: &LinuxCpu) -> Result<()> {
    if let Some(shares) = nonzero_u64(cpu.shares()) {
        let file = c.file("cpu.shares", "linux.resources.cpu.shares")?;
        fs::write(&file, &shares.to_string())?;
        // The kernel clamps out-of-range shares silently; say so instead of running with a
        // different weight than asked.
        let got = fs::read_u64(&file)?;
        if got != shares {
            return Err(Error::InvalidResource {
                setting: "linux.resources.cpu.shares".to_string(),
                reason: format!("the kernel set {got} instead of {shares} (allowed: 2..262144)"),
            });
        }
    }
    let period = nonzero_u64(cpu.period());
    let quota = nonzero_i64(cpu.quota());
    let mut period_pending = false;
    if let Some(p) = period {
        let file = c.file("cpu.cfs_period_us", "linux.resources.cpu.period")?;
        match fs::write(&file, &p.to_string()) {
            Ok(()) => {}
            // A shorter period with the old quota can exceed the parent's bandwidth; the kernel
            // says EINVAL. Set the quota first and retry the period after it.
            Err(e) if e.raw_os_error() == Some(Errno::EINVAL as i32) && quota.is_some() => {
                period_pending = true;
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(q) = quota {
        c.set(
            "cpu.cfs_quota_us",
            "linux.resources.cpu.quota",
            &q.to_string(),
        )?;
        if let (true, Some(p)) = (period_pending, period) {
            c.set(
                "cpu.cfs_period_us",
                "linux.resources.cpu.period",
                &p.to_string(),
            )?;
        }
    }
    if let Some(b) = cpu.burst() {
        c.set(
            "cpu.cfs_burst_us",
            "linux.resources.cpu.burst",
            &b.to_string(),
        )?;
    }
    // The realtime period bounds the runtime, so it goes first.
    if let Some(p) = nonzero_u64(cpu.realtime_period()) {
        c.set(
            "cpu.rt_period_us",
            "linux.resources.cpu.realtimePeriod",
            &p.to_string(),
        )?;
    }
    if let Some(r) = nonzero_i64(cpu.realtime_runtime()) {
        c.set(
            "cpu.rt_runtime_us",
            "linux.resources.cpu.realtimeRuntime",
            &r.to_string(),
        )?;
    }
    if let Some(i) = cpu.idle() {
        c.set("cpu.idle", "linux.resources.cpu.idle", &i.to_string())?;
    }
    Ok(())
}

fn blkio(c: Controller, b: &LinuxBlockIo) -> Result<()> {
    // CFQ's blkio.weight is gone since Linux 5.0; BFQ offers the same knob under its own name.
    let weight_files = if c.has("blkio.weight") || !c.has("blkio.bfq.weight") {
        ("blkio.weight", "blkio.weight_device")
    } else {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    };
    if let Some(w) = b.weight().filter(|w| *w != 0) {
        c.set(
            weight_files.0,
            "linux.resources.blockIO.weight",
            &w.to_string(),
        )?;
    }
    if let Some(w) = b.leaf_weight().filter(|w| *w != 0) {
        c.set(
            "blkio.leaf_weight",
            "linux.resources.blockIO.leafWeight",
            &w.to_string(),
        )?;
    }
    for wd in b.weight_device().iter().flatten() {
        let setting = "linux.resources.blockIO.weightDevice";
        let dev = device(setting, wd.major(), wd.minor())?;
        if let Some(w) = wd.weight() {
            c.set(weight_files.1, setting, &format!("{dev} {w}"))?;
        }
        if let Some(w) = wd.leaf_weight() {
            c.set("blkio.leaf_weight_device", setting, &format!("{dev} {w}"))?;
        }
    }
    let throttles = [
        (
            b.throttle_read_bps_device(),
            "blkio.throttle.read_bps_device",
            "linux.resources.blockIO.throttleReadBpsDevice",
        ),
        (
            b.throttle_write_bps_device(),
            "blkio.throttle.write_bps_device",
            "linux.resources.blockIO.throttleWriteBpsDevice",
        ),
        (
            b.throttle_read_iops_device(),
            "blkio.throttle.read_iops_device",
            "linux.resources.blockIO.throttleReadIOPSDevice",
        ),
        (
            b.throttle_write_iops_device(),
            "blkio.throttle.write_iops_device",
            "linux.resources.blockIO.throttleWriteIOPSDevice",
        ),
    ];
    for (list, file, setting) in throttles {
        for t in list.iter().flatten() {
            let dev = device(setting, t.major(), t.minor())?;
            c.set(file, setting, &format!("{dev} {}", t.rate()))?;
        }
    }
    Ok(())
}

fn network(cls: Controller, prio: Controller, n: &LinuxNetwork) -> Result<()> {
    if let Some(id) = n.class_id() {
        cls.set(
            "net_cls.classid",
            "linux.resources.network.classID",
            &id.to_string(),
        )?;
    }
    for p in n.priorities().iter().flatten() {
        prio.set(
            "net_prio.ifpriomap",
            "linux.resources.network.priorities",
            &format!("{} {}", p.name(), p.priority()),
        )?;
    }
    Ok(())
}
