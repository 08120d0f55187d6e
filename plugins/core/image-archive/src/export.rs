//! The exporter: images written as an OCI image-layout tar (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`) plus Docker's `manifest.json`, laid out byte for byte as containerd
//! 1.6's `archive.Export` lays it out (`ctr images export` of 1.6, bctr's local export).
//!
//! Planning ([`plan`]) reads the images' documents and lists every record; writing
//! ([`write_tar`]) streams each blob from its source into the tar and checks its digest. The
//! source is a trait, so the daemon exports from its content store (`StoreSource`) and bctr
//! from the Content API, with the same result.
//!
//! What containerd does with platforms: an index is written whole, but only the manifests of
//! the wanted platforms (by default this machine's, strictly) are written with their blobs,
//! unless all platforms are asked for; `manifest.json` names the best-matching manifest of each
//! index.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};

#[cfg(feature = "store")]
use berth_content_store::ContentStore;
use berth_oci::{
    document, media, Algorithm, Descriptor, DocumentError, Matcher, Platform, ANNOTATION_IMAGE_NAME,
};
use berth_plugin::{Classify, ErrorKind};
use sha2::Digest as _;

use crate::model::{self, DockerArchiveManifest, ModelError, INDEX_FILE, OCI_LAYOUT_FILE};
use crate::reference::{self, NameError};
#[cfg(feature = "store")]
use crate::{read_document, StoreError};

/// Where an export reads documents and blobs from.
pub trait ExportSource {
    type Error: std::error::Error + Send + Sync + 'static;

    /// A whole document (manifest or index).
    fn read_document(&mut self, desc: &Descriptor) -> Result<Vec<u8>, Self::Error>;

    /// Streams the blob into `sink` chunk by chunk; stops early (still `Ok`) when `sink`
    /// returns false. Returns the bytes given to `sink`.
    fn copy_blob(
        &mut self,
        desc: &Descriptor,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, Self::Error>;
}

/// What goes wrong exporting; `E` is the source's error.
#[derive(Debug, thiserror::Error)]
pub enum ExportError<E: std::error::Error + Send + Sync + 'static> {
    #[error(transparent)]
    Source(E),
    #[error("failed to copy to tar: {0}")]
    Copy(#[source] E),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("children: invalid desc {digest}: {source}")]
    Children {
        digest: String,
        #[source]
        source: DocumentError,
    },
    #[error("unable to create manifests file: {0}")]
    ManifestsFile(#[source] DocumentError),
    #[error("unable to create manifests file: {0}")]
    ManifestsName(#[source] NameError),
    #[error("no manifest found for platform: not found")]
    NoManifestForPlatform,
    #[error("only manifests may be exported: invalid argument")]
    NotAnImage,
    #[error("unexpected digest {got} copied for {expected}")]
    DigestMismatch { got: String, expected: String },
    #[error("unexpected copy size for {0}")]
    SizeMismatch(String),
    #[error("writing archive: {0}")]
    Write(#[source] io::Error),
}

impl<E: Classify + Send + Sync + 'static> Classify for ExportError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            ExportError::Source(e) | ExportError::Copy(e) => e.kind(),
            ExportError::NoManifestForPlatform => ErrorKind::NotFound,
            ExportError::NotAnImage => ErrorKind::InvalidArgument,
            // What the store holds is not what it should be.
            ExportError::Model(_)
            | ExportError::Children { .. }
            | ExportError::ManifestsFile(_)
            | ExportError::ManifestsName(_)
            | ExportError::DigestMismatch { .. }
            | ExportError::SizeMismatch(_) => ErrorKind::FailedPrecondition,
            // The archive's reader went away.
            ExportError::Write(_) => ErrorKind::Unavailable,
        }
    }
}

/// How to export (containerd's `ImageExportStream` options).
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// The manifests of indexes to write, earlier preferred; empty: this machine's, strictly.
    pub platforms: Vec<Platform>,
    /// Every manifest of an index, not only the wanted platforms'.
    pub all_platforms: bool,
    /// No Docker `manifest.json`.
    pub skip_compatibility_manifest: bool,
    /// No non-distributable layers (Windows base layers).
    pub skip_non_distributable: bool,
}

impl ExportOptions {
    fn matcher(&self) -> Matcher {
        if self.platforms.is_empty() {
            Matcher::host_strict()
        } else {
            Matcher::ordered(&self.platforms)
        }
    }
}

/// The descriptor an image is exported under: its target, named (`io.containerd.image.name`,
/// `org.opencontainers.image.ref.name`).
pub fn named_target(name: &str, target: &Descriptor) -> Descriptor {
    let mut d = target.clone();
    let a = model::add_name_annotations(name, &model::annotations(target));
    model::set_annotations(&mut d, a);
    d
}

/// What a record holds.
#[derive(Debug, Clone)]
pub enum Content {
    Dir,
    Bytes(Vec<u8>),
    Blob(Box<Descriptor>),
}

/// One member of the archive.
#[derive(Debug, Clone)]
pub struct Record {
    pub name: String,
    pub mode: u32,
    pub size: u64,
    pub content: Content,
}

/// Every record of an archive, in the order they are written.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub records: Vec<Record>,
}

impl Plan {
    /// The bytes of content the archive holds (headers and padding aside).
    pub fn content_size(&self) -> u64 {
        self.records.iter().map(|r| r.size).sum()
    }
}

fn blob_record(
    desc: &Descriptor,
    skip_non_distributable: bool,
) -> Result<Option<Record>, ModelError> {
    if skip_non_distributable && media::is_non_distributable(desc.media_type().as_ref()) {
        return Ok(None);
    }
    Ok(Some(Record {
        name: model::blob_path(desc.digest().as_ref())?,
        mode: 0o444,
        size: desc.size(),
        content: Content::Blob(Box::new(desc.clone())),
    }))
}

fn dir_record(name: &str) -> Record {
    Record {
        name: name.to_owned(),
        mode: 0o755,
        size: 0,
        content: Content::Dir,
    }
}

fn bytes_record(name: &str, mode: u32, bytes: Vec<u8>) -> Record {
    Record {
        name: name.to_owned(),
        mode,
        size: bytes.len() as u64,
        content: Content::Bytes(bytes),
    }
}

/// One `manifest.json` entry being gathered.
struct DockerEntry {
    manifest: Descriptor,
    names: Vec<String>,
}

/// A walk over the source, remembering documents (a manifest is read for its children and
/// again for `manifest.json`).
struct Walker<'s, S: ExportSource> {
    source: &'s mut S,
    docs: HashMap<String, std::sync::Arc<Vec<u8>>>,
}

impl<S: ExportSource> Walker<'_, S> {
    fn document(
        &mut self,
        desc: &Descriptor,
    ) -> Result<std::sync::Arc<Vec<u8>>, ExportError<S::Error>> {
        let key = desc.digest().to_string();
        if let Some(b) = self.docs.get(&key) {
            return Ok(b.clone());
        }
        let b = std::sync::Arc::new(
            self.source
                .read_document(desc)
                .map_err(ExportError::Source)?,
        );
        self.docs.insert(key, b.clone());
        Ok(b)
    }

    fn children(&mut self, desc: &Descriptor) -> Result<Vec<Descriptor>, ExportError<S::Error>> {
        if !document::has_children(desc.media_type().as_ref()) {
            return Ok(Vec::new());
        }
        let bytes = self.document(desc)?;
        document::children(desc, &bytes).map_err(|source| ExportError::Children {
            digest: desc.digest().to_string(),
            source,
        })
    }

    /// A record for `desc` and everything under it (all platforms), depth first.
    fn walk_records(
        &mut self,
        desc: &Descriptor,
        algorithms: &mut BTreeSet<String>,
        skip_nd: bool,
        records: &mut Vec<Record>,
    ) -> Result<(), ExportError<S::Error>> {
        let mut stack = vec![desc.clone()];
        while let Some(d) = stack.pop() {
            let children = self.children(&d)?;
            let alg = berth_oci::Digest::parse(d.digest().as_ref())
                .map_err(|source| ModelError::Digest {
                    digest: d.digest().to_string(),
                    source,
                })?
                .algorithm();
            algorithms.insert(alg.as_str().to_owned());
            records.extend(blob_record(&d, skip_nd)?);
            stack.extend(children.into_iter().rev());
        }
        Ok(())
    }
}

/// Every record of the archive of `images` (descriptors named with [`named_target`]), as
/// containerd 1.6's `archive.Export` collects them, sorted by name.
pub fn plan<S: ExportSource>(
    source: &mut S,
    images: &[Descriptor],
    opts: &ExportOptions,
) -> Result<Plan, ExportError<S::Error>> {
    let skip_nd = opts.skip_non_distributable;
    let platform = opts.matcher();
    let mut walker = Walker {
        source,
        docs: HashMap::new(),
    };
    let mut records = vec![
        bytes_record(OCI_LAYOUT_FILE, 0o444, model::oci_layout_json()?),
        bytes_record(INDEX_FILE, 0o644, model::index_json(images.to_vec())?),
    ];
    let mut algorithms = BTreeSet::new();
    // Docker manifest.json entries, in first-seen order.
    let mut docker: Vec<DockerEntry> = Vec::new();
    let mut docker_at: HashMap<String, usize> = HashMap::new();
    let mut resolved_index: HashMap<String, Option<String>> = HashMap::new();

    for desc in images {
        let digest = desc.digest().to_string();
        let name_annotation = model::annotations(desc).remove(ANNOTATION_IMAGE_NAME);
        let mt = desc.media_type().to_string();
        if media::is_manifest_type(&mt) {
            if !docker_at.contains_key(&digest) {
                walker.walk_records(desc, &mut algorithms, skip_nd, &mut records)?;
                docker_at.insert(digest.clone(), docker.len());
                docker.push(DockerEntry {
                    manifest: desc.clone(),
                    names: Vec::new(),
                });
            }
            if let (Some(name), Some(&at)) = (&name_annotation, docker_at.get(&digest)) {
                if !name.is_empty() && !opts.skip_compatibility_manifest {
                    docker[at].names.push(name.clone());
                }
            }
        } else if media::is_index_type(&mt) {
            if !resolved_index.contains_key(&digest) {
                berth_oci::Digest::validate(&digest).map_err(|source| ModelError::Digest {
                    digest: digest.clone(),
                    source,
                })?;
                records.extend(blob_record(desc, skip_nd)?);
                let children = walker.children(desc)?;
                let mut matching = Vec::new();
                for m in children {
                    if m.platform().as_ref().is_none_or(|p| platform.matches(p)) {
                        matching.push(m.clone());
                    } else if !opts.all_platforms {
                        continue;
                    }
                    walker.walk_records(&m, &mut algorithms, skip_nd, &mut records)?;
                }
                let mut chosen = None;
                if !opts.skip_compatibility_manifest {
                    if matching.is_empty() {
                        return Err(ExportError::NoManifestForPlatform);
                    }
                    platform.sort(&mut matching, |d| d.platform().as_ref());
                    let first = matching.swap_remove(0);
                    let first_digest = first.digest().to_string();
                    if !docker_at.contains_key(&first_digest) {
                        docker_at.insert(first_digest.clone(), docker.len());
                        docker.push(DockerEntry {
                            manifest: first,
                            names: Vec::new(),
                        });
                    }
                    chosen = Some(first_digest);
                }
                resolved_index.insert(digest.clone(), chosen);
            }
            if let Some(Some(d)) = resolved_index.get(&digest) {
                if let (Some(name), Some(&at)) = (&name_annotation, docker_at.get(d)) {
                    if !name.is_empty() {
                        docker[at].names.push(name.clone());
                    }
                }
            }
        } else {
            return Err(ExportError::NotAnImage);
        }
    }

    if !docker.is_empty() && !opts.skip_compatibility_manifest {
        let mut entries = Vec::new();
        for m in &docker {
            let bytes = walker.document(&m.manifest)?;
            let manifest = document::parse_manifest(&bytes, m.manifest.media_type().as_ref())
                .map_err(ExportError::ManifestsFile)?;
            let config = model::blob_path(manifest.config().digest().as_ref())?;
            let layers = manifest
                .layers()
                .iter()
                .map(|l| model::blob_path(l.digest().as_ref()))
                .collect::<Result<Vec<_>, _>>()?;
            let tags = m
                .names
                .iter()
                .map(|n| reference::familiarize(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ExportError::ManifestsName)?;
            entries.push(DockerArchiveManifest {
                config,
                repo_tags: (!tags.is_empty()).then_some(tags),
                layers: (!layers.is_empty()).then_some(layers),
            });
        }
        let bytes = berth_oci::go_json(&entries).map_err(|source| ModelError::Json {
            what: "manifest.json",
            source,
        })?;
        records.push(bytes_record(model::DOCKER_MANIFEST_FILE, 0o644, bytes));
    }

    if !algorithms.is_empty() {
        records.push(dir_record("blobs/"));
        for alg in &algorithms {
            records.push(dir_record(&format!("blobs/{alg}/")));
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records.dedup_by(|a, b| a.name == b.name);
    Ok(Plan { records })
}

/// A USTAR header as Go's `archive/tar` writes one for these records.
pub fn header(r: &Record) -> Result<tar::Header, io::Error> {
    let mut h = tar::Header::new_ustar();
    if r.name.len() <= 100 {
        h.as_old_mut().name[..r.name.len()].copy_from_slice(r.name.as_bytes());
    } else {
        h.set_path(&r.name)?;
    }
    h.set_mode(r.mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(r.size);
    h.set_mtime(0);
    h.set_entry_type(match r.content {
        Content::Dir => tar::EntryType::Directory,
        _ => tar::EntryType::Regular,
    });
    // Always Ok on a ustar header; Go writes zeros there.
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    // The checksum as Go writes it: six octal digits, NUL, space.
    h.as_old_mut().cksum = *b"        ";
    let sum: u32 = h.as_bytes().iter().map(|&b| u32::from(b)).sum();
    h.as_old_mut()
        .cksum
        .copy_from_slice(format!("{:06o}\0 ", sum % 0o1000000).as_bytes());
    Ok(h)
}

/// A running hash of the algorithm a digest names.
pub enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: Algorithm) -> Hasher {
        match alg {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    /// `<alg>:<hex>`.
    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// Writes the planned archive to `w` (flushed at the end); `progress` sees the content bytes
/// as they go. A blob whose bytes do not hash to its digest fails the export.
pub fn write_tar<S: ExportSource>(
    source: &mut S,
    plan: &Plan,
    w: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ExportError<S::Error>> {
    for r in &plan.records {
        w.write_all(header(r).map_err(ExportError::Write)?.as_bytes())
            .map_err(ExportError::Write)?;
        let written = match &r.content {
            Content::Dir => 0,
            Content::Bytes(b) => {
                w.write_all(b).map_err(ExportError::Write)?;
                progress(b.len() as u64);
                b.len() as u64
            }
            Content::Blob(desc) => {
                let alg = berth_oci::Digest::parse(desc.digest().as_ref())
                    .map_err(|source| ModelError::Digest {
                        digest: desc.digest().to_string(),
                        source,
                    })?
                    .algorithm();
                let mut hasher = Hasher::new(alg);
                let mut failed: Option<io::Error> = None;
                let n = source
                    .copy_blob(desc, &mut |chunk| {
                        hasher.update(chunk);
                        match w.write_all(chunk) {
                            Ok(()) => {
                                progress(chunk.len() as u64);
                                true
                            }
                            Err(e) => {
                                failed = Some(e);
                                false
                            }
                        }
                    })
                    .map_err(ExportError::Copy)?;
                if let Some(e) = failed {
                    return Err(ExportError::Write(e));
                }
                let got = hasher.finish();
                if got != desc.digest().as_ref() {
                    return Err(ExportError::DigestMismatch {
                        got,
                        expected: desc.digest().to_string(),
                    });
                }
                n
            }
        };
        if written != r.size {
            return Err(ExportError::SizeMismatch(r.name.clone()));
        }
        let pad = (512 - (written % 512) as usize) % 512;
        w.write_all(&[0u8; 512][..pad])
            .map_err(ExportError::Write)?;
    }
    // The end of the archive: two zero blocks.
    w.write_all(&[0u8; 1024]).map_err(ExportError::Write)?;
    w.flush().map_err(ExportError::Write)?;
    Ok(())
}

/// Plans and writes in one go.
pub fn export<S: ExportSource>(
    source: &mut S,
    images: &[Descriptor],
    opts: &ExportOptions,
    w: &mut dyn Write,
    progress: &mut dyn FnMut(u64),
) -> Result<(), ExportError<S::Error>> {
    let plan = plan(source, images, opts)?;
    write_tar(source, &plan, w, progress)
}

/// The daemon's source: one namespace of the content store. With a lease, every blob read is
/// held by it, so the collector cannot take content from under an export whose image is
/// deleted meanwhile.
#[cfg(feature = "store")]
pub struct StoreSource<'a> {
    pub content: &'a ContentStore,
    pub ns: &'a str,
    pub lease: Option<&'a str>,
}

#[cfg(feature = "store")]
impl StoreSource<'_> {
    fn hold(&self, digest: &str) -> Result<(), StoreError> {
        if self.lease.is_some() && !self.content.hold_if_present(self.ns, digest, self.lease)? {
            return Err(StoreError::Content(
                berth_content_store::ContentError::NotFound(digest.to_owned()),
            ));
        }
        Ok(())
    }
}

#[cfg(feature = "store")]
impl ExportSource for StoreSource<'_> {
    type Error = StoreError;

    fn read_document(&mut self, desc: &Descriptor) -> Result<Vec<u8>, StoreError> {
        self.hold(desc.digest().as_ref())?;
        read_document(self.content, self.ns, desc.digest().as_ref())
    }

    fn copy_blob(
        &mut self,
        desc: &Descriptor,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, StoreError> {
        let digest = desc.digest().to_string();
        self.hold(&digest)?;
        let (mut f, _) = self.content.open_reader(self.ns, &digest)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut n = 0u64;
        loop {
            let k = match io::Read::read(&mut f, &mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(StoreError::Read { digest, source }),
            };
            n += k as u64;
            if !sink(&buf[..k]) {
                break;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_like_go() {
        let r = dir_record("blobs/");
        let h = header(&r).unwrap();
        let b = h.as_bytes();
        assert_eq!(&b[..6], b"blobs/");
        assert_eq!(&b[100..108], b"0000755\0");
        assert_eq!(b[156], b'5');
        assert_eq!(&b[257..265], b"ustar\x0000");
        assert_eq!(&b[148..156], b"010306\0 ");
        let f = Record {
            name: format!("blobs/sha256/{}", "a".repeat(64)),
            mode: 0o444,
            size: 117,
            content: Content::Bytes(vec![0; 117]),
        };
        let h = header(&f).unwrap();
        assert_eq!(h.path().unwrap().to_str().unwrap(), f.name);
        assert_eq!(h.size().unwrap(), 117);
        assert_eq!(h.mtime().unwrap(), 0);
    }
}
