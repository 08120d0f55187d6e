//! What can go wrong while a container is made. Errors raised inside the forked processes travel
//! to the shim as text (see `sync`), so their `Display` is what a user finally reads: it names the
//! step and the path, as runc's messages do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Path {
        action: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("{action}: {source}")]
    Sys {
        action: &'static str,
        source: nix::Error,
    },
    #[error("{action}: {source}")]
    Io {
        action: &'static str,
        source: std::io::Error,
    },
    #[error("invalid spec: {0}")]
    Spec(String),
    /// The process to run is not there (runc's wording, which users and tests recognise).
    #[error("exec: \"{name}\": {reason}")]
    Exec { name: String, reason: String },
    /// runc's words, which clients and people grep for.
    #[error("chdir to cwd ({path:?}) set in config.json failed: {reason}")]
    Cwd {
        path: std::path::PathBuf,
        reason: String,
    },
    #[error("capabilities: {0}")]
    Caps(String),
    /// The other side of the start handshake went away or said something unexpected.
    #[error("container start handshake: {0}")]
    Handshake(String),
    /// An error reported by the container's own process, as it wrote it.
    #[error("{0}")]
    Child(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps a nix error on `path` to [`Error::Path`].
pub(crate) fn at(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(nix::Error) -> Error {
    let path = path.into();
    move |source| Error::Path {
        action,
        path,
        source,
    }
}

/// Maps a nix error to [`Error::Sys`].
pub(crate) fn sys(action: &'static str) -> impl FnOnce(nix::Error) -> Error {
    move |source| Error::Sys { action, source }
}
