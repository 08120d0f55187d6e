//! The content store as a client sees it through the Content service: reading documents and
//! streaming blobs, the Write stream (stat, resume, write, commit), label updates, and the walks
//! over an image's documents that `images ls`, `check`, `import` and `unpack` share.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bctr::oci::{self, Descriptor, DescriptorExt, ImageConfiguration, ImageManifest};
use berth_api::content::{
    content_client::ContentClient, AbortRequest, Info, InfoRequest, ListContentRequest,
    ReadContentRequest, ReadContentResponse, UpdateRequest, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use berth_oci::Matcher;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{CmdError, Ctx};

/// Chunk size for writes, as containerd's client uses.
pub const CHUNK: usize = 1 << 20;
/// The largest blob read whole as a JSON document.
const MAX_DOCUMENT: usize = 64 << 20;

/// A failure while walking an image, remembering whether it was "not found" (which `images
/// check` reports as missing content rather than as an error).
#[derive(Debug)]
pub struct WalkError {
    pub msg: String,
    pub not_found: bool,
}

impl WalkError {
    pub fn other(msg: impl Into<String>) -> Self {
        WalkError {
            msg: msg.into(),
            not_found: false,
        }
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        WalkError {
            msg: msg.into(),
            not_found: true,
        }
    }
}

impl From<Status> for WalkError {
    fn from(s: Status) -> Self {
        WalkError {
            msg: s.message().to_owned(),
            not_found: s.code() == Code::NotFound,
        }
    }
}

impl From<WalkError> for CmdError {
    fn from(e: WalkError) -> Self {
        CmdError::Failed(e.msg)
    }
}

impl std::fmt::Display for WalkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

pub struct ContentStore {
    ctx: Ctx,
    client: ContentClient<Channel>,
    docs: HashMap<String, Arc<Vec<u8>>>,
}

impl ContentStore {
    pub fn new(ctx: &Ctx) -> Self {
        ContentStore {
            ctx: ctx.clone(),
            client: ContentClient::new(ctx.channel.clone()),
            docs: HashMap::new(),
        }
    }

    /// Every blob matching any of `filters`.
    pub async fn list(&mut self, filters: Vec<String>) -> Result<Vec<Info>, Status> {
        let mut stream = self
            .client
            .list(self.ctx.request(ListContentRequest { filters }))
            .await?
            .into_inner();
        let mut out = Vec::new();
        while let Some(msg) = stream.message().await? {
            out.extend(msg.info);
        }
        Ok(out)
    }

    /// Abandons an ingest.
    pub async fn abort(&mut self, r#ref: &str) -> Result<(), Status> {
        self.client
            .abort(self.ctx.request(AbortRequest {
                r#ref: r#ref.to_owned(),
            }))
            .await?;
        Ok(())
    }

    /// Opens a Read stream on a blob (`size` 0: to the end).
    pub async fn open_read(
        &mut self,
        digest: &str,
        offset: i64,
        size: i64,
    ) -> Result<tonic::Streaming<ReadContentResponse>, Status> {
        Ok(self
            .client
            .read(self.ctx.request(ReadContentRequest {
                digest: digest.to_owned(),
                offset,
                size,
            }))
            .await?
            .into_inner())
    }

    pub async fn info(&mut self, digest: &str) -> Result<Info, Status> {
        let resp = self
            .client
            .info(self.ctx.request(InfoRequest {
                digest: digest.to_owned(),
            }))
            .await?
            .into_inner();
        resp.info
            .ok_or_else(|| Status::internal(format!("daemon sent no info for {digest}")))
    }

    /// Sets labels (an empty value clears one) with one `labels.<key>` field path each.
    pub async fn update_labels(
        &mut self,
        digest: &str,
        labels: &[(String, String)],
    ) -> Result<Info, Status> {
        let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
        let info = Info {
            digest: digest.to_owned(),
            labels: labels
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .cloned()
                .collect(),
            ..Info::default()
        };
        let resp = self
            .client
            .update(self.ctx.request(UpdateRequest {
                info: Some(info),
                update_mask: Some(prost_types::FieldMask { paths }),
            }))
            .await?
            .into_inner();
        resp.info
            .ok_or_else(|| Status::internal(format!("daemon sent no info for {digest}")))
    }

    /// Streams a blob (or `size` bytes of it from `offset`; 0 means to the end) chunk by chunk
    /// into `sink`; the stream's flow control keeps at most a few chunks in memory.
    pub async fn read_chunks(
        &mut self,
        digest: &str,
        offset: i64,
        size: i64,
        mut sink: impl FnMut(&[u8]) -> Result<(), CmdError>,
    ) -> Result<u64, ReadError> {
        let mut stream = self
            .open_read(digest, offset, size)
            .await
            .map_err(ReadError::Rpc)?;
        let mut n = 0u64;
        while let Some(msg) = stream.message().await.map_err(ReadError::Rpc)? {
            n += msg.data.len() as u64;
            sink(&msg.data).map_err(ReadError::Sink)?;
        }
        Ok(n)
    }

    /// Reads a whole (small) blob, such as a manifest, index or config; remembered for the life
    /// of the store so walks read each document once.
    pub async fn read_document(&mut self, digest: &str) -> Result<Arc<Vec<u8>>, WalkError> {
        if let Some(b) = self.docs.get(digest) {
            return Ok(b.clone());
        }
        let mut buf = Vec::new();
        let res = self
            .read_chunks(digest, 0, 0, |chunk| {
                if buf.len() + chunk.len() > MAX_DOCUMENT {
                    return Err(CmdError::Failed(format!(
                        "blob {digest} is larger than {} MiB; not reading it as a document",
                        MAX_DOCUMENT >> 20
                    )));
                }
                buf.extend_from_slice(chunk);
                Ok(())
            })
            .await;
        match res {
            Ok(_) => {}
            Err(ReadError::Rpc(s)) => return Err(s.into()),
            Err(ReadError::Sink(e)) => return Err(WalkError::other(e.to_string())),
        }
        let buf = Arc::new(buf);
        self.docs.insert(digest.to_owned(), buf.clone());
        Ok(buf)
    }

    /// The children of a document (none for layers and configs), not yet platform-filtered.
    pub async fn children(&mut self, desc: &Descriptor) -> Result<Vec<Descriptor>, WalkError> {
        if !oci::has_children(desc.media_type_str()) {
            return Ok(Vec::new());
        }
        let bytes = self.read_document(desc.digest_str()).await?;
        oci::children(desc, &bytes)
            .map_err(|e| WalkError::other(format!("children: invalid desc {}: {e}", desc.digest())))
    }

    pub async fn read_config(
        &mut self,
        desc: &Descriptor,
    ) -> Result<ImageConfiguration, WalkError> {
        let bytes = self.read_document(desc.digest_str()).await?;
        oci::parse_config(&bytes)
            .map_err(|e| WalkError::other(format!("config {}: {e}", desc.digest())))
    }

    /// Opens an ingest on `ref`. `Ok(None)` when the daemon already has `expected`.
    /// A ref locked by another writer is retried for a while, as containerd's client does.
    pub async fn writer(
        &mut self,
        r#ref: &str,
        total: i64,
        expected: &str,
    ) -> Result<Option<BlobWriter>, Status> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut delay = Duration::from_millis(16);
        loop {
            match self.negotiate(r#ref, total, expected).await {
                Ok(w) => return Ok(Some(w)),
                Err(s) if s.code() == Code::AlreadyExists => return Ok(None),
                Err(s)
                    if s.code() == Code::Unavailable
                        && s.message().contains("locked")
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn negotiate(
        &mut self,
        r#ref: &str,
        total: i64,
        expected: &str,
    ) -> Result<BlobWriter, Status> {
        let (tx, rx) = mpsc::channel(2);
        // The first message goes in before the call: the daemon answers headers with it.
        let _ = tx
            .send(WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: r#ref.to_owned(),
                total,
                expected: expected.to_owned(),
                ..WriteContentRequest::default()
            })
            .await;
        let mut resp = self
            .client
            .write(self.ctx.request(ReceiverStream::new(rx)))
            .await?
            .into_inner();
        let first = resp
            .message()
            .await?
            .ok_or_else(|| Status::unknown("daemon closed the write stream without a status"))?;
        Ok(BlobWriter {
            tx,
            rx: resp,
            offset: first.offset,
            r#ref: r#ref.to_owned(),
        })
    }
}

#[derive(Debug)]
pub enum ReadError {
    Rpc(Status),
    Sink(CmdError),
}

impl From<ReadError> for CmdError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Rpc(s) => CmdError::Rpc(s),
            ReadError::Sink(e) => e,
        }
    }
}

/// One open ingest: a Write stream on which every request is answered before the next.
pub struct BlobWriter {
    tx: mpsc::Sender<WriteContentRequest>,
    rx: tonic::Streaming<WriteContentResponse>,
    /// Bytes the daemon holds for this ingest.
    pub offset: i64,
    pub r#ref: String,
}

impl BlobWriter {
    async fn send(&mut self, req: WriteContentRequest) -> Result<WriteContentResponse, Status> {
        // If the daemon already ended the stream, its reason comes on the receiving side.
        let _ = self.tx.send(req).await;
        match self.rx.message().await? {
            Some(r) => Ok(r),
            None => Err(Status::unknown("daemon closed the write stream")),
        }
    }

    pub async fn write(&mut self, data: Vec<u8>) -> Result<(), Status> {
        let len = data.len() as i64;
        let resp = self
            .send(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: self.offset,
                data,
                ..WriteContentRequest::default()
            })
            .await?;
        let n = resp.offset - self.offset;
        if n < len {
            return Err(Status::data_loss("short write"));
        }
        self.offset += n;
        Ok(())
    }

    /// Commits the ingest; returns the digest the daemon computed. `size` 0 and `expected` ""
    /// mean "not checked".
    pub async fn commit(
        mut self,
        size: i64,
        expected: &str,
        labels: HashMap<String, String>,
    ) -> Result<String, Status> {
        let resp = self
            .send(WriteContentRequest {
                action: WriteAction::Commit as i32,
                total: size,
                offset: self.offset,
                expected: expected.to_owned(),
                labels,
                ..WriteContentRequest::default()
            })
            .await
            .map_err(|s| Status::new(s.code(), format!("commit failed: {}", s.message())))?;
        if size != 0 && resp.offset != size {
            return Err(Status::failed_precondition(format!(
                "unexpected size: {} != {size}",
                resp.offset
            )));
        }
        if !expected.is_empty() && resp.digest != expected {
            return Err(Status::failed_precondition(format!(
                "unexpected digest: {} != {expected}",
                resp.digest
            )));
        }
        Ok(resp.digest)
    }

    /// containerd's `content.Copy`: resumes after what the daemon already holds (skipping that
    /// much of `r`), writes the rest in 1 MiB chunks, commits. Content that already exists is
    /// success. `on_chunk` sees every byte read from `r`, skipped ones included.
    pub async fn copy_from(
        mut self,
        r: &mut dyn Read,
        size: i64,
        expected: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), CmdError> {
        let r#ref = self.r#ref.clone();
        let start = self.offset;
        if start > 0 {
            let skipped = std::io::copy(&mut r.take(start as u64), &mut std::io::sink())
                .map_err(|e| CmdError::Failed(format!("unable to resume write to {ref}: {e}")))?;
            if skipped < start as u64 {
                return Err(CmdError::Failed(format!(
                    "unable to resume write to {ref}: unexpected EOF"
                )));
            }
        }
        let mut copied: i64 = 0;
        loop {
            let chunk = read_chunk(r, CHUNK)
                .map_err(|e| CmdError::Failed(format!("failed to copy: {e}")))?;
            if chunk.is_empty() {
                break;
            }
            copied += chunk.len() as i64;
            self.write(chunk).await.map_err(|s| {
                CmdError::Failed(format!(
                    "failed to copy: failed to send write: {}",
                    s.message()
                ))
            })?;
        }
        if size != 0 && copied < size - start {
            return Err(CmdError::Failed(
                "failed to read expected number of bytes: unexpected EOF".into(),
            ));
        }
        match self.commit(size, expected, labels).await {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => Ok(()),
            Err(s) => Err(CmdError::Failed(format!(
                "failed commit on ref {ref:?}: {}",
                s.message()
            ))),
        }
    }
}

/// Reads up to `max` bytes, fewer only at the end of `r`.
pub fn read_chunk(r: &mut dyn Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(max.min(CHUNK));
    r.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// containerd's `content.WriteBlob`: stores `r` under `ref` unless `expected` already exists.
pub async fn write_blob(
    cs: &mut ContentStore,
    r#ref: &str,
    r: &mut dyn Read,
    size: i64,
    expected: &str,
    labels: HashMap<String, String>,
) -> Result<(), CmdError> {
    match cs.writer(r#ref, size, expected).await {
        Ok(Some(w)) => w.copy_from(r, size, expected, labels).await,
        Ok(None) => Ok(()),
        Err(s) => Err(CmdError::Failed(format!(
            "failed to open writer: {}",
            s.message()
        ))),
    }
}

/// containerd's `images.Manifest`: the manifest of `image` for `platform` (every platform when
/// `None`), descending through indexes and preferring the best platform match.
pub async fn resolve_manifest(
    cs: &mut ContentStore,
    image: &Descriptor,
    platform: Option<&Matcher>,
) -> Result<ImageManifest, WalkError> {
    let mut stack = vec![image.clone()];
    let mut was_index = false;
    while let Some(desc) = stack.pop() {
        let mt = desc.media_type_str();
        if oci::is_manifest_type(mt) {
            let bytes = cs.read_document(desc.digest_str()).await?;
            let manifest = oci::parse_manifest(&bytes, mt).map_err(|e| {
                WalkError::other(format!("manifest: invalid desc {}: {e}", desc.digest()))
            })?;
            if desc.digest() != image.digest() {
                if let Some(m) = platform {
                    match desc.platform() {
                        Some(p) if !m.matches(p) => continue,
                        Some(_) => {}
                        None => {
                            let config = cs.read_config(manifest.config()).await?;
                            if !m.matches(&oci::config_platform(&config)) {
                                continue;
                            }
                        }
                    }
                }
            }
            return Ok(manifest);
        } else if oci::is_index_type(mt) {
            let bytes = cs.read_document(desc.digest_str()).await?;
            let idx = oci::parse_index(&bytes, mt).map_err(|e| {
                WalkError::other(format!("manifest: invalid desc {}: {e}", desc.digest()))
            })?;
            let mut descs = idx.manifests().clone();
            if let Some(m) = platform {
                descs.retain(|d| d.platform().as_ref().is_none_or(|p| m.matches(p)));
                m.sort(&mut descs, |d| d.platform().as_ref());
                was_index = true;
                descs.truncate(1);
            }
            // Depth first, in order.
            stack.extend(descs.into_iter().rev());
        } else {
            return Err(WalkError::not_found(format!(
                "unexpected media type {} for {}: not found",
                desc.media_type(),
                desc.digest()
            )));
        }
    }
    Err(WalkError::not_found(if was_index {
        format!(
            "no match for platform in manifest {}: not found",
            image.digest()
        )
    } else {
        format!("manifest {}: not found", image.digest())
    }))
}

/// containerd's `Image.Size`: the sum of the descriptor sizes of the image for `platform`
/// (one manifest of an index). On a failure, what was summed so far and the error.
pub async fn image_size(
    cs: &mut ContentStore,
    target: &Descriptor,
    platform: &Matcher,
) -> (i64, Option<WalkError>) {
    let mut size = 0i64;
    let mut stack = vec![target.clone()];
    while let Some(desc) = stack.pop() {
        // Descriptors have no negative sizes (they do not parse); a huge one is as invalid.
        let Ok(this) = i64::try_from(desc.size()) else {
            return (
                size,
                Some(WalkError::other(format!(
                    "invalid size {} in {} ({})",
                    desc.size(),
                    desc.digest(),
                    desc.media_type()
                ))),
            );
        };
        size = size.saturating_add(this);
        let mut children = match cs.children(&desc).await {
            Ok(c) => c,
            Err(e) => return (size, Some(e)),
        };
        children.retain(|d| d.platform().as_ref().is_none_or(|p| platform.matches(p)));
        if oci::is_index_type(desc.media_type_str()) {
            platform.sort(&mut children, |d| d.platform().as_ref());
            if children.is_empty() {
                return (
                    size,
                    Some(WalkError::not_found(
                        "no match for platform in manifest: not found",
                    )),
                );
            }
            children.truncate(1);
        }
        stack.extend(children.into_iter().rev());
    }
    (size, None)
}

/// containerd's `images.Platforms`: every platform the image names, from index entries or,
/// where a manifest has none, from its config.
pub async fn image_platforms(
    cs: &mut ContentStore,
    target: &Descriptor,
) -> Result<Vec<oci::Platform>, WalkError> {
    let mut out = Vec::new();
    let mut stack = vec![target.clone()];
    while let Some(desc) = stack.pop() {
        if let Some(p) = desc.platform() {
            out.push(p.clone());
            continue;
        }
        if oci::is_config_type(desc.media_type_str()) {
            out.push(oci::config_platform(&cs.read_config(&desc).await?));
            continue;
        }
        let children = cs.children(&desc).await?;
        stack.extend(children.into_iter().rev());
    }
    Ok(out)
}
