//! Issue 3, end to end: content, images, leases and the collector, driven by containerd's `ctr`
//! (compared with a real containerd) and by direct gRPC for the edge cases.

use std::path::Path;
use std::process::Command;

use berth_api::content::{
    content_client::ContentClient, InfoRequest, ReadContentRequest, StatusRequest,
};
use berth_api::leases::{leases_client::LeasesClient, CreateRequest};
use berth_tests::fixtures::{self, sha256_digest};
use berth_tests::grpc::{req, Writer};
use berth_tests::{
    fails, ok, output_with_stdin, require_program, require_root, Berthd, Containerd,
};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().unwrap()
}

/// Runs `ctr --address sock args…` with `input` on stdin.
fn ctr_stdin(sock: &Path, args: &[&str], input: &[u8]) -> std::process::Output {
    // A failing ctr may close stdin early; that is reported through its exit status.
    output_with_stdin(
        Command::new(require_program("ctr", "containerd"))
            .arg("--address")
            .arg(sock)
            .args(args),
        input,
    )
}

/// Runs `ctr --address sock args…` with a file as stdin (seekable, so ctr can resume).
fn ctr_file(sock: &Path, args: &[&str], input: &Path) -> std::process::Output {
    Command::new(require_program("ctr", "containerd"))
        .arg("--address")
        .arg(sock)
        .args(args)
        .stdin(std::fs::File::open(input).unwrap())
        .output()
        .unwrap()
}

/// `ctr content ls` without the AGE column, which depends on timing.
fn content_rows(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').filter(|c| !c.is_empty()).collect();
            let mut labels: Vec<&str> = cols.last().unwrap().split(',').collect();
            labels.sort();
            format!("{} {} {}", cols[0], cols[1], labels.join(","))
        })
        .collect()
}

fn blob_files(berthd: &Berthd) -> Vec<String> {
    let dir = berthd
        .root()
        .join("io.containerd.content.v1.content/blobs/sha256");
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect();
    v.sort();
    v
}

fn archives(
    dir: &Path,
) -> (
    fixtures::FixtureImage,
    std::path::PathBuf,
    fixtures::FixtureImage,
    std::path::PathBuf,
) {
    let oci = fixtures::busybox_image("docker.io/library/busybox:berth");
    let oci_path = dir.join("oci.tar");
    fixtures::write_oci_archive(&oci_path, std::slice::from_ref(&oci));
    let docker = fixtures::busybox_image("docker.io/library/busybox:docker");
    let docker_path = dir.join("docker.tar");
    fixtures::write_docker_archive(&docker_path, &docker);
    (oci, oci_path, docker, docker_path)
}

#[test]
fn ctr_content_commands_match_containerd() {
    require_root("comparing ctr against containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let data = b"hello berth\n";
    let digest = sha256_digest(data);
    for sock in [berthd.socket(), containerd.socket()] {
        ok(&ctr_stdin(&sock, &["content", "ingest", "greeting"], data));
    }
    let steps: &[&[&str]] = &[
        &["content", "get", &digest],
        &["content", "label", &digest, "a=1", "b=2"],
        &["content", "label", &digest, "a="],
        &["content", "ls", "-q"],
        &["content", "rm", &digest],
        &["content", "get", &digest],
        &["content", "rm", &digest],
        &["content", "ls", "-q"],
    ];
    for step in steps {
        let ours = berthd.ctr(step);
        let theirs = containerd.ctr(step);
        // ctr prints label maps in Go's random map order; compare them as sets.
        let norm = |b: &[u8]| -> Vec<Vec<String>> {
            String::from_utf8_lossy(b)
                .lines()
                .map(|l| {
                    let mut parts: Vec<String> = l.split(',').map(str::to_owned).collect();
                    parts.sort();
                    parts
                })
                .collect()
        };
        let (o, t) = (norm(&ours.stdout), norm(&theirs.stdout));
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "exit of ctr {step:?}: {}\n{}",
            String::from_utf8_lossy(&ours.stderr),
            berthd
                .log()
                .lines()
                .filter(|l| !l.contains("h2::"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert_eq!(o, t, "stdout of ctr {step:?}");
    }
    // ls with labels (AGE aside) is the same too.
    for sock in [berthd.socket(), containerd.socket()] {
        ok(&ctr_stdin(&sock, &["content", "ingest", "again"], data));
    }
    ok(&berthd.ctr(&["content", "label", &digest, "k=v"]));
    ok(&containerd.ctr(&["content", "label", &digest, "k=v"]));
    assert_eq!(
        content_rows(&ok(&berthd.ctr(&["content", "ls"]))),
        content_rows(&ok(&containerd.ctr(&["content", "ls"])))
    );
}

#[test]
fn ctr_images_import_ls_rm_match_containerd_and_gc_frees_disk() {
    require_root("comparing ctr against containerd");
    let dir = tempfile::tempdir().unwrap();
    let (oci, oci_path, docker, docker_path) = archives(dir.path());
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    for args in [
        vec![
            "images",
            "import",
            "--no-unpack",
            oci_path.to_str().unwrap(),
        ],
        vec![
            "images",
            "import",
            "--no-unpack",
            docker_path.to_str().unwrap(),
        ],
    ] {
        let ours = berthd.ctr(&args);
        let theirs = containerd.ctr(&args);
        assert!(
            ours.status.success(),
            "ctr {args:?} on berthd: {}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert!(theirs.status.success());
        assert_eq!(ours.stdout, theirs.stdout);
    }
    assert_eq!(
        ok(&berthd.ctr(&["images", "ls"])),
        ok(&containerd.ctr(&["images", "ls"]))
    );
    let ls = ok(&berthd.ctr(&["images", "ls", "-q"]));
    assert_eq!(ls, format!("{}\n{}\n", oci.name, docker.name));

    // Every blob of the OCI image is in the store, byte for byte.
    for blob in oci.blobs() {
        let got = berthd.ctr(&["content", "get", blob.digest]);
        assert!(got.status.success());
        assert!(got.stdout == blob.bytes, "{} differs", blob.digest);
    }

    // Removing the docker image frees exactly its blobs; the OCI image's stay.
    let before = blob_files(&berthd);
    ok(&berthd.ctr(&["images", "rm", "--sync", &docker.name]));
    ok(&containerd.ctr(&["images", "rm", "--sync", &docker.name]));
    let after = blob_files(&berthd);
    for blob in oci.blobs() {
        assert!(
            after.contains(&blob.digest.to_string()),
            "reachable blob {} was removed",
            blob.digest
        );
    }
    assert!(after.len() < before.len(), "nothing freed: {before:?}");
    assert_eq!(
        ok(&berthd.ctr(&["content", "ls", "-q"])).lines().count(),
        after.len(),
        "records and files disagree"
    );
    assert_eq!(
        ok(&berthd.ctr(&["content", "ls", "-q"])),
        ok(&containerd.ctr(&["content", "ls", "-q"])),
        "berthd keeps a different set of blobs than containerd"
    );
    ok(&berthd.ctr(&["images", "rm", "--sync", &oci.name]));
    assert!(blob_files(&berthd).is_empty(), "{:?}", blob_files(&berthd));
}

#[test]
fn ctr_all_platforms_import_keeps_every_platform() {
    let dir = tempfile::tempdir().unwrap();
    let multi = fixtures::busybox_multiplatform_image("docker.io/library/busybox:multi");
    let path = dir.path().join("multi.tar");
    fixtures::write_oci_archive(&path, std::slice::from_ref(&multi));
    let berthd = Berthd::start();
    ok(&berthd.ctr(&[
        "images",
        "import",
        "--no-unpack",
        "--all-platforms",
        path.to_str().unwrap(),
    ]));
    let ls = ok(&berthd.ctr(&["images", "ls"]));
    assert!(ls.contains("linux/amd64,linux/arm64"), "{ls}");
    let have = ok(&berthd.ctr(&["content", "ls", "-q"]));
    for blob in multi.blobs() {
        assert!(
            have.contains(&blob.digest.to_string()),
            "missing {}",
            blob.digest
        );
    }
}

#[test]
fn ctr_leases_create_ls_rm() {
    let berthd = Berthd::start();
    let id = ok(&berthd.ctr(&["leases", "create", "--id", "mylease", "--expires", "1h"]));
    assert_eq!(id, "mylease\n");
    let ls = ok(&berthd.ctr(&["leases", "ls"]));
    let mut lines = ls.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "CREATED", "AT", "LABELS"]
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("mylease ") && row.contains("containerd.io/gc.expire="),
        "{row}"
    );
    let err = fails(&berthd.ctr(&["leases", "create", "--id", "mylease"]));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(ok(&berthd.ctr(&["leases", "rm", "mylease"])), "mylease\n");
    assert_eq!(ok(&berthd.ctr(&["leases", "ls", "-q"])), "");
}

#[test]
fn ctr_ingest_resumes_after_a_failed_client() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    let size = 8 << 20;
    let digest = fixtures::write_large_blob(&big, size, 7);
    let bytes = std::fs::read(&big).unwrap();
    let (size_s, half) = (size.to_string(), size as usize / 2);
    let args = [
        "content",
        "ingest",
        "--expected-size",
        &size_s,
        "--expected-digest",
        &digest,
        "bigref",
    ];
    // The first client gives up halfway (its input ends early): the commit fails, the data stays.
    let half_file = dir.path().join("half");
    std::fs::write(&half_file, &bytes[..half]).unwrap();
    let out = ctr_file(&berthd.socket(), &args, &half_file);
    assert!(!out.status.success());
    let active = ok(&berthd.ctr(&["content", "active"]));
    assert!(active.contains("bigref"), "{active}");
    let rt = rt();
    let offset = rt.block_on(async {
        ContentClient::new(berthd.channel().await)
            .status(req(
                "default",
                None,
                StatusRequest {
                    r#ref: "bigref".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap()
            .offset
    });
    assert_eq!(offset, half as i64);
    // The second one resumes from that offset (ctr seeks its input past it) and commits.
    ok(&ctr_file(&berthd.socket(), &args, &big));
    assert_eq!(
        ok(&berthd.ctr(&["content", "active"])).lines().count(),
        1,
        "ingest left behind"
    );
    let got = Command::new(require_program("ctr", "containerd"))
        .arg("--address")
        .arg(berthd.socket())
        .args(["content", "get", &digest])
        .output()
        .unwrap();
    assert!(got.stdout == bytes, "content differs after resume");
}

#[test]
fn sigkill_mid_write_loses_no_committed_blob_and_resumes() {
    let mut berthd = Berthd::start();
    let rt = rt();
    let data = fixtures::large_blob_bytes(4 << 20, 3);
    let digest = sha256_digest(&data);
    let small = b"committed before the crash".to_vec();
    let small_digest = sha256_digest(&small);
    rt.block_on(async {
        let ch = berthd.channel().await;
        // Held by a lease: content nothing refers to is collected at start-up, as containerd does.
        LeasesClient::new(ch.clone())
            .create(req(
                "default",
                None,
                CreateRequest {
                    id: "keep".into(),
                    labels: Default::default(),
                },
            ))
            .await
            .unwrap();
        let (mut w, _) = Writer::open(&ch, "default", Some("keep"), "small", 0, "")
            .await
            .unwrap();
        w.write(0, &small).await.unwrap();
        w.commit(small.len() as i64, small.len() as i64, &small_digest)
            .await
            .unwrap();
        let (mut w, st) = Writer::open(
            &ch,
            "default",
            Some("keep"),
            "crashy",
            data.len() as i64,
            &digest,
        )
        .await
        .unwrap();
        assert_eq!(st.offset, 0);
        w.write(0, &data[..1 << 20]).await.unwrap();
        w.write(1 << 20, &data[1 << 20..2 << 20]).await.unwrap();
        std::mem::forget(w); // keep the stream open while the daemon dies
    });
    let pid = nix::unistd::Pid::from_raw(berthd.child.as_ref().unwrap().id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
    let _ = berthd.child.as_mut().unwrap().wait();
    berthd.child = None;
    berthd.restart();
    rt.block_on(async {
        let ch = berthd.channel().await;
        let mut c = ContentClient::new(ch.clone());
        let info = c
            .info(req(
                "default",
                None,
                InfoRequest {
                    digest: small_digest.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .info
            .unwrap();
        assert_eq!(info.size, small.len() as i64);
        // No half blob is visible.
        assert_eq!(
            c.info(req(
                "default",
                None,
                InfoRequest {
                    digest: digest.clone()
                }
            ))
            .await
            .unwrap_err()
            .code(),
            tonic::Code::NotFound
        );
        let (mut w, st) = Writer::open(&ch, "default", None, "crashy", data.len() as i64, &digest)
            .await
            .unwrap();
        let at = st.offset as usize;
        assert_eq!(at, 2 << 20, "resume offset after SIGKILL");
        w.write(st.offset, &data[at..]).await.unwrap();
        let done = w
            .commit(data.len() as i64, data.len() as i64, &digest)
            .await
            .unwrap();
        assert_eq!(done.digest, digest);
    });
}

#[test]
fn bad_input_gets_containerds_codes_and_changes_nothing() {
    let berthd = Berthd::start();
    let rt = rt();
    rt.block_on(async {
        let ch = berthd.channel().await;
        let mut c = ContentClient::new(ch.clone());
        let data = b"some bytes".to_vec();
        let right = sha256_digest(&data);
        let wrong = sha256_digest(b"other bytes");

        // Wrong digest at commit: FailedPrecondition, nothing committed.
        let (mut w, _) = Writer::open(&ch, "default", None, "r1", 0, "")
            .await
            .unwrap();
        w.write(0, &data).await.unwrap();
        let e = w
            .commit(data.len() as i64, data.len() as i64, &wrong)
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        // Wrong size at commit.
        let (mut w, st) = Writer::open(&ch, "default", None, "r1", 0, "")
            .await
            .unwrap();
        assert_eq!(st.offset, data.len() as i64);
        let e = w.commit(st.offset, 3, "").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        for d in [&right, &wrong] {
            let e = c
                .info(req("default", None, InfoRequest { digest: d.clone() }))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound);
        }

        // Not algo:hex.
        let e = c
            .info(req(
                "default",
                None,
                InfoRequest {
                    digest: "sha256:xyz".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        let e = c
            .info(req(
                "default",
                None,
                InfoRequest {
                    digest: "nocolon".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

        // A ref with "/..": accepted, as containerd accepts it (issue 15, defect 11); the
        // ingest is a directory named by the ref's hash, so the ref reaches nowhere.
        let (w, _) = Writer::open(&ch, "default", None, "a/../../etc", 0, "")
            .await
            .unwrap();
        drop(w);

        // Two writers on one ref.
        let (_w1, _) = Writer::open(&ch, "default", None, "busy", 0, "")
            .await
            .unwrap();
        let e = Writer::open(&ch, "default", None, "busy", 0, "")
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::Unavailable, "{e:?}");
        assert!(e.message().contains("locked"), "{e:?}");

        // Read past the end.
        let (mut w, _) = Writer::open(&ch, "default", None, "ok", 0, "")
            .await
            .unwrap();
        w.write(0, &data).await.unwrap();
        w.commit(data.len() as i64, data.len() as i64, &right)
            .await
            .unwrap();
        let e = c
            .read(req(
                "default",
                None,
                ReadContentRequest {
                    digest: right.clone(),
                    offset: 100,
                    size: 0,
                },
            ))
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
        // A ranged read returns exactly the range.
        let mut s = c
            .read(req(
                "default",
                None,
                ReadContentRequest {
                    digest: right.clone(),
                    offset: 5,
                    size: 3,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let mut got = Vec::new();
        while let Some(m) = s.message().await.unwrap() {
            got.extend(m.data);
        }
        assert_eq!(got, &data[5..8]);

        // Writing what the namespace already holds: AlreadyExists, as ctr expects.
        let e = Writer::open(&ch, "default", None, "again", data.len() as i64, &right)
            .await
            .err()
            .unwrap();
        assert_eq!(e.code(), tonic::Code::AlreadyExists, "{e:?}");
        // Write at a wrong offset.
        let (mut w, _) = Writer::open(&ch, "default", None, "off", 0, "")
            .await
            .unwrap();
        let e = w.write(7, b"x").await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::OutOfRange, "{e:?}");
    });
}

#[test]
fn missing_namespace_header_matches_containerd() {
    require_root("comparing against containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let rt = rt();
    rt.block_on(async {
        for sock in [berthd.socket(), containerd.socket()] {
            let ch = bctr::client::connect(sock.to_str().unwrap()).await.unwrap();
            let e = ContentClient::new(ch)
                .info(InfoRequest {
                    digest: sha256_digest(b"x"),
                })
                .await
                .unwrap_err();
            assert_eq!(
                e.code(),
                tonic::Code::FailedPrecondition,
                "{}: {e:?}",
                sock.display()
            );
            assert!(e.message().contains("namespace is required"), "{e:?}");
        }
    });
}

#[test]
fn blob_from_another_namespace_is_instant() {
    let berthd = Berthd::start();
    let rt = rt();
    rt.block_on(async {
        let ch = berthd.channel().await;
        let data = fixtures::large_blob_bytes(1 << 20, 9);
        let d = sha256_digest(&data);
        let (mut w, _) = Writer::open(&ch, "one", None, "r", data.len() as i64, &d)
            .await
            .unwrap();
        w.write(0, &data).await.unwrap();
        w.commit(data.len() as i64, data.len() as i64, &d)
            .await
            .unwrap();
        // In another namespace the writer starts complete: no byte needs sending.
        let (mut w, st) = Writer::open(&ch, "two", None, "r", data.len() as i64, &d)
            .await
            .unwrap();
        assert_eq!(st.offset, data.len() as i64);
        let done = w.commit(st.offset, data.len() as i64, &d).await.unwrap();
        assert_eq!(done.digest, d);
        let mut c = ContentClient::new(ch.clone());
        c.info(req("two", None, InfoRequest { digest: d.clone() }))
            .await
            .unwrap();
        // A third namespace that never ingested it cannot see it.
        let e = c
            .info(req("three", None, InfoRequest { digest: d }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    });
}

#[test]
fn expired_lease_is_collected_on_the_timer() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "version = 2\n[plugins.\"io.containerd.gc.v1.scheduler\"]\n  interval = \"200ms\"\n  schedule_delay = \"0s\"\n",
    )
    .unwrap();
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let rt = rt();
    let data = b"short-lived".to_vec();
    let d = sha256_digest(&data);
    rt.block_on(async {
        let ch = berthd.channel().await;
        let expires = chrono_like_rfc3339(
            std::time::SystemTime::now() + std::time::Duration::from_millis(600),
        );
        LeasesClient::new(ch.clone())
            .create(req(
                "default",
                None,
                CreateRequest {
                    id: "brief".into(),
                    labels: [("containerd.io/gc.expire".to_owned(), expires)].into(),
                },
            ))
            .await
            .unwrap();
        let (mut w, _) = Writer::open(&ch, "default", Some("brief"), "r", 0, "")
            .await
            .unwrap();
        w.write(0, &data).await.unwrap();
        w.commit(data.len() as i64, data.len() as i64, &d)
            .await
            .unwrap();
    });
    assert_eq!(
        blob_files(&berthd),
        vec![d.clone()],
        "kept while the lease lives"
    );
    // Nothing else happens; the timer alone must free it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !blob_files(&berthd).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "blob under an expired lease was not collected"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ok(&berthd.ctr(&["leases", "ls", "-q"])), "");
}

/// RFC 3339 in UTC with second precision, without pulling a date crate into the tests.
fn chrono_like_rfc3339(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Reads every message of a Read stream; the first error ends it.
async fn read_all(
    c: &mut ContentClient<tonic::transport::Channel>,
    digest: &str,
    offset: i64,
    size: i64,
) -> Result<Vec<u8>, tonic::Status> {
    let mut s = c
        .read(req(
            "default",
            None,
            ReadContentRequest {
                digest: digest.into(),
                offset,
                size,
            },
        ))
        .await?
        .into_inner();
    let mut got = Vec::new();
    while let Some(m) = s.message().await? {
        assert_eq!(
            m.offset,
            offset + got.len() as i64,
            "message offsets follow"
        );
        got.extend(m.data);
    }
    Ok(got)
}

/// Small blobs (what `ctr run` reads: manifests, configs) are read in place and large ones by a
/// reader thread in chunks; both give the exact range, and a blob cut short on disk is DataLoss
/// either way, never a short answer.
#[test]
fn small_and_large_reads_are_exact_and_a_cut_blob_is_data_loss() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    rt().block_on(async {
        let ch = berthd.channel().await;
        let mut c = ContentClient::new(ch.clone());
        let small: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        let large: Vec<u8> = (0..(3 << 20) + 17u32).map(|i| (i % 253) as u8).collect();
        let mut digests = Vec::new();
        for (name, data) in [("small", &small), ("large", &large)] {
            let digest = sha256_digest(data);
            let (mut w, _) = Writer::open(&ch, "default", None, name, 0, "")
                .await
                .unwrap();
            w.write(0, data).await.unwrap();
            w.commit(data.len() as i64, data.len() as i64, &digest)
                .await
                .unwrap();
            assert_eq!(&read_all(&mut c, &digest, 0, 0).await.unwrap(), data);
            digests.push(digest);
        }
        // Ranges on either side of the in-place limit (64 KiB) and across chunks (1 MiB).
        let large_digest = &digests[1];
        for (offset, size) in [(0, 65_536), (1, 65_536), (5, 65_537), (1_048_000, 2_000)] {
            let got = read_all(&mut c, large_digest, offset, size).await.unwrap();
            let (o, s) = (offset as usize, size as usize);
            assert_eq!(got, &large[o..o + s], "range {offset}+{size}");
        }
        assert_eq!(
            read_all(&mut c, &digests[0], 990, 0).await.unwrap(),
            &small[990..]
        );
        // An empty range at the end: no data, no error.
        assert!(read_all(&mut c, &digests[0], 1000, 0)
            .await
            .unwrap()
            .is_empty());

        let dir = berthd
            .root()
            .join("io.containerd.content.v1.content/blobs/sha256");
        for (digest, data) in digests.iter().zip([&small, &large]) {
            let hex = digest.trim_start_matches("sha256:");
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(hex))
                .unwrap();
            file.set_len(data.len() as u64 / 2).unwrap();
            let e = read_all(&mut c, digest, 0, 0).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::DataLoss, "{digest}: {e:?}");
            assert!(e.message().contains("blob ended at"), "{e:?}");
        }
    });
}
