//! Names of namespaces, containers, leases…: the same rule containerd applies, so a name valid on
//! one is valid on the other.

use crate::MetaError;

const MAX_LENGTH: usize = 76;
const PATTERN: &str = r"^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$";

/// Alphanumeric runs joined by single `.`, `_` or `-`, at most 76 characters.
pub fn validate(s: &str) -> Result<(), MetaError> {
    if s.is_empty() {
        return Err(MetaError::InvalidArgument(
            "identifier must not be empty".into(),
        ));
    }
    if s.len() > MAX_LENGTH {
        return Err(MetaError::InvalidArgument(format!(
            "identifier {s:?} greater than maximum length ({MAX_LENGTH} characters)"
        )));
    }
    let mut prev_sep = true; // the first character may not be a separator
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            prev_sep = false;
        } else if matches!(c, '.' | '_' | '-') && !prev_sep {
            prev_sep = true;
        } else {
            return Err(bad(s));
        }
    }
    if prev_sep {
        return Err(bad(s));
    }
    Ok(())
}

fn bad(s: &str) -> MetaError {
    MetaError::InvalidArgument(format!("identifier {s:?} must match {PATTERN}"))
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_containerd_names() {
        for ok in ["default", "k8s.io", "a", "a-b_c.d", "A1", &"x".repeat(76)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_what_containerd_rejects() {
        for bad in [
            "",
            "-a",
            "a-",
            "a..b",
            "a/b",
            "a b",
            "é",
            "..",
            &"x".repeat(77),
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        let msg = validate("bad/name").unwrap_err().to_string();
        assert_eq!(
            msg,
            r#"identifier "bad/name" must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$: invalid argument"#
        );
    }
}
