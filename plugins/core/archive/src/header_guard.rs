//! Refusing oversized tar extension headers before the `tar` crate buffers them.
//!
//! The `tar` crate reads a PAX extended header (`x`) and a GNU long name or long link (`L`, `K`)
//! whole into memory, however large its header says it is: a 2 MB gzip layer holding one 2 GiB
//! PAX record drove berthd to 2.1 GiB of memory, and the layer was then accepted. containerd reads
//! layers with Go's `archive/tar`, which refuses these members, and PAX global headers (`g`), when
//! they hold more than 1 MiB (`maxSpecialFileSize`, `ErrFieldTooLong`). The crate has no limit to
//! set, so [`HeaderGuard`] sits between the layer stream and the crate and follows the stream's
//! framing itself — header blocks, PAX `size` overrides, GNU sparse extension blocks, data and
//! padding — as `tar` 0.4's `EntriesFields::next_entry` does. The read that completes an `x`,
//! `g`, `L` or `K` header declaring more than [`MAX_EXTENSION_HEADER`] bytes fails, so the crate
//! never starts buffering the member, and a small stream declaring a huge one fails at once.
//!
//! What the guard does not understand (a bad checksum, an unparsable size, the end-of-archive
//! zero block) is the crate's to report or act on: the guard stops looking there, so it can only
//! ever refuse an extension header that the crate would have read as one.

use std::io::{self, Read};

use crate::apply::display_name;
use crate::ArchiveError;

/// The most data one extension header member may carry: Go's `archive/tar` limit, which
/// containerd applies to every layer. Exactly this many bytes are allowed.
pub const MAX_EXTENSION_HEADER: u64 = 1 << 20;

const BLOCK: usize = 512;

/// Where the guard is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Collecting a 512-byte header block into `block`.
    Header,
    /// Collecting a GNU sparse extension block; `data` bytes (padded) follow the last one.
    SparseExt { data: u64 },
    /// Collecting a PAX extended header's records into `pax` (at most the limit), to learn the
    /// `size` record the crate applies to the next member; `pad` bytes follow.
    Pax { remaining: u64, pad: u64 },
    /// Passing over member data and padding.
    Skip(u64),
    /// The crate takes it from here: end of archive, or a header it will refuse itself.
    Done,
}

/// A reader that fails when the tar stream it carries reaches an extension header declaring more
/// than [`MAX_EXTENSION_HEADER`] bytes. It must be read by the `tar` crate directly (nothing
/// buffering in between), so that the failing read is the crate's read of that header. Every
/// reader of untrusted tar streams uses it: layer apply here, image archive import in bctr.
pub struct HeaderGuard<R> {
    inner: R,
    phase: Phase,
    block: tar::Header,
    filled: usize,
    pax: Vec<u8>,
    /// The `size` record of the PAX header the next member will take, as the crate reads it.
    pending_size: Option<u64>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R) -> Self {
        HeaderGuard {
            inner,
            phase: Phase::Header,
            block: tar::Header::new_old(),
            filled: 0,
            pax: Vec::new(),
            pending_size: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Follows the framing over `data`, the next bytes of the stream.
    fn observe(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        while !data.is_empty() {
            match self.phase {
                Phase::Done => return Ok(()),
                Phase::Skip(n) => {
                    let k = take(n, data);
                    data = &data[k..];
                    self.phase = skip(n - k as u64);
                }
                Phase::Pax { remaining, pad } => {
                    let k = take(remaining, data);
                    self.pax.extend_from_slice(&data[..k]);
                    data = &data[k..];
                    let remaining = remaining - k as u64;
                    if remaining == 0 {
                        self.pending_size = pax_size(&self.pax);
                        self.pax = Vec::new();
                        self.phase = skip(pad);
                    } else {
                        self.phase = Phase::Pax { remaining, pad };
                    }
                }
                Phase::Header | Phase::SparseExt { .. } => {
                    let k = (BLOCK - self.filled).min(data.len());
                    self.block.as_mut_bytes()[self.filled..self.filled + k]
                        .copy_from_slice(&data[..k]);
                    self.filled += k;
                    data = &data[k..];
                    if self.filled == BLOCK {
                        self.filled = 0;
                        self.phase = match self.phase {
                            Phase::SparseExt { data } => self.sparse_ext(data),
                            _ => self.header()?,
                        };
                    }
                }
            }
        }
        Ok(())
    }

    /// A complete header block: refuses an oversized extension header, otherwise says what
    /// follows it.
    fn header(&mut self) -> Result<Phase, ArchiveError> {
        let h = &self.block;
        let bytes = h.as_bytes();
        // A zero block ends the archive for the crate (it does not skip zero blocks here).
        if bytes.iter().all(|b| *b == 0) {
            return Ok(Phase::Done);
        }
        // The crate's checksum rule; a mismatch is its error to report.
        let sum = bytes[..148]
            .iter()
            .chain(&bytes[156..])
            .fold(8 * 32, |a, b| a + u32::from(*b));
        if h.cksum().ok() != Some(sum) {
            return Ok(Phase::Done);
        }
        let Ok(size) = h.entry_size() else {
            return Ok(Phase::Done);
        };
        let ty = h.entry_type();
        let what = match ty {
            tar::EntryType::XHeader => Some("PAX extended header"),
            tar::EntryType::XGlobalHeader => Some("PAX global header"),
            tar::EntryType::GNULongName => Some("GNU long name"),
            tar::EntryType::GNULongLink => Some("GNU long link name"),
            _ => None,
        };
        if let Some(what) = what {
            if size > MAX_EXTENSION_HEADER {
                return Err(ArchiveError::HeaderTooLarge {
                    what,
                    header: display_name(&h.path_bytes()),
                    size,
                    limit: MAX_EXTENSION_HEADER,
                    after: None,
                });
            }
        }
        // The crate reads on for the member that `x`, `L` and `K` describe only when the header
        // has a ustar or GNU magic; anything else (`g` included) is a member of its own, which
        // takes (and ends) any pending PAX header. Only non-extension members take its `size`.
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let describes_next = recognized
            && matches!(
                ty,
                tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink
            );
        let data = if describes_next {
            size
        } else {
            let pax = self.pending_size.take();
            match what {
                Some(_) => size,
                None => pax.unwrap_or(size),
            }
        };
        let Some(padded) = data
            .checked_add(BLOCK as u64 - 1)
            .map(|s| s & !(BLOCK as u64 - 1))
        else {
            return Ok(Phase::Done); // the crate's "size overflow"
        };
        if describes_next && ty == tar::EntryType::XHeader {
            if data == 0 {
                self.pending_size = None;
                return Ok(Phase::Header);
            }
            self.pax.clear();
            return Ok(Phase::Pax {
                remaining: data,
                pad: padded - data,
            });
        }
        if ty == tar::EntryType::GNUSparse {
            let Some(gnu) = h.as_gnu() else {
                return Ok(Phase::Done); // the crate refuses a sparse member without GNU header
            };
            if gnu.is_extended() {
                return Ok(Phase::SparseExt { data: padded });
            }
        }
        Ok(skip(padded))
    }

    /// A complete GNU sparse extension block: another follows while its flag says so, then the
    /// member's data.
    fn sparse_ext(&self, data: u64) -> Phase {
        let mut ext = tar::GnuExtSparseHeader::new();
        ext.as_mut_bytes().copy_from_slice(self.block.as_bytes());
        if ext.is_extended() {
            Phase::SparseExt { data }
        } else {
            skip(data)
        }
    }
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        // The refusal travels through the crate as an io::Error carrying the typed error;
        // `apply` takes it back out.
        self.observe(&buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok(n)
    }
}

/// How many of `data`'s bytes belong to the `n` still expected.
fn take(n: u64, data: &[u8]) -> usize {
    usize::try_from(n).map_or(data.len(), |n| n.min(data.len()))
}

fn skip(n: u64) -> Phase {
    if n == 0 {
        Phase::Header
    } else {
        Phase::Skip(n)
    }
}

/// The `size` record of PAX records, read as the crate reads it (`pax_extensions_value`): the
/// first `size` key, if the records up to it parse and its value is a decimal `u64`.
fn pax_size(records: &[u8]) -> Option<u64> {
    for rec in tar::PaxExtensions::new(records) {
        let rec = rec.ok()?;
        if rec.key() != Ok("size") {
            continue;
        }
        return rec.value().ok()?.parse().ok();
    }
    None
}
