//! `[plugins."io.containerd.snapshotter.v1.devmapper"]`, in containerd's shape.

use std::path::PathBuf;

use serde::Deserialize;

/// The plugin's config section. containerd's keys; `device_prefix` is Berth's own.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct Config {
    /// The thin pool (a device-mapper device made beforehand, e.g. with
    /// `scripts/create-pool.sh`). Without it the plugin is skipped.
    pub pool_name: String,
    /// Where the driver keeps its files (device state, scratch mount points); the plugin's
    /// root directory when empty.
    pub root_path: String,
    /// The size of the base device every snapshot without parent starts from (`10GB`; units are
    /// binary, as containerd's: 1GB = 1 GiB). Default 10GB.
    pub base_image_size: String,
    /// Remove devices on a background thread instead of while the caller waits.
    pub async_remove: bool,
    /// Discard a device's blocks before deleting it (returns space to a loop-backed pool's
    /// file).
    pub discard_blocks: bool,
    /// `ext4` (default) or `xfs`.
    pub fs_type: String,
    /// Extra `mkfs` options for the base device.
    pub fs_options: String,
    /// Prefix of the device names (`<prefix>-snap-<id>`, `<prefix>-base`); the pool name when
    /// empty. Two drivers sharing one pool need different prefixes.
    pub device_prefix: String,
}

/// A config checked and with its defaults applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub pool_name: String,
    pub root_path: Option<PathBuf>,
    pub base_size: u64,
    pub async_remove: bool,
    pub discard_blocks: bool,
    pub fs_type: FsType,
    pub fs_options: Vec<String>,
    pub device_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "base_image_size {0:?}: not a size (a number with an optional unit: 512MB, 10GB, 1TiB)"
    )]
    BadSize(String),
    #[error("base_image_size {0:?}: too small, the base device needs at least 16MB")]
    TooSmall(String),
    #[error("fs_type {0:?}: must be ext4 or xfs")]
    BadFsType(String),
    #[error("device name prefix {0:?}: must be 1 to 100 characters of [A-Za-z0-9._-]")]
    BadPrefix(String),
}

/// The default base device size, as containerd's.
pub const DEFAULT_BASE_SIZE: &str = "10GB";

impl Config {
    /// `None` when no pool is configured (the plugin does not apply).
    pub fn settings(&self) -> Result<Option<Settings>, ConfigError> {
        if self.pool_name.is_empty() {
            return Ok(None);
        }
        let size_text = if self.base_image_size.is_empty() {
            DEFAULT_BASE_SIZE
        } else {
            &self.base_image_size
        };
        let base_size =
            parse_size(size_text).ok_or_else(|| ConfigError::BadSize(size_text.to_owned()))?;
        if base_size < 16 << 20 {
            return Err(ConfigError::TooSmall(size_text.to_owned()));
        }
        let fs_type = match self.fs_type.as_str() {
            "" | "ext4" => FsType::Ext4,
            "xfs" => FsType::Xfs,
            other => return Err(ConfigError::BadFsType(other.to_owned())),
        };
        let device_prefix = if self.device_prefix.is_empty() {
            self.pool_name.clone()
        } else {
            self.device_prefix.clone()
        };
        let ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if device_prefix.len() > 100 || !device_prefix.chars().all(ok) {
            return Err(ConfigError::BadPrefix(device_prefix));
        }
        Ok(Some(Settings {
            pool_name: self.pool_name.clone(),
            root_path: (!self.root_path.is_empty()).then(|| PathBuf::from(&self.root_path)),
            base_size,
            async_remove: self.async_remove,
            discard_blocks: self.discard_blocks,
            fs_type,
            fs_options: self
                .fs_options
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            device_prefix,
        }))
    }
}

/// `8GB`, `512 MiB`, `1048576`, `1.5g`: a number and an optional unit (k, m, g, t, p, with or
/// without `i` and `b`, any case), binary multiples as containerd's (`go-units.RAMInBytes`).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let shift = match unit {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        _ => return None,
    };
    if num.is_empty() {
        return None;
    }
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(1u64 << shift);
    }
    let f: f64 = num.parse().ok()?;
    let bytes = f * (1u64 << shift) as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_containerds() {
        assert_eq!(parse_size("8GB"), Some(8 << 30));
        assert_eq!(parse_size("8gib"), Some(8 << 30));
        assert_eq!(parse_size("512 MB"), Some(512 << 20));
        assert_eq!(parse_size("1048576"), Some(1 << 20));
        assert_eq!(parse_size("1.5k"), Some(1536));
        assert_eq!(parse_size("10b"), Some(10));
        assert_eq!(parse_size("GB"), None);
        assert_eq!(parse_size("8XB"), None);
        assert_eq!(parse_size("-1"), None);
        assert_eq!(parse_size("99999999999P"), None);
    }

    #[test]
    fn no_pool_means_not_configured() {
        assert_eq!(Config::default().settings(), Ok(None));
    }

    #[test]
    fn defaults_and_errors() {
        let c = Config {
            pool_name: "pool".into(),
            ..Config::default()
        };
        let s = c.settings().unwrap().unwrap();
        assert_eq!(s.base_size, 10 << 30);
        assert_eq!(s.fs_type, FsType::Ext4);
        assert_eq!(s.device_prefix, "pool");
        let bad = Config {
            fs_type: "btrfs".into(),
            ..c.clone()
        };
        assert_eq!(bad.settings(), Err(ConfigError::BadFsType("btrfs".into())));
        let small = Config {
            base_image_size: "1MB".into(),
            ..c.clone()
        };
        assert!(matches!(small.settings(), Err(ConfigError::TooSmall(_))));
        let toml: Config = toml::from_str(
            "pool_name = \"p\"\nbase_image_size = \"64MB\"\nasync_remove = true\nfs_options = \"-m 0\"\nunknown_key = 1\n",
        )
        .unwrap();
        let s = toml.settings().unwrap().unwrap();
        assert_eq!(s.base_size, 64 << 20);
        assert!(s.async_remove);
        assert_eq!(s.fs_options, vec!["-m".to_string(), "0".to_string()]);
    }
}
