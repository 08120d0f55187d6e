//! The client side of containerd's Streaming service as containerd 2.x's Go client drives it,
//! for tests that call Transfer with hand-built requests.

use berth_api::streaming::{streaming_client::StreamingClient, StreamInit};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

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
