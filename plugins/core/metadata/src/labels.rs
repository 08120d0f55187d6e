//! Label limits, as containerd enforces them.

use crate::MetaError;

/// Key and value together may not exceed this many bytes.
pub const MAX_SIZE: usize = 4096;

pub fn validate(key: &str, value: &str) -> Result<(), MetaError> {
    if key.is_empty() {
        return Err(MetaError::InvalidArgument(
            "label key must not be empty".into(),
        ));
    }
    let size = key.len() + value.len();
    if size > MAX_SIZE {
        let shown: String = key.chars().take(64).collect();
        return Err(MetaError::InvalidArgument(format!(
            "label key and value length ({size} bytes) greater than maximum size ({MAX_SIZE} bytes), key: {shown}"
        )));
    }
    Ok(())
}
