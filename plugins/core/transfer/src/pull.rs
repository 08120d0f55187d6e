//! Pull: a registry's image into the image store, unpacked (containerd's
//! `core/transfer/local/pull.go`).
//!
//! The walk fetches documents one after the other (an index names its manifests, a manifest its
//! blobs), then the blobs go in parallel. Documents are labelled with their children
//! (`containerd.io/gc.ref.content.*`) when they are written, so once the image record exists
//! the collector keeps everything through it; until then the pull's lease does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_content_store::{ContentError, ContentStore};
use berth_metadata::Image;
use berth_oci::{document, media, Descriptor, Matcher};
use berth_remotes::{
    copy_blob_to_ingest, hosts, ClientConfig, CopyOutcome, CredentialSource, IngestTarget,
    Reference, RegistryClient, RegistryHost, RemoteError, Repository,
};
use futures::TryStreamExt;
use tokio::sync::mpsc;

use crate::jobs::host_can_unpack;
use crate::store::meta_descriptor;
use crate::{ImageStore, Progress, ProgressFn, RegistrySource, TransferError, Transferrer};

/// How long the pull's lease lives if berthd dies before deleting it.
const LEASE_TTL: Duration = Duration::from_secs(3600);
/// Indexes inside indexes deeper than this are refused (a loop or a hostile registry).
const MAX_DEPTH: usize = 5;
/// At most one `downloading` event per blob in this interval: enough for a live display,
/// few enough that progress never costs more than the download.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// containerd's name for a descriptor in progress events and ingest refs: `<kind>-<digest>`.
pub(crate) fn ref_key(desc: &Descriptor) -> String {
    IngestTarget::for_descriptor("", desc, None).reference
}

pub(crate) fn size_i64(desc: &Descriptor) -> i64 {
    i64::try_from(desc.size()).unwrap_or(i64::MAX)
}

/// One pull in progress: what every step needs.
struct Job<'a> {
    engine: &'a Transferrer,
    ns: String,
    lease: String,
    reference: String,
    repo: Repository,
    matcher: Matcher,
    manifest_limit: usize,
    progress: ProgressFn,
}

/// A blob to download and the key of the manifest that named it.
struct Blob {
    desc: Descriptor,
    parent: String,
}

impl Job<'_> {
    fn emit(&self, event: &str, desc: &Descriptor, parent: &str, progress: i64) {
        (self.progress)(Progress {
            event: event.to_owned(),
            name: ref_key(desc),
            parents: vec![parent.to_owned()],
            progress,
            total: size_i64(desc),
            desc: Some(desc.clone()),
        });
    }

    fn remote(&self, source: RemoteError) -> TransferError {
        TransferError::Remote {
            reference: self.reference.clone(),
            source,
        }
    }

    /// A document's bytes: from the content store when the namespace has it (the lease holds
    /// it from now on), else from the registry. `true` when it came from the store.
    async fn document(&self, desc: &Descriptor) -> Result<(Vec<u8>, bool), TransferError> {
        let digest = desc.digest().to_string();
        let content = self.engine.content.clone();
        let (ns, lease) = (self.ns.clone(), self.lease.clone());
        let local = tokio::task::spawn_blocking(move || -> Result<_, TransferError> {
            if !content.hold_if_present(&ns, &digest, Some(&lease))? {
                return Ok(None);
            }
            let (mut file, _) = content.open_reader(&ns, &digest)?;
            let mut buf = Vec::new();
            file.read_to_end(&mut buf)
                .map_err(|source| TransferError::Read { digest, source })?;
            Ok(Some(buf))
        })
        .await??;
        if let Some(bytes) = local {
            return Ok((bytes, true));
        }
        let bytes = self
            .repo
            .fetch_manifest(desc)
            .await
            .map_err(|e| self.remote(e))?;
        Ok((bytes.to_vec(), false))
    }

    /// Writes a fetched document (already verified) into the content store with its labels.
    async fn write_document(
        &self,
        desc: &Descriptor,
        bytes: Vec<u8>,
        labels: BTreeMap<String, String>,
    ) -> Result<(), TransferError> {
        let content = self.engine.content.clone();
        let (ns, lease) = (self.ns.clone(), self.lease.clone());
        let (key, digest, size) = (ref_key(desc), desc.digest().to_string(), size_i64(desc));
        tokio::task::spawn_blocking(move || {
            write_blob(&content, &ns, &lease, &key, &digest, size, &bytes, labels)
        })
        .await??;
        Ok(())
    }

    /// Sets `labels` on a document the namespace already has (its other labels stay).
    async fn add_labels(
        &self,
        desc: &Descriptor,
        labels: BTreeMap<String, String>,
    ) -> Result<(), TransferError> {
        if labels.is_empty() {
            return Ok(());
        }
        let content = self.engine.content.clone();
        let ns = self.ns.clone();
        let digest = desc.digest().to_string();
        tokio::task::spawn_blocking(move || -> Result<(), ContentError> {
            let mut info = content.info(&ns, &digest)?;
            if labels.iter().all(|(k, v)| info.labels.get(k) == Some(v)) {
                return Ok(());
            }
            let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
            info.labels = labels;
            content.update(&ns, &info, &paths)?;
            Ok(())
        })
        .await??;
        Ok(())
    }

    /// Walks from `root`: documents fetched and written, blobs to download returned.
    async fn walk(&self, root: &Descriptor, root_name: &str) -> Result<Vec<Blob>, TransferError> {
        let mut blobs = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = vec![(root.clone(), root_name.to_owned(), 0usize)];
        while let Some((desc, parent, depth)) = stack.pop() {
            let key = ref_key(&desc);
            let mt = desc.media_type().to_string();
            if mt == media::DOCKER_SCHEMA1_MANIFEST {
                return Err(TransferError::InvalidArgument(
                    "schema 1 image manifests are no longer supported".into(),
                ));
            }
            self.emit("waiting", &desc, &parent, 0);
            let (bytes, existed) = self.document(&desc).await?;
            let bad = |source| TransferError::Document {
                digest: desc.digest().to_string(),
                source,
            };
            let mut labels = BTreeMap::new();
            if media::is_index_type(&mt) {
                if depth >= MAX_DEPTH {
                    return Err(TransferError::TooDeep {
                        what: "index",
                        digest: desc.digest().to_string(),
                        limit: MAX_DEPTH,
                    });
                }
                let index = document::parse_index(&bytes, &mt).map_err(bad)?;
                let all: Vec<&Descriptor> = index
                    .manifests()
                    .iter()
                    .filter(|d| {
                        let t = d.media_type().to_string();
                        media::is_manifest_type(&t) || media::is_index_type(&t)
                    })
                    .collect();
                // Every child, chosen or not (containerd labels before it filters): a later
                // pull of another platform finds the index here and writes nothing to it, so
                // only these labels keep that platform's manifest once the lease is gone.
                for (i, c) in all.iter().enumerate() {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.m.{i}"),
                        c.digest().to_string(),
                    );
                }
                let mut children: Vec<Descriptor> = all
                    .into_iter()
                    .filter(|d| {
                        d.platform()
                            .as_ref()
                            .is_none_or(|p| self.matcher.matches(p))
                    })
                    .cloned()
                    .collect();
                // Stable: among equals the index's order stands (containerd's).
                self.matcher.sort(&mut children, |d| d.platform().as_ref());
                if self.manifest_limit > 0 {
                    children.truncate(self.manifest_limit);
                }
                if children.is_empty() {
                    return Err(self.remote(RemoteError::NoMatchingPlatform {
                        index: desc.digest().to_string(),
                        platforms: self
                            .matcher
                            .platforms()
                            .iter()
                            .map(berth_oci::platform::format)
                            .collect::<Vec<_>>()
                            .join(", "),
                    }));
                }
                // Reversed onto the stack, so they are fetched in the order chosen.
                for c in children.into_iter().rev() {
                    stack.push((c, key.clone(), depth + 1));
                }
            } else if media::is_manifest_type(&mt) {
                let manifest = document::parse_manifest(&bytes, &mt).map_err(bad)?;
                labels.insert(
                    "containerd.io/gc.ref.content.config".to_owned(),
                    manifest.config().digest().to_string(),
                );
                for (i, l) in manifest.layers().iter().enumerate() {
                    labels.insert(
                        format!("containerd.io/gc.ref.content.l.{i}"),
                        l.digest().to_string(),
                    );
                }
                for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
                    if seen.insert(d.digest().to_string()) {
                        blobs.push(Blob {
                            desc: d.clone(),
                            parent: key.clone(),
                        });
                    }
                }
            } else {
                return Err(TransferError::InvalidArgument(format!(
                    "{} has media type {mt:?}, neither a manifest nor an index",
                    desc.digest()
                )));
            }
            if existed {
                // One an earlier pull (or another client) wrote may lack some of these labels.
                self.add_labels(&desc, labels).await?;
                self.emit("already exists", &desc, &parent, size_i64(&desc));
            } else {
                self.write_document(&desc, bytes, labels).await?;
                self.emit("complete", &desc, &parent, size_i64(&desc));
            }
        }
        Ok(blobs)
    }

    /// Downloads one blob into its ingest (resuming one an earlier pull left).
    async fn download(&self, blob: &Blob) -> Result<(), TransferError> {
        let mut target = IngestTarget::for_descriptor(&self.ns, &blob.desc, Some(&self.lease));
        // containerd's record of where a blob came from (used by push for cross-repo mounts).
        target.labels.insert(
            format!("containerd.io/distribution.source.{}", self.repo.registry()),
            self.repo.name().to_owned(),
        );
        let mut last: Option<Instant> = None;
        let mut reported = 0u64;
        let outcome = copy_blob_to_ingest(
            &self.repo,
            self.engine.content.clone(),
            target,
            &blob.desc,
            |p| {
                let due =
                    last.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL) || p.done == p.total;
                if p.done > reported && due {
                    reported = p.done;
                    last = Some(Instant::now());
                    self.emit(
                        "downloading",
                        &blob.desc,
                        &blob.parent,
                        i64::try_from(p.done).unwrap_or(i64::MAX),
                    );
                }
            },
        )
        .await
        .map_err(|e| self.remote(e))?;
        let event = match outcome {
            CopyOutcome::AlreadyExists => "already exists",
            CopyOutcome::Committed { resumed_from } => {
                if resumed_from > 0 {
                    tracing::debug!(digest = %blob.desc.digest(), resumed_from, "download resumed");
                }
                "complete"
            }
        };
        self.emit(event, &blob.desc, &blob.parent, size_i64(&blob.desc));
        Ok(())
    }
}

/// Writes `bytes` as the blob `digest` through the ingest `key`, unless the namespace has it.
#[allow(clippy::too_many_arguments)]
fn write_blob(
    content: &ContentStore,
    ns: &str,
    lease: &str,
    key: &str,
    digest: &str,
    size: i64,
    bytes: &[u8],
    labels: BTreeMap<String, String>,
) -> Result<(), ContentError> {
    let mut w = match content.writer(ns, key, size, digest, Some(lease)) {
        Ok(w) => w,
        Err(ContentError::AlreadyExists(_)) => return Ok(()),
        Err(e) => return Err(e),
    };
    let offset = w.status().offset;
    // A writer that starts complete holds a blob already on disk; anything else is started
    // over, since the whole document is here (an ingest a crash left half-written included).
    if offset != size {
        if offset != 0 {
            w.reset()?;
        }
        w.write(bytes)?;
    }
    match w.commit(content, size, digest, labels) {
        Ok(_) | Err(ContentError::AlreadyExists(_)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Transferrer {
    /// The repository `reference` names, reached as `src` says (a pull's source or a push's
    /// destination).
    pub(crate) async fn repository(
        &self,
        reference: &Reference,
        src: &RegistrySource,
    ) -> Result<Repository, RemoteError> {
        let hosts_dir = src
            .host_dir
            .clone()
            .or_else(|| self.config.config_path.clone());
        let mut credentials = Vec::new();
        match &src.credentials {
            Some(cb) => credentials.push(CredentialSource::Callback(cb.clone())),
            // No client to ask: the daemon's own Docker login, as `docker` run as root would.
            None => credentials.extend(CredentialSource::docker_default()),
        }
        let client = RegistryClient::new(ClientConfig {
            hosts_dir: hosts_dir.clone(),
            credentials,
            connect_timeout: self.config.registry_connect_timeout,
            read_timeout: self.config.registry_read_timeout,
            ..Default::default()
        });
        let registry = reference.registry().to_owned();
        let mut found =
            tokio::task::spawn_blocking(move || hosts::hosts_for(&registry, hosts_dir.as_deref()))
                .await??;
        let default = RegistryHost::default_for(reference.registry());
        for h in &mut found {
            // The default scheme applies where no hosts file chose one; loopback stays plain
            // HTTP, as containerd's resolver keeps it.
            if let Some(scheme) = src.default_scheme.as_deref().filter(|s| !s.is_empty()) {
                if *h == default && !hosts::is_localhost(&h.host) {
                    h.scheme = scheme.to_owned();
                }
            }
            h.headers.extend(src.headers.iter().cloned());
        }
        client.repository_with_hosts(reference, found)
    }

    /// Pulls `src` into the image store as `dst` says, in namespace `ns`; returns the images
    /// recorded.
    pub async fn pull(
        &self,
        ns: &str,
        src: &RegistrySource,
        dst: &ImageStore,
        progress: ProgressFn,
    ) -> Result<Vec<Image>, TransferError> {
        let remote = |source| TransferError::Remote {
            reference: src.reference.clone(),
            source,
        };
        let reference = Reference::parse(&src.reference).map_err(|e| remote(e.into()))?;
        let name = reference.to_string();
        let source_label = format!("OCI Registry ({})", src.reference);
        let status = |event: String| {
            progress(Progress {
                event,
                ..Default::default()
            })
        };
        status(format!("Resolving from {source_label}"));
        progress(Progress {
            event: "resolving".into(),
            name: name.clone(),
            ..Default::default()
        });
        let repo = self.repository(&reference, src).await.map_err(remote)?;
        let root = repo.resolve(&reference).await.map_err(remote)?;
        progress(Progress {
            event: "resolved".into(),
            name: name.clone(),
            desc: Some(root.clone()),
            ..Default::default()
        });

        // Everything fetched from here is the lease's until the image holds it.
        let lease = self.begin_lease(ns, "transfer", LEASE_TTL).await?;
        let matcher = if dst.platforms.is_empty() {
            Matcher::host()
        } else {
            Matcher::ordered(&dst.platforms)
        };
        let job = Job {
            engine: self,
            ns: ns.to_owned(),
            lease: lease.clone(),
            reference: src.reference.clone(),
            repo,
            matcher,
            manifest_limit: usize::try_from(dst.manifest_limit).unwrap_or(usize::MAX),
            progress: progress.clone(),
        };
        status(format!("Pulling from {source_label}"));
        progress(Progress {
            event: "fetching image content".into(),
            name: name.clone(),
            desc: Some(root.clone()),
            ..Default::default()
        });
        let result = self.pull_leased(&job, &root, &name, dst).await;

        let (db, ns_owned) = (self.db.clone(), ns.to_owned());
        match tokio::task::spawn_blocking(move || db.delete_lease(&ns_owned, &lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot delete the pull's lease; it expires"),
            Err(e) => tracing::warn!(error = %e, "cannot delete the pull's lease; it expires"),
        }
        let images = result?;
        for img in &images {
            progress(Progress {
                event: "saved".into(),
                name: img.name.clone(),
                desc: crate::store::oci_descriptor(&img.target),
                ..Default::default()
            });
        }
        status(format!("Completed pull from {source_label}"));
        Ok(images)
    }

    async fn pull_leased(
        &self,
        job: &Job<'_>,
        root: &Descriptor,
        name: &str,
        dst: &ImageStore,
    ) -> Result<Vec<Image>, TransferError> {
        let blobs = job.walk(root, name).await?;
        for b in &blobs {
            job.emit("waiting", &b.desc, &b.parent, 0);
        }
        let limit = self.config.max_concurrent_downloads.max(1);
        // Indexes, manifests and configs first: the unpacker reads them to know the layers.
        let (layer_blobs, documents): (Vec<&Blob>, Vec<&Blob>) = blobs
            .iter()
            .partition(|b| media::is_layer_type(b.desc.media_type().as_ref()));
        futures::stream::iter(documents.into_iter().map(Ok))
            .try_for_each_concurrent(limit, |b| job.download(b))
            .await?;

        // Then the layers, each unpacked as soon as it is in (extractions wait at the gate for
        // theirs) rather than after the last download.
        let target = meta_descriptor(root);
        let gate = Arc::new(berth_unpack::LayerGate::default());
        let downloads = async {
            let r = futures::stream::iter(layer_blobs.iter().map(Ok))
                .try_for_each_concurrent(limit, |b: &&Blob| {
                    let gate = gate.clone();
                    async move {
                        job.download(b).await?;
                        gate.ready(b.desc.digest().as_ref());
                        Ok::<(), TransferError>(())
                    }
                })
                .await;
            gate.close(r.as_ref().err().map(ToString::to_string));
            r
        };
        let layers: HashMap<String, &Blob> = blobs
            .iter()
            .map(|b| (b.desc.digest().to_string(), b))
            .collect();
        let unpacks = async {
            for u in &dst.unpacks {
                self.unpack(job, name, &target, u, &layers, gate.clone())
                    .await?;
            }
            Ok::<(), TransferError>(())
        };
        let (downloaded, unpacked) = tokio::join!(downloads, unpacks);
        // A failed download is the cause of whatever the unpack then reported.
        downloaded?;
        unpacked?;

        // The image is recorded only once it is whole: a failed pull leaves no image behind.
        let (this, ns, dst) = (self.clone(), job.ns.clone(), dst.clone());
        let stored =
            tokio::task::spawn_blocking(move || this.store_images(&ns, &dst, &target)).await??;
        Ok(stored)
    }

    /// Unpacks the image being pulled for one unpack configuration, with extraction progress.
    async fn unpack(
        &self,
        job: &Job<'_>,
        image: &str,
        target: &berth_metadata::Descriptor,
        u: &crate::UnpackConfig,
        layers: &HashMap<String, &Blob>,
        gate: Arc<berth_unpack::LayerGate>,
    ) -> Result<(), TransferError> {
        if !host_can_unpack(u) {
            return Ok(());
        }
        let req = berth_unpack::Request {
            namespace: job.ns.clone(),
            image: image.to_owned(),
            snapshotter: u.snapshotter.clone(),
            platform: u.platform.clone(),
            target: Some(target.clone()),
            gate: Some(gate),
        };
        let (tx, mut rx) = mpsc::channel::<berth_unpack::Progress>(16);
        let forward = async {
            while let Some(p) = rx.recv().await {
                let Some(blob) = layers.get(&p.layer.to_string()) else {
                    continue;
                };
                let event = match p.state {
                    berth_unpack::LayerState::Present => continue,
                    berth_unpack::LayerState::Extracted => "extracting",
                    berth_unpack::LayerState::Committed => "extracted",
                };
                job.emit(event, &blob.desc, &blob.parent, size_i64(&blob.desc));
            }
        };
        let (result, ()) = tokio::join!(self.unpacker.unpack(req, tx), forward);
        result.map_err(|source| TransferError::Unpack {
            image: image.to_owned(),
            snapshotter: if u.snapshotter.is_empty() {
                "overlayfs".to_owned()
            } else {
                u.snapshotter.clone()
            },
            source: Box::new(source),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_keys_are_containerds() {
        let d = berth_oci::DescriptorBuilder::default()
            .media_type(berth_oci::MediaType::from(media::OCI_LAYER_GZIP))
            .digest(
                berth_oci::oci_spec::image::Digest::try_from(format!("sha256:{}", "0a".repeat(32)))
                    .unwrap(),
            )
            .size(3u64)
            .build()
            .unwrap();
        assert_eq!(ref_key(&d), format!("layer-sha256:{}", "0a".repeat(32)));
    }
}
