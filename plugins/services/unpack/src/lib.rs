//! `berth.services.unpack.v1.Unpack`: the gRPC front of Berth's unpacker (`berth-unpack`, where
//! the rules live). A request becomes a `berth_unpack::Request`, each layer's progress a
//! streamed `UnpackProgress`, and an error the status containerd's code for its kind would be.

use std::pin::Pin;

use berth_api::berth::services::unpack::v1::{
    unpack_server::{Unpack, UnpackServer},
    UnpackProgress, UnpackRequest,
};
use berth_content_store::ContentStore;
use berth_grpc::namespace_required;
use berth_metadata::MetadataDb;
use berth_plugin::{types, Registration};
use berth_unpack::{Progress, Request as CoreRequest, Unpacker};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

struct UnpackService {
    unpacker: Unpacker,
}

/// The `io.containerd.grpc.v1.unpack` plugin (Berth's own service).
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "unpack",
        &[types::METADATA, types::CONTENT, types::SERVICE],
        |ctx| {
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let content = ctx.get_as::<ContentStore>(types::CONTENT)?;
            // The shared namespaced instance: its snapshot events and the collector's wake-ups
            // happen for the unpacker's changes as for the snapshots service's.
            let snapshots = berth_snapshots::shared(ctx)?;
            let svc = UnpackServer::new(UnpackService {
                unpacker: Unpacker::new(db, content, snapshots),
            });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

fn to_proto(p: Progress) -> UnpackProgress {
    UnpackProgress {
        chain_id: p.chain_id.into_string(),
        layer: p.layer.into_string(),
        state: p.state.as_str().into(),
        index: i32::try_from(p.index).unwrap_or(i32::MAX),
        total: i32::try_from(p.total).unwrap_or(i32::MAX),
        bytes: i64::try_from(p.bytes).unwrap_or(i64::MAX),
        parallel: p.parallel,
    }
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<UnpackProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Unpack for UnpackService {
    type UnpackStream = ProgressStream;

    #[tracing::instrument(skip_all, fields(image = %req.get_ref().image, snapshotter = %req.get_ref().snapshotter))]
    async fn unpack(
        &self,
        req: Request<UnpackRequest>,
    ) -> Result<Response<Self::UnpackStream>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        if req.image.is_empty() {
            return Err(Status::invalid_argument(
                "image must be set: invalid argument",
            ));
        }
        let platform =
            CoreRequest::parse_platform(&req.platform).map_err(|e| berth_grpc::to_status(&e))?;
        let core = CoreRequest {
            namespace: ns,
            image: req.image,
            snapshotter: req.snapshotter,
            platform,
            target: None,
            gate: None,
        };
        let (tx, rx) = mpsc::channel(16);
        let (progress_tx, mut progress_rx) = mpsc::channel::<Progress>(16);
        let unpacker = self.unpacker.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let image = core.image.clone();
            let job = unpacker.unpack(core, progress_tx);
            let forward = async {
                while let Some(p) = progress_rx.recv().await {
                    let _ = tx.send(Ok(to_proto(p))).await;
                }
            };
            let (result, ()) = tokio::join!(job, forward);
            match result {
                Ok(done) => {
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(%image, chain_id = %done.chain_id, ms, "unpacked");
                }
                Err(e) => {
                    tracing::warn!(error = %e, %image, "unpack failed");
                    let _ = tx.send(Err(berth_grpc::to_status(&e))).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
