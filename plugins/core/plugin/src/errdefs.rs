//! Error kinds shared by every store.
//!
//! Libraries keep their own typed error enums; each says which [`ErrorKind`] it is through
//! [`Classify`]. Only the service edge (`berth-grpc`) turns that into a `tonic::Status`, with the
//! same code containerd would send, so clients (including containerd's `ctr`) react the same way.

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
    /// Out of something the client cannot fix by asking differently: the disk is full.
    ResourceExhausted,
    Internal,
    /// An error from elsewhere that says nothing of its class (a runtime's own failure, passed on
    /// as containerd passes it: gRPC `Unknown`).
    Unknown,
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
            ErrorKind::ResourceExhausted => "resource exhausted",
            ErrorKind::Internal => "internal",
            ErrorKind::Unknown => "unknown",
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
