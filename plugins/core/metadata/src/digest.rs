//! Content digests as containerd writes them, validated by the one digest type,
//! [`berth_oci::Digest`].

use crate::MetaError;

/// Checks `algorithm:hex` with a known algorithm and the right number of lowercase hex digits.
pub fn validate(d: &str) -> Result<(), MetaError> {
    berth_oci::Digest::validate(d)
        .map_err(|e| MetaError::InvalidArgument(format!("digest {d:?}: {e}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(super::validate(&ok).is_ok());
        assert!(super::validate(&format!("sha512:{}", "0".repeat(128))).is_ok());
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:abcd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            let e = super::validate(bad).unwrap_err();
            assert!(
                matches!(e, crate::MetaError::InvalidArgument(ref m) if m.contains(&format!("{bad:?}"))),
                "{bad}: {e}"
            );
        }
    }
}
