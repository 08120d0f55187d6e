//! Events: the in-process exchange every store and service publishes to; the events gRPC service
//! (`berth-events-service`) lets clients publish, forward and subscribe (`ctr events`).
//!
//! The exchange is a broadcast channel. A subscriber that falls more than [`BUFFER`] events
//! behind loses the oldest ones (and is told so in the log) rather than slowing publishers: events
//! are notifications, the stores remain the truth.

use std::sync::Arc;

use berth_api::types::Envelope;
use berth_plugin::{types, Instance, Registration};
use tokio::sync::broadcast;

/// Events a subscriber may lag behind before it starts losing the oldest.
pub const BUFFER: usize = 4096;

/// The event bus. Cheap to share behind an `Arc`.
pub struct Exchange {
    tx: broadcast::Sender<Arc<Envelope>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange {
            tx: broadcast::channel(BUFFER).0,
        }
    }
}

impl Exchange {
    /// Publishes `event` (a containerd event message) under `topic` in `namespace`. `type_url` is
    /// the message's full protobuf name, which is what containerd's clients decode by.
    pub fn publish<M: prost::Message>(
        &self,
        namespace: &str,
        topic: &str,
        type_url: &str,
        event: &M,
    ) {
        self.forward(Envelope {
            timestamp: Some(timestamp(berth_metadata::now_nanos())),
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
            event: Some(prost_types::Any {
                type_url: type_url.to_owned(),
                value: event.encode_to_vec(),
            }),
        });
    }

    /// Sends an envelope as it is (for forwarded events, which keep their timestamp).
    pub fn forward(&self, env: Envelope) {
        tracing::debug!(topic = %env.topic, namespace = %env.namespace, "event");
        // No subscribers is not an error.
        let _ = self.tx.send(Arc::new(env));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Envelope>> {
        self.tx.subscribe()
    }
}

/// The `io.containerd.event.v1.exchange` plugin.
pub fn registration() -> Registration {
    Registration::new(types::EVENT, "exchange", &[], |_ctx| {
        Ok(Arc::new(Exchange::default()) as Instance)
    })
}

/// Type URLs of the events Berth publishes, as containerd names them.
pub mod urls {
    pub const CONTENT_CREATE: &str = "containerd.events.ContentCreate";
    pub const CONTENT_DELETE: &str = "containerd.events.ContentDelete";
    pub const IMAGE_CREATE: &str = "containerd.services.images.v1.ImageCreate";
    pub const IMAGE_UPDATE: &str = "containerd.services.images.v1.ImageUpdate";
    pub const IMAGE_DELETE: &str = "containerd.services.images.v1.ImageDelete";
    pub const NAMESPACE_CREATE: &str = "containerd.events.NamespaceCreate";
    pub const NAMESPACE_UPDATE: &str = "containerd.events.NamespaceUpdate";
    pub const NAMESPACE_DELETE: &str = "containerd.events.NamespaceDelete";
    pub const SNAPSHOT_PREPARE: &str = "containerd.events.SnapshotPrepare";
    pub const SNAPSHOT_COMMIT: &str = "containerd.events.SnapshotCommit";
    pub const SNAPSHOT_REMOVE: &str = "containerd.events.SnapshotRemove";
}

/// A protobuf timestamp from nanoseconds since the Unix epoch.
fn timestamp(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}
