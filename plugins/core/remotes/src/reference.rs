//! Image references, normalised as Docker and containerd do (`busybox` is
//! `docker.io/library/busybox:latest`).
//!
//! The grammar and the docker.io defaults are `oci-spec`'s distribution `Reference` (a port of
//! distribution's `reference` package); this module adds the digest check of Berth's one digest
//! type, errors that name the input and say what is wrong, and the registry host a name maps to.

use std::fmt;
use std::str::FromStr;

use berth_oci::Digest;
use oci_spec::distribution::{ParseError, Reference as OciReference};

/// Docker Hub's name in references, and the host that serves its registry API.
pub const DOCKER_HUB: &str = "docker.io";
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";

/// A reference that could not be parsed, with the input and the reason.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {problem}")]
pub struct ReferenceError {
    pub input: String,
    pub problem: ReferenceProblem,
}

/// What is wrong with a reference.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceProblem {
    #[error("it is empty")]
    Empty,
    #[error("the repository name must be lowercase")]
    Uppercase,
    #[error("expected [registry[:port]/]name[:tag][@algorithm:hex]")]
    Format,
    #[error("the tag must be 1 to 128 of [A-Za-z0-9_.-], not starting with . or -")]
    Tag,
    #[error("the repository name is longer than 255 characters")]
    TooLong,
    #[error("the digest: {0}")]
    Digest(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// A normalised image reference: registry, repository, and a tag, a digest or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses and normalises `input` (`busybox`, `user/img:tag`, `localhost:5000/x@sha256:…`).
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let fail = |problem| ReferenceError {
            input: input.to_owned(),
            problem,
        };
        if input.is_empty() {
            return Err(fail(ReferenceProblem::Empty));
        }
        let parsed = OciReference::from_str(input).map_err(|e| {
            fail(match e {
                ParseError::NameEmpty => ReferenceProblem::Empty,
                ParseError::NameTooLong => ReferenceProblem::TooLong,
                ParseError::NameContainsUppercase => ReferenceProblem::Uppercase,
                ParseError::TagInvalidFormat => ReferenceProblem::Tag,
                ParseError::DigestInvalidFormat
                | ParseError::DigestInvalidLength
                | ParseError::DigestUnsupported => ReferenceProblem::Digest(Box::new(e)),
                // The grammar rejects an uppercase repository without saying so; say it, as
                // Docker does ("repository name must be lowercase").
                ParseError::ReferenceInvalidFormat if name_has_uppercase(input) => {
                    ReferenceProblem::Uppercase
                }
                // Likewise a malformed digest: say what is wrong with it.
                ParseError::ReferenceInvalidFormat => match input.split_once('@') {
                    Some((_, d)) => match Digest::parse(d) {
                        Err(de) => ReferenceProblem::Digest(Box::new(de)),
                        Ok(_) => ReferenceProblem::Format,
                    },
                    None => ReferenceProblem::Format,
                },
            })
        })?;
        let digest = parsed
            .digest()
            .map(Digest::parse)
            .transpose()
            .map_err(|e| fail(ReferenceProblem::Digest(Box::new(e))))?;
        Ok(Reference {
            registry: parsed.registry().to_owned(),
            repository: parsed.repository().to_owned(),
            tag: parsed.tag().map(str::to_owned),
            digest,
        })
    }

    /// The registry as named in references (`docker.io`, `localhost:5000`).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The host serving the registry API (`registry-1.docker.io` for `docker.io`).
    pub fn registry_host(&self) -> &str {
        registry_host(&self.registry)
    }

    /// The repository within the registry (`library/busybox`).
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What to ask the registry for: the digest when there is one (it pins the content, as in
    /// containerd), else the tag.
    pub fn object(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.as_str(),
            (None, Some(t)) => t,
            // parse() gives every reference without a digest the tag `latest`.
            (None, None) => "latest",
        }
    }

    /// The name without tag or digest (`docker.io/library/busybox`).
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        Reference::parse(&format!("{}:{tag}", self.name()))
    }

    /// The same repository pinned to `digest` (the tag, if any, is kept for display).
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }
}

fn name_has_uppercase(input: &str) -> bool {
    // The repository is what follows the first `/` when that part names a host (has `.` or `:`,
    // or is `localhost`), else the whole name; the tag and digest come after the last `/`.
    let name = input.split('@').next().unwrap_or(input);
    let rest = match name.split_once('/') {
        Some((h, r)) if h.contains('.') || h.contains(':') || h == "localhost" => r,
        _ => name,
    };
    let repo = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => &rest[..i],
        _ => rest,
    };
    repo.chars().any(|c| c.is_ascii_uppercase())
}

/// The host serving the registry API for a registry name.
pub fn registry_host(registry: &str) -> &str {
    if registry == DOCKER_HUB {
        DOCKER_HUB_REGISTRY
    } else {
        registry
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn full(s: &str) -> String {
        Reference::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    #[test]
    fn docker_normalisation() {
        // Docker's documented cases (distribution's reference/normalize_test.go).
        for (input, want) in [
            ("busybox", "docker.io/library/busybox:latest"),
            ("busybox:1.36", "docker.io/library/busybox:1.36"),
            ("library/busybox", "docker.io/library/busybox:latest"),
            ("user/img", "docker.io/user/img:latest"),
            ("docker.io/busybox", "docker.io/library/busybox:latest"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("index.docker.io/user/img:t", "docker.io/user/img:t"),
            ("test.com:5000", "docker.io/library/test.com:5000"),
            ("test.com/repo:tag", "test.com/repo:tag"),
            ("test:5000/repo", "test:5000/repo:latest"),
            ("localhost/x", "localhost/x:latest"),
            ("localhost:5000/x", "localhost:5000/x:latest"),
            ("127.0.0.1:5000/x:tag", "127.0.0.1:5000/x:tag"),
            ("a/b/c/d", "docker.io/a/b/c/d:latest"),
            ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
        ] {
            assert_eq!(full(input), want, "{input}");
        }
    }

    #[test]
    fn digests_pin_the_object() {
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.object(), D);
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{D}"));

        let r = Reference::parse(&format!("localhost:5000/a/b:1.0@{D}")).unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "a/b");
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.object(), D, "the digest wins over the tag");

        let r = Reference::parse("busybox").unwrap();
        assert_eq!(r.object(), "latest");
        assert_eq!(r.name(), "docker.io/library/busybox");
    }

    #[test]
    fn registry_hosts() {
        assert_eq!(
            Reference::parse("busybox").unwrap().registry_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            Reference::parse("ghcr.io/o/r").unwrap().registry_host(),
            "ghcr.io"
        );
        assert_eq!(
            Reference::parse("localhost:5000/x")
                .unwrap()
                .registry_host(),
            "localhost:5000"
        );
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let msg = |s: &str| Reference::parse(s).unwrap_err().to_string();
        assert_eq!(msg(""), "invalid image reference \"\": it is empty");
        assert!(
            msg("Busybox").contains("must be lowercase"),
            "{}",
            msg("Busybox")
        );
        assert!(msg("example.com/User/img:tag").contains("must be lowercase"));
        assert!(
            msg("busybox:-bad").contains("expected [registry"),
            "{}",
            msg("busybox:-bad")
        );
        assert!(msg("a//b").contains("expected [registry"));
        assert!(
            msg("busybox@sha256:abcd").contains("digest"),
            "{}",
            msg("busybox@sha256:abcd")
        );
        let long = format!("x/{}", "a".repeat(300));
        assert!(msg(&long).contains("longer than 255"), "{}", msg(&long));
        // Uppercase tags are fine.
        assert_eq!(
            full("lowercase:Uppercase"),
            "docker.io/library/lowercase:Uppercase"
        );
    }
}
