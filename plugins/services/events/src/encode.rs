//! Berth's events as containerd's protobuf messages: the type URLs and fields containerd's clients
//! decode (`ctr events` prints the decoded message).

use berth_api::containerd::events as pb;
use berth_api::types::Envelope as PbEnvelope;
use berth_events::{Envelope, Event};
use prost::Message;

/// An envelope as containerd sends it to subscribers.
pub fn envelope_pb(env: &Envelope) -> PbEnvelope {
    PbEnvelope {
        timestamp: Some(berth_grpc::timestamp(env.timestamp)),
        namespace: env.namespace.clone(),
        topic: env.topic.clone(),
        event: Some(any(&env.event)),
    }
}

/// A client's envelope (Forward) as an exchange envelope; its event stays encoded.
pub fn envelope_from_pb(env: PbEnvelope) -> Envelope {
    let timestamp = env.timestamp.map_or_else(berth_metadata::now_nanos, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    });
    Envelope {
        timestamp,
        namespace: env.namespace,
        topic: env.topic,
        event: opaque(env.event.unwrap_or_default()),
    }
}

/// A client's event, kept as it came.
pub fn opaque(any: prost_types::Any) -> Event {
    Event::Opaque {
        type_url: any.type_url,
        value: any.value,
    }
}

fn packed<M: Message>(type_url: &str, msg: M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url.to_owned(),
        value: msg.encode_to_vec(),
    }
}

/// The event as containerd's message, under containerd's type URL.
pub fn any(event: &Event) -> prost_types::Any {
    let labels = |l: &std::collections::BTreeMap<String, String>| l.clone().into_iter().collect();
    match event.clone() {
        Event::NamespaceCreate { name, labels: l } => packed(
            "containerd.events.NamespaceCreate",
            pb::NamespaceCreate {
                name,
                labels: labels(&l),
            },
        ),
        Event::NamespaceUpdate { name, labels: l } => packed(
            "containerd.events.NamespaceUpdate",
            pb::NamespaceUpdate {
                name,
                labels: labels(&l),
            },
        ),
        Event::NamespaceDelete { name } => packed(
            "containerd.events.NamespaceDelete",
            pb::NamespaceDelete { name },
        ),
        Event::ImageCreate { name, labels: l } => packed(
            "containerd.services.images.v1.ImageCreate",
            berth_api::images::ImageCreate {
                name,
                labels: labels(&l),
            },
        ),
        Event::ImageUpdate { name, labels: l } => packed(
            "containerd.services.images.v1.ImageUpdate",
            berth_api::images::ImageUpdate {
                name,
                labels: labels(&l),
            },
        ),
        Event::ImageDelete { name } => packed(
            "containerd.services.images.v1.ImageDelete",
            berth_api::images::ImageDelete { name },
        ),
        Event::ContainerCreate {
            id,
            image,
            runtime_name,
        } => packed(
            "containerd.events.ContainerCreate",
            pb::ContainerCreate {
                id,
                image,
                runtime: Some(pb::container_create::Runtime {
                    name: runtime_name,
                    options: None,
                }),
            },
        ),
        Event::ContainerUpdate {
            id,
            image,
            labels: l,
            snapshot_key,
        } => packed(
            "containerd.events.ContainerUpdate",
            pb::ContainerUpdate {
                id,
                image,
                labels: labels(&l),
                snapshot_key,
            },
        ),
        Event::ContainerDelete { id } => packed(
            "containerd.events.ContainerDelete",
            pb::ContainerDelete { id },
        ),
        Event::ContentCreate { digest, size } => packed(
            "containerd.events.ContentCreate",
            pb::ContentCreate {
                digest,
                size,
                media_type: String::new(),
            },
        ),
        Event::ContentDelete { digest } => packed(
            "containerd.events.ContentDelete",
            pb::ContentDelete { digest },
        ),
        Event::SnapshotPrepare {
            key,
            parent,
            snapshotter,
        } => packed(
            "containerd.events.SnapshotPrepare",
            pb::SnapshotPrepare {
                key,
                parent,
                snapshotter,
            },
        ),
        Event::SnapshotCommit {
            key,
            name,
            snapshotter,
        } => packed(
            "containerd.events.SnapshotCommit",
            pb::SnapshotCommit {
                key,
                name,
                snapshotter,
            },
        ),
        Event::SnapshotRemove { key, snapshotter } => packed(
            "containerd.events.SnapshotRemove",
            pb::SnapshotRemove { key, snapshotter },
        ),
        Event::TaskExit {
            container_id,
            id,
            pid,
            exit_status,
            exited_at,
        } => packed(
            "containerd.events.TaskExit",
            pb::TaskExit {
                container_id,
                id,
                pid,
                exit_status,
                exited_at: Some(berth_grpc::timestamp(exited_at)),
            },
        ),
        Event::TaskDelete {
            container_id,
            id,
            pid,
            exit_status,
            exited_at,
        } => packed(
            "containerd.events.TaskDelete",
            pb::TaskDelete {
                container_id,
                id,
                pid,
                exit_status,
                exited_at: Some(berth_grpc::timestamp(exited_at)),
            },
        ),
        Event::Opaque { type_url, value } => prost_types::Any { type_url, value },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_events_decode_as_containerd_messages() {
        let any = any(&Event::ContainerCreate {
            id: "c1".into(),
            image: "img".into(),
            runtime_name: "io.containerd.runc.v2".into(),
        });
        assert_eq!(any.type_url, "containerd.events.ContainerCreate");
        let msg = pb::ContainerCreate::decode(any.value.as_slice()).unwrap();
        assert_eq!(msg.runtime.unwrap().name, "io.containerd.runc.v2");
        let any = super::any(&Event::ContainerUpdate {
            id: "c1".into(),
            image: "img".into(),
            labels: [("a".to_owned(), "b".to_owned())].into(),
            snapshot_key: "c1".into(),
        });
        assert_eq!(any.type_url, "containerd.events.ContainerUpdate");
        let msg = pb::ContainerUpdate::decode(any.value.as_slice()).unwrap();
        assert_eq!(
            (msg.labels["a"].as_str(), msg.snapshot_key.as_str()),
            ("b", "c1")
        );
        let any = super::any(&Event::ContainerDelete { id: "c1".into() });
        assert_eq!(any.type_url, "containerd.events.ContainerDelete");
        assert_eq!(
            pb::ContainerDelete::decode(any.value.as_slice())
                .unwrap()
                .id,
            "c1"
        );
    }

    #[test]
    fn snapshot_events_decode_as_containerd_messages() {
        let any = any(&Event::SnapshotCommit {
            key: "k".into(),
            name: "n".into(),
            snapshotter: "overlayfs".into(),
        });
        assert_eq!(any.type_url, "containerd.events.SnapshotCommit");
        let m = pb::SnapshotCommit::decode(any.value.as_slice()).unwrap();
        assert_eq!((m.key.as_str(), m.name.as_str()), ("k", "n"));
    }

    #[test]
    fn client_events_pass_through_unchanged() {
        let original = prost_types::Any {
            type_url: "example.Custom".into(),
            value: vec![1, 2, 3],
        };
        let env = envelope_from_pb(PbEnvelope {
            timestamp: Some(prost_types::Timestamp {
                seconds: 5,
                nanos: 7,
            }),
            namespace: "ns".into(),
            topic: "/x/y".into(),
            event: Some(original.clone()),
        });
        assert_eq!(env.timestamp, 5_000_000_007);
        let back = envelope_pb(&env);
        assert_eq!(back.event, Some(original));
        assert_eq!(back.timestamp.map(|t| (t.seconds, t.nanos)), Some((5, 7)));
    }
}
