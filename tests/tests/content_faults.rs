//! Issue 15, the storage half under faults: the content store against the collector, crashes
//! inside a commit, leases that end, and the ingest answers containerd's clients check. Where
//! containerd's behaviour is the reference, the same steps run against a private containerd and
//! the answers are compared. Races are made deterministic by the order of the steps (a writer
//! opened, then a synchronous collection, then its commit), not by timing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_api::content::{
    content_client::ContentClient, AbortRequest, InfoRequest, StatusRequest, WriteContentResponse,
};
use berth_api::leases::{leases_client::LeasesClient, CreateRequest, DeleteRequest};
use berth_tests::fixtures::{self, sha256_digest};
use berth_tests::grpc::{req, Writer};
use berth_tests::{ok, require_root, Berthd, Containerd};
use tonic::transport::Channel;
use tonic::Code;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

async fn containerd_channel(containerd: &Containerd) -> Channel {
    bctr::client::connect(&containerd.socket().display().to_string())
        .await
        .expect("connect to containerd")
}

/// berthd and a private containerd, each with a channel, for running the same steps on both.
struct Daemons {
    berthd: Berthd,
    _containerd: Containerd,
    channels: Vec<(&'static str, Channel)>,
}

fn daemons(rt: &tokio::runtime::Runtime) -> Daemons {
    require_root("comparing berthd with containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let channels = rt.block_on(async {
        vec![
            ("berthd", berthd.channel().await),
            ("containerd", containerd_channel(&containerd).await),
        ]
    });
    Daemons {
        berthd,
        _containerd: containerd,
        channels,
    }
}

async fn create_lease(ch: &Channel, ns: &str, id: &str) {
    LeasesClient::new(ch.clone())
        .create(req(
            ns,
            None,
            CreateRequest {
                id: id.into(),
                labels: Default::default(),
            },
        ))
        .await
        .expect("create lease");
}

/// Deletes a lease with `sync`: the collection it causes has finished when this returns.
async fn delete_lease_sync(ch: &Channel, ns: &str, id: &str) {
    LeasesClient::new(ch.clone())
        .delete(req(
            ns,
            None,
            DeleteRequest {
                id: id.into(),
                sync: true,
            },
        ))
        .await
        .expect("delete lease");
}

async fn status(ch: &Channel, ns: &str, reference: &str) -> Result<(i64, i64), tonic::Status> {
    let st = ContentClient::new(ch.clone())
        .status(req(
            ns,
            None,
            StatusRequest {
                r#ref: reference.into(),
            },
        ))
        .await?
        .into_inner()
        .status
        .expect("a status");
    Ok((st.offset, nanos(st.updated_at)))
}

async fn info(ch: &Channel, ns: &str, digest: &str) -> Result<i64, tonic::Status> {
    Ok(ContentClient::new(ch.clone())
        .info(req(
            ns,
            None,
            InfoRequest {
                digest: digest.into(),
            },
        ))
        .await?
        .into_inner()
        .info
        .expect("an info")
        .size)
}

async fn write_blob(ch: &Channel, ns: &str, lease: Option<&str>, reference: &str, data: &[u8]) {
    let d = sha256_digest(data);
    let size = data.len() as i64;
    let (mut w, _) = Writer::open(ch, ns, lease, reference, size, &d)
        .await
        .expect("open writer");
    w.write(0, data).await.expect("write");
    w.commit(size, size, &d).await.expect("commit");
}

/// Opens a writer, retrying while the ref is still locked by a writer the server has not closed
/// yet (a client's close is asynchronous; containerd's own clients retry the same way).
async fn reopen(
    ch: &Channel,
    ns: &str,
    reference: &str,
) -> Result<(Writer, WriteContentResponse), tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match Writer::open(ch, ns, None, reference, 0, "").await {
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

fn nanos(t: Option<prost_types::Timestamp>) -> i64 {
    let t = t.expect("a timestamp");
    t.seconds * 1_000_000_000 + i64::from(t.nanos)
}

fn now() -> i64 {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    i64::try_from(d.as_nanos()).unwrap()
}

fn ingest_root(berthd: &Berthd) -> PathBuf {
    berthd
        .root()
        .join("io.containerd.content.v1.content/ingest")
}

/// berthd's ingest directory for `<ns>/<reference>`.
fn ingest_dir(berthd: &Berthd, key: &str) -> PathBuf {
    std::fs::read_dir(ingest_root(berthd))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::read_to_string(p.join("key")).is_ok_and(|k| k == key))
        .unwrap_or_else(|| panic!("no ingest directory for {key}"))
}

fn sigkill(berthd: &mut Berthd) {
    let mut child = berthd.child.take().expect("berthd is running");
    child.kill().expect("SIGKILL berthd");
    let _ = child.wait();
}

/// `ctr content ingest <reference>` with `data` on stdin.
fn ctr_ingest(sock: &Path, reference: &str, data: &[u8]) -> std::process::Output {
    berth_tests::output_with_stdin(
        std::process::Command::new(berth_tests::require_program("ctr", "containerd"))
            .arg("--address")
            .arg(sock)
            .args(["content", "ingest", reference]),
        data,
    )
}

/// #2: a writer's ingest is built under a `.tmp-*` name; the collector used to remove every
/// such directory, failing writers being set up (INTERNAL "No such file or directory") and leaving
/// empty ingest directories. Many small writes from several clients while collections run all
/// the time must all succeed and leave nothing behind. (The deterministic version is berth-gc's
/// `a_collection_while_a_writer_is_set_up_leaves_it_alone`, which collects from inside the
/// window.)
#[test]
fn writers_being_set_up_survive_collections() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    let rt = rt();
    let failures = rt.block_on(async {
        let ch = berthd.channel().await;
        let stop = Instant::now() + Duration::from_secs(6);
        let mut tasks = Vec::new();
        for client in 0..8 {
            let ch = ch.clone();
            tasks.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                let mut i = 0u64;
                while Instant::now() < stop {
                    i += 1;
                    let data = format!("client {client} write {i} {}", now()).into_bytes();
                    let d = sha256_digest(&data);
                    let size = data.len() as i64;
                    let reference = format!("load-{client}-{i}");
                    let result = async {
                        let (mut w, _) =
                            Writer::open(&ch, "default", None, &reference, size, &d).await?;
                        w.write(0, &data).await?;
                        w.commit(size, size, &d).await
                    }
                    .await;
                    if let Err(s) = result {
                        failures.push(format!("{reference}: {s:?}"));
                    }
                }
                failures
            }));
        }
        // Collections all the time: a lease deleted with `sync` runs one before it answers.
        let collector = {
            let ch = ch.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < stop {
                    n += 1;
                    create_lease(&ch, "default", &format!("tick-{n}")).await;
                    delete_lease_sync(&ch, "default", &format!("tick-{n}")).await;
                }
                n
            })
        };
        let mut failures = Vec::new();
        for t in tasks {
            failures.extend(t.await.unwrap());
        }
        let collections = collector.await.unwrap();
        assert!(collections > 10, "only {collections} collections ran");
        failures
    });
    assert!(
        failures.is_empty(),
        "{} writes failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let left: Vec<_> = std::fs::read_dir(ingest_root(&berthd))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in ingest/: {left:?}");
}

/// #3: a SIGKILL between a commit's rename of `data` into `blobs/` and its removal of the ingest
/// directory leaves an ingest with `key` but no `data`. Every later write to that ref failed
/// ("failed to open writer: …/data: No such file or directory"), across restarts. The state is
/// made exactly (the write, the kill, the rename's effect on the ingest), then the ref is written
/// with containerd's `ctr`: while berthd runs (the writer replaces the invalid ingest) and after a
/// restart (start-up removes it).
#[test]
fn a_crash_inside_a_commit_does_not_block_its_ref() {
    require_root("starting berthd");
    let mut berthd = Berthd::start();
    let rt = rt();
    let data = b"the blob whose commit was cut short\n";
    rt.block_on(async {
        let ch = berthd.channel().await;
        let (mut w, _) = Writer::open(&ch, "default", None, "restarted", 0, "")
            .await
            .unwrap();
        w.write(0, &data[..10]).await.unwrap();
    });
    sigkill(&mut berthd);
    let dir = ingest_dir(&berthd, "default/restarted");
    std::fs::remove_file(dir.join("data")).unwrap();
    // Start-up repairs what it finds: the invalid ingest is gone before anything is served.
    berthd.restart();
    assert!(
        !ingest_root(&berthd).read_dir().unwrap().any(|e| {
            std::fs::read_to_string(e.unwrap().path().join("key"))
                .is_ok_and(|k| k == "default/restarted")
        }),
        "the invalid ingest survived start-up"
    );
    // A running daemon meets the same state when it appears under it.
    rt.block_on(async {
        let ch = berthd.channel().await;
        let (mut w, _) = Writer::open(&ch, "default", None, "running", 0, "")
            .await
            .unwrap();
        w.write(0, &data[..10]).await.unwrap();
        // Closed deterministically: a failed commit ends the stream after the server dropped
        // its writer.
        w.commit(10, 11, "").await.unwrap_err();
    });
    std::fs::remove_file(ingest_dir(&berthd, "default/running").join("data")).unwrap();
    for reference in ["running", "restarted"] {
        ok(&ctr_ingest(&berthd.socket(), reference, data));
    }
    assert_eq!(ok(&berthd.ctr(&["content", "active"])).lines().count(), 1);
    assert_eq!(
        ok(&berthd.ctr(&["content", "get", &sha256_digest(data)])).as_bytes(),
        data
    );
}

/// #7: deleting a lease (sync) removes the ingests it held; containerd then answers NotFound.
#[test]
fn a_leased_ingest_goes_with_its_lease() {
    let rt = rt();
    let d = daemons(&rt);
    for (name, ch) in &d.channels {
        rt.block_on(async {
            create_lease(ch, "default", "import").await;
            let (mut w, _) = Writer::open(ch, "default", Some("import"), "layer-1", 0, "")
                .await
                .unwrap();
            w.write(0, b"half a layer").await.unwrap();
            // The client gives up: its commit fails (the size is wrong), which also ends the
            // server's writer before the answer arrives.
            let e = w.commit(12, 13, "").await.unwrap_err();
            assert_eq!(e.code(), Code::FailedPrecondition, "{name}: {e:?}");
            assert_eq!(
                status(ch, "default", "layer-1").await.unwrap().0,
                12,
                "{name}"
            );
            delete_lease_sync(ch, "default", "import").await;
            let e = status(ch, "default", "layer-1").await.unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{name}: {e:?}");
        });
    }
    let left = ingest_root(&d.berthd).read_dir().unwrap().count();
    assert_eq!(left, 0, "berthd left {left} ingest directories");
}

/// #8, the blob on disk: a writer offered a blob already on disk (its record just swept by the
/// collection that follows `images rm`, or held by another namespace) commits by recording it;
/// the disk sweep of a collection in between removed the file ("content … was removed while this
/// write was open"). The writer now keeps it, as containerd does.
#[test]
fn a_blob_a_writer_found_on_disk_survives_a_collection() {
    let rt = rt();
    let d = daemons(&rt);
    let data = fixtures::large_blob_bytes(64 << 10, 15);
    let digest = sha256_digest(&data);
    let size = data.len() as i64;
    for (name, ch) in &d.channels {
        rt.block_on(async {
            create_lease(ch, "first", "import-1").await;
            write_blob(ch, "first", Some("import-1"), "layer", &data).await;
            create_lease(ch, "second", "import-2").await;
            let (mut w, st) = Writer::open(ch, "second", Some("import-2"), "layer", size, &digest)
                .await
                .unwrap();
            assert_eq!(st.offset, size, "{name}: starts complete");
            // The first namespace lets go; the collection removes its record.
            delete_lease_sync(ch, "first", "import-1").await;
            assert_eq!(
                info(ch, "first", &digest).await.unwrap_err().code(),
                Code::NotFound,
                "{name}"
            );
            let done = w.commit(size, size, &digest).await;
            assert!(done.is_ok(), "{name}: {done:?}");
            assert_eq!(info(ch, "second", &digest).await.unwrap(), size, "{name}");
        });
    }
}

/// #8, the blob recorded: a writer that answers "already exists" under a lease must make the
/// lease hold the blob, or the collection after the old image's removal takes what the client
/// now relies on. containerd leases it.
#[test]
fn already_exists_under_a_lease_holds_the_blob() {
    let rt = rt();
    let d = daemons(&rt);
    let data = b"{\"config\":\"of an image removed and imported again\"}".to_vec();
    let digest = sha256_digest(&data);
    for (name, ch) in &d.channels {
        rt.block_on(async {
            create_lease(ch, "default", "old-import").await;
            write_blob(ch, "default", Some("old-import"), "config", &data).await;
            create_lease(ch, "default", "new-import").await;
            let e = Writer::open(
                ch,
                "default",
                Some("new-import"),
                "config",
                data.len() as i64,
                &digest,
            )
            .await
            .err()
            .expect("already exists");
            assert_eq!(e.code(), Code::AlreadyExists, "{name}: {e:?}");
            delete_lease_sync(ch, "default", "old-import").await;
            let kept = info(ch, "default", &digest).await;
            assert_eq!(kept.ok(), Some(data.len() as i64), "{name}");
        });
    }
}

/// #8 as users met it: `images rm X; images import X.tar` in a loop, the collection woken by
/// the removal racing the import. Every import must succeed and leave the image complete.
#[test]
fn remove_then_import_again_always_succeeds() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let image = fixtures::busybox_image("docker.io/library/busybox:again");
    let archive = dir.path().join("busybox.tar");
    fixtures::write_oci_archive(&archive, std::slice::from_ref(&image));
    let archive = archive.to_str().unwrap();
    ok(&berthd.bctr(&["images", "import", "--no-unpack", archive]));
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 200 && started.elapsed() < Duration::from_secs(12) {
        rounds += 1;
        ok(&berthd.bctr(&["images", "rm", "docker.io/library/busybox:again"]));
        ok(&berthd.bctr(&["images", "import", "--no-unpack", archive]));
    }
    eprintln!(
        "{rounds} rounds of rm and import in {:?}",
        started.elapsed()
    );
    assert!(rounds >= 5, "only {rounds} rounds");
    // Complete: the image's every blob is readable.
    let check = ok(&berthd.ctr(&["images", "check"]));
    assert!(check.contains("complete"), "{check}");
}

/// #12a: an ingest's `updated_at` is the time of its last write, also once a writer resumes it
/// (containerd's content test suite checks it lies within that Write call).
#[test]
fn updated_at_is_the_time_of_the_last_write() {
    let rt = rt();
    let d = daemons(&rt);
    for (name, ch) in &d.channels {
        rt.block_on(async {
            let data = fixtures::large_blob_bytes(256, 12);
            let started = now();
            let (mut w, first) = Writer::open(ch, "default", None, "timed", 256, "")
                .await
                .unwrap();
            let opened = now();
            let start = nanos(first.started_at);
            assert!((started..=opened).contains(&start), "{name}: started_at");
            let pre = now();
            w.write(0, &data[..128]).await.unwrap();
            let post = now();
            drop(w);
            tokio::time::sleep(Duration::from_millis(50)).await;
            let (mut w, resumed) = reopen(ch, "default", "timed").await.unwrap();
            assert_eq!(resumed.offset, 128, "{name}");
            let updated = nanos(resumed.updated_at);
            assert!(
                (pre..=post).contains(&updated),
                "{name}: updated_at {updated} after resume, the write was in [{pre}, {post}]"
            );
            assert_eq!(nanos(resumed.started_at), start, "{name}");
            let (_, listed) = status(ch, "default", "timed").await.unwrap();
            assert!((pre..=post).contains(&listed), "{name}: Status updated_at");
            let pre = now();
            w.write(128, &data[128..]).await.unwrap();
            let post = now();
            let st = w
                .send(berth_api::content::WriteContentRequest {
                    action: berth_api::content::WriteAction::Stat as i32,
                    ..Default::default()
                })
                .await
                .unwrap();
            let updated = nanos(st.updated_at);
            assert!(
                (pre..=post).contains(&updated),
                "{name}: after the second write"
            );
        });
    }
}

/// #12b: Abort removes an ingest even while a writer holds its ref, as containerd's does (berthd
/// answered Unavailable "ref … locked", so a client that failed mid-write could never clean up).
#[test]
fn abort_removes_an_ingest_a_writer_still_holds() {
    let rt = rt();
    let d = daemons(&rt);
    for (name, ch) in &d.channels {
        rt.block_on(async {
            let (mut w, _) = Writer::open(ch, "default", None, "stuck", 0, "")
                .await
                .unwrap();
            w.write(0, b"half written").await.unwrap();
            let aborted = ContentClient::new(ch.clone())
                .abort(req(
                    "default",
                    None,
                    AbortRequest {
                        r#ref: "stuck".into(),
                    },
                ))
                .await;
            assert!(aborted.is_ok(), "{name}: {aborted:?}");
            let e = status(ch, "default", "stuck").await.unwrap_err();
            assert_eq!(e.code(), Code::NotFound, "{name}: {e:?}");
            // What the old writer had is gone: it cannot commit it.
            assert!(w.commit(12, 12, "").await.is_err(), "{name}");
            drop(w);
            // The ref starts over.
            let (mut w, st) = reopen(ch, "default", "stuck").await.unwrap();
            assert_eq!(st.offset, 0, "{name}");
            let data = b"written whole";
            w.write(0, data).await.unwrap();
            let done = w.commit(13, 13, &sha256_digest(data)).await;
            assert!(done.is_ok(), "{name}: {done:?}");
        });
    }
}

/// #12, through containerd's own Go client (tests/go/content), on berthd and on a private
/// containerd: Status.UpdatedAt lies inside the Write call, the ingest keeps its offset after the
/// writer closes, Abort
/// removes an ingest a writer still holds and a new writer starts at 0, and SetLabel on a
/// namespace that does not exist creates it.
#[test]
fn containerds_go_client_sees_containerds_content_semantics() {
    require_root("starting berthd and containerd");
    let prog = berth_tests::go_build("content", "berth-go-content");
    let want = [
        "namespace go-fresh made-by=setlabel",
        "updated_at within write true",
        "status after close offset 10",
        "status after abort: gone",
        "new writer starts at 0",
    ];
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    for (name, sock) in [
        ("berthd", berthd.socket()),
        ("containerd", containerd.socket()),
    ] {
        let out = std::process::Command::new(&prog)
            .arg(&sock)
            .output()
            .expect("run the Go program");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: Go program failed:\n{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().collect::<Vec<_>>(), want, "{name}");
    }
}
