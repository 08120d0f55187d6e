//! Events: the in-process exchange every store and service publishes to; the events gRPC service
//! (`berth-events-service`) lets clients publish, forward and subscribe (`ctr events`).
//!
//! Events are Berth's own types ([`Event`]): what happened, in the stores' terms. Only the events
//! service turns them into containerd's protobuf messages (same type URLs, same fields), so the
//! stores that publish know nothing of protobuf. Events a client publishes or forwards are kept as
//! they came ([`Event::Opaque`]).
//!
//! The exchange is a broadcast channel. A subscriber that falls more than [`BUFFER`] events
//! behind loses the oldest ones (and is told so in the log) rather than slowing publishers: events
//! are notifications, the stores remain the truth.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_plugin::{types, Instance, Registration};
use tokio::sync::broadcast;

/// Events a subscriber may lag behind before it starts losing the oldest.
pub const BUFFER: usize = 4096;

type Labels = BTreeMap<String, String>;

/// Something that happened in a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    NamespaceCreate {
        name: String,
        labels: Labels,
    },
    NamespaceUpdate {
        name: String,
        labels: Labels,
    },
    NamespaceDelete {
        name: String,
    },
    ImageCreate {
        name: String,
        labels: Labels,
    },
    ImageUpdate {
        name: String,
        labels: Labels,
    },
    ImageDelete {
        name: String,
    },
    ContainerCreate {
        id: String,
        image: String,
        runtime_name: String,
    },
    ContainerUpdate {
        id: String,
        image: String,
        labels: Labels,
        snapshot_key: String,
    },
    ContainerDelete {
        id: String,
    },
    ContentCreate {
        digest: String,
        size: i64,
    },
    ContentDelete {
        digest: String,
    },
    SnapshotPrepare {
        key: String,
        parent: String,
        snapshotter: String,
    },
    SnapshotCommit {
        key: String,
        name: String,
        snapshotter: String,
    },
    SnapshotRemove {
        key: String,
        snapshotter: String,
    },
    /// A task's process exited; berthd publishes it itself only for a shim that died without
    /// saying so (its shim forwards the ordinary ones).
    TaskExit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: i64,
    },
    TaskDelete {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: i64,
    },
    /// Published or forwarded by a client: its type URL and encoded message, passed on as is.
    Opaque {
        type_url: String,
        value: Vec<u8>,
    },
}

impl Event {
    /// The topic containerd publishes this event under; `None` for client events, which bring
    /// their own.
    pub fn topic(&self) -> Option<&'static str> {
        Some(match self {
            Event::NamespaceCreate { .. } => "/namespaces/create",
            Event::NamespaceUpdate { .. } => "/namespaces/update",
            Event::NamespaceDelete { .. } => "/namespaces/delete",
            Event::ImageCreate { .. } => "/images/create",
            Event::ImageUpdate { .. } => "/images/update",
            Event::ImageDelete { .. } => "/images/delete",
            Event::ContainerCreate { .. } => "/containers/create",
            Event::ContainerUpdate { .. } => "/containers/update",
            Event::ContainerDelete { .. } => "/containers/delete",
            Event::ContentCreate { .. } => "/content/create",
            Event::ContentDelete { .. } => "/content/delete",
            Event::SnapshotPrepare { .. } => "/snapshot/prepare",
            Event::SnapshotCommit { .. } => "/snapshot/commit",
            Event::SnapshotRemove { .. } => "/snapshot/remove",
            Event::TaskExit { .. } => "/tasks/exit",
            Event::TaskDelete { .. } => "/tasks/delete",
            Event::Opaque { .. } => return None,
        })
    }
}

/// An event with where and when it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Nanoseconds since the Unix epoch.
    pub timestamp: i64,
    pub namespace: String,
    pub topic: String,
    pub event: Event,
}

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
    /// Publishes one of Berth's events in `namespace`, now, under its topic.
    pub fn publish(&self, namespace: &str, event: Event) {
        let topic = event.topic().unwrap_or("/berth/unknown").to_owned();
        self.forward(Envelope {
            timestamp: now_nanos(),
            namespace: namespace.to_owned(),
            topic,
            event,
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

/// Nanoseconds since the Unix epoch (0 for a clock before it).
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// The `io.containerd.event.v1.exchange` plugin.
pub fn registration() -> Registration {
    Registration::new(types::EVENT, "exchange", &[], |_ctx| {
        Ok(Arc::new(Exchange::default()) as Instance)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn subscribers_see_events_with_their_topic() {
        let ex = Exchange::default();
        let mut rx = ex.subscribe();
        ex.publish(
            "ns",
            Event::SnapshotRemove {
                key: "k".into(),
                snapshotter: "overlayfs".into(),
            },
        );
        let env = rx.recv().await.unwrap();
        assert_eq!(env.topic, "/snapshot/remove");
        assert_eq!(env.namespace, "ns");
        assert!(env.timestamp > 0);
    }
}
