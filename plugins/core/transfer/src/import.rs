//! Import: an image archive streamed in by the client, into the image store, unpacked
//! (containerd's `core/transfer/local/import.go`).
//!
//! Under a lease: the archive's files go into the content store as they arrive
//! (`berth-image-archive`'s importer), then the walk from its index labels every document with
//! its children (`containerd.io/gc.ref.content.*`, all children as containerd 2.x labels them)
//! and keeps the children of the wanted platforms; the manifests reached are unpacked for each
//! unpack configuration; only then are the image records written, named as containerd's image
//! store names them (the index by the store's name, each manifest of the index from its own
//! annotations through the store's prefix references). A failure at any step leaves no image
//! record, and what was written is the lease's, freed when it ends.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, Instant};

use berth_content_store::ContentError;
use berth_image_archive::{import, read_document, ImportOptions, Importer};
use berth_metadata::{Descriptor as MetaDescriptor, Image};
use berth_oci::{document, media, Descriptor, Matcher};
use tokio::sync::mpsc;
use tracing::Instrument as _;

use crate::jobs::{host_can_unpack, status};
use crate::pull::{ref_key, size_i64};
use crate::store::{meta_descriptor, oci_descriptor, REF_SOURCE, REF_SOURCE_ANNOTATION};
use crate::{ImageStore, Progress, ProgressFn, TransferError, Transferrer, UnpackConfig};

/// How long an import's or export's lease lives if berthd dies before deleting it
/// (containerd's transfer service gives its leases a day).
pub(crate) const ARCHIVE_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Indexes inside indexes deeper than this are refused (a loop or a hostile archive).
const MAX_DEPTH: usize = 5;
/// After the end of the tar archive, at most this much more of the stream is read, so a sender
/// that pads its archive (GNU tar writes whole 10 KiB records) finishes sending cleanly.
const DRAIN_LIMIT: u64 = 1 << 20;

/// An archive to import (containerd's `ImageImportStream`).
pub struct ImportStream {
    /// The archive's bytes; read on a blocking thread.
    pub reader: Box<dyn Read + Send>,
    /// The archive's media type as the client gave it (containerd decompresses only when it is
    /// empty; Berth always sniffs: a tar never starts like a compressed stream).
    pub media_type: String,
    /// gzip-compress the uncompressed layers of a docker archive.
    pub force_compress: bool,
}

impl std::fmt::Debug for ImportStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImportStream")
            .field("media_type", &self.media_type)
            .field("force_compress", &self.force_compress)
            .finish_non_exhaustive()
    }
}

/// What the walk from the archive's index found.
struct Walked {
    /// The descriptors the image store may name: the index, then each manifest it lists (all
    /// of them, filtered or not, as containerd's import), those marked with [`REF_SOURCE`].
    records: Vec<MetaDescriptor>,
    /// The image manifests reached (platform-filtered), to unpack.
    manifests: Vec<Descriptor>,
    /// The layers reached, with the key of the manifest that named them (for progress).
    layers: HashMap<String, (Descriptor, String)>,
}

/// A name for a manifest in logs and errors: its image name, else its digest.
fn manifest_name(d: &Descriptor) -> String {
    let a = d.annotations().clone().unwrap_or_default();
    a.get(berth_oci::ANNOTATION_IMAGE_NAME)
        .or_else(|| a.get(berth_oci::ANNOTATION_REF_NAME))
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| d.digest().to_string())
}

impl Transferrer {
    /// Imports the archive `src` into the image store as `dst` says, in namespace `ns`; returns
    /// the images recorded.
    #[tracing::instrument(skip_all, fields(ns = %ns))]
    pub async fn import(
        &self,
        ns: &str,
        src: ImportStream,
        dst: &ImageStore,
        progress: ProgressFn,
    ) -> Result<Vec<Image>, TransferError> {
        // A job of its own: when the client goes away (its RPC dropped), the archive stream
        // ends, and the job still fails cleanly and deletes its lease.
        let (this, ns, dst) = (self.clone(), ns.to_owned(), dst.clone());
        tokio::spawn(
            async move { this.import_job(&ns, src, &dst, progress).await }.in_current_span(),
        )
        .await?
    }

    async fn import_job(
        &self,
        ns: &str,
        src: ImportStream,
        dst: &ImageStore,
        progress: ProgressFn,
    ) -> Result<Vec<Image>, TransferError> {
        let lease = self.begin_lease(ns, "import", ARCHIVE_LEASE_TTL).await?;
        status(&progress, "Importing");
        let started = Instant::now();
        let result = self.import_leased(ns, &lease, src, dst, &progress).await;
        self.end_lease(ns, &lease, "import").await;
        let images = result?;
        status(&progress, "Completed import");
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(images = images.len(), ms, "imported");
        Ok(images)
    }

    async fn import_leased(
        &self,
        ns: &str,
        lease: &str,
        src: ImportStream,
        dst: &ImageStore,
        progress: &ProgressFn,
    ) -> Result<Vec<Image>, TransferError> {
        // The archive into the content store.
        let index = {
            let (content, ns, lease) = (self.content.clone(), ns.to_owned(), lease.to_owned());
            let mut reader = src.reader;
            let options = ImportOptions {
                force_compress: src.force_compress,
            };
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || -> Result<Descriptor, TransferError> {
                let _in = span.enter();
                let index = Importer {
                    content: &content,
                    ns: &ns,
                    lease: &lease,
                    options,
                }
                .import(&mut reader)?;
                if let Err(e) = import::drain(&mut reader, DRAIN_LIMIT) {
                    tracing::debug!(error = %e, "reading past the end of the archive");
                }
                Ok(index)
            })
            .await??
        };
        tracing::debug!(index = %index.digest(), "archive stored");

        // Labels and the platform filter, from the index down.
        let walked = {
            let (this, ns, lease, dst, index) = (
                self.clone(),
                ns.to_owned(),
                lease.to_owned(),
                dst.clone(),
                index.clone(),
            );
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| this.walk_import(&ns, &lease, &index, &dst))
            })
            .await??
        };

        // Unpacked before any image is recorded: a failed unpack leaves no image behind.
        for u in &dst.unpacks {
            for m in &walked.manifests {
                self.unpack_manifest(ns, m, u, &walked.layers, progress)
                    .await?;
            }
        }

        let (this, ns_owned, dst_owned) = (self.clone(), ns.to_owned(), dst.clone());
        let records = walked.records;
        let span = tracing::Span::current();
        let stored = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            let mut out = Vec::new();
            for r in &records {
                match this.store_images(&ns_owned, &dst_owned, r) {
                    Ok(imgs) => out.extend(imgs.into_iter().map(|i| (i, r.clone()))),
                    // containerd's "No images store for": a descriptor nothing names.
                    Err(TransferError::NoImageName) => {
                        tracing::debug!(digest = %r.digest, "no image name for it");
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, TransferError>(out)
        })
        .await??;
        let mut images = Vec::with_capacity(stored.len());
        for (img, desc) in stored {
            let mut desc = desc;
            desc.annotations.remove(REF_SOURCE);
            progress(Progress {
                event: "saved".into(),
                name: img.name.clone(),
                desc: oci_descriptor(&desc),
                ..Default::default()
            });
            images.push(img);
        }
        Ok(images)
    }

    /// containerd's walk of an import: the root index names the records (its manifests marked
    /// [`REF_SOURCE`]); every document is labelled with all its children; children of other
    /// platforms than the store's (all, when it names none) are not walked; `manifest_limit`
    /// keeps the best of an index's manifests. Blocks.
    fn walk_import(
        &self,
        ns: &str,
        lease: &str,
        index: &Descriptor,
        dst: &ImageStore,
    ) -> Result<Walked, TransferError> {
        let matcher = if dst.platforms.is_empty() {
            Matcher::all()
        } else {
            Matcher::ordered(&dst.platforms)
        };
        let limit = usize::try_from(dst.manifest_limit).unwrap_or(usize::MAX);
        let mut walked = Walked {
            records: vec![meta_descriptor(index)],
            manifests: Vec::new(),
            layers: HashMap::new(),
        };
        let mut seen: HashSet<String> = HashSet::new();
        let mut any_children = false;
        let mut stack = vec![(index.clone(), 0usize)];
        while let Some((desc, depth)) = stack.pop() {
            let mt = desc.media_type().to_string();
            if !document::has_children(&mt) {
                continue;
            }
            let digest = desc.digest().to_string();
            if media::is_index_type(&mt) && depth >= MAX_DEPTH {
                return Err(TransferError::TooDeep {
                    what: "index",
                    digest,
                    limit: MAX_DEPTH,
                });
            }
            if !self.content.hold_if_present(ns, &digest, Some(lease))? {
                return Err(TransferError::MissingContent {
                    image: manifest_name(&desc),
                    digest,
                });
            }
            let bytes = read_document(&self.content, ns, &digest)?;
            let bad = |source| TransferError::Document {
                digest: digest.clone(),
                source,
            };
            let children = if depth == 0 {
                // The archive's index: whatever its bytes say it is, it is read as an index.
                let idx = document::parse_index(&bytes, media::OCI_INDEX).map_err(bad)?;
                for m in idx.manifests() {
                    let mut record = meta_descriptor(m);
                    record
                        .annotations
                        .insert(REF_SOURCE.to_owned(), REF_SOURCE_ANNOTATION.to_owned());
                    walked.records.push(record);
                }
                idx.manifests().clone()
            } else {
                document::children(&desc, &bytes).map_err(bad)?
            };
            if media::is_manifest_type(&mt) && seen.insert(digest.clone()) {
                walked.manifests.push(desc.clone());
                for l in &children {
                    if media::is_layer_type(l.media_type().as_ref()) {
                        walked
                            .layers
                            .entry(l.digest().to_string())
                            .or_insert_with(|| (l.clone(), ref_key(&desc)));
                    }
                }
            }
            if !children.is_empty() {
                self.label_children(ns, &digest, &children)?;
            }
            let mut kept: Vec<Descriptor> = children
                .into_iter()
                .filter(|d| d.platform().as_ref().is_none_or(|p| matcher.matches(p)))
                .collect();
            if limit > 0 && media::is_index_type(&mt) {
                matcher.sort(&mut kept, |d| d.platform().as_ref());
                kept.truncate(limit);
            }
            if !kept.is_empty() {
                any_children = true;
            }
            // Reversed onto the stack, so they are walked in order (depth first).
            stack.extend(kept.into_iter().rev().map(|c| (c, depth + 1)));
        }
        if !any_children {
            return Err(TransferError::FilteredOut);
        }
        Ok(walked)
    }

    /// containerd's `SetChildrenMappedLabels`: the document `digest` references each child
    /// with `containerd.io/gc.ref.content.*`, which the collector follows from the image.
    fn label_children(
        &self,
        ns: &str,
        digest: &str,
        children: &[Descriptor],
    ) -> Result<(), ContentError> {
        let labels: BTreeMap<String, String> =
            document::children_gc_labels(children).into_iter().collect();
        let mut info = self.content.info(ns, digest)?;
        if labels.iter().all(|(k, v)| info.labels.get(k) == Some(v)) {
            return Ok(());
        }
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        info.labels = labels;
        self.content.update(ns, &info, &paths)?;
        Ok(())
    }

    /// Unpacks one imported manifest for one unpack configuration, with extraction progress.
    /// A manifest of another platform than the configuration's is skipped, as containerd's
    /// unpacker skips it.
    async fn unpack_manifest(
        &self,
        ns: &str,
        manifest: &Descriptor,
        u: &UnpackConfig,
        layers: &HashMap<String, (Descriptor, String)>,
        progress: &ProgressFn,
    ) -> Result<(), TransferError> {
        if !host_can_unpack(u) {
            return Ok(());
        }
        let image = manifest_name(manifest);
        let snapshotter = if u.snapshotter.is_empty() {
            "overlayfs".to_owned()
        } else {
            u.snapshotter.clone()
        };
        let req = berth_unpack::Request {
            namespace: ns.to_owned(),
            image: image.clone(),
            snapshotter: u.snapshotter.clone(),
            platform: u.platform.clone(),
            target: Some(meta_descriptor(manifest)),
            gate: None,
        };
        let started = Instant::now();
        let (tx, mut rx) = mpsc::channel::<berth_unpack::Progress>(16);
        let forward = async {
            while let Some(p) = rx.recv().await {
                let Some((layer, parent)) = layers.get(&p.layer.to_string()) else {
                    continue;
                };
                let event = match p.state {
                    berth_unpack::LayerState::Present => continue,
                    berth_unpack::LayerState::Extracted => "extracting",
                    berth_unpack::LayerState::Committed => "extracted",
                };
                progress(Progress {
                    event: event.to_owned(),
                    name: ref_key(layer),
                    parents: vec![parent.clone()],
                    progress: size_i64(layer),
                    total: size_i64(layer),
                    desc: Some(layer.clone()),
                });
            }
        };
        let (result, ()) = tokio::join!(self.unpacker.unpack(req, tx), forward);
        match result {
            Ok(done) => {
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                // The unpacker's target, as the unpack service's line has: `RUST_LOG=
                // berth_unpack=…` follows unpacks in the daemon whoever asked for them.
                tracing::info!(
                    target: "berth_unpack",
                    %image,
                    %snapshotter,
                    chain_id = %done.chain_id,
                    layers = done.layers,
                    ms,
                    "unpacked"
                );
                Ok(())
            }
            // Another platform's manifest, or one that is not a runnable image (no layers, an
            // artifact's config): nothing to unpack, as containerd's unpacker passes them by.
            Err(
                e @ (berth_unpack::UnpackError::NoMatchingManifest { .. }
                | berth_unpack::UnpackError::NoLayers { .. }
                | berth_unpack::UnpackError::NotAConfig { .. }),
            ) => {
                tracing::debug!(%image, %snapshotter, reason = %e, "not unpacked");
                Ok(())
            }
            Err(source) => Err(TransferError::Unpack {
                image,
                snapshotter,
                source: Box::new(source),
            }),
        }
    }
}
