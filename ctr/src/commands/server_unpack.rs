//! Unpacking in the daemon (Berth's `berth.services.unpack.v1`): one call, layers extracted in
//! parallel by berthd. `bctr images import` uses it when the daemon has it and falls back to
//! unpacking from the client (as ctr does) when it does not.

use berth_api::berth::services::unpack::v1::{unpack_client::UnpackClient, UnpackRequest};
use clap::Args;
use tonic::Code;

use super::{CmdError, Ctx};

#[derive(Args)]
pub struct UnpackArgs {
    /// Snapshotter to unpack into.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "")]
    snapshotter: String,
    /// Platform to unpack (os/arch[/variant]); the daemon's own by default.
    #[arg(long, default_value = "")]
    platform: String,
    /// Image reference.
    reference: String,
}

/// Unpacks `image` in the daemon. `Ok(false)` when the daemon has no unpack service.
pub async fn unpack_in_daemon(
    ctx: &Ctx,
    image: &str,
    snapshotter: &str,
    platform: &str,
    verbose: bool,
) -> Result<bool, CmdError> {
    let snapshotter = super::images::resolve_snapshotter(ctx, snapshotter).await?;
    let mut stream = match UnpackClient::new(ctx.channel.clone())
        .unpack(ctx.request(UnpackRequest {
            image: image.to_owned(),
            snapshotter,
            platform: platform.to_owned(),
        }))
        .await
    {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == Code::Unimplemented => return Ok(false),
        Err(s) => return Err(s.into()),
    };
    loop {
        match stream.message().await {
            Ok(Some(p)) => {
                if verbose && p.state != "extracted" {
                    println!(
                        "{}/{} {} {} {}",
                        p.index + 1,
                        p.total,
                        p.state,
                        p.chain_id,
                        if p.parallel { "(parallel)" } else { "" }
                    );
                }
            }
            Ok(None) => return Ok(true),
            Err(s) if s.code() == Code::Unimplemented => return Ok(false),
            Err(s) => return Err(CmdError::Failed(format!("unpack {image}: {}", s.message()))),
        }
    }
}

pub async fn run(ctx: &Ctx, a: UnpackArgs) -> Result<(), CmdError> {
    if !unpack_in_daemon(ctx, &a.reference, &a.snapshotter, &a.platform, true).await? {
        return Err(CmdError::Failed(
            "this daemon cannot unpack images itself (bctr images unpack needs berthd); use bctr images import".into(),
        ));
    }
    Ok(())
}
