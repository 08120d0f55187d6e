//! What can go wrong talking to a shim, classified the way containerd's errdefs would be.

use berth_plugin::errdefs::{Classify, ErrorKind};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shim answered with an error status: its message goes to the client as it is.
    #[error("{message}")]
    Status { kind: ErrorKind, message: String },
    /// The connection to the shim is gone (the shim exited or was killed).
    #[error("ttrpc: closed")]
    Closed,
    #[error("shim {method}: {source}")]
    Transport {
        method: &'static str,
        #[source]
        source: ttrpc::Error,
    },
    #[error("shim {method}: timed out after {after_ms} ms")]
    Timeout {
        method: &'static str,
        after_ms: u128,
    },
    #[error("decode shim {what}: {source}")]
    Decode {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("connect to shim at {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: ttrpc::Error,
    },
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The shim binary ran and failed; its output says why.
    #[error("{binary} {action}: {output}{status}")]
    Binary {
        binary: String,
        action: &'static str,
        output: String,
        status: String,
    },
    /// No shim serves this runtime name.
    #[error("{0}")]
    RuntimeNotFound(String),
    #[error("invalid runtime name {0}, correct runtime name should be either format like `io.containerd.runc.v1` or a full path to the binary")]
    InvalidRuntimeName(String),
}

impl Error {
    pub fn is_closed(&self) -> bool {
        matches!(self, Error::Closed)
    }

    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            Error::Status {
                kind: ErrorKind::NotFound,
                ..
            }
        )
    }
}

impl Classify for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Error::Status { kind, .. } => *kind,
            Error::Closed | Error::Transport { .. } | Error::Connect { .. } => {
                ErrorKind::Unavailable
            }
            Error::RuntimeNotFound(_) => ErrorKind::NotFound,
            Error::InvalidRuntimeName(_) => ErrorKind::InvalidArgument,
            Error::Timeout { .. }
            | Error::Decode { .. }
            | Error::Io { .. }
            | Error::Binary { .. } => ErrorKind::Internal,
        }
    }
}

/// The kind of a ttrpc status code (the same numbering as gRPC's).
pub(crate) fn kind_of_code(code: i32) -> ErrorKind {
    match code {
        3 => ErrorKind::InvalidArgument,
        5 => ErrorKind::NotFound,
        6 => ErrorKind::AlreadyExists,
        9 => ErrorKind::FailedPrecondition,
        10 => ErrorKind::Aborted,
        11 => ErrorKind::OutOfRange,
        12 => ErrorKind::NotImplemented,
        13 => ErrorKind::Internal,
        14 => ErrorKind::Unavailable,
        _ => ErrorKind::Unknown,
    }
}
