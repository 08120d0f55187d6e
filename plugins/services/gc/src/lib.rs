//! `berth.services.gc.v1.GC`: lets an admin run a collection and see what it freed.

use berth_api::berth::services::gc::v1::{
    gc_server::{Gc, GcServer},
    CollectRequest, CollectResponse, RemovedBlob,
};
use berth_grpc::to_status;
use berth_plugin::{types, Registration};
use tonic::{Request, Response, Status};

use berth_gc::Scheduler;

struct GcService {
    scheduler: Scheduler,
}

#[tonic::async_trait]
impl Gc for GcService {
    #[tracing::instrument(skip_all)]
    async fn collect(
        &self,
        _req: Request<CollectRequest>,
    ) -> Result<Response<CollectResponse>, Status> {
        let s = self
            .scheduler
            .collect_now()
            .await
            .map_err(|e| to_status(&e))?;
        Ok(Response::new(CollectResponse {
            blobs: s
                .blobs
                .into_iter()
                .map(|(namespace, digest)| RemovedBlob { namespace, digest })
                .collect(),
            leases: s
                .leases
                .into_iter()
                .map(|(ns, id)| format!("{ns}/{id}"))
                .collect(),
            snapshots: s
                .snapshots
                .into_iter()
                .map(|(sn, key)| format!("{sn}/{key}"))
                .collect(),
            ingests: s.ingests,
            deleted_files: s.deleted_files,
            freed_bytes: i64::try_from(s.freed_bytes).unwrap_or(i64::MAX),
            duration_us: i64::try_from(s.duration.as_micros()).unwrap_or(i64::MAX),
        }))
    }
}

/// The `io.containerd.grpc.v1.gc` plugin (Berth's own service).
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "gc", &[types::GC], |ctx| {
        let scheduler = ctx.get_as::<Scheduler>(types::GC)?;
        let svc = GcServer::new(GcService {
            scheduler: (*scheduler).clone(),
        });
        Ok(berth_grpc::grpc_service!(svc))
    })
}
