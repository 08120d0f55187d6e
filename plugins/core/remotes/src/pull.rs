//! Pull primitives: resolve a reference to a descriptor, fetch manifests and indexes whole
//! (verified), choose a platform's manifest, and stream blobs (verified, resumable by Range).

use berth_oci::{document, media, Descriptor, DescriptorBuilder, Digest, Matcher, MediaType};
use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, RANGE};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use crate::client::{body_error, read_limited, unexpected, Action, Host, Repository, Request};
use crate::{Reference, RemoteError};

/// The manifest types asked for, best first (as containerd's resolver sends them).
pub const MANIFEST_ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.oci.image.index.v1+json, */*";

const DOCKER_CONTENT_DIGEST: &str = "docker-content-digest";

fn descriptor(media_type: &str, digest: &Digest, size: u64) -> Result<Descriptor, RemoteError> {
    DescriptorBuilder::default()
        .media_type(MediaType::from(media_type))
        .digest(oci_spec::image::Digest::from(digest))
        .size(size)
        .build()
        .map_err(|e| RemoteError::InvalidResponse {
            url: String::new(),
            reason: format!("cannot describe {digest}: {e}"),
        })
}

/// The digest a descriptor names, checked.
pub fn descriptor_digest(desc: &Descriptor) -> Result<Digest, RemoteError> {
    Digest::try_from(desc.digest()).map_err(|e| RemoteError::InvalidResponse {
        url: String::new(),
        reason: format!("descriptor digest {}: {e}", desc.digest()),
    })
}

fn header<'a>(resp: &'a Response, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

fn media_type_of(resp: &Response) -> Option<String> {
    header(resp, CONTENT_TYPE.as_str())
        .map(|ct| ct.split(';').next().unwrap_or(ct).trim().to_owned())
        .filter(|ct| !ct.is_empty())
}

impl Repository {
    /// Resolves `reference` (its digest, else its tag) to the descriptor of its manifest or
    /// index, trying each host allowed to resolve in turn.
    pub async fn resolve(&self, reference: &Reference) -> Result<Descriptor, RemoteError> {
        let object = reference.object();
        let mut last = None;
        for host in self.hosts_for("resolve", |h| h.capabilities.resolve)? {
            match self.resolve_on(host, object, reference.digest()).await {
                Ok(d) => return Ok(d),
                Err(e) => {
                    tracing::debug!(host = %host.config.host, error = %e, "resolve failed, trying the next host");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RemoteError::NotFound {
            what: reference.to_string(),
            url: self.registry.clone(),
        }))
    }

    async fn resolve_on(
        &self,
        host: &Host,
        object: &str,
        pinned: Option<&Digest>,
    ) -> Result<Descriptor, RemoteError> {
        let url = self.url(host, &format!("manifests/{object}"));
        let head = Request::new(Method::HEAD, url.clone()).header(ACCEPT, MANIFEST_ACCEPT);
        let resp = self.send(host, Action::Pull, head).await?;
        match resp.status() {
            s if s.is_success() => {
                let digest = pinned.cloned().or_else(|| {
                    header(&resp, DOCKER_CONTENT_DIGEST).and_then(|d| Digest::parse(d).ok())
                });
                // The header itself: reqwest's content_length() is the body's, empty for HEAD.
                let size = header(&resp, "content-length")
                    .and_then(|l| l.parse::<u64>().ok())
                    .filter(|n| *n > 0);
                if let (Some(digest), Some(size), Some(mt)) = (digest, size, media_type_of(&resp)) {
                    refuse_web_page(&url, &mt)?;
                    return descriptor(&mt, &digest, size);
                }
                // Some registries answer HEAD without a digest or length: ask with GET.
            }
            StatusCode::NOT_FOUND => {
                return Err(RemoteError::NotFound {
                    what: format!("manifest {object} of {}/{}", self.registry, self.name),
                    url,
                })
            }
            // 405 and the like: HEAD is not supported here, fall back to GET.
            s if s.is_client_error() && s != StatusCode::NOT_FOUND => {}
            _ => return Err(unexpected(url, resp).await),
        }
        let get = Request::new(Method::GET, url.clone()).header(ACCEPT, MANIFEST_ACCEPT);
        let resp = self.send(host, Action::Pull, get).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Err(RemoteError::NotFound {
                what: format!("manifest {object} of {}/{}", self.registry, self.name),
                url,
            });
        }
        if !resp.status().is_success() {
            return Err(unexpected(url, resp).await);
        }
        let mt = media_type_of(&resp);
        if let Some(mt) = &mt {
            refuse_web_page(&url, mt)?;
        }
        let body = read_limited(
            &url,
            resp,
            self.client.config().max_manifest_size,
            "manifest",
        )
        .await?;
        if !body.trim_ascii_start().starts_with(b"{") {
            return Err(RemoteError::InvalidResponse {
                url,
                reason: "the answer is not a JSON manifest (is this a registry?)".to_owned(),
            });
        }
        let actual = Digest::sha256(&body);
        if let Some(p) = pinned {
            if *p != actual {
                return Err(RemoteError::DigestMismatch {
                    url,
                    expected: p.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let mt = match mt {
            Some(mt) if mt != "application/json" && mt != "text/plain" => mt,
            // No useful Content-Type: the document says what it is.
            _ => sniff_media_type(&body).ok_or_else(|| RemoteError::InvalidResponse {
                url: url.clone(),
                reason: "the manifest has no media type".to_owned(),
            })?,
        };
        descriptor(&mt, &actual, body.len() as u64)
    }

    /// Fetches a manifest or index by its descriptor, whole, and checks its size and digest.
    pub async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Bytes, RemoteError> {
        let digest = descriptor_digest(desc)?;
        let limit = self.client.config().max_manifest_size;
        if desc.size() > limit {
            return Err(RemoteError::TooLarge {
                reason: format!("manifest {digest}"),
                size: desc.size(),
                limit,
            });
        }
        let mut last = None;
        for host in self.hosts_for("pull", |h| h.capabilities.pull)? {
            let url = self.url(host, &format!("manifests/{digest}"));
            let accept = match desc.media_type() {
                MediaType::Other(s) if s.is_empty() => MANIFEST_ACCEPT.to_owned(),
                mt => format!("{mt}, */*"),
            };
            let req = Request::new(Method::GET, url.clone()).header(ACCEPT, &accept);
            let result = async {
                let resp = self.send(host, Action::Pull, req).await?;
                if resp.status() == StatusCode::NOT_FOUND {
                    return Err(RemoteError::NotFound {
                        what: format!("manifest {digest} of {}/{}", self.registry, self.name),
                        url: url.clone(),
                    });
                }
                if !resp.status().is_success() {
                    return Err(unexpected(url.clone(), resp).await);
                }
                let body = read_limited(&url, resp, limit, "manifest").await?;
                verify_whole(&url, &body, desc.size(), &digest)?;
                Ok(body)
            }
            .await;
            match result {
                Ok(body) => return Ok(body),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RemoteError::NotFound {
            what: digest.to_string(),
            url: self.registry.clone(),
        }))
    }

    /// Opens a blob for reading from `offset` (HTTP Range), for a caller that already holds the
    /// bytes before it. A registry that ignores the range sends the blob from 0:
    /// [`BlobStream::offset`] says where the stream really starts. A stream from 0 checks size
    /// and digest at its end; one from later checks size only (the caller hashes the prefix).
    pub async fn fetch_blob(
        &self,
        desc: &Descriptor,
        offset: u64,
    ) -> Result<BlobStream, RemoteError> {
        let digest = descriptor_digest(desc)?;
        let mut last = None;
        for host in self.hosts_for("pull", |h| h.capabilities.pull)? {
            let url = self.url(host, &format!("blobs/{digest}"));
            let mut req = Request::new(Method::GET, url.clone());
            if offset > 0 {
                req = req.header(RANGE, &format!("bytes={offset}-"));
            }
            let result = async {
                let resp = self.send(host, Action::Pull, req).await?;
                let start = match resp.status() {
                    StatusCode::PARTIAL_CONTENT => offset,
                    StatusCode::OK => 0,
                    StatusCode::NOT_FOUND => {
                        return Err(RemoteError::NotFound {
                            what: format!("blob {digest} of {}/{}", self.registry, self.name),
                            url: url.clone(),
                        })
                    }
                    _ => return Err(unexpected(url.clone(), resp).await),
                };
                Ok(BlobStream {
                    url: url.clone(),
                    resp,
                    offset: start,
                    position: start,
                    size: desc.size(),
                    hasher: (start == 0).then(Sha256::new),
                    digest: digest.clone(),
                })
            }
            .await;
            match result {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| RemoteError::NotFound {
            what: digest.to_string(),
            url: self.registry.clone(),
        }))
    }

    /// Fetches a small blob whole (a config), verified.
    pub async fn fetch_blob_bytes(&self, desc: &Descriptor) -> Result<Bytes, RemoteError> {
        let limit = self.client.config().max_manifest_size;
        if desc.size() > limit {
            return Err(RemoteError::TooLarge {
                reason: format!("blob {}", desc.digest()),
                size: desc.size(),
                limit,
            });
        }
        let mut s = self.fetch_blob(desc, 0).await?;
        let mut buf = Vec::with_capacity(usize::try_from(desc.size()).unwrap_or(0));
        while let Some(chunk) = s.next_chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(buf))
    }
}

/// Chooses from an index the manifest for the best platform `matcher` accepts (containerd's
/// order: the matcher's preference, then the index's order).
/// A web page where a manifest should be: a proxy's login portal or a web server on the
/// registry's port. Said plainly rather than carried on as a manifest of type `text/html`.
fn refuse_web_page(url: &str, media_type: &str) -> Result<(), RemoteError> {
    if media_type.starts_with("text/html") {
        return Err(RemoteError::InvalidResponse {
            url: url.to_owned(),
            reason: format!(
                "answered a web page ({media_type}) instead of a manifest (is this a registry?)"
            ),
        });
    }
    Ok(())
}

pub fn select_manifest(
    index_desc: &Descriptor,
    index_bytes: &[u8],
    matcher: &Matcher,
) -> Result<Descriptor, RemoteError> {
    let index = document::parse_index(index_bytes, index_desc.media_type().as_ref())?;
    let mut candidates: Vec<Descriptor> = index
        .manifests()
        .iter()
        .filter(|d| media::is_manifest_type(d.media_type().as_ref()))
        .filter(|d| d.platform().as_ref().is_none_or(|p| matcher.matches(p)))
        .cloned()
        .collect();
    // Stable: among equals the index's order stands.
    matcher.sort(&mut candidates, |d| d.platform().as_ref());
    candidates
        .into_iter()
        .next()
        .ok_or_else(|| RemoteError::NoMatchingPlatform {
            index: index_desc.digest().to_string(),
            platforms: matcher
                .platforms()
                .iter()
                .map(berth_oci::platform::format)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// A document's media type from its own `mediaType` field, or from its shape.
fn sniff_media_type(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    if let Some(mt) = v.get("mediaType").and_then(|m| m.as_str()) {
        return Some(mt.to_owned());
    }
    if v.get("manifests").is_some() {
        Some(media::OCI_INDEX.to_owned())
    } else if v.get("config").is_some() {
        Some(media::OCI_MANIFEST.to_owned())
    } else {
        None
    }
}

fn verify_whole(url: &str, body: &[u8], size: u64, digest: &Digest) -> Result<(), RemoteError> {
    if body.len() as u64 != size {
        return Err(RemoteError::SizeMismatch {
            url: url.to_owned(),
            expected: size,
            actual: body.len() as u64,
        });
    }
    let actual = Digest::sha256(body);
    if actual != *digest {
        return Err(RemoteError::DigestMismatch {
            url: url.to_owned(),
            expected: digest.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

/// A blob being read from a registry; see [`Repository::fetch_blob`].
pub struct BlobStream {
    url: String,
    resp: Response,
    offset: u64,
    position: u64,
    size: u64,
    hasher: Option<Sha256>,
    digest: Digest,
}

impl BlobStream {
    /// Where the stream starts in the blob (the offset asked for, or 0 if the registry ignored
    /// the range).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The blob's full size (from its descriptor).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The next bytes, `None` at the end. Never yields past the descriptor's size; at the end
    /// the size (and, for a stream from 0, the digest) is checked and a mismatch is an error.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, RemoteError> {
        let chunk = self
            .resp
            .chunk()
            .await
            .map_err(|e| body_error(&self.url, &format!("reading blob {}", self.digest), e))?;
        match chunk {
            Some(c) => {
                self.position += c.len() as u64;
                if self.position > self.size {
                    return Err(RemoteError::SizeMismatch {
                        url: self.url.clone(),
                        expected: self.size,
                        actual: self.position,
                    });
                }
                if let Some(h) = &mut self.hasher {
                    h.update(&c);
                }
                Ok(Some(c))
            }
            None => {
                if self.position != self.size {
                    return Err(RemoteError::SizeMismatch {
                        url: self.url.clone(),
                        expected: self.size,
                        actual: self.position,
                    });
                }
                if let Some(h) = self.hasher.take() {
                    let actual = Digest::from_sha256(h.finalize().into());
                    if actual != self.digest {
                        return Err(RemoteError::DigestMismatch {
                            url: self.url.clone(),
                            expected: self.digest.to_string(),
                            actual: actual.to_string(),
                        });
                    }
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_selection_uses_containerd_matching() {
        let d = |n: u8, plat: &str| {
            serde_json::json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": format!("sha256:{}", format!("{n:02x}").repeat(32)),
                "size": 10,
                "platform": {
                    "os": plat.split('/').next().unwrap(),
                    "architecture": plat.split('/').nth(1).unwrap(),
                }
            })
        };
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_INDEX,
            "manifests": [d(1, "linux/arm64"), d(2, "linux/amd64"), d(3, "windows/amd64")]
        });
        let bytes = serde_json::to_vec(&index).unwrap();
        let idesc = descriptor(
            media::OCI_INDEX,
            &Digest::sha256(&bytes),
            bytes.len() as u64,
        )
        .unwrap();
        let pick = |p: &str| {
            let m = Matcher::only(&berth_oci::platform::parse(p).unwrap());
            select_manifest(&idesc, &bytes, &m)
        };
        assert!(pick("linux/amd64")
            .unwrap()
            .digest()
            .to_string()
            .contains("0202"));
        assert!(pick("linux/arm64")
            .unwrap()
            .digest()
            .to_string()
            .contains("0101"));
        let e = pick("linux/s390x").unwrap_err();
        assert!(e.to_string().contains("linux/s390x"), "{e}");
    }

    #[test]
    fn media_type_sniffing() {
        assert_eq!(
            sniff_media_type(br#"{"mediaType":"x/y"}"#).as_deref(),
            Some("x/y")
        );
        assert_eq!(
            sniff_media_type(br#"{"manifests":[]}"#).as_deref(),
            Some(media::OCI_INDEX)
        );
        assert_eq!(sniff_media_type(b"nope"), None);
    }
}
