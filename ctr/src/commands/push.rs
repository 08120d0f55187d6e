//! `bctr images push` and `bctr images tag`, through the daemon's Transfer service as containerd
//! 2.x's `ctr` does: push is ImageStore → OCIRegistry, tag ImageStore → ImageStore. The
//! progress display is pull's (`transfer.rs`).

use berth_api::images::{images_client::ImagesClient, GetImageRequest};
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
    bctr images push --plain-http 127.0.0.1:5000/library/busybox:1 docker.io/library/busybox:1\n  \
    bctr images push --platform linux/amd64 registry.example.com/team/app:v2\n  \
    bctr images push --user me:secret registry.example.com/team/app:v2 app:v2")]
pub struct PushArgs {
    /// Push only the manifests for this platform (os/arch[/variant]; repeatable); by default
    /// everything the image has here.
    #[arg(long)]
    platform: Vec<String>,
    /// Talk plain HTTP to the registry (loopback registries always are).
    #[arg(long)]
    plain_http: bool,
    /// Registry credentials, user[:password], given to the daemon when the registry asks.
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Print nothing.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Where to push: registry/repository[:tag] (no tag: latest; @digest: by digest).
    remote: String,
    /// The local image to push (its name in `bctr images ls`); the remote name by default.
    local: Option<String>,
}

#[derive(Args)]
#[command(after_help = "Examples:\n  \
    bctr images tag docker.io/library/busybox:latest 127.0.0.1:5000/library/busybox:1\n  \
    bctr images tag --force app:v2 app:latest")]
pub struct TagArgs {
    /// Replace a target name that exists already.
    #[arg(long)]
    force: bool,
    /// The image to tag, by its name.
    source: String,
    /// The new names.
    #[arg(required = true)]
    targets: Vec<String>,
}

/// Whether the namespace has an image of this name.
async fn image_exists(ctx: &Ctx, name: &str) -> Result<bool, CmdError> {
    match ImagesClient::new(ctx.channel.clone())
        .get(ctx.request(GetImageRequest {
            name: name.to_owned(),
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(super::rpc_context("looking up the image")(s)),
    }
}

pub async fn push(ctx: &Ctx, a: PushArgs) -> Result<(), CmdError> {
    let remote = bctr::reference::normalize_docker_ref(&a.remote)
        .map_err(|e| CmdError::Usage(e.to_string()))?;
    // The local name as given, else as normalised (`busybox` is stored as
    // docker.io/library/busybox:latest); when neither exists the daemon says so.
    let given = a.local.clone().unwrap_or_else(|| a.remote.clone());
    let mut local = given.clone();
    if !image_exists(ctx, &given).await? {
        if let Ok(n) = bctr::reference::normalize_docker_ref(&given) {
            if n != given && image_exists(ctx, &n).await? {
                local = n;
            }
        }
    }
    let mut platforms = Vec::new();
    for s in &a.platform {
        let p = platform::parse(s).map_err(|e| CmdError::Usage(format!("--platform: {e}")))?;
        platforms.push(Platform {
            os: platform::os(&p),
            architecture: platform::arch(&p),
            variant: platform::variant(&p).to_owned(),
            ..Default::default()
        });
    }
    let store = tt::ImageStore {
        name: local.clone(),
        platforms,
        ..Default::default()
    };
    let auth = match a.user.clone() {
        Some(user) => Some(AuthStream::open(ctx, user).await?),
        None => None,
    };
    let dest = tt::OciRegistry {
        reference: remote.clone(),
        resolver: Some(transfer::resolver(a.plain_http, auth.as_ref())),
    };
    let result = transfer::run(
        ctx,
        any(transfer::IMAGE_STORE, store.encode_to_vec()),
        any(transfer::OCI_REGISTRY, dest.encode_to_vec()),
        Display::choose(a.quiet),
    )
    .await?;
    drop(auth);
    result.map_err(|s| transfer::registry_error("push", &remote, a.user.is_some(), s))
}

pub async fn tag(ctx: &Ctx, a: TagArgs) -> Result<(), CmdError> {
    for target in &a.targets {
        // A target must be a valid reference, as ctr checks (it is stored as given).
        bctr::reference::normalize_docker_ref(target).map_err(|e| {
            CmdError::Usage(format!("{target:?} is not a valid repository/tag: {e}"))
        })?;
        // containerd's Transfer tag replaces an existing name; `ctr images tag` refuses one
        // without --force: so does bctr, before asking the daemon.
        if !a.force && image_exists(ctx, target).await? {
            return Err(CmdError::Failed(format!(
                "image {target:?}: already exists\n  hint: add --force to point it at {}",
                a.source
            )));
        }
        let src = tt::ImageStore {
            name: a.source.clone(),
            ..Default::default()
        };
        let dst = tt::ImageStore {
            name: target.clone(),
            ..Default::default()
        };
        let result = transfer::run(
            ctx,
            any(transfer::IMAGE_STORE, src.encode_to_vec()),
            any(transfer::IMAGE_STORE, dst.encode_to_vec()),
            Display::Quiet,
        )
        .await?;
        result.map_err(|s| match s.code() {
            Code::Unimplemented => transfer::no_transfer(),
            Code::NotFound => CmdError::Failed(format!(
                "tag {}: {}\n  hint: `bctr images ls` lists the images here; import or pull \
                 it first",
                a.source,
                s.message()
            )),
            _ => CmdError::Failed(format!("tag {} as {target}: {}", a.source, s.message())),
        })?;
        println!("{target}");
    }
    Ok(())
}
