//! The one digest type: `<algorithm>:<lowercase hex>`, validated as go-digest validates it (and so
//! as containerd does), and containerd's chain IDs.
//!
//! The OCI image spec registers sha256 and sha512; go-digest also knows sha384, so a digest
//! containerd accepts is accepted here. Any other algorithm is refused: no store could verify it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

/// Why a string is not a digest. The texts are go-digest's, which containerd's clients print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `:`, an empty part, or an algorithm with characters go-digest does not allow.
    #[error("invalid checksum digest format")]
    InvalidFormat,
    /// A well-formed algorithm that is not sha256, sha384 or sha512.
    #[error("unsupported digest algorithm")]
    UnsupportedAlgorithm,
    /// The hex part has the wrong length, or characters other than `0-9a-f`.
    #[error("invalid checksum digest length")]
    InvalidLength,
}

/// A digest algorithm a digest may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex encoding of a hash of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    fn parse(s: &str) -> Result<Algorithm, DigestError> {
        match s {
            "sha256" => Ok(Algorithm::Sha256),
            "sha384" => Ok(Algorithm::Sha384),
            "sha512" => Ok(Algorithm::Sha512),
            // go-digest's anchored algorithm grammar: `[a-z0-9]+([+._-][a-z0-9]+)*`.
            other
                if other.split(['+', '.', '_', '-']).all(|part| {
                    !part.is_empty()
                        && part
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                }) =>
            {
                Err(DigestError::UnsupportedAlgorithm)
            }
            _ => Err(DigestError::InvalidFormat),
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated content digest (`sha256:<64 lowercase hex>`, or sha384/sha512).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Parses and validates `s` (go-digest's `Parse`).
    pub fn parse(s: &str) -> Result<Digest, DigestError> {
        Digest::validate(s)?;
        Ok(Digest(s.to_owned()))
    }

    /// Validates `s` without keeping it (go-digest's `Validate`).
    pub fn validate(s: &str) -> Result<(), DigestError> {
        let (alg, enc) = s.split_once(':').ok_or(DigestError::InvalidFormat)?;
        if alg.is_empty() || enc.is_empty() {
            return Err(DigestError::InvalidFormat);
        }
        let alg = Algorithm::parse(alg)?;
        if enc.len() != alg.hex_len()
            || !enc
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(DigestError::InvalidLength);
        }
        Ok(())
    }

    /// The sha256 digest of `data`.
    pub fn sha256(data: &[u8]) -> Digest {
        Digest::from_sha256(Sha256::digest(data).into())
    }

    /// The digest of a finished sha256 hash.
    pub fn from_sha256(hash: [u8; 32]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(hash)))
    }

    pub fn algorithm(&self) -> Algorithm {
        // Validated on construction; the fallback is never taken.
        self.0
            .split_once(':')
            .and_then(|(a, _)| Algorithm::parse(a).ok())
            .unwrap_or(Algorithm::Sha256)
    }

    /// The hex part, after `algorithm:`.
    pub fn encoded(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, e)| e)
    }

    /// The 32 bytes of a sha256 digest; `None` for other algorithms.
    pub fn sha256_bytes(&self) -> Option<[u8; 32]> {
        if self.algorithm() != Algorithm::Sha256 {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(self.encoded(), &mut out).ok()?;
        Some(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Digest::validate(&s)?;
        Ok(Digest(s))
    }
}

impl TryFrom<&str> for Digest {
    type Error = DigestError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Digest::parse(s)
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    fn try_from(d: &oci_spec::image::Digest) -> Result<Self, Self::Error> {
        Digest::parse(d.as_ref())
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.0
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        match oci_spec::image::Digest::try_from(d.0) {
            Ok(d) => d,
            // oci-spec's grammar is wider than ours: every valid `Digest` is a valid oci-spec one.
            Err(e) => unreachable!("a valid digest is refused by oci-spec: {e}"),
        }
    }
}

impl From<&Digest> for oci_spec::image::Digest {
    fn from(d: &Digest) -> Self {
        d.clone().into()
    }
}

impl PartialEq<str> for Digest {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Digest {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Digest {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<oci_spec::image::Digest> for Digest {
    fn eq(&self, other: &oci_spec::image::Digest) -> bool {
        self.0 == other.as_ref()
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::try_from(s).map_err(serde::de::Error::custom)
    }
}

/// containerd's `identity.ChainID`: the chain ID of the last layer of `diff_ids` (the first
/// layer's is its diff ID; each next is `sha256(parent + " " + diff_id)`), `None` for no layers.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// The chain ID of every layer of `diff_ids`, bottom first (containerd's `identity.ChainIDs`).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::sha256(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_digests() {
        let a = format!("sha256:{}", "a".repeat(64));
        let d = Digest::parse(&a).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.encoded(), "a".repeat(64));
        assert_eq!(d.sha256_bytes(), Some([0xaa; 32]));
        assert_eq!(d.to_string(), a);
        Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        Digest::parse(&format!("sha384:{}", "f".repeat(96))).unwrap();
        assert_eq!(
            Digest::sha256(b"").encoded(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            Digest::parse(&format!("sha512:{}", "0".repeat(128)))
                .unwrap()
                .sha256_bytes(),
            None
        );
    }

    #[test]
    fn invalid_digests_with_go_digest_messages() {
        use DigestError::*;
        for (s, want) in [
            ("", InvalidFormat),
            ("bad", InvalidFormat),
            ("sha256:", InvalidFormat),
            (":abc", InvalidFormat),
            ("SHA256:abc", InvalidFormat),
            ("../x:abc", InvalidFormat),
            ("md5:abc", UnsupportedAlgorithm),
            ("multihash+base58:abc", UnsupportedAlgorithm),
            ("sha256:abc", InvalidLength),
            (&format!("sha256:{}", "A".repeat(64)), InvalidLength),
            (&format!("sha256:{}", "a".repeat(63)), InvalidLength),
            (&format!("sha256:{}", "g".repeat(64)), InvalidLength),
            (&format!("sha512:{}", "a".repeat(64)), InvalidLength),
        ] {
            assert_eq!(Digest::parse(s), Err(want), "{s:?}");
        }
        assert_eq!(
            DigestError::InvalidFormat.to_string(),
            "invalid checksum digest format"
        );
    }

    #[test]
    fn serde_validates() {
        let d = Digest::sha256(b"x");
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        assert!(serde_json::from_str::<Digest>(r#""sha256:x""#).is_err());
    }

    #[test]
    fn converts_to_and_from_oci_spec() {
        let d = Digest::sha256(b"x");
        let o: oci_spec::image::Digest = d.clone().into();
        assert_eq!(o.as_ref(), d.as_str());
        assert_eq!(Digest::try_from(&o).unwrap(), d);
        let other = oci_spec::image::Digest::from_str("multihash+base58:Qm").unwrap();
        assert_eq!(
            Digest::try_from(&other),
            Err(DigestError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn chain_ids_like_containerd() {
        let a = Digest::sha256(b"a");
        let b = Digest::sha256(b"b");
        let c = Digest::sha256(b"c");
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(std::slice::from_ref(&a)), Some(a.clone()));
        let ab = Digest::sha256(format!("{a} {b}").as_bytes());
        let abc = Digest::sha256(format!("{ab} {c}").as_bytes());
        assert_eq!(chain_id(&[a.clone(), b.clone()]), Some(ab.clone()));
        assert_eq!(chain_ids(&[a.clone(), b, c]), vec![a, ab, abc]);
    }
}
