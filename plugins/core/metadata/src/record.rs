//! JSON encoding of records and the helpers every object table shares.

use std::collections::BTreeMap;

use redb::ReadableTable;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::schema::NAMESPACES;
use crate::{identifiers, labels, MetaError};

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, MetaError> {
    serde_json::from_slice(bytes).map_err(|source| MetaError::Corrupt {
        key: key.to_owned(),
        source,
    })
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, MetaError> {
    serde_json::to_vec(v).map_err(MetaError::Encode)
}

/// Nanoseconds since the Unix epoch, the resolution containerd's timestamps carry.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub(crate) fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), MetaError> {
    for (k, v) in labels {
        labels::validate(k, v)?;
    }
    Ok(())
}

/// Creating an object in a namespace creates the namespace, as in containerd.
pub(crate) fn ensure_namespace(wtx: &redb::WriteTransaction, ns: &str) -> Result<(), MetaError> {
    identifiers::validate(ns)
        .map_err(|e| MetaError::InvalidArgument(format!("namespace validation: {e}")))?;
    let mut t = wtx.open_table(NAMESPACES)?;
    if t.get(ns)?.is_none() {
        t.insert(ns, b"{\"labels\":{}}".as_slice())?;
    }
    Ok(())
}

/// Applies containerd's label field paths: `labels` replaces the whole set, `labels.<k>` one key
/// (an empty or absent value removes it). Other paths are for the caller; returns them.
pub(crate) fn apply_label_paths<'p>(
    current: &mut BTreeMap<String, String>,
    requested: &BTreeMap<String, String>,
    paths: &'p [String],
) -> Vec<&'p str> {
    let mut other = Vec::new();
    if paths.is_empty() {
        *current = requested.clone();
    }
    for path in paths {
        if path == "labels" {
            *current = requested.clone();
        } else if let Some(key) = path.strip_prefix("labels.") {
            match requested.get(key).filter(|v| !v.is_empty()) {
                Some(v) => current.insert(key.to_owned(), v.clone()),
                None => current.remove(key),
            };
        } else {
            other.push(path.as_str());
        }
    }
    current.retain(|_, v| !v.is_empty());
    other
}
