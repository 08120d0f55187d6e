use oci_spec::runtime::LinuxSeccomp;

/// A `linux.seccomp` from its JSON, as it appears in a bundle's config.json.
pub(crate) fn profile(json: &str) -> LinuxSeccomp {
    match serde_json::from_str(json) {
        Ok(profile) => profile,
        Err(err) => panic!("test profile does not parse: {err}\n{json}"),
    }
}
