//! Helpers for the gRPC edge: how a service plugin hands its routes to the server, and how the
//! `containerd-namespace` header is read.

use std::sync::Mutex;

use tonic::service::RoutesBuilder;
use tonic::{Request, Status};

/// The metadata key containerd clients put the namespace in.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The metadata key that binds a request to a lease.
pub const LEASE_HEADER: &str = "containerd-lease";

type AddRoutes = Box<dyn FnOnce(&mut RoutesBuilder, &MessageLimits) + Send>;

/// Largest messages a service accepts and sends (`[grpc] max_recv_message_size` and
/// `max_send_message_size`); each service applies them to its generated server.
#[derive(Debug, Clone, Copy)]
pub struct MessageLimits {
    pub max_recv: usize,
    pub max_send: usize,
}

/// The instance a plugin of type `io.containerd.grpc.v1` returns: a deferred "add my service to
/// the server". The server takes it once, when it assembles the router.
pub struct GrpcService {
    add: Mutex<Option<AddRoutes>>,
}

impl GrpcService {
    pub fn new<F>(add: F) -> Self
    where
        F: FnOnce(&mut RoutesBuilder, &MessageLimits) + Send + 'static,
    {
        GrpcService {
            add: Mutex::new(Some(Box::new(add))),
        }
    }

    /// Adds the service to `routes`; later calls do nothing.
    pub fn register(&self, routes: &mut RoutesBuilder, limits: &MessageLimits) {
        let add = match self.add.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(add) = add {
            add(routes, limits);
        }
    }
}

/// The namespace of a request, if the client sent one.
pub fn namespace<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(NAMESPACE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// The namespace of a request that cannot be served without one. containerd answers a missing
/// namespace with FailedPrecondition and exactly this message, so clients matching on either keep
/// working.
pub fn namespace_required<T>(req: &Request<T>) -> Result<String, Status> {
    namespace(req)
        .ok_or_else(|| Status::failed_precondition("namespace is required: failed precondition"))
}

/// The lease a request is bound to, if any.
pub fn lease<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// Runs blocking store work (redb transactions, filesystem calls) off the async workers and maps
/// its typed error to the status containerd would send.
pub async fn run_blocking<T, E, F>(f: F) -> Result<T, Status>
where
    F: FnOnce() -> Result<T, E> + Send + 'static,
    T: Send + 'static,
    E: crate::Classify + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(crate::errdefs::to_status(&e)),
        Err(join) => {
            tracing::error!(error = %join, "blocking task failed");
            Err(Status::internal(format!("internal error: {join}")))
        }
    }
}

/// A protobuf timestamp from nanoseconds since the Unix epoch.
pub fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// The `labels.<key>` values of a label map, for filter adaptors.
pub fn label_field<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    path: &[String],
) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    let key = path.join(".");
    labels
        .into_iter()
        .filter(|(k, _)| **k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The instance of a gRPC plugin serving `$server` (a generated `…Server`), with the daemon's
/// message size limits applied.
#[macro_export]
macro_rules! grpc_service {
    ($server:expr) => {{
        let server = $server;
        ::std::sync::Arc::new($crate::grpc::GrpcService::new(move |routes, limits| {
            routes.add_service(
                server
                    .max_decoding_message_size(limits.max_recv)
                    .max_encoding_message_size(limits.max_send),
            );
        })) as $crate::Instance
    }};
}
