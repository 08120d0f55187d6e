//! `containerd.services.version.v1.Version`: which berthd is answering.

use berth_api::version::{
    version_server::{Version, VersionServer},
    VersionResponse,
};
use berth_plugin::{types, Registration};
use tonic::{Request, Response, Status};

/// berthd's version, as `ctr version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision berthd was built from (`.m` when the tree had local changes).
pub const REVISION: &str = env!("BERTH_REVISION");

struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    #[tracing::instrument(skip_all)]
    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_owned(),
            revision: REVISION.to_owned(),
        }))
    }
}

/// The `io.containerd.grpc.v1.version` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "version", &[], |_ctx| {
        Ok(berth_grpc::grpc_service!(VersionServer::new(
            VersionService
        )))
    })
}
