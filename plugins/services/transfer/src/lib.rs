//! `containerd.services.transfer.v1.Transfer`: decodes the transfer objects (`OCIRegistry`,
//! `ImageStore`, `ImageImportStream`, `ImageExportStream`) into `berth-transfer`'s types
//! (registry → image store is a pull, image store → registry a push, image store → image store
//! a tag, import stream → image store an import, image store → export stream an export), wires
//! the progress stream, a registry's auth stream and an archive's data stream (`bytestream`,
//! containerd's binary stream protocol) through the stream manager (`berth-streams`), runs the
//! engine, and maps its errors.
//! Pairs the engine does not do answer Unimplemented with containerd's text.

mod bytestream;
mod convert;

use std::sync::Arc;
use std::time::Duration;

use berth_api::transfer::{
    transfer_server::{Transfer, TransferServer},
    TransferRequest,
};
use berth_api::types::transfer as tt;
use berth_grpc::{namespace_required, to_status};
use berth_plugin::{types, InitError, Registration};
use berth_streams::{Stream, StreamManager};
use berth_transfer::{ProgressFn, RegistrySource, Transferrer};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use crate::convert::{credentials_over, decode, progress_message, Object};

/// How long the last progress events may take to reach the client once the transfer is done
/// (containerd's progress tracker waits as long) before the stream is closed regardless.
const PROGRESS_DRAIN: Duration = Duration::from_secs(10);

struct TransferService {
    engine: Arc<Transferrer>,
    streams: StreamManager,
}

/// The `io.containerd.grpc.v1.transfer` plugin.
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "transfer",
        &[types::TRANSFER, berth_streams::PLUGIN_TYPE],
        |ctx| {
            let engine = ctx.get_as::<Transferrer>(types::TRANSFER)?;
            let streams = ctx
                .get_by_id(berth_streams::PLUGIN_TYPE, berth_streams::PLUGIN_ID)?
                .downcast::<StreamManager>()
                .map_err(|_| InitError::Failed("the stream manager has the wrong type".into()))?;
            let svc = TransferServer::new(TransferService {
                engine,
                streams: Arc::unwrap_or_clone(streams),
            });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

/// Progress events queued for the client's stream: the engine never waits on the client, and
/// the events keep their order.
struct ProgressSink {
    stream: Stream,
    forward: tokio::task::JoinHandle<()>,
}

impl ProgressSink {
    fn start(stream: Stream) -> (ProgressFn, ProgressSink) {
        let (tx, mut rx) = mpsc::unbounded_channel::<berth_transfer::Progress>();
        let out = stream.clone();
        let forward = tokio::spawn(async move {
            while let Some(p) = rx.recv().await {
                if let Err(e) = out.send(progress_message(p)).await {
                    // The client stopped listening; the transfer goes on without it.
                    tracing::debug!(error = %e, "progress stream gone");
                    break;
                }
            }
        });
        let f: ProgressFn = Arc::new(move |p| {
            let _ = tx.send(p);
        });
        (f, ProgressSink { stream, forward })
    }

    /// Delivers what is queued (the engine's callbacks must be gone), then ends the stream,
    /// which ends the client's Streaming RPC.
    async fn finish(self) {
        let mut forward = self.forward;
        if tokio::time::timeout(PROGRESS_DRAIN, &mut forward)
            .await
            .is_err()
        {
            forward.abort();
        }
        self.stream.close();
    }
}

fn unsupported(req: &TransferRequest) -> Status {
    let url =
        |a: &Option<prost_types::Any>| a.as_ref().map(|a| a.type_url.clone()).unwrap_or_default();
    Status::unimplemented(format!(
        "method Transfer not implemented for {} to {}",
        url(&req.source),
        url(&req.destination)
    ))
}

#[tonic::async_trait]
impl Transfer for TransferService {
    #[tracing::instrument(skip_all, fields(source, destination))]
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        // The progress stream first, as containerd's service does, so whatever the outcome the
        // stream is closed and the client's Streaming RPC ends.
        let (progress, sink) = match req.options.as_ref().map(|o| o.progress_stream.as_str()) {
            Some(id) if !id.is_empty() => {
                let stream = self.streams.get(&ns, id).map_err(|e| to_status(&e))?;
                let (f, sink) = ProgressSink::start(stream);
                (f, Some(sink))
            }
            _ => (Arc::new(|_| {}) as ProgressFn, None),
        };
        let result = self.run(&ns, &req, progress).await;
        if let Some(sink) = sink {
            sink.finish().await;
        }
        result.map(Response::new)
    }
}

impl TransferService {
    /// The engine's view of an `OCIRegistry` (a pull's source or a push's destination); its
    /// auth stream, if it names one, goes into `auth` to be closed when the transfer ends.
    fn registry(
        &self,
        ns: &str,
        r: &tt::OciRegistry,
        auth: &mut Option<Stream>,
    ) -> Result<RegistrySource, Status> {
        let mut out = RegistrySource {
            reference: r.reference.clone(),
            ..Default::default()
        };
        if let Some(res) = &r.resolver {
            if !res.auth_stream.is_empty() {
                let s = self
                    .streams
                    .get(ns, &res.auth_stream)
                    .map_err(|e| to_status(&e))?;
                out.credentials = Some(credentials_over(s.clone(), r.reference.clone()));
                *auth = Some(s);
            }
            out.headers = res
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            out.host_dir = Some(res.host_dir.clone())
                .filter(|d| !d.is_empty())
                .map(Into::into);
            out.default_scheme = Some(res.default_scheme.clone()).filter(|s| !s.is_empty());
        }
        Ok(out)
    }

    /// The transfer itself; `progress` is dropped by the time it returns.
    async fn run(
        &self,
        ns: &str,
        req: &TransferRequest,
        progress: ProgressFn,
    ) -> Result<(), Status> {
        let span = tracing::Span::current();
        let (Some(src_any), Some(dst_any)) = (&req.source, &req.destination) else {
            return Err(Status::invalid_argument(
                "source and destination must be set: invalid argument",
            ));
        };
        span.record("source", berth_streams::type_name(&src_any.type_url));
        span.record("destination", berth_streams::type_name(&dst_any.type_url));
        // Only the pairs the engine does.
        let op = match (decode(src_any)?, decode(dst_any)?) {
            (Object::Registry(r), Object::ImageStore(i)) => Op::Pull(r, i),
            (Object::ImageStore(s), Object::ImageStore(d)) => Op::Tag(s, d),
            (Object::ImageStore(i), Object::Registry(r)) => Op::Push(i, r),
            (Object::ImportStream(s), Object::ImageStore(i)) => Op::Import(s, i),
            (Object::ImageStore(i), Object::ExportStream(s)) => Op::Export(i, s),
            _ => return Err(unsupported(req)),
        };

        let mut auth: Option<Stream> = None;
        let result = match op {
            Op::Pull(r, is) => {
                let source = self.registry(ns, &r, &mut auth)?;
                let dst = convert::image_store(is);
                let started = std::time::Instant::now();
                let r = self.engine.pull(ns, &source, &dst, progress).await;
                if r.is_ok() {
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(reference = %source.reference, ms, "pulled");
                }
                r.map(|_| ())
            }
            Op::Push(is, r) => {
                let dst = self.registry(ns, &r, &mut auth)?;
                let src = convert::image_store(is);
                let started = std::time::Instant::now();
                let r = self.engine.push(ns, &src, &dst, progress).await;
                if let Ok(root) = &r {
                    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                    tracing::info!(reference = %dst.reference, digest = %root.digest(), ms, "pushed");
                }
                r.map(|_| ())
            }
            Op::Tag(s, d) => {
                let (src, dst) = (convert::image_store(s), convert::image_store(d));
                self.engine.tag(ns, &src, &dst, progress).await.map(|_| ())
            }
            Op::Import(s, is) => {
                // A stream that does not exist is NotFound, as containerd's stream getter says.
                let stream = self.streams.get(ns, &s.stream).map_err(|e| to_status(&e))?;
                let (reader, receiving) = bytestream::receive(stream);
                let src = berth_transfer::ImportStream {
                    reader: Box::new(reader),
                    media_type: s.media_type,
                    force_compress: s.force_compress,
                };
                let dst = convert::image_store(is);
                let r = self.engine.import(ns, src, &dst, progress).await;
                // The client's side of the data stream ends with the import.
                receiving.finish();
                r.map(|_| ())
            }
            Op::Export(is, s) => {
                let stream = self.streams.get(ns, &s.stream).map_err(|e| to_status(&e))?;
                let (writer, sending) = bytestream::send(stream);
                let src = convert::image_store(is);
                let options = convert::export_options(&s);
                let r = self
                    .engine
                    .export(ns, &src, options, Box::new(writer), progress)
                    .await;
                // Everything written reaches the client (and the stream closes) before the
                // answer does.
                let sent = sending.finish().await;
                match (r, sent) {
                    (Err(e), _) => Err(e),
                    (Ok(()), Ok(bytes)) => {
                        tracing::debug!(bytes, "archive sent");
                        Ok(())
                    }
                    (Ok(()), Err(e)) => {
                        tracing::warn!(error = %e, "the client did not receive the whole archive");
                        return Err(Status::unavailable(format!(
                            "sending the archive: {e}: unavailable"
                        )));
                    }
                }
            }
        };
        // The client's side of the auth stream ends with the transfer.
        if let Some(a) = auth {
            a.close();
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "transfer failed");
                Err(to_status(&e))
            }
        }
    }
}

enum Op {
    Pull(tt::OciRegistry, tt::ImageStore),
    Push(tt::ImageStore, tt::OciRegistry),
    Tag(tt::ImageStore, tt::ImageStore),
    Import(tt::ImageImportStream, tt::ImageStore),
    Export(tt::ImageStore, tt::ImageExportStream),
}
