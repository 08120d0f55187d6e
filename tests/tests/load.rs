//! Issue 15's load instrument: 50 concurrent clients on the unix socket for a bounded time,
//! mixing content writes, image create/list/delete, snapshot prepare/commit/remove and event
//! subscribers (one of which never reads). Every request must succeed; berthd's memory and open
//! files must stay bounded under load and come back near idle afterwards. The figures are
//! printed (docs/reliability.md keeps the latest).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_api::content::{content_client::ContentClient, WriteAction, WriteContentRequest};
use berth_api::events::{events_client::EventsClient, SubscribeRequest};
use berth_api::images::{
    images_client::ImagesClient, CreateImageRequest, DeleteImageRequest, Image, ListImagesRequest,
};
use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, CommitSnapshotRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest,
};
use berth_api::types::Descriptor;
use berth_tests::{fixtures, ok, require_root, Berthd};
use tonic::transport::Channel;

const CLIENTS: usize = 50;
const DURATION: Duration = Duration::from_secs(8);

fn req<T>(msg: T) -> tonic::Request<T> {
    bctr::client::request("load", msg)
}

/// VmRSS in KiB and the number of open descriptors of `pid`.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

async fn write_blob(
    ch: Channel,
    data: Vec<u8>,
    reference: String,
) -> Result<String, tonic::Status> {
    let digest = fixtures::sha256_digest(&data);
    let msg = WriteContentRequest {
        action: WriteAction::Commit as i32,
        r#ref: reference,
        total: data.len() as i64,
        expected: digest.clone(),
        offset: 0,
        data,
        labels: [("containerd.io/gc.root".to_owned(), "load".to_owned())].into(),
    };
    let written = async {
        let mut s = ContentClient::new(ch)
            .write(req(tokio_stream::iter(vec![msg])))
            .await?
            .into_inner();
        while s.message().await?.is_some() {}
        Ok::<_, tonic::Status>(())
    }
    .await;
    match written {
        // Another client wrote the same bytes first: what containerd answers, and what every
        // client takes as success.
        Err(e) if e.code() == tonic::Code::AlreadyExists => Ok(digest),
        other => other.map(|()| digest),
    }
}

fn root() -> std::collections::HashMap<String, String> {
    [("containerd.io/gc.root".to_owned(), "load".to_owned())].into()
}

/// One client's loop: `kind` picks its mix; returns requests made.
async fn client(ch: Channel, n: usize, until: Instant, errors: Arc<AtomicU64>) -> u64 {
    let mut done = 0u64;
    let mut i = 0u64;
    let fail = |what: &str, e: tonic::Status| {
        eprintln!("client {n} {what}: {e:?}");
        errors.fetch_add(1, Ordering::Relaxed);
    };
    while Instant::now() < until {
        i += 1;
        match n % 3 {
            0 => {
                // Content: a fresh blob (some shared between clients, so commits race).
                let data = format!("blob {} {}", n % 7, i % 50)
                    .repeat(200)
                    .into_bytes();
                if let Err(e) = write_blob(ch.clone(), data, format!("load-{n}-{i}")).await {
                    fail("content write", e);
                }
                done += 1;
            }
            1 => {
                // Images: create, list, delete.
                let data = format!("config {n} {i}").into_bytes();
                let digest =
                    match write_blob(ch.clone(), data.clone(), format!("cfg-{n}-{i}")).await {
                        Ok(d) => d,
                        Err(e) => {
                            fail("config write", e);
                            continue;
                        }
                    };
                let name = format!("example.com/load/{n}:{i}");
                let image = Image {
                    name: name.clone(),
                    target: Some(Descriptor {
                        media_type: "application/vnd.oci.image.config.v1+json".into(),
                        digest,
                        size: data.len() as i64,
                        annotations: Default::default(),
                    }),
                    ..Default::default()
                };
                let mut images = ImagesClient::new(ch.clone());
                if let Err(e) = images
                    .create(req(CreateImageRequest {
                        image: Some(image),
                        source_date_epoch: None,
                    }))
                    .await
                {
                    fail("image create", e);
                }
                if let Err(e) = images.list(req(ListImagesRequest::default())).await {
                    fail("image list", e);
                }
                if let Err(e) = images
                    .delete(req(DeleteImageRequest {
                        name,
                        sync: false,
                        target: None,
                    }))
                    .await
                {
                    fail("image delete", e);
                }
                done += 4;
            }
            _ => {
                // Snapshots: prepare, commit, remove (native: no mounts needed). Labelled as roots, as
                // ctr labels them: unreferenced snapshots are the collector's, which the other
                // clients' deletions keep waking.
                let mut sn = SnapshotsClient::new(ch.clone());
                let (key, name) = (format!("active-{n}-{i}"), format!("committed-{n}-{i}"));
                if let Err(e) = sn
                    .prepare(req(PrepareSnapshotRequest {
                        snapshotter: "native".into(),
                        key: key.clone(),
                        parent: String::new(),
                        labels: root(),
                    }))
                    .await
                {
                    fail("prepare", e);
                    continue;
                }
                if let Err(e) = sn
                    .commit(req(CommitSnapshotRequest {
                        snapshotter: "native".into(),
                        name: name.clone(),
                        key,
                        labels: root(),
                        parent: String::new(),
                    }))
                    .await
                {
                    fail("commit", e);
                }
                if let Err(e) = sn
                    .remove(req(RemoveSnapshotRequest {
                        snapshotter: "native".into(),
                        key: name,
                    }))
                    .await
                {
                    fail("remove", e);
                }
                done += 3;
            }
        }
    }
    done
}

#[test]
fn fifty_clients_get_no_errors_and_berthd_comes_back_to_idle() {
    require_root("overlay and native snapshots");
    let berthd = Berthd::start_quiet();
    let pid = berthd.child.as_ref().unwrap().id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = || rt.block_on(berthd.channel());
    ok(&berthd.ctr(&["namespaces", "create", "load"]));
    std::thread::sleep(Duration::from_millis(300));
    let idle = usage(pid);

    // Subscribers: one reads everything, one never reads (its stream must not grow berthd).
    let reader_ch = connect();
    let stalled_ch = connect();
    let received = Arc::new(AtomicU64::new(0));
    let got = Arc::clone(&received);
    let reader = rt.spawn(async move {
        let mut s = EventsClient::new(reader_ch)
            .subscribe(SubscribeRequest::default())
            .await
            .unwrap()
            .into_inner();
        while let Ok(Some(_)) = s.message().await {
            got.fetch_add(1, Ordering::Relaxed);
        }
    });
    let stalled = rt.block_on(async move {
        EventsClient::new(stalled_ch)
            .subscribe(SubscribeRequest::default())
            .await
            .unwrap()
            .into_inner()
    });

    let errors = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + DURATION;
    let started = Instant::now();
    let jobs: Vec<_> = (0..CLIENTS)
        .map(|n| rt.spawn(client(connect(), n, until, Arc::clone(&errors))))
        .collect();
    let mut peak = idle;
    while Instant::now() < until {
        let now = usage(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
        std::thread::sleep(Duration::from_millis(200));
    }
    let requests: u64 = jobs.into_iter().map(|j| rt.block_on(j).unwrap()).sum();
    let elapsed = started.elapsed();
    drop(stalled);
    reader.abort();

    // Let berthd collect what the load deleted, then measure again.
    ok(&berthd.bctr(&["gc"]));
    std::thread::sleep(Duration::from_millis(500));
    let after = usage(pid);
    println!(
        "load: {CLIENTS} clients, {requests} requests in {elapsed:?} ({:.0}/s), {} events read; \
         RSS idle {} KiB, peak {} KiB, after {} KiB; fds idle {}, peak {}, after {}",
        requests as f64 / elapsed.as_secs_f64(),
        received.load(Ordering::Relaxed),
        idle.0,
        peak.0,
        after.0,
        idle.1,
        peak.1,
        after.1
    );
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "requests failed under load (see stderr)"
    );
    assert!(
        requests > 1000,
        "too little load to mean anything: {requests}"
    );
    // Bounded: a slow subscriber and 50 clients must not grow berthd without limit.
    assert!(
        peak.0 < idle.0 + 200 * 1024,
        "RSS grew to {} KiB under load",
        peak.0
    );
    // Back near idle: the allocator may keep some, but not what the load used.
    assert!(
        after.0 < idle.0 + 64 * 1024,
        "RSS {} KiB after the load (idle {} KiB)",
        after.0,
        idle.0
    );
    assert!(
        after.1 <= idle.1 + 4,
        "fds {} after the load (idle {})",
        after.1,
        idle.1
    );
}
