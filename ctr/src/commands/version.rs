use berth_api::version::version_client::VersionClient;

use super::{CmdError, Ctx};

pub async fn run(ctx: &Ctx) -> Result<(), CmdError> {
    let resp = VersionClient::new(ctx.channel.clone())
        .version(ctx.request(()))
        .await?
        .into_inner();
    let server_uuid = berth_api::introspection::introspection_client::IntrospectionClient::new(
        ctx.channel.clone(),
    )
    .server(ctx.request(()))
    .await
    .map(|r| r.into_inner().uuid)
    .unwrap_or_default();
    println!("Client:");
    println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
    println!();
    println!("Server:");
    println!("  Version:  {}", resp.version);
    println!("  Revision: {}", resp.revision);
    if !server_uuid.is_empty() {
        println!("  UUID: {server_uuid}");
    }
    Ok(())
}
