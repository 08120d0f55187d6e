//! The leases service without a socket or root: resources, filters and containerd's codes.

use berth_api::leases::leases_server::Leases;

use super::*;

fn service() -> (tempfile::TempDir, LeasesService) {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(MetadataDb::open(dir.path()).unwrap());
    (dir, LeasesService { db, gc: None })
}

fn req<T>(msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    r.metadata_mut()
        .insert("containerd-namespace", "test".parse().unwrap());
    r
}

#[tokio::test]
async fn leases_hold_resources_until_deleted() {
    let (_dir, svc) = service();
    svc.create(req(CreateRequest {
        id: "l1".into(),
        labels: [("k".to_owned(), "v".to_owned())].into(),
    }))
    .await
    .unwrap();
    let dup = svc
        .create(req(CreateRequest {
            id: "l1".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), tonic::Code::AlreadyExists);
    let resource = Resource {
        id: "snap".into(),
        r#type: "snapshots/overlayfs".into(),
    };
    svc.add_resource(req(AddResourceRequest {
        id: "l1".into(),
        resource: Some(resource.clone()),
    }))
    .await
    .unwrap();
    let listed = svc
        .list_resources(req(ListResourcesRequest { id: "l1".into() }))
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert_eq!(listed, std::slice::from_ref(&resource));
    let filtered = svc
        .list(req(ListRequest {
            filters: vec!["labels.k==v".into()],
        }))
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(filtered.len(), 1);
    svc.delete_resource(req(DeleteResourceRequest {
        id: "l1".into(),
        resource: Some(resource),
    }))
    .await
    .unwrap();
    svc.delete(req(DeleteRequest {
        id: "l1".into(),
        sync: false,
    }))
    .await
    .unwrap();
    let gone = svc
        .delete(req(DeleteRequest {
            id: "l1".into(),
            sync: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
}
