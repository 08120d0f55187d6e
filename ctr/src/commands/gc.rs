//! `bctr gc`: run Berth's garbage collector now and show what it freed (Berth's own service;
//! containerd has none).

use berth_api::berth::services::gc::v1::{gc_client::GcClient, CollectRequest};

use super::{CmdError, Ctx};
use bctr::units::human_size;

pub async fn run(ctx: &Ctx) -> Result<(), CmdError> {
    let r = GcClient::new(ctx.channel.clone())
        .collect(ctx.request(CollectRequest {}))
        .await
        .map_err(|s| {
            if s.code() == tonic::Code::Unimplemented {
                CmdError::Failed("this daemon has no gc service (bctr gc needs berthd)".into())
            } else {
                CmdError::Rpc(s)
            }
        })?
        .into_inner();
    for b in &r.blobs {
        println!("content  {} {}", b.namespace, b.digest);
    }
    for s in &r.snapshots {
        println!("snapshot {s}");
    }
    for l in &r.leases {
        println!("lease    {l}");
    }
    for i in &r.ingests {
        println!("ingest   {i}");
    }
    println!(
        "freed {} in {} files ({} records, {} snapshots, {} leases, {} ingests) in {:.1} ms",
        human_size(r.freed_bytes),
        r.deleted_files.len(),
        r.blobs.len(),
        r.snapshots.len(),
        r.leases.len(),
        r.ingests.len(),
        r.duration_us as f64 / 1000.0
    );
    Ok(())
}
