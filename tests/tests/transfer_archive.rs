//! Image archives through containerd's Transfer API in berthd: import (`ImageImportStream` →
//! `ImageStore`) and export (`ImageStore` → `ImageExportStream`).
//!
//! A raw tonic client does what containerd 2.x's `ctr images import` / `export` do: the archive
//! on a named stream in containerd's binary stream protocol (bare type URLs; the receiver grants
//! credit with `WindowUpdate`, the sender sends `Data` within it, of at most 32 KiB, and closes
//! the stream at the end), a progress stream, then Transfer. Then `bctr images import` /
//! `export`, which go through Transfer by themselves (progress as lines in a pipe) and fall back
//! to their client-side path on a daemon without it; and archives that must be refused.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::Command;
use std::time::Duration;

use berth_api::types::transfer as tt;
use berth_api::types::Platform;
use berth_tests::streams::{any, open_stream};
use berth_tests::{bin, fails, fixtures, ok, require_root, Berthd, Containerd};
use prost::Message as _;
use tokio::sync::mpsc;

const NS: &str = "default";
/// The prefix containerd 2.x's ctr names imports with (`import-<date>`), at a fixed date.
const PREFIX: &str = "import-2024-01-01";
/// containerd's `maxRead`: the largest `Data` its Go sender sends.
const GO_MAX_READ: usize = 32 * 1024;
/// containerd's receive window (`windowSize`).
const GO_WINDOW: i32 = 64 * 1024;

fn host_platform() -> Platform {
    Platform {
        os: "linux".into(),
        architecture: fixtures::host_arch().into(),
        ..Default::default()
    }
}

/// The `ImageStore` containerd 2.x's `ctr images import` sends (no `--base-name`, so the
/// dated prefix that names in the archive may overwrite; `--digests` adds digest names).
fn import_store(digests: bool, unpack: bool) -> prost_types::Any {
    let is = tt::ImageStore {
        platforms: vec![host_platform()],
        extra_references: vec![tt::ImageReference {
            name: PREFIX.into(),
            is_prefix: true,
            allow_overwrite: true,
            add_digest: digests,
            skip_named_digest: false,
        }],
        unpacks: if unpack {
            vec![tt::UnpackConfiguration {
                platform: Some(host_platform()),
                snapshotter: String::new(),
            }]
        } else {
            Vec::new()
        },
        ..Default::default()
    };
    any("containerd.types.transfer.ImageStore", is.encode_to_vec())
}

fn import_source(stream: &str) -> prost_types::Any {
    let s = tt::ImageImportStream {
        stream: stream.to_owned(),
        media_type: String::new(),
        force_compress: false,
    };
    any(
        "containerd.types.transfer.ImageImportStream",
        s.encode_to_vec(),
    )
}

/// The `ImageStore` and `ImageExportStream` containerd 2.x's `ctr images export` sends.
fn export_pair(stream: &str, names: &[&str]) -> (prost_types::Any, prost_types::Any) {
    let is = tt::ImageStore {
        extra_references: names
            .iter()
            .map(|n| tt::ImageReference {
                name: (*n).to_owned(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let es = tt::ImageExportStream {
        stream: stream.to_owned(),
        ..Default::default()
    };
    (
        any("containerd.types.transfer.ImageStore", is.encode_to_vec()),
        any(
            "containerd.types.transfer.ImageExportStream",
            es.encode_to_vec(),
        ),
    )
}

fn type_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// containerd's `SendStream`: nothing before credit, `Data` of at most 32 KiB and never more
/// than the credit left, the stream closed (the client's side) at the end of `bytes`. Returns
/// the most credit the daemon ever had outstanding.
async fn go_send(
    tx: mpsc::Sender<prost_types::Any>,
    mut inbound: tonic::Streaming<prost_types::Any>,
    bytes: Vec<u8>,
) -> i64 {
    let mut window: i64 = 0;
    let mut most: i64 = 0;
    let mut off = 0;
    while off < bytes.len() {
        while window <= 0 {
            let Ok(Some(m)) = inbound.message().await else {
                // The daemon stopped reading (it refused the archive): the sender gives up.
                return most;
            };
            assert_eq!(
                type_name(&m.type_url),
                "containerd.types.transfer.WindowUpdate",
                "{m:?}"
            );
            window += i64::from(tt::WindowUpdate::decode(m.value.as_slice()).unwrap().update);
            most = most.max(window);
        }
        let n = (bytes.len() - off)
            .min(GO_MAX_READ)
            .min(usize::try_from(window).unwrap());
        let data = tt::Data {
            data: bytes[off..off + n].to_vec(),
        };
        if tx
            .send(any("containerd.types.transfer.Data", data.encode_to_vec()))
            .await
            .is_err()
        {
            return most;
        }
        window -= n as i64;
        off += n;
    }
    drop(tx);
    // The daemon closes the stream once it has read the archive.
    while let Ok(Some(_)) = inbound.message().await {}
    most
}

/// containerd's `ReceiveStream`: 64 KiB of credit whenever less is outstanding, the data
/// collected until the daemon closes the stream. Checks the daemon never sends beyond it.
async fn go_receive(
    tx: mpsc::Sender<prost_types::Any>,
    mut inbound: tonic::Streaming<prost_types::Any>,
) -> Vec<u8> {
    let mut window: i64 = 0;
    let mut out = Vec::new();
    loop {
        if window < i64::from(GO_WINDOW) {
            let u = tt::WindowUpdate { update: GO_WINDOW };
            if tx
                .send(any(
                    "containerd.types.transfer.WindowUpdate",
                    u.encode_to_vec(),
                ))
                .await
                .is_ok()
            {
                window += i64::from(GO_WINDOW);
            }
        }
        match inbound.message().await {
            Ok(Some(m)) => {
                assert_eq!(type_name(&m.type_url), "containerd.types.transfer.Data");
                let d = tt::Data::decode(m.value.as_slice()).unwrap().data;
                assert!(
                    (d.len() as i64) <= window,
                    "{} bytes sent on a window of {window}",
                    d.len()
                );
                window -= d.len() as i64;
                out.extend(d);
            }
            Ok(None) => return out,
            Err(s) => panic!("export stream: {s:?}"),
        }
    }
}

/// A transfer as containerd 2.x's client makes it; the result and the progress events.
async fn transfer(
    ch: &tonic::transport::Channel,
    src: prost_types::Any,
    dst: prost_types::Any,
) -> (Result<(), tonic::Status>, Vec<tt::Progress>) {
    berth_tests::streams::transfer(ch, NS, src, dst).await
}

fn unique() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Imports `archive` as containerd 2.x's ctr does; the result, the events, the most credit
/// the daemon granted.
async fn import(
    ch: &tonic::transport::Channel,
    archive: Vec<u8>,
    store: prost_types::Any,
) -> (Result<(), tonic::Status>, Vec<tt::Progress>, i64) {
    let id = format!("import-{}", unique());
    let (tx, inbound) = open_stream(ch, NS, &id).await;
    let sender = tokio::spawn(go_send(tx, inbound, archive));
    let (result, events) = transfer(ch, import_source(&id), store).await;
    let most = tokio::time::timeout(Duration::from_secs(20), sender)
        .await
        .expect("the import stream ends with the transfer")
        .unwrap();
    (result, events, most)
}

/// Exports `names` as containerd 2.x's ctr does; the result and the archive's bytes.
async fn export(
    ch: &tonic::transport::Channel,
    names: &[&str],
) -> (Result<(), tonic::Status>, Vec<u8>) {
    let id = format!("export-{}", unique());
    let (tx, inbound) = open_stream(ch, NS, &id).await;
    let receiver = tokio::spawn(go_receive(tx, inbound));
    let (src, dst) = export_pair(&id, names);
    let (result, _events) = transfer(ch, src, dst).await;
    let bytes = tokio::time::timeout(Duration::from_secs(20), receiver)
        .await
        .expect("the export stream ends with the transfer")
        .unwrap();
    (result, bytes)
}

fn saved(events: &[tt::Progress]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.event == "saved")
        .map(|e| {
            (
                e.name.clone(),
                e.desc
                    .as_ref()
                    .map(|d| d.digest.clone())
                    .unwrap_or_default(),
            )
        })
        .collect()
}

/// `name → target digest` of the images of namespace `ns`.
fn images(berthd: &Berthd, ns: &str) -> Vec<(String, String)> {
    ok(&berthd.ctr(&["-n", ns, "images", "ls"]))
        .lines()
        .skip(1)
        .map(|l| {
            let mut w = l.split_whitespace();
            let name = w.next().unwrap_or_default().to_owned();
            let digest = w
                .find(|x| x.starts_with("sha256:"))
                .unwrap_or_default()
                .to_owned();
            (name, digest)
        })
        .collect()
}

fn leases(berthd: &Berthd) -> usize {
    ok(&berthd.ctr(&["leases", "ls", "-q"])).lines().count()
}

/// The member names of a tar.
fn tar_names(bytes: &[u8]) -> Vec<String> {
    tar::Archive::new(bytes)
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// (a) What containerd 2.x's `ctr images import` sends, byte for byte: an OCI layout and a
/// (gzip-compressed) docker archive, named as containerd names them, unpacked, and run.
#[test]
fn import_as_containerd_2_sends_it_names_unpacks_and_runs() {
    require_root("unpacking and running an imported image");
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());

    // An OCI layout whose index names its image in full.
    let img = fixtures::busybox_image("docker.io/library/busybox:ximport");
    let oci = fixtures::oci_archive_bytes(
        std::slice::from_ref(&img),
        fixtures::OciArchiveOptions::default(),
    );
    let (result, events, most) = rt.block_on(import(&ch, oci.clone(), import_store(false, true)));
    result.unwrap_or_else(|e| panic!("import: {e:?}\n{}", berthd.log()));
    // The daemon granted credit as a receiver does, and no more than it can queue.
    assert!(most > 0 && most <= 2 << 20, "{most}");
    let statuses: Vec<&str> = events
        .iter()
        .filter(|e| e.name.is_empty())
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(statuses, ["Importing", "Completed import"], "{events:#?}");
    assert_eq!(
        saved(&events),
        [(img.name.clone(), img.manifest_digest.clone())]
    );
    assert!(events.iter().any(|e| e.event == "extracted"), "{events:#?}");
    assert_eq!(
        images(&berthd, NS),
        [(img.name.clone(), img.manifest_digest.clone())]
    );
    // The documents hold their children for the collector, and the image is complete.
    ok(&berthd.bctr(&["gc"]));
    let check = ok(&berthd.ctr(&["images", "check"]));
    assert!(check.contains("complete"), "{check}");
    let snaps = ok(&berthd.ctr(&["snapshots", "--snapshotter", "overlayfs", "ls"]));
    assert_eq!(snaps.lines().count(), 1 + img.layers.len(), "{snaps}");
    assert_eq!(leases(&berthd), 0, "the import's lease is left behind");
    // It runs.
    ok(&berthd.ctr(&["run", "--rm", &img.name, "ximport-run", "/bin/true"]));

    // The same archive naming its image by tag only: the prefix makes the name; with
    // --digests (skip_named_digest false) every manifest and the index get digest names too.
    let tagged = fixtures::busybox_image("docker.io/library/busybox:xtag");
    let only_tag = fixtures::oci_archive_bytes(
        std::slice::from_ref(&tagged),
        fixtures::OciArchiveOptions {
            image_name_annotation: false,
            ref_name_annotation: true,
        },
    );
    let (result, events, _) = rt.block_on(import(&ch, only_tag, import_store(true, false)));
    result.unwrap();
    let names: BTreeSet<String> = saved(&events).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&format!("{PREFIX}:xtag")), "{names:?}");
    assert!(
        names.contains(&format!("{PREFIX}@{}", tagged.manifest_digest)),
        "{names:?}"
    );
    assert_eq!(
        names.len(),
        3,
        "the index's digest name is missing: {names:?}"
    );

    // A docker archive, gzip-compressed, into another namespace as bctr's local import does it
    // in a third: the same manifest, the same names.
    let docker = fixtures::busybox_image("docker.io/library/busybox:xdocker");
    let tar = fixtures::docker_archive_bytes(&docker);
    let (result, events, _) = rt.block_on(import(&ch, gzip(&tar), import_store(false, true)));
    result.unwrap_or_else(|e| panic!("docker import: {e:?}\n{}", berthd.log()));
    let got = saved(&events);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, docker.name);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.tar");
    std::fs::write(&path, &tar).unwrap();
    ok(&berthd.bctr(&[
        "-n",
        "local",
        "images",
        "import",
        "--local",
        "--no-unpack",
        path.to_str().unwrap(),
    ]));
    assert_eq!(images(&berthd, "local"), [got[0].clone()]);
    ok(&berthd.ctr(&["run", "--rm", &docker.name, "xdocker-run", "/bin/true"]));
    assert_eq!(leases(&berthd), 0);
}

/// (b) Export through Transfer: the bytes bctr's client-side export writes (containerd 1.6's
/// layout), which import elsewhere with the same image.
#[test]
fn export_matches_the_local_export_and_imports_elsewhere() {
    require_root("starting berthd");
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:xexport");
    let multi = fixtures::busybox_multiplatform_image("docker.io/library/busybox:xmulti");
    let multi_tar = dir.path().join("multi.tar");
    fixtures::write_oci_archive(&multi_tar, std::slice::from_ref(&multi));
    ok(&berthd.bctr(&["images", "import", "--no-unpack", archive.to_str().unwrap()]));
    ok(&berthd.bctr(&[
        "images",
        "import",
        "--no-unpack",
        "--all-platforms",
        multi_tar.to_str().unwrap(),
    ]));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());

    let (result, bytes) = rt.block_on(export(&ch, &[&img.name, &multi.name]));
    result.unwrap_or_else(|e| panic!("export: {e:?}\n{}", berthd.log()));
    let local = dir.path().join("local.tar");
    ok(&berthd.bctr(&[
        "images",
        "export",
        "--local",
        local.to_str().unwrap(),
        &img.name,
        &multi.name,
    ]));
    assert!(
        bytes == std::fs::read(&local).unwrap(),
        "the Transfer export differs from the local one: {:?} vs {:?}",
        tar_names(&bytes),
        tar_names(&std::fs::read(&local).unwrap())
    );
    // The index is there whole, but only this platform's blobs.
    let names = tar_names(&bytes);
    let other = &multi.other_platforms[0];
    assert!(names.contains(&format!(
        "blobs/sha256/{}",
        multi
            .index_digest
            .as_ref()
            .unwrap()
            .trim_start_matches("sha256:")
    )));
    assert!(
        !names.contains(&format!(
            "blobs/sha256/{}",
            other.layers[0].digest.trim_start_matches("sha256:")
        )),
        "{names:?}"
    );
    assert!(names.contains(&"manifest.json".to_owned()), "{names:?}");
    assert_eq!(leases(&berthd), 0, "the export's lease is left behind");

    // Into another berthd, through Transfer too: the same images, the same targets.
    let other_daemon = Berthd::start();
    let ch2 = rt.block_on(other_daemon.channel());
    let (result, _, _) = rt.block_on(import(&ch2, bytes.clone(), import_store(false, false)));
    result.unwrap();
    let mut theirs = images(&other_daemon, NS);
    theirs.sort();
    let mut ours = images(&berthd, NS);
    ours.sort();
    assert_eq!(theirs, ours);
    // containerd 1.6's ctr reads it as well.
    let written = dir.path().join("t.tar");
    std::fs::write(&written, &bytes).unwrap();
    ok(&other_daemon.ctr(&[
        "-n",
        "ctr",
        "images",
        "import",
        "--no-unpack",
        written.to_str().unwrap(),
    ]));
    assert!(images(&other_daemon, "ctr")
        .iter()
        .any(|(n, d)| *n == img.name && *d == img.manifest_digest));

    // bctr's own export through Transfer, all platforms, equals its local one too.
    let via = dir.path().join("via.tar");
    let local_all = dir.path().join("local-all.tar");
    ok(&berthd.bctr(&[
        "images",
        "export",
        "--all-platforms",
        via.to_str().unwrap(),
        &multi.name,
    ]));
    ok(&berthd.bctr(&[
        "images",
        "export",
        "--local",
        "--all-platforms",
        local_all.to_str().unwrap(),
        &multi.name,
    ]));
    let via = std::fs::read(&via).unwrap();
    assert!(via == std::fs::read(&local_all).unwrap());
    assert!(tar_names(&via).contains(&format!(
        "blobs/sha256/{}",
        other.layers[0].digest.trim_start_matches("sha256:")
    )));
    assert!(
        berthd.log().contains("exported"),
        "bctr did not export through the daemon:\n{}",
        berthd.log()
    );
}

/// (c) bctr through Transfer: progress as plain lines in a pipe, the archive alone on stdout
/// for `export -`, nothing with `--quiet`; the client-side path on a daemon without Transfer.
#[test]
fn bctr_import_and_export_through_transfer_show_progress_lines() {
    require_root("unpacking images");
    let dir = tempfile::tempdir().unwrap();
    let berthd = Berthd::start();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:xbctr");
    let out = ok(&berthd.bctr(&["images", "import", archive.to_str().unwrap()]));
    for line in ["Importing", "Completed import"] {
        assert!(out.lines().any(|l| l == line), "{out}");
    }
    assert!(
        out.lines()
            .any(|l| l == format!("{} saved {}", img.name, img.manifest_digest)),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("sent ") && l.ends_with("/s)")),
        "{out}"
    );
    assert!(berthd.log().contains("imported"), "{}", berthd.log());
    ok(&berthd.ctr(&["run", "--rm", &img.name, "xbctr-run", "/bin/true"]));

    // From stdin, quietly: nothing on stdout.
    let piped = berth_tests::output_with_stdin(
        Command::new(bin("bctr"))
            .arg("--address")
            .arg(berthd.socket())
            .args([
                "-n",
                "stdin",
                "images",
                "import",
                "--quiet",
                "--no-unpack",
                "-",
            ]),
        &std::fs::read(&archive).unwrap(),
    );
    assert_eq!(ok(&piped), "");
    assert_eq!(
        images(&berthd, "stdin"),
        [(img.name.clone(), img.manifest_digest.clone())]
    );

    // Export to a file: lines; to stdout: the archive alone there, progress on stderr.
    let file = dir.path().join("x.tar");
    let out = ok(&berthd.bctr(&["images", "export", file.to_str().unwrap(), &img.name]));
    for line in ["Exporting", "Completed export"] {
        assert!(out.lines().any(|l| l == line), "{out}");
    }
    assert!(out.lines().any(|l| l.starts_with("received ")), "{out}");
    let to_stdout = berthd.bctr(&["images", "export", "-", &img.name]);
    ok(&to_stdout);
    assert!(to_stdout.stdout == std::fs::read(&file).unwrap());
    let stderr = String::from_utf8_lossy(&to_stdout.stderr);
    assert!(stderr.contains("Completed export"), "{stderr}");

    // containerd 1.6 has no Transfer service: bctr imports and exports from the client, and
    // prints exactly what its --local path prints.
    let containerd = Containerd::start();
    let run = |args: &[&str]| ok(&bctr_on(&containerd, args));
    let via = run(&["-n", "a", "images", "import", archive.to_str().unwrap()]);
    let local = run(&[
        "-n",
        "b",
        "images",
        "import",
        "--local",
        archive.to_str().unwrap(),
    ]);
    assert_eq!(
        via,
        format!("unpacking {} ({})...done\n", img.name, img.manifest_digest)
    );
    assert_eq!(via, local);
    let exported = dir.path().join("ctd.tar");
    assert_eq!(
        run(&[
            "-n",
            "a",
            "images",
            "export",
            exported.to_str().unwrap(),
            &img.name
        ]),
        ""
    );
    assert!(std::fs::read(&exported).unwrap() == std::fs::read(&file).unwrap());
}

/// `bctr --address <containerd> args…`.
fn bctr_on(containerd: &Containerd, args: &[&str]) -> std::process::Output {
    berth_tests::run_client(&bin("bctr"), &containerd.socket(), args)
}

/// (d) Archives that must be refused, and an export of what is not there: clear errors, no
/// image, nothing left once the lease is gone, and the daemon still serves.
#[test]
fn bad_archives_and_missing_images_fail_cleanly() {
    require_root("starting berthd");
    let berthd = Berthd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ch = rt.block_on(berthd.channel());
    let img = fixtures::busybox_image("docker.io/library/busybox:xbad");
    let good = fixtures::oci_archive_bytes(
        std::slice::from_ref(&img),
        fixtures::OciArchiveOptions::default(),
    );

    let refused = |archive: Vec<u8>| -> tonic::Status {
        let (result, events, _) = rt.block_on(import(&ch, archive, import_store(false, true)));
        assert!(saved(&events).is_empty(), "{events:#?}");
        result.expect_err("the archive was accepted")
    };
    // Cut short in the middle of the layers.
    let e = refused(good[..good.len() * 2 / 3 + 100].to_vec());
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("unexpected EOF"), "{e:?}");
    // Not a tar.
    let e = refused(b"this is not an image archive\n".repeat(100));
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("invalid tar header"), "{e:?}");
    // A member climbing out of the archive.
    let mut hostile = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"../index.json");
    h.set_cksum();
    hostile.append(&h, &b"{}\n\n\n"[..]).unwrap();
    let e = refused(hostile.into_inner().unwrap());
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert!(
        e.message()
            .contains("\"../index.json\" points outside the archive"),
        "{e:?}"
    );
    // A tar that is no image.
    let mut plain = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_size(3);
    h.set_mode(0o644);
    plain.append_data(&mut h, "etc/motd", &b"hi\n"[..]).unwrap();
    let e = refused(plain.into_inner().unwrap());
    assert_eq!(e.message(), "unrecognized image format");

    assert!(images(&berthd, NS).is_empty());
    assert_eq!(leases(&berthd), 0);
    // What the failed imports wrote was only their leases': one collection frees it all.
    ok(&berthd.bctr(&["gc"]));
    assert_eq!(ok(&berthd.ctr(&["content", "ls", "-q"])), "");
    assert_eq!(
        ok(&berthd.ctr(&["content", "active"])).lines().count(),
        1,
        "ingests left behind"
    );

    // An export of an image that is not here names it.
    let (result, bytes) = rt.block_on(export(&ch, &["docker.io/library/nothing:1"]));
    let e = result.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("docker.io/library/nothing:1"), "{e:?}");
    assert!(bytes.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("nothing.tar");
    let err = fails(&berthd.bctr(&["images", "export", nowhere.to_str().unwrap(), "busybox"]));
    assert!(err.contains("\"busybox\": not found"), "{err}");
    assert!(!nowhere.exists());
    // A data stream nobody opened.
    let (result, _) = rt.block_on(transfer(
        &ch,
        import_source("import-nobody"),
        import_store(false, false),
    ));
    let e = result.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert!(e.message().contains("import-nobody"), "{e:?}");

    // bctr says so too, and leaves no file behind.
    let cut = dir.path().join("cut.tar");
    std::fs::write(&cut, &good[..good.len() / 2 + 100]).unwrap();
    let err = fails(&berthd.bctr(&["images", "import", cut.to_str().unwrap()]));
    assert!(err.contains("unexpected EOF"), "{err}");
    let out = dir.path().join("out.tar");
    fails(&berthd.bctr(&[
        "images",
        "export",
        out.to_str().unwrap(),
        "docker.io/library/nothing:1",
    ]));
    assert!(!out.exists());

    // Still serving: the whole archive imports.
    let (result, events, _) = rt.block_on(import(&ch, good, import_store(false, true)));
    result.unwrap_or_else(|e| panic!("{e:?}\n{}", berthd.log()));
    assert_eq!(
        saved(&events),
        [(img.name.clone(), img.manifest_digest.clone())]
    );
    assert_eq!(leases(&berthd), 0);
}
