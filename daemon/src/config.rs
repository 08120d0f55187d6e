//! berthd's configuration file, in containerd's shape, so an operator's containerd config reads
//! (nearly) unchanged: `version`, `root`, `state`, `[grpc]`, `[debug]`, `[plugins."<type>.<id>"]`,
//! `disabled_plugins`, `required_plugins`, `[proxy_plugins.<name>]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/berth/config.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// toml's message names the line, the column and the key at fault, with the offending line.
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: version {version} is not supported (use 2 or 3)")]
    Version { path: PathBuf, version: i64 },
    #[error("config: {0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Config schema version; containerd 1.x writes 2, containerd 2.x writes 3. Both are read.
    pub version: i64,
    /// Persistent data: `<root>/<plugin type>.<id>/…`.
    pub root: PathBuf,
    /// Runtime state, lost at reboot: `<state>/<plugin type>.<id>/…`.
    pub state: PathBuf,
    /// Plugins not to load, as `<type>.<id>` or a bare id.
    pub disabled_plugins: Vec<String>,
    /// Plugins whose failure must stop start-up.
    pub required_plugins: Vec<String>,
    /// Adjustment of berthd's own OOM score (0 leaves it alone).
    pub oom_score: i32,
    pub grpc: GrpcConfig,
    /// Accepted for compatibility with containerd configs and ignored: berthd's only ttrpc
    /// endpoint is the shim events service at `<grpc address>.ttrpc`.
    pub ttrpc: TtrpcConfig,
    pub debug: DebugConfig,
    /// `[plugins."<type>.<id>"]` sections, handed to each plugin as they are.
    pub plugins: BTreeMap<String, toml::Value>,
    /// Out-of-process plugins reached over gRPC.
    pub proxy_plugins: BTreeMap<String, ProxyPlugin>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    pub address: String,
    /// Owner of the socket file.
    pub uid: u32,
    /// Group of the socket file (members may use the socket: it is created 0660).
    pub gid: u32,
    pub max_recv_message_size: usize,
    pub max_send_message_size: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TtrpcConfig {
    pub address: String,
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Log level: trace, debug, info, warn, error.
    pub level: String,
    /// Log format: "text" or "json".
    pub format: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyPlugin {
    /// "snapshot" or "content", as in containerd.
    #[serde(rename = "type")]
    pub plugin_type: String,
    pub address: String,
    #[serde(default)]
    pub platform: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            version: 2,
            root: PathBuf::from(DEFAULT_ROOT),
            state: PathBuf::from(DEFAULT_STATE),
            disabled_plugins: Vec::new(),
            required_plugins: Vec::new(),
            oom_score: 0,
            grpc: GrpcConfig::default(),
            ttrpc: TtrpcConfig::default(),
            debug: DebugConfig::default(),
            plugins: BTreeMap::new(),
            proxy_plugins: BTreeMap::new(),
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        GrpcConfig {
            address: DEFAULT_ADDRESS.to_owned(),
            uid: 0,
            gid: 0,
            // containerd's defaults: 16 MiB each way.
            max_recv_message_size: 16 << 20,
            max_send_message_size: 16 << 20,
        }
    }
}

impl Default for DebugConfig {
    fn default() -> Self {
        DebugConfig {
            level: "info".to_owned(),
            format: "text".to_owned(),
        }
    }
}

impl Config {
    /// Parses a config file's text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        if !(2..=3).contains(&cfg.version) {
            return Err(ConfigError::Version {
                path: path.to_owned(),
                version: cfg.version,
            });
        }
        cfg.validate()?;
        Ok(cfg)
    }

    /// Loads `path`; when no path was given and the default file does not exist, the defaults.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, p) in [("root", &self.root), ("state", &self.state)] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an absolute path, got {:?}",
                    p.display()
                )));
            }
        }
        if self.root == self.state {
            return Err(ConfigError::Invalid(
                "root and state must be different directories".into(),
            ));
        }
        if self.grpc.address.is_empty() {
            return Err(ConfigError::Invalid(
                "grpc.address must not be empty".into(),
            ));
        }
        if !matches!(self.debug.format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "debug.format must be \"text\" or \"json\", got {:?}",
                self.debug.format
            )));
        }
        for (name, p) in &self.proxy_plugins {
            if p.address.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "proxy_plugins.{name}.address must be set"
                )));
            }
        }
        Ok(())
    }

    /// The full configuration as TOML, for `berthd config default`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", Path::new("x")).unwrap();
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(c.grpc.address, DEFAULT_ADDRESS);
    }

    #[test]
    fn containerd_shaped_file_reads() {
        let text = r#"
version = 2
root = "/tmp/r"
state = "/tmp/s"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "/tmp/s/sock"
  gid = 5
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
[proxy_plugins.fast]
  type = "snapshot"
  address = "/run/fast.sock"
"#;
        let c = Config::parse(text, Path::new("x")).unwrap();
        assert_eq!(c.grpc.gid, 5);
        assert!(c.plugins.contains_key("io.containerd.gc.v1.scheduler"));
        assert_eq!(c.proxy_plugins["fast"].plugin_type, "snapshot");
    }

    #[test]
    fn errors_name_line_and_key() {
        let err = Config::parse("version = 2\nroot = 5\n", Path::new("/etc/b.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("/etc/b.toml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("root = 5"), "{msg}");

        let err =
            Config::parse("version = 2\n[grpc]\nadress = \"/x\"\n", Path::new("c")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("line 3") && msg.contains("adress"), "{msg}");

        let err = Config::parse("version = 1\n", Path::new("c")).unwrap_err();
        assert!(err.to_string().contains("version 1 is not supported"));
        assert!(Config::parse("root = \"rel\"\n", Path::new("c")).is_err());
    }

    #[test]
    fn default_config_round_trips() {
        let text = Config::default().to_toml();
        let back = Config::parse(&text, Path::new("default")).unwrap();
        assert_eq!(back.to_toml(), text);
    }
}
