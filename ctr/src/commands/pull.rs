//! `bctr images pull`: the daemon pulls (containerd 2.x's Transfer API, OCIRegistry →
//! ImageStore, as its `ctr` uses it) and bctr shows the progress it streams back (the streams,
//! the call and the display are `transfer.rs`'s).

use berth_api::types::transfer as tt;
use berth_api::types::Platform;
use berth_oci::platform;
use clap::Args;
use prost::Message as _;
use tonic::Code;

use super::transfer::{self, any, AuthStream, Display};
use super::{CmdError, Ctx};

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    bctr images pull docker.io/library/busybox:latest\n  \
    bctr images pull --platform linux/arm64 127.0.0.1:5000/library/busybox:1\n  \
    bctr images pull --user me:secret registry.example.com/team/app:v2")]
pub struct PullArgs {
    /// Pull and unpack for this platform (os/arch[/variant]); this machine's by default.
    #[arg(long)]
    platform: Option<String>,
    /// Snapshotter to unpack into; empty means the namespace's default.
    #[arg(long, env = "CONTAINERD_SNAPSHOTTER", default_value = "")]
    snapshotter: String,
    /// Fetch the content only; do not unpack it into snapshots.
    #[arg(long)]
    no_unpack: bool,
    /// Talk plain HTTP to the registry (loopback registries always are).
    #[arg(long)]
    plain_http: bool,
    /// Registry credentials, user[:password], given to the daemon when the registry asks.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Print nothing.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Image reference (`busybox` is docker.io/library/busybox:latest).
    reference: String,
}

pub async fn run(ctx: &Ctx, a: PullArgs) -> Result<(), CmdError> {
    let reference = bctr::reference::normalize_docker_ref(&a.reference)
        .map_err(|e| CmdError::Usage(e.to_string()))?;
    pull(
        ctx,
        Pull {
            reference: &reference,
            platform: a.platform.as_deref(),
            snapshotter: &a.snapshotter,
            unpack: !a.no_unpack,
            plain_http: a.plain_http,
            user: a.user,
            display: Display::choose(a.quiet),
        },
    )
    .await
}

/// One pull through the daemon's Transfer service: `bctr images pull`'s, and `bctr run`'s of an
/// image that is not here.
pub(super) struct Pull<'a> {
    /// A normalized reference (`docker.io/library/busybox:latest`), also the image's name.
    pub reference: &'a str,
    /// os/arch[/variant]; this machine's when `None`.
    pub platform: Option<&'a str>,
    /// Empty: the namespace's default.
    pub snapshotter: &'a str,
    pub unpack: bool,
    pub plain_http: bool,
    /// user[:password], given to the daemon when the registry asks.
    pub user: Option<String>,
    pub display: Display,
}

pub(super) async fn pull(ctx: &Ctx, a: Pull<'_>) -> Result<(), CmdError> {
    let reference = a.reference.to_owned();
    let p = match a.platform {
        Some(s) => platform::parse(s).map_err(|e| CmdError::Usage(format!("--platform: {e}")))?,
        None => berth_oci::host_platform(),
    };
    let proto_platform = Platform {
        os: platform::os(&p),
        architecture: platform::arch(&p),
        variant: platform::variant(&p).to_owned(),
        ..Default::default()
    };
    let unpacks = if a.unpack {
        let snapshotter = match super::images::resolve_snapshotter(ctx, a.snapshotter).await {
            Ok(s) => s,
            // A namespace the pull is about to create has no default of its own: the daemon's.
            Err(CmdError::Rpc(s)) if s.code() == Code::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        vec![tt::UnpackConfiguration {
            platform: Some(proto_platform.clone()),
            snapshotter,
        }]
    } else {
        Vec::new()
    };
    let store = tt::ImageStore {
        name: reference.clone(),
        platforms: vec![proto_platform],
        unpacks,
        ..Default::default()
    };
    let had_user = a.user.is_some();
    let auth = match a.user {
        Some(user) => Some(AuthStream::open(ctx, user).await?),
        None => None,
    };
    let source = tt::OciRegistry {
        reference: reference.clone(),
        resolver: Some(transfer::resolver(a.plain_http, auth.as_ref())),
    };
    let result = transfer::run(
        ctx,
        any(transfer::OCI_REGISTRY, source.encode_to_vec()),
        any(transfer::IMAGE_STORE, store.encode_to_vec()),
        a.display,
    )
    .await?;
    drop(auth);
    result.map_err(|s| transfer::registry_error("pull", &reference, had_user, s))
}
