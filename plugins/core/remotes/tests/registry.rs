//! Against a real registry: Debian's `docker-registry` (Distribution), started per test on a
//! free loopback port with its own storage, killed on drop. The binary must be installed
//! (`scripts/test.sh` installs it): these tests fail loudly without it rather than skip.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use berth_content_store::{ContentError, ContentStore, LocalStore};
use berth_metadata::MetadataDb;
use berth_oci::{media, Descriptor, DescriptorBuilder, Digest, MediaType};
use berth_plugin::{Classify, ErrorKind};
use berth_remotes::{
    copy_blob_to_ingest, push_blob_from_store, select_manifest, BlobPushOutcome, ClientConfig,
    CopyOutcome, CredentialSource, Credentials, CredentialsTried, IngestTarget, Progress,
    Reference, RegistryClient, RemoteError,
};
use bytes::Bytes;
use common::respond;

mod common;

/// A real registry per test: Debian's docker-registry on a free loopback port, shared with the
/// end-to-end tests (`berth_tests::registry`).
use berth_tests::registry::{free_port, Registry};

/// `name` in the registry under test.
fn reference_in(reg: &Registry, name: &str) -> Reference {
    Reference::parse(&format!("127.0.0.1:{}/{name}", reg.port())).expect("reference")
}

fn desc(media_type: &str, data: &[u8]) -> Descriptor {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(oci_spec_digest(&Digest::sha256(data)))
        .size(data.len() as u64)
        .build()
        .expect("descriptor")
}

fn oci_spec_digest(d: &Digest) -> berth_oci::oci_spec::image::Digest {
    d.into()
}

/// A small image: a config, one layer of `layer_size` bytes, and an OCI manifest.
struct Image {
    config: (Descriptor, Bytes),
    layer: (Descriptor, Bytes),
    manifest: (Descriptor, Bytes),
}

fn image(layer_size: usize, seed: u8) -> Image {
    // Not a real tar.gz: the registry stores bytes, and the client never looks inside layers.
    let layer: Vec<u8> = (0..layer_size)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect();
    let layer = Bytes::from(layer);
    let config = Bytes::from(format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{}"]}}}}"#,
        Digest::sha256(&layer)
    ));
    let config_desc = desc(media::OCI_CONFIG, &config);
    let layer_desc = desc(media::OCI_LAYER_GZIP, &layer);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": config_desc,
        "layers": [layer_desc],
    });
    let manifest = Bytes::from(serde_json::to_vec(&manifest).expect("manifest json"));
    Image {
        manifest: (desc(media::OCI_MANIFEST, &manifest), manifest),
        config: (config_desc, config),
        layer: (layer_desc, layer),
    }
}

fn small_chunks() -> ClientConfig {
    ClientConfig {
        // Layers above 64 KiB go up in 32 KiB PATCH chunks.
        monolithic_upload_limit: 64 << 10,
        upload_chunk_size: 32 << 10,
        ..ClientConfig::default()
    }
}

struct Store {
    _dir: tempfile::TempDir,
    store: Arc<ContentStore>,
}

fn content_store() -> Store {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Arc::new(MetadataDb::open(&dir.path().join("meta")).expect("metadata db"));
    let local = Arc::new(LocalStore::open(&dir.path().join("content")).expect("content store"));
    Store {
        store: Arc::new(ContentStore::new(local, db)),
        _dir: dir,
    }
}

async fn push_image(
    repo: &berth_remotes::Repository,
    img: &Image,
    tag: &str,
) -> Vec<BlobPushOutcome> {
    let mut outcomes = Vec::new();
    for (d, b) in [&img.config, &img.layer] {
        let progress = Mutex::new(Vec::new());
        let out = repo
            .push_blob(d, &b[..], None, |p| progress.lock().unwrap().push(p))
            .await
            .expect("push blob");
        let seen = progress.into_inner().unwrap();
        assert_eq!(
            seen.last(),
            Some(&Progress {
                done: d.size(),
                total: d.size()
            }),
            "progress ends at the total"
        );
        outcomes.push(out);
    }
    let digest = repo
        .push_manifest(tag, media::OCI_MANIFEST, img.manifest.1.clone())
        .await
        .expect("push manifest");
    assert_eq!(digest, Digest::try_from(img.manifest.0.digest()).unwrap());
    outcomes
}

#[tokio::test]
async fn push_then_pull_into_the_content_store() {
    let reg = Registry::start(None);
    let client = RegistryClient::new(small_chunks());
    let reference = reference_in(&reg, "berth/test:v1");
    let repo = client.repository(&reference).expect("repository");
    let img = image(200 << 10, 1);

    let first = push_image(&repo, &img, "v1").await;
    assert_eq!(first, vec![BlobPushOutcome::Uploaded; 2]);
    let second = push_image(&repo, &img, "v1").await;
    assert_eq!(
        second,
        vec![BlobPushOutcome::Exists; 2],
        "a second push finds the blobs there"
    );

    // Resolve by tag and by digest.
    let resolved = repo.resolve(&reference).await.expect("resolve");
    assert_eq!(resolved.digest(), img.manifest.0.digest());
    assert_eq!(resolved.size(), img.manifest.0.size());
    assert_eq!(resolved.media_type(), &MediaType::ImageManifest);
    let pinned = reference.with_digest(Digest::try_from(resolved.digest()).unwrap());
    assert_eq!(
        repo.resolve(&pinned)
            .await
            .expect("resolve by digest")
            .digest(),
        resolved.digest()
    );

    // An index over it, and platform selection from it.
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": [{
            "mediaType": media::OCI_MANIFEST,
            "digest": img.manifest.0.digest(),
            "size": img.manifest.0.size(),
            "platform": {"os": "linux", "architecture": "amd64"}
        }]
    });
    let index = Bytes::from(serde_json::to_vec(&index).unwrap());
    repo.push_manifest("multi", media::OCI_INDEX, index.clone())
        .await
        .expect("push index");
    let idesc = repo
        .resolve(&reference_in(&reg, "berth/test:multi"))
        .await
        .expect("resolve index");
    assert_eq!(idesc.media_type(), &MediaType::ImageIndex);
    let ibytes = repo.fetch_manifest(&idesc).await.expect("fetch index");
    assert_eq!(ibytes, index);
    let amd64 = berth_oci::platform::parse("linux/amd64").unwrap();
    let chosen = select_manifest(&idesc, &ibytes, &berth_oci::Matcher::only(&amd64))
        .expect("select linux/amd64");
    assert_eq!(chosen.digest(), img.manifest.0.digest());

    // Manifest, then every blob into the content store, verified at commit.
    let manifest = repo.fetch_manifest(&chosen).await.expect("fetch manifest");
    assert_eq!(manifest, img.manifest.1);
    let s = content_store();
    for d in [&img.config.0, &img.layer.0] {
        let mut reports = Vec::new();
        let target = IngestTarget::for_descriptor("default", d, None);
        let out = copy_blob_to_ingest(&repo, s.store.clone(), target, d, |p| reports.push(p))
            .await
            .expect("copy blob");
        assert_eq!(out, CopyOutcome::Committed { resumed_from: 0 });
        assert_eq!(reports.first().map(|p| p.done), Some(0));
        assert_eq!(reports.last().map(|p| p.done), Some(d.size()));
        let info = s
            .store
            .info("default", d.digest().as_ref())
            .expect("committed");
        assert_eq!(info.size as u64, d.size());
    }
    // Already held: nothing is fetched.
    let target = IngestTarget::for_descriptor("default", &img.layer.0, None);
    let again = copy_blob_to_ingest(&repo, s.store.clone(), target, &img.layer.0, |_| {})
        .await
        .expect("copy again");
    assert_eq!(again, CopyOutcome::AlreadyExists);
    let config = repo.fetch_blob_bytes(&img.config.0).await.expect("config");
    assert_eq!(config, img.config.1);

    // And back out of the content store into another repository.
    let other = client
        .repository(&reference_in(&reg, "berth/copy:v1"))
        .expect("repository");
    let out = push_blob_from_store(
        &other,
        s.store.clone(),
        "default",
        &img.layer.0,
        None,
        |_| {},
    )
    .await
    .expect("push from the store");
    assert_eq!(out, BlobPushOutcome::Uploaded);
}

#[tokio::test]
async fn cross_repository_mount() {
    let reg = Registry::start(None);
    let client = RegistryClient::new(ClientConfig::default());
    let a = client.repository(&reference_in(&reg, "team/a")).unwrap();
    let b = client.repository(&reference_in(&reg, "team/b")).unwrap();
    let img = image(10 << 10, 2);
    push_image(&a, &img, "latest").await;
    let layer_digest = Digest::try_from(img.layer.0.digest()).unwrap();
    assert!(!b.blob_exists(&layer_digest).await.unwrap());
    let out = b
        .push_blob(&img.layer.0, &img.layer.1[..], Some("team/a"), |_| {})
        .await
        .expect("mount");
    assert_eq!(out, BlobPushOutcome::Mounted);
    assert!(b.blob_exists(&layer_digest).await.unwrap());
    // A source without the blob: the registry opens an upload instead, and the push goes on.
    let img2 = image(1000, 3);
    let out = b
        .push_blob(&img2.layer.0, &img2.layer.1[..], Some("team/none"), |_| {})
        .await
        .expect("mount falls back to upload");
    assert_eq!(out, BlobPushOutcome::Uploaded);
}

/// Leaves `data` in the ingest `reference` of `ns`, as an interrupted download would.
fn half_written(store: &ContentStore, ns: &str, reference: &str, d: &Descriptor, data: &[u8]) {
    let mut w = store
        .writer(ns, reference, d.size() as i64, d.digest().as_ref(), None)
        .expect("writer");
    w.write(data).expect("write");
}

#[tokio::test]
async fn a_half_written_ingest_resumes_and_a_wrong_prefix_is_caught() {
    let reg = Registry::start(None);
    let client = RegistryClient::new(small_chunks());
    let repo = client
        .repository(&reference_in(&reg, "berth/resume"))
        .unwrap();
    let img = image(300 << 10, 4);
    push_image(&repo, &img, "latest").await;
    let (d, bytes) = &img.layer;
    let half = bytes.len() / 2;
    let s = content_store();

    half_written(&s.store, "default", "layer-resume", d, &bytes[..half]);
    let mut reports = Vec::new();
    let target = IngestTarget {
        namespace: "default".into(),
        reference: "layer-resume".into(),
        lease: None,
        labels: BTreeMap::new(),
    };
    let out = copy_blob_to_ingest(&repo, s.store.clone(), target.clone(), d, |p| {
        reports.push(p)
    })
    .await
    .expect("resumed copy");
    assert_eq!(
        out,
        CopyOutcome::Committed {
            resumed_from: half as u64
        }
    );
    assert_eq!(reports.first().map(|p| p.done), Some(half as u64));
    assert_eq!(reports.last().map(|p| p.done), Some(d.size()));
    assert!(s.store.info("default", d.digest().as_ref()).is_ok());

    // A prefix that is not the blob's: the commit's digest check catches it, names the
    // registry URL, and the ingest is aborted so that the next attempt starts clean. (A fresh
    // store: one that holds the blob already would take it from disk without downloading.)
    let s = content_store();
    let garbage = vec![0xAAu8; half];
    half_written(&s.store, "other", "layer-bad", d, &garbage);
    let bad = IngestTarget {
        namespace: "other".into(),
        reference: "layer-bad".into(),
        ..target
    };
    let e = copy_blob_to_ingest(&repo, s.store.clone(), bad.clone(), d, |_| {})
        .await
        .expect_err("a wrong prefix must not commit");
    assert!(matches!(e, RemoteError::DigestMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains(&format!("127.0.0.1:{}", reg.port())),
        "{e}"
    );
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(matches!(
        s.store.status("other", "layer-bad"),
        Err(ContentError::IngestNotFound(_))
    ));
    let out = copy_blob_to_ingest(&repo, s.store.clone(), bad, d, |_| {})
        .await
        .expect("a clean retry");
    assert_eq!(out, CopyOutcome::Committed { resumed_from: 0 });

    // A descriptor whose size is wrong is caught while streaming.
    let mut wrong = d.clone();
    wrong.set_size(d.size() - 1);
    let mut stream = repo.fetch_blob(&wrong, 0).await.expect("open");
    let mut err = None;
    loop {
        match stream.next_chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(err, Some(RemoteError::SizeMismatch { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn missing_images_and_unreachable_registries_say_so() {
    let reg = Registry::start(None);
    let client = RegistryClient::new(ClientConfig::default());
    let reference = reference_in(&reg, "no/such:tag");
    let repo = client.repository(&reference).unwrap();
    let e = repo.resolve(&reference).await.expect_err("missing");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains("check the image reference"), "{e}");
    assert!(e.to_string().contains("no/such"), "{e}");

    let port = free_port();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x:y")).unwrap();
    let repo = client.repository(&reference).unwrap();
    let e = repo.resolve(&reference).await.expect_err("unreachable");
    let msg = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{msg}");
    assert!(
        msg.contains(&format!("http://127.0.0.1:{port}/v2/x/manifests/y")),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("connection refused"), "{msg}");
}

#[tokio::test]
async fn basic_auth_with_each_credential_source() {
    let reg = Registry::start(Some(("berth", "s3cret")));
    let reference = reference_in(&reg, "private/img:1");
    let img = image(2000, 5);

    // Anonymous: refused, and the error says no credentials were found.
    let anon = RegistryClient::new(ClientConfig::default());
    let e = anon
        .repository(&reference)
        .unwrap()
        .resolve(&reference)
        .await
        .expect_err("anonymous");
    assert!(matches!(e, RemoteError::Unauthorized { .. }), "{e}");
    assert!(e.to_string().contains("no credentials"), "{e}");

    // A Docker config with a wrong password: the error names the file and the host.
    let dir = tempfile::tempdir().unwrap();
    let config: PathBuf = dir.path().join("config.json");
    let host = format!("127.0.0.1:{}", reg.port());
    std::fs::write(
        &config,
        format!(r#"{{"auths":{{"{host}":{{"username":"berth","password":"wrong"}}}}}}"#),
    )
    .unwrap();
    let wrong = RegistryClient::new(ClientConfig {
        credentials: vec![CredentialSource::DockerConfig(config.clone())],
        ..ClientConfig::default()
    });
    let e = wrong
        .repository(&reference)
        .unwrap()
        .resolve(&reference)
        .await
        .expect_err("wrong password");
    match &e {
        RemoteError::Unauthorized {
            tried: CredentialsTried::DockerConfig { path, host: h },
            url,
        } => {
            assert_eq!(path, &config);
            assert_eq!(h, &host);
            assert!(url.contains(&host));
        }
        other => panic!("expected Unauthorized from config.json, got {other}"),
    }
    assert!(e.to_string().contains("config.json"), "{e}");

    // The callback gives the right ones: push and pull work.
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let callback: berth_remotes::CredentialCallback = Arc::new(move |host: String| {
        seen.lock().unwrap().push(host);
        Box::pin(async { Ok(Some(Credentials::new("berth", "s3cret"))) })
    });
    let client = RegistryClient::new(ClientConfig {
        credentials: vec![
            CredentialSource::DockerConfig(dir.path().join("absent.json")),
            CredentialSource::Callback(callback),
        ],
        ..ClientConfig::default()
    });
    let repo = client.repository(&reference).unwrap();
    push_image(&repo, &img, "1").await;
    let resolved = repo.resolve(&reference).await.expect("resolve with auth");
    assert_eq!(resolved.digest(), img.manifest.0.digest());
    assert_eq!(asked.lock().unwrap().first(), Some(&host));
}

/// A registry stand-in that only speaks the Bearer token dance (Debian's registry has no token
/// server): manifests need `Bearer tok-1`, which `/token` gives for Basic `u:p`. Returns the
/// port and the requests seen (`<method> <path> [<authorization>]`).
fn fake_bearer_registry() -> (u16, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    let port = common::serve(move |req, conn| {
        let auth = req.header("authorization").unwrap_or_default();
        seen.lock()
            .unwrap()
            .push(format!("{} {} [{auth}]", req.method, req.path));
        let body = br#"{"schemaVersion":2}"#;
        if req.path.starts_with("/token?") {
            if auth == Credentials::new("u", "p").basic_header() {
                let t = br#"{"token":"tok-1"}"#;
                respond(
                    conn,
                    "200 OK",
                    &[("Content-Length", t.len().to_string())],
                    t,
                );
            } else {
                respond(
                    conn,
                    "401 Unauthorized",
                    &[("Content-Length", "0".into())],
                    b"",
                );
            }
        } else if auth == "Bearer tok-1" {
            let headers = [
                ("Content-Type", media::OCI_MANIFEST.to_owned()),
                ("Docker-Content-Digest", Digest::sha256(body).to_string()),
                ("Content-Length", body.len().to_string()),
            ];
            let get = req.method == "GET";
            respond(conn, "200 OK", &headers, if get { body } else { b"" });
        } else {
            let host = req.header("host").unwrap_or_default();
            let challenge = format!(
                "Bearer realm=\"http://{host}/token\",service=\"fake\",scope=\"repository:x:pull\""
            );
            let headers = [
                ("WWW-Authenticate", challenge),
                ("Content-Length", "0".into()),
            ];
            respond(conn, "401 Unauthorized", &headers, b"");
        }
    });
    (port, log)
}

#[tokio::test]
async fn bearer_challenge_fetches_a_token_with_the_credentials() {
    let (port, log) = fake_bearer_registry();
    let reference = Reference::parse(&format!("127.0.0.1:{port}/x:y")).unwrap();
    let client = RegistryClient::new(ClientConfig {
        credentials: vec![CredentialSource::Static(Credentials::new("u", "p"))],
        ..ClientConfig::default()
    });
    let repo = client.repository(&reference).unwrap();
    let d = repo
        .resolve(&reference)
        .await
        .expect("resolve with a token");
    assert_eq!(d.size(), 19);
    // The token is reused: a second resolve makes one request.
    repo.resolve(&reference).await.expect("again");
    let log = log.lock().unwrap().clone();
    assert_eq!(log.len(), 4, "{log:#?}");
    assert!(log[0].starts_with("HEAD /v2/x/manifests/y") && log[0].ends_with("[]"));
    assert!(
        log[1].starts_with("GET /token?service=fake&scope=repository%3Ax%3Apull "),
        "{log:#?}"
    );
    assert!(log[2].ends_with("[Bearer tok-1]") && log[3].ends_with("[Bearer tok-1]"));

    // Wrong credentials: the token service refuses, and the error names it.
    let client = RegistryClient::new(ClientConfig {
        credentials: vec![CredentialSource::Static(Credentials::new("u", "bad"))],
        ..ClientConfig::default()
    });
    let e = client
        .repository(&reference)
        .unwrap()
        .resolve(&reference)
        .await
        .expect_err("refused token");
    assert!(matches!(e, RemoteError::Token { .. }), "{e}");
    assert!(e.to_string().contains("/token"), "{e}");
}
