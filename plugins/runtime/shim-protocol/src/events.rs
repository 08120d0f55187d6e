//! The ttrpc events service shims forward their events to (`containerd.services.events.ttrpc.v1
//! .Events/Forward`), served by berthd at `<grpc address>.ttrpc` — the `TTRPC_ADDRESS` every shim
//! is started with.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use prost::Message;
use ttrpc::proto::ResponseInit;
use ttrpc::r#async::{MethodHandler, Server, Service, TtrpcContext};

use crate::error::{Error, Result};
use crate::proto::containerd::services::events::ttrpc::v1::ForwardRequest;

/// An event as a shim forwarded it: where, when and what, the payload still encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardedEvent {
    /// Nanoseconds since the Unix epoch, as the shim stamped it.
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
}

type Sink = Arc<dyn Fn(ForwardedEvent) + Send + Sync>;

struct Forward {
    sink: Sink,
}

#[async_trait]
impl MethodHandler for Forward {
    async fn handler(
        &self,
        _ctx: TtrpcContext,
        req: ttrpc::Request,
    ) -> ttrpc::Result<ttrpc::Response> {
        let forward = match ForwardRequest::decode(req.payload.as_slice()) {
            Ok(f) => f,
            Err(e) => {
                return Ok(ttrpc::Response::init_status(ttrpc::get_status(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("decode forwarded event: {e}"),
                )))
            }
        };
        let Some(envelope) = forward.envelope else {
            return Ok(ttrpc::Response::init_status(ttrpc::get_status(
                ttrpc::Code::INVALID_ARGUMENT,
                "forwarded event without an envelope",
            )));
        };
        let timestamp = envelope.timestamp.map_or(0, |t| {
            t.seconds.saturating_mul(1_000_000_000) + i64::from(t.nanos)
        });
        let (type_url, value) = envelope
            .event
            .map(|a| (a.type_url, a.value))
            .unwrap_or_default();
        (self.sink)(ForwardedEvent {
            timestamp,
            namespace: envelope.namespace,
            topic: envelope.topic,
            type_url,
            value,
        });
        Ok(ttrpc::Response::init_status(ttrpc::get_status(
            ttrpc::Code::OK,
            "",
        )))
    }
}

/// The running events service; [`EventsServer::shutdown`] stops it and removes its socket.
pub struct EventsServer {
    server: Server,
    path: PathBuf,
}

impl EventsServer {
    /// Listens on the unix socket `path` (a stale socket there is replaced) and hands every
    /// forwarded event to `sink`.
    pub async fn start(
        path: &Path,
        sink: impl Fn(ForwardedEvent) + Send + Sync + 'static,
    ) -> Result<Self> {
        let io = |action, source| Error::Io {
            action,
            path: path.display().to_string(),
            source,
        };
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove stale socket", e))
            }
            _ => {}
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create directory for", e))?;
        }
        let mut methods: HashMap<String, Box<dyn MethodHandler + Send + Sync>> = HashMap::new();
        methods.insert(
            "Forward".to_owned(),
            Box::new(Forward {
                sink: Arc::new(sink),
            }),
        );
        let service = Service {
            methods,
            streams: HashMap::new(),
        };
        let address = format!("unix://{}", path.display());
        let mut server = Server::new()
            .bind(&address)
            .map_err(|source| Error::Connect {
                address: address.clone(),
                source,
            })?
            .register_service(HashMap::from([(
                "containerd.services.events.ttrpc.v1.Events".to_owned(),
                service,
            )]));
        server.start().await.map_err(|source| Error::Connect {
            address: address.clone(),
            source,
        })?;
        Ok(EventsServer {
            server,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub async fn shutdown(mut self) {
        if let Err(e) = self.server.shutdown().await {
            tracing::warn!(error = %e, "stop the shim events service");
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
