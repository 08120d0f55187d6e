//! A cgroup's counters, read into plain structs. [`crate::metrics`] turns them into containerd's
//! protobuf messages; the shim may also use them directly (e.g. for `ctr task metrics` output).
//!
//! A controller the host lacks leaves its part `None` or empty: statistics are best effort and
//! never fail a Stats call for a missing file.

pub(crate) mod v1;
pub(crate) mod v2;

use std::collections::BTreeMap;

/// Everything this crate reads from a cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub pids: Option<PidsStats>,
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    /// Bytes and operations per device (v2 `io.stat`; v1 summed from blkio's Read/Write lines).
    pub io: Vec<IoDeviceStats>,
    /// v1 only: blkio's per-operation lines, as containerd's v1 metrics carry them.
    pub blkio: Option<BlkioStats>,
    pub hugetlb: Vec<HugetlbStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    /// `None`: no limit.
    pub limit: Option<u64>,
}

/// CPU time in nanoseconds (v2 reports microseconds; they are scaled up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
    /// v1 only (`cpuacct.usage_percpu`).
    pub per_cpu_ns: Vec<u64>,
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
    pub bursts: u64,
    pub burst_ns: u64,
}

/// Usage, limit, peak and failure count of one memory counter. `limit` is `u64::MAX` when
/// there is none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEntry {
    pub usage: u64,
    pub limit: u64,
    pub max_usage: u64,
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Memory in use (v1 `memory.usage_in_bytes`, v2 `memory.current`). v2's `failcnt` is
    /// `memory.events`' `max` (times the limit was hit).
    pub usage: MemoryEntry,
    /// v1: memory **plus** swap (`memory.memsw.*`), as containerd's v1 metrics report it;
    /// v2: swap alone (`memory.swap.*`). `None` when swap accounting is off.
    pub swap: Option<MemoryEntry>,
    /// v1 kernel memory (`memory.kmem.*`), where the kernel still has it.
    pub kernel: Option<MemoryEntry>,
    /// v1 kernel TCP memory (`memory.kmem.tcp.*`).
    pub kernel_tcp: Option<MemoryEntry>,
    /// `memory.stat`, every key as the kernel names it.
    pub stat: BTreeMap<String, u64>,
    /// v2 `memory.events`.
    pub events: Option<MemoryEvents>,
    /// v1 `memory.oom_control`.
    pub oom_control: Option<OomControl>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryEvents {
    pub low: u64,
    pub high: u64,
    pub max: u64,
    pub oom: u64,
    pub oom_kill: u64,
    pub oom_group_kill: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OomControl {
    pub oom_kill_disable: u64,
    pub under_oom: u64,
    /// Processes killed by the OOM killer (Linux 4.13+; 0 before).
    pub oom_kill: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoDeviceStats {
    pub major: u64,
    pub minor: u64,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub read_ios: u64,
    pub write_ios: u64,
}

/// One `major:minor Op value` line of a v1 blkio file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard`, `Total`, or empty for single-value files.
    pub op: String,
    pub value: u64,
}

/// v1 blkio files, each the first present of CFQ's, BFQ's and the throttle policy's variant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkioStats {
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    pub io_serviced_recursive: Vec<BlkioEntry>,
    pub io_queued_recursive: Vec<BlkioEntry>,
    pub io_service_time_recursive: Vec<BlkioEntry>,
    pub io_wait_time_recursive: Vec<BlkioEntry>,
    pub io_merged_recursive: Vec<BlkioEntry>,
    pub io_time_recursive: Vec<BlkioEntry>,
    pub sectors_recursive: Vec<BlkioEntry>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HugetlbStats {
    /// As in the file names: `2MB`, `1GB`.
    pub page_size: String,
    pub usage: u64,
    pub max_usage: u64,
    /// `u64::MAX` when there is no limit.
    pub limit: u64,
    pub failcnt: u64,
}

/// Hugepage sizes with a limit file in `dir`: `hugetlb.<size>.<suffix>`, reservation files
/// (`.rsvd.`) excluded.
pub(crate) fn hugepage_sizes(dir: &std::path::Path, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut sizes: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(suffix)?;
            (!size.contains('.')).then(|| size.to_string())
        })
        .collect();
    sizes.sort();
    sizes
}
