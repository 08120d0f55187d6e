//! The images service without a socket or root: requests in, containerd's codes and events out.

use berth_api::images::images_server::Images;

use berth_events::Exchange;

use super::*;

fn service() -> (tempfile::TempDir, ImagesService, Arc<Exchange>) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(dir.path()).unwrap());
    // The store publishes: every caller's changes are announced, not only this service's.
    let events = Arc::new(Exchange::default());
    db.set_events(events.clone());
    let svc = ImagesService { db, gc: None };
    (dir, svc, events)
}

fn req<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", "test".parse().unwrap());
    r
}

fn image(name: &str) -> PbImage {
    PbImage {
        name: name.into(),
        target: Some(PbDescriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            size: 100,
            annotations: Default::default(),
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_get_list_delete_with_containerd_codes_and_events() {
    let (_dir, svc, events) = service();
    let mut rx = events.subscribe();
    let name = "docker.io/library/busybox:latest";
    let created = svc
        .create(req(CreateImageRequest {
            image: Some(image(name)),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.image.unwrap().name, name);
    let again = svc
        .create(req(CreateImageRequest {
            image: Some(image(name)),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::AlreadyExists);
    let got = svc
        .get(req(GetImageRequest { name: name.into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.image.unwrap().target.unwrap().size, 100);
    let listed = svc
        .list(req(ListImagesRequest {
            filters: vec![format!("name=={name}")],
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.images.len(), 1);
    svc.delete(req(DeleteImageRequest {
        name: name.into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let missing = svc
        .get(req(GetImageRequest { name: name.into() }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let topics: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .map(|e| e.topic.clone())
        .collect();
    assert_eq!(topics, ["/images/create", "/images/delete"]);
}

#[tokio::test]
async fn requests_without_a_namespace_or_target_are_refused() {
    let (_dir, svc, _events) = service();
    let no_ns = svc
        .get(Request::new(GetImageRequest { name: "x".into() }))
        .await
        .unwrap_err();
    assert_eq!(no_ns.code(), tonic::Code::FailedPrecondition);
    let mut img = image("docker.io/library/x:1");
    img.target = None;
    let no_target = svc
        .create(req(CreateImageRequest {
            image: Some(img),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(no_target.code(), tonic::Code::InvalidArgument);
}
