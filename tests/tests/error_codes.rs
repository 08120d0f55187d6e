//! Issue 15, defect 11: odd and hostile requests get the gRPC code containerd gives them. Each
//! case runs against berthd and a private containerd with the same tonic client; the codes must
//! be equal, and no answer may be so long that it breaks gRPC's metadata limit (echoed input is
//! truncated).

use std::future::Future;
use std::pin::Pin;

use berth_api::content::{
    content_client::ContentClient, ReadContentRequest, WriteAction, WriteContentRequest,
};
use berth_api::diff::{diff_client::DiffClient, ApplyRequest};
use berth_api::leases::{
    leases_client::LeasesClient, AddResourceRequest, CreateRequest as CreateLeaseRequest, Resource,
};
use berth_api::snapshots::{snapshots_client::SnapshotsClient, PrepareSnapshotRequest};
use berth_api::types::Descriptor;
use berth_tests::{require_root, Berthd, Containerd};
use tonic::transport::Channel;

type Answer = Pin<Box<dyn Future<Output = Result<(), tonic::Status>>>>;
/// One request, made on whichever daemon's channel it is given.
type Call = Box<dyn Fn(Channel) -> Answer>;

fn req<T>(msg: T) -> tonic::Request<T> {
    bctr::client::request("default", msg)
}

const EMPTY_SHA: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// The cases: name, and the call to make on a channel.
fn cases() -> Vec<(&'static str, Call)> {
    let long = "a".repeat(10_000);
    let mut v: Vec<(&'static str, Call)> = Vec::new();
    v.push((
        "content read, negative offset",
        Box::new(|ch| {
            Box::pin(async move {
                let mut s = ContentClient::new(ch)
                    .read(req(ReadContentRequest {
                        digest: EMPTY_SHA.into(),
                        offset: -1,
                        size: 0,
                    }))
                    .await?
                    .into_inner();
                while s.message().await?.is_some() {}
                Ok(())
            })
        }),
    ));
    v.push((
        "content read, negative size",
        Box::new(|ch| {
            Box::pin(async move {
                let mut s = ContentClient::new(ch)
                    .read(req(ReadContentRequest {
                        digest: EMPTY_SHA.into(),
                        offset: 0,
                        size: -5,
                    }))
                    .await?
                    .into_inner();
                while s.message().await?.is_some() {}
                Ok(())
            })
        }),
    ));
    let write = |reference: String, expected: String| -> Call {
        Box::new(move |ch| {
            let (reference, expected) = (reference.clone(), expected.clone());
            Box::pin(async move {
                let msg = WriteContentRequest {
                    action: WriteAction::Commit as i32,
                    r#ref: reference,
                    total: 0,
                    expected,
                    offset: 0,
                    data: Vec::new(),
                    labels: Default::default(),
                };
                let mut s = ContentClient::new(ch)
                    .write(req(tokio_stream::iter(vec![msg])))
                    .await?
                    .into_inner();
                while s.message().await?.is_some() {}
                Ok(())
            })
        })
    };
    v.push((
        "content write, malformed expected digest",
        write("ref-1".into(), "sha256:nothex".into()),
    ));
    v.push((
        "content write, ref with NUL",
        write("a\0b".into(), EMPTY_SHA.into()),
    ));
    v.push((
        "content write, ref with ..",
        write("../../x".into(), EMPTY_SHA.into()),
    ));
    v.push((
        "content write, 10,000-character ref",
        write(long.clone(), EMPTY_SHA.into()),
    ));
    let lease = |id: String, labels: Vec<(String, String)>| -> Call {
        Box::new(move |ch| {
            let (id, labels) = (id.clone(), labels.clone());
            Box::pin(async move {
                LeasesClient::new(ch)
                    .create(req(CreateLeaseRequest {
                        id,
                        labels: labels.into_iter().collect(),
                    }))
                    .await?;
                Ok(())
            })
        })
    };
    v.push(("lease id with NUL", lease("a\0b".into(), vec![])));
    v.push((
        "lease label over 4096 bytes",
        lease("big-label".into(), vec![("k".into(), "v".repeat(5000))]),
    ));
    v.push(("lease id of 10,000 characters", lease(long.clone(), vec![])));
    v.push((
        "add resource of a bad type to a missing lease",
        Box::new(|ch| {
            Box::pin(async move {
                LeasesClient::new(ch)
                    .add_resource(req(AddResourceRequest {
                        id: "no-such-lease".into(),
                        resource: Some(Resource {
                            id: "x".into(),
                            r#type: "bogus".into(),
                        }),
                    }))
                    .await?;
                Ok(())
            })
        }),
    ));
    let prepare = |snapshotter: &'static str, key: String| -> Call {
        Box::new(move |ch| {
            let key = key.clone();
            Box::pin(async move {
                SnapshotsClient::new(ch)
                    .prepare(req(PrepareSnapshotRequest {
                        snapshotter: snapshotter.into(),
                        key,
                        parent: String::new(),
                        labels: Default::default(),
                    }))
                    .await?;
                Ok(())
            })
        })
    };
    v.push(("prepare, empty snapshotter", prepare("", "k1".into())));
    v.push(("prepare, empty key", prepare("overlayfs", String::new())));
    v.push(("prepare, unknown snapshotter", prepare("nope", "k2".into())));
    v.push((
        "prepare, 10,000-character key on unknown snapshotter",
        prepare("nope", long.clone()),
    ));
    v.push((
        "diff apply, unknown media type",
        Box::new(|ch| {
            Box::pin(async move {
                DiffClient::new(ch)
                    .apply(req(ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: "application/x-nonsense".into(),
                            digest: EMPTY_SHA.into(),
                            size: 0,
                            annotations: Default::default(),
                        }),
                        mounts: Vec::new(),
                        payloads: Default::default(),
                        sync_fs: false,
                    }))
                    .await?;
                Ok(())
            })
        }),
    ));
    v
}

#[test]
fn odd_requests_get_containerds_codes() {
    require_root("comparing with a private containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let connect = |sock: std::path::PathBuf| {
        rt.block_on(bctr::client::connect(&sock.display().to_string()))
            .unwrap()
    };
    let (ours, theirs) = (connect(berthd.socket()), connect(containerd.socket()));
    // Where containerd's answer is an accident, berthd answers as the API means (listed in
    // docs/compatibility.md): an empty snapshot key is containerd's bolt error "bucket name
    // required" (Unknown).
    let deliberate = [("prepare, empty key", tonic::Code::InvalidArgument)];
    let mut differ = Vec::new();
    for (name, call) in cases() {
        let code = |ch: &Channel| match rt.block_on(call(ch.clone())) {
            Ok(()) => (tonic::Code::Ok, String::new()),
            Err(s) => (s.code(), s.message().chars().take(200).collect()),
        };
        let (b, c) = (code(&ours), code(&theirs));
        assert_ne!(
            b.0,
            tonic::Code::ResourceExhausted,
            "{name}: berthd's answer did not fit gRPC's metadata: {}",
            b.1
        );
        if let Some((_, want)) = deliberate.iter().find(|(n, _)| *n == name) {
            assert_eq!(b.0, *want, "{name}: {}", b.1);
            continue;
        }
        if b.0 != c.0 {
            differ.push(format!(
                "{name}: berthd {:?} ({}) / containerd {:?} ({})",
                b.0, b.1, c.0, c.1
            ));
        }
    }
    assert!(differ.is_empty(), "codes differ:\n{}", differ.join("\n"));
}
