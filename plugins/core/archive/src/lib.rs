//! OCI / Docker image layers: applying a layer tarball onto a directory, and writing the
//! difference of two directories as a layer tarball. This is the core of containerd's diff
//! service (the "walking" differ and `pkg/archive`), as a library: no gRPC here.
//!
//! * [`apply`] streams an uncompressed layer (see [`decompress`]) onto a target directory,
//!   handling whiteouts in the target's style ([`WhiteoutMode`]), and returns the diff_id it
//!   computed while reading. Layers are hostile input: no member can write, link or follow a
//!   symlink outside the target (see `resolve.rs` for how).
//! * [`write_diff`] / [`write_diff_gzip`] compare a lower and an upper tree and write the changes
//!   as an OCI layer (`.wh.` whiteouts for deletions), returning diff_id and blob digest.
//!
//! Linux only: everything is done with `*at` syscalls relative to directory descriptors.

mod apply;
mod compression;
mod diff;
mod digest;
mod error;
mod fsutil;
mod header_guard;
mod inherit;
mod resolve;

pub use apply::{apply, ApplyOptions, ApplyStats, IdMap, IdMapFn, WhiteoutMode, XattrPrefix};
pub use compression::{
    decompress, decompress_detect, decompress_with, media_type_compression, Compression,
};
pub use diff::{write_diff, write_diff_gzip, DiffOptions, DiffStats};
pub use digest::{parse_sha256, DigestingReader, DigestingWriter};
pub use error::ArchiveError;
pub use header_guard::{HeaderGuard, MAX_EXTENSION_HEADER};
pub use inherit::inherit_dir_metadata;

#[cfg(test)]
mod tests;
