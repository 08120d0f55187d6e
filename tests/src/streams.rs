//! The client side of containerd's Streaming service as containerd 2.x's Go client drives it,
//! for tests that call Transfer with hand-built requests.

use std::time::Duration;

use berth_api::streaming::{streaming_client::StreamingClient, StreamInit};
use berth_api::transfer::{transfer_client::TransferClient, TransferOptions, TransferRequest};
use berth_api::types::transfer as tt;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt as _;

/// An `Any` with a bare type name, as containerd's Go clients send them (typeurl): Berth must
/// accept them as well as `type.googleapis.com/` URLs.
pub fn any(name: &str, value: Vec<u8>) -> prost_types::Any {
    prost_types::Any {
        type_url: name.to_owned(),
        value,
    }
}

/// A stream opened as containerd's client opens one: `StreamInit`, then the server's `Empty`.
/// Returns the sender for the client's messages and the server's messages after the ack.
pub async fn open_stream(
    ch: &tonic::transport::Channel,
    namespace: &str,
    id: &str,
) -> (
    mpsc::Sender<prost_types::Any>,
    tonic::Streaming<prost_types::Any>,
) {
    let (tx, rx) = mpsc::channel(16);
    let init = StreamInit { id: id.to_owned() };
    tx.send(any(
        "containerd.services.streaming.v1.StreamInit",
        init.encode_to_vec(),
    ))
    .await
    .expect("queue StreamInit");
    let mut inbound = StreamingClient::new(ch.clone())
        .stream(bctr::client::request(namespace, ReceiverStream::new(rx)))
        .await
        .expect("Streaming.Stream")
        .into_inner();
    let ack = inbound
        .message()
        .await
        .expect("the stream's acknowledgement")
        .expect("acknowledgement");
    assert!(
        ack.type_url.ends_with("google.protobuf.Empty"),
        "ack: {ack:?}"
    );
    (tx, inbound)
}

/// What containerd 2.x's client does for every transfer: a progress stream, then Transfer naming
/// it. Returns the Transfer result and the progress events received until the server closed
/// the stream (which it must do once the transfer is over).
pub async fn transfer(
    ch: &tonic::transport::Channel,
    namespace: &str,
    src: prost_types::Any,
    dst: prost_types::Any,
) -> (Result<(), tonic::Status>, Vec<tt::Progress>) {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let id = format!(
        "progress-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let (_keep, mut inbound) = open_stream(ch, namespace, &id).await;
    let collect = tokio::spawn(async move {
        let mut events = Vec::new();
        while let Some(m) = inbound.next().await {
            let m = m.expect("progress stream");
            assert!(
                m.type_url.ends_with("containerd.types.transfer.Progress"),
                "{m:?}"
            );
            events.push(tt::Progress::decode(m.value.as_slice()).expect("a Progress"));
        }
        events
    });
    let result = TransferClient::new(ch.clone())
        .transfer(bctr::client::request(
            namespace,
            TransferRequest {
                source: Some(src),
                destination: Some(dst),
                options: Some(TransferOptions {
                    progress_stream: id,
                }),
            },
        ))
        .await
        .map(|_| ());
    let events = tokio::time::timeout(Duration::from_secs(20), collect)
        .await
        .expect("the progress stream ends after the transfer")
        .expect("the progress reader");
    (result, events)
}
