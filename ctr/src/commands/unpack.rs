//! Unpacking an image into snapshots, the way containerd's client does it: for each layer, a
//! snapshot named by the chain ID is prepared on its parent, the diff service applies the layer
//! to its mounts, and the snapshot is committed; then content is labelled so GC keeps the
//! snapshots while the image exists. Works wherever the Snapshots and Diff services do.

use std::collections::HashMap;

use bctr::oci::{self, Descriptor, DescriptorExt};
use berth_api::diff::{diff_client::DiffClient, ApplyRequest};
use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, CommitSnapshotRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest,
};
use berth_oci::{Digest, Matcher};
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::store::{self, ContentStore};
use super::{images, leases, CmdError, Ctx};

/// An RPC of unpacking failed; Unimplemented means the daemon cannot unpack at all.
fn unpack_err(what: &str, s: Status, context: String) -> CmdError {
    if s.code() == Code::Unimplemented {
        return CmdError::Failed(format!(
            "unpack not supported yet by this daemon ({what} is unimplemented); use --no-unpack"
        ));
    }
    CmdError::Failed(format!("{context}: {}", s.message()))
}

/// A unique part for extraction keys: `<nanoseconds>-<4 base64url chars>`, as containerd's.
fn unique_part() -> String {
    leases::random_id()
}

pub async fn unpack(
    ctx: &Ctx,
    target: &Descriptor,
    platform: &Matcher,
    snapshotter: &str,
) -> Result<(), CmdError> {
    let lease = leases::create_temporary(ctx).await?;
    let leased = ctx.with_lease(&lease);
    let result = unpack_leased(&leased, target, platform, snapshotter).await;
    let cleanup = leases::delete_temporary(ctx, &lease).await;
    result?;
    cleanup
}

async fn unpack_leased(
    ctx: &Ctx,
    target: &Descriptor,
    platform: &Matcher,
    snapshotter: &str,
) -> Result<(), CmdError> {
    let mut cs = ContentStore::new(ctx);
    let manifest = store::resolve_manifest(&mut cs, target, Some(platform)).await?;
    let config = cs
        .read_config(manifest.config())
        .await
        .map_err(|e| CmdError::Failed(format!("failed to resolve rootfs: {e}")))?;
    let diff_ids = oci::diff_ids(&config)
        .map_err(|e| CmdError::Failed(format!("failed to resolve rootfs: {e}")))?;
    if diff_ids.len() != manifest.layers().len() {
        return Err(CmdError::Failed(
            "mismatched image rootfs and manifest layers".into(),
        ));
    }
    let snapshotter = images::resolve_snapshotter(ctx, snapshotter).await?;
    let mut sn = SnapshotsClient::new(ctx.channel.clone());
    let mut differ = DiffClient::new(ctx.channel.clone());

    let chain_ids = berth_oci::chain_ids(&diff_ids);
    for (i, (blob, diff_id)) in manifest.layers().iter().zip(&diff_ids).enumerate() {
        let parent = match i {
            0 => String::new(),
            _ => chain_ids[i - 1].to_string(),
        };
        let chain_id = chain_ids[i].to_string();
        let exists = match sn
            .stat(ctx.request(StatSnapshotRequest {
                snapshotter: snapshotter.clone(),
                key: chain_id.clone(),
            }))
            .await
        {
            Ok(_) => true,
            Err(s) if s.code() == Code::NotFound => false,
            Err(s) => {
                return Err(unpack_err(
                    "snapshots",
                    s,
                    format!("failed to stat snapshot {chain_id}"),
                ))
            }
        };
        if exists {
            continue;
        }
        let applied = apply_layer(
            ctx,
            &mut sn,
            &mut differ,
            &snapshotter,
            blob,
            diff_id,
            &parent,
            &chain_id,
        )
        .await?;
        if applied {
            cs.update_labels(
                blob.digest_str(),
                &[(oci::LABEL_UNCOMPRESSED.to_owned(), diff_id.to_string())],
            )
            .await
            .map_err(super::rpc_context(format!(
                "failed to label {}",
                blob.digest()
            )))?;
        }
    }

    let rootfs = chain_ids.last().map_or_else(String::new, Digest::to_string);
    let key = format!("containerd.io/gc.ref.snapshot.{snapshotter}");
    let config_digest = manifest.config().digest_str();
    cs.update_labels(config_digest, &[(key, rootfs)])
        .await
        .map_err(super::rpc_context(format!(
            "failed to label {config_digest}"
        )))?;
    Ok(())
}

/// Prepares, applies and commits one layer. `Ok(false)` when another unpack committed the same
/// snapshot first.
#[allow(clippy::too_many_arguments)]
async fn apply_layer(
    ctx: &Ctx,
    sn: &mut SnapshotsClient<Channel>,
    differ: &mut DiffClient<Channel>,
    snapshotter: &str,
    blob: &Descriptor,
    diff_id: &Digest,
    parent: &str,
    chain_id: &str,
) -> Result<bool, CmdError> {
    let (key, mounts) = loop {
        let key = format!("extract-{} {chain_id}", unique_part());
        match sn
            .prepare(ctx.request(PrepareSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                key: key.clone(),
                parent: parent.to_owned(),
                labels: HashMap::new(),
            }))
            .await
        {
            Ok(r) => break (key, r.into_inner().mounts),
            Err(s) if s.code() == Code::AlreadyExists => continue,
            Err(s) => {
                return Err(unpack_err(
                    "snapshots",
                    s,
                    format!("failed to prepare extraction snapshot {key:?}"),
                ))
            }
        }
    };

    let result: Result<bool, CmdError> = async {
        let applied = differ
            .apply(ctx.request(ApplyRequest {
                diff: Some(oci::to_proto(blob)),
                mounts,
                payloads: HashMap::new(),
                sync_fs: false,
            }))
            .await
            .map_err(|s| unpack_err("diff", s, format!("failed to extract layer {diff_id}")))?
            .into_inner()
            .applied
            .unwrap_or_default();
        if applied.digest != diff_id.as_str() {
            return Err(CmdError::Failed(format!(
                "wrong diff id calculated on extraction {:?}",
                applied.digest
            )));
        }
        match sn
            .commit(ctx.request(CommitSnapshotRequest {
                snapshotter: snapshotter.to_owned(),
                name: chain_id.to_owned(),
                key: key.clone(),
                labels: HashMap::new(),
                parent: String::new(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::AlreadyExists => Err(CmdError::Rpc(s)),
            Err(s) => Err(unpack_err(
                "snapshots",
                s,
                format!("failed to commit snapshot {key}"),
            )),
        }
    }
    .await;

    match result {
        Ok(applied) => Ok(applied),
        Err(e) => {
            // Leave no extraction snapshot behind.
            let _ = sn
                .remove(ctx.request(RemoveSnapshotRequest {
                    snapshotter: snapshotter.to_owned(),
                    key,
                }))
                .await;
            match e {
                // Someone else committed this chain first: that is as good.
                CmdError::Rpc(s) if s.code() == Code::AlreadyExists => Ok(false),
                e => Err(e),
            }
        }
    }
}
