//! A proxy snapshotter: the `Snapshotter` trait over the snapshots gRPC API of another process
//! (a `berthd snapshotter serve`, or any containerd proxy snapshotter). Configured as
//! `[proxy_plugins.<name>] type = "snapshot" address = "<socket>"` and registered as
//! `io.containerd.snapshotter.v1.<name>`.
//!
//! The trait is blocking; calls run on the daemon's blocking threads, which wait for the async
//! RPC on the runtime's handle. The connection is made lazily, so a proxy that starts after
//! berthd is picked up at first use.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, CleanupRequest, CommitSnapshotRequest, Info as PbInfo,
    Kind as PbKind, ListSnapshotsRequest, MountsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest, UsageRequest,
    ViewSnapshotRequest,
};
use berth_plugin::{types, InitError, Instance, Registration};
use berth_snapshotter::{
    Info, Kind, Mount, SnapshotError, Snapshotter, SnapshotterInstance, Usage,
};
use hyper_util::rt::TokioIo;
use tokio::runtime::Handle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

pub struct ProxySnapshotter {
    name: String,
    address: String,
    client: SnapshotsClient<Channel>,
    handle: Handle,
}

fn channel(address: &str) -> Channel {
    let path = address
        .strip_prefix("unix://")
        .unwrap_or(address)
        .to_owned();
    Endpoint::from_static("http://proxy.invalid").connect_with_connector_lazy(tower::service_fn(
        move |_| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        },
    ))
}

/// The remote's message without the kind suffix containerd-style servers append, so ours is not
/// added twice.
fn bare(s: &Status) -> String {
    let m = s.message();
    for suffix in [
        ": not found",
        ": already exists",
        ": failed precondition",
        ": invalid argument",
        ": not implemented",
        ": resource exhausted",
    ] {
        if let Some(b) = m.strip_suffix(suffix) {
            return b.to_owned();
        }
    }
    m.to_owned()
}

impl ProxySnapshotter {
    pub fn new(name: &str, address: &str, handle: Handle) -> Self {
        ProxySnapshotter {
            name: name.to_owned(),
            address: address.to_owned(),
            client: SnapshotsClient::new(channel(address)),
            handle,
        }
    }

    fn err(&self, s: Status) -> SnapshotError {
        match s.code() {
            Code::NotFound => SnapshotError::NotFound(bare(&s)),
            Code::AlreadyExists => SnapshotError::AlreadyExists(bare(&s)),
            Code::FailedPrecondition => SnapshotError::FailedPrecondition(bare(&s)),
            Code::InvalidArgument => SnapshotError::InvalidArgument(bare(&s)),
            Code::Unimplemented => SnapshotError::Unsupported(bare(&s)),
            Code::ResourceExhausted => SnapshotError::ResourceExhausted(bare(&s)),
            _ => SnapshotError::Remote {
                snapshotter: self.name.clone(),
                address: self.address.clone(),
                message: s.message().to_owned(),
                source: Box::new(s),
            },
        }
    }

    fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, SnapshotError> {
        self.handle
            .block_on(f)
            .map(tonic::Response::into_inner)
            .map_err(|s| self.err(s))
    }

    fn client(&self) -> SnapshotsClient<Channel> {
        self.client.clone()
    }
}

fn info(i: PbInfo) -> Info {
    let kind = match PbKind::try_from(i.kind) {
        Ok(PbKind::View) => Kind::View,
        Ok(PbKind::Committed) => Kind::Committed,
        _ => Kind::Active,
    };
    let ts = |t: Option<prost_types::Timestamp>| {
        t.map(|t| {
            t.seconds
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::from(t.nanos))
        })
        .unwrap_or(0)
    };
    Info {
        name: i.name,
        parent: i.parent,
        kind: Some(kind),
        labels: i.labels.into_iter().collect(),
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
    }
}

fn mounts(ms: Vec<berth_api::types::Mount>) -> Vec<Mount> {
    ms.into_iter()
        .map(|m| Mount {
            mount_type: m.r#type,
            source: m.source,
            target: m.target,
            options: m.options,
        })
        .collect()
}

impl Snapshotter for ProxySnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        let r = self.call(self.client().stat(StatSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))?;
        Ok(info(r.info.unwrap_or_default()))
    }

    fn update(&self, i: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        let r = self.call(self.client().update(UpdateSnapshotRequest {
            snapshotter: self.name.clone(),
            info: Some(PbInfo {
                name: i.name.clone(),
                labels: i.labels.clone().into_iter().collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: paths.to_vec(),
            }),
        }))?;
        Ok(info(r.info.unwrap_or_default()))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let r = self.call(self.client().usage(UsageRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))?;
        Ok(Usage {
            size: r.size,
            inodes: r.inodes,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let r = self.call(self.client().mounts(MountsRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))?;
        Ok(mounts(r.mounts))
    }

    /// The remote's View for [`Kind::View`], its Prepare for [`Kind::Active`];
    /// [`Kind::Committed`] is refused here, without a call (the API cannot create one).
    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        kind.ensure_creatable()?;
        let (snapshotter, key, parent) = (self.name.clone(), key.to_owned(), parent.to_owned());
        let labels = labels.into_iter().collect();
        let pb = if kind == Kind::View {
            let req = ViewSnapshotRequest {
                snapshotter,
                key,
                parent,
                labels,
            };
            self.call(self.client().view(req))?.mounts
        } else {
            let req = PrepareSnapshotRequest {
                snapshotter,
                key,
                parent,
                labels,
            };
            self.call(self.client().prepare(req))?.mounts
        };
        Ok(mounts(pb))
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        self.call(self.client().commit(CommitSnapshotRequest {
            snapshotter: self.name.clone(),
            name: name.to_owned(),
            key: key.to_owned(),
            labels: labels.into_iter().collect(),
            parent: String::new(),
        }))
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.call(self.client().remove(RemoveSnapshotRequest {
            snapshotter: self.name.clone(),
            key: key.to_owned(),
        }))
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        let mut client = self.client();
        let name = self.name.clone();
        let all: Vec<PbInfo> = self
            .handle
            .block_on(async move {
                let mut stream = client
                    .list(ListSnapshotsRequest {
                        snapshotter: name,
                        filters: Vec::new(),
                    })
                    .await?
                    .into_inner();
                let mut out = Vec::new();
                while let Some(m) = stream.message().await? {
                    out.extend(m.info);
                }
                Ok::<_, Status>(out)
            })
            .map_err(|s| self.err(s))?;
        for i in all {
            if !f(&info(i)) {
                break;
            }
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        match self.call(self.client().cleanup(CleanupRequest {
            snapshotter: self.name.clone(),
        })) {
            // Older proxies have no Cleanup; nothing to do then.
            Err(SnapshotError::Unsupported(_)) => Ok(()),
            other => other,
        }
    }

    fn close(&self) -> Result<(), SnapshotError> {
        Ok(())
    }
}

/// `[proxy_plugins.<name>] type = "snapshot"` as the plugin `io.containerd.snapshotter.v1.<name>`.
pub fn registration(name: &str, address: &str) -> Registration {
    let (name_owned, address) = (name.to_owned(), address.to_owned());
    Registration::new(types::SNAPSHOTTER, name, &[], move |ctx| {
        let handle = Handle::try_current()
            .map_err(|_| InitError::Failed("proxy snapshotters need the async runtime".into()))?;
        ctx.set_export("address", address.clone());
        let p = Arc::new(ProxySnapshotter::new(&name_owned, &address, handle));
        let closing = p.clone();
        ctx.on_close(move || closing.close());
        Ok(Arc::new(SnapshotterInstance(p)) as Instance)
    })
}
