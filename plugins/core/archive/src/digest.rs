//! sha256 over a byte stream as it passes, in both directions: verifying a layer's diff_id while
//! it is applied, and computing diff_id and blob digest while a diff is written.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::ArchiveError;

/// Formats a finished hash as an OCI digest string.
fn oci(hasher: &Sha256) -> String {
    berth_oci::Digest::from_sha256(hasher.clone().finalize().into()).into_string()
}

/// Checks an OCI digest string (with [`berth_oci::Digest`]) for the only algorithm layers use
/// here, sha256, and returns the hash.
pub fn parse_sha256(digest: &str) -> Result<[u8; 32], ArchiveError> {
    berth_oci::Digest::parse(digest)
        .ok()
        .and_then(|d| d.sha256_bytes())
        .ok_or_else(|| ArchiveError::InvalidDigest(digest.to_owned()))
}

/// A reader that hashes (sha256) and counts every byte read through it.
pub struct DigestingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
}

impl<R: Read> DigestingReader<R> {
    pub fn new(inner: R) -> Self {
        DigestingReader {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// `sha256:<hex>` of the bytes read so far.
    pub fn digest(&self) -> String {
        oci(&self.hasher)
    }

    /// Number of bytes read so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read> Read for DigestingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

/// A writer that hashes (sha256) and counts every byte written through it.
pub struct DigestingWriter<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> DigestingWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestingWriter {
            inner,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// `sha256:<hex>` of the bytes written so far.
    pub fn digest(&self) -> String {
        oci(&self.hasher)
    }

    /// Number of bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for DigestingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        // Only what the inner writer accepted, so a short write is not hashed twice.
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
