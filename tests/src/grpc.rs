//! Direct gRPC helpers for tests that need finer control than a CLI gives (half-finished writes,
//! missing headers, exact status codes).

use berth_api::content::{
    content_client::ContentClient, WriteAction, WriteContentRequest, WriteContentResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

/// A request with namespace (and optional lease) headers.
pub fn req<T>(ns: &str, lease: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut r = bctr::client::request(ns, msg);
    if let Some(l) = lease {
        r.metadata_mut()
            .insert("containerd-lease", l.parse().expect("lease header"));
    }
    r
}

/// One Write stream, driven message by message.
pub struct Writer {
    tx: mpsc::Sender<WriteContentRequest>,
    rx: Streaming<WriteContentResponse>,
}

impl Writer {
    /// Opens the stream with a STAT for `reference` and returns the server's answer to it.
    pub async fn open(
        ch: &Channel,
        ns: &str,
        lease: Option<&str>,
        reference: &str,
        total: i64,
        expected: &str,
    ) -> Result<(Writer, WriteContentResponse), Status> {
        let (tx, rx) = mpsc::channel(4);
        tx.send(WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: reference.into(),
            total,
            expected: expected.into(),
            ..Default::default()
        })
        .await
        .expect("queue first message");
        let mut client = ContentClient::new(ch.clone()).max_decoding_message_size(64 << 20);
        let mut stream = client
            .write(req(ns, lease, ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::unknown("stream ended without a reply"))?;
        Ok((Writer { tx, rx: stream }, first))
    }

    pub async fn send(&mut self, msg: WriteContentRequest) -> Result<WriteContentResponse, Status> {
        self.tx
            .send(msg)
            .await
            .map_err(|_| Status::unknown("server closed the stream"))?;
        self.rx
            .message()
            .await?
            .ok_or_else(|| Status::unknown("stream ended without a reply"))
    }

    pub async fn write(
        &mut self,
        offset: i64,
        data: &[u8],
    ) -> Result<WriteContentResponse, Status> {
        self.send(WriteContentRequest {
            action: WriteAction::Write as i32,
            offset,
            data: data.to_vec(),
            ..Default::default()
        })
        .await
    }

    pub async fn commit(
        &mut self,
        offset: i64,
        total: i64,
        expected: &str,
    ) -> Result<WriteContentResponse, Status> {
        self.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset,
            total,
            expected: expected.into(),
            ..Default::default()
        })
        .await
    }
}
