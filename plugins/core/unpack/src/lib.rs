//! Berth's unpacker: an image's layers stacked into snapshots under their chain IDs, in the
//! daemon. The `berth.services.unpack.v1` service is a thin gRPC front on it.
//!
//! 1. **Resolve** ([`Unpacker::resolve`]): the image record's target is read from the content
//!    store; indexes are walked to the manifest of the wanted platform (containerd's matching:
//!    see [`berth_oci::Matcher`]); the config gives the diff_ids, which give the chain IDs.
//! 2. **Lease**: everything made from here is held by a lease until the config's label holds it.
//! 3. **Stack**: layers whose chain ID already exists are skipped. containerd's client unpacks one
//!    layer after the other, since each is extracted on top of its parent. On overlayfs that is
//!    not so: a layer's snapshot directory holds only that layer, in overlay's whiteout format,
//!    whatever lies below. So every missing layer is extracted (decompressed, hashed against its
//!    diff_id) at once, each into its own directory under the driver's staging area, then they
//!    are stacked in order: prepare on the parent, adopt the staged directory as the upper (a
//!    rename), commit under the chain ID. Directories a layer only implies get their metadata from
//!    the layers below. Drivers without staging (native) are unpacked layer by layer through the
//!    differ's `apply_layer`, as the diff service does.
//! 4. **Label** the config `containerd.io/gc.ref.snapshot.<snapshotter>` = the top chain ID (what
//!    `ctr images check` and the collector follow), then drop the lease.
//!
//! All of a job's work blocks (redb transactions, directories, extraction), so [`Unpacker::unpack`]
//! runs it on one blocking thread and extraction on threads that job starts; progress comes back
//! over a channel. [`Unpacker::unpack_blocking`] is the same job for callers already on a blocking
//! thread.

mod error;
mod gate;
mod resolve;
mod stack;

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_content_store::ContentStore;
use berth_metadata::{BlobInfo, MetadataDb};
use berth_oci::{platform, Digest, Matcher, Platform};
use berth_snapshots::Snapshots;
use tokio::sync::mpsc;

pub use error::UnpackError;
pub use gate::LayerGate;
pub use resolve::{Layer, ResolvedImage, MAX_DOCUMENT_SIZE, MAX_INDEX_DEPTH};

/// How long the unpack lease lives if berthd dies before deleting it.
const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// An image to unpack.
#[derive(Debug, Clone)]
pub struct Request {
    pub namespace: String,
    /// Image name, as the images store knows it.
    pub image: String,
    /// Snapshotter to unpack into; empty for overlayfs.
    pub snapshotter: String,
    /// Whose manifest to unpack: this platform and what it also runs (containerd's `Only`);
    /// `None` for this machine's.
    pub platform: Option<Platform>,
    /// The image's target when it is not recorded yet (a pull records the image only once it
    /// is whole); `None` to look `image` up in the images store.
    pub target: Option<berth_metadata::Descriptor>,
    /// Set by a pull that unpacks while it downloads: each layer waits at the gate until its
    /// blob is in; `None` when every blob is already there.
    pub gate: Option<std::sync::Arc<LayerGate>>,
}

impl Request {
    /// `spec` (`os/arch[/variant]`, or empty for this machine's) as a request's platform.
    pub fn parse_platform(spec: &str) -> Result<Option<Platform>, UnpackError> {
        if spec.is_empty() {
            return Ok(None);
        }
        platform::parse(spec)
            .map(Some)
            .map_err(|source| UnpackError::InvalidPlatform {
                spec: spec.to_owned(),
                source,
            })
    }

    fn matcher(&self) -> Matcher {
        match &self.platform {
            Some(p) => Matcher::only(p),
            None => Matcher::host(),
        }
    }

    fn snapshotter(&self) -> &str {
        if self.snapshotter.is_empty() {
            "overlayfs"
        } else {
            &self.snapshotter
        }
    }
}

/// What happened to one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerState {
    /// Its chain ID was already unpacked.
    Present,
    /// Extracted into staging (drivers with staging only; may come in any order).
    Extracted,
    /// Committed under its chain ID.
    Committed,
}

impl LayerState {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerState::Present => "present",
            LayerState::Extracted => "extracted",
            LayerState::Committed => "committed",
        }
    }
}

/// Progress of one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub chain_id: Digest,
    /// The layer blob's digest.
    pub layer: Digest,
    pub state: LayerState,
    /// Position of the layer, bottom first, and the number of layers.
    pub index: usize,
    pub total: usize,
    /// Uncompressed bytes extracted (0 for present layers and adopted ones).
    pub bytes: u64,
    /// Whether the layer was extracted in parallel with the others.
    pub parallel: bool,
}

/// The result of an unpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub manifest: Digest,
    pub config: Digest,
    /// The chain ID of the top layer: the snapshot a container's rootfs is prepared on.
    pub chain_id: Digest,
    pub layers: usize,
}

/// See the crate documentation. Cheap to clone.
#[derive(Clone)]
pub struct Unpacker {
    db: Arc<MetadataDb>,
    content: Arc<ContentStore>,
    snapshots: Arc<Snapshots>,
}

impl Unpacker {
    /// An unpacker over the daemon's stores; `snapshots` is the one shared namespaced instance,
    /// so its events and the collector's wake-ups happen for the unpacker's changes too.
    pub fn new(db: Arc<MetadataDb>, content: Arc<ContentStore>, snapshots: Arc<Snapshots>) -> Self {
        Unpacker {
            db,
            content,
            snapshots,
        }
    }

    /// Unpacks on a blocking thread, sending progress to `progress` (a closed receiver is not
    /// an error: the job finishes anyway, so a client that went away leaves no half-made chain).
    pub async fn unpack(
        &self,
        req: Request,
        progress: mpsc::Sender<Progress>,
    ) -> Result<Unpacked, UnpackError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            this.unpack_blocking(&req, &|p| {
                let _ = progress.blocking_send(p);
            })
        })
        .await
        .map_err(UnpackError::Job)?
    }

    /// The whole job on the calling thread, which must be allowed to block.
    pub fn unpack_blocking(
        &self,
        req: &Request,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<Unpacked, UnpackError> {
        let (ns, sn) = (req.namespace.as_str(), req.snapshotter());
        let image = match &req.target {
            Some(target) => resolve::Resolver {
                db: &self.db,
                content: &self.content,
                ns,
            }
            .resolve_target(&req.image, target, &req.matcher())?,
            None => self.resolve(ns, &req.image, &req.matcher())?,
        };
        let top = match image.layers.last() {
            Some(l) => l.chain_id.clone(),
            // `resolve` refuses manifests without layers.
            None => {
                return Err(UnpackError::NoLayers {
                    manifest: image.manifest,
                })
            }
        };

        // A lease holds everything made here until the config's label takes over.
        let lease = format!("berth-unpack-{}", unique());
        self.db
            .create_lease(ns, &lease, berth_metadata::expiring_in(LEASE_TTL))?;
        let result = stack::Job {
            unpacker: self,
            ns,
            sn,
            lease: &lease,
            layers: &image.layers,
            gate: req.gate.as_deref(),
            progress,
        }
        .run()
        .and_then(|()| self.label_config(ns, sn, &image.config, &top));
        if let Err(e) = self.db.delete_lease(ns, &lease) {
            tracing::warn!(error = %e, %lease, "cannot delete unpack lease; it expires on its own");
        }
        result?;
        Ok(Unpacked {
            manifest: image.manifest,
            config: image.config,
            chain_id: top,
            layers: image.layers.len(),
        })
    }

    /// The layers of `image` in namespace `ns` for the most preferred platform `matcher`
    /// accepts, with their chain IDs. Blocks (reads the metadata and content stores).
    pub fn resolve(
        &self,
        ns: &str,
        image: &str,
        matcher: &Matcher,
    ) -> Result<ResolvedImage, UnpackError> {
        resolve::Resolver {
            db: &self.db,
            content: &self.content,
            ns,
        }
        .resolve(image, matcher)
    }

    /// `containerd.io/gc.ref.snapshot.<snapshotter>` = `chain_id` on the config.
    fn label_config(
        &self,
        ns: &str,
        sn: &str,
        config: &Digest,
        chain_id: &Digest,
    ) -> Result<(), UnpackError> {
        let label = format!(
            "{}{}",
            berth_oci::LABEL_GC_REF_SNAPSHOT,
            berth_snapshots::canonical(sn)
        );
        let info = BlobInfo {
            digest: config.to_string(),
            labels: BTreeMap::from([(label.clone(), chain_id.to_string())]),
            ..Default::default()
        };
        self.content
            .update(ns, &info, &[format!("labels.{label}")])?;
        Ok(())
    }
}

/// A name part unique to this moment and process.
pub(crate) fn unique() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{n:x}-{}", std::process::id())
}

#[cfg(test)]
mod tests;
