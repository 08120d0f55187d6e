//! The gRPC server on its unix socket: claiming the socket safely, assembling the router from the
//! ready gRPC plugins, serving until a signal.

use std::fs::File;
use std::io;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use berth_grpc::{GrpcService, MessageLimits};
use berth_plugin::registry::Initialised;
use berth_plugin::types;
use std::pin::Pin;
use std::task::{Context, Poll};

use berth_h2_authority::AuthorityFix;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_stream::StreamExt as _;
use tonic::transport::server::Connected;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("another daemon is already serving {0}; stop it or choose another --address")]
    AlreadyServing(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ServeError + '_ {
    move |source| ServeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A claimed socket: the lock that keeps a second berthd away and the bound listener.
pub struct Socket {
    path: PathBuf,
    listener: UnixListener,
    _lock: nix::fcntl::Flock<File>,
}

impl Socket {
    /// Claims `path`: takes `<path>.lock` (so two daemons starting at once cannot both win), refuses
    /// a socket something still answers on, removes a stale one, binds and sets 0660 `uid:gid`.
    pub fn claim(path: &Path, uid: u32, gid: u32) -> Result<Socket, ServeError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        }
        let lock_path = PathBuf::from(format!("{}.lock", path.display()));
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = match nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            Ok(l) => l,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                return Err(ServeError::AlreadyServing(path.to_owned()))
            }
            Err((_, e)) => return Err(io_err(&lock_path)(io::Error::from(e))),
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    // Something else (a containerd, an older berthd without the lock) answers.
                    return Err(ServeError::AlreadyServing(path.to_owned()));
                }
                tracing::info!(socket = %path.display(), "removing stale socket");
                std::fs::remove_file(path).map_err(io_err(path))?;
            }
            Ok(_) => return Err(ServeError::NotASocket(path.to_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(path)(e)),
        }
        let listener = UnixListener::bind(path).map_err(io_err(path))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
            .map_err(io_err(path))?;
        nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        )
        .map_err(|e| io_err(path)(io::Error::from(e)))?;
        // The guard is kept, and so the lock held, for as long as the daemon serves; the kernel
        // drops it when the process exits, however it exits.
        Ok(Socket {
            path: path.to_owned(),
            listener,
            _lock: lock,
        })
    }
}

impl Socket {
    /// Gives the socket up without serving (start-up failed after it was claimed): the file
    /// goes, so no client finds a socket nobody will ever answer.
    pub fn abandon(self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(socket = %self.path.display(), error = %e, "cannot remove socket");
        }
    }
}

/// Serves every ready gRPC plugin on `socket` until `shutdown` resolves, then removes the socket.
pub async fn serve(
    socket: Socket,
    plugins: &Initialised,
    limits: MessageLimits,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let mut routes = tonic::service::RoutesBuilder::default();
    let mut services = Vec::new();
    for (id, instance) in plugins.get_all(types::GRPC) {
        match instance.downcast::<GrpcService>() {
            Ok(svc) => {
                svc.register(&mut routes, &limits);
                services.push(svc);
            }
            Err(_) => tracing::warn!(plugin = %id, "gRPC plugin does not provide a service"),
        }
    }
    let names: Vec<&'static str> = services.iter().map(|s| s.name()).collect();
    for svc in &services {
        svc.serving(&names);
    }
    let shutdown = async move {
        shutdown.await;
        // Before draining: the health service turns NOT_SERVING and ends its watch streams.
        for svc in &services {
            svc.shutdown();
        }
    };
    serve_routes(socket, routes, shutdown).await
}

/// Quiet time after the last request before berthd trims its memory: long enough that a client's
/// sequence of calls runs on warm pages, short enough that an idle daemon is small.
const IDLE_TRIM: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves `routes` on `socket` until `shutdown` resolves, then removes the socket.
pub async fn serve_routes(
    socket: Socket,
    routes: tonic::service::RoutesBuilder,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let Socket {
        path,
        listener,
        _lock,
    } = socket;
    tracing::info!(address = %path.display(), "serving");
    // Every accepted connection goes through the :authority adapter, so clients that name the
    // socket path as the authority (grpcio, grpc-java, Go programs dialing the path) are served.
    let incoming = UnixListenerStream::new(listener).map(|conn| conn.map(Connection::new));
    // An idle berthd gives back what its last burst of requests touched (see berth-idle-trim).
    let trimmer = berth_idle_trim::Trimmer::start(IDLE_TRIM);
    let result = tonic::transport::Server::builder()
        .trace_fn(move |req| {
            trimmer.touch();
            tracing::info_span!("rpc", method = %req.uri().path())
        })
        .add_routes(routes.routes())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = std::fs::remove_file(&path) {
        tracing::warn!(socket = %path.display(), error = %e, "cannot remove socket");
    }
    Ok(result?)
}

/// An accepted client connection as the HTTP/2 server reads it: through [`AuthorityFix`].
struct Connection(AuthorityFix<UnixStream>);

impl Connection {
    fn new(stream: UnixStream) -> Connection {
        Connection(AuthorityFix::new(stream))
    }
}

impl Connected for Connection {
    type ConnectInfo = <UnixStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.0.get_ref().connect_info()
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}
