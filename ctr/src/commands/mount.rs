//! `bctr images mount|unmount`: an image's root file system on a local directory, as ctr does it
//! — under a lease named after the target, on a snapshot keyed by the target, unpacking first
//! when needed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bctr::oci::{self, LABEL_GC_EXPIRE};
use berth_api::images::{images_client::ImagesClient, GetImageRequest};
use berth_api::leases::{leases_client::LeasesClient, CreateRequest, DeleteRequest};
use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, ViewSnapshotRequest,
};
use berth_mount::Mount;
use berth_oci::{platform, Matcher};
use clap::Args;
use tonic::Code;

use super::store::{self, ContentStore};
use super::{images, leases, CmdError, Ctx};

#[derive(Args)]
pub struct MountArgs {
    /// Snapshotter to unpack into and mount from.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "")]
    snapshotter: String,
    /// Mount read-write (a new active snapshot) instead of a read-only view.
    #[arg(long)]
    rw: bool,
    /// Platform of the image to mount.
    #[arg(long)]
    platform: Option<String>,
    /// How long the lease holding the mount's snapshot lives.
    #[arg(long, default_value = "24h", value_parser = bctr::units::parse_go_duration)]
    expiration: Duration,
    /// Image reference.
    reference: String,
    /// Directory to mount on.
    target: String,
}

#[derive(Args)]
pub struct UnmountArgs {
    /// Also remove the snapshot and the lease the mount created.
    #[arg(long)]
    rm: bool,
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "")]
    snapshotter: String,
    target: String,
}

fn to_mount(m: berth_api::types::Mount) -> Mount {
    Mount {
        mount_type: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

pub async fn mount(ctx: &Ctx, a: MountArgs) -> Result<(), CmdError> {
    let key = a.target.clone();
    let labels = HashMap::from([(LABEL_GC_EXPIRE.to_owned(), leases::expiry(a.expiration))]);
    match LeasesClient::new(ctx.channel.clone())
        .create(ctx.request(CreateRequest {
            id: key.clone(),
            labels,
        }))
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == Code::AlreadyExists => {}
        Err(s) => return Err(s.into()),
    }
    let leased = ctx.with_lease(&key);
    let platform = match &a.platform {
        Some(p) => platform::parse(p).map_err(|e| CmdError::Usage(e.to_string()))?,
        None => berth_oci::host_platform(),
    };
    let matcher = Matcher::only(&platform);
    let img = ImagesClient::new(ctx.channel.clone())
        .get(ctx.request(GetImageRequest {
            name: a.reference.clone(),
        }))
        .await?
        .into_inner()
        .image
        .unwrap_or_default();
    let target = images::image_target(&img)?;
    let snapshotter = images::resolve_snapshotter(ctx, &a.snapshotter).await?;
    super::unpack::unpack(&leased, &target, &matcher, &snapshotter).await?;

    let mut cs = ContentStore::new(&leased);
    let manifest = store::resolve_manifest(&mut cs, &target, Some(&matcher)).await?;
    let config = cs
        .read_config(manifest.config())
        .await
        .map_err(|e| CmdError::Failed(format!("failed to resolve rootfs: {e}")))?;
    let chain_id = oci::rootfs_chain_id(&config).map_err(CmdError::Failed)?;
    println!("{chain_id}");

    let mut sn = SnapshotsClient::new(ctx.channel.clone());
    let made = if a.rw {
        sn.prepare(leased.request(PrepareSnapshotRequest {
            snapshotter: snapshotter.clone(),
            key: key.clone(),
            parent: chain_id,
            labels: Default::default(),
        }))
        .await
        .map(|r| r.into_inner().mounts)
    } else {
        sn.view(leased.request(ViewSnapshotRequest {
            snapshotter: snapshotter.clone(),
            key: key.clone(),
            parent: chain_id,
            labels: Default::default(),
        }))
        .await
        .map(|r| r.into_inner().mounts)
    };
    let mounts = match made {
        Ok(m) => m,
        Err(s) if s.code() == Code::AlreadyExists => {
            sn.mounts(ctx.request(MountsRequest {
                snapshotter,
                key: key.clone(),
            }))
            .await?
            .into_inner()
            .mounts
        }
        Err(s) => return Err(s.into()),
    };
    let mounts: Vec<Mount> = mounts.into_iter().map(to_mount).collect();
    berth_mount::mount_all(&mounts, Path::new(&a.target))
        .map_err(|e| CmdError::Failed(format!("failed to mount {}: {e}", a.target)))?;
    println!("{}", a.target);
    Ok(())
}

pub async fn unmount(ctx: &Ctx, a: UnmountArgs) -> Result<(), CmdError> {
    berth_mount::unmount_all(Path::new(&a.target))
        .map_err(|e| CmdError::Failed(format!("failed to unmount {}: {e}", a.target)))?;
    if a.rm {
        let snapshotter = images::resolve_snapshotter(ctx, &a.snapshotter).await?;
        match LeasesClient::new(ctx.channel.clone())
            .delete(ctx.request(DeleteRequest {
                id: a.target.clone(),
                sync: false,
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(CmdError::Failed(format!(
                    "error deleting lease: {}",
                    s.message()
                )))
            }
        }
        match SnapshotsClient::new(ctx.channel.clone())
            .remove(ctx.request(RemoveSnapshotRequest {
                snapshotter,
                key: a.target.clone(),
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(CmdError::Failed(format!(
                    "error removing snapshot: {}",
                    s.message()
                )))
            }
        }
    }
    println!("{}", a.target);
    Ok(())
}
