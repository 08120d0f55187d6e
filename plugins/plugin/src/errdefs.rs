//! Error kinds shared by every store, and their mapping to gRPC status codes.
//!
//! Libraries keep their own typed error enums; each says which [`ErrorKind`] it is through
//! [`Classify`]. Only the service edge turns that into a `tonic::Status`, with the same code
//! containerd would send, so clients (including containerd's `ctr`) react the same way.

use std::fmt;

/// The classes of failure a client can act on, as containerd's `errdefs` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    Unavailable,
    NotImplemented,
    Aborted,
    OutOfRange,
    Internal,
}

impl ErrorKind {
    /// The words containerd appends to a message of this kind (`namespace "a": already exists`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::AlreadyExists => "already exists",
            ErrorKind::FailedPrecondition => "failed precondition",
            ErrorKind::InvalidArgument => "invalid argument",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::NotImplemented => "not implemented",
            ErrorKind::Aborted => "aborted",
            ErrorKind::OutOfRange => "out of range",
            ErrorKind::Internal => "internal",
        }
    }

    pub fn code(self) -> tonic::Code {
        match self {
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
            ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::NotImplemented => tonic::Code::Unimplemented,
            ErrorKind::Aborted => tonic::Code::Aborted,
            ErrorKind::OutOfRange => tonic::Code::OutOfRange,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every library error so the service edge can pick the status code.
pub trait Classify: std::error::Error {
    fn kind(&self) -> ErrorKind;
}

/// Converts a classified error into the status a containerd client expects. Internal errors are
/// logged here, because the client only sees the message.
pub fn to_status<E: Classify + ?Sized>(err: &E) -> tonic::Status {
    let kind = err.kind();
    if kind == ErrorKind::Internal {
        tracing::error!(error = %err, "internal error");
    }
    tonic::Status::new(kind.code(), err.to_string())
}
