//! One error type for the registry client, with texts that tell an operator what to check.

use std::path::PathBuf;

use berth_content_store::ContentError;
use berth_oci::DocumentError;
use berth_plugin::{Classify, ErrorKind};

use crate::reference::ReferenceError;

/// Which credentials a request that the registry refused was made with, so a 401 says what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialsTried {
    /// No source had credentials for the host (anonymous access was refused); `looked_in`
    /// names the sources that were asked.
    None { looked_in: Vec<String> },
    /// The `auths` entry for `host` in a Docker `config.json`.
    DockerConfig { path: PathBuf, host: String },
    /// Credentials the caller gave (for the Transfer API: the client, asked over its stream).
    Callback,
    /// Credentials set in the client's configuration.
    Static,
}

impl std::fmt::Display for CredentialsTried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialsTried::None { looked_in } if looked_in.is_empty() => {
                f.write_str("no credentials (anonymous)")
            }
            CredentialsTried::None { looked_in } => write!(
                f,
                "no credentials (anonymous; none for this host in {})",
                looked_in.join(", ")
            ),
            CredentialsTried::DockerConfig { path, host } => {
                write!(f, "credentials for {host} from {}", path.display())
            }
            CredentialsTried::Callback => f.write_str("credentials from the client's callback"),
            CredentialsTried::Static => f.write_str("the configured credentials"),
        }
    }
}

/// Registry client errors.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error(transparent)]
    Reference(#[from] ReferenceError),

    #[error("hosts configuration {path}: {reason}")]
    HostsConfig { path: PathBuf, reason: String },

    #[error("hosts configuration {path}: {source}")]
    HostsConfigIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("credentials file {path}: {reason}")]
    CredentialsFile { path: PathBuf, reason: String },

    #[error("TLS setup for registry host {host}: {source}")]
    Tls {
        host: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("no registry host for {registry} allows {capability} (check the hosts configuration)")]
    NoHost {
        registry: String,
        capability: &'static str,
    },

    /// The registry answered 401 with the credentials named.
    #[error(
        "registry {url} refused {tried}: unauthorized (log in, or give credentials for this registry)"
    )]
    Unauthorized {
        url: String,
        tried: CredentialsTried,
    },

    #[error("registry {url} denied access with {tried}: {message}")]
    Denied {
        url: String,
        tried: CredentialsTried,
        message: String,
    },

    #[error(
        "{what} not found at {url}: check the image reference (registry, name, tag or digest)"
    )]
    NotFound { what: String, url: String },

    #[error("cannot reach registry {url}: {}", chain(source))]
    Connect {
        url: String,
        #[source]
        source: reqwest::Error,
    },

    #[error("registry {url} timed out {what}: check that it is up and reachable")]
    Timeout { url: String, what: String },

    #[error("registry {url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },

    #[error("registry {url}: {reason}")]
    InvalidResponse { url: String, reason: String },

    #[error("token service {realm}: {reason}")]
    Token { realm: String, reason: String },

    #[error("content from {url} has digest {actual}, expected {expected}")]
    DigestMismatch {
        url: String,
        expected: String,
        actual: String,
    },

    #[error("content from {url} has {actual} bytes, expected {expected}")]
    SizeMismatch {
        url: String,
        expected: u64,
        actual: u64,
    },

    #[error("{reason}: document too large ({size} bytes, limit {limit})")]
    TooLarge {
        reason: String,
        size: u64,
        limit: u64,
    },

    #[error("no manifest in index {index} matches platform {platforms}")]
    NoMatchingPlatform { index: String, platforms: String },

    #[error(transparent)]
    Document(#[from] DocumentError),

    #[error(transparent)]
    Content(#[from] ContentError),

    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },

    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// An error with all its causes, for messages that must carry the cause on their own (reqwest's
/// top-level text is only "error sending request for url …").
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

impl Classify for RemoteError {
    fn kind(&self) -> ErrorKind {
        match self {
            RemoteError::Reference(_) => ErrorKind::InvalidArgument,
            RemoteError::HostsConfig { .. }
            | RemoteError::HostsConfigIo { .. }
            | RemoteError::CredentialsFile { .. }
            | RemoteError::Tls { .. }
            | RemoteError::NoHost { .. } => ErrorKind::FailedPrecondition,
            RemoteError::Unauthorized { .. } | RemoteError::Denied { .. } => {
                ErrorKind::FailedPrecondition
            }
            RemoteError::NotFound { .. } => ErrorKind::NotFound,
            RemoteError::Connect { .. } | RemoteError::Timeout { .. } => ErrorKind::Unavailable,
            RemoteError::Status { status, .. } => match status {
                429 | 502..=504 => ErrorKind::Unavailable,
                _ => ErrorKind::Unknown,
            },
            RemoteError::InvalidResponse { .. } | RemoteError::Token { .. } => ErrorKind::Unknown,
            RemoteError::DigestMismatch { .. } | RemoteError::SizeMismatch { .. } => {
                ErrorKind::FailedPrecondition
            }
            RemoteError::TooLarge { .. } => ErrorKind::OutOfRange,
            RemoteError::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            RemoteError::Document(_) => ErrorKind::InvalidArgument,
            RemoteError::Content(c) => c.kind(),
            RemoteError::Read { .. } | RemoteError::Task(_) => ErrorKind::Internal,
        }
    }
}
