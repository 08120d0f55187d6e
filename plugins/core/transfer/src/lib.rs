//! The transfer engine: containerd's `core/transfer/local` (plugin `io.containerd.transfer.v1`,
//! id `local`) without gRPC. The Transfer service decodes the API's objects into the types here,
//! hands over a progress callback, and maps [`TransferError`] to status codes.
//!
//! - **pull** ([`Transferrer::pull`], registry → image store): resolve the reference, fetch the
//!   index and the manifests of the wanted platforms (the image store's, else this machine's),
//!   download config and layers in parallel (`max_concurrent_downloads`, default 3) through
//!   resumable content-store ingests, record the image, unpack it for each unpack configuration
//!   with the daemon's unpacker. Everything fetched is held by a lease while the pull runs (the
//!   collector runs meanwhile), then by the image through the `containerd.io/gc.ref.content.*`
//!   labels written on the index and manifests. Content the namespace already has is not fetched
//!   again: a second pull transfers only the resolve request.
//! - **push** ([`Transferrer::push`], image store → registry): walk the image in the content
//!   store (the request's platforms, else all it has), upload the blobs the repository lacks in
//!   parallel (`max_concurrent_uploaded_layers`, default 3), mounting them from another
//!   repository of the same registry when their `containerd.io/distribution.source.*` label
//!   names one, then the manifests, children first, the top one under the destination's tag.
//! - **tag** ([`Transferrer::tag`], image store → image store): the source image's target stored
//!   under the destination's name(s).
//! - **import** ([`Transferrer::import`], archive stream → image store): an OCI layout or
//!   `docker save` tar read into the content store as it streams in (`berth-image-archive`),
//!   its documents labelled with their children, the manifests of the wanted platforms
//!   unpacked, then the images recorded under the names containerd's image store gives them
//!   (`io.containerd.import.ref-source`, prefix and digest references), all under a lease.
//! - **export** ([`Transferrer::export`], image store → archive stream): the images the store
//!   names written as an OCI layout tar (with Docker's `manifest.json`), byte for byte as
//!   containerd 1.6's exporter writes it, to any `io::Write`.
//!
//! Progress events are containerd's (`waiting`, `downloading`, `uploading`, `complete`,
//! `already exists`, `extracting`, `extracted`, `saved`, and unnamed status lines such as
//! `Importing` / `Completed import`; push adds `mounted` for a blob linked from another
//! repository), named as containerd names them
//! (`<kind>-<digest>`, parents up to the image name), so containerd's `ctr` renders them as its
//! own.

mod error;
mod export;
mod import;
mod jobs;
mod pull;
mod push;
mod store;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_content_store::ContentStore;
use berth_metadata::MetadataDb;
use berth_oci::{Descriptor, Platform};
use berth_plugin::{types, Registration};
use berth_remotes::CredentialCallback;
use berth_unpack::Unpacker;
use serde::Deserialize;

pub use berth_image_archive::ExportOptions;
pub use error::TransferError;
pub use import::ImportStream;

/// The engine's `[plugins."io.containerd.transfer.v1.local"]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Blobs downloaded at once per pull.
    pub max_concurrent_downloads: usize,
    /// Blobs uploaded at once per push (containerd's name).
    pub max_concurrent_uploaded_layers: usize,
    /// containerd's registry `config_path` (`/etc/containerd/certs.d`), used when a request
    /// names no `host_dir` of its own.
    pub config_path: Option<PathBuf>,
    /// How long a connection to a registry may take (`"30s"`, as containerd's dialer).
    #[serde(deserialize_with = "duration")]
    pub registry_connect_timeout: Duration,
    /// How long a registry may send nothing (no answer, no bytes of a body) before a pull or
    /// push gives up on it; a slow download that keeps moving is never cut, and uploads (whose
    /// request may take longer than this to send) are not timed. Berth's own setting:
    /// containerd waits on a silent registry forever.
    #[serde(deserialize_with = "duration")]
    pub registry_read_timeout: Duration,
}

/// A duration written as containerd's configs write them: `"30s"`, `"1m30s"`, `"500ms"`.
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s)
        .map_err(|e| serde::de::Error::custom(format!("{s:?} is not a duration: {e}")))?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("a timeout must be longer than 0s"));
    }
    Ok(v)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            // containerd's default for the transfer service.
            max_concurrent_downloads: 3,
            max_concurrent_uploaded_layers: 3,
            config_path: None,
            registry_connect_timeout: Duration::from_secs(30),
            registry_read_timeout: Duration::from_secs(60),
        }
    }
}

/// A registry as a source or a destination (containerd's `OCIRegistry`).
#[derive(Clone, Default)]
pub struct RegistrySource {
    pub reference: String,
    /// Asked for the credentials of a host when the registry wants them (the client's auth
    /// stream). Without it, root's Docker `config.json` is read.
    pub credentials: Option<CredentialCallback>,
    /// Sent with every request.
    pub headers: Vec<(String, String)>,
    /// A `certs.d`-shaped directory of `hosts.toml` files.
    pub host_dir: Option<PathBuf>,
    /// `http` or `https` for registries without a hosts file (loopback is plain HTTP anyway).
    pub default_scheme: Option<String>,
}

impl std::fmt::Debug for RegistrySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistrySource")
            .field("reference", &self.reference)
            .field("credentials", &self.credentials.is_some())
            .field("host_dir", &self.host_dir)
            .field("default_scheme", &self.default_scheme)
            .finish_non_exhaustive()
    }
}

/// An extra name an image is stored under (containerd's `ImageReference`).
#[derive(Debug, Clone, Default)]
pub struct ImageReference {
    pub name: String,
    pub is_prefix: bool,
    pub allow_overwrite: bool,
    pub add_digest: bool,
    pub skip_named_digest: bool,
}

/// Unpack the image for this platform into this snapshotter (empty: overlayfs).
#[derive(Debug, Clone, Default)]
pub struct UnpackConfig {
    pub platform: Option<Platform>,
    pub snapshotter: String,
}

/// The image store as a source or destination (containerd's `ImageStore`).
#[derive(Debug, Clone, Default)]
pub struct ImageStore {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// Pull: which manifests of an index to fetch, empty: this machine's platform. Push:
    /// which to push, empty: all the content store has.
    pub platforms: Vec<Platform>,
    pub all_metadata: bool,
    /// At most this many manifests of an index (0: no limit).
    pub manifest_limit: u32,
    pub extra_references: Vec<ImageReference>,
    pub unpacks: Vec<UnpackConfig>,
}

/// One progress event, as containerd's `transfer.Progress`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    pub event: String,
    /// Empty for status lines; else `<kind>-<digest>` or the image name.
    pub name: String,
    pub parents: Vec<String>,
    pub progress: i64,
    pub total: i64,
    pub desc: Option<Descriptor>,
}

/// Where progress goes. Called from async tasks and blocking threads: keep it quick (queue the
/// event, do not send it).
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;

/// The engine. Cheap to clone.
#[derive(Clone)]
pub struct Transferrer {
    db: Arc<MetadataDb>,
    content: Arc<ContentStore>,
    unpacker: Unpacker,
    config: Config,
}

impl Transferrer {
    pub fn new(
        db: Arc<MetadataDb>,
        content: Arc<ContentStore>,
        unpacker: Unpacker,
        config: Config,
    ) -> Transferrer {
        Transferrer {
            db,
            content,
            unpacker,
            config,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }
}

/// The `io.containerd.transfer.v1.local` plugin.
pub fn registration() -> Registration {
    Registration::new(
        types::TRANSFER,
        "local",
        &[types::METADATA, types::CONTENT, types::SERVICE],
        |ctx| {
            let config: Config = ctx.config()?;
            if config.max_concurrent_downloads == 0 || config.max_concurrent_uploaded_layers == 0 {
                return Err(berth_plugin::InitError::Config(
                    "max_concurrent_downloads and max_concurrent_uploaded_layers must be at \
                     least 1"
                        .into(),
                ));
            }
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let content = ctx.get_as::<ContentStore>(types::CONTENT)?;
            // The shared namespaced snapshots instance, as the unpack service uses.
            let snapshots = berth_snapshots::shared(ctx)?;
            let unpacker = Unpacker::new(db.clone(), content.clone(), snapshots);
            Ok(Arc::new(Transferrer::new(db, content, unpacker, config)) as berth_plugin::Instance)
        },
    )
}
