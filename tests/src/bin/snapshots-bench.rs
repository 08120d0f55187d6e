//! Snapshots benchmark: every Snapshots RPC, timed on berthd and on containerd by the same raw
//! gRPC client (tonic, containerd's v1 API), in alternating rounds, on the same filesystem.
//!
//! Each round runs, per iteration `i`: Prepare `a-i` (no parent), Commit `c-i` from it, Prepare
//! `b-i` on `c-i`, View `v-i` on `c-i`, Stat, Mounts, Update (a label), Usage, then Remove of the
//! active `b-i`, the view `v-i` and the committed `c-i`. Every Prepare carries containerd's
//! `containerd.io/gc.root` label, as `ctr` sets it, so no collection removes them behind our back.
//! Prints the median and p90 of each RPC per daemon, and berthd's median as a share of
//! containerd's. A Version call per iteration (no work on either side) shows the round trip every
//! RPC pays: the floor under the read RPCs.
//!
//! ```sh
//! cargo build --release --bins && target/release/snapshots-bench [rounds] [iterations] [snapshotter]
//! ```
//! Run as root (both daemons mount overlayfs). Defaults: 6 rounds of 100 iterations, overlayfs.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use berth_api::snapshots::snapshots_client::SnapshotsClient;
use berth_api::snapshots::{
    CommitSnapshotRequest, Info, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest, UpdateSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use berth_api::version::version_client::VersionClient;
use berth_tests::{require_root, Berthd, Containerd};
use tonic::transport::Channel;

const RPCS: [&str; 12] = [
    "Prepare",
    "Commit",
    "Prepare (parent)",
    "View",
    "Stat",
    "Mounts",
    "Update",
    "Usage",
    "Remove (active)",
    "Remove (view)",
    "Remove (committed)",
    "Version (no work)",
];

type Samples = HashMap<&'static str, Vec<Duration>>;

fn req<T>(msg: T) -> tonic::Request<T> {
    bctr::client::request("bench", msg)
}

async fn timed<F, T>(samples: &mut Samples, name: &'static str, f: F) -> T
where
    F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let t = Instant::now();
    let r = f.await;
    samples.entry(name).or_default().push(t.elapsed());
    match r {
        Ok(r) => r.into_inner(),
        Err(e) => panic!("{name}: {e}"),
    }
}

async fn round(ch: &Channel, sn: &str, round: usize, iterations: usize, samples: &mut Samples) {
    let mut c = SnapshotsClient::new(ch.clone());
    let mut version = VersionClient::new(ch.clone());
    let root_label = || {
        HashMap::from([(
            "containerd.io/gc.root".to_owned(),
            "2026-01-01T00:00:00Z".to_owned(),
        )])
    };
    for i in 0..iterations {
        let (a, cm, b, v) = (
            format!("a-{round}-{i}"),
            format!("c-{round}-{i}"),
            format!("b-{round}-{i}"),
            format!("v-{round}-{i}"),
        );
        let s = sn.to_owned();
        timed(
            samples,
            "Prepare",
            c.prepare(req(PrepareSnapshotRequest {
                snapshotter: s.clone(),
                key: a.clone(),
                parent: String::new(),
                labels: root_label(),
            })),
        )
        .await;
        timed(
            samples,
            "Commit",
            c.commit(req(CommitSnapshotRequest {
                snapshotter: s.clone(),
                name: cm.clone(),
                key: a.clone(),
                labels: root_label(),
                ..Default::default()
            })),
        )
        .await;
        timed(
            samples,
            "Prepare (parent)",
            c.prepare(req(PrepareSnapshotRequest {
                snapshotter: s.clone(),
                key: b.clone(),
                parent: cm.clone(),
                labels: root_label(),
            })),
        )
        .await;
        timed(
            samples,
            "View",
            c.view(req(ViewSnapshotRequest {
                snapshotter: s.clone(),
                key: v.clone(),
                parent: cm.clone(),
                labels: root_label(),
            })),
        )
        .await;
        timed(
            samples,
            "Stat",
            c.stat(req(StatSnapshotRequest {
                snapshotter: s.clone(),
                key: b.clone(),
            })),
        )
        .await;
        timed(
            samples,
            "Mounts",
            c.mounts(req(MountsRequest {
                snapshotter: s.clone(),
                key: b.clone(),
            })),
        )
        .await;
        let mut labels = root_label();
        labels.insert("bench".into(), i.to_string());
        timed(
            samples,
            "Update",
            c.update(req(UpdateSnapshotRequest {
                snapshotter: s.clone(),
                info: Some(Info {
                    name: b.clone(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec!["labels.bench".into()],
                }),
            })),
        )
        .await;
        timed(
            samples,
            "Usage",
            c.usage(req(UsageRequest {
                snapshotter: s.clone(),
                key: b.clone(),
            })),
        )
        .await;
        timed(samples, "Version (no work)", version.version(req(()))).await;
        for (name, key) in [
            ("Remove (active)", &b),
            ("Remove (view)", &v),
            ("Remove (committed)", &cm),
        ] {
            timed(
                samples,
                name,
                c.remove(req(RemoveSnapshotRequest {
                    snapshotter: s.clone(),
                    key: key.clone(),
                })),
            )
            .await;
        }
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    require_root("the snapshots benchmark (both daemons mount overlayfs)");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rounds: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(6);
    let iterations: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let sn = args.get(2).cloned().unwrap_or_else(|| "overlayfs".into());
    let berthd = Berthd::start_quiet();
    let containerd = Containerd::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let (ours, theirs) = rt.block_on(async {
        let b = bctr::client::connect(&berthd.socket().display().to_string())
            .await
            .expect("connect berthd");
        let c = bctr::client::connect(&containerd.socket().display().to_string())
            .await
            .expect("connect containerd");
        // One warm-up round each, not counted.
        round(&b, &sn, 1000, 10, &mut Samples::new()).await;
        round(&c, &sn, 1000, 10, &mut Samples::new()).await;
        let (mut ours, mut theirs) = (Samples::new(), Samples::new());
        for r in 0..rounds {
            // Alternate who goes first.
            if r % 2 == 0 {
                round(&b, &sn, r, iterations, &mut ours).await;
                round(&c, &sn, r, iterations, &mut theirs).await;
            } else {
                round(&c, &sn, r, iterations, &mut theirs).await;
                round(&b, &sn, r, iterations, &mut ours).await;
            }
        }
        (ours, theirs)
    });
    println!(
        "{rounds} rounds x {iterations} iterations, snapshotter {sn}, root filesystem of {}",
        berthd.root().display()
    );
    println!(
        "{:<20} {:>16} {:>16} {:>16} {:>16} {:>8}",
        "RPC", "containerd p50", "containerd p90", "berthd p50", "berthd p90", "ratio"
    );
    let mut summary = BTreeMap::new();
    for name in RPCS {
        let (mut o, mut t) = (ours[name].clone(), theirs[name].clone());
        let (o50, o90, t50, t90) = (
            pct(&mut o, 0.5),
            pct(&mut o, 0.9),
            pct(&mut t, 0.5),
            pct(&mut t, 0.9),
        );
        let ratio = o50.as_secs_f64() / t50.as_secs_f64();
        summary.insert(name, ratio);
        println!(
            "{:<20} {:>14.3}ms {:>14.3}ms {:>14.3}ms {:>14.3}ms {:>8.2}",
            name,
            t50.as_secs_f64() * 1e3,
            t90.as_secs_f64() * 1e3,
            o50.as_secs_f64() * 1e3,
            o90.as_secs_f64() * 1e3,
            ratio
        );
    }
    let worst = summary
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(n, r)| format!("{n} at {r:.2}"))
        .unwrap_or_default();
    println!("slowest relative to containerd: {worst} (goal: every RPC at most 0.50)");
}
