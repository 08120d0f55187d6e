//! Statistics from a cgroup v2 directory.

use std::path::Path;

use super::{
    hugepage_sizes, CpuStats, HugetlbStats, IoDeviceStats, MemoryEntry, MemoryEvents, MemoryStats,
    PidsStats, Stats,
};
use crate::error::Result;
use crate::fs;

pub(crate) fn read(dir: &Path) -> Result<Stats> {
    Ok(Stats {
        pids: pids(dir)?,
        cpu: cpu(dir)?,
        memory: memory(dir)?,
        io: io(dir)?,
        blkio: None,
        hugetlb: hugetlb(dir)?,
    })
}

fn pids(dir: &Path) -> Result<Option<PidsStats>> {
    let Some(current) = fs::read_u64_opt(&dir.join("pids.current"))? else {
        return Ok(None);
    };
    let limit = fs::read_u64_opt(&dir.join("pids.max"))?.filter(|l| *l != u64::MAX);
    Ok(Some(PidsStats { current, limit }))
}

/// `cpu.stat` exists in every v2 cgroup (usage even without the cpu controller).
fn cpu(dir: &Path) -> Result<Option<CpuStats>> {
    let Some(text) = fs::read_opt(&dir.join("cpu.stat"))? else {
        return Ok(None);
    };
    let stat = fs::parse_flat_keyed(&text);
    let get = |k: &str| stat.get(k).copied().unwrap_or(0);
    let us = |k: &str| get(k).saturating_mul(1000);
    Ok(Some(CpuStats {
        usage_ns: us("usage_usec"),
        user_ns: us("user_usec"),
        system_ns: us("system_usec"),
        per_cpu_ns: Vec::new(),
        periods: get("nr_periods"),
        throttled_periods: get("nr_throttled"),
        throttled_ns: us("throttled_usec"),
        bursts: get("nr_bursts"),
        burst_ns: us("burst_usec"),
    }))
}

pub(crate) fn memory_events(dir: &Path) -> Result<Option<MemoryEvents>> {
    let Some(text) = fs::read_opt(&dir.join("memory.events"))? else {
        return Ok(None);
    };
    let m = fs::parse_flat_keyed(&text);
    let get = |k: &str| m.get(k).copied().unwrap_or(0);
    Ok(Some(MemoryEvents {
        low: get("low"),
        high: get("high"),
        max: get("max"),
        oom: get("oom"),
        oom_kill: get("oom_kill"),
        oom_group_kill: get("oom_group_kill"),
    }))
}

fn memory(dir: &Path) -> Result<Option<MemoryStats>> {
    let read = |name: &str| fs::read_u64_opt(&dir.join(name));
    let Some(usage) = read("memory.current")? else {
        return Ok(None);
    };
    let events = memory_events(dir)?;
    let swap = match read("memory.swap.current")? {
        Some(usage) => Some(MemoryEntry {
            usage,
            limit: read("memory.swap.max")?.unwrap_or(u64::MAX),
            max_usage: read("memory.swap.peak")?.unwrap_or(0),
            failcnt: fs::read_flat_keyed_opt(&dir.join("memory.swap.events"))?
                .get("max")
                .copied()
                .unwrap_or(0),
        }),
        None => None,
    };
    Ok(Some(MemoryStats {
        usage: MemoryEntry {
            usage,
            limit: read("memory.max")?.unwrap_or(u64::MAX),
            max_usage: read("memory.peak")?.unwrap_or(0),
            failcnt: events.as_ref().map_or(0, |e| e.max),
        },
        swap,
        kernel: None,
        kernel_tcp: None,
        stat: fs::read_flat_keyed_opt(&dir.join("memory.stat"))?,
        events,
        oom_control: None,
    }))
}

/// `io.stat`: `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per line.
fn io(dir: &Path) -> Result<Vec<IoDeviceStats>> {
    let Some(text) = fs::read_opt(&dir.join("io.stat"))? else {
        return Ok(Vec::new());
    };
    Ok(parse_io_stat(&text))
}

pub(crate) fn parse_io_stat(text: &str) -> Vec<IoDeviceStats> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            let mut d = IoDeviceStats {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                ..Default::default()
            };
            for kv in fields {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => d.read_bytes = v,
                    "wbytes" => d.write_bytes = v,
                    "rios" => d.read_ios = v,
                    "wios" => d.write_ios = v,
                    _ => {}
                }
            }
            Some(d)
        })
        .collect()
}

fn hugetlb(dir: &Path) -> Result<Vec<HugetlbStats>> {
    let mut out = Vec::new();
    for size in hugepage_sizes(dir, ".max") {
        let read = |name: &str| fs::read_u64_opt(&dir.join(format!("hugetlb.{size}.{name}")));
        let events = fs::read_flat_keyed_opt(&dir.join(format!("hugetlb.{size}.events")))?;
        out.push(HugetlbStats {
            usage: read("current")?.unwrap_or(0),
            max_usage: 0,
            limit: read("max")?.unwrap_or(u64::MAX),
            failcnt: events.get("max").copied().unwrap_or(0),
            page_size: size,
        });
    }
    Ok(out)
}
