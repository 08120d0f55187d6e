//! `containerd.services.namespaces.v1.Namespaces`: converts between proto and store types and
//! nothing more; the rules live in `berth-metadata`.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::namespaces::{
    namespaces_server::{Namespaces, NamespacesServer},
    CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest, GetNamespaceRequest,
    GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse, Namespace as PbNamespace,
    UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use berth_filters::{Adaptor, Filters};
use berth_grpc::{run_blocking, run_lookup};
use berth_metadata::{MetadataDb, Namespace};
use berth_plugin::{types, Registration};
use tonic::{Request, Response, Status};

pub struct NamespacesService {
    db: Arc<MetadataDb>,
}

/// The `io.containerd.grpc.v1.namespaces` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "namespaces", &[types::METADATA], |ctx| {
        let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
        let svc = NamespacesServer::new(NamespacesService { db });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

fn to_pb(ns: Namespace) -> PbNamespace {
    PbNamespace {
        name: ns.name,
        labels: ns.labels.into_iter().collect(),
    }
}

fn from_pb(ns: PbNamespace) -> Namespace {
    Namespace {
        name: ns.name,
        labels: ns.labels.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

struct Fields<'a>(&'a Namespace);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path {
            [f] if f == "name" => vec![self.0.name.clone()],
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => self
                .0
                .labels
                .get(&rest.join("."))
                .cloned()
                .into_iter()
                .collect(),
            _ => Vec::new(),
        }
    }
}

fn required(ns: Option<PbNamespace>) -> Result<PbNamespace, Status> {
    ns.ok_or_else(|| Status::invalid_argument("namespace must be set: invalid argument"))
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = req.into_inner().name;
        let ns = run_lookup(|| self.db.get_namespace(&name))?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(to_pb(ns)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let filter = req.into_inner().filter;
        let filters = Filters::parse(&[filter]).map_err(|e| berth_grpc::to_status(&e))?;
        let db = self.db.clone();
        let all = run_blocking(move || db.list_namespaces()).await?;
        let namespaces = all
            .into_iter()
            .filter(|ns| filters.matches(&Fields(ns)))
            .map(to_pb)
            .collect();
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    #[tracing::instrument(skip_all)]
    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let ns = from_pb(required(req.into_inner().namespace)?);
        tracing::debug!(name = %ns.name, "create namespace");
        let db = self.db.clone();
        let stored = ns.clone();
        run_blocking(move || db.create_namespace(&stored)).await?;
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(to_pb(ns)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let req = req.into_inner();
        let ns = from_pb(required(req.namespace)?);
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        tracing::debug!(name = %ns.name, ?paths, "update namespace");
        let db = self.db.clone();
        let updated = run_blocking(move || db.update_namespace(&ns, &paths)).await?;
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(to_pb(updated)),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name))]
    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let name = req.into_inner().name;
        let db = self.db.clone();
        let n2 = name.clone();
        run_blocking(move || db.delete_namespace(&n2)).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests;
