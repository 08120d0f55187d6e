//! `containerd.services.streaming.v1.Streaming`: the gRPC front of Berth's named streams
//! (`berth-streams`). As containerd's service: the client's first message is `Any(StreamInit)`,
//! the stream is registered under (namespace, id) and acknowledged with `Any(Empty)`; from then
//! on messages flow both ways until the consumer closes the stream (the RPC ends OK) or the
//! client goes away (the registration goes with it).

use std::pin::Pin;
use std::sync::Arc;

use berth_api::streaming::{
    streaming_server::{Streaming, StreamingServer},
    StreamInit,
};
use berth_plugin::{types, InitError, Registration};
use berth_streams::{Message, StreamManager};
use prost::Message as _;
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

const STREAM_INIT: &str = "containerd.services.streaming.v1.StreamInit";
const EMPTY: &str = "google.protobuf.Empty";

struct StreamingService {
    manager: StreamManager,
}

/// The `io.containerd.grpc.v1.streaming` plugin, over `io.containerd.streaming.v1.manager`.
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "streaming",
        &[berth_streams::PLUGIN_TYPE],
        |ctx| {
            let manager = ctx
                .get_by_id(berth_streams::PLUGIN_TYPE, berth_streams::PLUGIN_ID)?
                .downcast::<StreamManager>()
                .map_err(|_| InitError::Failed("the stream manager has the wrong type".into()))?;
            let svc = StreamingServer::new(StreamingService {
                manager: Arc::unwrap_or_clone(manager),
            });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

fn to_any(m: Message) -> Any {
    Any {
        type_url: m.type_url,
        value: m.value,
    }
}

type AnyStream = Pin<Box<dyn Stream<Item = Result<Any, Status>> + Send>>;

#[tonic::async_trait]
impl Streaming for StreamingService {
    type StreamStream = AnyStream;

    #[tracing::instrument(skip_all, fields(stream))]
    async fn stream(
        &self,
        req: Request<tonic::Streaming<Any>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        // containerd takes the namespace from the context without requiring one; the Transfer
        // service looks the stream up the same way, so both agree on "" too.
        let ns = berth_grpc::namespace(&req).unwrap_or_default();
        let mut inbound = req.into_inner();
        let first = inbound.message().await?.ok_or_else(|| {
            Status::invalid_argument("stream closed before its StreamInit: invalid argument")
        })?;
        if berth_streams::type_name(&first.type_url) != STREAM_INIT {
            return Err(Status::invalid_argument(format!(
                "first message must be {STREAM_INIT}, not {:?}: invalid argument",
                first.type_url
            )));
        }
        let init = StreamInit::decode(first.value.as_slice())
            .map_err(|e| Status::invalid_argument(format!("StreamInit: {e}: invalid argument")))?;
        tracing::Span::current().record("stream", init.id.as_str());
        let (mut endpoint, incoming) = self
            .manager
            .register(&ns, &init.id)
            .map_err(|e| berth_grpc::to_status(&e))?;

        let (tx, rx) = mpsc::channel::<Result<Any, Status>>(16);
        // The acknowledgement containerd's clients wait for before using the stream.
        let ack = Message::new(EMPTY, Vec::new());
        if tx.send(Ok(to_any(ack))).await.is_err() {
            return Err(Status::cancelled("client went away"));
        }

        // The client's messages, for the consumer. Dropping `incoming` when the client closes
        // its side is what makes the consumer's `recv` end.
        let forward = tokio::spawn(async move {
            while let Ok(Some(m)) = inbound.message().await {
                let m = Message {
                    type_url: m.type_url,
                    value: m.value,
                };
                if incoming.send(m).await.is_err() {
                    break;
                }
            }
        });

        let mut closed = endpoint.closed_signal();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    // Messages before a close go out before the RPC ends.
                    biased;
                    m = endpoint.outgoing.recv() => match m {
                        Some(m) => {
                            if tx.send(Ok(to_any(m))).await.is_err() {
                                break;
                            }
                        }
                        None => break,
                    },
                    () = closed.wait() => {
                        while let Ok(m) = endpoint.outgoing.try_recv() {
                            if tx.send(Ok(to_any(m))).await.is_err() {
                                break;
                            }
                        }
                        break;
                    }
                    () = tx.closed() => break,
                }
            }
            // The registration ends with the RPC (dropping the endpoint), and so does reading
            // what the client sends.
            drop(endpoint);
            forward.abort();
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
