//! `containerd.services.leases.v1.Leases`: holds that protect work in progress from the collector.

use std::sync::Arc;

use berth_api::leases::{
    leases_server::{Leases, LeasesServer},
    AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest, DeleteResourceRequest,
    Lease as PbLease, ListRequest, ListResourcesRequest, ListResourcesResponse, ListResponse,
    Resource,
};
use berth_filters::{Adaptor, Filters};
use berth_gc::Scheduler;
use berth_grpc::to_status;
use berth_grpc::{label_field, namespace_required, run_blocking, timestamp};
use berth_metadata::{Lease, LeaseResource, MetadataDb};
use berth_plugin::{types, Registration};
use tonic::{Request, Response, Status};

pub struct LeasesService {
    db: Arc<MetadataDb>,
    gc: Option<Scheduler>,
}

/// The `io.containerd.grpc.v1.leases` plugin.
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "leases",
        &[types::METADATA, types::GC],
        |ctx| {
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let gc = Scheduler::from_context(ctx);
            let svc = LeasesServer::new(LeasesService { db, gc });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

fn lease_pb(l: Lease) -> PbLease {
    PbLease {
        id: l.id,
        created_at: Some(timestamp(l.created_at)),
        labels: l.labels.into_iter().collect(),
    }
}

fn resource(r: Option<Resource>) -> Result<LeaseResource, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("resource must be set: invalid argument"))?;
    Ok(LeaseResource {
        id: r.id,
        kind: r.r#type,
    })
}

struct Fields<'a>(&'a Lease);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("id") => vec![self.0.id.clone()],
            Some("labels") => label_field(&self.0.labels, &path[1..]),
            _ => Vec::new(),
        }
    }
}

#[tonic::async_trait]
impl Leases for LeasesService {
    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id))]
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        // An empty id gets a generated one, so a client need not invent names.
        let id = if req.id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            req.id
        };
        let labels = req.labels.into_iter().collect();
        let db = self.db.clone();
        let lease = run_blocking(move || db.create_lease(&ns, &id, labels)).await?;
        Ok(Response::new(CreateResponse {
            lease: Some(lease_pb(lease)),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id, sync = req.get_ref().sync))]
    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let db = self.db.clone();
        let id = req.id;
        run_blocking(move || db.delete_lease(&ns, &id)).await?;
        if let Some(gc) = &self.gc {
            gc.after_delete(req.sync).await.map_err(|e| to_status(&e))?;
        }
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all)]
    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = namespace_required(&req)?;
        let filters = Filters::parse(&req.into_inner().filters).map_err(|e| to_status(&e))?;
        let db = self.db.clone();
        let all = run_blocking(move || db.list_leases(&ns)).await?;
        let leases = all
            .into_iter()
            .filter(|l| filters.matches(&Fields(l)))
            .map(lease_pb)
            .collect();
        Ok(Response::new(ListResponse { leases }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id))]
    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let r = resource(req.resource)?;
        let db = self.db.clone();
        run_blocking(move || db.add_lease_resource(&ns, &req.id, &r)).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id))]
    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let r = resource(req.resource)?;
        let db = self.db.clone();
        run_blocking(move || db.delete_lease_resource(&ns, &req.id, &r)).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id))]
    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().id;
        let db = self.db.clone();
        let all = run_blocking(move || db.list_lease_resources(&ns, &id)).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: all
                .into_iter()
                .map(|r| Resource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}

#[cfg(test)]
mod tests;
