//! Content digests as containerd writes them: `<algorithm>:<lowercase hex>`.

use crate::MetaError;

/// Checks `algo:hex` with a known algorithm and the right hex length.
pub fn validate(d: &str) -> Result<(), MetaError> {
    let bad = |why: &str| MetaError::InvalidArgument(format!("digest {d:?} {why}"));
    let (algo, hex) = d
        .split_once(':')
        .ok_or_else(|| bad("is not of the form algorithm:hex"))?;
    let len = match algo {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad("uses an unsupported algorithm")),
    };
    if hex.len() != len
        || !hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad(&format!("must have {len} lowercase hex characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn shapes() {
        let ok = format!("sha256:{}", "a".repeat(64));
        assert!(super::validate(&ok).is_ok());
        for bad in [
            "",
            "sha256",
            "sha256:",
            "md5:abcd",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            assert!(super::validate(bad).is_err(), "{bad}");
        }
    }
}
