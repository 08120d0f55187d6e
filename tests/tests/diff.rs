//! The diff service end to end: `ctr snapshots diff` produces the layer of a snapshot's changes,
//! and hostile layers sent through `Diff.Apply` cannot write outside the snapshot.

use std::io::Write;

use berth_api::diff::{diff_client::DiffClient, ApplyRequest};
use berth_api::snapshots::{snapshots_client::SnapshotsClient, PrepareSnapshotRequest};
use berth_api::types::Descriptor;
use berth_mount::{Mount, TempMount};
use berth_tests::fixtures::{self, gunzip, read_tar_entries, sha256_digest, EntryKind};
use berth_tests::grpc::{req, Writer};
use berth_tests::{ok, require_root, Berthd};

fn chain_top(img: &fixtures::FixtureImage) -> String {
    let mut chain: Option<String> = None;
    for l in &img.layers {
        chain = Some(match chain {
            None => l.diff_id.clone(),
            Some(p) => sha256_digest(format!("{p} {}", l.diff_id).as_bytes()),
        });
    }
    chain.unwrap()
}

fn to_mounts(ms: Vec<berth_api::types::Mount>) -> Vec<Mount> {
    ms.into_iter()
        .map(|m| Mount {
            mount_type: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

#[test]
fn ctr_snapshots_diff_writes_the_changes_as_a_layer() {
    require_root("mounting snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:diff");
    let berthd = Berthd::start();
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
    let top = chain_top(&img);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mounts = rt.block_on(async {
        SnapshotsClient::new(berthd.channel().await)
            .prepare(req(
                "default",
                None,
                PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: "work".into(),
                    parent: top,
                    labels: [("containerd.io/gc.root".to_owned(), "test".to_owned())].into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .mounts
    });
    {
        let m = TempMount::new(&to_mounts(mounts)).unwrap();
        std::fs::write(m.path().join("etc/added"), b"new file\n").unwrap();
        std::fs::remove_file(m.path().join("etc/layer3")).unwrap();
    }
    let out = berthd.ctr(&["snapshots", "diff", "work"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let entries = read_tar_entries(&gunzip(&out.stdout));
    let names: Vec<&str> = entries
        .iter()
        .map(|e| e.path.trim_end_matches('/'))
        .collect();
    assert!(names.contains(&"etc/added"), "{names:?}");
    assert!(names.contains(&"etc/.wh.layer3"), "{names:?}");
    let added = entries.iter().find(|e| e.path == "etc/added").unwrap();
    assert_eq!(added.kind, EntryKind::File(b"new file\n".to_vec()));
    assert!(
        !names.iter().any(|n| n.starts_with("bin/")),
        "unchanged files in the diff: {names:?}"
    );
}

/// A raw tar header with any name, including ones the tar crate's safe setters refuse.
fn raw_entry(tar: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_mtime(0);
    h.set_cksum();
    tar.extend_from_slice(h.as_bytes());
    tar.extend_from_slice(data);
    let pad = (512 - data.len() % 512) % 512;
    tar.extend(std::iter::repeat_n(0u8, pad));
}

#[test]
fn hostile_layers_cannot_escape_the_snapshot() {
    require_root("mounting snapshots");
    let berthd = Berthd::start();
    // Something outside every snapshot that a successful escape would change.
    let sentinel = berthd.root().join("sentinel");
    std::fs::write(&sentinel, b"untouched").unwrap();
    let sentinel_s = sentinel.display().to_string();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut t = Vec::new();
    raw_entry(
        &mut t,
        "../../../../../../sentinel",
        tar::EntryType::Regular,
        "",
        b"pwned",
    );
    cases.push(("dotdot", t));
    let mut t = Vec::new();
    raw_entry(&mut t, "link", tar::EntryType::Symlink, &sentinel_s, b"");
    raw_entry(&mut t, "link", tar::EntryType::Regular, "", b"pwned");
    cases.push(("replace-symlink", t));
    let mut t = Vec::new();
    raw_entry(
        &mut t,
        "dir",
        tar::EntryType::Symlink,
        berthd.root().to_str().unwrap(),
        b"",
    );
    raw_entry(
        &mut t,
        "dir/sentinel",
        tar::EntryType::Regular,
        "",
        b"pwned",
    );
    cases.push(("write-through-symlinked-dir", t));
    let mut t = Vec::new();
    raw_entry(&mut t, "hard", tar::EntryType::Link, &sentinel_s, b"");
    cases.push(("hardlink-outside", t));

    let rt = tokio::runtime::Runtime::new().unwrap();
    for sn in ["overlayfs", "native"] {
        for (name, mut tar) in cases.clone() {
            tar.extend(std::iter::repeat_n(0u8, 1024));
            let digest = sha256_digest(&tar);
            let result = rt.block_on(async {
                let ch = berthd.channel().await;
                match Writer::open(
                    &ch,
                    "default",
                    None,
                    &format!("{sn}-{name}"),
                    tar.len() as i64,
                    &digest,
                )
                .await
                {
                    Ok((mut w, _)) => {
                        w.write(0, &tar).await.unwrap();
                        w.commit(tar.len() as i64, tar.len() as i64, &digest)
                            .await
                            .unwrap();
                    }
                    // Stored for the previous snapshotter already.
                    Err(e) if e.code() == tonic::Code::AlreadyExists => {}
                    Err(e) => panic!("ingest {name}: {e:?}"),
                }
                let mounts = SnapshotsClient::new(ch.clone())
                    .prepare(req(
                        "default",
                        None,
                        PrepareSnapshotRequest {
                            snapshotter: sn.into(),
                            key: format!("hostile-{name}"),
                            parent: String::new(),
                            labels: Default::default(),
                        },
                    ))
                    .await
                    .unwrap()
                    .into_inner()
                    .mounts;
                DiffClient::new(ch)
                    .apply(req(
                        "default",
                        None,
                        ApplyRequest {
                            diff: Some(Descriptor {
                                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                                digest: digest.clone(),
                                size: tar.len() as i64,
                                annotations: Default::default(),
                            }),
                            mounts,
                            payloads: Default::default(),
                            sync_fs: false,
                        },
                    ))
                    .await
            });
            assert_eq!(
                std::fs::read(&sentinel).unwrap(),
                b"untouched",
                "{sn}/{name} escaped"
            );
            match result {
                Ok(_) => {} // contained: written inside the snapshot only
                Err(e) => {
                    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{sn}/{name}: {e:?}");
                    assert!(
                        e.message().contains("entry"),
                        "{sn}/{name}: error does not name the entry: {e:?}"
                    );
                }
            }
        }
    }
    let _ = std::io::stdout().flush();
}
