//! containerd's Transfer API in berthd: pull from a local `docker-registry` through the Transfer
//! and Streaming services — driven by a raw tonic client doing what containerd 2.x's `ctr` does
//! (a progress stream over Streaming, then Transfer with OCIRegistry → ImageStore) and by
//! `bctr images pull` — then run the pulled image; push (`bctr images push`, ImageStore →
//! OCIRegistry) and pull back elsewhere; tag through Transfer and `bctr images tag`; the errors.
//!
//! The registry is seeded by a second berthd: `ctr images import` of the busybox fixture, then
//! `ctr images push --plain-http` (containerd 1.6's ctr, client-side push over berthd's API), so
//! the daemon under test starts with none of the content.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_api::types::transfer as tt;
use berth_api::types::Platform;
use berth_tests::registry::Registry;
use berth_tests::streams::{any, open_stream};
use berth_tests::{fails, fixtures, ok, require_root, Berthd};
use prost::Message as _;
use tokio_stream::StreamExt;

const NS: &str = "default";

/// The registry with the busybox fixture pushed as `<registry>/library/busybox:<tag>`.
fn seeded_registry(tag: &str) -> (Registry, String) {
    require_root("pulling and unpacking images");
    let registry = Registry::start(None);
    let seeder = Berthd::start_quiet();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), &format!("docker.io/library/busybox:{tag}"));
    ok(&seeder.ctr(&["images", "import", archive.to_str().unwrap()]));
    let remote = format!("{}/library/busybox:{tag}", registry.host());
    ok(&seeder.ctr(&["images", "tag", &img.name, &remote]));
    ok(&seeder.ctr(&["images", "push", "--plain-http", &remote]));
    (registry, remote)
}

fn host_platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: fixtures::host_arch().into(),
        ..Default::default()
    }
}

fn image_store(name: &str, unpack: Option<&str>) -> prost_types::Any {
    let is = tt::ImageStore {
        name: name.to_owned(),
        platforms: vec![host_platform()],
        unpacks: unpack
            .map(|sn| tt::UnpackConfiguration {
                platform: Some(host_platform()),
                snapshotter: sn.to_owned(),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    };
    any("containerd.types.transfer.ImageStore", is.encode_to_vec())
}

fn registry_source(reference: &str, auth_stream: &str) -> prost_types::Any {
    let r = tt::OciRegistry {
        reference: reference.to_owned(),
        resolver: Some(tt::RegistryResolver {
            auth_stream: auth_stream.to_owned(),
            ..Default::default()
        }),
    };
    any("containerd.types.transfer.OCIRegistry", r.encode_to_vec())
}

/// What containerd 2.x's `ctr images pull` does over the API: a progress stream, then Transfer.
async fn pull(
    ch: &tonic::transport::Channel,
    src: prost_types::Any,
    dst: prost_types::Any,
) -> (Result<(), tonic::Status>, Vec<tt::Progress>) {
    berth_tests::streams::transfer(ch, NS, src, dst).await
}

fn events_of<'a>(events: &'a [tt::Progress], kind: &str) -> Vec<&'a tt::Progress> {
    events
        .iter()
        .filter(|e| e.name.starts_with(&format!("{kind}-")))
        .collect()
}

fn image_names(berthd: &Berthd) -> BTreeSet<String> {
    ok(&berthd.ctr(&["images", "ls", "-q"]))
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn pull_through_transfer_unpacks_runs_and_a_second_pull_downloads_nothing() {
    let (_registry, remote) = seeded_registry("pull");
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());

    let (result, events) = rt.block_on(pull(
        &ch,
        registry_source(&remote, ""),
        image_store(&remote, Some("overlayfs")),
    ));
    result.unwrap_or_else(|e| panic!("pull: {e:?}\n{}", berthd.log()));
    let layers = events_of(&events, "layer");
    assert!(
        layers.iter().any(|e| e.event == "waiting")
            && layers.iter().any(|e| e.event == "complete")
            && layers.iter().any(|e| e.event == "extracted"),
        "{events:#?}"
    );
    for e in &layers {
        assert_eq!(e.parents.len(), 1, "{e:?}");
        assert!(e.parents[0].starts_with("manifest-sha256:"), "{e:?}");
        assert!(e.desc.is_some(), "{e:?}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.event == "saved" && e.name == remote),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.name.is_empty() && e.event.starts_with("Completed pull from")),
        "{events:#?}"
    );
    assert!(image_names(&berthd).contains(&remote));
    // The image's layers are snapshots, and its content is complete.
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + 3, "{snaps}");
    let check = ok(&berthd.ctr(&["images", "check"]));
    assert!(check.contains("complete"), "{check}");
    // No lease is left behind (the pull's lease is gone; the image holds the content).
    let leases = ok(&berthd.ctr(&["leases", "ls"]));
    assert_eq!(leases.lines().count(), 1, "{leases}");

    // Again: the namespace has everything, so nothing is downloaded or extracted.
    let (result, again) = rt.block_on(pull(
        &ch,
        registry_source(&remote, ""),
        image_store(&remote, Some("overlayfs")),
    ));
    result.unwrap();
    assert!(
        again
            .iter()
            .all(|e| !matches!(e.event.as_str(), "downloading" | "extracting" | "extracted")),
        "{again:#?}"
    );
    let layers = events_of(&again, "layer");
    assert!(
        !layers.is_empty() && layers.iter().any(|e| e.event == "already exists"),
        "{again:#?}"
    );
    let statuses = ok(&berthd.ctr(&["content", "active"]));
    assert_eq!(statuses.lines().count(), 1, "{statuses}");

    // The pulled image runs.
    let out = berthd.bctr(&["run", "--rm", &remote, "pulled-run", "/bin/true"]);
    ok(&out);
}

#[test]
fn a_missing_tag_is_not_found_with_the_reference() {
    let (registry, _remote) = seeded_registry("nf");
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());
    let missing = format!("{}/library/busybox:missing", registry.host());
    let (result, _events) = rt.block_on(pull(
        &ch,
        registry_source(&missing, ""),
        image_store(&missing, Some("overlayfs")),
    ));
    let err = result.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert!(err.message().contains(&missing), "{err:?}");
    assert!(!image_names(&berthd).contains(&missing));
    // The daemon still serves, and no lease is left.
    let leases = ok(&berthd.ctr(&["leases", "ls"]));
    assert_eq!(leases.lines().count(), 1, "{leases}");
}

#[test]
fn tag_through_transfer_and_unsupported_pairs() {
    let (_registry, remote) = seeded_registry("tag");
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());
    let (result, _) = rt.block_on(pull(
        &ch,
        registry_source(&remote, ""),
        image_store(&remote, None),
    ));
    result.unwrap();
    // Without an unpack configuration nothing is unpacked.
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1, "{snaps}");

    let (result, events) = rt.block_on(pull(
        &ch,
        image_store(&remote, None),
        image_store("docker.io/library/tagged:1", None),
    ));
    result.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.event == "saved" && e.name == "docker.io/library/tagged:1"),
        "{events:#?}"
    );
    let names = image_names(&berthd);
    assert!(names.contains(&remote) && names.contains("docker.io/library/tagged:1"));
    let list = ok(&berthd.ctr(&["images", "ls"]));
    let digest_of = |name: &str| {
        list.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
            .map(str::to_owned)
    };
    assert_eq!(digest_of(&remote), digest_of("docker.io/library/tagged:1"));

    // Tagging an image that does not exist.
    let (result, _) = rt.block_on(pull(
        &ch,
        image_store("docker.io/library/nothing:1", None),
        image_store("docker.io/library/other:1", None),
    ));
    assert_eq!(result.unwrap_err().code(), tonic::Code::NotFound);

    // An archive stream straight into another archive stream (containerd's "echo" pair) is not
    // done: containerd's Unimplemented, naming both types.
    let (result, _) = rt.block_on(pull(
        &ch,
        any(
            "containerd.types.transfer.ImageImportStream",
            tt::ImageImportStream::default().encode_to_vec(),
        ),
        any(
            "containerd.types.transfer.ImageExportStream",
            tt::ImageExportStream::default().encode_to_vec(),
        ),
    ));
    let err = result.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert_eq!(
        err.message(),
        "method Transfer not implemented for containerd.types.transfer.ImageImportStream to \
         containerd.types.transfer.ImageExportStream"
    );
}

#[test]
fn credentials_come_over_the_auth_stream() {
    require_root("pulling images");
    let registry = Registry::start(Some(("berth", "s3cret")));
    let seeder = Berthd::start_quiet();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:auth");
    ok(&seeder.ctr(&["images", "import", archive.to_str().unwrap()]));
    let remote = format!("{}/library/busybox:auth", registry.host());
    ok(&seeder.ctr(&["images", "tag", &img.name, &remote]));
    ok(&seeder.ctr(&[
        "images",
        "push",
        "--plain-http",
        "-u",
        "berth:s3cret",
        &remote,
    ]));

    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());
    for (password, want_ok) in [("wrong", false), ("s3cret", true)] {
        let (result, asked) = rt.block_on(async {
            let id = format!("auth-{password}");
            let (tx, mut inbound) = open_stream(&ch, NS, &id).await;
            // The client's side of containerd's auth stream: answer each AuthRequest.
            let answer = tokio::spawn(async move {
                let mut asked = Vec::new();
                while let Some(Ok(m)) = inbound.next().await {
                    assert!(m
                        .type_url
                        .ends_with("containerd.types.transfer.AuthRequest"));
                    let req = tt::AuthRequest::decode(m.value.as_slice()).unwrap();
                    asked.push(req.host);
                    let resp = tt::AuthResponse {
                        auth_type: tt::AuthType::Credentials as i32,
                        username: "berth".into(),
                        secret: password.into(),
                        expire_at: None,
                    };
                    let _ = tx
                        .send(any(
                            "containerd.types.transfer.AuthResponse",
                            resp.encode_to_vec(),
                        ))
                        .await;
                }
                asked
            });
            let (result, _) = pull(
                &ch,
                registry_source(&remote, &id),
                image_store(&remote, None),
            )
            .await;
            let asked = tokio::time::timeout(Duration::from_secs(20), answer)
                .await
                .expect("the auth stream ends after the transfer")
                .unwrap();
            (result, asked)
        });
        assert!(asked.contains(&registry.host()), "{asked:?}");
        if want_ok {
            result.unwrap();
        } else {
            let err = result.unwrap_err();
            assert!(
                err.message()
                    .contains("credentials from the client's callback"),
                "{err:?}"
            );
        }
    }
    assert!(image_names(&berthd).contains(&remote));
}

#[test]
fn bctr_images_pull_shows_progress_and_runs() {
    let (registry, remote) = seeded_registry("bctr");
    let berthd = Berthd::start();
    // Not a terminal: plain lines.
    let out = ok(&berthd.bctr(&["images", "pull", &remote]));
    assert!(out.contains("saved") || out.contains(&remote), "{out}");
    assert!(image_names(&berthd).contains(&remote));
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + 3, "{snaps}");
    // --quiet prints nothing.
    let out = berthd.bctr(&["images", "pull", "--quiet", &remote]);
    assert!(ok(&out).is_empty(), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    // A missing tag names the reference.
    let missing = format!("{}/library/busybox:nope", registry.host());
    let err = fails(&berthd.bctr(&["images", "pull", &missing]));
    assert!(err.contains(&missing), "{err}");
    // An unreachable registry names the URL.
    let err = fails(&berthd.bctr(&["images", "pull", "127.0.0.1:1/library/busybox:x"]));
    assert!(err.contains("http://127.0.0.1:1/v2/"), "{err}");

    ok(&berthd.bctr(&["run", "--rm", &remote, "bctr-pulled", "/bin/true"]));
}

/// A berthd with the busybox fixture imported as `docker.io/library/busybox:<tag>`; returns it
/// with the image's target digest.
fn berthd_with_busybox(tag: &str) -> (Berthd, fixtures::FixtureImage) {
    require_root("pushing images");
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), &format!("docker.io/library/busybox:{tag}"));
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
    (berthd, img)
}

/// The target digest `ctr images ls` shows for `name`.
fn target_digest(berthd: &Berthd, name: &str) -> Option<String> {
    ok(&berthd.ctr(&["images", "ls"]))
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.split_whitespace().find(|w| w.starts_with("sha256:")))
        .map(str::to_owned)
}

/// The events of blobs (config and layers), as `(event, name)`.
fn blob_events(events: &[tt::Progress]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.name.starts_with("layer-") || e.name.starts_with("config-"))
        .map(|e| (e.event.clone(), e.name.clone()))
        .collect()
}

#[test]
fn bctr_push_then_pull_elsewhere_runs_and_pushes_again_nothing_or_mounts() {
    let (berthd, img) = berthd_with_busybox("push");
    let registry = Registry::start(None);
    let remote = format!("{}/library/busybox:pushed", registry.host());
    // Not a terminal: plain lines, one per change of state.
    let out = berthd.bctr(&["images", "push", "--plain-http", &remote, &img.name]);
    let text = ok(&out);
    assert!(text.contains("pushed content"), "{text}");
    assert!(text.contains("Completed push to"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("layer-sha256:") && l.contains(" done")),
        "{text}"
    );

    // Again, over the raw API: the registry has everything, nothing is uploaded.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());
    let (result, events) = rt.block_on(pull(
        &ch,
        image_store(&img.name, None),
        registry_source(&remote, ""),
    ));
    result.unwrap_or_else(|e| panic!("push: {e:?}\n{}", berthd.log()));
    let blobs = blob_events(&events);
    assert!(!blobs.is_empty(), "{events:#?}");
    assert!(
        blobs
            .iter()
            .all(|(e, _)| e == "waiting" || e == "already exists"),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| e.name.starts_with("manifest-"))
            .any(|e| e.event == "already exists"),
        "{events:#?}"
    );
    assert!(events.iter().all(|e| e.event != "uploading"), "{events:#?}");

    // A second, empty berthd pulls what was pushed: same target, and it runs.
    let other = Berthd::start();
    ok(&other.bctr(&["images", "pull", "--quiet", &remote]));
    assert_eq!(
        target_digest(&other, &remote),
        target_digest(&berthd, &img.name)
    );
    assert!(target_digest(&other, &remote).is_some());

    // From there (its blobs labelled with where they came from), a push to another repository
    // of the same registry mounts them instead of uploading.
    let elsewhere = format!("{}/mirror/busybox:mounted", registry.host());
    let ch2 = rt.block_on(other.channel());
    let (result, events) = rt.block_on(pull(
        &ch2,
        image_store(&remote, None),
        registry_source(&elsewhere, ""),
    ));
    result.unwrap_or_else(|e| panic!("push: {e:?}\n{}", other.log()));
    let blobs = blob_events(&events);
    let layers: Vec<_> = blobs
        .iter()
        .filter(|(_, n)| n.starts_with("layer-"))
        .collect();
    assert!(
        !layers.is_empty()
            && layers
                .iter()
                .filter(|(e, _)| e != "waiting")
                .all(|(e, _)| e == "mounted"),
        "{events:#?}"
    );
    ok(&other.bctr(&["images", "pull", "--quiet", &elsewhere]));
    assert_eq!(
        target_digest(&other, &elsewhere),
        target_digest(&berthd, &img.name)
    );

    ok(&other.bctr(&["run", "--rm", &remote, "pushed-run", "/bin/true"]));
}

#[test]
fn bctr_images_tag_and_push_of_a_missing_image() {
    let (berthd, img) = berthd_with_busybox("tagme");
    let target = "docker.io/library/tagged:2";
    assert_eq!(
        ok(&berthd.bctr(&["images", "tag", &img.name, target])).trim(),
        target
    );
    assert_eq!(
        target_digest(&berthd, target),
        target_digest(&berthd, &img.name)
    );
    assert!(target_digest(&berthd, target).is_some());
    // An existing target is refused without --force, and kept.
    let err = fails(&berthd.bctr(&["images", "tag", &img.name, target]));
    assert!(
        err.contains("already exists") && err.contains("--force"),
        "{err}"
    );
    ok(&berthd.bctr(&["images", "tag", "--force", &img.name, target]));
    assert_eq!(
        target_digest(&berthd, target),
        target_digest(&berthd, &img.name)
    );
    // A source that does not exist.
    let err = fails(&berthd.bctr(&["images", "tag", "docker.io/library/nothing:1", "y:1"]));
    assert!(err.contains("not found"), "{err}");

    // Pushing an image that is not here says what to do, before any registry is asked.
    let err = fails(&berthd.bctr(&[
        "images",
        "push",
        "127.0.0.1:1/library/nothing:1",
        "docker.io/library/nothing:1",
    ]));
    assert!(err.contains("import or pull it first"), "{err}");
    assert!(err.contains("nothing:1"), "{err}");
}

#[test]
fn bctr_push_with_credentials_over_the_auth_stream() {
    let (berthd, img) = berthd_with_busybox("authpush");
    let registry = Registry::start(Some(("berth", "s3cret")));
    let remote = format!("{}/library/busybox:auth", registry.host());
    let err = fails(&berthd.bctr(&["images", "push", "--quiet", &remote, &img.name]));
    assert!(err.contains("--user"), "{err}");
    let err = fails(&berthd.bctr(&[
        "images",
        "push",
        "--quiet",
        "-u",
        "berth:wrong",
        &remote,
        &img.name,
    ]));
    assert!(err.contains("check the user name and password"), "{err}");
    ok(&berthd.bctr(&[
        "images",
        "push",
        "--quiet",
        "-u",
        "berth:s3cret",
        &remote,
        &img.name,
    ]));
    // What was pushed pulls back with the same credentials.
    let other = Berthd::start();
    ok(&other.bctr(&[
        "images",
        "pull",
        "--quiet",
        "--no-unpack",
        "-u",
        "berth:s3cret",
        &remote,
    ]));
    assert_eq!(
        target_digest(&other, &remote),
        target_digest(&berthd, &img.name)
    );
}

#[test]
fn bctr_run_pulls_a_missing_image_first() {
    let (registry, remote) = seeded_registry("run");
    let berthd = Berthd::start();
    assert!(!image_names(&berthd).contains(&remote));
    let out = berthd.bctr(&["run", "--rm", &remote, "run-pulls", "/bin/true"]);
    ok(&out);
    // The pull's progress went to stderr: stdout is the container's (here: nothing).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not found locally") && stderr.contains(&remote),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(image_names(&berthd).contains(&remote));
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + 3, "{snaps}");
    // Present now: a second run pulls nothing.
    let out = berthd.bctr(&["run", "--rm", &remote, "run-again", "/bin/true"]);
    ok(&out);
    assert!(out.stderr.is_empty(), "{out:?}");

    // A missing image that does not pull either: both said, and nothing left behind.
    let missing = format!("{}/library/busybox:absent", registry.host());
    let err = fails(&berthd.bctr(&["run", "--rm", &missing, "run-missing", "/bin/true"]));
    assert!(
        err.contains("not found locally") && err.contains("the pull failed"),
        "{err}"
    );
    assert!(err.contains(&missing), "{err}");
    assert!(!image_names(&berthd).contains(&missing));
    let containers = ok(&berthd.ctr(&["containers", "ls", "-q"]));
    assert!(containers.trim().is_empty(), "{containers}");
}

/// The digests `ctr content ls` lists.
fn content_digests(berthd: &Berthd) -> BTreeSet<String> {
    ok(&berthd.ctr(&["content", "ls"]))
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|d| d.starts_with("sha256:"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_multi_platform_index_pulls_the_host_platform_and_others_on_request() {
    require_root("pulling images");
    let registry = Registry::start(None);
    let seeder = Berthd::start_quiet();
    let dir = tempfile::tempdir().unwrap();
    let img = fixtures::busybox_multiplatform_image("docker.io/library/busybox:multi");
    let archive = dir.path().join("multi.tar");
    fixtures::write_oci_archive(&archive, std::slice::from_ref(&img));
    ok(&seeder.ctr(&[
        "images",
        "import",
        "--all-platforms",
        archive.to_str().unwrap(),
    ]));
    let remote = format!("{}/library/busybox:multi", registry.host());
    ok(&seeder.ctr(&["images", "tag", &img.name, &remote]));
    ok(&seeder.ctr(&["images", "push", "--plain-http", &remote]));

    let other = &img.other_platforms[0];
    let other_platform = format!("linux/{}", other.architecture);
    let other_layer = other.layers[0].digest.clone();
    let host_layers: Vec<String> = img.layers.iter().map(|l| l.digest.clone()).collect();

    let berthd = Berthd::start();
    ok(&berthd.bctr(&["images", "pull", "--quiet", &remote]));
    assert_eq!(
        target_digest(&berthd, &remote).as_deref(),
        img.index_digest.as_deref()
    );
    let have = content_digests(&berthd);
    for l in &host_layers {
        assert!(have.contains(l), "host layer {l} missing: {have:?}");
    }
    assert!(have.contains(&img.manifest_digest), "{have:?}");
    assert!(
        !have.contains(&other_layer) && !have.contains(&other.manifest.digest),
        "the {other_platform} content was pulled too: {have:?}"
    );

    // Another platform on request: its manifest, config and layer come (not unpacked here).
    let out = berthd.bctr(&["images", "pull", "--platform", &other_platform, &remote]);
    ok(&out);
    // And they stay once the pull's lease is gone: the index (already here) holds them.
    ok(&berthd.bctr(&["gc"]));
    let have = content_digests(&berthd);
    assert!(
        have.contains(&other_layer)
            && have.contains(&other.manifest.digest)
            && have.contains(&other.config.digest),
        "{have:?}"
    );
    let check = ok(&berthd.ctr(&["images", "check"]));
    assert!(check.contains("complete"), "{check}");

    // The host platform still runs.
    ok(&berthd.bctr(&["run", "--rm", &remote, "multi-run", "/bin/true"]));
}

#[test]
fn containerd_ctr_pulls_into_berthd_and_runs() {
    let (_registry, remote) = seeded_registry("ctrpull");
    let berthd = Berthd::start();
    ok(&berthd.ctr(&["images", "pull", "--plain-http", &remote]));
    assert!(image_names(&berthd).contains(&remote));
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + 3, "{snaps}");
    ok(&berthd.ctr(&["run", "--rm", &remote, "ctr-pulled", "/bin/true"]));
}

/// The offset of the content ingest expecting `digest`, from `bctr content active --format json`.
fn ingest_offset(berthd: &Berthd, digest: &str) -> Option<u64> {
    let out = ok(&berthd.bctr(&["content", "active", "--format", "json"]));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("content active json");
    rows.iter()
        .find(|r| r["expected"] == digest)
        .and_then(|r| r["offset"].as_u64())
}

/// A pull killed halfway (berthd killed with SIGKILL while the big layer is downloading) and
/// pulled again after a restart fetches only the rest: the ingest keeps the bytes that arrived
/// and the registry is asked for the remaining range. Bytes are counted at a throttling proxy in
/// front of the registry.
#[test]
fn a_pull_killed_halfway_fetches_only_the_rest_when_pulled_again() {
    require_root("pulling and unpacking images");
    let registry = Registry::start(None);
    // One layer of one incompressible 32 MiB file.
    let name = format!("{}/big/resume:1", registry.host());
    let img = fixtures::many_file_image(&name, 1, 1, 32 << 10);
    let layer = img.layers[0].clone();
    let layer_size = layer.size();
    {
        let seeder = Berthd::start_quiet();
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("big.tar");
        fixtures::write_oci_archive(&archive, std::slice::from_ref(&img));
        ok(&seeder.ctr(&["images", "import", "--no-unpack", archive.to_str().unwrap()]));
        ok(&seeder.ctr(&["images", "push", "--plain-http", &name]));
    }

    // 8 MiB/s: the layer takes about 4 s, long enough to stop it in the middle.
    let proxy = berth_tests::registry::ThrottledProxy::start(registry.port(), 8 << 20);
    let remote = format!("{}/big/resume:1", proxy.host());
    let mut berthd = Berthd::start();
    let mut pull = std::process::Command::new(berth_tests::bin("bctr"))
        .arg("--address")
        .arg(berthd.socket())
        .args(["images", "pull", "--quiet", &remote])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start bctr images pull");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while proxy.bytes_sent() < layer_size / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the pull did not get halfway in 60 s ({} bytes)",
            proxy.bytes_sent()
        );
        assert!(
            pull.try_wait().unwrap().is_none(),
            "the pull ended before it was killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut daemon = berthd.child.take().expect("berthd runs");
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    let _ = pull.wait();
    let first = proxy.bytes_sent();
    assert!(
        first < layer_size,
        "the whole layer went through ({first} bytes)"
    );

    berthd.restart();
    // The bytes that reached the ingest before the kill are still there…
    let kept = ingest_offset(&berthd, &layer.digest).expect("the layer's ingest survives");
    assert!(
        kept >= layer_size / 4 && kept <= first,
        "kept {kept} of {layer_size} bytes; {first} went through the proxy"
    );
    assert!(
        target_digest(&berthd, &remote).is_none(),
        "an image was recorded"
    );

    // …and the second pull fetches the rest only: the layer's remaining bytes plus the small
    // documents and HTTP headers (well under 256 KiB).
    proxy.reset();
    ok(&berthd.bctr(&["images", "pull", "--quiet", &remote]));
    let second = proxy.bytes_sent();
    let rest = layer_size - kept;
    eprintln!(
        "layer {layer_size} bytes; first pull: {first} through the proxy, {kept} kept; \
         second pull: {second} (rest of the layer: {rest})"
    );
    assert!(
        second >= rest && second < rest + (256 << 10),
        "the second pull fetched {second} bytes; the rest of the layer is {rest}"
    );
    assert_eq!(
        target_digest(&berthd, &remote).as_deref(),
        Some(img.manifest_digest.as_str())
    );
    assert_eq!(ingest_offset(&berthd, &layer.digest), None);
    // The layer is whole: its blob is the registry's, digest checked, and it was unpacked.
    let blob = berthd.ctr(&["content", "get", &layer.digest]);
    assert_eq!(fixtures::sha256_digest(&blob.stdout), layer.digest);
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + 1, "{snaps}");
}

/// A client that is neither Berth's nor containerd's drives Transfer and Streaming: PyPI's
/// grpcio with raw protobuf (tests/python/transfer_pull.py) opens a progress stream, pulls with
/// OCIRegistry → ImageStore (unpack into overlayfs), reads containerd's progress events until
/// berthd closes the stream; a missing tag answers NotFound naming the reference.
#[test]
fn pypi_grpcio_pulls_through_transfer_with_progress() {
    let (registry, remote) = seeded_registry("grpcio");
    let berthd = Berthd::start();
    let missing = format!("{}/library/busybox:nope", registry.host());
    let script =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/transfer_pull.py");
    let out = std::process::Command::new(berth_tests::grpcio_python())
        .arg(&script)
        .arg(berthd.socket())
        .args([remote.as_str(), fixtures::host_arch(), missing.as_str()])
        .output()
        .expect("run transfer_pull.py");
    assert!(
        out.status.success(),
        "transfer_pull.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("transfer_pull.py prints JSON");
    eprintln!("grpcio {}", result["grpcio"]);
    assert_eq!(result["pull"], "OK", "{result}");
    assert_eq!(result["progress_stream_ended"], true, "{result}");
    let events = result["events"].as_array().expect("events");
    let has = |event: &str, name: &dyn Fn(&str) -> bool| {
        events
            .iter()
            .any(|e| e["event"] == event && name(e["name"].as_str().unwrap_or_default()))
    };
    assert!(
        has("complete", &|n| n.starts_with("layer-")),
        "a layer completes: {result}"
    );
    assert!(
        has("saved", &|n| n == remote),
        "the image is saved: {result}"
    );
    assert!(
        events
            .iter()
            .all(|e| e.get("unexpected").is_none() && e.get("stream_error").is_none()),
        "{result}"
    );
    assert_eq!(result["missing"]["code"], "NOT_FOUND", "{result}");
    let details = result["missing"]["details"].as_str().unwrap_or_default();
    assert!(details.contains(&missing), "{details}");

    assert!(image_names(&berthd).contains(&remote));
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + 3, "{snaps}");
    ok(&berthd.ctr(&["run", "--rm", &remote, "grpcio-pulled", "/bin/true"]));
}

/// A registry serving a layer whose bytes do not match the manifest's digest: the pull fails
/// naming the digests, records no image and leaves no snapshot; the daemon serves on and a pull
/// of a sound image works.
#[test]
fn a_layer_that_does_not_match_its_digest_fails_the_pull_and_records_nothing() {
    let (registry, remote) = seeded_registry("corrupt");
    let dir = tempfile::tempdir().unwrap();
    let (img, _) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:corrupt");
    let layer = img.layers.last().expect("a layer").clone();
    let path = registry.blob_data_path(&layer.digest);
    let mut bytes = std::fs::read(&path).expect("the registry has the layer");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let berthd = Berthd::start();
    let err = fails(&berthd.bctr(&["images", "pull", &remote]));
    assert!(err.contains(&layer.digest), "{err}");
    assert!(err.contains("digest"), "{err}");
    assert!(!image_names(&berthd).contains(&remote));
    // Layers unpacked before the bad one were held by the pull's lease only: once it is gone
    // the collector takes them (run now rather than waited for).
    ok(&berthd.bctr(&["gc"]));
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1, "no snapshot left: {snaps}");
    assert_eq!(
        ingest_offset(&berthd, &layer.digest),
        None,
        "the bad ingest is dropped"
    );

    // The registry mended, the same daemon pulls.
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    ok(&berthd.bctr(&["images", "pull", "--quiet", &remote]));
    assert!(image_names(&berthd).contains(&remote));
}

/// A registry that accepts the connection and never answers: the pull fails once the
/// configured read timeout (`registry_read_timeout`, 1 s here) has passed, with an error that
/// names the registry and says it timed out; nothing is recorded and the daemon serves on.
#[test]
fn a_registry_that_hangs_fails_the_pull_after_the_read_timeout() {
    require_root("pulling images");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = std::thread::spawn(move || {
        // Hold every connection open, unanswered, until the test ends.
        let conns: Vec<_> = silent.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(60));
        drop(conns);
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("berthd.toml");
    std::fs::write(
        &config,
        "[plugins.\"io.containerd.transfer.v1.local\"]\n  registry_read_timeout = \"1s\"\n",
    )
    .unwrap();
    let berthd = Berthd::start_with(&["--config", config.to_str().unwrap()]);
    let remote = format!("127.0.0.1:{port}/library/busybox:hangs");
    let started = std::time::Instant::now();
    let err = fails(&berthd.bctr(&["images", "pull", &remote]));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!image_names(&berthd).contains(&remote));
    ok(&berthd.bctr(&["version"]));
    drop(held);
}

/// Under a terminal (`script` gives bctr a pty), pull and import draw live bars — a line per
/// layer with its bar, bytes and speed, redrawn in place with terminal escapes — where a pipe
/// gets plain lines (the other tests).
#[test]
fn progress_draws_live_bars_under_a_terminal() {
    let (registry, _) = seeded_registry("pty");
    // Slowed to 2 MiB/s so that the bars are drawn while the layers move.
    let proxy = berth_tests::registry::ThrottledProxy::start(registry.port(), 2 << 20);
    let remote = format!("{}/library/busybox:pty", proxy.host());
    let berthd = Berthd::start();
    let bctr = berth_tests::bin("bctr");
    let sock = berthd.socket();
    let out = berth_tests::in_a_terminal(&format!(
        "{} --address {} images pull {remote}",
        bctr.display(),
        sock.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(image_names(&berthd).contains(&remote), "{text}");
    assert!(text.contains("\x1b["), "no terminal escapes: {text:?}");
    assert!(text.contains("layer-sha256:"), "{text:?}");
    assert!(
        text.contains("=>") || text.contains("=]"),
        "no bar: {text:?}"
    );
    assert!(
        text.contains("MiB") || text.contains("KiB"),
        "no sizes: {text:?}"
    );

    // An import through Transfer: the archive's bytes as a bar beside the daemon's events.
    let dir = tempfile::tempdir().unwrap();
    let (_, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:ptyi");
    let out = berth_tests::in_a_terminal(&format!(
        "{} --address {} images import {}",
        bctr.display(),
        sock.display(),
        archive.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("\x1b["), "no terminal escapes: {text:?}");
    assert!(text.contains("archive"), "{text:?}");
}
