//! `bctr images export`: writes images as an OCI image-layout tar (`oci-layout`, `index.json`,
//! `blobs/<alg>/<hex>`) plus Docker's `manifest.json`, laid out as containerd's exporter lays it
//! out, streaming each blob from the content store into the tar and checking its digest.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;

use bctr::archive::{self, DockerArchiveManifest, OciLayout};
use bctr::oci::{self, Descriptor, DescriptorExt};
use bctr::reference;
use berth_api::images::{images_client::ImagesClient, GetImageRequest};
use berth_oci::{platform, Matcher};
use clap::Args;
use sha2::Digest as _;

use super::images::image_target;
use super::progress;
use super::store::ContentStore;
use super::{CmdError, Ctx};

#[derive(Args)]
pub struct ExportArgs {
    /// Do not add Docker compatible manifest.json to the archive.
    #[arg(long)]
    skip_manifest_json: bool,
    /// Do not add non-distributable blobs such as Windows layers to the archive.
    #[arg(long)]
    skip_non_distributable: bool,
    /// Export content for a specific platform (may be repeated).
    #[arg(long)]
    platform: Vec<String>,
    /// Export content for all platforms.
    #[arg(long)]
    all_platforms: bool,
    /// The archive to write, or `-` for stdout.
    #[arg(value_name = "OUT")]
    out: Option<String>,
    /// The images to export.
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
}

enum Content {
    Dir,
    Bytes(Vec<u8>),
    Blob(Box<Descriptor>),
}

struct Record {
    name: String,
    mode: u32,
    size: u64,
    content: Content,
}

fn blob_record(desc: &Descriptor, skip_non_distributable: bool) -> Result<Option<Record>, String> {
    if skip_non_distributable && oci::is_non_distributable(desc.media_type_str()) {
        return Ok(None);
    }
    Ok(Some(Record {
        name: archive::blob_path(desc.digest_str())?,
        mode: 0o444,
        size: desc.size(),
        content: Content::Blob(Box::new(desc.clone())),
    }))
}

struct ExportManifest {
    manifest: Descriptor,
    names: Vec<String>,
}

pub async fn run(ctx: &Ctx, args: ExportArgs) -> Result<(), CmdError> {
    let out = match args.out.clone() {
        Some(o) if !o.is_empty() && !args.images.is_empty() => o,
        _ => {
            return Err(CmdError::Usage(
                "please provide both an output filename and an image reference to export".into(),
            ))
        }
    };
    let platform: Matcher = if args.platform.is_empty() {
        Matcher::host_strict()
    } else {
        let ps = args
            .platform
            .iter()
            .map(|p| platform::parse(p).map_err(|e| format!("invalid platform {p:?}: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CmdError::Usage)?;
        Matcher::ordered(&ps)
    };

    let mut images = ImagesClient::new(ctx.channel.clone());
    let mut manifests = Vec::new();
    for name in &args.images {
        let img = images
            .get(ctx.request(GetImageRequest { name: name.clone() }))
            .await?
            .into_inner()
            .image
            .unwrap_or_default();
        let mut target = image_target(&img)?;
        let annotations = archive::add_name_annotations(name, &target.annotation_map());
        oci::set_annotations(&mut target, annotations);
        manifests.push(target);
    }

    let mut cs = ContentStore::new(ctx);
    let records = plan(&mut cs, &manifests, &platform, &args).await?;

    let total: u64 = records.iter().map(|r| r.size).sum();
    let bar = progress::bar(Some(total), "exporting");
    let result = if out == "-" {
        let stdout = std::io::stdout();
        let mut w = std::io::BufWriter::new(stdout.lock());
        write_tar(&mut cs, &records, &mut w, &bar).await
    } else {
        let file = std::fs::File::create(&out)
            .map_err(|e| CmdError::Failed(format!("open {out}: {e}")))?;
        let mut w = std::io::BufWriter::new(file);
        let r = write_tar(&mut cs, &records, &mut w, &bar).await;
        if r.is_err() {
            drop(w);
            let _ = std::fs::remove_file(&out);
        }
        r
    };
    bar.finish_and_clear();
    result
}

/// Every record of the archive, as containerd's `archive.Export` collects them.
async fn plan(
    cs: &mut ContentStore,
    manifests: &[Descriptor],
    platform: &Matcher,
    args: &ExportArgs,
) -> Result<Vec<Record>, CmdError> {
    let skip_nd = args.skip_non_distributable;
    let json_err = |e: serde_json::Error| CmdError::Failed(e.to_string());
    let layout = oci::go_json(&OciLayout {
        version: archive::OCI_LAYOUT_VERSION.to_owned(),
    })
    .map_err(json_err)?;
    let index = oci::ImageIndexBuilder::default()
        .schema_version(2u32)
        .manifests(manifests.to_vec())
        .build()
        .map_err(|e| CmdError::Failed(e.to_string()))?;
    let index = oci::go_json(&index).map_err(json_err)?;
    let mut records = vec![
        Record {
            name: archive::OCI_LAYOUT_FILE.into(),
            mode: 0o444,
            size: layout.len() as u64,
            content: Content::Bytes(layout),
        },
        Record {
            name: "index.json".into(),
            mode: 0o644,
            size: index.len() as u64,
            content: Content::Bytes(index),
        },
    ];
    let mut algorithms = BTreeSet::new();
    // Docker manifest.json entries, in first-seen order.
    let mut docker: Vec<ExportManifest> = Vec::new();
    let mut docker_at: HashMap<String, usize> = HashMap::new();
    let mut resolved_index: HashMap<String, Option<String>> = HashMap::new();

    for desc in manifests {
        let digest = desc.digest_str().to_owned();
        let name_annotation = desc.annotation_map().remove(oci::ANNOTATION_IMAGE_NAME);
        if oci::is_manifest_type(desc.media_type_str()) {
            if !docker_at.contains_key(&digest) {
                walk_records(cs, desc, &mut algorithms, skip_nd, &mut records).await?;
                docker_at.insert(digest.clone(), docker.len());
                docker.push(ExportManifest {
                    manifest: desc.clone(),
                    names: Vec::new(),
                });
            }
            if let Some(name) = &name_annotation {
                if !name.is_empty() && !args.skip_manifest_json {
                    docker[docker_at[&digest]].names.push(name.clone());
                }
            }
        } else if oci::is_index_type(desc.media_type_str()) {
            if !resolved_index.contains_key(&digest) {
                oci::validate_digest(&digest).map_err(CmdError::Failed)?;
                records.extend(blob_record(desc, skip_nd).map_err(CmdError::Failed)?);
                let children = cs.children(desc).await?;
                let mut matching = Vec::new();
                for m in children {
                    if m.platform().as_ref().is_none_or(|p| platform.matches(p)) {
                        matching.push(m.clone());
                    } else if !args.all_platforms {
                        continue;
                    }
                    walk_records(cs, &m, &mut algorithms, skip_nd, &mut records).await?;
                }
                let mut chosen = None;
                if !args.skip_manifest_json {
                    if matching.is_empty() {
                        return Err(CmdError::Failed(
                            "no manifest found for platform: not found".into(),
                        ));
                    }
                    platform.sort(&mut matching, |d| d.platform().as_ref());
                    let first = matching.swap_remove(0);
                    let first_digest = first.digest_str().to_owned();
                    if !docker_at.contains_key(&first_digest) {
                        docker_at.insert(first_digest.clone(), docker.len());
                        docker.push(ExportManifest {
                            manifest: first,
                            names: Vec::new(),
                        });
                    }
                    chosen = Some(first_digest);
                }
                resolved_index.insert(digest.clone(), chosen);
            }
            if let Some(Some(d)) = resolved_index.get(&digest) {
                if let Some(name) = &name_annotation {
                    if !name.is_empty() {
                        docker[docker_at[d]].names.push(name.clone());
                    }
                }
            }
        } else {
            return Err(CmdError::Failed(
                "only manifests may be exported: invalid argument".into(),
            ));
        }
    }

    if !docker.is_empty() && !args.skip_manifest_json {
        let mut entries = Vec::new();
        for m in &docker {
            let bytes = cs.read_document(m.manifest.digest_str()).await?;
            let manifest = oci::parse_manifest(&bytes, m.manifest.media_type_str())
                .map_err(|e| CmdError::Failed(format!("unable to create manifests file: {e}")))?;
            let config = archive::blob_path(manifest.config().digest_str()).map_err(|e| {
                CmdError::Failed(format!(
                    "invalid manifest {:?}: {e}",
                    m.manifest.digest_str()
                ))
            })?;
            let layers = manifest
                .layers()
                .iter()
                .map(|l| archive::blob_path(l.digest_str()))
                .collect::<Result<Vec<_>, _>>()
                .map_err(CmdError::Failed)?;
            let tags = m
                .names
                .iter()
                .map(|n| reference::familiarize(n))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| CmdError::Failed(format!("unable to create manifests file: {e}")))?;
            entries.push(DockerArchiveManifest {
                config,
                repo_tags: (!tags.is_empty()).then_some(tags),
                layers: (!layers.is_empty()).then_some(layers),
            });
        }
        let bytes = oci::go_json(&entries).map_err(json_err)?;
        records.push(Record {
            name: "manifest.json".into(),
            mode: 0o644,
            size: bytes.len() as u64,
            content: Content::Bytes(bytes),
        });
    }

    if !algorithms.is_empty() {
        records.push(dir_record("blobs/"));
        for alg in &algorithms {
            records.push(dir_record(&format!("blobs/{alg}/")));
        }
    }
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records.dedup_by(|a, b| a.name == b.name);
    Ok(records)
}

fn dir_record(name: &str) -> Record {
    Record {
        name: name.to_owned(),
        mode: 0o755,
        size: 0,
        content: Content::Dir,
    }
}

/// A record for `desc` and everything under it (all platforms), depth first.
async fn walk_records(
    cs: &mut ContentStore,
    desc: &Descriptor,
    algorithms: &mut BTreeSet<String>,
    skip_nd: bool,
    records: &mut Vec<Record>,
) -> Result<(), CmdError> {
    let mut stack = vec![desc.clone()];
    while let Some(d) = stack.pop() {
        let children = cs.children(&d).await?;
        let (alg, _) = oci::split_digest(d.digest_str()).map_err(CmdError::Failed)?;
        algorithms.insert(alg.to_owned());
        records.extend(blob_record(&d, skip_nd).map_err(CmdError::Failed)?);
        stack.extend(children.into_iter().rev());
    }
    Ok(())
}

/// A USTAR header as Go's archive/tar writes one for these records.
fn header(r: &Record) -> Result<tar::Header, CmdError> {
    let mut h = tar::Header::new_ustar();
    if r.name.len() <= 100 {
        h.as_old_mut().name[..r.name.len()].copy_from_slice(r.name.as_bytes());
    } else {
        h.set_path(&r.name)
            .map_err(|e| CmdError::Failed(format!("tar header for {}: {e}", r.name)))?;
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
    let _ = h.set_device_major(0);
    let _ = h.set_device_minor(0);
    // The checksum as Go writes it: six octal digits, NUL, space.
    let old = h.as_old_mut();
    old.cksum = *b"        ";
    let sum: u32 = h.as_bytes().iter().map(|&b| u32::from(b)).sum();
    h.as_old_mut()
        .cksum
        .copy_from_slice(format!("{:06o}\0 ", sum % 0o1000000).as_bytes());
    Ok(h)
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(alg: &str) -> Option<Self> {
        match alg {
            "sha256" => Some(Hasher::Sha256(sha2::Sha256::new())),
            "sha384" => Some(Hasher::Sha384(sha2::Sha384::new())),
            "sha512" => Some(Hasher::Sha512(sha2::Sha512::new())),
            _ => None,
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self, alg: &str) -> String {
        let hex = match self {
            Hasher::Sha256(h) => hex::encode(h.finalize()),
            Hasher::Sha384(h) => hex::encode(h.finalize()),
            Hasher::Sha512(h) => hex::encode(h.finalize()),
        };
        format!("{alg}:{hex}")
    }
}

async fn write_tar(
    cs: &mut ContentStore,
    records: &[Record],
    w: &mut dyn Write,
    bar: &indicatif::ProgressBar,
) -> Result<(), CmdError> {
    let io = |e: std::io::Error| CmdError::Failed(format!("writing archive: {e}"));
    for r in records {
        w.write_all(header(r)?.as_bytes()).map_err(io)?;
        let written = match &r.content {
            Content::Dir => 0,
            Content::Bytes(b) => {
                w.write_all(b).map_err(io)?;
                b.len() as u64
            }
            Content::Blob(desc) => {
                let (alg, _) = oci::split_digest(desc.digest_str()).map_err(CmdError::Failed)?;
                let mut hasher = Hasher::new(alg).ok_or_else(|| {
                    CmdError::Failed(format!("unsupported digest algorithm in {}", desc.digest()))
                })?;
                let n = cs
                    .read_chunks(desc.digest_str(), 0, 0, |chunk| {
                        hasher.update(chunk);
                        bar.inc(chunk.len() as u64);
                        w.write_all(chunk).map_err(io)
                    })
                    .await
                    .map_err(|e| {
                        CmdError::Failed(format!("failed to copy to tar: {}", CmdError::from(e)))
                    })?;
                let got = hasher.finish(alg);
                if got != desc.digest_str() {
                    return Err(CmdError::Failed(format!("unexpected digest {got} copied")));
                }
                n
            }
        };
        if written != r.size {
            return Err(CmdError::Failed(format!(
                "unexpected copy size for {}",
                r.name
            )));
        }
        let pad = (512 - (written % 512) as usize) % 512;
        w.write_all(&[0u8; 512][..pad]).map_err(io)?;
    }
    // The end of the archive: two zero blocks.
    w.write_all(&[0u8; 1024]).map_err(io)?;
    w.flush().map_err(io)?;
    Ok(())
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
