//! The diff service end to end: `ctr snapshots diff` produces the layer of a snapshot's changes,
//! and hostile layers sent through `Diff.Apply` cannot write outside the snapshot.

use std::io::Write;

use berth_api::snapshots::{snapshots_client::SnapshotsClient, PrepareSnapshotRequest};
use berth_mount::{Mount, TempMount};
use berth_tests::fixtures::{self, gunzip, read_tar_entries, sha256_digest, EntryKind};
use berth_tests::grpc::req;
use berth_tests::{hostile, ok, require_root, Berthd};

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

#[test]
fn hostile_layers_cannot_escape_the_snapshot() {
    require_root("mounting snapshots");
    let berthd = Berthd::start();
    // Something outside every snapshot that a successful escape would change.
    let sentinel = berthd.root().join("sentinel");
    std::fs::write(&sentinel, b"untouched").unwrap();
    let cases = hostile::escape_layers(&sentinel, &berthd.root());
    let rt = tokio::runtime::Runtime::new().unwrap();
    for sn in ["overlayfs", "native"] {
        for (name, tar) in &cases {
            let (_, applied) = rt.block_on(async {
                let ch = berthd.channel().await;
                hostile::apply_to_new_snapshot(&ch, sn, &format!("hostile-{name}"), tar).await
            });
            assert_eq!(
                std::fs::read(&sentinel).unwrap(),
                b"untouched",
                "{sn}/{name} escaped"
            );
            hostile::assert_contained_or_refused(&format!("{sn}/{name}"), applied);
        }
    }
    let _ = std::io::stdout().flush();
}
