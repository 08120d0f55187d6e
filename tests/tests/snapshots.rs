//! Issue 4, end to end: snapshots through containerd's `ctr`, image unpack through the snapshots
//! and diff services, and the collector removing what an image no longer needs.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, RemoveSnapshotRequest, ViewSnapshotRequest,
};
use berth_mount::{Mount, TempMount};
use berth_tests::fixtures::{self, sha256_digest, EntryKind, FixtureImage, TarEntry};
use berth_tests::grpc::req;
use berth_tests::{ok, require_root, Berthd, Containerd};

const SNAPSHOTTERS: [&str; 2] = ["overlayfs", "native"];

/// containerd's chain IDs of an image's layers, bottom first.
fn chain_ids(img: &FixtureImage) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for layer in &img.layers {
        let next = match out.last() {
            None => layer.diff_id.clone(),
            Some(prev) => sha256_digest(format!("{prev} {}", layer.diff_id).as_bytes()),
        };
        out.push(next);
    }
    out
}

/// Checks a mounted root against the image's expected file system, entry by entry, and that
/// nothing else (no whiteout, no stray file) is there.
fn assert_matches_model(root: &Path, model: &BTreeMap<String, TarEntry>) {
    let mut seen = Vec::new();
    for (path, e) in model {
        let p = root.join(path);
        let meta = std::fs::symlink_metadata(&p).unwrap_or_else(|err| panic!("{path}: {err}"));
        assert_eq!(meta.uid() as u64, e.uid, "{path} uid");
        assert_eq!(meta.gid() as u64, e.gid, "{path} gid");
        match &e.kind {
            EntryKind::Dir => {
                assert!(meta.is_dir(), "{path} is not a directory");
                assert_eq!(meta.permissions().mode() & 0o7777, e.mode, "{path} mode");
            }
            EntryKind::File(data) => {
                assert!(meta.is_file(), "{path} is not a file");
                assert_eq!(meta.permissions().mode() & 0o7777, e.mode, "{path} mode");
                assert!(std::fs::read(&p).unwrap() == *data, "{path} content");
            }
            EntryKind::Symlink(target) => {
                assert!(meta.file_type().is_symlink(), "{path} is not a symlink");
                assert_eq!(
                    std::fs::read_link(&p).unwrap().to_string_lossy(),
                    *target,
                    "{path} target"
                );
            }
            EntryKind::Hardlink(target) => {
                let t = std::fs::symlink_metadata(root.join(target)).unwrap();
                assert_eq!(meta.ino(), t.ino(), "{path} is not a hardlink of {target}");
            }
        }
        seen.push(path.clone());
    }
    let mut actual = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            }
            actual.push(rel);
        }
    }
    actual.sort();
    seen.sort();
    assert_eq!(
        actual, seen,
        "the mounted snapshot has other entries than the image"
    );
}

/// A view labelled `containerd.io/gc.root` (as `ctr` labels what it prepares), so that a
/// collection started by an earlier deletion (the import's lease) cannot take it mid-test.
fn view(berthd: &Berthd, sn: &str, key: &str, parent: &str) -> Vec<Mount> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        SnapshotsClient::new(berthd.channel().await)
            .view(req(
                "default",
                None,
                ViewSnapshotRequest {
                    snapshotter: sn.into(),
                    key: key.into(),
                    parent: parent.into(),
                    labels: [("containerd.io/gc.root".into(), "test".into())].into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .mounts
            .into_iter()
            .map(|m| Mount {
                mount_type: m.r#type,
                source: m.source,
                target: m.target,
                options: m.options,
            })
            .collect()
    })
}

fn remove(berthd: &Berthd, sn: &str, key: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        SnapshotsClient::new(berthd.channel().await)
            .remove(req(
                "default",
                None,
                RemoveSnapshotRequest {
                    snapshotter: sn.into(),
                    key: key.into(),
                },
            ))
            .await
            .unwrap();
    });
}

#[test]
fn ctr_import_unpacks_the_image_exactly_on_every_snapshotter() {
    require_root("mounting snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:unpack");
    let chain = chain_ids(&img);
    let model = img.rootfs();
    let berthd = Berthd::start();
    for sn in SNAPSHOTTERS {
        let out = ok(&berthd.ctr(&[
            "images",
            "import",
            "--snapshotter",
            sn,
            archive.to_str().unwrap(),
        ]));
        assert!(
            out.contains("unpacking docker.io/library/busybox:unpack"),
            "{out}"
        );
        let keys = ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "ls"]));
        for c in &chain {
            assert!(
                keys.contains(c.as_str()),
                "{sn}: chain id {c} missing:\n{keys}"
            );
        }
        let check = ok(&berthd.ctr(&["images", "check", "--snapshotter", sn]));
        assert!(
            check.trim_end().ends_with("true"),
            "{sn}: not unpacked:\n{check}"
        );
        let mounts = view(&berthd, sn, "check-view", chain.last().unwrap());
        {
            let m = TempMount::new(&mounts).unwrap();
            assert_matches_model(m.path(), &model);
        }
        remove(&berthd, sn, "check-view");
    }
}

#[test]
fn unpacked_chain_ids_are_containerds() {
    require_root("comparing with containerd");
    let dir = tempfile::tempdir().unwrap();
    let (_, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:chain");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    for sn in SNAPSHOTTERS {
        let args = [
            "images",
            "import",
            "--snapshotter",
            sn,
            archive.to_str().unwrap(),
        ];
        ok(&berthd.ctr(&args));
        ok(&containerd.ctr(&args));
        let ls = ["snapshots", "--snapshotter", sn, "ls"];
        assert_eq!(ok(&berthd.ctr(&ls)), ok(&containerd.ctr(&ls)), "{sn}");
        let tree = ["snapshots", "--snapshotter", sn, "tree"];
        assert_eq!(ok(&berthd.ctr(&tree)), ok(&containerd.ctr(&tree)), "{sn}");
    }
}

#[test]
fn ctr_snapshot_commands_match_containerd() {
    require_root("comparing with containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    for sn in SNAPSHOTTERS {
        let s = ["snapshots", "--snapshotter", sn];
        let steps: Vec<Vec<&str>> = vec![
            [&s[..], &["prepare", "a"]].concat(),
            [&s[..], &["commit", "A", "a"]].concat(),
            [&s[..], &["prepare", "b", "A"]].concat(),
            [&s[..], &["view", "v", "A"]].concat(),
            [&s[..], &["commit", "V", "v"]].concat(),
            [&s[..], &["prepare", "a"]].concat(),
            [&s[..], &["prepare", "c", "missing"]].concat(),
            [&s[..], &["prepare", "c", "b"]].concat(),
            [&s[..], &["ls"]].concat(),
            [&s[..], &["tree"]].concat(),
            [&s[..], &["label", "b", "x=1"]].concat(),
            [&s[..], &["rm", "A"]].concat(),
            [&s[..], &["rm", "nothere"]].concat(),
            // A successful remove starts a collection on both daemons, which removes the other
            // unreferenced snapshots at a moment that depends on timing: comparisons stop here.
        ];
        for step in &steps {
            let ours = berthd.ctr(step);
            let theirs = containerd.ctr(step);
            assert_eq!(
                ours.status.code(),
                theirs.status.code(),
                "exit of ctr {step:?}\nberthd: {}\ncontainerd: {}",
                String::from_utf8_lossy(&ours.stderr),
                String::from_utf8_lossy(&theirs.stderr)
            );
            // Labels come back in Go's random map order; compare them as sets. `ctr` stamps
            // `containerd.io/gc.root` with the second it ran, which may differ between the two
            // runs: only its shape is compared.
            let norm = |b: &[u8]| -> Vec<Vec<String>> {
                String::from_utf8_lossy(b)
                    .lines()
                    .map(|l| {
                        let mut parts: Vec<String> = l
                            .split(',')
                            .map(|p| match p.strip_prefix("containerd.io/gc.root=") {
                                Some(t) => {
                                    assert!(
                                        t.len() == 20
                                            && t.ends_with('Z')
                                            && t.as_bytes()[10] == b'T',
                                        "gc.root is a UTC time: {p}"
                                    );
                                    "containerd.io/gc.root=<time>".to_owned()
                                }
                                None => p.to_owned(),
                            })
                            .collect();
                        parts.sort();
                        parts
                    })
                    .collect()
            };
            assert_eq!(
                norm(&ours.stdout),
                norm(&theirs.stdout),
                "stdout of ctr {step:?}"
            );
        }
        let out = berthd.ctr(&[&s[..], &["rm", "b"]].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn removing_the_image_collects_its_snapshots() {
    require_root("mounting snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:gc");
    let berthd = Berthd::start();
    for sn in SNAPSHOTTERS {
        ok(&berthd.ctr(&[
            "images",
            "import",
            "--snapshotter",
            sn,
            archive.to_str().unwrap(),
        ]));
        assert_eq!(
            ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "ls"]))
                .lines()
                .count(),
            4
        );
        ok(&berthd.ctr(&["images", "rm", "--sync", &img.name]));
        assert_eq!(
            ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "ls"])),
            "KEY PARENT KIND \n",
            "{sn}: snapshots left after the image went"
        );
        let dirs = std::fs::read_dir(
            berthd
                .root()
                .join(format!("io.containerd.snapshotter.v1.{sn}/snapshots")),
        )
        .unwrap()
        .count();
        assert_eq!(dirs, 0, "{sn}: snapshot directories left on disk");
    }
}

#[test]
fn bctr_unpacks_in_the_daemon_exactly_as_ctr_does() {
    require_root("mounting snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:server");
    let chain = chain_ids(&img);
    let model = img.rootfs();
    let berthd = Berthd::start();
    for sn in SNAPSHOTTERS {
        ok(&berthd.bctr(&[
            "images",
            "import",
            "--snapshotter",
            sn,
            archive.to_str().unwrap(),
        ]));
        let log = berthd.log();
        assert!(
            log.contains("berth_unpack") && log.contains("unpacked"),
            "not unpacked in the daemon:\n{log}"
        );
        let keys = ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "ls"]));
        for c in &chain {
            assert!(
                keys.contains(c.as_str()),
                "{sn}: chain id {c} missing:\n{keys}"
            );
        }
        // ctr sees the image as unpacked: the config carries the gc.ref.snapshot label.
        let check = ok(&berthd.ctr(&["images", "check", "--snapshotter", sn]));
        assert!(check.trim_end().ends_with("true"), "{sn}:\n{check}");
        let mounts = view(&berthd, sn, "server-view", chain.last().unwrap());
        {
            let m = TempMount::new(&mounts).unwrap();
            assert_matches_model(m.path(), &model);
        }
        remove(&berthd, sn, "server-view");
        // Unpacking again finds every layer present.
        let again = ok(&berthd.bctr(&["images", "unpack", "--snapshotter", sn, &img.name]));
        assert_eq!(again.matches(" present ").count(), chain.len(), "{again}");
    }
    // The unpack lease is gone and nothing was left in overlay's staging directory.
    assert_eq!(ok(&berthd.ctr(&["leases", "ls", "-q"])), "");
    let staging = berthd
        .root()
        .join("io.containerd.snapshotter.v1.overlayfs/staging");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0);
}

#[test]
fn a_500_layer_image_unpacks_and_mounts_on_overlayfs() {
    require_root("mounting snapshots");
    use berth_tests::fixtures::{LayerBuilder, PlatformImage};
    let dir = tempfile::tempdir().unwrap();
    let layers: Vec<_> = (0..500)
        .map(|i| {
            LayerBuilder::new()
                .file(&format!("layers/{i:03}"), 0o644, format!("layer {i}\n"))
                .file("top", 0o644, format!("written by layer {i}\n"))
                .build()
        })
        .collect();
    let primary = PlatformImage::new("linux", fixtures::host_arch(), layers, &["/bin/true"]);
    let img = FixtureImage::new("docker.io/library/deep:500", primary, Vec::new());
    let archive = dir.path().join("deep.tar");
    fixtures::write_oci_archive(&archive, std::slice::from_ref(&img));
    let berthd = Berthd::start();
    ok(&berthd.bctr(&["images", "import", archive.to_str().unwrap()]));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    ok(&berthd.bctr(&["images", "mount", &img.name, m]));
    let result = std::panic::catch_unwind(|| {
        assert_eq!(std::fs::read_dir(mnt.join("layers")).unwrap().count(), 500);
        assert_eq!(
            std::fs::read_to_string(mnt.join("layers/000")).unwrap(),
            "layer 0\n"
        );
        assert_eq!(
            std::fs::read_to_string(mnt.join("top")).unwrap(),
            "written by layer 499\n"
        );
    });
    ok(&berthd.bctr(&["images", "unmount", "--rm", m]));
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn ctr_snapshots_mounts_prints_a_working_mount_command() {
    require_root("mounting snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:mounts");
    let top = chain_ids(&img).pop().unwrap();
    let berthd = Berthd::start();
    for sn in SNAPSHOTTERS {
        ok(&berthd.ctr(&[
            "images",
            "import",
            "--snapshotter",
            sn,
            archive.to_str().unwrap(),
        ]));
        ok(&berthd.ctr(&[
            "snapshots",
            "--snapshotter",
            sn,
            "prepare",
            "mnt-test",
            &top,
        ]));
        let target = dir.path().join(format!("t-{sn}"));
        std::fs::create_dir(&target).unwrap();
        let cmd = ok(&berthd.ctr(&[
            "snapshots",
            "--snapshotter",
            sn,
            "mounts",
            target.to_str().unwrap(),
            "mnt-test",
        ]));
        assert!(cmd.starts_with("mount -t "), "{cmd}");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .status()
            .unwrap();
        assert!(status.success(), "{cmd}");
        let content = std::fs::read_to_string(target.join("etc/layer3"));
        let _ = std::process::Command::new("umount").arg(&target).status();
        assert_eq!(content.unwrap(), "layer 3\n", "{sn}");
        ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "rm", "mnt-test"]));
    }
}
