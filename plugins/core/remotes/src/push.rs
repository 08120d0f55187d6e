//! Push primitives: is a blob (or manifest) there, mount it from another repository, upload it (one PUT when
//! small, PATCH chunks when large), and put manifests by tag or digest.
//!
//! Pushes go to the first host allowed to push (as containerd's pusher does): mirrors are for
//! pulling.

use std::sync::Arc;

use berth_content_store::ContentStore;
use berth_oci::{Descriptor, Digest};
use bytes::Bytes;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::client::{unexpected, Action, Host, Repository, Request};
use crate::ingest::Progress;
use crate::pull::descriptor_digest;
use crate::RemoteError;

/// What a blob push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobPushOutcome {
    /// The repository already had it.
    Exists,
    /// The registry linked it from the other repository: nothing was uploaded.
    Mounted,
    Uploaded,
}

const OCTET_STREAM: &str = "application/octet-stream";

impl Repository {
    fn push_host(&self) -> Result<&Host, RemoteError> {
        let hosts = self.hosts_for("push", |h| h.capabilities.push)?;
        // hosts_for never returns an empty list.
        hosts.into_iter().next().ok_or_else(|| RemoteError::NoHost {
            registry: self.registry.clone(),
            capability: "push",
        })
    }

    /// Whether the repository has the blob (HEAD on the push host).
    pub async fn blob_exists(&self, digest: &Digest) -> Result<bool, RemoteError> {
        let host = self.push_host()?;
        let url = self.url(host, &format!("blobs/{digest}"));
        let resp = self
            .send(host, Action::Push, Request::new(Method::HEAD, url.clone()))
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(url, resp).await),
        }
    }

    /// Whether the repository has `digest` as the manifest `tag_or_digest` (HEAD on the push
    /// host): a tag that names another manifest is `false`, so it gets moved.
    pub async fn manifest_exists(
        &self,
        tag_or_digest: &str,
        digest: &Digest,
    ) -> Result<bool, RemoteError> {
        let host = self.push_host()?;
        let url = self.url(host, &format!("manifests/{tag_or_digest}"));
        let head = Request::new(Method::HEAD, url.clone())
            .header(reqwest::header::ACCEPT, crate::MANIFEST_ACCEPT);
        let resp = self.send(host, Action::Push, head).await?;
        match resp.status() {
            s if s.is_success() => {
                let answered = resp
                    .headers()
                    .get("docker-content-digest")
                    .and_then(|v| v.to_str().ok());
                Ok(match answered {
                    Some(a) => a == digest.as_str(),
                    // Without the header only a digest names the content for sure.
                    None => tag_or_digest == digest.as_str(),
                })
            }
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(unexpected(url, resp).await),
        }
    }

    /// Pushes one blob read from `source` (which yields exactly the blob's bytes), unless the
    /// repository has it; with `mount_from` (another repository on the same registry) the
    /// registry is first asked to link it from there, falling back to an upload when it cannot.
    pub async fn push_blob<R: AsyncRead + Unpin + Send>(
        &self,
        desc: &Descriptor,
        mut source: R,
        mount_from: Option<&str>,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<BlobPushOutcome, RemoteError> {
        let digest = descriptor_digest(desc)?;
        let total = desc.size();
        if self.blob_exists(&digest).await? {
            progress(Progress { done: total, total });
            return Ok(BlobPushOutcome::Exists);
        }
        let host = self.push_host()?;
        let mut url = self.url(host, "blobs/uploads/");
        let mut req_scopes = Vec::new();
        if let Some(from) = mount_from {
            url = format!(
                "{url}?mount={digest}&from={}",
                form_urlencoded_component(from)
            );
            req_scopes.push(format!("repository:{from}:pull"));
        }
        let mut start = Request::new(Method::POST, url.clone()).header(CONTENT_LENGTH, "0");
        start.extra_scopes = req_scopes;
        let resp = self.send(host, Action::Push, start).await?;
        let mut location = match resp.status() {
            StatusCode::CREATED if mount_from.is_some() => {
                progress(Progress { done: total, total });
                return Ok(BlobPushOutcome::Mounted);
            }
            StatusCode::ACCEPTED | StatusCode::CREATED => location(&url, &resp)?,
            _ => return Err(unexpected(url, resp).await),
        };

        let limit = self.client.config().monolithic_upload_limit;
        if total <= limit {
            let mut body = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
            (&mut source)
                .take(total)
                .read_to_end(&mut body)
                .await
                .map_err(|source| RemoteError::Read {
                    path: format!("blob {digest}"),
                    source,
                })?;
            check_read(&location, body.len() as u64, total)?;
            self.finish_upload(host, &location, &digest, Some(Bytes::from(body)))
                .await?;
            progress(Progress { done: total, total });
            return Ok(BlobPushOutcome::Uploaded);
        }

        let chunk_size = self.client.config().upload_chunk_size.max(1);
        let mut done = 0u64;
        while done < total {
            let want = (total - done).min(chunk_size as u64);
            let mut chunk = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
            (&mut source)
                .take(want)
                .read_to_end(&mut chunk)
                .await
                .map_err(|source| RemoteError::Read {
                    path: format!("blob {digest}"),
                    source,
                })?;
            if chunk.is_empty() {
                return Err(RemoteError::SizeMismatch {
                    url: location,
                    expected: total,
                    actual: done,
                });
            }
            let end = done + chunk.len() as u64 - 1;
            let mut patch = Request::new(Method::PATCH, location.clone())
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(CONTENT_LENGTH, &chunk.len().to_string())
                .header(reqwest::header::CONTENT_RANGE, &format!("{done}-{end}"));
            patch.body = Some(Bytes::from(chunk));
            let resp = self.send(host, Action::Push, patch).await?;
            if resp.status() != StatusCode::ACCEPTED {
                return Err(unexpected(location, resp).await);
            }
            location = self::location(&location, &resp)?;
            done = end + 1;
            progress(Progress { done, total });
        }
        self.finish_upload(host, &location, &digest, None).await?;
        Ok(BlobPushOutcome::Uploaded)
    }

    /// The closing PUT of an upload (`?digest=`), with the whole blob or nothing.
    async fn finish_upload(
        &self,
        host: &Host,
        location: &str,
        digest: &Digest,
        body: Option<Bytes>,
    ) -> Result<(), RemoteError> {
        let mut url = reqwest::Url::parse(location).map_err(|e| RemoteError::InvalidResponse {
            url: location.to_owned(),
            reason: format!("upload location: {e}"),
        })?;
        url.query_pairs_mut().append_pair("digest", digest.as_str());
        let len = body.as_ref().map_or(0, |b| b.len());
        let mut put = Request::new(Method::PUT, url.to_string())
            .header(CONTENT_TYPE, OCTET_STREAM)
            .header(CONTENT_LENGTH, &len.to_string());
        put.body = body;
        let resp = self.send(host, Action::Push, put).await?;
        match resp.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(()),
            _ => Err(unexpected(url.to_string(), resp).await),
        }
    }

    /// Puts a manifest or index under `tag_or_digest` with its media type; returns its digest.
    pub async fn push_manifest(
        &self,
        tag_or_digest: &str,
        media_type: &str,
        body: Bytes,
    ) -> Result<Digest, RemoteError> {
        let host = self.push_host()?;
        let url = self.url(host, &format!("manifests/{tag_or_digest}"));
        let digest = Digest::sha256(&body);
        let mut put = Request::new(Method::PUT, url.clone())
            .header(CONTENT_TYPE, media_type)
            .header(CONTENT_LENGTH, &body.len().to_string());
        put.body = Some(body);
        let resp = self.send(host, Action::Push, put).await?;
        if !resp.status().is_success() {
            return Err(unexpected(url, resp).await);
        }
        if let Some(answered) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if answered != digest.as_str() {
                return Err(RemoteError::DigestMismatch {
                    url,
                    expected: digest.to_string(),
                    actual: answered.to_owned(),
                });
            }
        }
        Ok(digest)
    }
}

/// Pushes a blob the namespace holds in the content store (see [`Repository::push_blob`]).
pub async fn push_blob_from_store(
    repo: &Repository,
    store: Arc<ContentStore>,
    namespace: &str,
    desc: &Descriptor,
    mount_from: Option<&str>,
    progress: impl FnMut(Progress) + Send,
) -> Result<BlobPushOutcome, RemoteError> {
    let digest = descriptor_digest(desc)?;
    let (ns, d) = (namespace.to_owned(), digest.to_string());
    let (file, size) = tokio::task::spawn_blocking(move || store.open_reader(&ns, &d)).await??;
    if u64::try_from(size).ok() != Some(desc.size()) {
        return Err(RemoteError::SizeMismatch {
            url: format!("content store blob {digest}"),
            expected: desc.size(),
            actual: u64::try_from(size).unwrap_or(0),
        });
    }
    let file = tokio::fs::File::from_std(file);
    repo.push_blob(desc, tokio::io::BufReader::new(file), mount_from, progress)
        .await
}

fn check_read(url: &str, read: u64, total: u64) -> Result<(), RemoteError> {
    if read != total {
        return Err(RemoteError::SizeMismatch {
            url: url.to_owned(),
            expected: total,
            actual: read,
        });
    }
    Ok(())
}

/// The absolute upload URL a response's `Location` names (it may be relative to the request).
fn location(request_url: &str, resp: &reqwest::Response) -> Result<String, RemoteError> {
    let invalid = |reason: String| RemoteError::InvalidResponse {
        url: request_url.to_owned(),
        reason,
    };
    let loc = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid("the upload answer has no Location".to_owned()))?;
    let base = reqwest::Url::parse(request_url).map_err(|e| invalid(e.to_string()))?;
    base.join(loc)
        .map(|u| u.to_string())
        .map_err(|e| invalid(format!("upload Location {loc:?}: {e}")))
}

/// A repository name for a query string; names are `[a-z0-9._/-]`, only `/` needs no escape but
/// is escaped anyway as Distribution's clients do.
fn form_urlencoded_component(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
