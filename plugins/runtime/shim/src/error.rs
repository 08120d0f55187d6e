//! The shim's errors, and the ttrpc status each becomes (containerd's codes, so berthd and
//! containerd map them to the same errdefs).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        source: std::io::Error,
    },
    #[error("container {0}: not found")]
    NotFound(String),
    #[error("process {0}: not found")]
    ProcessNotFound(String),
    #[error("container {0}: already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Unsupported(String),
    /// What containerd's shim reports with no particular code (gRPC Unknown).
    #[error("{0}")]
    Other(String),
    #[error("process already finished")]
    Finished,
    #[error("{0}")]
    Container(#[from] berth_container::Error),
    #[error("cgroup: {0}")]
    Cgroup(#[from] berth_cgroups::Error),
    #[error("seccomp: {0}")]
    Seccomp(#[from] berth_seccomp::CompileError),
    #[error("mount rootfs: {0}")]
    Mount(#[from] berth_mount::MountError),
    #[error("read the OCI spec: {0}")]
    Spec(#[from] oci_spec::OciSpecError),
    /// A hook failed; `reason` names it (`hook /path: …`).
    #[error("{0}")]
    Hook(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The ttrpc (gRPC) code containerd's shim answers with for this error.
    pub fn code(&self) -> ttrpc::Code {
        match self {
            Error::NotFound(_) | Error::ProcessNotFound(_) | Error::Finished => {
                ttrpc::Code::NOT_FOUND
            }
            Error::AlreadyExists(_) => ttrpc::Code::ALREADY_EXISTS,
            Error::FailedPrecondition(_) => ttrpc::Code::FAILED_PRECONDITION,
            Error::InvalidArgument(_) | Error::Spec(_) => ttrpc::Code::INVALID_ARGUMENT,
            Error::Unsupported(_) => ttrpc::Code::UNIMPLEMENTED,
            _ => ttrpc::Code::UNKNOWN,
        }
    }
}
