//! Named streams between a client and work running in the daemon: containerd's streaming manager
//! (`io.containerd.streaming.v1.manager`), without gRPC.
//!
//! A client opens a stream through the Streaming service and names it; the service
//! [registers](StreamManager::register) it under (namespace, name) and carries messages between
//! the wire and the returned [`Endpoint`]. Work that was given the name (the Transfer service's
//! progress stream, a registry's auth stream) [gets](StreamManager::get) a [`Stream`] and sends
//! and receives [`Message`]s on it; when it is done it [closes](Stream::close) the stream, which
//! ends the client's RPC. A client that goes away ends the registration too.
//!
//! Messages are neutral (a type URL and bytes): the protobuf types live in the service crates.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use berth_plugin::{Classify, ErrorKind, Registration};
use tokio::sync::{mpsc, watch};

/// containerd's plugin type for the stream manager.
pub const PLUGIN_TYPE: &str = "io.containerd.streaming.v1";
/// containerd's id for it.
pub const PLUGIN_ID: &str = "manager";

/// The prefix Berth writes in type URLs (protobuf's own `Any` convention). Readers accept any
/// prefix: containerd's Go clients send bare names (`containerd.types.transfer.Progress`).
pub const TYPE_URL_PREFIX: &str = "type.googleapis.com/";

/// How many messages wait in each direction before the sender waits: enough for bursts of
/// progress events, small enough that a client that stops reading holds little memory.
const BUFFER: usize = 64;

/// One message on a stream: a protobuf `Any` without protobuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub type_url: String,
    pub value: Vec<u8>,
}

impl Message {
    /// A message of the protobuf type `full_name` (`containerd.types.transfer.Progress`).
    pub fn new(full_name: &str, value: Vec<u8>) -> Message {
        Message {
            type_url: format!("{TYPE_URL_PREFIX}{full_name}"),
            value,
        }
    }

    /// The full type name: what follows the last `/` of the type URL (all of it if none).
    pub fn type_name(&self) -> &str {
        type_name(&self.type_url)
    }

    /// Whether the message is of the protobuf type `full_name`, whatever its URL prefix.
    pub fn is(&self, full_name: &str) -> bool {
        self.type_name() == full_name
    }
}

/// The type name in a type URL, whatever its prefix (containerd's Go clients send none, protobuf's
/// convention is `type.googleapis.com/`, Go's `FindMessageByURL` takes what follows the last `/`).
pub fn type_name(type_url: &str) -> &str {
    type_url.rsplit('/').next().unwrap_or(type_url)
}

#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("stream {id:?} in namespace {namespace:?}: already exists")]
    AlreadyExists { namespace: String, id: String },
    #[error("stream {id:?} in namespace {namespace:?}: not found")]
    NotFound { namespace: String, id: String },
    /// The other side is gone (the client closed or dropped the stream).
    #[error("stream {id:?} is closed")]
    Closed { id: String },
}

impl Classify for StreamError {
    fn kind(&self) -> ErrorKind {
        match self {
            StreamError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            StreamError::NotFound { .. } => ErrorKind::NotFound,
            StreamError::Closed { .. } => ErrorKind::Unavailable,
        }
    }
}

type Key = (String, String);

#[derive(Default)]
struct Table {
    /// Registered streams with the serial of their registration, so a late removal of an old
    /// registration never removes a newer stream of the same name.
    streams: HashMap<Key, (u64, Stream)>,
}

/// The registry of named streams. Cheap to clone; share one per daemon.
#[derive(Clone, Default)]
pub struct StreamManager {
    table: Arc<Mutex<Table>>,
    serial: Arc<AtomicU64>,
}

/// The consumer's handle of a registered stream. Clones share the stream.
#[derive(Clone)]
pub struct Stream {
    namespace: String,
    id: String,
    serial: u64,
    to_client: mpsc::Sender<Message>,
    from_client: Arc<tokio::sync::Mutex<mpsc::Receiver<Message>>>,
    closed: Arc<watch::Sender<bool>>,
    table: Arc<Mutex<Table>>,
}

/// The transport's half of a registered stream: what to send to the client and when the
/// consumer is done. Dropping it removes the registration. (Where the client's messages go is
/// the sender [`StreamManager::register`] returns beside it: dropping that sender is how the
/// transport says the client closed its side.)
pub struct Endpoint {
    /// Messages for the client, in order.
    pub outgoing: mpsc::Receiver<Message>,
    closed: watch::Receiver<bool>,
    key: Key,
    serial: u64,
    table: Arc<Mutex<Table>>,
}

fn lock(table: &Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    // The table holds no invariant a panicking holder could break half-way.
    table
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn remove(table: &Mutex<Table>, key: &Key, serial: u64) {
    let mut t = lock(table);
    if t.streams.get(key).is_some_and(|(s, _)| *s == serial) {
        t.streams.remove(key);
    }
}

impl StreamManager {
    pub fn new() -> StreamManager {
        StreamManager::default()
    }

    /// Registers the stream `id` of `namespace`; AlreadyExists while another one has the name.
    /// Returns the transport's endpoint and the sender for the client's messages.
    pub fn register(
        &self,
        namespace: &str,
        id: &str,
    ) -> Result<(Endpoint, mpsc::Sender<Message>), StreamError> {
        let key = (namespace.to_owned(), id.to_owned());
        let mut t = lock(&self.table);
        if t.streams.contains_key(&key) {
            return Err(StreamError::AlreadyExists {
                namespace: namespace.to_owned(),
                id: id.to_owned(),
            });
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let (to_client, outgoing) = mpsc::channel(BUFFER);
        let (incoming, from_client) = mpsc::channel(BUFFER);
        let (closed_tx, closed) = watch::channel(false);
        let stream = Stream {
            namespace: namespace.to_owned(),
            id: id.to_owned(),
            serial,
            to_client,
            from_client: Arc::new(tokio::sync::Mutex::new(from_client)),
            closed: Arc::new(closed_tx),
            table: self.table.clone(),
        };
        t.streams.insert(key.clone(), (serial, stream));
        tracing::debug!(namespace, stream = id, "stream registered");
        let endpoint = Endpoint {
            outgoing,
            closed,
            key,
            serial,
            table: self.table.clone(),
        };
        Ok((endpoint, incoming))
    }

    /// The stream `id` of `namespace`; NotFound unless it is registered.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Stream, StreamError> {
        lock(&self.table)
            .streams
            .get(&(namespace.to_owned(), id.to_owned()))
            .map(|(_, s)| s.clone())
            .ok_or_else(|| StreamError::NotFound {
                namespace: namespace.to_owned(),
                id: id.to_owned(),
            })
    }

    /// How many streams are registered (all namespaces).
    pub fn len(&self) -> usize {
        lock(&self.table).streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Stream {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sends a message to the client, waiting while the transport's buffer is full.
    pub async fn send(&self, msg: Message) -> Result<(), StreamError> {
        if *self.closed.borrow() {
            return Err(self.gone());
        }
        self.to_client.send(msg).await.map_err(|_| self.gone())
    }

    /// The client's next message; Closed once the client has closed its side or gone away.
    pub async fn recv(&self) -> Result<Message, StreamError> {
        let mut rx = self.from_client.lock().await;
        rx.recv().await.ok_or_else(|| self.gone())
    }

    /// Ends the stream: the name is free again and the client's RPC ends once what was sent
    /// before has been delivered. Idempotent.
    pub fn close(&self) {
        remove(
            &self.table,
            &(self.namespace.clone(), self.id.clone()),
            self.serial,
        );
        self.closed.send_replace(true);
    }

    fn gone(&self) -> StreamError {
        StreamError::Closed {
            id: self.id.clone(),
        }
    }
}

/// Resolves when the consumer closes the stream; see [`Endpoint::closed_signal`].
pub struct ClosedSignal(watch::Receiver<bool>);

impl ClosedSignal {
    pub async fn wait(&mut self) {
        // An error means every consumer handle is gone, which is a close too.
        let _ = self.0.wait_for(|c| *c).await;
    }
}

impl Endpoint {
    /// A signal of the consumer's close, apart from the endpoint so a transport can wait on it
    /// and on [`Endpoint::outgoing`] at once.
    pub fn closed_signal(&self) -> ClosedSignal {
        ClosedSignal(self.closed.clone())
    }

    /// The registered name.
    pub fn id(&self) -> &str {
        &self.key.1
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        remove(&self.table, &self.key, self.serial);
        tracing::debug!(namespace = %self.key.0, stream = %self.key.1, "stream ended");
    }
}

/// The `io.containerd.streaming.v1.manager` plugin: one [`StreamManager`] for the daemon.
pub fn registration() -> Registration {
    Registration::new(PLUGIN_TYPE, PLUGIN_ID, &[], |_ctx| {
        Ok(Arc::new(StreamManager::new()) as berth_plugin::Instance)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn register_get_close_is_namespaced() {
        let m = StreamManager::new();
        let (mut ep, incoming) = m.register("a", "s1").unwrap();
        assert!(matches!(
            m.register("a", "s1"),
            Err(StreamError::AlreadyExists { .. })
        ));
        // Same name in another namespace is another stream.
        let _other = m.register("b", "s1").unwrap();
        assert!(matches!(
            m.get("c", "s1"),
            Err(StreamError::NotFound { .. })
        ));

        let s = m.get("a", "s1").unwrap();
        s.send(Message::new("x.Y", vec![1])).await.unwrap();
        assert_eq!(ep.outgoing.recv().await.unwrap().value, vec![1]);
        incoming
            .send(Message {
                type_url: "x.Z".into(),
                value: vec![2],
            })
            .await
            .unwrap();
        let got = s.recv().await.unwrap();
        assert!(got.is("x.Z"));

        s.close();
        ep.closed_signal().wait().await;
        assert!(matches!(
            m.get("a", "s1"),
            Err(StreamError::NotFound { .. })
        ));
        assert!(s.send(Message::new("x.Y", vec![])).await.is_err());
        // The name can be registered again, and the old endpoint's drop leaves the new one.
        let _again = m.register("a", "s1").unwrap();
        drop(ep);
        assert!(m.get("a", "s1").is_ok());
    }

    #[tokio::test]
    async fn a_client_gone_ends_recv_and_the_registration() {
        let m = StreamManager::new();
        let (ep, incoming) = m.register("a", "s").unwrap();
        let s = m.get("a", "s").unwrap();
        drop(incoming);
        drop(ep);
        assert!(matches!(s.recv().await, Err(StreamError::Closed { .. })));
        assert!(m.is_empty());
    }

    #[test]
    fn type_urls_match_whatever_the_prefix() {
        let m = Message::new("containerd.types.transfer.Progress", vec![]);
        assert_eq!(
            m.type_url,
            "type.googleapis.com/containerd.types.transfer.Progress"
        );
        for url in [
            "containerd.types.transfer.Progress",
            "types.containerd.io/containerd.types.transfer.Progress",
        ] {
            assert_eq!(type_name(url), "containerd.types.transfer.Progress");
        }
    }
}
