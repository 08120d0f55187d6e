//! The importer: an image archive read from a stream into the content store, as containerd's
//! `archive.ImportIndex`.
//!
//! Every regular file of the tar goes into the content store as it streams past (ingest
//! `tar-<name>`, under the caller's lease), so nothing is held in memory but the two small JSON
//! files (`oci-layout`, `manifest.json`, at most [`JSON_LIMIT`] each) and nothing touches the
//! filesystem except through the content store. Then:
//!
//! - an OCI layout (its `oci-layout` names version 1.0.0) is its `index.json`;
//! - a `docker save` archive gets what containerd builds for it: a Docker schema 2 manifest per
//!   `manifest.json` entry (config and layers as they were stored, layer media types told from
//!   their first bytes, uncompressed layers gzip-compressed when asked), and an OCI index naming
//!   each manifest once per `RepoTags` entry (normalised), with the platform of its config.
//!
//! The archive may be gzip- or zstd-compressed (sniffed). Tar extension headers are bounded
//! ([`berth_archive::HeaderGuard`]); names that point outside the archive are refused.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use berth_content_store::{ContentError, ContentStore, NsWriter};
use berth_oci::{document, media, Descriptor, Digest, LABEL_UNCOMPRESSED};
use berth_plugin::{Classify, ErrorKind};

use crate::model::{
    self, BlobInfo, DockerArchiveManifest, ModelError, OciLayout, DOCKER_MANIFEST_FILE, HEAD_LEN,
    INDEX_FILE, JSON_LIMIT, OCI_LAYOUT_FILE, OCI_LAYOUT_VERSION,
};
use crate::{read_document, StoreError};

/// How long a writer waits for an ingest another import of the same file holds (containerd's
/// client waits as long).
const LOCK_WAIT: Duration = Duration::from_secs(60);
/// Bytes copied per write into an ingest.
const COPY_CHUNK: usize = 1 << 20;

/// What goes wrong importing an archive. Everything about the archive itself is the client's
/// (InvalidArgument); the content store's failures keep their own kind.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The stream is not a (complete) tar archive, or a header is hostile.
    #[error("reading archive: {}", tar_message(.0))]
    Tar(#[source] io::Error),
    #[error("reading archive: decompressing: {0}")]
    Decompress(#[source] io::Error),
    #[error("archive entry {name:?} points outside the archive: invalid argument")]
    EscapingName { name: String },
    #[error("untar oci layout {name:?}: {source}")]
    Layout {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("untar manifest {name:?}: {source}")]
    DockerManifest {
        name: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("untar {name:?}: {source}")]
    ReadEntry {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("failed to ingest {name:?}: {source}")]
    Ingest {
        name: String,
        #[source]
        source: ContentError,
    },
    #[error(
        "failed to ingest {name:?}: the archive ends after {got} of its {size} bytes: unexpected EOF"
    )]
    Truncated { name: String, size: i64, got: i64 },
    #[error("unsupported OCI version {0}")]
    UnsupportedVersion(String),
    #[error("missing index.json in OCI layout {OCI_LAYOUT_VERSION}")]
    MissingIndex,
    #[error("unrecognized image format")]
    Unrecognized,
    #[error("image config {0:?} not found")]
    ConfigNotFound(String),
    #[error("failed to resolve layers: layer {0:?} not found")]
    LayerNotFound(String),
    #[error("unable to resolve platform: config {digest}: {source}")]
    Config {
        digest: String,
        #[source]
        source: berth_oci::DocumentError,
    },
    #[error("failed to compress {digest}: {source}")]
    Compress {
        digest: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ContentError> for ImportError {
    fn from(e: ContentError) -> Self {
        ImportError::Store(StoreError::Content(e))
    }
}

/// A tar failure as one line: a corrupt header is said to be one, not quoted.
fn tar_message(e: &io::Error) -> String {
    let msg = e.to_string();
    // The tar crate quotes the bad header ("… when getting cksum for <name>").
    if msg.contains(" when getting ") || msg.contains("checksum mismatch") {
        return "invalid tar header".to_owned();
    }
    if e.kind() == io::ErrorKind::UnexpectedEof
        || msg.contains("unexpected EOF")
        || msg.contains("failed to read entire block")
    {
        return "unexpected EOF: the archive is cut short".to_owned();
    }
    msg.lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect()
}

impl Classify for ImportError {
    fn kind(&self) -> ErrorKind {
        match self {
            ImportError::Ingest { source, .. } => match source.kind() {
                // A digest or size that does not match the file's name: the archive's fault.
                ErrorKind::FailedPrecondition => ErrorKind::InvalidArgument,
                k => k,
            },
            ImportError::Store(e) => e.kind(),
            ImportError::Compress { .. } => ErrorKind::Internal,
            _ => ErrorKind::InvalidArgument,
        }
    }
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// gzip-compress the uncompressed layers of a docker archive (`--compress-blobs`).
    pub force_compress: bool,
}

/// Imports archives into one namespace of the content store, under one lease.
pub struct Importer<'a> {
    pub content: &'a ContentStore,
    pub ns: &'a str,
    /// Holds everything written until the caller's image records do.
    pub lease: &'a str,
    pub options: ImportOptions,
}

/// Reads up to `buf.len()` bytes (fewer only at the end of `r`).
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The first JSON value of `bytes` (Go's `json.Decoder.Decode`: what follows is not read).
fn decode_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    match serde_json::Deserializer::from_slice(bytes)
        .into_iter::<T>()
        .next()
    {
        Some(r) => r,
        // Nothing at all: the same "EOF while parsing" error Go's decoder gives as io.EOF.
        None => serde_json::from_slice(bytes),
    }
}

impl Importer<'_> {
    /// Imports the archive `input` (compressed or not); returns the descriptor of its index.
    /// `input` is read up to the end of the tar archive, not necessarily to its own end.
    pub fn import(&self, input: &mut dyn Read) -> Result<Descriptor, ImportError> {
        let mut magic = [0u8; 4];
        let n = read_up_to(input, &mut magic).map_err(ImportError::Tar)?;
        let joined = (&magic[..n]).chain(input);
        let reader: Box<dyn Read + '_> = match model::detect_compression(&magic[..n]) {
            model::Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                io::BufReader::with_capacity(COPY_CHUNK, joined),
            )),
            model::Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(joined).map_err(ImportError::Decompress)?)
            }
            model::Compression::Uncompressed => Box::new(joined),
        };
        // Image archives come from anywhere: extension headers are bounded as in layers.
        let mut tar = tar::Archive::new(berth_archive::HeaderGuard::new(reader));
        let entries = tar.entries().map_err(ImportError::Tar)?;

        let mut layout: Option<OciLayout> = None;
        let mut docker_manifests: Option<Vec<DockerArchiveManifest>> = None;
        let mut symlinks: BTreeMap<String, String> = BTreeMap::new();
        let mut blobs: HashMap<String, BlobInfo> = HashMap::new();
        let mut buf = vec![0u8; COPY_CHUNK];

        for entry in entries {
            let mut entry = entry.map_err(ImportError::Tar)?;
            let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind != tar::EntryType::Symlink && kind != tar::EntryType::Regular {
                // Directories and anything else carry nothing an image needs (containerd's).
                continue;
            }
            let name = model::clean_path(&raw_name);
            if model::escapes(&name) {
                return Err(ImportError::EscapingName { name: raw_name });
            }
            if kind == tar::EntryType::Symlink {
                let link = entry
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                symlinks.insert(name, model::symlink_target(&raw_name, &link));
                continue;
            }
            let size = entry
                .header()
                .entry_size()
                .ok()
                .and_then(|s| i64::try_from(s).ok())
                .ok_or_else(|| {
                    ImportError::Tar(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("invalid size in the header of {raw_name:?}"),
                    ))
                })?;
            if name == OCI_LAYOUT_FILE {
                let bytes = read_json(&mut entry, &raw_name)?;
                layout = Some(decode_json(&bytes).map_err(|source| ImportError::Layout {
                    name: raw_name.clone(),
                    source,
                })?);
            } else if name == DOCKER_MANIFEST_FILE {
                let bytes = read_json(&mut entry, &raw_name)?;
                docker_manifests =
                    Some(
                        decode_json(&bytes).map_err(|source| ImportError::DockerManifest {
                            name: raw_name.clone(),
                            source,
                        })?,
                    );
            } else {
                let info = self.ingest_entry(&mut entry, &name, size, &mut buf)?;
                tracing::debug!(file = %name, digest = %info.digest, size, "archive file stored");
                blobs.insert(name, info);
            }
        }

        if let Some(layout) = layout.filter(|l| !l.version.is_empty()) {
            if layout.version != OCI_LAYOUT_VERSION {
                return Err(ImportError::UnsupportedVersion(layout.version));
            }
            let idx = blobs.get(INDEX_FILE).ok_or(ImportError::MissingIndex)?;
            return Ok(model::descriptor(media::OCI_INDEX, &idx.digest, idx.size)?);
        }
        let Some(manifests) = docker_manifests else {
            return Err(ImportError::Unrecognized);
        };
        model::resolve_symlinks(&mut blobs, &symlinks)?;

        let mut index_entries = Vec::new();
        for m in &manifests {
            let config = blobs
                .get(&m.config)
                .ok_or_else(|| ImportError::ConfigNotFound(m.config.clone()))?;
            let config = model::descriptor(media::DOCKER_CONFIG, &config.digest, config.size)?;
            let layer_files = m.layers.clone().unwrap_or_default();
            let layers = self.resolve_layers(&layer_files, &blobs)?;
            let manifest = model::docker_manifest_json(&config, &layers)?;
            let desc = self.write_document(&manifest, media::DOCKER_MANIFEST)?;
            let config_bytes = read_document(self.content, self.ns, config.digest().as_ref())?;
            let platform = document::parse_config(&config_bytes)
                .map(|c| document::config_platform(&c))
                .map_err(|source| ImportError::Config {
                    digest: config.digest().to_string(),
                    source,
                })?;
            let tags = m.repo_tags.clone().unwrap_or_default();
            index_entries.extend(model::docker_index_entries(&desc, Some(platform), &tags)?);
        }
        let index = model::index_json(index_entries)?;
        self.write_document(&index, media::OCI_INDEX)
    }

    /// Opens an ingest; `None` when the namespace already holds `expected` (the lease now holds
    /// it too). An ingest another import holds is waited for, as containerd's client waits.
    fn open_writer(
        &self,
        reference: &str,
        size: i64,
        expected: &str,
    ) -> Result<Option<NsWriter>, ContentError> {
        let deadline = Instant::now() + LOCK_WAIT;
        let mut delay = Duration::from_millis(16);
        loop {
            match self
                .content
                .writer(self.ns, reference, size, expected, Some(self.lease))
            {
                Ok(w) => return Ok(Some(w)),
                Err(ContentError::AlreadyExists(_)) => return Ok(None),
                Err(ContentError::Locked { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Commits `w`; a blob the namespace got meanwhile is success (and the lease's).
    fn commit(
        &self,
        w: NsWriter,
        size: i64,
        expected: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<String, ContentError> {
        match w.commit(self.content, size, expected, labels) {
            Ok(info) => Ok(info.digest),
            Err(ContentError::AlreadyExists(d)) => {
                self.content
                    .hold_if_present(self.ns, &d, Some(self.lease))?;
                Ok(d)
            }
            Err(e) => Err(e),
        }
    }

    /// Streams one file of the archive into the content store under `tar-<name>`. A file at
    /// `blobs/<alg>/<hex>` must have that digest, so one the namespace already has is not
    /// written again.
    fn ingest_entry(
        &self,
        entry: &mut dyn Read,
        name: &str,
        size: i64,
        buf: &mut [u8],
    ) -> Result<BlobInfo, ImportError> {
        let ingest = |source| ImportError::Ingest {
            name: name.to_owned(),
            source,
        };
        let read_err = |source| ImportError::ReadEntry {
            name: name.to_owned(),
            source,
        };
        let expected = model::blob_path_digest(name).unwrap_or_default();
        let reference = format!("tar-{name}");
        let mut head = Vec::with_capacity(HEAD_LEN);
        let Some(mut w) = self
            .open_writer(&reference, size, &expected)
            .map_err(ingest)?
        else {
            // Already here: only its first bytes are needed (to tell a layer's compression).
            head.resize(HEAD_LEN, 0);
            let n = read_up_to(entry, &mut head).map_err(read_err)?;
            head.truncate(n);
            return Ok(BlobInfo {
                digest: expected,
                size,
                head,
            });
        };
        let offset = w.status().offset;
        if !expected.is_empty() && offset == size {
            // The bytes are on disk already (another namespace's blob, or an ingest a killed
            // import completed): the commit checks them against the name's digest.
            head.resize(HEAD_LEN, 0);
            let n = read_up_to(entry, &mut head).map_err(read_err)?;
            head.truncate(n);
            let digest = match self.commit(w, size, &expected, BTreeMap::new()) {
                Ok(d) => d,
                Err(e) => {
                    // Whatever made the ingest look complete is wrong: the next import starts
                    // over rather than meeting it again.
                    let _ = self.content.abort(self.ns, &reference);
                    return Err(ingest(e));
                }
            };
            return Ok(BlobInfo { digest, size, head });
        }
        if offset != 0 {
            // The archive is read from its start: an ingest left half-written starts over.
            w.reset().map_err(ingest)?;
        }
        let mut got: i64 = 0;
        loop {
            let n = match entry.read(buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_err(e)),
            };
            if head.len() < HEAD_LEN {
                let take = (HEAD_LEN - head.len()).min(n);
                head.extend_from_slice(&buf[..take]);
            }
            w.write(&buf[..n]).map_err(ingest)?;
            got += i64::try_from(n).unwrap_or(i64::MAX);
        }
        if got != size {
            return Err(ImportError::Truncated {
                name: name.to_owned(),
                size,
                got,
            });
        }
        let digest = self
            .commit(w, size, &expected, BTreeMap::new())
            .map_err(ingest)?;
        Ok(BlobInfo { digest, size, head })
    }

    /// Writes a document containerd generates (manifest, index) under `manifest-<digest>`.
    fn write_document(&self, bytes: &[u8], media_type: &str) -> Result<Descriptor, ImportError> {
        let digest = Digest::sha256(bytes);
        let size = i64::try_from(bytes.len()).unwrap_or(i64::MAX);
        let desc = model::descriptor(media_type, digest.as_str(), size)?;
        let reference = format!("manifest-{digest}");
        if let Some(mut w) = self.open_writer(&reference, size, digest.as_str())? {
            if w.status().offset != size {
                if w.status().offset != 0 {
                    w.reset()?;
                }
                w.write(bytes)?;
            }
            self.commit(w, size, digest.as_str(), BTreeMap::new())?;
        }
        Ok(desc)
    }

    /// containerd's `resolveLayers`: each layer file's descriptor, replaced by an already stored
    /// compressed blob labelled as its compression, otherwise typed by its first bytes (and
    /// gzip-compressed into the store when asked).
    fn resolve_layers(
        &self,
        files: &[String],
        blobs: &HashMap<String, BlobInfo>,
    ) -> Result<Vec<Descriptor>, ImportError> {
        let mut layers: Vec<BlobInfo> = Vec::with_capacity(files.len());
        for f in files {
            let b = blobs
                .get(f)
                .ok_or_else(|| ImportError::LayerNotFound(f.clone()))?;
            layers.push(b.clone());
        }
        let wanted: HashSet<&str> = layers.iter().map(|l| l.digest.as_str()).collect();
        // A compressed blob the store already has for a layer (an earlier `--compress-blobs`
        // import): its digest, size and first bytes, by the layer's digest.
        let mut compressed: HashMap<String, BlobInfo> = HashMap::new();
        if !wanted.is_empty() {
            for info in self.content.list(self.ns)? {
                let Some(u) = info.labels.get(LABEL_UNCOMPRESSED) else {
                    continue;
                };
                if !wanted.contains(u.as_str()) || compressed.contains_key(u) {
                    continue;
                }
                if !self
                    .content
                    .hold_if_present(self.ns, &info.digest, Some(self.lease))?
                {
                    continue;
                }
                let head = self.blob_head(&info.digest)?;
                compressed.insert(
                    u.clone(),
                    BlobInfo {
                        digest: info.digest,
                        size: info.size,
                        head,
                    },
                );
            }
        }
        let mut out = Vec::with_capacity(layers.len());
        for l in &layers {
            let desc = match compressed.get(&l.digest) {
                Some(c) => {
                    model::descriptor(model::docker_layer_media_type(&c.head), &c.digest, c.size)?
                }
                None => {
                    let mt = model::docker_layer_media_type(&l.head);
                    if mt == media::DOCKER_LAYER && self.options.force_compress {
                        self.compress_blob(&l.digest)?
                    } else {
                        model::descriptor(mt, &l.digest, l.size)?
                    }
                }
            };
            out.push(desc);
        }
        Ok(out)
    }

    /// The first bytes of a stored blob.
    fn blob_head(&self, digest: &str) -> Result<Vec<u8>, ImportError> {
        let (mut f, _) = self.content.open_reader(self.ns, digest)?;
        let mut head = vec![0u8; HEAD_LEN];
        let n = read_up_to(&mut f, &mut head).map_err(|source| StoreError::Read {
            digest: digest.to_owned(),
            source,
        })?;
        head.truncate(n);
        Ok(head)
    }

    /// Stores a gzip-compressed copy of the uncompressed layer `layer`, labelled with the
    /// digest it uncompresses to; returns its descriptor.
    fn compress_blob(&self, layer: &str) -> Result<Descriptor, ImportError> {
        let d = Digest::parse(layer).map_err(|source| ModelError::Digest {
            digest: layer.to_owned(),
            source,
        })?;
        let reference = format!("compress-blob-{}-{}", d.algorithm(), d.encoded());
        let mut w = self
            .open_writer(&reference, 0, "")?
            .ok_or_else(|| ContentError::FailedPrecondition(format!("ingest {reference}")))?;
        if w.status().offset != 0 {
            // containerd truncates what an earlier attempt left.
            w.reset()?;
        }
        let compress_err = |source| ImportError::Compress {
            digest: layer.to_owned(),
            source,
        };
        let (mut src, _) = self.content.open_reader(self.ns, layer)?;
        let mut gz = flate2::write::GzEncoder::new(
            IngestWriter {
                w: &mut w,
                written: 0,
            },
            flate2::Compression::default(),
        );
        io::copy(&mut src, &mut gz).map_err(compress_err)?;
        let sink = gz.finish().map_err(compress_err)?;
        let size = sink.written;
        let labels = BTreeMap::from([(LABEL_UNCOMPRESSED.to_owned(), layer.to_owned())]);
        let digest = self.commit(w, size, "", labels)?;
        Ok(model::descriptor(media::DOCKER_LAYER_GZIP, &digest, size)?)
    }
}

/// An ingest as an `io::Write`, counting what went in.
struct IngestWriter<'a> {
    w: &'a mut NsWriter,
    written: i64,
}

impl Write for IngestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.w.write(buf).map_err(io::Error::other)?;
        self.written += i64::try_from(buf.len()).unwrap_or(i64::MAX);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads a small JSON file of the archive, at most [`JSON_LIMIT`] bytes of it.
fn read_json(entry: &mut dyn Read, name: &str) -> Result<Vec<u8>, ImportError> {
    let mut bytes = Vec::new();
    entry
        .take(JSON_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|source| ImportError::ReadEntry {
            name: name.to_owned(),
            source,
        })?;
    Ok(bytes)
}

/// Reads what is left of an archive stream after its end-of-archive marker, at most `limit`
/// bytes, so a sender that pads (GNU tar writes whole 10 KiB records) finishes cleanly; more
/// than that is left unread.
pub fn drain(input: &mut dyn Read, limit: u64) -> io::Result<u64> {
    io::copy(&mut input.take(limit), &mut io::sink())
}
