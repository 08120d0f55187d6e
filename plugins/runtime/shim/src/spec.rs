//! The bundle's `config.json`.

use std::path::Path;

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// Reads `config.json` as runc does: Go's decoder takes a missing `process.user` or
/// `process.cwd` as their zero values, where oci-spec's types require them.
pub fn load_spec(path: &Path) -> Result<Spec> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        action: "read",
        path: path.display().to_string(),
        source,
    })?;
    let mut value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))?;
    if let Some(p) = value.get_mut("process").and_then(|p| p.as_object_mut()) {
        p.entry("user")
            .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
        p.entry("cwd").or_insert_with(|| serde_json::json!("/"));
    }
    serde_json::from_value(value)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}
