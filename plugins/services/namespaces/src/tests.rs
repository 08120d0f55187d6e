//! The namespaces service without a socket or root: containerd's codes, field-path updates and
//! events.

use berth_api::namespaces::namespaces_server::Namespaces;

use berth_events::Exchange;

use super::*;

fn service() -> (tempfile::TempDir, NamespacesService, Arc<Exchange>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(dir.path()).unwrap());
    let events = Arc::new(Exchange::default());
    db.set_events(events.clone());
    let svc = NamespacesService { db };
    (dir, svc, events)
}

fn ns(name: &str, labels: &[(&str, &str)]) -> PbNamespace {
    PbNamespace {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test]
async fn create_update_delete_with_events_and_codes() {
    let (_dir, svc, events) = service();
    let mut rx = events.subscribe();
    svc.create(Request::new(CreateNamespaceRequest {
        namespace: Some(ns("a", &[("k", "1")])),
    }))
    .await
    .unwrap();
    let dup = svc
        .create(Request::new(CreateNamespaceRequest {
            namespace: Some(ns("a", &[])),
        }))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let bad = svc
        .create(Request::new(CreateNamespaceRequest {
            namespace: Some(ns("not valid!", &[])),
        }))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    // Only the named label path changes.
    let updated = svc
        .update(Request::new(UpdateNamespaceRequest {
            namespace: Some(ns("a", &[("k", "2"), ("other", "x")])),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.k".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .namespace
        .unwrap();
    assert_eq!(updated.labels.get("k").map(String::as_str), Some("2"));
    assert!(!updated.labels.contains_key("other"));
    svc.delete(Request::new(DeleteNamespaceRequest { name: "a".into() }))
        .await
        .unwrap();
    let gone = svc
        .get(Request::new(GetNamespaceRequest { name: "a".into() }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let topics: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.topic.clone())
        .collect();
    assert_eq!(
        topics,
        [
            "/namespaces/create",
            "/namespaces/update",
            "/namespaces/delete"
        ]
    );
}
