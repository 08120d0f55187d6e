//! cgroup v1 (and hybrid) against fixture trees.

use prost::Message;
use serde_json::json;

use super::{open, resources, w, writes_under, Tree};
use crate::hierarchy::OwnCgroups;
use crate::path::SpecPath;
use crate::proto::v1 as pb;
use crate::{Cgroup, Error, FreezerState, Hierarchy};

const UNLIMITED: &str = "9223372036854771712\n";

/// A hybrid layout: memory, cpuset, pids, freezer, devices, blkio and hugetlb each mounted
/// alone, cpu and cpuacct co-mounted, plus an empty unified hierarchy.
fn hierarchy(t: &Tree) -> Hierarchy {
    let mut ctrls: Vec<(String, std::path::PathBuf)> = [
        "memory", "cpuset", "pids", "freezer", "devices", "blkio", "hugetlb",
    ]
    .iter()
    .map(|c| (c.to_string(), t.path(c)))
    .collect();
    ctrls.push(("cpu".into(), t.path("cpu,cpuacct")));
    ctrls.push(("cpuacct".into(), t.path("cpu,cpuacct")));
    for (_, p) in &ctrls {
        std::fs::create_dir_all(p).unwrap();
    }
    Hierarchy::v1_at(ctrls, Some(&t.path("unified")))
}

/// The files of `berth/c1` in every controller, as a v1 kernel shows them.
fn tree_with_cgroup() -> (Tree, Hierarchy) {
    let t = Tree::new();
    let h = hierarchy(&t);
    t.file("memory/berth/c1/memory.limit_in_bytes", UNLIMITED)
        .file("memory/berth/c1/memory.memsw.limit_in_bytes", UNLIMITED)
        .file("memory/berth/c1/memory.soft_limit_in_bytes", UNLIMITED)
        .file("memory/berth/c1/memory.swappiness", "60\n")
        .file(
            "memory/berth/c1/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .file("memory/berth/c1/cgroup.procs", "")
        .file("cpu,cpuacct/berth/c1/cpu.shares", "1024\n")
        .file("cpu,cpuacct/berth/c1/cpu.cfs_quota_us", "-1\n")
        .file("cpu,cpuacct/berth/c1/cpu.cfs_period_us", "100000\n")
        .file("cpu,cpuacct/berth/c1/cgroup.procs", "")
        .file("cpuset/berth/c1/cpuset.cpus", "0-3\n")
        .file("cpuset/berth/c1/cpuset.mems", "0\n")
        .file("pids/berth/c1/pids.max", "max\n")
        .file("freezer/berth/c1/freezer.state", "THAWED\n")
        .file("devices/berth/c1/devices.allow", "")
        .file("devices/berth/c1/devices.deny", "")
        .file("blkio/berth/c1/blkio.bfq.weight", "100\n")
        .file("blkio/berth/c1/blkio.bfq.weight_device", "")
        .file("blkio/berth/c1/blkio.throttle.read_bps_device", "")
        .file("blkio/berth/c1/blkio.throttle.write_bps_device", "")
        .file("hugetlb/berth/c1/hugetlb.2MB.limit_in_bytes", UNLIMITED);
    for dir in ["pids", "cpuset", "freezer", "devices", "blkio", "hugetlb"] {
        t.file(&format!("{dir}/berth/c1/cgroup.procs"), "");
    }
    (t, h)
}

#[test]
fn create_makes_every_controller_dir_and_fills_cpuset() {
    let t = Tree::new();
    let h = hierarchy(&t);
    t.file("cpuset/cpuset.cpus", "0-3\n")
        .file("cpuset/cpuset.mems", "0\n")
        // What the kernel shows for fresh cpuset cgroups: empty values.
        .file("cpuset/berth/cpuset.cpus", "\n")
        .file("cpuset/berth/cpuset.mems", "\n")
        .file("cpuset/berth/c1/cpuset.cpus", "\n")
        .file("cpuset/berth/c1/cpuset.mems", "\n");
    crate::fs::recording::take();
    let cg = Cgroup::create(&h, "/berth/c1").unwrap();
    for c in [
        "memory",
        "cpu,cpuacct",
        "cpuset",
        "pids",
        "freezer",
        "unified",
    ] {
        assert!(t.path(&format!("{c}/berth/c1")).is_dir(), "{c}");
    }
    assert_eq!(
        writes_under(&t.path("cpuset")),
        vec![
            w("berth/cpuset.cpus", "0-3"),
            w("berth/cpuset.mems", "0"),
            w("berth/c1/cpuset.cpus", "0-3"),
            w("berth/c1/cpuset.mems", "0"),
        ]
    );
    // Co-mounted controllers share one directory, listed once.
    assert_eq!(cg.dir("cpu"), cg.dir("cpuacct"));
    assert_eq!(
        cg.dirs().len(),
        9,
        "7 single mounts + cpu,cpuacct + unified"
    );
    assert!(cg.dirs().last().unwrap().starts_with(t.path("unified")));
}

#[test]
fn relative_paths_go_below_our_own_cgroup_per_controller() {
    let t = Tree::new();
    let h = hierarchy(&t);
    let own = OwnCgroups::parse("4:memory:/user.slice\n3:cpu,cpuacct:/\n0::/user.slice/s.scope\n");
    let cg = Cgroup::create_with(&h, &SpecPath::parse("berth/c2").unwrap(), &own).unwrap();
    assert_eq!(
        cg.dir("memory"),
        Some(t.path("memory/user.slice/berth/c2").as_path())
    );
    assert_eq!(
        cg.dir("cpu"),
        Some(t.path("cpu,cpuacct/berth/c2").as_path())
    );
}

#[test]
fn apply_writes_each_resource() {
    let (t, h) = tree_with_cgroup();
    let cg = open(&h, "/berth/c1");
    crate::fs::recording::take();
    cg.apply(&resources(json!({
        "devices": [
            {"allow": false, "access": "rwm"},
            {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
            {"allow": true, "type": "c", "major": 136, "access": "rw"}
        ],
        "memory": {"limit": 104857600, "swap": 209715200, "reservation": 52428800,
                   "swappiness": 10, "disableOOMKiller": true},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "1", "mems": "0"},
        "pids": {"limit": -1},
        "blockIO": {
            "weight": 200,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 300}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 2097152}]
        },
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]
    })))
    .unwrap();
    assert_eq!(
        writes_under(&t.path("")),
        vec![
            w("cpuset/berth/c1/cpuset.cpus", "1"),
            w("cpuset/berth/c1/cpuset.mems", "0"),
            w("devices/berth/c1/devices.deny", "a *:* rwm"),
            w("devices/berth/c1/devices.allow", "c 1:3 rwm"),
            w("devices/berth/c1/devices.allow", "c 136:* rw"),
            // Lowering from unlimited: memory first, then memory+swap.
            w("memory/berth/c1/memory.limit_in_bytes", "104857600"),
            w("memory/berth/c1/memory.memsw.limit_in_bytes", "209715200"),
            w("memory/berth/c1/memory.soft_limit_in_bytes", "52428800"),
            w("memory/berth/c1/memory.swappiness", "10"),
            w("memory/berth/c1/memory.oom_control", "1"),
            w("cpu,cpuacct/berth/c1/cpu.shares", "512"),
            w("cpu,cpuacct/berth/c1/cpu.cfs_period_us", "100000"),
            w("cpu,cpuacct/berth/c1/cpu.cfs_quota_us", "50000"),
            w("pids/berth/c1/pids.max", "max"),
            // Only BFQ's weight files exist in the fixture (Linux 5.0+ without CFQ).
            w("blkio/berth/c1/blkio.bfq.weight", "200"),
            w("blkio/berth/c1/blkio.bfq.weight_device", "8:0 300"),
            w(
                "blkio/berth/c1/blkio.throttle.read_bps_device",
                "8:0 1048576"
            ),
            w(
                "blkio/berth/c1/blkio.throttle.write_bps_device",
                "8:0 2097152"
            ),
            w("hugetlb/berth/c1/hugetlb.2MB.limit_in_bytes", "4194304"),
        ]
    );

    // Raising above the current memory+swap: memory+swap must go first.
    cg.apply(&resources(
        json!({"memory": {"limit": 314572800, "swap": 419430400}}),
    ))
    .unwrap();
    assert_eq!(
        writes_under(&t.path("memory/berth/c1")),
        vec![
            w("memory.memsw.limit_in_bytes", "419430400"),
            w("memory.limit_in_bytes", "314572800"),
        ]
    );
    // Unlimited memory with no swap given: unlimited memory+swap too, written first.
    cg.apply(&resources(json!({"memory": {"limit": -1}})))
        .unwrap();
    assert_eq!(
        writes_under(&t.path("memory/berth/c1")),
        vec![
            w("memory.memsw.limit_in_bytes", "-1"),
            w("memory.limit_in_bytes", "-1"),
        ]
    );
}

#[test]
fn refusals_name_the_problem() {
    let (t, h) = tree_with_cgroup();
    let cg = open(&h, "/berth/c1");
    let err = cg
        .apply(&resources(json!({"unified": {"memory.high": "1"}})))
        .unwrap_err();
    assert!(err.to_string().contains("cgroup v1"), "{err}");
    // Swap accounting off: no memsw file.
    std::fs::remove_file(t.path("memory/berth/c1/memory.memsw.limit_in_bytes")).unwrap();
    let err = cg
        .apply(&resources(json!({"memory": {"swap": 1048576}})))
        .unwrap_err();
    assert!(
        err.to_string().contains("memory.memsw.limit_in_bytes"),
        "{err}"
    );
    // A controller the host does not mount at all.
    let err = cg
        .apply(&resources(json!({"network": {"classID": 5}})))
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("net_cls.classid"), "{err}");
    // ... but nothing is asked of it when the spec does not mention it.
    cg.apply(&resources(json!({"pids": {"limit": 5}}))).unwrap();
    assert_eq!(t.read("pids/berth/c1/pids.max"), "5");
}

#[test]
fn freezer_writes_and_reads_the_state() {
    let (t, h) = tree_with_cgroup();
    let cg = open(&h, "/berth/c1");
    // Fixture: the state file reads back what was written, i.e. FROZEN at once.
    cg.freeze().unwrap();
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    cg.thaw().unwrap();
    assert_eq!(t.read("freezer/berth/c1/freezer.state"), "THAWED");

    // A plain file reads back what was written, so the retry loop itself is proven on the real
    // host (tests/root_host.rs); here, that FREEZING is understood as "not yet".
    t.file("freezer/berth/c1/freezer.state", "FREEZING\n");
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Freezing);
}

#[test]
fn kill_all_freezes_signals_and_thaws() {
    let (t, h) = tree_with_cgroup();
    let cg = open(&h, "/berth/c1");
    crate::fs::recording::take();
    // No processes: nothing to signal, and no freeze either.
    cg.kill_all(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(writes_under(&t.path("freezer/berth/c1")), vec![]);
    // A process (one that no longer exists: the kill finds nothing): frozen, signalled, thawed.
    t.file("freezer/berth/c1/cgroup.procs", "2147483646\n");
    t.file("memory/berth/c1/cgroup.procs", "2147483646\n");
    crate::fs::recording::take();
    cg.kill_all(nix::sys::signal::Signal::SIGTERM).unwrap();
    assert_eq!(
        writes_under(&t.path("freezer/berth/c1")),
        vec![w("freezer.state", "FROZEN"), w("freezer.state", "THAWED")]
    );
}

#[test]
fn stats_and_metrics_round_trip() {
    let (t, h) = tree_with_cgroup();
    let m = |f: &str| format!("memory/berth/c1/{f}");
    let c = |f: &str| format!("cpu,cpuacct/berth/c1/{f}");
    t.file(&m("memory.usage_in_bytes"), "1048576\n")
        .file(&m("memory.max_usage_in_bytes"), "2097152\n")
        .file(&m("memory.limit_in_bytes"), "104857600\n")
        .file(&m("memory.failcnt"), "7\n")
        .file(&m("memory.memsw.usage_in_bytes"), "1052672\n")
        .file(&m("memory.memsw.failcnt"), "0\n")
        .file(
            &m("memory.stat"),
            "cache 4096\nrss 8192\nrss_huge 0\nmapped_file 1024\npgpgin 11\npgpgout 12\npgfault 13\nhierarchical_memory_limit 104857600\nhierarchical_memsw_limit 209715200\ntotal_cache 4096\ntotal_rss 8192\ntotal_pgpgin 11\n",
        )
        .file(
            &m("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .file(&c("cpuacct.usage"), "123456789\n")
        .file(&c("cpuacct.usage_percpu"), "100000000 23456789 \n")
        .file(&c("cpuacct.stat"), "user 5\nsystem 3\n")
        .file(
            &c("cpu.stat"),
            "nr_periods 20\nnr_throttled 4\nthrottled_time 999\n",
        )
        .file("pids/berth/c1/pids.current", "2\n")
        .file(
            "blkio/berth/c1/blkio.throttle.io_service_bytes_recursive",
            "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Total 12288\nTotal 12288\n",
        )
        .file(
            "blkio/berth/c1/blkio.throttle.io_serviced_recursive",
            "8:0 Read 1\n8:0 Write 2\n8:0 Total 3\nTotal 3\n",
        )
        .file("hugetlb/berth/c1/hugetlb.2MB.usage_in_bytes", "2097152\n")
        .file("hugetlb/berth/c1/hugetlb.2MB.max_usage_in_bytes", "4194304\n")
        .file("hugetlb/berth/c1/hugetlb.2MB.failcnt", "1\n")
        .file("hugetlb/berth/c1/hugetlb.2MB.rsvd.limit_in_bytes", UNLIMITED);
    let cg = open(&h, "/berth/c1");

    let s = cg.stats().unwrap();
    assert_eq!(s.pids.as_ref().unwrap().limit, None, "\"max\" is no limit");
    assert_eq!(s.io.len(), 1);
    assert_eq!((s.io[0].read_bytes, s.io[0].write_ios), (4096, 2));

    let (url, bytes) = cg.metrics().unwrap();
    assert_eq!(url, "io.containerd.cgroups.v1.Metrics");
    let mm = pb::Metrics::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        mm.pids,
        Some(pb::PidsStat {
            current: 2,
            limit: 0
        })
    );
    let cpu = mm.cpu.unwrap();
    let usage = cpu.usage.unwrap();
    assert_eq!(usage.total, 123_456_789);
    assert_eq!(usage.per_cpu, vec![100_000_000, 23_456_789]);
    // USER_HZ ticks become nanoseconds.
    let tick_ns = 1_000_000_000
        / nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as u64;
    assert_eq!((usage.user, usage.kernel), (5 * tick_ns, 3 * tick_ns));
    assert_eq!(
        cpu.throttling,
        Some(pb::Throttle {
            periods: 20,
            throttled_periods: 4,
            throttled_time: 999
        })
    );
    let mem = mm.memory.unwrap();
    assert_eq!(
        mem.usage,
        Some(pb::MemoryEntry {
            limit: 104_857_600,
            usage: 1_048_576,
            max: 2_097_152,
            failcnt: 7
        })
    );
    let swap = mem.swap.unwrap();
    assert_eq!(
        (swap.usage, swap.limit),
        (1_052_672, 9_223_372_036_854_771_712)
    );
    assert_eq!((mem.cache, mem.rss, mem.mapped_file), (4096, 8192, 1024));
    assert_eq!((mem.pg_pg_in, mem.pg_pg_out, mem.pg_fault), (11, 12, 13));
    assert_eq!(mem.hierarchical_swap_limit, 209_715_200);
    assert_eq!(
        (mem.total_cache, mem.total_rss, mem.total_pg_pg_in),
        (4096, 8192, 11)
    );
    assert_eq!(mm.memory_oom_control.unwrap().oom_kill, 2);
    let blkio = mm.blkio.unwrap();
    assert_eq!(
        blkio.io_service_bytes_recursive.len(),
        5,
        "Total line dropped"
    );
    assert_eq!(
        blkio.io_service_bytes_recursive[1],
        pb::BlkIoEntry {
            op: "Write".into(),
            device: String::new(),
            major: 8,
            minor: 0,
            value: 8192
        }
    );
    assert_eq!(
        mm.hugetlb,
        vec![pb::HugetlbStat {
            usage: 2_097_152,
            max: 4_194_304,
            failcnt: 1,
            pagesize: "2MB".into()
        }]
    );
}

#[test]
fn v1_wire_field_numbers() {
    let m = pb::Metrics {
        memory_oom_control: Some(pb::MemoryOomControl {
            oom_kill: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    // field 9 (length-delimited) { field 3 (varint) = 1 }
    assert_eq!(m.encode_to_vec(), vec![0x4a, 0x02, 0x18, 0x01]);
    let m = pb::Metrics {
        memory: Some(pb::MemoryStat {
            kernel_tcp: Some(pb::MemoryEntry {
                failcnt: 1,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    // field 4 { field 36 { field 4 = 1 } }: tag 36 << 3 | 2 = 290 = 0xa2 0x02
    assert_eq!(
        m.encode_to_vec(),
        vec![0x22, 0x05, 0xa2, 0x02, 0x02, 0x20, 0x01]
    );
}

#[test]
fn procs_open_and_delete() {
    let (t, h) = tree_with_cgroup();
    t.file("memory/berth/c1/cgroup.procs", "12\n34\n")
        .file("pids/berth/c1/cgroup.procs", "34\n56\n");
    let cg = open(&h, "/berth/c1");
    assert_eq!(cg.procs().unwrap(), vec![12, 34, 56]);

    // Delete needs bare directories (rmdir); one controller lacks the cgroup, one has a child.
    let t = Tree::new();
    let h = hierarchy(&t);
    t.dir("memory/berth/c1/child")
        .dir("cpu,cpuacct/berth/c1")
        .dir("unified/berth/c1");
    let cg = open(&h, "/berth/c1");
    assert_eq!(cg.dirs().len(), 3, "only controllers that have the cgroup");
    cg.delete().unwrap();
    for c in ["memory", "cpu,cpuacct", "unified"] {
        assert!(!t.path(&format!("{c}/berth/c1")).exists(), "{c}");
        assert!(t.path(&format!("{c}/berth")).is_dir(), "{c}");
    }
}
