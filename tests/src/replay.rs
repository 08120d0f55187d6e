//! A recording proxy and a replaying server for unary gRPC calls, to measure what a client costs
//! by itself. [`record`] puts a proxy between a client and a daemon and keeps every answer the
//! daemon gives; [`Replayer`] then serves those answers at once, without doing any of the work.
//! `run-bench` times `ctr run --rm` against the replayer: what a run takes when the daemon takes
//! no time at all beyond reading and writing HTTP/2 — the floor any daemon's figure stands on.
//!
//! An answer is found by the call's method and its request bytes, the n-th such call of a client
//! getting the n-th recorded answer (`Tasks.Get` finds the task before `Tasks.Delete`, NotFound
//! after it); a call whose request differs from every recorded one (a new container id, a random
//! lease id, fresh FIFO paths) gets the method's answers in their order. Clients are told apart
//! by their pid. Only unary calls are handled, which is all `ctr run` makes.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_api::containerd::services::snapshots::v1::{MountsResponse, PrepareSnapshotResponse};
use berth_api::containerd::types::Mount;
use prost::bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::server::UdsConnectInfo;
use tonic::{Code, Request, Response, Status};

/// What the daemon answered to one call: its message bytes, or its status.
pub type Answer = Result<Bytes, (Code, String)>;

/// The calls of one recorded client session, in the order they were answered.
#[derive(Clone, Default)]
pub struct Recording {
    pub calls: Vec<Call>,
}

#[derive(Clone)]
pub struct Call {
    /// `/containerd.services.tasks.v1.Tasks/Create` and the like.
    pub method: String,
    pub request: Bytes,
    pub answer: Answer,
}

/// Passes message bytes through untouched: the proxy and the replayer never decode a call.
#[derive(Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

/// Answers one decoded call: the calling process, the method, its metadata and its message.
type Handler = Arc<
    dyn Fn(Option<i32>, String, tonic::metadata::MetadataMap, Bytes) -> BoxFuture<Bytes, Status>
        + Send
        + Sync,
>;

/// One call as the generic server hands it to a [`Handler`].
struct Unary {
    peer: Option<i32>,
    method: String,
    handler: Handler,
}

impl tonic::server::UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (metadata, _, message) = request.into_parts();
        let answer = (self.handler)(self.peer, self.method.clone(), metadata, message);
        Box::pin(async move { answer.await.map(Response::new) })
    }
}

/// A gRPC server on a unix socket that hands every unary call, whatever its service, to
/// `handler`; it runs on its own thread until dropped.
struct Server {
    socket: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(socket: &Path, handler: Handler) -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("replay runtime");
        let _ = std::fs::remove_file(socket);
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(socket).expect("bind replay socket")
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let service = tower::service_fn(move |req: http::Request<axum::body::Body>| {
                    let handler = handler.clone();
                    async move {
                        let peer = req
                            .extensions()
                            .get::<UdsConnectInfo>()
                            .and_then(|info| info.peer_cred)
                            .and_then(|cred| cred.pid());
                        let unary = Unary {
                            peer,
                            method: req.uri().path().to_string(),
                            handler,
                        };
                        let mut grpc = tonic::server::Grpc::new(RawCodec);
                        Ok::<_, std::convert::Infallible>(grpc.unary(unary, req).await)
                    }
                });
                let routes =
                    tonic::service::Routes::from(axum::Router::new().fallback_service(service));
                let _ = tonic::transport::Server::builder()
                    .add_routes(routes)
                    .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                        let _ = stopped.await;
                    })
                    .await;
            })
        });
        Server {
            socket: socket.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Runs `client` (which must talk to the socket it is given) through a proxy in front of the
/// daemon at `daemon`, and returns every call it made with the daemon's answers.
pub fn record(daemon: &Path, proxy: &Path, client: impl FnOnce(&Path)) -> Recording {
    let calls: Arc<Mutex<Vec<Call>>> = Arc::default();
    let upstream = daemon.display().to_string();
    let kept = calls.clone();
    let handler: Handler = Arc::new(move |_peer, method, metadata, message| {
        let upstream = upstream.clone();
        let kept = kept.clone();
        Box::pin(async move {
            let answer = forward(&upstream, &method, metadata, message.clone()).await;
            kept.lock().expect("recording").push(Call {
                method,
                request: message,
                answer: answer
                    .clone()
                    .map_err(|s| (s.code(), s.message().to_string())),
            });
            answer
        })
    });
    let server = Server::start(proxy, handler);
    client(proxy);
    drop(server);
    let calls = std::mem::take(&mut *calls.lock().expect("recording"));
    Recording { calls }
}

/// One call, forwarded on a connection of its own: a recording is made once, outside any
/// measurement, so its speed does not matter.
async fn forward(
    upstream: &str,
    method: &str,
    metadata: tonic::metadata::MetadataMap,
    message: Bytes,
) -> Result<Bytes, Status> {
    let channel = bctr::client::connect(upstream)
        .await
        .map_err(|e| Status::unavailable(format!("connect to {upstream}: {e}")))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let path = PathAndQuery::try_from(method.to_string())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    let mut request = Request::new(message);
    *request.metadata_mut() = metadata;
    grpc.unary(request, path, RawCodec)
        .await
        .map(Response::into_inner)
}

/// Serves a [`Recording`]'s answers on a unix socket, at once, until dropped.
pub struct Replayer {
    script: Arc<Script>,
    _server: Server,
}

/// A client's place in the answers to one key: its pid, the method and, unless it fell back
/// to the method's answers, the request.
type Progress = (Option<i32>, String, Option<Bytes>);

/// The recorded answers, and how far each client has got through them.
struct Script {
    /// Per method and request: the answers in the order they were given (the same `Tasks.Get`
    /// finds the task before `Tasks.Delete` and NotFound after it).
    exact: HashMap<(String, Bytes), Vec<Answer>>,
    /// Per method: every answer in order, for a request that was never recorded.
    by_method: HashMap<String, Vec<Answer>>,
    /// Per client process (its pid, from the socket's credentials): how many calls of each key
    /// it has made.
    progress: Mutex<HashMap<Progress, usize>>,
    /// Every call answered, with the pid of the process that made it.
    served: Mutex<Vec<(Option<i32>, Call)>>,
    /// Where each client's snapshot gets its writable directories.
    scratch: PathBuf,
}

impl Script {
    fn answer(&self, peer: Option<i32>, method: String, request: Bytes) -> Option<Answer> {
        let (answers, key) = match self.exact.get(&(method.clone(), request.clone())) {
            Some(answers) => (answers, (peer, method, Some(request))),
            None => (self.by_method.get(&method)?, (peer, method, None)),
        };
        let mut progress = self.progress.lock().expect("replay progress");
        let n = progress.entry(key).or_default();
        let answer = answers.get(*n).or_else(|| answers.last()).cloned();
        *n += 1;
        answer
    }

    fn serve(&self, peer: Option<i32>, method: String, request: Bytes) -> Result<Bytes, Status> {
        let answer = self
            .answer(peer, method.clone(), request.clone())
            .unwrap_or_else(|| Err((Code::Unimplemented, format!("{method} was not recorded"))))
            .map(|bytes| {
                let client = peer.map_or_else(|| "unknown".to_string(), |p| p.to_string());
                rehome_snapshot_mounts(&method, bytes, &self.scratch.join(client))
            });
        self.served.lock().expect("replay log").push((
            peer,
            Call {
                method,
                request,
                answer: answer.clone(),
            },
        ));
        answer.map_err(|(code, message)| Status::new(code, message))
    }
}

impl Replayer {
    /// Clients are told apart by their process id: a client whose pid is reused within one
    /// replayer's life would continue where the earlier one stopped. Each client's snapshot
    /// mounts get writable directories under `scratch`.
    pub fn start(socket: &Path, recording: &Recording, scratch: &Path) -> Replayer {
        let mut exact: HashMap<(String, Bytes), Vec<Answer>> = HashMap::new();
        let mut by_method: HashMap<String, Vec<Answer>> = HashMap::new();
        for call in &recording.calls {
            exact
                .entry((call.method.clone(), call.request.clone()))
                .or_default()
                .push(call.answer.clone());
            by_method
                .entry(call.method.clone())
                .or_default()
                .push(call.answer.clone());
        }
        let script = Arc::new(Script {
            exact,
            by_method,
            progress: Mutex::default(),
            served: Mutex::default(),
            scratch: scratch.to_path_buf(),
        });
        let serving = script.clone();
        let handler: Handler = Arc::new(move |peer, method, _metadata, message| {
            Box::pin(std::future::ready(serving.serve(peer, method, message)))
        });
        Replayer {
            script,
            _server: Server::start(socket, handler),
        }
    }

    /// Every call answered so far, each with the pid of the process that made it.
    pub fn served(&self) -> Vec<(Option<i32>, Call)> {
        self.script.served.lock().expect("replay log").clone()
    }
}

/// Points the writable layer of a recorded snapshot mount (`upperdir=`, `workdir=`, which the
/// recorded run's daemon removed at its end) at directories under `dir`, so that a client
/// replaying the run can still mount its snapshot, as `ctr run` does to read the image's
/// `/etc/group`; the read-only layers (`lowerdir=`) stay the daemon's. Each client needs its own:
/// overlayfs remakes its work directory at every mount. Other answers are returned as they are.
fn rehome_snapshot_mounts(method: &str, answer: Bytes, dir: &Path) -> Bytes {
    let rehome = |mounts: &mut Vec<Mount>| {
        let upper = dir.join("upper");
        let work = dir.join("work");
        std::fs::create_dir_all(&upper).expect("create replay upperdir");
        std::fs::create_dir_all(&work).expect("create replay workdir");
        for mount in mounts {
            for option in &mut mount.options {
                if option.starts_with("upperdir=") {
                    *option = format!("upperdir={}", upper.display());
                } else if option.starts_with("workdir=") {
                    *option = format!("workdir={}", work.display());
                }
            }
        }
    };
    let rewritten = if method.ends_with("Snapshots/Prepare") {
        PrepareSnapshotResponse::decode(answer.clone())
            .ok()
            .map(|mut r| {
                rehome(&mut r.mounts);
                r.encode_to_vec()
            })
    } else if method.ends_with("Snapshots/Mounts") {
        MountsResponse::decode(answer.clone()).ok().map(|mut r| {
            rehome(&mut r.mounts);
            r.encode_to_vec()
        })
    } else {
        None
    };
    rewritten.map_or(answer, Bytes::from)
}

/// `ctr run --rm image id /bin/true` on `socket`, which must succeed with nothing on stderr
/// (`ctr` logs there when a step of its clean-up fails: a replayed run that took another path
/// than the recorded one); how long it took.
pub fn ctr_run_true(ctr: &Path, socket: &Path, image: &str, id: &str) -> Duration {
    let t = Instant::now();
    let out = crate::run_client(ctr, socket, &["run", "--rm", image, id, "/bin/true"]);
    let took = t.elapsed();
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ctr run {id} on {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}
