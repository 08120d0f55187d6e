//! The reference target: image references (bctr's Docker normalisation, as containerd's archive
//! code and `ctr images import` use it), digests and platform specifiers (`berth_oci`).
//!
//! Each parser parses or refuses; what parses must read back the same from the string it is
//! written as (a normalised name must be a fixed point, a digest or platform its own format).

use bctr::reference::{
    familiarize, normalize_docker_ref, oci_reference_name, parse_normalized_named, RefTranslator,
};
use berth_oci::{platform, Digest};

pub fn reference(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let s = s.as_ref();

    if let Ok(n) = parse_normalized_named(s) {
        let full = n.full();
        assert_eq!(
            parse_normalized_named(&full).as_ref(),
            Ok(&n),
            "{s:?}: its full form {full:?} reads differently"
        );
        // Docker's familiar form does not read back, in Docker's code as in ours, when a
        // docker.io path starts with something that looks like a domain (`docker.io/a.b/c` →
        // `a.b/c`) or is `library/` and 64 hex digits (refused as an image ID); everywhere else it
        // reads back as the same name.
        let familiar = n.familiar();
        let first = familiar.split_once('/').map_or("", |(f, _)| f);
        let hex64 = familiar.len() == 64
            && familiar
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let ambiguous = first.contains(['.', ':']) || first == "localhost" || hex64;
        if !ambiguous || n.domain != "docker.io" {
            assert_eq!(
                parse_normalized_named(&familiar).as_ref(),
                Ok(&n),
                "{s:?}: its familiar form {familiar:?} reads differently"
            );
        }
    }
    if let Ok(norm) = normalize_docker_ref(s) {
        assert_eq!(
            normalize_docker_ref(&norm).as_ref(),
            Ok(&norm),
            "{s:?}: normalising {norm:?} again changes it"
        );
    }
    let _ = familiarize(s);
    let _ = oci_reference_name(s);
    for t in [
        RefTranslator::AddPrefix("import".into()),
        RefTranslator::FilterPrefix("docker.io/library/busybox".into()),
    ] {
        let _ = t.translate(s);
    }

    if let Ok(d) = Digest::parse(s) {
        assert_eq!(d.as_str(), s, "a digest reads as itself");
        let _ = d.sha256_bytes();
        assert_eq!(d.encoded().len(), d.algorithm().hex_len());
    }

    if let Ok(p) = platform::parse(s) {
        let formatted = platform::format(&p);
        match platform::parse(&formatted) {
            Ok(q) => assert_eq!(
                platform::normalize(&q),
                platform::normalize(&p),
                "{s:?}: its format {formatted:?} reads differently"
            ),
            Err(e) => panic!("{s:?} parses, but its format {formatted:?} does not: {e}"),
        }
        let _ = berth_oci::Matcher::only(&p).matches(&berth_oci::host_platform());
    }
}
