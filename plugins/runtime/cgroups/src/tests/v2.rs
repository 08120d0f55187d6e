//! cgroup v2 against fixture trees.

use std::os::fd::AsFd;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use prost::Message;
use serde_json::json;

use super::{open, resources, w, writes_under, Tree};
use crate::hierarchy::OwnCgroups;
use crate::path::SpecPath;
use crate::proto::v2 as pb;
use crate::{Cgroup, Error, FreezerState, Hierarchy};

/// A v2 root offering most controllers, with `berth/c1` made as the kernel would show it.
fn tree_with_cgroup() -> Tree {
    let t = Tree::new();
    t.file("cgroup.controllers", "cpuset cpu io memory hugetlb pids\n")
        .file("cgroup.subtree_control", "")
        .file("berth/c1/cgroup.procs", "")
        .file("berth/c1/cgroup.freeze", "0\n")
        .file("berth/c1/cgroup.events", "populated 0\nfrozen 0\n")
        .file("berth/c1/memory.max", "max\n")
        .file("berth/c1/memory.swap.max", "max\n")
        .file("berth/c1/memory.low", "0\n")
        .file("berth/c1/cpu.weight", "100\n")
        .file("berth/c1/cpu.max", "max 100000\n")
        .file("berth/c1/cpu.max.burst", "0\n")
        .file("berth/c1/cpuset.cpus", "\n")
        .file("berth/c1/cpuset.mems", "\n")
        .file("berth/c1/pids.max", "max\n")
        .file("berth/c1/io.weight", "default 100\n")
        .file("berth/c1/io.max", "")
        .file("berth/c1/hugetlb.2MB.max", "max\n")
        .file("berth/c1/memory.high", "max\n");
    t
}

#[test]
fn create_enables_controllers_from_the_root_down() {
    let t = Tree::new();
    t.file(
        "cgroup.controllers",
        "cpuset cpu io memory hugetlb pids rdma misc\n",
    )
    .file("cgroup.subtree_control", "")
    // An existing level offering fewer controllers, one already enabled.
    .file("berth/cgroup.controllers", "cpu memory pids\n")
    .file("berth/cgroup.subtree_control", "memory\n");
    let h = Hierarchy::v2_at(&t.path(""));
    crate::fs::recording::take();
    let cg = Cgroup::create(&h, "/berth/default/c1").unwrap();
    assert!(t.path("berth/default/c1").is_dir());
    assert_eq!(cg.dir("memory"), Some(t.path("berth/default/c1").as_path()));
    assert_eq!(
        writes_under(&t.path("")),
        vec![
            // "misc" is not one we enable; the leaf gets no subtree_control write (it will hold
            // processes), nor does berth/default, which has no cgroup.controllers in the fixture.
            w(
                "cgroup.subtree_control",
                "+cpuset +cpu +io +memory +hugetlb +pids +rdma"
            ),
            w("berth/cgroup.subtree_control", "+cpu +pids"),
        ]
    );
}

#[test]
fn relative_paths_go_below_the_parent_of_our_own_cgroup() {
    let t = Tree::new();
    let h = Hierarchy::v2_at(&t.path(""));
    let own = OwnCgroups::parse("0::/user.slice/session-1.scope\n");
    let spec = SpecPath::parse("berth/c2").unwrap();
    let cg = Cgroup::create_with(&h, &spec, &own).unwrap();
    assert_eq!(cg.dir(""), Some(t.path("user.slice/berth/c2").as_path()));
    assert!(t.path("user.slice/berth/c2").is_dir());
}

#[test]
fn systemd_path_form_creates_the_slice_tree() {
    let t = Tree::new();
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = Cgroup::create(&h, "kubepods-besteffort-pod1.slice:cri-containerd:abc").unwrap();
    let want = t.path(
        "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-abc.scope",
    );
    assert_eq!(cg.dir(""), Some(want.as_path()));
    assert!(want.is_dir());
}

#[test]
fn open_of_a_missing_cgroup_says_not_found() {
    let t = Tree::new();
    let h = Hierarchy::v2_at(&t.path(""));
    let err = Cgroup::open(&h, "/nope").unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
}

#[test]
fn apply_writes_each_resource() {
    let t = tree_with_cgroup();
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    crate::fs::recording::take();
    cg.apply(&resources(json!({
        "memory": {"limit": 104857600, "swap": 314572800, "reservation": 52428800},
        "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 1000, "cpus": "0-1", "mems": "0"},
        "pids": {"limit": 64},
        "blockIO": {
            "weight": 500,
            "weightDevice": [{"major": 8, "minor": 0, "weight": 10}],
            "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
            "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 100}]
        },
        "hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}],
        "unified": {"memory.high": "94371840"}
    })))
    .unwrap();
    let c1 = |f: &str| format!("berth/c1/{f}");
    assert_eq!(
        writes_under(&t.path("")),
        vec![
            w(&c1("cpu.weight"), "39"),
            w(&c1("cpu.max"), "50000 100000"),
            w(&c1("cpu.max.burst"), "1000"),
            w(&c1("cpuset.cpus"), "0-1"),
            w(&c1("cpuset.mems"), "0"),
            // OCI swap is memory+swap; v2 wants swap alone.
            w(&c1("memory.swap.max"), "209715200"),
            w(&c1("memory.max"), "104857600"),
            w(&c1("memory.low"), "52428800"),
            w(&c1("pids.max"), "64"),
            w(&c1("io.weight"), "4950"),
            w(&c1("io.weight"), "8:0 1"),
            w(&c1("io.max"), "8:0 rbps=1048576"),
            w(&c1("io.max"), "8:16 wiops=100"),
            w(&c1("hugetlb.2MB.max"), "4194304"),
            w(&c1("memory.high"), "94371840"),
        ]
    );
    assert_eq!(t.read("berth/c1/memory.max"), "104857600");
}

/// Device rules go to an eBPF program (proven on the host by `tests/root_host.rs`); a fixture
/// tree is no cgroup2 file system, which is said before any program is loaded.
#[test]
fn device_rules_need_a_cgroup2_directory() {
    let t = tree_with_cgroup();
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    let err = cg
        .apply(&resources(json!({
            "devices": [
                {"allow": false, "access": "rwm"},
                {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
            ]
        })))
        .unwrap_err();
    match &err {
        Error::DeviceProgram { dir, step, .. } => {
            assert_eq!(dir, &t.path("berth/c1"));
            assert!(step.contains("open the cgroup2 directory"), "{step}");
        }
        other => panic!("expected a device program error, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("not on a cgroup2 file system"), "{msg}");
    assert!(msg.contains("berth/c1"), "{msg}");

    // Bad rules are refused before the directory is looked at; no rules change nothing.
    let err = cg
        .apply(&resources(
            json!({"devices": [{"allow": true, "access": "rwx"}]}),
        ))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidResource { .. }), "{err:?}");
    cg.apply(&resources(json!({"devices": []}))).unwrap();
}

#[test]
fn apply_unlimited_values() {
    let t = tree_with_cgroup();
    t.file("berth/c1/io.bfq.weight", "default 100\n");
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    crate::fs::recording::take();
    cg.apply(&resources(json!({
        "memory": {"limit": -1, "swap": -1},
        "cpu": {"quota": -1, "period": 100000},
        "pids": {"limit": 0},
        "blockIO": {"weight": 300}
    })))
    .unwrap();
    assert_eq!(
        writes_under(&t.path("berth/c1")),
        vec![
            w("cpu.max", "max 100000"),
            w("memory.swap.max", "max"),
            w("memory.max", "max"),
            w("pids.max", "max"),
            // BFQ takes the spec's 10..1000 scale as is.
            w("io.bfq.weight", "300"),
        ]
    );
}

#[test]
fn a_period_alone_keeps_the_quota() {
    let t = tree_with_cgroup();
    t.file("berth/c1/cpu.max", "20000 100000\n");
    let h = Hierarchy::v2_at(&t.path(""));
    open(&h, "/berth/c1")
        .apply(&resources(json!({"cpu": {"period": 50000}})))
        .unwrap();
    assert_eq!(t.read("berth/c1/cpu.max"), "20000 50000");
}

#[test]
fn missing_controller_is_an_error_only_when_asked() {
    let t = tree_with_cgroup();
    std::fs::remove_file(t.path("berth/c1/pids.max")).unwrap();
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    cg.apply(&resources(json!({"memory": {"limit": 1048576}})))
        .unwrap();
    let err = cg
        .apply(&resources(json!({"pids": {"limit": 10}})))
        .unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    assert!(err.to_string().contains("berth/c1/pids.max"), "{err}");
    let err = cg
        .apply(&resources(json!({"unified": {"misc.max": "1"}})))
        .unwrap_err();
    assert!(err.to_string().contains("misc.max"), "{err}");
    let err = cg
        .apply(&resources(json!({"unified": {"../x": "1"}})))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidResource { .. }), "{err}");
    let err = cg
        .apply(&resources(json!({"memory": {"limit": 100, "swap": 50}})))
        .unwrap_err();
    assert!(matches!(err, Error::InvalidResource { .. }), "{err}");
}

#[test]
fn freeze_waits_for_cgroup_events() {
    let t = tree_with_cgroup();
    let h = Hierarchy::v2_at(&t.path(""));
    let mut cg = open(&h, "/berth/c1");
    cg.freeze_timeout = Duration::from_millis(50);
    // The fixture kernel never reports "frozen 1": the freeze times out and is undone.
    let err = cg.freeze().unwrap_err();
    assert!(matches!(err, Error::FreezeTimeout { .. }), "{err}");
    assert_eq!(t.read("berth/c1/cgroup.freeze"), "0");
    // Once it does, freeze returns.
    t.file("berth/c1/cgroup.events", "populated 1\nfrozen 1\n");
    cg.freeze().unwrap();
    assert_eq!(t.read("berth/c1/cgroup.freeze"), "1");
    assert_eq!(cg.freezer_state().unwrap(), FreezerState::Frozen);
    t.file("berth/c1/cgroup.events", "populated 1\nfrozen 0\n");
    cg.thaw().unwrap();
    assert_eq!(t.read("berth/c1/cgroup.freeze"), "0");
}

#[test]
fn stats_and_metrics_round_trip() {
    let t = tree_with_cgroup();
    let c1 = |f: &str| format!("berth/c1/{f}");
    t.file(&c1("pids.current"), "3\n")
        .file(&c1("pids.max"), "100\n")
        .file(
            &c1("cpu.stat"),
            "usage_usec 5000\nuser_usec 3000\nsystem_usec 2000\nnr_periods 10\nnr_throttled 2\nthrottled_usec 700\nnr_bursts 0\nburst_usec 0\n",
        )
        .file(&c1("memory.current"), "1048576\n")
        .file(&c1("memory.max"), "max\n")
        .file(&c1("memory.peak"), "2097152\n")
        .file(&c1("memory.swap.current"), "4096\n")
        .file(&c1("memory.swap.max"), "8192\n")
        .file(
            &c1("memory.stat"),
            "anon 1000\nfile 2000\nkernel_stack 16384\nshmem 0\npgfault 42\nworkingset_refault_anon 7\nthp_fault_alloc 1\n",
        )
        .file(
            &c1("memory.events"),
            "low 0\nhigh 1\nmax 4\noom 2\noom_kill 1\noom_group_kill 0\n",
        )
        .file(
            &c1("io.stat"),
            "8:0 rbytes=100 wbytes=200 rios=3 wios=4 dbytes=0 dios=0\n",
        )
        .file(&c1("hugetlb.2MB.current"), "2097152\n")
        .file(&c1("hugetlb.2MB.events"), "max 5\n")
        .file(&c1("hugetlb.2MB.rsvd.max"), "max\n");
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");

    let s = cg.stats().unwrap();
    assert_eq!(s.pids.as_ref().unwrap().limit, Some(100));
    assert_eq!(s.cpu.as_ref().unwrap().usage_ns, 5_000_000);
    assert_eq!(s.memory.as_ref().unwrap().usage.limit, u64::MAX);

    let (url, bytes) = cg.metrics().unwrap();
    assert_eq!(url, "io.containerd.cgroups.v2.Metrics");
    let m = pb::Metrics::decode(bytes.as_slice()).unwrap();
    assert_eq!(
        m.pids,
        Some(pb::PidsStat {
            current: 3,
            limit: 100
        })
    );
    let cpu = m.cpu.unwrap();
    assert_eq!(
        (
            cpu.usage_usec,
            cpu.user_usec,
            cpu.system_usec,
            cpu.nr_periods,
            cpu.nr_throttled,
            cpu.throttled_usec
        ),
        (5000, 3000, 2000, 10, 2, 700)
    );
    let mem = m.memory.unwrap();
    assert_eq!(mem.usage, 1_048_576);
    assert_eq!(mem.usage_limit, u64::MAX);
    assert_eq!(mem.max_usage, 2_097_152);
    assert_eq!((mem.swap_usage, mem.swap_limit), (4096, 8192));
    assert_eq!((mem.anon, mem.file, mem.kernel_stack), (1000, 2000, 16384));
    assert_eq!((mem.pgfault, mem.workingset_refault_anon), (42, 7));
    let ev = m.memory_events.unwrap();
    assert_eq!((ev.high, ev.max, ev.oom, ev.oom_kill), (1, 4, 2, 1));
    assert_eq!(
        m.io.unwrap().usage,
        vec![pb::IoEntry {
            major: 8,
            minor: 0,
            rbytes: 100,
            wbytes: 200,
            rios: 3,
            wios: 4
        }]
    );
    assert_eq!(
        m.hugetlb,
        vec![pb::HugeTlbStat {
            current: 2_097_152,
            max: u64::MAX,
            pagesize: "2MB".into(),
            failcnt: 5
        }]
    );
}

/// Field numbers checked against hand-encoded bytes, not only against our own decoder: the Go
/// client decodes by number.
#[test]
fn v2_wire_field_numbers() {
    let m = pb::Metrics {
        memory_events: Some(pb::MemoryEvents {
            oom_kill: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    // field 8 (length-delimited) { field 5 (varint) = 1 }
    assert_eq!(m.encode_to_vec(), vec![0x42, 0x02, 0x28, 0x01]);
    let m = pb::Metrics {
        memory: Some(pb::MemoryStat {
            swap_limit: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    // field 4 { field 35 (varint): tag (35 << 3) = 280 = 0x98 0x02 }
    assert_eq!(m.encode_to_vec(), vec![0x22, 0x03, 0x98, 0x02, 0x01]);
}

#[test]
fn oom_watcher_counts_oom_kill_increases() {
    let t = tree_with_cgroup();
    t.file(
        "berth/c1/memory.events",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n",
    );
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    let mut w = cg.oom_watcher().unwrap();
    assert_eq!(w.oom_kills().unwrap(), 0);

    t.file(
        "berth/c1/memory.events",
        "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n",
    );
    let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(2000u16)).unwrap();
    assert_eq!(n, 1, "inotify did not report the change to memory.events");
    assert_eq!(w.oom_kills().unwrap(), 2);
    assert_eq!(w.oom_kills().unwrap(), 0, "no new kills");
    let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLIN)];
    assert_eq!(poll(&mut fds, PollTimeout::ZERO).unwrap(), 0, "drained");

    // Kernels without oom_kill: the oom count stands in.
    t.file("berth/c1/memory.events", "oom 5\n");
    assert_eq!(w.oom_kills().unwrap(), 3);

    std::fs::remove_file(t.path("berth/c1/memory.events")).unwrap();
    assert_eq!(w.oom_kills().unwrap(), 0, "a removed cgroup is not an OOM");
}

#[test]
fn procs_and_delete() {
    let t = Tree::new();
    t.file("berth/c1/cgroup.procs", "12\n34\n");
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    assert_eq!(cg.procs().unwrap(), vec![12, 34]);
    cg.add_process(56).unwrap();
    assert_eq!(t.read("berth/c1/cgroup.procs"), "56");

    // rmdir works on cgroupfs whatever files it shows; a fixture must be bare directories.
    let t = Tree::new();
    t.dir("berth/c1/nested/deeper");
    let h = Hierarchy::v2_at(&t.path(""));
    let cg = open(&h, "/berth/c1");
    cg.clone().delete().unwrap();
    assert!(!t.path("berth/c1").exists());
    assert!(t.path("berth").is_dir(), "only the container's cgroup goes");
    cg.delete().unwrap(); // already gone: fine
}
