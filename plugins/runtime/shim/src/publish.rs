//! Events to the daemon: `containerd.services.events.ttrpc.v1.Events/Forward` on the ttrpc
//! address the shim was started with (`TTRPC_ADDRESS`), sent one at a time in order by one task,
//! so `/tasks/exit` can never overtake `/tasks/start`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_shim::proto::containerd::services::events::ttrpc::v1::{Envelope, ForwardRequest};
use prost::Message;
use tokio::sync::mpsc;

use crate::log::{debug, warning};

#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<(String, prost_types::Any)>,
}

pub fn now() -> prost_types::Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Publisher {
    /// Starts the sending task. Without an address events are dropped (a shim run by hand).
    pub fn start(address: Option<String>, namespace: String) -> Publisher {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, prost_types::Any)>();
        tokio::spawn(async move {
            let Some(address) = address else {
                while rx.recv().await.is_some() {}
                return;
            };
            let address = if address.contains("://") {
                address
            } else {
                format!("unix://{address}")
            };
            let mut client: Option<ttrpc::r#async::Client> = None;
            while let Some((topic, event)) = rx.recv().await {
                let req = ForwardRequest {
                    envelope: Some(Envelope {
                        timestamp: Some(now()),
                        namespace: namespace.clone(),
                        topic: topic.clone(),
                        event: Some(event),
                    }),
                };
                let mut sent = false;
                for attempt in 0..5 {
                    if client.is_none() {
                        client = ttrpc::r#async::Client::connect(&address).await.ok();
                    }
                    let Some(c) = &client else {
                        tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                        continue;
                    };
                    let mut r = ttrpc::proto::Request::new();
                    r.service = "containerd.services.events.ttrpc.v1.Events".to_owned();
                    r.method = "Forward".to_owned();
                    r.payload = req.encode_to_vec();
                    r.timeout_nano = Duration::from_secs(5).as_nanos() as i64;
                    match c.request(r).await {
                        Ok(_) => {
                            sent = true;
                            break;
                        }
                        Err(e) => {
                            debug!("forward {topic}: {e}");
                            client = None;
                            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                        }
                    }
                }
                if !sent {
                    warning!("event {topic} could not be forwarded to {address}");
                }
            }
        });
        Publisher { tx }
    }

    /// Queues `event` (of protobuf type `type_name`, e.g. `containerd.events.TaskStart`) under
    /// `topic` (`/tasks/start`, …).
    pub fn publish<M: Message>(&self, topic: &str, type_name: &str, event: &M) {
        let any = prost_types::Any {
            type_url: type_name.to_owned(),
            value: event.encode_to_vec(),
        };
        let _ = self.tx.send((topic.to_owned(), any));
    }
}
