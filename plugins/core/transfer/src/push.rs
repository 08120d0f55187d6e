//! Push: an image of the image store to a registry (containerd's `core/transfer/local/push.go`
//! with `core/remotes/handlers.go`'s `PushContent`).
//!
//! The walk is local and done first, on a blocking thread: the image's index, the manifests the
//! request's platforms select (all by default, as containerd pushes what it has) among those in
//! the content store, their configs and layers. Then blobs go up in parallel
//! (`max_concurrent_uploaded_layers`), each one mounted from another repository of the same
//! registry when its `containerd.io/distribution.source.<registry>` label names one (a pull
//! sets it), then the manifests one at a time, children before the index that names them, the
//! top one under the destination's tag (or its digest). What the registry already has is not
//! sent again.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::time::{Duration, Instant};

use berth_content_store::{ContentError, ContentStore};
use berth_metadata::MetaError;
use berth_oci::{document, media, Descriptor, Matcher};
use berth_remotes::{push_blob_from_store, BlobPushOutcome, Reference, RemoteError, Repository};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::pull::{ref_key, size_i64};
use crate::store::oci_descriptor;
use crate::{ImageStore, Progress, ProgressFn, RegistrySource, TransferError, Transferrer};

/// Indexes inside indexes deeper than this are refused (a loop in hand-made content).
const MAX_DEPTH: usize = 5;
/// At most one `uploading` event per blob in this interval.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

/// One thing to push and the key of what names it (the image name for the top).
struct Item {
    desc: Descriptor,
    parent: String,
    /// A document's bytes (manifests and indexes); blobs are streamed from the store.
    bytes: Option<Vec<u8>>,
    /// The content store's labels of the blob (for the distribution source).
    labels: BTreeMap<String, String>,
}

/// What the local walk found: blobs in any order, documents children first.
struct Plan {
    blobs: Vec<Item>,
    documents: Vec<Item>,
}

/// The local walk (blocking): what to push for `root`, only what the namespace has.
fn plan(
    content: &ContentStore,
    ns: &str,
    image: &str,
    root: &Descriptor,
    matcher: &Matcher,
) -> Result<Plan, TransferError> {
    let missing = |desc: &Descriptor| TransferError::MissingContent {
        image: image.to_owned(),
        digest: desc.digest().to_string(),
    };
    let read = |desc: &Descriptor| -> Result<Vec<u8>, TransferError> {
        let digest = desc.digest().to_string();
        let (mut file, _) = content.open_reader(ns, &digest).map_err(|e| match e {
            ContentError::NotFound(_) => missing(desc),
            other => other.into(),
        })?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|source| TransferError::Read { digest, source })?;
        Ok(buf)
    };
    let labels_of = |desc: &Descriptor| -> Result<Option<BTreeMap<String, String>>, TransferError> {
        match content.info(ns, desc.digest().as_ref()) {
            Ok(info) => Ok(Some(info.labels)),
            Err(ContentError::NotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    };

    let mut blobs = Vec::new();
    // Pre-order; reversed at the end, every document comes after all it names.
    let mut documents = Vec::new();
    let mut seen = HashSet::new();
    let mut stack = vec![(root.clone(), image.to_owned(), 0usize)];
    while let Some((desc, parent, depth)) = stack.pop() {
        let key = ref_key(&desc);
        let mt = desc.media_type().to_string();
        let bad = |source| TransferError::Document {
            digest: desc.digest().to_string(),
            source,
        };
        let bytes = read(&desc)?;
        if media::is_index_type(&mt) {
            if depth >= MAX_DEPTH {
                return Err(TransferError::TooDeep {
                    what: "index",
                    digest: desc.digest().to_string(),
                    limit: MAX_DEPTH,
                });
            }
            let index = document::parse_index(&bytes, &mt).map_err(bad)?;
            let mut children = 0usize;
            for c in index.manifests() {
                let t = c.media_type().to_string();
                if !(media::is_manifest_type(&t) || media::is_index_type(&t)) {
                    continue;
                }
                if let Some(p) = c.platform() {
                    if !matcher.is_all() && !matcher.matches(p) {
                        continue;
                    }
                }
                // containerd pushes what it has: a manifest of a platform never pulled is
                // left out (the registry may then refuse the index; it says so).
                if labels_of(c)?.is_none() {
                    tracing::debug!(digest = %c.digest(), "not in the content store, not pushed");
                    continue;
                }
                children += 1;
                stack.push((c.clone(), key.clone(), depth + 1));
            }
            if children == 0 {
                return Err(TransferError::NoLocalManifest {
                    image: image.to_owned(),
                    platforms: if matcher.is_all() {
                        "any platform".to_owned()
                    } else {
                        matcher
                            .platforms()
                            .iter()
                            .map(berth_oci::platform::format)
                            .collect::<Vec<_>>()
                            .join(", ")
                    },
                });
            }
        } else if media::is_manifest_type(&mt) {
            let manifest = document::parse_manifest(&bytes, &mt).map_err(bad)?;
            for d in std::iter::once(manifest.config()).chain(manifest.layers()) {
                if media::is_non_distributable(d.media_type().as_ref()) {
                    continue;
                }
                if !seen.insert(d.digest().to_string()) {
                    continue;
                }
                let labels = labels_of(d)?.ok_or_else(|| missing(d))?;
                blobs.push(Item {
                    desc: d.clone(),
                    parent: key.clone(),
                    bytes: None,
                    labels,
                });
            }
        } else {
            return Err(TransferError::InvalidArgument(format!(
                "{} has media type {mt:?}, neither a manifest nor an index",
                desc.digest()
            )));
        }
        if seen.insert(desc.digest().to_string()) {
            documents.push(Item {
                desc,
                parent,
                bytes: Some(bytes),
                labels: BTreeMap::new(),
            });
        }
    }
    documents.reverse();
    Ok(Plan { blobs, documents })
}

/// The repository of the destination's registry a blob can be mounted from: the first its
/// distribution-source label names (a comma-separated list) other than the destination.
fn mount_source<'a>(
    labels: &'a BTreeMap<String, String>,
    registry: &str,
    repository: &str,
) -> Option<&'a str> {
    labels
        .get(&format!("containerd.io/distribution.source.{registry}"))?
        .split(',')
        .map(str::trim)
        .find(|r| !r.is_empty() && *r != repository)
}

/// One push in progress.
struct Job<'a> {
    engine: &'a Transferrer,
    ns: String,
    reference: String,
    repo: Repository,
    progress: ProgressFn,
}

impl Job<'_> {
    fn emit(&self, event: &str, item: &Item, progress: i64) {
        (self.progress)(Progress {
            event: event.to_owned(),
            name: ref_key(&item.desc),
            parents: vec![item.parent.clone()],
            progress,
            total: size_i64(&item.desc),
            desc: Some(item.desc.clone()),
        });
    }

    fn remote(&self, source: RemoteError) -> TransferError {
        TransferError::Push {
            reference: self.reference.clone(),
            source,
        }
    }

    /// Uploads one blob from the content store, unless the repository has it or can mount it.
    async fn blob(&self, item: &Item) -> Result<(), TransferError> {
        let digest = berth_remotes::descriptor_digest(&item.desc).map_err(|e| self.remote(e))?;
        // Asked first (push_blob asks again) so that a blob the registry has is reported as
        // such, never as an upload.
        if self
            .repo
            .blob_exists(&digest)
            .await
            .map_err(|e| self.remote(e))?
        {
            self.emit("already exists", item, size_i64(&item.desc));
            return Ok(());
        }
        let from = mount_source(&item.labels, self.repo.registry(), self.repo.name());
        // A mount uploads nothing; one that fails falls back to an upload, whose chunks show.
        if from.is_none() {
            self.emit("uploading", item, 0);
        }
        let mut last: Option<Instant> = None;
        let mut reported = 0u64;
        let outcome = push_blob_from_store(
            &self.repo,
            self.engine.content.clone(),
            &self.ns,
            &item.desc,
            from,
            |p| {
                // The end is reported below, with what the push did.
                let due = last.is_none_or(|t| t.elapsed() >= PROGRESS_INTERVAL);
                if p.done > reported && p.done < p.total && due {
                    reported = p.done;
                    last = Some(Instant::now());
                    self.emit("uploading", item, i64::try_from(p.done).unwrap_or(i64::MAX));
                }
            },
        )
        .await
        .map_err(|e| self.remote(e))?;
        let event = match outcome {
            BlobPushOutcome::Exists => "already exists",
            BlobPushOutcome::Mounted => "mounted",
            BlobPushOutcome::Uploaded => "complete",
        };
        self.emit(event, item, size_i64(&item.desc));
        Ok(())
    }

    /// Puts one manifest or index under `tag_or_digest`, unless it is there already.
    async fn document(&self, item: &Item, tag_or_digest: &str) -> Result<(), TransferError> {
        let digest = berth_remotes::descriptor_digest(&item.desc).map_err(|e| self.remote(e))?;
        if self
            .repo
            .manifest_exists(tag_or_digest, &digest)
            .await
            .map_err(|e| self.remote(e))?
        {
            self.emit("already exists", item, size_i64(&item.desc));
            return Ok(());
        }
        let body = Bytes::from(item.bytes.clone().unwrap_or_default());
        self.emit("uploading", item, 0);
        self.repo
            .push_manifest(tag_or_digest, item.desc.media_type().as_ref(), body)
            .await
            .map_err(|e| self.remote(e))?;
        self.emit("complete", item, size_i64(&item.desc));
        Ok(())
    }
}

impl Transferrer {
    /// Pushes the image `src` names to the registry `dst` names, in namespace `ns`; returns the
    /// descriptor pushed as the top (the image's target).
    pub async fn push(
        &self,
        ns: &str,
        src: &ImageStore,
        dst: &RegistrySource,
        progress: ProgressFn,
    ) -> Result<Descriptor, TransferError> {
        let remote = |source| TransferError::Push {
            reference: dst.reference.clone(),
            source,
        };
        if src.name.is_empty() {
            return Err(TransferError::InvalidArgument(
                "the source image store names no image".into(),
            ));
        }
        let reference = Reference::parse(&dst.reference).map_err(|e| remote(e.into()))?;

        // The image and the local walk: nothing is asked of the registry before both are fine.
        let matcher = if src.platforms.is_empty() {
            Matcher::all()
        } else {
            Matcher::ordered(&src.platforms)
        };
        let (image, root, plan) = {
            let (this, ns, name) = (self.clone(), ns.to_owned(), src.name.clone());
            tokio::task::spawn_blocking(move || -> Result<_, TransferError> {
                let image = this.db.get_image(&ns, &name).map_err(|e| match e {
                    MetaError::NotFound(_) => TransferError::ImageNotFound(name.clone()),
                    other => other.into(),
                })?;
                let root = oci_descriptor(&image.target).ok_or_else(|| {
                    TransferError::InvalidArgument(format!(
                        "image {name} has an invalid target {:?}",
                        image.target.digest
                    ))
                })?;
                let plan = plan(&this.content, &ns, &name, &root, &matcher)?;
                Ok((image, root, plan))
            })
            .await??
        };
        if let Some(pinned) = reference.digest() {
            if pinned.as_str() != root.digest().to_string() {
                return Err(TransferError::InvalidArgument(format!(
                    "{} is pinned to {pinned} but image {} is {}",
                    dst.reference,
                    image.name,
                    root.digest()
                )));
            }
        }
        let top = match reference.tag() {
            Some(t) => t.to_owned(),
            None => root.digest().to_string(),
        };

        let dest_label = format!("OCI Registry ({})", dst.reference);
        progress(Progress {
            event: format!("Pushing to {dest_label}"),
            ..Default::default()
        });
        progress(Progress {
            event: "pushing content".into(),
            name: image.name.clone(),
            desc: Some(root.clone()),
            ..Default::default()
        });
        let repo = self.repository(&reference, dst).await.map_err(remote)?;
        let job = Job {
            engine: self,
            ns: ns.to_owned(),
            reference: dst.reference.clone(),
            repo,
            progress: progress.clone(),
        };
        for item in plan.blobs.iter().chain(&plan.documents) {
            job.emit("waiting", item, 0);
        }
        let limit = self.config.max_concurrent_uploaded_layers.max(1);
        futures::stream::iter(plan.blobs.iter().map(Ok))
            .try_for_each_concurrent(limit, |b| job.blob(b))
            .await?;
        // Children before the documents naming them: a registry checks that they exist.
        for item in &plan.documents {
            let key = if item.desc.digest() == root.digest() {
                top.clone()
            } else {
                item.desc.digest().to_string()
            };
            job.document(item, &key).await?;
        }

        progress(Progress {
            event: "pushed content".into(),
            name: image.name.clone(),
            desc: Some(root.clone()),
            ..Default::default()
        });
        progress(Progress {
            event: format!("Completed push to {dest_label}"),
            desc: Some(root.clone()),
            ..Default::default()
        });
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_come_from_another_repository_of_the_same_registry() {
        let mut labels = BTreeMap::new();
        labels.insert(
            "containerd.io/distribution.source.127.0.0.1:5000".to_owned(),
            "library/busybox,team/app".to_owned(),
        );
        assert_eq!(
            mount_source(&labels, "127.0.0.1:5000", "other/busybox"),
            Some("library/busybox")
        );
        assert_eq!(
            mount_source(&labels, "127.0.0.1:5000", "library/busybox"),
            Some("team/app")
        );
        assert_eq!(mount_source(&labels, "docker.io", "library/busybox"), None);
        assert_eq!(mount_source(&BTreeMap::new(), "x", "y"), None);
    }
}
