//! The client and its per-repository handle: hosts, HTTP clients per TLS setup, and every request
//! going through one authenticating `send`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};

use crate::auth::{self, Challenge, CredentialSource, Credentials};
use crate::error::{chain, CredentialsTried};
use crate::hosts::{hosts_for, RegistryHost};
use crate::reference::Reference;
use crate::RemoteError;

/// How a [`RegistryClient`] behaves; `Default` is anonymous access with the default hosts.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// containerd's `config_path` for registries (`/etc/containerd/certs.d`): where
    /// `<registry>/hosts.toml` files are looked for. `None`: every registry is its default host.
    pub hosts_dir: Option<PathBuf>,
    /// Where credentials come from, tried in order.
    pub credentials: Vec<CredentialSource>,
    pub user_agent: String,
    /// Blobs up to this size are pushed in one PUT; larger ones in PATCH chunks of
    /// `upload_chunk_size`.
    pub monolithic_upload_limit: u64,
    pub upload_chunk_size: usize,
    /// The largest manifest or index accepted (they are held in memory).
    pub max_manifest_size: u64,
    /// How long a TCP (and TLS) connection to a registry host may take.
    pub connect_timeout: Duration,
    /// How long a registry may send nothing — no response headers, no body bytes — before the
    /// request is given up on: a registry that hangs fails the pull with a timeout instead of
    /// holding it forever. A slow but moving download never trips it.
    pub read_timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            hosts_dir: None,
            credentials: Vec::new(),
            user_agent: format!("berth/{}", env!("CARGO_PKG_VERSION")),
            monolithic_upload_limit: 16 << 20,
            upload_chunk_size: 8 << 20,
            // Distribution refuses manifests over 4 MiB.
            max_manifest_size: 4 << 20,
            // containerd's dialer gives a connection 30 s.
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// The registry client. Cloning is cheap (one `Arc`): share one client between parallel
/// downloads, so connections and tokens are reused.
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    /// The HTTP clients (connection pools) of each TLS setup, keyed by CA files and skip_verify.
    http: Mutex<HashMap<String, HttpClients>>,
    /// What earlier challenges earned, per host.
    auth: Mutex<HashMap<String, HostAuth>>,
}

#[derive(Default)]
struct HostAuth {
    /// The host asked for Basic: send it with every request.
    basic: Option<String>,
    /// Bearer tokens by scope.
    tokens: HashMap<String, String>,
}

/// What a request needs permission for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Pull,
    Push,
}

/// One host of a repository with the HTTP clients for its TLS setup.
#[derive(Clone)]
pub(crate) struct Host {
    pub(crate) config: RegistryHost,
    pub(crate) http: reqwest::Client,
    /// For requests that send a body (blob uploads). reqwest's read timeout runs from the moment
    /// a request is sent until its response headers arrive, so it would also cut an upload that
    /// simply takes longer than the timeout to send; uploads get the connect timeout only.
    pub(crate) upload: reqwest::Client,
}

/// A TLS setup's clients: see [`Host`].
#[derive(Clone)]
struct HttpClients {
    http: reqwest::Client,
    upload: reqwest::Client,
}

/// A repository on a registry (`docker.io` + `library/busybox`), reached through its hosts.
/// Cheap to clone; all pull and push operations hang off it.
#[derive(Clone)]
pub struct Repository {
    pub(crate) client: RegistryClient,
    pub(crate) registry: String,
    pub(crate) name: String,
    pub(crate) hosts: Arc<Vec<Host>>,
}

impl RegistryClient {
    pub fn new(config: ClientConfig) -> RegistryClient {
        RegistryClient {
            inner: Arc::new(Inner {
                config,
                http: Mutex::new(HashMap::new()),
                auth: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// A request that got no response: a timeout says which limit ran out, anything else is a
    /// host that cannot be reached.
    pub(crate) fn transport_error(&self, url: &str, source: reqwest::Error) -> RemoteError {
        if !source.is_timeout() {
            return RemoteError::Connect {
                url: url.to_owned(),
                source,
            };
        }
        let config = &self.inner.config;
        let what = if source.is_connect() {
            format!(
                "connecting (no connection within {:?})",
                config.connect_timeout
            )
        } else {
            format!(
                "waiting for a response (nothing for {:?})",
                config.read_timeout
            )
        };
        RemoteError::Timeout {
            url: url.to_owned(),
            what,
        }
    }

    /// The repository a reference names, with its hosts read from the hosts directory (a small
    /// file read: call it from a blocking context or accept the short read).
    pub fn repository(&self, reference: &Reference) -> Result<Repository, RemoteError> {
        let hosts = hosts_for(reference.registry(), self.inner.config.hosts_dir.as_deref())?;
        self.repository_with_hosts(reference, hosts)
    }

    /// The repository reached through the given hosts (mirrors first, as they are tried).
    pub fn repository_with_hosts(
        &self,
        reference: &Reference,
        hosts: Vec<RegistryHost>,
    ) -> Result<Repository, RemoteError> {
        let hosts = hosts
            .into_iter()
            .map(|config| {
                let HttpClients { http, upload } = self.http_for(&config)?;
                Ok(Host {
                    config,
                    http,
                    upload,
                })
            })
            .collect::<Result<Vec<_>, RemoteError>>()?;
        Ok(Repository {
            client: self.clone(),
            registry: reference.registry().to_owned(),
            name: reference.repository().to_owned(),
            hosts: Arc::new(hosts),
        })
    }

    fn http_for(&self, host: &RegistryHost) -> Result<HttpClients, RemoteError> {
        let key = format!("{:?}|{}", host.ca, host.skip_verify);
        let mut cache = self
            .inner
            .http
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(c) = cache.get(&key) {
            return Ok(c.clone());
        }
        let tls = |source| RemoteError::Tls {
            host: host.host.clone(),
            source,
        };
        let mut certs = Vec::new();
        for ca in &host.ca {
            let pem = std::fs::read(ca).map_err(|source| RemoteError::Read {
                path: ca.display().to_string(),
                source,
            })?;
            certs.extend(reqwest::Certificate::from_pem_bundle(&pem).map_err(tls)?);
        }
        let build = |read_timeout: Option<Duration>| {
            let mut builder = reqwest::Client::builder()
                .user_agent(self.inner.config.user_agent.clone())
                .connect_timeout(self.inner.config.connect_timeout)
                .danger_accept_invalid_certs(host.skip_verify);
            if let Some(t) = read_timeout {
                builder = builder.read_timeout(t);
            }
            for cert in &certs {
                builder = builder.add_root_certificate(cert.clone());
            }
            builder.build().map_err(tls)
        };
        let clients = HttpClients {
            http: build(Some(self.inner.config.read_timeout))?,
            upload: build(None)?,
        };
        cache.insert(key, clients.clone());
        Ok(clients)
    }
}

/// A request to send, rebuilt for each attempt (the body is shared, not copied).
pub(crate) struct Request {
    pub(crate) method: Method,
    pub(crate) url: String,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
    /// Other repositories the request reads (a cross-repository mount's source).
    pub(crate) extra_scopes: Vec<String>,
}

impl Request {
    pub(crate) fn new(method: Method, url: String) -> Request {
        Request {
            method,
            url,
            headers: HeaderMap::new(),
            body: None,
            extra_scopes: Vec::new(),
        }
    }

    /// Adds a header. Values come from this crate (media types, ranges, lengths) and are
    /// always valid; one that were not would be left out rather than fail the request.
    pub(crate) fn header(mut self, name: HeaderName, value: &str) -> Request {
        if let Ok(v) = HeaderValue::from_str(value) {
            self.headers.append(name, v);
        }
        self
    }
}

impl Repository {
    /// The repository name on the registry (`library/busybox`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The registry name from the reference (`docker.io`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// `<base>/<name>/<rest>` on `host`.
    pub(crate) fn url(&self, host: &Host, rest: &str) -> String {
        format!("{}/{}/{rest}", host.config.base_url(), self.name)
    }

    /// The hosts allowed to do something, in order; an error if none is.
    pub(crate) fn hosts_for(
        &self,
        capability: &'static str,
        allowed: impl Fn(&RegistryHost) -> bool,
    ) -> Result<Vec<&Host>, RemoteError> {
        let hosts: Vec<_> = self.hosts.iter().filter(|h| allowed(&h.config)).collect();
        if hosts.is_empty() {
            return Err(RemoteError::NoHost {
                registry: self.registry.clone(),
                capability,
            });
        }
        Ok(hosts)
    }

    fn scopes(&self, action: Action, extra: &[String]) -> Vec<String> {
        let actions = match action {
            Action::Pull => "pull",
            Action::Push => "pull,push",
        };
        let mut s = vec![format!("repository:{}:{actions}", self.name)];
        s.extend(extra.iter().cloned());
        s
    }

    fn cached_auth(&self, host: &str, scope_key: &str) -> Option<String> {
        let auth = self
            .client
            .inner
            .auth
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let h = auth.get(host)?;
        h.tokens
            .get(scope_key)
            .map(|t| format!("Bearer {t}"))
            .or_else(|| h.basic.clone())
    }

    async fn attempt(
        &self,
        host: &Host,
        req: &Request,
        authorization: Option<&str>,
    ) -> Result<Response, RemoteError> {
        let client = if req.body.is_some() {
            &host.upload
        } else {
            &host.http
        };
        let mut builder = client
            .request(req.method.clone(), &req.url)
            .headers(req.headers.clone());
        for (k, v) in &host.config.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        builder
            .send()
            .await
            .map_err(|source| self.client.transport_error(&req.url, source))
    }

    /// Sends `req` to `host`, answering one authentication challenge if the registry makes one.
    /// Returns the response whatever its status, except 401 after authenticating (Unauthorized,
    /// naming the credentials tried) and 403 (Denied).
    pub(crate) async fn send(
        &self,
        host: &Host,
        action: Action,
        req: Request,
    ) -> Result<Response, RemoteError> {
        let scopes = self.scopes(action, &req.extra_scopes);
        let scope_key = scopes.join(" ");
        let host_name = host.config.host.clone();
        let cached = self.cached_auth(&host_name, &scope_key);
        let mut resp = self.attempt(host, &req, cached.as_deref()).await?;
        let mut tried = CredentialsTried::None {
            looked_in: Vec::new(),
        };
        if resp.status() == StatusCode::UNAUTHORIZED {
            let challenges = resp
                .headers()
                .get_all(WWW_AUTHENTICATE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(auth::parse_challenges)
                .collect::<Vec<_>>();
            let (creds, t) =
                auth::lookup(&self.client.inner.config.credentials, &host_name).await?;
            tried = t;
            if let Some(authorization) = self
                .answer(host, &challenges, creds.as_ref(), &scopes, &scope_key)
                .await?
            {
                resp = self.attempt(host, &req, Some(&authorization)).await?;
            }
        }
        match resp.status() {
            StatusCode::UNAUTHORIZED => Err(RemoteError::Unauthorized {
                url: req.url,
                tried,
            }),
            StatusCode::FORBIDDEN => {
                let message = error_message(resp).await;
                Err(RemoteError::Denied {
                    url: req.url,
                    tried,
                    message,
                })
            }
            _ => Ok(resp),
        }
    }

    /// The `Authorization` value answering the challenges (a token fetched for a Bearer one),
    /// or `None` when they cannot be answered.
    async fn answer(
        &self,
        host: &Host,
        challenges: &[Challenge],
        creds: Option<&Credentials>,
        scopes: &[String],
        scope_key: &str,
    ) -> Result<Option<String>, RemoteError> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Some((realm, service, scope)),
            _ => None,
        });
        if let Some((realm, service, scope)) = bearer {
            // The challenge's own scope, when it gives one, is what the registry wants; ours
            // (push, mount sources) are added so one token serves the whole operation.
            let mut wanted: Vec<String> = scope.iter().cloned().collect();
            for s in scopes {
                if !wanted.contains(s) {
                    wanted.push(s.clone());
                }
            }
            let token =
                auth::fetch_token(&host.http, realm, service.as_deref(), &wanted, creds).await?;
            let mut auth = self
                .client
                .inner
                .auth
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            auth.entry(host.config.host.clone())
                .or_default()
                .tokens
                .insert(scope_key.to_owned(), token.clone());
            return Ok(Some(format!("Bearer {token}")));
        }
        let basic = challenges
            .iter()
            .any(|c| matches!(c, Challenge::Basic { .. }));
        match (basic, creds) {
            (true, Some(c)) => {
                let header = c.basic_header();
                let mut auth = self
                    .client
                    .inner
                    .auth
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                auth.entry(host.config.host.clone()).or_default().basic = Some(header.clone());
                Ok(Some(header))
            }
            _ => Ok(None),
        }
    }
}

/// The registry's error text from a response body (`{"errors":[{"code","message"}]}`), or the
/// start of the body as it is.
pub(crate) async fn error_message(resp: Response) -> String {
    let status = resp.status();
    let body = resp.bytes().await.unwrap_or_default();
    #[derive(serde::Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorEntry {
        code: Option<String>,
        message: Option<String>,
    }
    if let Ok(e) = serde_json::from_slice::<Errors>(&body) {
        let parts: Vec<String> = e
            .errors
            .into_iter()
            .map(|e| match (e.code, e.message) {
                (Some(c), Some(m)) => format!("{c}: {m}"),
                (c, m) => c.or(m).unwrap_or_default(),
            })
            .collect();
        if !parts.is_empty() {
            return parts.join("; ");
        }
    }
    let text = String::from_utf8_lossy(&body);
    let text = text.trim();
    if text.is_empty() {
        status.canonical_reason().unwrap_or("no message").to_owned()
    } else {
        text.chars().take(300).collect()
    }
}

/// A response whose status was not what the operation expects, as an error.
pub(crate) async fn unexpected(url: String, resp: Response) -> RemoteError {
    let status = resp.status().as_u16();
    let message = error_message(resp).await;
    RemoteError::Status {
        url,
        status,
        message,
    }
}

/// A response body that broke off: a registry that stopped sending (the read timeout) or a
/// connection that ended early.
pub(crate) fn body_error(url: &str, doing: &str, e: reqwest::Error) -> RemoteError {
    if e.is_timeout() {
        return RemoteError::Timeout {
            url: url.to_owned(),
            what: format!("{doing} (the registry stopped sending)"),
        };
    }
    RemoteError::InvalidResponse {
        url: url.to_owned(),
        reason: format!("{doing}: {}", chain(&e)),
    }
}

/// Reads a response body whole, refusing more than `limit` bytes.
pub(crate) async fn read_limited(
    url: &str,
    mut resp: Response,
    limit: u64,
    what: &str,
) -> Result<Bytes, RemoteError> {
    if let Some(len) = resp.content_length() {
        if len > limit {
            return Err(RemoteError::TooLarge {
                reason: format!("{what} at {url}"),
                size: len,
                limit,
            });
        }
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| body_error(url, "reading the body", e))?
    {
        buf.extend_from_slice(&chunk);
        if buf.len() as u64 > limit {
            return Err(RemoteError::TooLarge {
                reason: format!("{what} at {url}"),
                size: buf.len() as u64,
                limit,
            });
        }
    }
    Ok(Bytes::from(buf))
}
