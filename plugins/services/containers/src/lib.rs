//! `containerd.services.containers.v1.Containers`: container records by id. A container is
//! metadata only (what a task is made from and the snapshot it pins); the store validates,
//! announces changes and wakes the collector.

use std::pin::Pin;
use std::sync::Arc;

use berth_api::containers::{
    container::Runtime as PbRuntime,
    containers_server::{Containers, ContainersServer},
    Container as PbContainer, CreateContainerRequest, CreateContainerResponse,
    DeleteContainerRequest, GetContainerRequest, GetContainerResponse, ListContainerMessage,
    ListContainersRequest, ListContainersResponse, UpdateContainerRequest, UpdateContainerResponse,
};
use berth_filters::{Adaptor, Filters};
use berth_grpc::{label_field, namespace_required, run_blocking, run_lookup, timestamp, to_status};
use berth_metadata::{AnyValue, Container, ContainerRuntime, MetadataDb};
use berth_plugin::{types, Registration};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub struct ContainersService {
    db: Arc<MetadataDb>,
}

/// The `io.containerd.grpc.v1.containers` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "containers", &[types::METADATA], |ctx| {
        let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
        let svc = ContainersServer::new(ContainersService { db });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

fn any_pb(a: AnyValue) -> prost_types::Any {
    prost_types::Any {
        type_url: a.type_url,
        value: a.value,
    }
}

fn any(a: prost_types::Any) -> AnyValue {
    AnyValue {
        type_url: a.type_url,
        value: a.value,
    }
}

fn container_pb(c: Container) -> PbContainer {
    PbContainer {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: Some(PbRuntime {
            name: c.runtime.name,
            options: c.runtime.options.map(any_pb),
        }),
        spec: c.spec.map(any_pb),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        extensions: c
            .extensions
            .into_iter()
            .map(|(k, v)| (k, any_pb(v)))
            .collect(),
        sandbox: c.sandbox,
    }
}

/// A request's container; a missing one is empty, and fails validation as containerd's does.
fn container(c: Option<PbContainer>) -> Container {
    let c = c.unwrap_or_default();
    let runtime = c.runtime.unwrap_or_default();
    Container {
        id: c.id,
        labels: c.labels.into_iter().collect(),
        image: c.image,
        runtime: ContainerRuntime {
            name: runtime.name,
            options: runtime.options.map(any),
        },
        spec: c.spec.map(any),
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: 0,
        updated_at: 0,
        extensions: c.extensions.into_iter().map(|(k, v)| (k, any(v))).collect(),
        sandbox: c.sandbox,
    }
}

/// The fields containerd's container filters see.
struct Fields<'a>(&'a Container);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        let c = self.0;
        let non_empty = |s: &String| {
            if s.is_empty() {
                Vec::new()
            } else {
                vec![s.clone()]
            }
        };
        match path
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice()
        {
            ["id"] => non_empty(&c.id),
            ["image"] => non_empty(&c.image),
            ["runtime", "name"] => non_empty(&c.runtime.name),
            ["labels", ..] => label_field(&c.labels, &path[1..]),
            _ => Vec::new(),
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

impl ContainersService {
    async fn matching(&self, ns: String, filters: &[String]) -> Result<Vec<PbContainer>, Status> {
        let filters = Filters::parse(filters).map_err(|e| to_status(&e))?;
        let db = self.db.clone();
        let all = run_blocking(move || db.list_containers(&ns)).await?;
        Ok(all
            .into_iter()
            .filter(|c| filters.matches(&Fields(c)))
            .map(container_pb)
            .collect())
    }
}

#[tonic::async_trait]
impl Containers for ContainersService {
    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id))]
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().id;
        let c = run_lookup(|| self.db.get_container(&ns, &id))?;
        Ok(Response::new(GetContainerResponse {
            container: Some(container_pb(c)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace_required(&req)?;
        let containers = self.matching(ns, &req.into_inner().filters).await?;
        Ok(Response::new(ListContainersResponse { containers }))
    }

    type ListStreamStream = BoxStream<ListContainerMessage>;

    #[tracing::instrument(skip_all)]
    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace_required(&req)?;
        let containers = self.matching(ns, &req.into_inner().filters).await?;
        let messages = containers
            .into_iter()
            .map(|c| Ok(ListContainerMessage { container: Some(c) }));
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    #[tracing::instrument(skip_all)]
    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace_required(&req)?;
        let c = container(req.into_inner().container);
        tracing::debug!(id = %c.id, image = %c.image, "create container");
        let db = self.db.clone();
        let created = run_blocking(move || db.create_container(&ns, &c)).await?;
        Ok(Response::new(CreateContainerResponse {
            container: Some(container_pb(created)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        let c = container(req.container);
        let paths = req.update_mask.map(|m| m.paths).unwrap_or_default();
        tracing::debug!(id = %c.id, ?paths, "update container");
        let db = self.db.clone();
        let updated = run_blocking(move || db.update_container(&ns, &c, &paths)).await?;
        Ok(Response::new(UpdateContainerResponse {
            container: Some(container_pb(updated)),
        }))
    }

    #[tracing::instrument(skip_all, fields(id = %req.get_ref().id))]
    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let id = req.into_inner().id;
        let db = self.db.clone();
        // The record's deletion wakes the collector (the store's dereference callback).
        run_blocking(move || db.delete_container(&ns, &id)).await?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests;
