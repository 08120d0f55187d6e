//! [`Stats`] → containerd's metrics messages, the payload of a shim's Stats reply.
//!
//! containerd (and `ctr task metrics`, kubelet through CRI) decode the `Any` by its type URL:
//! [`V1_TYPE_URL`] on cgroup v1 and hybrid hosts, [`V2_TYPE_URL`] on v2. The field mapping follows
//! what containerd's own cgroups library reports, so numbers agree with a runc-based shim: e.g.
//! v1 `swap` is memory+swap, v2 "no limit" is `u64::MAX`, v1 "no pids limit" is 0.

use prost::Message;

use crate::proto::{v1, v2};
use crate::stats::{BlkioEntry, MemoryEntry, Stats};

/// Type URL of [`crate::proto::v1::Metrics`], as containerd's shims set it.
pub const V1_TYPE_URL: &str = "io.containerd.cgroups.v1.Metrics";
/// Type URL of [`crate::proto::v2::Metrics`].
pub const V2_TYPE_URL: &str = "io.containerd.cgroups.v2.Metrics";

/// The encoded metrics message for `stats`, with its type URL.
pub fn encode(stats: &Stats, is_v2: bool) -> (String, Vec<u8>) {
    if is_v2 {
        (V2_TYPE_URL.to_string(), to_v2(stats).encode_to_vec())
    } else {
        (V1_TYPE_URL.to_string(), to_v1(stats).encode_to_vec())
    }
}

/// containerd's v1 message.
pub fn to_v1(s: &Stats) -> v1::Metrics {
    let entry = |e: &MemoryEntry| v1::MemoryEntry {
        limit: e.limit,
        usage: e.usage,
        max: e.max_usage,
        failcnt: e.failcnt,
    };
    let blkio = |entries: &[BlkioEntry]| {
        entries
            .iter()
            .map(|e| v1::BlkIoEntry {
                op: e.op.clone(),
                device: String::new(),
                major: e.major,
                minor: e.minor,
                value: e.value,
            })
            .collect::<Vec<_>>()
    };
    v1::Metrics {
        hugetlb: s
            .hugetlb
            .iter()
            .map(|h| v1::HugetlbStat {
                usage: h.usage,
                max: h.max_usage,
                failcnt: h.failcnt,
                pagesize: h.page_size.clone(),
            })
            .collect(),
        pids: s.pids.as_ref().map(|p| v1::PidsStat {
            current: p.current,
            limit: p.limit.unwrap_or(0),
        }),
        cpu: s.cpu.as_ref().map(|c| v1::CpuStat {
            usage: Some(v1::CpuUsage {
                total: c.usage_ns,
                kernel: c.system_ns,
                user: c.user_ns,
                per_cpu: c.per_cpu_ns.clone(),
            }),
            throttling: Some(v1::Throttle {
                periods: c.periods,
                throttled_periods: c.throttled_periods,
                throttled_time: c.throttled_ns,
            }),
        }),
        memory: s.memory.as_ref().map(|m| {
            let g = |k: &str| m.stat.get(k).copied().unwrap_or(0);
            v1::MemoryStat {
                cache: g("cache"),
                rss: g("rss"),
                rss_huge: g("rss_huge"),
                mapped_file: g("mapped_file"),
                dirty: g("dirty"),
                writeback: g("writeback"),
                pg_pg_in: g("pgpgin"),
                pg_pg_out: g("pgpgout"),
                pg_fault: g("pgfault"),
                pg_maj_fault: g("pgmajfault"),
                inactive_anon: g("inactive_anon"),
                active_anon: g("active_anon"),
                inactive_file: g("inactive_file"),
                active_file: g("active_file"),
                unevictable: g("unevictable"),
                hierarchical_memory_limit: g("hierarchical_memory_limit"),
                hierarchical_swap_limit: g("hierarchical_memsw_limit"),
                total_cache: g("total_cache"),
                total_rss: g("total_rss"),
                total_rss_huge: g("total_rss_huge"),
                total_mapped_file: g("total_mapped_file"),
                total_dirty: g("total_dirty"),
                total_writeback: g("total_writeback"),
                total_pg_pg_in: g("total_pgpgin"),
                total_pg_pg_out: g("total_pgpgout"),
                total_pg_fault: g("total_pgfault"),
                total_pg_maj_fault: g("total_pgmajfault"),
                total_inactive_anon: g("total_inactive_anon"),
                total_active_anon: g("total_active_anon"),
                total_inactive_file: g("total_inactive_file"),
                total_active_file: g("total_active_file"),
                total_unevictable: g("total_unevictable"),
                usage: Some(entry(&m.usage)),
                swap: m.swap.as_ref().map(entry),
                kernel: m.kernel.as_ref().map(entry),
                kernel_tcp: m.kernel_tcp.as_ref().map(entry),
            }
        }),
        blkio: s.blkio.as_ref().map(|b| v1::BlkIoStat {
            io_service_bytes_recursive: blkio(&b.io_service_bytes_recursive),
            io_serviced_recursive: blkio(&b.io_serviced_recursive),
            io_queued_recursive: blkio(&b.io_queued_recursive),
            io_service_time_recursive: blkio(&b.io_service_time_recursive),
            io_wait_time_recursive: blkio(&b.io_wait_time_recursive),
            io_merged_recursive: blkio(&b.io_merged_recursive),
            io_time_recursive: blkio(&b.io_time_recursive),
            sectors_recursive: blkio(&b.sectors_recursive),
        }),
        rdma: None,
        network: Vec::new(),
        cgroup_stats: None,
        memory_oom_control: s
            .memory
            .as_ref()
            .and_then(|m| m.oom_control.as_ref())
            .map(|o| v1::MemoryOomControl {
                oom_kill_disable: o.oom_kill_disable,
                under_oom: o.under_oom,
                oom_kill: o.oom_kill,
            }),
    }
}

/// containerd's v2 message.
pub fn to_v2(s: &Stats) -> v2::Metrics {
    let us = |ns: u64| ns / 1000;
    v2::Metrics {
        pids: s.pids.as_ref().map(|p| v2::PidsStat {
            current: p.current,
            limit: p.limit.unwrap_or(u64::MAX),
        }),
        cpu: s.cpu.as_ref().map(|c| v2::CpuStat {
            usage_usec: us(c.usage_ns),
            user_usec: us(c.user_ns),
            system_usec: us(c.system_ns),
            nr_periods: c.periods,
            nr_throttled: c.throttled_periods,
            throttled_usec: us(c.throttled_ns),
            psi: None,
            nr_bursts: c.bursts,
            burst_usec: us(c.burst_ns),
        }),
        memory: s.memory.as_ref().map(|m| {
            let g = |k: &str| m.stat.get(k).copied().unwrap_or(0);
            #[allow(deprecated)] // workingset_refault/activate: filled for kernels before 5.9.
            v2::MemoryStat {
                anon: g("anon"),
                file: g("file"),
                kernel_stack: g("kernel_stack"),
                slab: g("slab"),
                sock: g("sock"),
                shmem: g("shmem"),
                file_mapped: g("file_mapped"),
                file_dirty: g("file_dirty"),
                file_writeback: g("file_writeback"),
                anon_thp: g("anon_thp"),
                inactive_anon: g("inactive_anon"),
                active_anon: g("active_anon"),
                inactive_file: g("inactive_file"),
                active_file: g("active_file"),
                unevictable: g("unevictable"),
                slab_reclaimable: g("slab_reclaimable"),
                slab_unreclaimable: g("slab_unreclaimable"),
                pgfault: g("pgfault"),
                pgmajfault: g("pgmajfault"),
                workingset_refault: g("workingset_refault"),
                workingset_activate: g("workingset_activate"),
                workingset_nodereclaim: g("workingset_nodereclaim"),
                pgrefill: g("pgrefill"),
                pgscan: g("pgscan"),
                pgsteal: g("pgsteal"),
                pgactivate: g("pgactivate"),
                pgdeactivate: g("pgdeactivate"),
                pglazyfree: g("pglazyfree"),
                pglazyfreed: g("pglazyfreed"),
                thp_fault_alloc: g("thp_fault_alloc"),
                thp_collapse_alloc: g("thp_collapse_alloc"),
                usage: m.usage.usage,
                usage_limit: m.usage.limit,
                swap_usage: m.swap.as_ref().map_or(0, |s| s.usage),
                swap_limit: m.swap.as_ref().map_or(0, |s| s.limit),
                max_usage: m.usage.max_usage,
                swap_max_usage: m.swap.as_ref().map_or(0, |s| s.max_usage),
                psi: None,
                workingset_refault_anon: g("workingset_refault_anon"),
                workingset_refault_file: g("workingset_refault_file"),
                workingset_activate_anon: g("workingset_activate_anon"),
                workingset_activate_file: g("workingset_activate_file"),
            }
        }),
        rdma: None,
        io: Some(v2::IoStat {
            usage: s
                .io
                .iter()
                .map(|d| v2::IoEntry {
                    major: d.major,
                    minor: d.minor,
                    rbytes: d.read_bytes,
                    wbytes: d.write_bytes,
                    rios: d.read_ios,
                    wios: d.write_ios,
                })
                .collect(),
            psi: None,
        }),
        hugetlb: s
            .hugetlb
            .iter()
            .map(|h| v2::HugeTlbStat {
                current: h.usage,
                max: h.limit,
                pagesize: h.page_size.clone(),
                failcnt: h.failcnt,
            })
            .collect(),
        memory_events: s.memory.as_ref().and_then(|m| m.events.as_ref()).map(|e| {
            v2::MemoryEvents {
                low: e.low,
                high: e.high,
                max: e.max,
                oom: e.oom,
                oom_kill: e.oom_kill,
                oom_group_kill: e.oom_group_kill,
            }
        }),
        network: Vec::new(),
    }
}
