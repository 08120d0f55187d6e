//! The gRPC edge every service crate shares: how a service plugin hands its routes to the server,
//! how the `containerd-namespace` and `containerd-lease` headers are read, and how a store's
//! classified error becomes the status code containerd would send.

use std::sync::Mutex;

use berth_plugin::{Classify, ErrorKind};
use tonic::service::RoutesBuilder;
use tonic::{Request, Status};

pub use berth_plugin::Instance;

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
/// the server", the gRPC name of that service (for the health service), and what to do when the
/// daemon starts shutting down. The server takes the routes once, when it assembles the router.
pub struct GrpcService {
    name: &'static str,
    add: Mutex<Option<AddRoutes>>,
    on_serving: Mutex<Option<OnServing>>,
    on_shutdown: Mutex<Option<OnShutdown>>,
}

type OnServing = Box<dyn FnOnce(&[&'static str]) + Send>;
type OnShutdown = Box<dyn FnOnce() + Send>;

impl GrpcService {
    /// A service called `name` (e.g. `containerd.services.version.v1.Version`) added by `add`.
    pub fn new<F>(name: &'static str, add: F) -> Self
    where
        F: FnOnce(&mut RoutesBuilder, &MessageLimits) + Send + 'static,
    {
        GrpcService {
            name,
            add: Mutex::new(Some(Box::new(add))),
            on_serving: Mutex::new(None),
            on_shutdown: Mutex::new(None),
        }
    }

    /// Runs `f` once when the server has added every service, with their names.
    pub fn on_serving(self, f: impl FnOnce(&[&'static str]) + Send + 'static) -> Self {
        *lock(&self.on_serving) = Some(Box::new(f));
        self
    }

    /// Runs `f` once when the server stops accepting requests (before it drains them).
    pub fn on_shutdown(self, f: impl FnOnce() + Send + 'static) -> Self {
        *lock(&self.on_shutdown) = Some(Box::new(f));
        self
    }

    /// The fully qualified gRPC service name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Adds the service to `routes`; later calls do nothing.
    pub fn register(&self, routes: &mut RoutesBuilder, limits: &MessageLimits) {
        if let Some(add) = lock(&self.add).take() {
            add(routes, limits);
        }
    }

    /// Tells the service which services the server is about to serve; later calls do nothing.
    pub fn serving(&self, names: &[&'static str]) {
        if let Some(f) = lock(&self.on_serving).take() {
            f(names);
        }
    }

    /// Tells the service the server is shutting down; later calls do nothing.
    pub fn shutdown(&self) {
        if let Some(f) = lock(&self.on_shutdown).take() {
            f();
        }
    }
}

/// A one-shot slot is still usable after a panic elsewhere: take what is in it.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The gRPC name of a generated server type.
pub fn service_name<S: tonic::server::NamedService>(_: &S) -> &'static str {
    S::NAME
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
    E: Classify + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(to_status(&e)),
        Err(join) => {
            tracing::error!(error = %join, "blocking task failed");
            Err(Status::internal(format!("internal error: {join}")))
        }
    }
}

/// Runs a lookup of one record (a redb read transaction over a key or two) on the calling worker
/// and maps its error as [`run_blocking`] does. Handing such work to the blocking pool costs more
/// than the work itself: a wake-up of a pool thread and one of the worker back, ~25 µs each on a
/// busy 2-core host, against a few µs to read a record from redb's cache. Lists, writes (a commit
/// waits for the disk) and anything that may call out of process stay with [`run_blocking`].
pub fn run_lookup<T, E: Classify>(f: impl FnOnce() -> Result<T, E>) -> Result<T, Status> {
    f().map_err(|e| to_status(&e))
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
        let name = $crate::service_name(&server);
        ::std::sync::Arc::new($crate::GrpcService::new(name, move |routes, limits| {
            routes.add_service(
                server
                    .max_decoding_message_size(limits.max_recv)
                    .max_encoding_message_size(limits.max_send),
            );
        })) as $crate::Instance
    }};
}

/// The gRPC code containerd sends for an error of this kind.
pub fn code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::NotImplemented => tonic::Code::Unimplemented,
        ErrorKind::Aborted => tonic::Code::Aborted,
        ErrorKind::OutOfRange => tonic::Code::OutOfRange,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::Internal => tonic::Code::Internal,
        ErrorKind::Unknown => tonic::Code::Unknown,
    }
}

/// Converts a classified error into the status a containerd client expects. Internal errors are
/// logged here, because the client only sees the message.
pub fn to_status<E: Classify + ?Sized>(err: &E) -> tonic::Status {
    let kind = err.kind();
    if kind == ErrorKind::Internal {
        tracing::error!(error = %err, "internal error");
    }
    tonic::Status::new(code(kind), bounded(err.to_string()))
}

/// Longest error message sent: messages echo the client's input (ids, keys, refs), and a status
/// message travels in an HTTP/2 header, which clients cap (8–16 KiB); past the cap the client
/// sees RESOURCE_EXHAUSTED instead of the error.
pub const MAX_MESSAGE: usize = 4096;

/// `msg`, cut to [`MAX_MESSAGE`] bytes (on a character boundary) with a note of what was cut.
pub fn bounded(msg: String) -> String {
    if msg.len() <= MAX_MESSAGE {
        return msg;
    }
    let mut end = MAX_MESSAGE;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} more bytes)", &msg[..end], msg.len() - end)
}
