//! A blob from a registry into a content-store ingest, resuming where the ingest stopped.
//!
//! The content store is synchronous (files and redb); the copy keeps it on one blocking thread
//! that owns the writer and takes chunks from a small bounded channel, so the download is
//! back-pressured by the disk and no chunk waits on a thread-pool hop of its own.

use std::collections::BTreeMap;
use std::sync::Arc;

use berth_content_store::{ContentError, ContentStore, NsWriter};
use berth_oci::Descriptor;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::pull::descriptor_digest;
use crate::{RemoteError, Repository};

/// How far a transfer is, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Bytes of the blob in place so far (including those an earlier attempt left).
    pub done: u64,
    pub total: u64,
}

/// Which ingest a blob goes into.
#[derive(Debug, Clone)]
pub struct IngestTarget {
    pub namespace: String,
    /// The ingest's ref; the same ref resumes the same ingest (containerd's clients use
    /// `<kind>-<digest>`, see [`IngestTarget::for_descriptor`]).
    pub reference: String,
    pub lease: Option<String>,
    /// Labels recorded on the blob at commit (GC references, `containerd.io/uncompressed`).
    pub labels: BTreeMap<String, String>,
}

impl IngestTarget {
    /// The target containerd's remote fetch uses for a descriptor: ref `<kind>-<digest>` with
    /// kind from the media type (`manifest`, `index`, `config`, `layer`, else `unknown`).
    pub fn for_descriptor(namespace: &str, desc: &Descriptor, lease: Option<&str>) -> Self {
        let mt = desc.media_type().to_string();
        let kind = if berth_oci::media::is_manifest_type(&mt) {
            "manifest"
        } else if berth_oci::media::is_index_type(&mt) {
            "index"
        } else if berth_oci::media::is_known_config(&mt) {
            "config"
        } else if berth_oci::media::is_layer_type(&mt) {
            "layer"
        } else {
            "unknown"
        };
        IngestTarget {
            namespace: namespace.to_owned(),
            reference: format!("{kind}-{}", desc.digest()),
            lease: lease.map(str::to_owned),
            labels: BTreeMap::new(),
        }
    }
}

/// What a copy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyOutcome {
    /// The namespace already held the blob: nothing was fetched (the lease, if any, holds it).
    AlreadyExists,
    /// Fetched and committed; `resumed_from` is where the download started (0 for a fresh one,
    /// or when the registry ignored the range and the ingest started over).
    Committed { resumed_from: u64 },
}

enum Chunk {
    Data(Bytes),
    /// The registry sent the blob from 0: the ingest starts over.
    Reset,
}

/// Copies the blob `desc` names from `repo` into the ingest `target`, resuming at the ingest's
/// offset, verifying size and digest at commit, and calling `progress` as bytes arrive. A failed
/// download leaves the ingest for the next attempt to resume; a digest or size mismatch aborts it
/// (its bytes can never make the blob).
pub async fn copy_blob_to_ingest(
    repo: &Repository,
    store: Arc<ContentStore>,
    target: IngestTarget,
    desc: &Descriptor,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<CopyOutcome, RemoteError> {
    let digest = descriptor_digest(desc)?;
    let total = desc.size();
    let size = i64::try_from(total).map_err(|_| RemoteError::InvalidResponse {
        url: String::new(),
        reason: format!("descriptor size {total} is out of range"),
    })?;

    let opened = {
        let (store, t, d) = (store.clone(), target.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || {
            store.writer(&t.namespace, &t.reference, size, &d, t.lease.as_deref())
        })
        .await?
    };
    let mut writer = match opened {
        Ok(w) => w,
        Err(ContentError::AlreadyExists(_)) => return Ok(CopyOutcome::AlreadyExists),
        Err(e) => return Err(e.into()),
    };
    let mut offset = u64::try_from(writer.status().offset).unwrap_or(0);
    if offset > total {
        // More than the blob can hold: not this blob's bytes.
        writer = tokio::task::spawn_blocking(move || writer.reset().map(|()| writer)).await??;
        offset = 0;
    }
    progress(Progress {
        done: offset,
        total,
    });

    let mut resumed_from = offset;
    let mut url = String::new();
    let writer = if offset < total {
        let (tx, rx) = mpsc::channel::<Chunk>(16);
        let worker = tokio::task::spawn_blocking(move || write_chunks(writer, rx));
        let fed = async {
            let mut stream = repo.fetch_blob(desc, offset).await?;
            url = stream.url().to_owned();
            if stream.offset() != offset {
                tracing::debug!(%digest, offset, "the registry ignored the range; starting over");
                resumed_from = 0;
                if tx.send(Chunk::Reset).await.is_err() {
                    return Ok(());
                }
            }
            let mut done = stream.offset();
            while let Some(chunk) = stream.next_chunk().await? {
                done += chunk.len() as u64;
                if tx.send(Chunk::Data(chunk)).await.is_err() {
                    // The writer stopped on an error, which the worker's result gives.
                    return Ok(());
                }
                progress(Progress { done, total });
            }
            Ok::<(), RemoteError>(())
        }
        .await;
        drop(tx);
        let written = worker.await?;
        if let Err(e) = fed {
            // The writer closes first, leaving the ingest for a resume unless it is bad.
            drop(written);
            return Err(abort_if_bad(&store, &target, e).await);
        }
        written?
    } else {
        writer
    };

    let committed = {
        let (store, t, d) = (store.clone(), target.clone(), digest.to_string());
        tokio::task::spawn_blocking(move || writer.commit(&store, size, &d, t.labels)).await?
    };
    match committed {
        Ok(_) => Ok(CopyOutcome::Committed { resumed_from }),
        // Another writer committed it first: the namespace holds the blob, which is the goal.
        Err(ContentError::AlreadyExists(_)) => Ok(CopyOutcome::AlreadyExists),
        Err(ContentError::DigestMismatch { actual, expected }) => {
            let e = RemoteError::DigestMismatch {
                url,
                expected,
                actual,
            };
            Err(abort_if_bad(&store, &target, e).await)
        }
        Err(e) => Err(e.into()),
    }
}

fn write_chunks(
    mut writer: NsWriter,
    mut rx: mpsc::Receiver<Chunk>,
) -> Result<NsWriter, ContentError> {
    while let Some(chunk) = rx.blocking_recv() {
        match chunk {
            Chunk::Data(b) => writer.write(&b)?,
            Chunk::Reset => writer.reset()?,
        }
    }
    Ok(writer)
}

/// Aborts the ingest when `e` says its bytes are wrong (so the next attempt starts clean rather
/// than resuming garbage); returns `e`.
async fn abort_if_bad(
    store: &Arc<ContentStore>,
    target: &IngestTarget,
    e: RemoteError,
) -> RemoteError {
    if matches!(
        e,
        RemoteError::DigestMismatch { .. } | RemoteError::SizeMismatch { .. }
    ) {
        let (store, t) = (store.clone(), target.clone());
        match tokio::task::spawn_blocking(move || store.abort(&t.namespace, &t.reference)).await {
            Ok(Ok(())) => {}
            Ok(Err(a)) => {
                tracing::warn!(reference = %target.reference, error = %a, "cannot abort a bad ingest")
            }
            Err(j) => {
                tracing::warn!(reference = %target.reference, error = %j, "cannot abort a bad ingest")
            }
        }
    }
    e
}
