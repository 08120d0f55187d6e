//! The snapshots API over one driver, without namespaces or records: what a proxy snapshotter
//! serves. The client (a containerd, or another berthd) keeps its own namespaced records and
//! sends its own unique keys, so every call goes straight to the driver.

use std::pin::Pin;
use std::sync::Arc;

use berth_api::snapshots::{
    snapshots_server::{Snapshots as SnapshotsApi, SnapshotsServer},
    CleanupRequest, CommitSnapshotRequest, Info as PbInfo, ListSnapshotsRequest,
    ListSnapshotsResponse, MountsRequest, MountsResponse, PrepareSnapshotRequest,
    PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest, StatSnapshotResponse,
    UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest, UsageResponse,
    ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_filters::Filters;
use berth_grpc::run_blocking;
use berth_grpc::to_status;
use berth_snapshotter::{Info, Snapshotter};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::{info_pb, mount_pb, Fields};

pub struct RawSnapshotsService {
    driver: Arc<dyn Snapshotter>,
}

impl RawSnapshotsService {
    pub fn server(driver: Arc<dyn Snapshotter>) -> SnapshotsServer<RawSnapshotsService> {
        SnapshotsServer::new(RawSnapshotsService { driver })
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl SnapshotsApi for RawSnapshotsService {
    #[tracing::instrument(skip_all, fields(key = %req.get_ref().key))]
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        let m = run_blocking(move || d.prepare(&r.key, &r.parent, r.labels.into_iter().collect()))
            .await?;
        Ok(Response::new(PrepareSnapshotResponse {
            mounts: m.into_iter().map(mount_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(key = %req.get_ref().key))]
    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        let m =
            run_blocking(move || d.view(&r.key, &r.parent, r.labels.into_iter().collect())).await?;
        Ok(Response::new(ViewSnapshotResponse {
            mounts: m.into_iter().map(mount_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(key = %req.get_ref().key))]
    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        let m = run_blocking(move || d.mounts(&r.key)).await?;
        Ok(Response::new(MountsResponse {
            mounts: m.into_iter().map(mount_pb).collect(),
        }))
    }

    #[tracing::instrument(skip_all, fields(name = %req.get_ref().name, key = %req.get_ref().key))]
    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        run_blocking(move || d.commit(&r.name, &r.key, r.labels.into_iter().collect())).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(key = %req.get_ref().key))]
    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        run_blocking(move || d.remove(&r.key)).await?;
        Ok(Response::new(()))
    }

    #[tracing::instrument(skip_all, fields(key = %req.get_ref().key))]
    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        let i = run_blocking(move || d.stat(&r.key)).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_pb(i)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
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
        let d = self.driver.clone();
        let i = run_blocking(move || d.update(&want, &paths)).await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_pb(i)),
        }))
    }

    type ListStream = ListStream;

    #[tracing::instrument(skip_all)]
    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let r = req.into_inner();
        let filters = Filters::parse(&r.filters).map_err(|e| to_status(&e))?;
        let d = self.driver.clone();
        let all = run_blocking(move || {
            let mut v = Vec::new();
            d.walk(&mut |i| {
                v.push(i.clone());
                true
            })?;
            Ok::<_, berth_snapshotter::SnapshotError>(v)
        })
        .await?;
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

    #[tracing::instrument(skip_all, fields(key = %req.get_ref().key))]
    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let r = req.into_inner();
        let d = self.driver.clone();
        let u = run_blocking(move || d.usage(&r.key)).await?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn cleanup(&self, _req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        let d = self.driver.clone();
        run_blocking(move || d.cleanup()).await?;
        Ok(Response::new(()))
    }
}
