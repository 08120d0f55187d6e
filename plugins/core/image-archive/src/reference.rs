//! Image references the way containerd's archive code treats them: Docker normalisation
//! (`alpine` → `docker.io/library/alpine:latest`), the familiar form written to `manifest.json`,
//! the OCI `ref.name` (just the tag) and the name translators of `ctr images import`.
//!
//! This is Docker's `reference` grammar, not the registry client's (`berth-remotes`): archives
//! need its exact messages and its familiar form, and bctr uses it without a registry client.

/// Why a reference does not parse, with Docker's wording.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid reference format")]
    Format,
    #[error("invalid reference format: repository name must be lowercase")]
    Uppercase,
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexName(String),
    #[error("repository name must not be more than 255 characters")]
    TooLong,
}

/// A name that could not be normalised or familiarised, with containerd's context.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("normalize image ref {input:?}: {source}")]
    Normalize {
        input: String,
        #[source]
        source: ReferenceError,
    },
    #[error("failed to parse {input:?}: {source}")]
    Familiarize {
        input: String,
        #[source]
        source: ReferenceError,
    },
}

/// A parsed Docker reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Named {
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The full string: `docker.io/library/alpine:3@sha256:…`.
    pub fn full(&self) -> String {
        let mut s = self.name();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The familiar string: without `docker.io/` and `library/` where Docker leaves them out.
    pub fn familiar(&self) -> String {
        let mut name = if self.domain == "docker.io" {
            match self.path.strip_prefix("library/") {
                Some(rest) if !rest.contains('/') => rest.to_owned(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        };
        if let Some(t) = &self.tag {
            name.push(':');
            name.push_str(t);
        }
        if let Some(d) = &self.digest {
            name.push('@');
            name.push_str(d);
        }
        name
    }
}

fn is_path_component(s: &str) -> bool {
    // [a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        // separator
        let sep_start = i;
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
        if i == sep_start || i == b.len() {
            return false;
        }
    }
}

fn is_domain(s: &str) -> bool {
    // domain-component(.domain-component)*(:port)?, or a bracketed IPv6 address with a port
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, after)) => {
                if ip.is_empty() || !ip.chars().all(|c| c.is_ascii_hexdigit() || c == ':') {
                    return false;
                }
                match after.strip_prefix(':') {
                    Some(p) => return !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()),
                    None => return after.is_empty(),
                }
            }
            None => return false,
        }
    } else {
        match s.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (s, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    !host.is_empty()
        && host.split('.').all(|c| {
            let b = c.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|&x| x.is_ascii_alphanumeric() || x == b'-')
        })
}

fn is_tag(s: &str) -> bool {
    // [\w][\w.-]{0,127}
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'-')
}

/// Docker's `ParseNormalizedNamed`.
pub fn parse_normalized_named(s: &str) -> Result<Named, ReferenceError> {
    if s.len() == 64
        && s.chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return Err(ReferenceError::HexName(s.to_owned()));
    }
    // Split off the digest, then the tag (a ':' after the last '/').
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => {
            berth_oci::Digest::validate(d).map_err(|_| ReferenceError::Format)?;
            (r, Some(d.to_owned()))
        }
        None => (s, None),
    };
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => {
            let i = last_slash + i;
            (&rest[..i], Some(rest[i + 1..].to_owned()))
        }
        None => (rest, None),
    };
    if let Some(t) = &tag {
        if !is_tag(t) {
            return Err(ReferenceError::Format);
        }
    }
    if name.is_empty() {
        return Err(ReferenceError::Format);
    }
    // Docker's splitDockerDomain.
    let (mut domain, mut path) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains(['.', ':'])
                || first == "localhost"
                || first.to_lowercase() != first =>
        {
            (first.to_owned(), remainder.to_owned())
        }
        _ => ("docker.io".to_owned(), name.to_owned()),
    };
    if domain == "index.docker.io" {
        domain = "docker.io".to_owned();
    }
    if domain == "docker.io" && !path.contains('/') {
        path = format!("library/{path}");
    }
    if path.to_lowercase() != path {
        return Err(ReferenceError::Uppercase);
    }
    if !is_domain(&domain) || !path.split('/').all(is_path_component) {
        return Err(ReferenceError::Format);
    }
    if domain.len() + 1 + path.len() > 255 {
        return Err(ReferenceError::TooLong);
    }
    Ok(Named {
        domain,
        path,
        tag,
        digest,
    })
}

/// containerd's `normalizeReference` (Docker's `ParseDockerRef`): normalised, `:latest` added
/// when there is neither tag nor digest, the tag dropped when there is a digest.
pub fn normalize_docker_ref(s: &str) -> Result<String, NameError> {
    let mut n = parse_normalized_named(s).map_err(|source| NameError::Normalize {
        input: s.to_owned(),
        source,
    })?;
    if n.digest.is_some() {
        n.tag = None;
    } else if n.tag.is_none() {
        n.tag = Some("latest".into());
    }
    Ok(n.full())
}

/// containerd's `familiarizeReference`: the short form `docker save` writes in RepoTags.
pub fn familiarize(s: &str) -> Result<String, NameError> {
    let mut n = parse_normalized_named(s).map_err(|source| NameError::Familiarize {
        input: s.to_owned(),
        source,
    })?;
    if n.tag.is_none() && n.digest.is_none() {
        n.tag = Some("latest".into());
    }
    Ok(n.familiar())
}

/// containerd's `ociReferenceName`: the object part of a name (`latest` of
/// `docker.io/library/alpine:latest`, `@sha256:…` of a digest reference); the name itself when
/// it does not parse as `host/path`.
pub fn oci_reference_name(name: &str) -> String {
    if name.contains("://") {
        return name.to_owned();
    }
    let (host, path) = match name.find(['/', '?', '#']) {
        Some(i) => name.split_at(i),
        None => (name, ""),
    };
    if host.is_empty() {
        return name.to_owned();
    }
    // url.Parse rejects a non-numeric port.
    if let Some((_, port)) = host.rsplit_once(':') {
        if !host.starts_with('[') && !port.chars().all(|c| c.is_ascii_digit()) {
            return name.to_owned();
        }
    }
    match path.find([':', '@']) {
        Some(i) => {
            let obj = &path[i..];
            obj.strip_prefix(':').unwrap_or(obj).to_owned()
        }
        None => String::new(),
    }
}

fn is_image_prefix(s: &str, prefix: &str) -> bool {
    match s.strip_prefix(prefix) {
        None => false,
        Some("") => true,
        Some(rest) => rest.starts_with(['/', ':', '@']),
    }
}

/// How `ctr images import` turns an OCI `ref.name` into an image name.
#[derive(Debug, Clone)]
pub enum RefTranslator {
    /// No `--base-name`: a bare tag becomes `<prefix>:<tag>`, full references stay.
    AddPrefix(String),
    /// `--base-name`: a bare tag becomes `<prefix>:<tag>`, full references outside the prefix
    /// are dropped.
    FilterPrefix(String),
}

impl RefTranslator {
    pub fn translate(&self, r: &str) -> String {
        let (prefix, check) = match self {
            RefTranslator::AddPrefix(p) => (p, false),
            RefTranslator::FilterPrefix(p) => (p, true),
        };
        if r.contains(['/', ':', '@']) {
            if check && !is_image_prefix(r, prefix) {
                return String::new();
            }
            return r.to_owned();
        }
        format!("{prefix}:{r}")
    }

    fn prefix(&self) -> &str {
        match self {
            RefTranslator::AddPrefix(p) | RefTranslator::FilterPrefix(p) => p,
        }
    }
}

/// containerd's `imageName`: the full-name annotation as is, else the translated `ref.name`.
pub fn image_name(
    annotations: &std::collections::BTreeMap<String, String>,
    translator: Option<&RefTranslator>,
) -> String {
    if let Some(n) = annotations.get(berth_oci::ANNOTATION_IMAGE_NAME) {
        if !n.is_empty() {
            return n.clone();
        }
    }
    match annotations.get(berth_oci::ANNOTATION_REF_NAME) {
        Some(n) if !n.is_empty() => match translator {
            Some(t) => t.translate(n),
            None => n.clone(),
        },
        _ => String::new(),
    }
}

/// containerd 2.x's `imageName`, as the Transfer image store names an imported manifest: a
/// full-name annotation counts only when the translator leaves it as it is (a name outside a
/// `--base-name` prefix is dropped, not kept), else the translated `ref.name`. A translator
/// without a prefix names nothing.
pub fn stored_image_name(
    annotations: &std::collections::BTreeMap<String, String>,
    translator: &RefTranslator,
) -> String {
    let translate = |r: &str| {
        if translator.prefix().is_empty() {
            String::new()
        } else {
            translator.translate(r)
        }
    };
    if let Some(n) = annotations.get(berth_oci::ANNOTATION_IMAGE_NAME) {
        if !n.is_empty() {
            return if translate(n) == *n {
                n.clone()
            } else {
                String::new()
            };
        }
    }
    match annotations.get(berth_oci::ANNOTATION_REF_NAME) {
        Some(n) if !n.is_empty() => translate(n),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        assert_eq!(
            normalize_docker_ref("tinydocker:latest").unwrap(),
            "docker.io/library/tinydocker:latest"
        );
        assert_eq!(
            normalize_docker_ref("alpine").unwrap(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            normalize_docker_ref("example.com/x/tiny:v1").unwrap(),
            "example.com/x/tiny:v1"
        );
        assert_eq!(
            normalize_docker_ref("localhost:5000/a:b").unwrap(),
            "localhost:5000/a:b"
        );
        assert_eq!(
            normalize_docker_ref("user/app").unwrap(),
            "docker.io/user/app:latest"
        );
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            normalize_docker_ref(&format!("alpine:3@{d}")).unwrap(),
            format!("docker.io/library/alpine@{d}")
        );
        assert!(normalize_docker_ref("Upper").is_err());
        assert!(normalize_docker_ref("a:b:c").is_err());
        assert!(normalize_docker_ref("").is_err());
    }

    #[test]
    fn familiar_names() {
        assert_eq!(
            familiarize("docker.io/library/multi:latest").unwrap(),
            "multi:latest"
        );
        assert_eq!(
            familiarize("docker.io/user/app").unwrap(),
            "user/app:latest"
        );
        assert_eq!(
            familiarize("example.com/x/tinydocker:v1").unwrap(),
            "example.com/x/tinydocker:v1"
        );
        assert_eq!(
            familiarize("import-2024-01-01:1.0").unwrap(),
            "import-2024-01-01:1.0"
        );
    }

    #[test]
    fn oci_ref_names() {
        assert_eq!(oci_reference_name("docker.io/library/tiny:named"), "named");
        assert_eq!(oci_reference_name("idx/multi:1"), "1");
        assert_eq!(oci_reference_name("localhost:5000/a:b"), "b");
        assert_eq!(oci_reference_name("example.com/a@sha256:ab"), "@sha256:ab");
        assert_eq!(
            oci_reference_name("example.com/a:t@sha256:ab"),
            "t@sha256:ab"
        );
        assert_eq!(oci_reference_name("tiny:named"), "tiny:named");
        assert_eq!(oci_reference_name("tiny"), "");
    }

    #[test]
    fn translators() {
        let add = RefTranslator::AddPrefix("import-2024-01-01".into());
        assert_eq!(add.translate("1.0"), "import-2024-01-01:1.0");
        assert_eq!(add.translate("docker.io/x/y:1"), "docker.io/x/y:1");
        let filter = RefTranslator::FilterPrefix("foo/bar".into());
        assert_eq!(filter.translate("latest"), "foo/bar:latest");
        assert_eq!(filter.translate("foo/bar:1"), "foo/bar:1");
        assert_eq!(filter.translate("foo/barn:1"), "");
        assert_eq!(filter.translate("other/x:1"), "");
    }

    #[test]
    fn image_names_prefer_the_full_annotation() {
        let mut a = std::collections::BTreeMap::new();
        a.insert(berth_oci::ANNOTATION_REF_NAME.to_owned(), "1.0".to_owned());
        let t = RefTranslator::AddPrefix("p".into());
        assert_eq!(image_name(&a, Some(&t)), "p:1.0");
        a.insert(
            berth_oci::ANNOTATION_IMAGE_NAME.to_owned(),
            "docker.io/library/x:1".to_owned(),
        );
        assert_eq!(image_name(&a, Some(&t)), "docker.io/library/x:1");
        assert_eq!(image_name(&Default::default(), Some(&t)), "");
    }

    #[test]
    fn stored_names_follow_containerd_2() {
        let mut a = std::collections::BTreeMap::new();
        a.insert(berth_oci::ANNOTATION_REF_NAME.to_owned(), "1.0".to_owned());
        let add = RefTranslator::AddPrefix("import-2024-01-01".into());
        let filter = RefTranslator::FilterPrefix("example.org/app".into());
        assert_eq!(stored_image_name(&a, &add), "import-2024-01-01:1.0");
        assert_eq!(stored_image_name(&a, &filter), "example.org/app:1.0");
        a.insert(
            berth_oci::ANNOTATION_IMAGE_NAME.to_owned(),
            "docker.io/library/x:1".to_owned(),
        );
        assert_eq!(stored_image_name(&a, &add), "docker.io/library/x:1");
        // Outside the base name: not stored (1.6's image_name kept it).
        assert_eq!(stored_image_name(&a, &filter), "");
        assert_eq!(image_name(&a, Some(&filter)), "docker.io/library/x:1");
        assert_eq!(
            stored_image_name(&a, &RefTranslator::AddPrefix(String::new())),
            ""
        );
        assert_eq!(stored_image_name(&Default::default(), &add), "");
    }

    #[test]
    fn errors_say_docker_s_words() {
        assert_eq!(
            normalize_docker_ref("Upper").unwrap_err().to_string(),
            "normalize image ref \"Upper\": invalid reference format: repository name must be lowercase"
        );
        assert_eq!(
            familiarize("a:b:c").unwrap_err().to_string(),
            "failed to parse \"a:b:c\": invalid reference format"
        );
    }
}
