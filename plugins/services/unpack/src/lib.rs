//! `berth.services.unpack.v1.Unpack`: unpacking inside the daemon.
//!
//! containerd's client unpacks one layer after the other: each layer must be extracted on top of
//! its parent. On overlayfs that is not so: a layer's snapshot directory holds only that layer,
//! in overlay's whiteout format, whatever lies below. So Berth extracts (and decompresses, and
//! hashes) every missing layer at once, each into its own staging directory on the snapshotter's
//! filesystem, then stacks them in order: prepare on the parent, adopt the staged directory as
//! the upper (a rename), commit under the chain ID. Directories a layer only implies get their
//! metadata from the layers below once those exist. Snapshotters without staging (native) are
//! unpacked layer by layer through the same code the diff service uses.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use berth_api::berth::services::unpack::v1::{
    unpack_server::{Unpack, UnpackServer},
    UnpackProgress, UnpackRequest,
};
use berth_archive::{ApplyOptions, WhiteoutMode, XattrPrefix};
use berth_content_store::ContentStore;
use berth_grpc::namespace_required;
use berth_metadata::Descriptor;
use berth_metadata::{BlobInfo, MetadataDb};
use berth_plugin::{types, Classify, ErrorKind, Registration};
use berth_snapshots::{NewSnapshot, Snapshots};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("{0}: not found")]
    NotFound(String),
    #[error("{0}: invalid argument")]
    Invalid(String),
    #[error("{0}")]
    Other(String),
    /// A store's error, kept with its kind so the client gets containerd's code.
    #[error("{message}")]
    Classified { kind: ErrorKind, message: String },
}

fn err<E: Classify>(e: E) -> UnpackError {
    UnpackError::Classified {
        kind: e.kind(),
        message: e.to_string(),
    }
}

impl Classify for UnpackError {
    fn kind(&self) -> ErrorKind {
        match self {
            UnpackError::NotFound(_) => ErrorKind::NotFound,
            UnpackError::Invalid(_) => ErrorKind::InvalidArgument,
            UnpackError::Other(_) => ErrorKind::Internal,
            UnpackError::Classified { kind, .. } => *kind,
        }
    }
}

struct Ctx {
    db: Arc<MetadataDb>,
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshots>,
}

struct UnpackService {
    ctx: Arc<Ctx>,
}

/// The `io.containerd.grpc.v1.unpack` plugin (Berth's own service).
pub fn registration() -> Registration {
    Registration::new(
        types::GRPC,
        "unpack",
        &[types::METADATA, types::CONTENT, types::SERVICE],
        |ctx| {
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let content = ctx.get_as::<ContentStore>(types::CONTENT)?;
            // The shared namespaced instance: its snapshot events and the collector's wake-ups
            // happen for the unpacker's changes as for the snapshots service's.
            let snapshots = berth_snapshots::shared(ctx)?;
            let svc = UnpackServer::new(UnpackService {
                ctx: Arc::new(Ctx {
                    db,
                    content,
                    snapshots,
                }),
            });
            Ok(berth_grpc::grpc_service!(svc))
        },
    )
}

const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn host_platform() -> (String, String) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    ("linux".into(), arch.into())
}

struct Layer {
    desc: Descriptor,
    diff_id: String,
    chain_id: String,
}

impl Ctx {
    fn read_json(&self, ns: &str, digest: &str) -> Result<Value, UnpackError> {
        let (mut f, size) = self.content.open_reader(ns, digest).map_err(err)?;
        if size > 16 << 20 {
            return Err(UnpackError::Invalid(format!(
                "document {digest} is larger than 16 MiB"
            )));
        }
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf)
            .map_err(|e| UnpackError::Other(format!("read {digest}: {e}")))?;
        serde_json::from_slice(&buf)
            .map_err(|e| UnpackError::Invalid(format!("{digest} is not JSON: {e}")))
    }

    /// The image's layers for `platform`, with diff_ids and chain IDs.
    fn layers(
        &self,
        ns: &str,
        image: &str,
        platform: &(String, String, String),
    ) -> Result<(String, Vec<Layer>), UnpackError> {
        let img = self.db.get_image(ns, image).map_err(err)?;
        let mut doc = self.read_json(ns, &img.target.digest)?;
        let mut depth = 0;
        while INDEX_TYPES.contains(&doc["mediaType"].as_str().unwrap_or(""))
            || doc.get("manifests").is_some()
        {
            depth += 1;
            if depth > 4 {
                return Err(UnpackError::Invalid(
                    "image index nesting is too deep".into(),
                ));
            }
            let chosen = doc["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| {
                    let p = &m["platform"];
                    p["os"].as_str() == Some(platform.0.as_str())
                        && p["architecture"].as_str() == Some(platform.1.as_str())
                        && (platform.2.is_empty()
                            || p["variant"].as_str() == Some(platform.2.as_str()))
                })
                .and_then(|m| m["digest"].as_str().map(str::to_owned))
                .ok_or_else(|| {
                    UnpackError::NotFound(format!(
                        "no manifest for {}/{} in image {image:?}",
                        platform.0, platform.1
                    ))
                })?;
            doc = self.read_json(ns, &chosen)?;
        }
        let config_digest = doc["config"]["digest"]
            .as_str()
            .ok_or_else(|| UnpackError::Invalid("manifest has no config".into()))?
            .to_owned();
        let config = self.read_json(ns, &config_digest)?;
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_owned))
            .collect();
        let blobs = doc["layers"].as_array().cloned().unwrap_or_default();
        if blobs.len() != diff_ids.len() {
            return Err(UnpackError::Invalid(
                "mismatched image rootfs and manifest layers".into(),
            ));
        }
        let mut out = Vec::new();
        let mut chain: Option<String> = None;
        for (b, diff_id) in blobs.iter().zip(diff_ids) {
            let chain_id = match &chain {
                None => diff_id.clone(),
                Some(p) => format!(
                    "sha256:{}",
                    hex::encode(Sha256::digest(format!("{p} {diff_id}").as_bytes()))
                ),
            };
            chain = Some(chain_id.clone());
            out.push(Layer {
                desc: Descriptor {
                    media_type: b["mediaType"].as_str().unwrap_or_default().to_owned(),
                    digest: b["digest"].as_str().unwrap_or_default().to_owned(),
                    size: b["size"].as_i64().unwrap_or(0),
                    annotations: Default::default(),
                },
                diff_id,
                chain_id,
            });
        }
        Ok((config_digest, out))
    }
}

fn progress(
    l: &Layer,
    state: &str,
    index: usize,
    total: usize,
    bytes: i64,
    parallel: bool,
) -> UnpackProgress {
    UnpackProgress {
        chain_id: l.chain_id.clone(),
        layer: l.desc.digest.clone(),
        state: state.into(),
        index: index as i32,
        total: total as i32,
        bytes,
        parallel,
    }
}

fn unique() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{n:x}-{}", std::process::id())
}

/// Removes staged directories that were not adopted.
struct StagedDirs(Vec<PathBuf>);

impl Drop for StagedDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            if d.exists() {
                let _ = std::fs::remove_dir_all(d);
            }
        }
    }
}

async fn unpack(
    ctx: Arc<Ctx>,
    ns: String,
    req: UnpackRequest,
    tx: mpsc::Sender<Result<UnpackProgress, Status>>,
) -> Result<(), UnpackError> {
    let sn = if req.snapshotter.is_empty() {
        "overlayfs".to_owned()
    } else {
        req.snapshotter.clone()
    };
    let platform = if req.platform.is_empty() {
        let (os, arch) = host_platform();
        (os, arch, String::new())
    } else {
        let mut parts = req.platform.splitn(3, '/');
        (
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
            parts.next().unwrap_or_default().to_owned(),
        )
    };
    let blocking = |f: Box<dyn FnOnce() -> Result<(), UnpackError> + Send>| async move {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| UnpackError::Other(format!("unpack task: {e}")))?
    };
    let c = ctx.clone();
    let (image, ns2, plat) = (req.image.clone(), ns.clone(), platform.clone());
    let (config_digest, layers) =
        tokio::task::spawn_blocking(move || c.layers(&ns2, &image, &plat))
            .await
            .map_err(|e| UnpackError::Other(e.to_string()))??;
    let layers = Arc::new(layers);

    // A lease holds everything made here until the config's label takes over.
    let lease = format!("berth-unpack-{}", unique());
    let expire = BTreeMap::from([(berth_metadata::EXPIRE_LABEL.to_owned(), {
        let t = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
        let secs = t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        rfc3339(secs)
    })]);
    ctx.db.create_lease(&ns, &lease, expire).map_err(err)?;
    let result = stack(&ctx, &ns, &sn, &lease, &layers, &tx).await;
    if result.is_ok() {
        if let Some(top) = layers.last() {
            let label = format!(
                "containerd.io/gc.ref.snapshot.{}",
                berth_snapshots::canonical(&sn)
            );
            let info = BlobInfo {
                digest: config_digest.clone(),
                labels: BTreeMap::from([(label.clone(), top.chain_id.clone())]),
                ..Default::default()
            };
            let (c, ns2) = (ctx.clone(), ns.clone());
            blocking(Box::new(move || {
                c.content
                    .update(&ns2, &info, &[format!("labels.{label}")])
                    .map(|_| ())
                    .map_err(err)
            }))
            .await?;
        }
    }
    if let Err(e) = ctx.db.delete_lease(&ns, &lease) {
        tracing::warn!(error = %e, "cannot delete unpack lease; it expires on its own");
    }
    result
}

fn rfc3339(secs: u64) -> String {
    let secs = secs as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

async fn stack(
    ctx: &Arc<Ctx>,
    ns: &str,
    sn: &str,
    lease: &str,
    layers: &Arc<Vec<Layer>>,
    tx: &mpsc::Sender<Result<UnpackProgress, Status>>,
) -> Result<(), UnpackError> {
    let total = layers.len();
    // Layers already unpacked: a chain ID present means everything below it is too.
    let mut start = 0;
    for (i, l) in layers.iter().enumerate().rev() {
        if ctx
            .db
            .get_snapshot_record(ns, berth_snapshots::canonical(sn), &l.chain_id)
            .is_ok()
        {
            start = i + 1;
            break;
        }
    }
    for (i, l) in layers.iter().enumerate().take(start) {
        let _ = tx
            .send(Ok(progress(l, "present", i, total, 0, false)))
            .await;
    }
    if start == total {
        return Ok(());
    }
    let staging = ctx.snapshots.staging(sn).map_err(err)?;
    let parallel = staging.is_some();
    let mut staged = StagedDirs(Vec::new());

    // Extract every missing layer at once into staging (overlay), or nothing ahead (others).
    let mut extracted: Vec<Option<(PathBuf, berth_archive::ApplyStats)>> =
        (0..total).map(|_| None).collect();
    if let Some(staging) = &staging {
        std::fs::create_dir_all(&staging.dir)
            .map_err(|e| UnpackError::Other(format!("staging: {e}")))?;
        let workers = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(1);
        let sem = Arc::new(tokio::sync::Semaphore::new(workers));
        let mut tasks = Vec::new();
        for i in start..total {
            let dir = staging.dir.join(format!("{}-{i}", unique()));
            staged.0.push(dir.clone());
            let (c, ns, layers, sem) = (ctx.clone(), ns.to_owned(), layers.clone(), sem.clone());
            let prefix = if staging.userxattr {
                XattrPrefix::User
            } else {
                XattrPrefix::Trusted
            };
            tasks.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                tokio::task::spawn_blocking(
                    move || -> Result<(PathBuf, berth_archive::ApplyStats), UnpackError> {
                        let l = &layers[i];
                        std::fs::create_dir(&dir).map_err(|e| {
                            UnpackError::Other(format!("staging {}: {e}", dir.display()))
                        })?;
                        let (f, _) = c.content.open_reader(&ns, &l.desc.digest).map_err(err)?;
                        let r = berth_archive::decompress(
                            std::io::BufReader::with_capacity(1 << 20, f),
                            &l.desc.media_type,
                        )
                        .map_err(err)?;
                        let opts = ApplyOptions {
                            whiteouts: WhiteoutMode::Overlay {
                                xattr_prefix: prefix,
                            },
                            allow_devices: true,
                            expected_diff_id: Some(l.diff_id.clone()),
                            ..Default::default()
                        };
                        let stats = berth_archive::apply(r, &dir, &opts).map_err(err)?;
                        Ok((dir, stats))
                    },
                )
                .await
                .map_err(|e| UnpackError::Other(format!("extract task: {e}")))?
            }));
        }
        for (n, t) in tasks.into_iter().enumerate() {
            let i = start + n;
            let r = t
                .await
                .map_err(|e| UnpackError::Other(format!("extract task: {e}")))??;
            let _ = tx
                .send(Ok(progress(
                    &layers[i],
                    "extracted",
                    i,
                    total,
                    r.1.size as i64,
                    true,
                )))
                .await;
            extracted[i] = Some(r);
        }
        // Implied directories take their metadata from the layers below, nearest first: the
        // staged ones of this unpack, then those already unpacked (read from a view's lowers).
        let mut below: Vec<PathBuf> = Vec::new();
        if start > 0 {
            below = existing_layer_dirs(ctx, ns, sn, &layers[start - 1].chain_id)?;
        }
        for (dir, stats) in extracted[start..].iter().flatten() {
            if !stats.implied_dirs.is_empty() {
                let parents: Vec<PathBuf> = below.iter().rev().cloned().collect();
                berth_archive::inherit_dir_metadata(dir, &stats.implied_dirs, &parents)
                    .map_err(err)?;
            }
            below.push(dir.clone());
        }
    }

    // Stack in order.
    for i in start..total {
        let l = &layers[i];
        let parent = if i == 0 {
            String::new()
        } else {
            layers[i - 1].chain_id.clone()
        };
        let key = format!("extract-{}-{}", unique(), l.chain_id);
        let new = NewSnapshot {
            key: key.clone(),
            parent,
            labels: BTreeMap::new(),
            view: false,
        };
        let (c, ns2, sn2, lease2) = (ctx.clone(), ns.to_owned(), sn.to_owned(), lease.to_owned());
        let staged_dir = extracted[i].as_ref().map(|(d, _)| d.clone());
        let desc = l.desc.clone();
        let diff_id = l.diff_id.clone();
        let chain_id = l.chain_id.clone();
        let bytes = tokio::task::spawn_blocking(move || -> Result<i64, UnpackError> {
            let bytes = match staged_dir {
                Some(dir) => {
                    c.snapshots
                        .prepare_adopt(&ns2, &sn2, Some(&lease2), new, &dir)
                        .map_err(err)?;
                    0
                }
                None => {
                    let mounts = c
                        .snapshots
                        .prepare(&ns2, &sn2, Some(&lease2), new)
                        .map_err(err)?;
                    let applied = berth_diff::apply_layer(&c.content, &ns2, &desc, mounts, false)
                        .map_err(err);
                    match applied {
                        Ok(a) if a.digest == diff_id => a.size,
                        Ok(a) => {
                            let _ = c.snapshots.remove(&ns2, &sn2, &key);
                            return Err(UnpackError::Invalid(format!(
                                "wrong diff id calculated on extraction {:?}, expected {diff_id:?}",
                                a.digest
                            )));
                        }
                        Err(e) => {
                            let _ = c.snapshots.remove(&ns2, &sn2, &key);
                            return Err(e);
                        }
                    }
                }
            };
            match c
                .snapshots
                .commit(&ns2, &sn2, &chain_id, &key, BTreeMap::new(), Some(&lease2))
            {
                Ok(()) => Ok(bytes),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    // Unpacked meanwhile by someone else: theirs is as good as ours.
                    let _ = c.snapshots.remove(&ns2, &sn2, &key);
                    Ok(bytes)
                }
                Err(e) => {
                    let _ = c.snapshots.remove(&ns2, &sn2, &key);
                    Err(err(e))
                }
            }
        })
        .await
        .map_err(|e| UnpackError::Other(format!("stack task: {e}")))??;
        let _ = tx
            .send(Ok(progress(l, "committed", i, total, bytes, parallel)))
            .await;
    }
    Ok(())
}

/// The layer directories of an unpacked chain, bottom first, read from a temporary view's mounts.
fn existing_layer_dirs(
    ctx: &Ctx,
    ns: &str,
    sn: &str,
    chain_id: &str,
) -> Result<Vec<PathBuf>, UnpackError> {
    let key = format!("probe-{}", unique());
    let new = NewSnapshot {
        key: key.clone(),
        parent: chain_id.to_owned(),
        labels: BTreeMap::new(),
        view: true,
    };
    let mounts = ctx.snapshots.prepare(ns, sn, None, new).map_err(err)?;
    let _ = ctx.snapshots.remove(ns, sn, &key);
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match m.overlay_options() {
            Some(overlay) => dirs.extend(overlay.lowerdirs),
            None => dirs.push(PathBuf::from(m.source)),
        }
    }
    dirs.reverse(); // lowerdir lists nearest first
    Ok(dirs)
}

type ProgressStream = Pin<Box<dyn Stream<Item = Result<UnpackProgress, Status>> + Send>>;

#[tonic::async_trait]
impl Unpack for UnpackService {
    type UnpackStream = ProgressStream;

    #[tracing::instrument(skip_all, fields(image = %req.get_ref().image, snapshotter = %req.get_ref().snapshotter))]
    async fn unpack(
        &self,
        req: Request<UnpackRequest>,
    ) -> Result<Response<Self::UnpackStream>, Status> {
        let ns = namespace_required(&req)?;
        let req = req.into_inner();
        if req.image.is_empty() {
            return Err(Status::invalid_argument(
                "image must be set: invalid argument",
            ));
        }
        let (tx, rx) = mpsc::channel(16);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let image = req.image.clone();
            if let Err(e) = unpack(ctx, ns, req, tx.clone()).await {
                tracing::warn!(error = %e, %image, "unpack failed");
                let _ = tx.send(Err(berth_grpc::to_status(&e))).await;
            } else {
                tracing::info!(%image, ms = started.elapsed().as_millis() as u64, "unpacked");
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
