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
    /// The shim binary ran and failed; its output says why (containerd's wording).
    #[error("{action} failed: {output}{status}")]
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
            // containerd reports both as plain errors (gRPC Unknown); clients see the same.
            Error::RuntimeNotFound(_) | Error::InvalidRuntimeName(_) => ErrorKind::Unknown,
            // The shim binary's own failure: passed on as containerd passes it.
            Error::Binary { .. } => ErrorKind::Unknown,
            Error::Timeout { .. } | Error::Decode { .. } | Error::Io { .. } => ErrorKind::Internal,
        }
    }
}

/// A shim's error message as containerd passes it on: with its class appended (`…: not found`,
/// `…: unknown`) unless it already ends so, as containerd's errdefs do when a status comes back
/// from a shim. Classes containerd does not name (internal, aborted, …) pass unchanged.
pub(crate) fn rebase_message(kind: ErrorKind, message: &str) -> String {
    match kind {
        ErrorKind::NotFound
        | ErrorKind::AlreadyExists
        | ErrorKind::FailedPrecondition
        | ErrorKind::InvalidArgument
        | ErrorKind::Unavailable
        | ErrorKind::NotImplemented
        | ErrorKind::Unknown => {
            let class = kind.as_str();
            if message == class || message.ends_with(&format!(": {class}")) {
                message.to_owned()
            } else if message.is_empty() {
                class.to_owned()
            } else {
                format!("{message}: {class}")
            }
        }
        _ => message.to_owned(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_get_their_class_once() {
        assert_eq!(
            rebase_message(ErrorKind::Unknown, "runc create failed"),
            "runc create failed: unknown"
        );
        assert_eq!(
            rebase_message(ErrorKind::NotFound, "process already finished: not found"),
            "process already finished: not found"
        );
        assert_eq!(
            rebase_message(ErrorKind::AlreadyExists, ""),
            "already exists"
        );
        assert_eq!(rebase_message(ErrorKind::Internal, "boom"), "boom");
    }
}
