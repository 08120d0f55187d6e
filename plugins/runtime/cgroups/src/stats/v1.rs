//! Statistics from cgroup v1 controllers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{
    hugepage_sizes, BlkioEntry, BlkioStats, CpuStats, HugetlbStats, IoDeviceStats, MemoryEntry,
    MemoryStats, OomControl, PidsStats, Stats,
};
use crate::error::Result;
use crate::fs;

pub(crate) fn read(dirs: &BTreeMap<String, PathBuf>) -> Result<Stats> {
    let dir = |c: &str| dirs.get(c).map(PathBuf::as_path);
    let blkio = dir("blkio").map(blkio).transpose()?;
    Ok(Stats {
        pids: dir("pids").map(pids).transpose()?.flatten(),
        cpu: cpu(dir("cpu"), dir("cpuacct"))?,
        memory: dir("memory").map(memory).transpose()?.flatten(),
        io: blkio.as_ref().map(io_summary).unwrap_or_default(),
        blkio,
        hugetlb: dir("hugetlb").map(hugetlb).transpose()?.unwrap_or_default(),
    })
}

fn pids(dir: &Path) -> Result<Option<PidsStats>> {
    let Some(current) = fs::read_u64_opt(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    let limit = fs::read_u64_opt(&dir.join("pids.max"))?.filter(|l| *l != u64::MAX);
    Ok(Some(PidsStats { current, limit }))
}

/// `cpuacct.stat` counts in USER_HZ ticks; everything else here is nanoseconds.
fn ticks_to_ns(ticks: u64) -> u64 {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(100);
    ticks.saturating_mul(1_000_000_000 / hz)
}

fn cpu(cpu: Option<&Path>, acct: Option<&Path>) -> Result<Option<CpuStats>> {
    if cpu.is_none() && acct.is_none() {
        return Ok(None);
    }
    let mut s = CpuStats::default();
    if let Some(acct) = acct {
        s.usage_ns = fs::read_u64_opt(&acct.join("cpuacct.usage"))?.unwrap_or(0);
        if let Some(per_cpu) = fs::read_opt(&acct.join("cpuacct.usage_percpu"))? {
            s.per_cpu_ns = per_cpu
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        let stat = fs::read_flat_keyed_opt(&acct.join("cpuacct.stat"))?;
        s.user_ns = ticks_to_ns(stat.get("user").copied().unwrap_or(0));
        s.system_ns = ticks_to_ns(stat.get("system").copied().unwrap_or(0));
    }
    if let Some(cpu) = cpu {
        let stat = fs::read_flat_keyed_opt(&cpu.join("cpu.stat"))?;
        let get = |k: &str| stat.get(k).copied().unwrap_or(0);
        s.periods = get("nr_periods");
        s.throttled_periods = get("nr_throttled");
        s.throttled_ns = get("throttled_time");
        s.bursts = get("nr_bursts");
        s.burst_ns = get("burst_time");
    }
    Ok(Some(s))
}

/// `<prefix>.usage_in_bytes`, `.limit_in_bytes`, `.max_usage_in_bytes`, `.failcnt`; `None`
/// if the usage file is missing (swap accounting off, kmem gone).
fn entry(dir: &Path, prefix: &str) -> Result<Option<MemoryEntry>> {
    let read = |name: &str| fs::read_u64_opt(&dir.join(format!("{prefix}.{name}")));
    let Some(usage) = read("usage_in_bytes")? else {
        return Ok(None);
    };
    Ok(Some(MemoryEntry {
        usage,
        limit: read("limit_in_bytes")?.unwrap_or(u64::MAX),
        max_usage: read("max_usage_in_bytes")?.unwrap_or(0),
        failcnt: read("failcnt")?.unwrap_or(0),
    }))
}

fn memory(dir: &Path) -> Result<Option<MemoryStats>> {
    let Some(usage) = entry(dir, "memory")? else {
        return Ok(None);
    };
    let oom = fs::read_opt(&dir.join("memory.oom_control"))?.map(|t| {
        let m = fs::parse_flat_keyed(&t);
        let get = |k: &str| m.get(k).copied().unwrap_or(0);
        OomControl {
            oom_kill_disable: get("oom_kill_disable"),
            under_oom: get("under_oom"),
            oom_kill: get("oom_kill"),
        }
    });
    Ok(Some(MemoryStats {
        usage,
        swap: entry(dir, "memory.memsw")?,
        kernel: entry(dir, "memory.kmem")?,
        kernel_tcp: entry(dir, "memory.kmem.tcp")?,
        stat: fs::read_flat_keyed_opt(&dir.join("memory.stat"))?,
        events: None,
        oom_control: oom,
    }))
}

/// The first of `names` that exists, parsed; empty if none does.
fn blkio_file(dir: &Path, names: &[&str]) -> Result<Vec<BlkioEntry>> {
    for name in names {
        if let Some(text) = fs::read_opt(&dir.join(name))? {
            return Ok(parse_blkio(&text));
        }
    }
    Ok(Vec::new())
}

/// `8:0 Read 4096` or `8:0 4096` lines; the trailing `Total N` line is dropped.
pub(crate) fn parse_blkio(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (dev, op, value) = match fields[..] {
                [dev, op, value] => (dev, op, value),
                [dev, value] if dev.contains(':') => (dev, "", value),
                _ => return None,
            };
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

fn blkio(dir: &Path) -> Result<BlkioStats> {
    // CFQ's files (gone in Linux 5.0), then BFQ's, then the throttle policy's, which always
    // exists but counts only I/O that passed the throttle layer.
    Ok(BlkioStats {
        io_service_bytes_recursive: blkio_file(
            dir,
            &[
                "blkio.io_service_bytes_recursive",
                "blkio.bfq.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes_recursive",
            ],
        )?,
        io_serviced_recursive: blkio_file(
            dir,
            &[
                "blkio.io_serviced_recursive",
                "blkio.bfq.io_serviced_recursive",
                "blkio.throttle.io_serviced_recursive",
            ],
        )?,
        io_queued_recursive: blkio_file(dir, &["blkio.io_queued_recursive"])?,
        io_service_time_recursive: blkio_file(dir, &["blkio.io_service_time_recursive"])?,
        io_wait_time_recursive: blkio_file(dir, &["blkio.io_wait_time_recursive"])?,
        io_merged_recursive: blkio_file(dir, &["blkio.io_merged_recursive"])?,
        io_time_recursive: blkio_file(dir, &["blkio.time_recursive"])?,
        sectors_recursive: blkio_file(dir, &["blkio.sectors_recursive"])?,
    })
}

/// Per-device read/write totals from the bytes and operations files.
fn io_summary(b: &BlkioStats) -> Vec<IoDeviceStats> {
    let mut devs: BTreeMap<(u64, u64), IoDeviceStats> = BTreeMap::new();
    for (entries, bytes) in [
        (&b.io_service_bytes_recursive, true),
        (&b.io_serviced_recursive, false),
    ] {
        for e in entries {
            let d = devs.entry((e.major, e.minor)).or_insert(IoDeviceStats {
                major: e.major,
                minor: e.minor,
                ..Default::default()
            });
            match (e.op.as_str(), bytes) {
                ("Read", true) => d.read_bytes += e.value,
                ("Write", true) => d.write_bytes += e.value,
                ("Read", false) => d.read_ios += e.value,
                ("Write", false) => d.write_ios += e.value,
                _ => {}
            }
        }
    }
    devs.into_values().collect()
}

fn hugetlb(dir: &Path) -> Result<Vec<HugetlbStats>> {
    let mut out = Vec::new();
    for size in hugepage_sizes(dir, ".limit_in_bytes") {
        let read = |name: &str| fs::read_u64_opt(&dir.join(format!("hugetlb.{size}.{name}")));
        out.push(HugetlbStats {
            usage: read("usage_in_bytes")?.unwrap_or(0),
            max_usage: read("max_usage_in_bytes")?.unwrap_or(0),
            limit: read("limit_in_bytes")?.unwrap_or(u64::MAX),
            failcnt: read("failcnt")?.unwrap_or(0),
            page_size: size,
        });
    }
    Ok(out)
}
