//! Where a registry is reached, in containerd's `certs.d` shape: `<dir>/<registry>/hosts.toml`
//! (or `<dir>/_default/hosts.toml`) lists mirrors (`[host."https://…"]`, tried in file order)
//! and the `server` itself (tried last), each with its capabilities, CA files, `skip_verify`,
//! `override_path` and extra headers.
//!
//! Without a file the registry is its own only host: `https://<host>/v2`, except Docker Hub
//! (`registry-1.docker.io`) and loopback hosts (`localhost`, `127.0.0.1`, `::1`, any port), which
//! are plain HTTP, as containerd's resolver treats them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::reference::registry_host;
use crate::RemoteError;

/// What a host may be used for (containerd's `HostCapabilities`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch blobs and manifests by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    pub push: bool,
}

impl Capabilities {
    pub const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One host a registry is reached through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryHost {
    /// `http` or `https`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// The API root on that host, `/v2` unless `override_path` said otherwise.
    pub path: String,
    pub capabilities: Capabilities,
    /// PEM files of extra CAs to trust for this host.
    pub ca: Vec<PathBuf>,
    /// Accept any certificate (`skip_verify = true`).
    pub skip_verify: bool,
    /// Headers sent with every request to this host.
    pub headers: Vec<(String, String)>,
}

impl RegistryHost {
    /// The default host of `registry` (a name from a reference: `docker.io`, `localhost:5000`).
    pub fn default_for(registry: &str) -> RegistryHost {
        let host = registry_host(registry).to_owned();
        RegistryHost {
            scheme: if is_localhost(&host) { "http" } else { "https" }.to_owned(),
            host,
            path: "/v2".to_owned(),
            capabilities: Capabilities::ALL,
            ca: Vec::new(),
            skip_verify: false,
            headers: Vec::new(),
        }
    }

    /// `scheme://host/path`, the prefix of every request URL (no trailing `/`).
    pub fn base_url(&self) -> String {
        format!("{}://{}{}", self.scheme, self.host, self.path)
    }
}

/// Loopback names containerd talks plain HTTP to (`docker.MatchLocalhost`), with or without port.
pub fn is_localhost(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[::1]:5000` or `[::1]`
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() > 1 {
        // A bare IPv6 address has no port.
        host
    } else {
        host.split(':').next().unwrap_or(host)
    };
    matches!(name, "localhost" | "127.0.0.1" | "::1")
}

/// The hosts of `registry`: read from `<dir>/<registry>/hosts.toml` (else `<dir>/_default/`)
/// when `dir` is given and the file exists, else the default host.
pub fn hosts_for(registry: &str, dir: Option<&Path>) -> Result<Vec<RegistryHost>, RemoteError> {
    if let Some(dir) = dir {
        for name in [registry, "_default"] {
            let folder = dir.join(name);
            let path = folder.join("hosts.toml");
            match std::fs::read_to_string(&path) {
                Ok(text) => return parse_hosts_toml(registry, &text, &path, &folder),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(RemoteError::HostsConfigIo { path, source }),
            }
        }
    }
    Ok(vec![RegistryHost::default_for(registry)])
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HostEntry {
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    skip_verify: Option<bool>,
    override_path: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    /// Client certificates: read so a file that has them parses; not used yet.
    client: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostsFile {
    server: Option<String>,
    capabilities: Option<Vec<String>>,
    ca: Option<OneOrMany>,
    skip_verify: Option<bool>,
    override_path: Option<bool>,
    header: Option<BTreeMap<String, OneOrMany>>,
    client: Option<toml::Value>,
    /// Keys with their place in the file: mirrors are tried in the order they are written.
    #[serde(default)]
    host: BTreeMap<toml::Spanned<String>, HostEntry>,
}

/// Parses a `hosts.toml`; `folder` is where relative CA paths are found.
pub fn parse_hosts_toml(
    registry: &str,
    text: &str,
    path: &Path,
    folder: &Path,
) -> Result<Vec<RegistryHost>, RemoteError> {
    let bad = |reason: String| RemoteError::HostsConfig {
        path: path.to_owned(),
        reason,
    };
    let file: HostsFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    let mut mirrors: Vec<_> = file.host.into_iter().collect();
    mirrors.sort_by_key(|(k, _)| k.span().start);
    let mut hosts = Vec::with_capacity(mirrors.len() + 1);
    for (key, entry) in mirrors {
        hosts.push(host_from(key.get_ref(), entry, folder).map_err(&bad)?);
    }
    let server_entry = HostEntry {
        capabilities: file.capabilities,
        ca: file.ca,
        skip_verify: file.skip_verify,
        override_path: file.override_path,
        header: file.header,
        client: file.client,
    };
    let server = match file.server {
        Some(s) => host_from(&s, server_entry, folder).map_err(&bad)?,
        None => {
            let mut d = RegistryHost::default_for(registry);
            let configured = host_from(&d.base_url(), server_entry, folder).map_err(&bad)?;
            d.capabilities = configured.capabilities;
            d.ca = configured.ca;
            d.skip_verify = configured.skip_verify;
            d.headers = configured.headers;
            d
        }
    };
    hosts.push(server);
    Ok(hosts)
}

fn host_from(url: &str, entry: HostEntry, folder: &Path) -> Result<RegistryHost, String> {
    let (scheme, rest) = match url.split_once("://") {
        Some((s @ ("http" | "https"), rest)) => (s.to_owned(), rest),
        Some((s, _)) => return Err(format!("{url:?}: scheme {s:?} is neither http nor https")),
        None => ("https".to_owned(), url),
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].trim_end_matches('/')),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let path = if entry.override_path.unwrap_or(false) || path.ends_with("/v2") {
        path.to_owned()
    } else {
        format!("{path}/v2")
    };
    let capabilities = match entry.capabilities {
        None => Capabilities::ALL,
        Some(list) => {
            let mut c = Capabilities {
                pull: false,
                resolve: false,
                push: false,
            };
            for cap in list {
                match cap.as_str() {
                    "pull" => c.pull = true,
                    "resolve" => c.resolve = true,
                    "push" => c.push = true,
                    other => {
                        return Err(format!(
                            "host {url:?}: unknown capability {other:?} (pull, resolve, push)"
                        ))
                    }
                }
            }
            c
        }
    };
    if entry.client.is_some() {
        tracing::warn!(
            host = url,
            "client certificates in hosts.toml are not supported yet; ignored"
        );
    }
    let ca = entry
        .ca
        .map(OneOrMany::into_vec)
        .unwrap_or_default()
        .into_iter()
        .map(|p| folder.join(p))
        .collect();
    let headers = entry
        .header
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(k, v)| v.into_vec().into_iter().map(move |v| (k.clone(), v)))
        .collect();
    Ok(RegistryHost {
        scheme,
        host: host.to_owned(),
        path,
        capabilities,
        ca,
        skip_verify: entry.skip_verify.unwrap_or(false),
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let h = RegistryHost::default_for("docker.io");
        assert_eq!(h.base_url(), "https://registry-1.docker.io/v2");
        assert_eq!(h.capabilities, Capabilities::ALL);
        assert_eq!(
            RegistryHost::default_for("ghcr.io").base_url(),
            "https://ghcr.io/v2"
        );
        for local in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "::1",
        ] {
            assert_eq!(RegistryHost::default_for(local).scheme, "http", "{local}");
        }
        assert!(!is_localhost("localhost.example.com:5000"));
        assert!(!is_localhost("127.0.0.2"));
        assert!(!is_localhost("fe80::1"));
    }

    #[test]
    fn hosts_toml_mirrors_in_file_order_then_the_server() {
        let text = r#"
server = "https://registry.example.com"

[host."https://zmirror.example.com"]
  capabilities = ["pull", "resolve"]
  ca = "mirror-ca.pem"
  [host."https://zmirror.example.com".header]
    x-custom = "one"
    x-multi = ["a", "b"]

[host."http://amirror.local:5000/prefix"]
  capabilities = ["pull"]
  skip_verify = true
  override_path = true
"#;
        let folder = Path::new("/etc/containerd/certs.d/docker.io");
        let hosts =
            parse_hosts_toml("docker.io", text, &folder.join("hosts.toml"), folder).unwrap();
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0].base_url(), "https://zmirror.example.com/v2");
        assert!(hosts[0].capabilities.resolve && !hosts[0].capabilities.push);
        assert_eq!(hosts[0].ca, vec![folder.join("mirror-ca.pem")]);
        assert_eq!(
            hosts[0].headers,
            vec![
                ("x-custom".to_owned(), "one".to_owned()),
                ("x-multi".to_owned(), "a".to_owned()),
                ("x-multi".to_owned(), "b".to_owned())
            ]
        );
        assert_eq!(hosts[1].base_url(), "http://amirror.local:5000/prefix");
        assert!(hosts[1].skip_verify);
        assert!(hosts[1].capabilities.pull && !hosts[1].capabilities.resolve);
        assert_eq!(hosts[2].base_url(), "https://registry.example.com/v2");
        assert_eq!(hosts[2].capabilities, Capabilities::ALL);
    }

    #[test]
    fn without_server_the_default_host_takes_the_top_level_settings() {
        let hosts = parse_hosts_toml(
            "localhost:5000",
            "skip_verify = true\ncapabilities = [\"pull\"]\n",
            Path::new("x/hosts.toml"),
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(hosts.len(), 1);
        assert_eq!(hosts[0].base_url(), "http://localhost:5000/v2");
        assert!(hosts[0].skip_verify && !hosts[0].capabilities.push);
    }

    #[test]
    fn bad_files_name_the_file_and_the_problem() {
        let p = Path::new("/d/r/hosts.toml");
        let e = parse_hosts_toml("r", "[host.\"ftp://x\"]\n", p, Path::new("/d/r")).unwrap_err();
        assert!(
            e.to_string().contains("/d/r/hosts.toml") && e.to_string().contains("ftp"),
            "{e}"
        );
        let e = parse_hosts_toml(
            "r",
            "[host.\"https://x\"]\ncapabilities = [\"fly\"]\n",
            p,
            Path::new("/d/r"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown capability \"fly\""), "{e}");
        let e = parse_hosts_toml("r", "sever = \"x\"\n", p, Path::new("/d/r")).unwrap_err();
        assert!(e.to_string().contains("sever"), "{e}");
    }

    #[test]
    fn files_are_found_per_registry_then_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            hosts_for("localhost:5000", Some(dir.path())).unwrap(),
            vec![RegistryHost::default_for("localhost:5000")]
        );
        std::fs::create_dir_all(dir.path().join("_default")).unwrap();
        std::fs::write(
            dir.path().join("_default/hosts.toml"),
            "server = \"https://fallback.example\"\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("localhost:5000")).unwrap();
        std::fs::write(
            dir.path().join("localhost:5000/hosts.toml"),
            "server = \"http://localhost:5000\"\n[host.\"http://m:1\"]\n",
        )
        .unwrap();
        let h = hosts_for("localhost:5000", Some(dir.path())).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].base_url(), "http://m:1/v2");
        let h = hosts_for("other.example", Some(dir.path())).unwrap();
        assert_eq!(h[0].base_url(), "https://fallback.example/v2");
    }
}
