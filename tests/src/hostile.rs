//! Hostile layers: tars that try to write outside the snapshot they are applied to, and the one
//! way the tests apply them (Diff.Apply onto a fresh snapshot), for every snapshotter.

use std::path::Path;

use berth_api::diff::{diff_client::DiffClient, ApplyRequest};
use berth_api::snapshots::{snapshots_client::SnapshotsClient, PrepareSnapshotRequest};
use berth_api::types::{Descriptor, Mount};
use tonic::transport::Channel;

use crate::fixtures::sha256_digest;
use crate::grpc::{req, Writer};

/// A raw tar header with any name, including ones the tar crate's safe setters refuse.
pub fn raw_entry(tar: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
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
    tar.extend(std::iter::repeat_n(0u8, (512 - data.len() % 512) % 512));
}

/// The escapes every applier must contain, as `(name, tar)`: `..` paths, a symlink replaced by
/// a file, a write through a symlinked directory, and a hardlink to `outside_file`; the symlinks
/// point at `outside_file` and `outside_dir`.
pub fn escape_layers(outside_file: &Path, outside_dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    use tar::EntryType::{Link, Regular, Symlink};
    let file = outside_file.display().to_string();
    let dir = outside_dir.display().to_string();
    let layer = |entries: &[(&str, tar::EntryType, &str, &[u8])]| {
        let mut t = Vec::new();
        for (name, kind, link, data) in entries {
            raw_entry(&mut t, name, *kind, link, data);
        }
        // The end-of-archive blocks.
        t.extend(std::iter::repeat_n(0u8, 1024));
        t
    };
    vec![
        (
            "dotdot",
            layer(&[
                ("../../../../../../../sentinel", Regular, "", b"pwned"),
                ("../../sentinel", Regular, "", b"pwned"),
            ]),
        ),
        (
            "replace-symlink",
            layer(&[
                ("link", Symlink, &file, b""),
                ("link", Regular, "", b"pwned"),
            ]),
        ),
        (
            "write-through-symlinked-dir",
            layer(&[
                ("dir", Symlink, &dir, b""),
                ("dir/sentinel", Regular, "", b"pwned"),
            ]),
        ),
        ("hardlink-outside", layer(&[("hard", Link, &file, b"")])),
    ]
}

/// Stores `tar` (once per daemon: a second store of the same bytes is fine), prepares the
/// snapshot `key` on snapshotter `sn` and applies the tar onto it through Diff.Apply; returns
/// the snapshot's mounts and Apply's answer.
pub async fn apply_to_new_snapshot(
    ch: &Channel,
    sn: &str,
    key: &str,
    tar: &[u8],
) -> (Vec<Mount>, Result<(), tonic::Status>) {
    let digest = sha256_digest(tar);
    let size = tar.len() as i64;
    match Writer::open(ch, "default", None, &format!("{sn}-{key}"), size, &digest).await {
        Ok((mut w, _)) => {
            w.write(0, tar).await.expect("write the layer");
            w.commit(size, size, &digest)
                .await
                .expect("commit the layer");
        }
        Err(e) if e.code() == tonic::Code::AlreadyExists => {}
        Err(e) => panic!("ingest {key}: {e:?}"),
    }
    let mounts = SnapshotsClient::new(ch.clone())
        .prepare(req(
            "default",
            None,
            PrepareSnapshotRequest {
                snapshotter: sn.into(),
                key: key.into(),
                parent: String::new(),
                labels: Default::default(),
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("prepare {key} on {sn}: {e:?}"))
        .into_inner()
        .mounts;
    let applied = DiffClient::new(ch.clone())
        .apply(req(
            "default",
            None,
            ApplyRequest {
                diff: Some(Descriptor {
                    media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                    digest,
                    size,
                    annotations: Default::default(),
                }),
                mounts: mounts.clone(),
                payloads: Default::default(),
                sync_fs: false,
            },
        ))
        .await
        .map(drop);
    (mounts, applied)
}

/// An escape attempt must be either contained (applied inside the snapshot only, which the
/// caller checks by its sentinels) or refused with InvalidArgument naming the entry.
pub fn assert_contained_or_refused(what: &str, applied: Result<(), tonic::Status>) {
    if let Err(e) = applied {
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{what}: {e:?}");
        assert!(
            e.message().contains("entry"),
            "{what}: the error does not name the entry: {e:?}"
        );
    }
}
