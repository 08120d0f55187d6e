use berth_plugin::errdefs::{Classify, ErrorKind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("task {0}: already exists")]
    AlreadyExists(String),
    #[error("task {0} not found")]
    NotFound(String),
    #[error("invalid task id {0:?}")]
    InvalidId(String),
    #[error("failed to start shim: {0}")]
    StartShim(#[source] berth_shim::Error),
    /// containerd reads the spec before it starts a shim, and reports a bad one as a plain
    /// error (gRPC Unknown); so does berthd, without starting anything.
    #[error("failed to start shim: invalid OCI runtime spec: {0}")]
    InvalidSpec(#[source] serde_json::Error),
    #[error("failed to start shim: failed to resolve runtime path: {0}")]
    ResolveRuntime(#[source] berth_shim::Error),
    #[error("failed to create shim task: {0}")]
    CreateTask(#[source] berth_shim::Error),
    /// A call on a running shim failed; the shim's own message is what the client sees.
    #[error(transparent)]
    Shim(#[from] berth_shim::Error),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("unmount rootfs {0}: {1}")]
    Unmount(String, #[source] berth_mount::MountError),
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::InvalidId(_) => ErrorKind::InvalidArgument,
            Error::InvalidSpec(_) => ErrorKind::Unknown,
            Error::StartShim(e)
            | Error::ResolveRuntime(e)
            | Error::CreateTask(e)
            | Error::Shim(e) => e.kind(),
            Error::Io { .. } | Error::Unmount(..) => ErrorKind::Internal,
        }
    }
}

pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}
