//! Registry authentication: `WWW-Authenticate` challenges, credentials and where they come from.
//!
//! A request goes out anonymously (or with what an earlier challenge for the same host and scope
//! earned). On 401 the challenge says how to authenticate: `Basic` sends the credentials on every
//! request to that host; `Bearer realm=…,service=…,scope=…` fetches a token from the realm (with
//! the credentials, when there are any) and retries with it. Credentials come from the sources
//! the client was built with, tried in order: fixed ones, a Docker `config.json`, or a callback
//! (the Transfer API asks its client over the stream).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use futures::future::BoxFuture;
use serde::Deserialize;

use crate::error::CredentialsTried;
use crate::RemoteError;

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic {
        realm: Option<String>,
    },
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// A scheme the client does not speak, by name.
    Other(String),
}

/// Parses a `WWW-Authenticate` value: one or more challenges, each a scheme followed by
/// comma-separated `key=value` or `key="quoted value"` parameters.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out = Vec::new();
    let mut current: Option<(String, HashMap<String, String>)> = None;
    let mut rest = header.trim();
    while !rest.is_empty() {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            break;
        }
        // A token: either a parameter name (followed by `=`) or a new scheme.
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        let after = rest[end..].trim_start();
        if let Some(value_part) = after.strip_prefix('=') {
            let value_part = value_part.trim_start();
            let (value, remaining) = if let Some(q) = value_part.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut consumed = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            consumed = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[consumed..])
            } else {
                let end = value_part.find(',').unwrap_or(value_part.len());
                (value_part[..end].trim().to_owned(), &value_part[end..])
            };
            if let Some((_, params)) = current.as_mut() {
                params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remaining;
        } else {
            if let Some(done) = current.take() {
                out.push(build_challenge(done));
            }
            current = Some((token.to_owned(), HashMap::new()));
            rest = after;
        }
    }
    if let Some(done) = current.take() {
        out.push(build_challenge(done));
    }
    out
}

fn build_challenge((scheme, mut params): (String, HashMap<String, String>)) -> Challenge {
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Challenge::Basic {
            realm: params.remove("realm"),
        },
        "bearer" => match params.remove("realm") {
            Some(realm) => Challenge::Bearer {
                realm,
                service: params.remove("service"),
                scope: params.remove("scope"),
            },
            None => Challenge::Other(scheme),
        },
        _ => Challenge::Other(scheme),
    }
}

/// A user name and password (or token) for a registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }

    /// The `Authorization` value for Basic authentication.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Asks for the credentials of a host (the registry host being contacted, e.g.
/// `registry-1.docker.io`); `None` means "none for this host".
pub type CredentialCallback = Arc<
    dyn Fn(String) -> BoxFuture<'static, Result<Option<Credentials>, RemoteError>> + Send + Sync,
>;

/// Where credentials come from; a client tries its sources in order, the first with an answer
/// wins.
#[derive(Clone)]
pub enum CredentialSource {
    /// The same credentials for every host.
    Static(Credentials),
    /// Docker's `config.json` (`auths.<host>.auth`, or `username`/`password`).
    DockerConfig(PathBuf),
    /// The caller decides, per host.
    Callback(CredentialCallback),
}

impl std::fmt::Debug for CredentialSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CredentialSource::Static(c) => f.debug_tuple("Static").field(c).finish(),
            CredentialSource::DockerConfig(p) => f.debug_tuple("DockerConfig").field(p).finish(),
            CredentialSource::Callback(_) => f.write_str("Callback"),
        }
    }
}

impl CredentialSource {
    /// Docker's own config file: `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub fn docker_default() -> Option<CredentialSource> {
        let path = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
        };
        Some(CredentialSource::DockerConfig(path))
    }
}

/// The credentials for `host` from `sources`, and what was tried (for a 401's message).
pub(crate) async fn lookup(
    sources: &[CredentialSource],
    host: &str,
) -> Result<(Option<Credentials>, CredentialsTried), RemoteError> {
    let mut looked_in = Vec::new();
    for source in sources {
        match source {
            CredentialSource::Static(c) => return Ok((Some(c.clone()), CredentialsTried::Static)),
            CredentialSource::DockerConfig(path) => {
                // A small file, but still a blocking read: off the async threads.
                let (file, h) = (path.clone(), host.to_owned());
                let found =
                    tokio::task::spawn_blocking(move || docker_config_credentials(&file, &h))
                        .await??;
                if let Some(c) = found {
                    let tried = CredentialsTried::DockerConfig {
                        path: path.clone(),
                        host: host.to_owned(),
                    };
                    return Ok((Some(c), tried));
                }
                looked_in.push(path.display().to_string());
            }
            CredentialSource::Callback(cb) => {
                if let Some(c) = cb(host.to_owned()).await? {
                    return Ok((Some(c), CredentialsTried::Callback));
                }
                looked_in.push("the client's callback".to_owned());
            }
        }
    }
    Ok((None, CredentialsTried::None { looked_in }))
}

#[derive(Deserialize)]
struct DockerConfigFile {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// The names Docker files a registry host under: the host itself, and for Docker Hub the legacy
/// `https://index.docker.io/v1/` that `docker login` writes.
fn config_keys_match(key: &str, host: &str) -> bool {
    let bare = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let bare = bare.split('/').next().unwrap_or(bare);
    let hub = |h: &str| {
        matches!(
            h,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.docker.io"
        )
    };
    bare == host || (hub(bare) && hub(host))
}

/// Credentials for `host` in a Docker `config.json`; a missing file or entry is `None`, a file
/// that cannot be read or parsed is an error naming it.
pub fn docker_config_credentials(
    path: &Path,
    host: &str,
) -> Result<Option<Credentials>, RemoteError> {
    let bad = |reason: String| RemoteError::CredentialsFile {
        path: path.to_owned(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let file: DockerConfigFile = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    // An exact key first, then the aliases.
    let mut entries: Vec<_> = file.auths.iter().collect();
    entries.sort_by_key(|(k, _)| (k.as_str() != host, k.as_str()));
    for (key, entry) in entries {
        if !config_keys_match(key, host) {
            continue;
        }
        if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(auth.trim())
                .map_err(|e| bad(format!("auths.{key:?}.auth is not base64: {e}")))?;
            let raw = String::from_utf8(raw)
                .map_err(|_| bad(format!("auths.{key:?}.auth is not UTF-8")))?;
            let (user, pass) = raw
                .split_once(':')
                .ok_or_else(|| bad(format!("auths.{key:?}.auth is not user:password")))?;
            return Ok(Some(Credentials::new(user, pass)));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials::new(u.clone(), p.clone())));
        }
    }
    Ok(None)
}

#[derive(Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
}

/// Fetches a bearer token from `realm` for `scopes` (GET, as Distribution's token spec; the
/// credentials, when given, as Basic authentication).
pub(crate) async fn fetch_token(
    http: &reqwest::Client,
    realm: &str,
    service: Option<&str>,
    scopes: &[String],
    creds: Option<&Credentials>,
) -> Result<String, RemoteError> {
    let err = |reason: String| RemoteError::Token {
        realm: realm.to_owned(),
        reason,
    };
    let mut url = reqwest::Url::parse(realm).map_err(|e| err(format!("invalid realm: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        if let Some(s) = service {
            q.append_pair("service", s);
        }
        for s in scopes {
            q.append_pair("scope", s);
        }
    }
    let mut req = http.get(url);
    if let Some(c) = creds {
        req = req.basic_auth(&c.username, Some(&c.password));
    }
    let resp = req.send().await.map_err(|e| err(crate::error::chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(err(format!("answered {status}")));
    }
    let body = resp.bytes().await.map_err(|e| err(e.to_string()))?;
    let t: TokenResponse =
        serde_json::from_slice(&body).map_err(|e| err(format!("invalid token response: {e}")))?;
    t.token
        .or(t.access_token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| err("the response holds no token".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
        // Scopes with commas inside quotes, unquoted values, spaces and an escaped quote.
        let c = parse_challenges(
            r#"bearer realm=https://r/t , scope="repository:a:pull,push repository:b:pull", service="s\"q""#,
        );
        assert_eq!(
            c,
            vec![Challenge::Bearer {
                realm: "https://r/t".into(),
                service: Some("s\"q".into()),
                scope: Some("repository:a:pull,push repository:b:pull".into()),
            }]
        );
    }

    #[test]
    fn basic_and_several_challenges() {
        assert_eq!(
            parse_challenges(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic {
                realm: Some("Registry Realm".into())
            }]
        );
        assert_eq!(
            parse_challenges(r#"Negotiate, Basic realm="x", Bearer realm="https://t""#),
            vec![
                Challenge::Other("Negotiate".into()),
                Challenge::Basic {
                    realm: Some("x".into())
                },
                Challenge::Bearer {
                    realm: "https://t".into(),
                    service: None,
                    scope: None
                }
            ]
        );
        assert_eq!(
            parse_challenges("Bearer service=x"),
            vec![Challenge::Other("Bearer".into())],
            "a bearer challenge without realm cannot be answered"
        );
        assert!(parse_challenges("").is_empty());
    }

    #[test]
    fn docker_config_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        assert_eq!(docker_config_credentials(&path, "x").unwrap(), None);
        std::fs::write(
            &path,
            r#"{"auths": {
                "https://index.docker.io/v1/": {"auth": "aHViOnNlY3JldA=="},
                "localhost:5000": {"username": "u", "password": "p"},
                "bad.example": {"auth": "!!"}
            }}"#,
        )
        .unwrap();
        assert_eq!(
            docker_config_credentials(&path, "registry-1.docker.io").unwrap(),
            Some(Credentials::new("hub", "secret"))
        );
        assert_eq!(
            docker_config_credentials(&path, "localhost:5000").unwrap(),
            Some(Credentials::new("u", "p"))
        );
        assert_eq!(docker_config_credentials(&path, "ghcr.io").unwrap(), None);
        let e = docker_config_credentials(&path, "bad.example").unwrap_err();
        assert!(e.to_string().contains("not base64"), "{e}");
        assert!(e.to_string().contains("config.json"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(docker_config_credentials(&path, "x").is_err());
    }

    #[test]
    fn basic_header_and_debug_hide_nothing_they_should_not() {
        let c = Credentials::new("user", "pa:ss");
        assert_eq!(c.basic_header(), "Basic dXNlcjpwYTpzcw==");
        assert!(!format!("{c:?}").contains("pa:ss"));
    }
}
