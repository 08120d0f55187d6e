//! A gRPC channel over a unix socket, with the namespace header every request carries.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {address}: {reason} (is berthd running? start it with: berthd --address {address})")]
    Unreachable { address: String, reason: String },
}

/// Connects to the daemon at `address` (a socket path, or `unix://` followed by one).
pub async fn connect(address: &str) -> Result<Channel, ConnectError> {
    let path: PathBuf = Path::new(address.strip_prefix("unix://").unwrap_or(address)).to_owned();
    let shown = path.display().to_string();
    // The URI is required by tonic but never used: the connector below dials the socket.
    let endpoint = Endpoint::from_static("http://berthd.invalid");
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| ConnectError::Unreachable {
            address: shown,
            reason: root_cause(&e),
        })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Wraps a message in a request carrying the `containerd-namespace` header.
pub fn request<T>(namespace: &str, msg: T) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(namespace) {
        req.metadata_mut().insert("containerd-namespace", v);
    }
    req
}
