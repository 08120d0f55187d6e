//! `containerd.services.snapshots.v1.Snapshots`: the snapshotter chosen by each request's
//! `snapshotter` field, namespaced through the metadata store (see `store.rs`).

mod raw;

use std::pin::Pin;
use std::sync::Arc;

use berth_api::snapshots::{
    snapshots_server::{Snapshots as SnapshotsApi, SnapshotsServer},
    CleanupRequest, CommitSnapshotRequest, Info as PbInfo, Kind as PbKind, ListSnapshotsRequest,
    ListSnapshotsResponse, MountsRequest, MountsResponse, PrepareSnapshotRequest,
    PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse,
    UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest, UsageResponse,
    ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_api::types::Mount as PbMount;
use berth_filters::{Adaptor, Filters};
use berth_grpc::to_status;
use berth_grpc::{label_field, lease, namespace_required, run_blocking, timestamp};
use berth_plugin::{types, Registration};
use berth_snapshotter::{Info, Kind, Mount};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

pub use berth_snapshots::canonical;
use berth_snapshots::{NewSnapshot, Snapshots};
pub use raw::RawSnapshotsService;

struct SnapshotsService {
    store: Arc<Snapshots>,
}

/// The `io.containerd.grpc.v1.snapshots` plugin, serving the shared namespaced snapshots store.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "snapshots", &[types::SERVICE], |ctx| {
        let store = berth_snapshots::shared(ctx)?;
        let svc = SnapshotsServer::new(SnapshotsService { store });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

pub(crate) fn mount_pb(m: Mount) -> PbMount {
    PbMount {
        r#type: m.mount_type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

pub(crate) fn info_pb(i: Info) -> PbInfo {
    let kind = match i.kind() {
        Kind::View => PbKind::View,
        Kind::Active => PbKind::Active,
        Kind::Committed => PbKind::Committed,
    };
    PbInfo {
        name: i.name,
        parent: i.parent,
        kind: kind as i32,
        created_at: Some(timestamp(i.created_at)),
        updated_at: Some(timestamp(i.updated_at)),
        labels: i.labels.into_iter().collect(),
    }
}

pub(crate) struct Fields<'a>(pub(crate) &'a Info);

impl Adaptor for Fields<'_> {
    fn field(&self, path: &[String]) -> Vec<String> {
        match path.first().map(String::as_str) {
            Some("name") => vec![self.0.name.clone()],
            Some("parent") => vec![self.0.parent.clone()],
            Some("kind") => vec![self.0.kind().as_str().to_lowercase()],
            Some("labels") => label_field(&self.0.labels, &path[1..]),
            _ => Vec::new(),
        }
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

impl SnapshotsService {
    async fn create(
        &self,
        ns: String,
        lease: Option<String>,
        sn: String,
        new: NewSnapshot,
    ) -> Result<Vec<PbMount>, Status> {
        let store = self.store.clone();
        let mounts = run_blocking(move || store.prepare(&ns, &sn, lease.as_deref(), new)).await?;
        Ok(mounts.into_iter().map(mount_pb).collect())
    }
}

#[tonic::async_trait]
impl SnapshotsApi for SnapshotsService {
    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, key = %req.get_ref().key))]
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let ns = namespace_required(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        let new = NewSnapshot {
            key: r.key,
            parent: r.parent,
            labels: r.labels.into_iter().collect(),
            view: false,
        };
        let mounts = self.create(ns, lease, r.snapshotter, new).await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, key = %req.get_ref().key))]
    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let ns = namespace_required(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        let new = NewSnapshot {
            key: r.key,
            parent: r.parent,
            labels: r.labels.into_iter().collect(),
            view: true,
        };
        let mounts = self.create(ns, lease, r.snapshotter, new).await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, key = %req.get_ref().key))]
    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let store = self.store.clone();
        let mounts = run_blocking(move || store.mounts(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts.into_iter().map(mount_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, name = %req.get_ref().name, key = %req.get_ref().key))]
    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        let store = self.store.clone();
        let labels = r.labels.into_iter().collect();
        run_blocking(move || {
            store.commit(
                &ns,
                &r.snapshotter,
                &r.name,
                &r.key,
                labels,
                lease.as_deref(),
            )
        })
        .await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, key = %req.get_ref().key))]
    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let store = self.store.clone();
        // The record's removal wakes the collector (the metadata store's dereference callback).
        run_blocking(move || store.remove(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, key = %req.get_ref().key))]
    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let store = self.store.clone();
        let i = run_blocking(move || store.stat(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_pb(i)),
        }))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter))]
    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let pb = r
            .info
            .ok_or_else(|| Status::invalid_argument("info must be set: invalid argument"))?;
        let want = Info {
            name: pb.name,
            labels: pb.labels.into_iter().collect(),
            ..Default::default()
        };
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let store = self.store.clone();
        let i = run_blocking(move || store.update(&ns, &r.snapshotter, &want, &paths)).await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_pb(i)),
        }))
    }

    type ListStream = ListStream;

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter))]
    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let filters = Filters::parse(&r.filters).map_err(|e| to_status(&e))?;
        let store = self.store.clone();
        let all = run_blocking(move || store.list(&ns, &r.snapshotter)).await?;
        let infos: Vec<PbInfo> = all
            .into_iter()
            .filter(|i| filters.matches(&Fields(i)))
            .map(info_pb)
            .collect();
        let batches: Vec<Result<ListSnapshotsResponse, Status>> = infos
            .chunks(100)
            .map(|c| Ok(ListSnapshotsResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter, key = %req.get_ref().key))]
    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let store = self.store.clone();
        let u = run_blocking(move || store.usage(&ns, &r.snapshotter, &r.key)).await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    #[tracing::instrument(skip_all, fields(snapshotter = %req.get_ref().snapshotter))]
    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let store = self.store.clone();
        run_blocking(move || store.cleanup(&r.snapshotter)).await?;
        Ok(Response::new(()))
    }
}
