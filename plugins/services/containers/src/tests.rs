//! The containers service without a socket or root: requests in, containerd's codes and events out.

use berth_api::containers::containers_server::Containers;
use berth_events::Exchange;
use tokio_stream::StreamExt;

use super::*;

fn service() -> (tempfile::TempDir, ContainersService, Arc<Exchange>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(dir.path()).unwrap());
    let events = Arc::new(Exchange::default());
    db.set_events(events.clone());
    (dir, ContainersService { db }, events)
}

fn req<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", "test".parse().unwrap());
    r
}

fn pb(id: &str, image: &str) -> PbContainer {
    PbContainer {
        id: id.into(),
        image: image.into(),
        runtime: Some(PbRuntime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{}".to_vec(),
        }),
        snapshotter: "overlayfs".into(),
        snapshot_key: id.into(),
        ..Default::default()
    }
}

async fn create(svc: &ContainersService, c: PbContainer) -> Result<PbContainer, Status> {
    Ok(svc
        .create(req(CreateContainerRequest { container: Some(c) }))
        .await?
        .into_inner()
        .container
        .unwrap_or_default())
}

#[tokio::test]
async fn crud_with_containerd_codes_messages_and_events() {
    let (_dir, svc, events) = service();
    let mut rx = events.subscribe();
    let created = create(&svc, pb("c1", "busybox")).await.unwrap();
    assert_eq!(created.runtime.unwrap().name, "io.containerd.runc.v2");
    assert!(created.created_at.is_some());
    let again = create(&svc, pb("c1", "busybox")).await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    assert_eq!(again.message(), "container \"c1\": already exists");

    let mut up = pb("c1", "busybox");
    up.labels.insert("a".into(), "b".into());
    let updated = svc
        .update(req(UpdateContainerRequest {
            container: Some(up),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.a".into()],
            }),
        }))
        .await
        .unwrap()
        .into_inner()
        .container
        .unwrap();
    assert_eq!(updated.labels["a"], "b");
    assert_eq!(updated.created_at, created.created_at);

    let got = svc
        .get(req(GetContainerRequest { id: "c1".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.container.unwrap().spec.unwrap().value, b"{}");

    svc.delete(req(DeleteContainerRequest { id: "c1".into() }))
        .await
        .unwrap();
    let missing = svc
        .get(req(GetContainerRequest { id: "c1".into() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    assert_eq!(
        missing.message(),
        "container \"c1\" in namespace \"test\": not found"
    );
    let gone = svc
        .delete(req(DeleteContainerRequest { id: "c1".into() }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);

    let topics: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.topic.clone())
        .collect();
    assert_eq!(
        topics,
        [
            "/containers/create",
            "/containers/update",
            "/containers/delete"
        ]
    );
}

#[tokio::test]
async fn list_and_list_stream_apply_containerd_filters() {
    let (_dir, svc, _events) = service();
    create(&svc, pb("a", "busybox")).await.unwrap();
    let mut b = pb("b", "alpine");
    b.labels.insert("role".into(), "web".into());
    create(&svc, b).await.unwrap();

    let ids = |cs: Vec<PbContainer>| cs.into_iter().map(|c| c.id).collect::<Vec<_>>();
    let list = |filters: &[&str]| {
        svc.list(req(ListContainersRequest {
            filters: filters.iter().map(|f| f.to_string()).collect(),
        }))
    };
    assert_eq!(
        ids(list(&[]).await.unwrap().into_inner().containers),
        ["a", "b"]
    );
    assert_eq!(
        ids(list(&["image==alpine"])
            .await
            .unwrap()
            .into_inner()
            .containers),
        ["b"]
    );
    assert_eq!(
        ids(list(&["labels.role==web"])
            .await
            .unwrap()
            .into_inner()
            .containers),
        ["b"]
    );
    assert_eq!(
        ids(list(&["id==a", "id==b"])
            .await
            .unwrap()
            .into_inner()
            .containers),
        ["a", "b"],
        "filters are ORed"
    );
    assert_eq!(
        ids(
            list(&["runtime.name==io.containerd.runc.v2,image==busybox"])
                .await
                .unwrap()
                .into_inner()
                .containers
        ),
        ["a"]
    );
    let bad = list(&["id=="]).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let stream = svc
        .list_stream(req(ListContainersRequest {
            filters: vec!["id~=.".into()],
        }))
        .await
        .unwrap()
        .into_inner();
    let messages: Vec<ListContainerMessage> = stream.map(Result::unwrap).collect().await;
    assert_eq!(messages.len(), 2, "one container per message");
}

#[tokio::test]
async fn invalid_requests_are_refused_as_containerd_does() {
    let (_dir, svc, _events) = service();
    let no_ns = svc
        .get(Request::new(GetContainerRequest { id: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(no_ns.code(), tonic::Code::FailedPrecondition);

    let mut no_spec = pb("c1", "busybox");
    no_spec.spec = None;
    let e = create(&svc, no_spec).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        e.message(),
        "create container failed validation: container.Spec must be set: invalid argument"
    );
    let mut no_runtime = pb("c1", "busybox");
    no_runtime.runtime = None;
    let e = create(&svc, no_runtime).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = svc
        .create(req(CreateContainerRequest { container: None }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);

    create(&svc, pb("c1", "busybox")).await.unwrap();
    let mut moved = pb("c1", "busybox");
    moved.snapshotter = "native".into();
    let e = svc
        .update(req(UpdateContainerRequest {
            container: Some(moved),
            update_mask: None,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = svc
        .update(req(UpdateContainerRequest {
            container: Some(pb("c1", "busybox")),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["created_at".into()],
            }),
        }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}
