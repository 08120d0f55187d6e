//! Layer media types and the decompressors behind them.

use std::io::{self, BufRead, BufReader, Read};

use crate::ArchiveError;

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// The compression a layer media type declares. OCI and Docker types, including the
/// non-distributable ("foreign") variants, are understood; anything else (for example an
/// encrypted layer) is an [`ArchiveError::UnsupportedMediaType`] naming the type.
pub fn media_type_compression(media_type: &str) -> Result<Compression, ArchiveError> {
    // Parameters (`; foo=bar`) do not change the format.
    let base = media_type.split(';').next().unwrap_or("").trim();
    let c = match base {
        "application/vnd.oci.image.layer.v1.tar"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar"
        | "application/vnd.docker.image.rootfs.diff.tar"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar" => Compression::None,
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
        "application/vnd.oci.image.layer.v1.tar+zstd"
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
        _ => return Err(ArchiveError::UnsupportedMediaType(media_type.to_owned())),
    };
    Ok(c)
}

/// Wraps a blob reader in the decompressor its media type calls for. The result yields the
/// uncompressed tar stream, whose sha256 is the layer's diff_id.
pub fn decompress<'a, R: Read + Send + 'a>(
    reader: R,
    media_type: &str,
) -> Result<Box<dyn Read + Send + 'a>, ArchiveError> {
    let compression = media_type_compression(media_type)?;
    decompress_with(reader, compression).map_err(|source| ArchiveError::Stream {
        after: None,
        source,
    })
}

/// Wraps a reader in the given decompressor.
pub fn decompress_with<'a, R: Read + Send + 'a>(
    reader: R,
    compression: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match compression {
        Compression::None => Box::new(reader),
        // Multi-member: pigz and some registries write several gzip members back to back.
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            128 * 1024,
            reader,
        ))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(
            BufReader::with_capacity(128 * 1024, reader),
        )?),
    })
}

/// Detects the compression from the stream's first bytes (as containerd does for imports where the
/// media type is unreliable) and returns the matching decompressing reader.
pub fn decompress_detect<'a, R: Read + Send + 'a>(
    reader: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    let mut buffered = BufReader::with_capacity(128 * 1024, reader);
    let head = loop {
        match buffered.fill_buf() {
            Ok(h) => break h,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    };
    let compression = if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let reader: Box<dyn Read + Send + 'a> = match compression {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    };
    Ok((compression, reader))
}
