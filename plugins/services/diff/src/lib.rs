//! `containerd.services.diff.v1.Diff`: protobuf to and from `berth-diff`, the walking differ.

use std::sync::Arc;

use berth_api::diff::{
    diff_server::{Diff, DiffServer},
    ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use berth_api::types::{Descriptor as PbDescriptor, Mount as PbMount};
use berth_content_store::ContentStore;
use berth_diff::{apply_layer, DiffParams};
use berth_grpc::{lease, namespace_required, run_blocking};
use berth_metadata::Descriptor;
use berth_plugin::{types, Registration};
use berth_snapshotter::Mount;
use tonic::{Request, Response, Status};

struct DiffService {
    content: Arc<ContentStore>,
}

/// The `io.containerd.grpc.v1.diff` plugin.
pub fn registration() -> Registration {
    Registration::new(types::GRPC, "diff", &[types::CONTENT], |ctx| {
        let content = ctx.get_as::<ContentStore>(types::CONTENT)?;
        let svc = DiffServer::new(DiffService { content });
        Ok(berth_grpc::grpc_service!(svc))
    })
}

fn mount(m: PbMount) -> Mount {
    Mount {
        mount_type: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

fn descriptor(d: PbDescriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

fn descriptor_pb(d: Descriptor) -> PbDescriptor {
    PbDescriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

#[tonic::async_trait]
impl Diff for DiffService {
    #[tracing::instrument(skip_all, fields(digest = req.get_ref().diff.as_ref().map(|d| d.digest.as_str()).unwrap_or("")))]
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = namespace_required(&req)?;
        let r = req.into_inner();
        let desc = r.diff.ok_or_else(|| {
            Status::invalid_argument("diff descriptor must be set: invalid argument")
        })?;
        let mounts: Vec<Mount> = r.mounts.into_iter().map(mount).collect();
        let content = self.content.clone();
        let sync = r.sync_fs;
        let desc = descriptor(desc);
        let applied = run_blocking(move || apply_layer(&content, &ns, &desc, mounts, sync)).await?;
        Ok(Response::new(ApplyResponse {
            applied: Some(descriptor_pb(applied)),
        }))
    }

    #[tracing::instrument(skip_all)]
    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ns = namespace_required(&req)?;
        let lease = lease(&req);
        let r = req.into_inner();
        let content = self.content.clone();
        let params = DiffParams {
            left: r.left.into_iter().map(mount).collect(),
            right: r.right.into_iter().map(mount).collect(),
            media_type: r.media_type,
            reference: r.r#ref,
            labels: r.labels.into_iter().collect(),
            source_date_epoch: r.source_date_epoch.map(|t| {
                std::time::UNIX_EPOCH
                    + std::time::Duration::new(
                        u64::try_from(t.seconds).unwrap_or(0),
                        u32::try_from(t.nanos).unwrap_or(0),
                    )
            }),
        };
        let d =
            run_blocking(move || berth_diff::diff(&content, &ns, lease.as_deref(), params)).await?;
        Ok(Response::new(DiffResponse {
            diff: Some(descriptor_pb(d)),
        }))
    }
}
