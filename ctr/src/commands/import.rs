//! `bctr images import`: an OCI image layout tar or a `docker save` tar into the image store.
//!
//! By default through the daemon, as containerd 2.x's `ctr` imports: the archive streams to the
//! daemon over a data stream (`ImageImportStream`), and the daemon stores it, names the images
//! (an `ImageStore` built from the flags exactly as `ctr` builds it) and unpacks them, while bctr
//! shows the bytes sent and the daemon's progress.
//!
//! With `--local`, or by itself when the daemon has no Transfer service (containerd 1.x), as
//! containerd 1.x's client imports: bctr reads the archive, streams every file into the content
//! store, builds a Docker manifest and an OCI index for docker archives, labels the content
//! with containerd's GC references and creates the image records, all under a temporary lease;
//! unpacking follows unless `--no-unpack`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};

use bctr::oci::{self, media, Descriptor, DescriptorExt};
use berth_api::images::{
    images_client::ImagesClient, CreateImageRequest, Image, UpdateImageRequest,
};
use berth_api::types::transfer as tt;
use berth_image_archive::model::{self as archive, BlobInfo, DockerArchiveManifest, OciLayout};
use berth_image_archive::reference::{self, RefTranslator};
use berth_oci::{platform, Matcher};
use clap::Args;
use prost::Message as _;
use sha2::{Digest as _, Sha256};
use tonic::Code;

use super::progress::{self, ProgressReader};
use super::store::{self, ContentStore, CHUNK};
use super::transfer::{self, any, DataStream, Display, Meter, OpenError, Via};
use super::{leases, rpc_context, unpack, CmdError, Ctx};

#[derive(Args)]
pub struct ImportArgs {
    /// Base image name for added images; when given, only images with this name prefix are
    /// imported.
    #[arg(long, default_value = "", hide_default_value = true)]
    base_name: String,
    /// Whether to create digest images (`<base>@<digest>`).
    #[arg(long)]
    digests: bool,
    /// Skip applying --digests to images named in the archive (use with --digests).
    #[arg(long)]
    skip_digest_for_named: bool,
    /// Image name to keep the index as; by default the index is discarded.
    #[arg(long, default_value = "", hide_default_value = true)]
    index_name: String,
    /// Import content for all platforms.
    #[arg(long)]
    all_platforms: bool,
    /// Import content for a specific platform.
    #[arg(long, default_value = "", hide_default_value = true)]
    platform: String,
    /// Unpack from the client, layer by layer, as ctr 1.x does, even when the daemon can unpack
    /// (implies --local).
    #[arg(long)]
    local_unpack: bool,
    /// Import from the client (as containerd 1.x's ctr) rather than through the daemon's
    /// Transfer API; the default when the daemon has no Transfer service.
    #[arg(long)]
    local: bool,
    /// Labels for the imported images (key=value; may be repeated).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// Print no progress.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Skip unpacking the images.
    #[arg(long)]
    no_unpack: bool,
    /// Compress uncompressed blobs when creating the manifest (Docker format only).
    #[arg(long)]
    compress_blobs: bool,
    /// Snapshotter name; empty means the namespace's default.
    #[arg(
        long,
        env = "CONTAINERD_SNAPSHOTTER",
        default_value = "",
        hide_default_value = true
    )]
    snapshotter: String,
    /// The archive, or `-` for stdin.
    #[arg(value_name = "IN")]
    input: String,
}

/// An image record the import creates or updates.
pub struct ImportedImage {
    pub name: String,
    pub target: Descriptor,
}

pub async fn run(ctx: &Ctx, args: ImportArgs) -> Result<(), CmdError> {
    if args.skip_digest_for_named && !args.digests {
        return Err(CmdError::Usage(
            "--skip-digest-for-named must be specified with --digests option".into(),
        ));
    }
    let labels = super::parse_labels(&args.labels)?;
    if args.local || args.local_unpack {
        return run_local(ctx, args, labels).await;
    }
    match through_transfer(ctx, &args, &labels).await {
        Ok(()) => Ok(()),
        // Nothing was printed or read yet (or the archive is a file, read again from its start).
        Err(Via::NoTransfer) => run_local(ctx, args, labels).await,
        Err(Via::Failed(e)) => Err(e),
    }
}

/// The platform the flags name as the API's (this machine's when none).
fn proto_platform(spec: &str) -> Result<berth_api::types::Platform, CmdError> {
    let p = if spec.is_empty() {
        berth_oci::host_platform()
    } else {
        platform::parse(spec).map_err(|e| CmdError::Usage(format!("--platform: {e}")))?
    };
    Ok(berth_api::types::Platform {
        os: platform::os(&p),
        architecture: platform::arch(&p),
        variant: platform::variant(&p).to_owned(),
        ..Default::default()
    })
}

/// The destination as containerd 2.x's `ctr images import` builds it: the archive's images
/// named through a prefix reference (`--base-name`, else `import-<date>` which names in the
/// archive may overwrite), with digest names for `--digests`; the index kept as
/// `--index-name`; the platform filter and unpack configuration of `--platform` /
/// `--all-platforms` / `--no-unpack`.
///
/// One difference: `ctr` sets the reference's "skip named digest" to the *opposite* of
/// `--skip-digest-for-named` (so its `--digests` alone gives named images no digest name);
/// bctr follows the flag's meaning, which is also what its `--local` import and containerd
/// 1.x do.
fn image_store(
    args: &ImportArgs,
    labels: &[(String, String)],
    snapshotter: Option<String>,
) -> Result<tt::ImageStore, CmdError> {
    let (prefix, overwrite) = if args.base_name.is_empty() {
        (
            format!("import-{}", chrono::Local::now().format("%Y-%m-%d")),
            true,
        )
    } else {
        (args.base_name.clone(), false)
    };
    let reference = tt::ImageReference {
        name: prefix,
        is_prefix: true,
        allow_overwrite: overwrite,
        add_digest: args.digests,
        skip_named_digest: args.digests && args.skip_digest_for_named,
    };
    // Even with --all-platforms only this machine's platform is unpacked, as ctr does.
    let unpack_platform = proto_platform(if args.all_platforms {
        ""
    } else {
        &args.platform
    })?;
    Ok(tt::ImageStore {
        name: args.index_name.clone(),
        labels: labels.iter().cloned().collect(),
        platforms: if args.all_platforms {
            Vec::new()
        } else {
            vec![unpack_platform.clone()]
        },
        extra_references: vec![reference],
        unpacks: snapshotter
            .map(|snapshotter| tt::UnpackConfiguration {
                platform: Some(unpack_platform),
                snapshotter,
            })
            .into_iter()
            .collect(),
        ..Default::default()
    })
}

/// The import through the daemon's Transfer API.
async fn through_transfer(
    ctx: &Ctx,
    args: &ImportArgs,
    labels: &[(String, String)],
) -> Result<(), Via> {
    let snapshotter = if args.no_unpack {
        None
    } else {
        Some(
            match super::images::resolve_snapshotter(ctx, &args.snapshotter).await {
                Ok(s) => s,
                // A namespace the import is about to create has no default of its own: the daemon's.
                Err(CmdError::Rpc(s)) if s.code() == Code::NotFound => String::new(),
                Err(e) => return Err(e.into()),
            },
        )
    };
    let store = image_store(args, labels, snapshotter)?;
    let data = match DataStream::open(ctx, "import").await {
        Ok(d) => d,
        Err(OpenError::NoStreaming) => return Err(Via::NoTransfer),
        Err(OpenError::Failed(e)) => return Err(e.into()),
    };
    let from_stdin = args.input == "-";
    let (input, total): (Box<dyn tokio::io::AsyncRead + Unpin + Send>, Option<u64>) = if from_stdin
    {
        (Box::new(tokio::io::stdin()), None)
    } else {
        let f = tokio::fs::File::open(&args.input)
            .await
            .map_err(|e| CmdError::Failed(format!("open {}: {e}", args.input)))?;
        let len = f.metadata().await.ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let source = tt::ImageImportStream {
        stream: data.id.clone(),
        // Empty: the daemon finds out whether the archive is compressed (containerd's ctr).
        media_type: String::new(),
        force_compress: args.compress_blobs,
    };
    let meter = Meter::new("sent", total);
    let sending = tokio::spawn(data.send(input, meter.clone()));
    let result = transfer::run_metered(
        ctx,
        any(transfer::IMAGE_IMPORT_STREAM, source.encode_to_vec()),
        any(transfer::IMAGE_STORE, store.encode_to_vec()),
        Display::choose(args.quiet),
        Some(meter),
    )
    .await;
    let result = match result {
        Ok(r) => r,
        Err(e) => {
            sending.abort();
            return Err(e.into());
        }
    };
    match result {
        Ok(()) => {
            // The daemon has read the archive and closed the stream: this ends at once.
            let _ = sending.await;
            Ok(())
        }
        Err(s) => {
            sending.abort();
            if s.code() == Code::Unimplemented {
                if from_stdin {
                    return Err(Via::Failed(CmdError::Failed(format!(
                        "the daemon cannot import through its Transfer API ({}); use                          `bctr images import --local -`",
                        s.message()
                    ))));
                }
                return Err(Via::NoTransfer);
            }
            Err(Via::Failed(CmdError::Rpc(s)))
        }
    }
}

/// The import from the client (containerd 1.x's `ctr images import`).
async fn run_local(
    ctx: &Ctx,
    args: ImportArgs,
    labels: Vec<(String, String)>,
) -> Result<(), CmdError> {
    let (prefix, translator) = if args.base_name.is_empty() {
        let p = format!("import-{}", chrono::Local::now().format("%Y-%m-%d"));
        (p.clone(), RefTranslator::AddPrefix(p))
    } else {
        (
            args.base_name.clone(),
            RefTranslator::FilterPrefix(args.base_name.clone()),
        )
    };
    let strict_platform = if args.platform.is_empty() {
        None
    } else {
        let p = platform::parse(&args.platform).map_err(|e| CmdError::Usage(e.to_string()))?;
        Some(Matcher::only_strict(&p))
    };
    let matcher = if args.all_platforms {
        Matcher::all()
    } else if let Some(m) = &strict_platform {
        m.clone()
    } else {
        Matcher::host()
    };

    let (input, total): (Box<dyn Read>, Option<u64>) = if args.input == "-" {
        (Box::new(std::io::stdin()), None)
    } else {
        let f = std::fs::File::open(&args.input)
            .map_err(|e| CmdError::Failed(format!("open {}: {e}", args.input)))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(f), len)
    };
    let bar = progress::bar(total, "importing");
    let input = ProgressReader::new(input, bar.clone());

    let lease = leases::create_temporary(ctx).await?;
    let leased = ctx.with_lease(&lease);
    let opts = ImportOptions {
        translator: &translator,
        digest_prefix: args.digests.then_some(prefix.as_str()),
        skip_digest_for_named: args.skip_digest_for_named,
        index_name: &args.index_name,
        matcher: &matcher,
        compress: args.compress_blobs,
        labels: labels.into_iter().collect(),
    };
    let result = import(&leased, input, &opts).await;
    bar.finish_and_clear();
    let cleanup = leases::delete_temporary(ctx, &lease).await;
    let images = result?;
    cleanup?;

    if !args.no_unpack {
        let platform = strict_platform.unwrap_or_else(Matcher::host);
        for img in &images {
            use std::io::Write;
            print!("unpacking {} ({})...", img.name, img.target.digest());
            let _ = std::io::stdout().flush();
            // berthd unpacks by itself, in parallel; other daemons get ctr's client-side unpack.
            let in_daemon = !args.local_unpack
                && super::server_unpack::unpack_in_daemon(
                    ctx,
                    &img.name,
                    &args.snapshotter,
                    &args.platform,
                    false,
                )
                .await?;
            if !in_daemon {
                unpack::unpack(ctx, &img.target, &platform, &args.snapshotter).await?;
            }
            println!("done");
        }
    }
    Ok(())
}

struct ImportOptions<'a> {
    translator: &'a RefTranslator,
    digest_prefix: Option<&'a str>,
    skip_digest_for_named: bool,
    index_name: &'a str,
    matcher: &'a Matcher,
    compress: bool,
    /// `--label`s of every image record.
    labels: HashMap<String, String>,
}

async fn import(
    ctx: &Ctx,
    input: impl Read,
    opts: &ImportOptions<'_>,
) -> Result<Vec<ImportedImage>, CmdError> {
    let mut cs = ContentStore::new(ctx);
    let index = import_index(&mut cs, input, opts.compress).await?;

    let mut images: Vec<ImportedImage> = Vec::new();
    if !opts.index_name.is_empty() {
        images.push(ImportedImage {
            name: opts.index_name.to_owned(),
            target: index.clone(),
        });
    }

    // Walk from the index: name the images it lists, label every parent with its (platform
    // filtered) children, as containerd's Import does with SetChildrenLabels(FilterPlatforms).
    let mut stack = vec![index.clone()];
    let mut labelled: HashSet<String> = HashSet::new();
    let mut any_children = false;
    while let Some(desc) = stack.pop() {
        let children = if desc.digest() == index.digest() {
            let bytes = cs.read_document(desc.digest_str()).await?;
            let idx = oci::parse_index(&bytes, media::OCI_INDEX)
                .map_err(|e| CmdError::Failed(format!("index {}: {e}", desc.digest())))?;
            let manifests = idx.manifests().clone();
            for m in &manifests {
                let name = reference::image_name(&m.annotation_map(), Some(opts.translator));
                if !name.is_empty() {
                    images.push(ImportedImage {
                        name: name.clone(),
                        target: m.clone(),
                    });
                }
                if opts.skip_digest_for_named && !name.is_empty() {
                    continue;
                }
                if let Some(prefix) = opts.digest_prefix {
                    images.push(ImportedImage {
                        name: format!("{prefix}@{}", m.digest()),
                        target: m.clone(),
                    });
                }
            }
            manifests
        } else {
            cs.children(&desc).await?
        };
        let children: Vec<Descriptor> = children
            .into_iter()
            .filter(|d| {
                d.platform()
                    .as_ref()
                    .is_none_or(|p| opts.matcher.matches(p))
            })
            .collect();
        if children.is_empty() {
            continue;
        }
        any_children = true;
        // The same document has the same children: label it once.
        if labelled.insert(desc.digest_str().to_owned()) {
            let labels = oci::children_gc_labels(&children);
            cs.update_labels(desc.digest_str(), &labels)
                .await
                .map_err(rpc_context(format!("failed to label {}", desc.digest())))?;
        }
        stack.extend(children.into_iter().rev());
    }
    if !any_children {
        return Err(CmdError::Failed("image might be filtered out".into()));
    }

    let mut client = ImagesClient::new(ctx.channel.clone());
    for img in &images {
        let record = Image {
            name: img.name.clone(),
            labels: opts.labels.clone(),
            target: Some(oci::to_proto(&img.target)),
            ..Image::default()
        };
        // The target, and the labels only when some were given (containerd's client).
        let mut paths = vec!["target".to_owned()];
        if !opts.labels.is_empty() {
            paths.push("labels".into());
        }
        let updated = client
            .update(ctx.request(UpdateImageRequest {
                image: Some(record.clone()),
                update_mask: Some(prost_types::FieldMask { paths }),
                source_date_epoch: None,
            }))
            .await;
        match updated {
            Ok(_) => {}
            Err(s) if s.code() == Code::NotFound => {
                client
                    .create(ctx.request(CreateImageRequest {
                        image: Some(record),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(rpc_context(format!("failed to create image {}", img.name)))?;
            }
            Err(s) => {
                return Err(CmdError::Failed(format!(
                    "failed to update image {}: {}",
                    img.name,
                    s.message()
                )))
            }
        }
    }
    Ok(images)
}

/// A reader that hashes and keeps the first bytes of everything read through it.
struct Tee<'a, R> {
    inner: R,
    hasher: &'a mut Sha256,
    head: &'a mut Vec<u8>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        if self.head.len() < 10 {
            let take = (10 - self.head.len()).min(n);
            self.head.extend_from_slice(&buf[..take]);
        }
        Ok(n)
    }
}

/// containerd's `archive.ImportIndex`: stores every regular file of the tar (as `tar-<name>`),
/// then returns the OCI index of an OCI layout, or builds one for a docker archive.
async fn import_index(
    cs: &mut ContentStore,
    input: impl Read,
    compress: bool,
) -> Result<Descriptor, CmdError> {
    // A gzip-compressed archive (`docker save | gzip`) is read through a decoder.
    let mut buffered = BufReader::with_capacity(CHUNK, input);
    let peek = buffered
        .fill_buf()
        .map_err(|e| CmdError::Failed(format!("reading archive: {e}")))?;
    let reader: Box<dyn Read> = if peek.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    // Image archives come from anywhere: extension headers are bounded as in layers.
    let mut tar = tar::Archive::new(berth_archive::HeaderGuard::new(reader));
    let entries = tar.entries().map_err(tar_error)?;

    let mut layout: Option<OciLayout> = None;
    let mut docker_manifests: Option<Vec<DockerArchiveManifest>> = None;
    let mut symlinks: BTreeMap<String, String> = BTreeMap::new();
    let mut blobs: HashMap<String, BlobInfo> = HashMap::new();

    for entry in entries {
        let mut entry = entry.map_err(tar_error)?;
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::Symlink {
            let link = entry
                .link_name_bytes()
                .map(|l| String::from_utf8_lossy(&l).into_owned())
                .unwrap_or_default();
            symlinks.insert(
                archive::clean_path(&raw_name),
                archive::symlink_target(&raw_name, &link),
            );
            continue;
        }
        if kind != tar::EntryType::Regular {
            continue;
        }
        let name = archive::clean_path(&raw_name);
        let size = entry.header().size().unwrap_or(0) as i64;
        if name == archive::OCI_LAYOUT_FILE {
            let bytes = read_json_file(&mut entry, &name)?;
            layout =
                Some(serde_json::from_slice(&bytes).map_err(|e| {
                    CmdError::Failed(format!("untar oci layout {raw_name:?}: {e}"))
                })?);
        } else if name == "manifest.json" {
            let bytes = read_json_file(&mut entry, &name)?;
            docker_manifests = Some(
                serde_json::from_slice(&bytes)
                    .map_err(|e| CmdError::Failed(format!("untar manifest {raw_name:?}: {e}")))?,
            );
        } else {
            let info = ingest_entry(cs, &mut entry, &name, size)
                .await
                .map_err(|e| CmdError::Failed(format!("failed to ingest {raw_name:?}: {e}")))?;
            blobs.insert(name, info);
        }
    }

    if let Some(layout) = layout.filter(|l| !l.version.is_empty()) {
        if layout.version != archive::OCI_LAYOUT_VERSION {
            return Err(CmdError::Failed(format!(
                "unsupported OCI version {}",
                layout.version
            )));
        }
        let idx = blobs.get("index.json").ok_or_else(|| {
            CmdError::Failed(format!(
                "missing index.json in OCI layout {}",
                archive::OCI_LAYOUT_VERSION
            ))
        })?;
        return oci::descriptor(media::OCI_INDEX, &idx.digest, idx.size).map_err(CmdError::Failed);
    }
    let Some(manifests) = docker_manifests else {
        return Err(CmdError::Failed("unrecognized image format".into()));
    };
    archive::resolve_symlinks(&mut blobs, &symlinks).map_err(failed)?;

    let mut index_entries = Vec::new();
    for m in &manifests {
        let config = blobs
            .get(&m.config)
            .ok_or_else(|| CmdError::Failed(format!("image config {:?} not found", m.config)))?;
        let config = oci::descriptor(media::DOCKER_CONFIG, &config.digest, config.size)
            .map_err(CmdError::Failed)?;
        let layer_files = m.layers.clone().unwrap_or_default();
        let layers = resolve_layers(cs, &layer_files, &blobs, compress)
            .await
            .map_err(|e| CmdError::Failed(format!("failed to resolve layers: {e}")))?;
        let manifest = archive::docker_manifest_json(&config, &layers).map_err(failed)?;
        let desc = write_document(cs, &manifest, media::DOCKER_MANIFEST)
            .await
            .map_err(|e| CmdError::Failed(format!("write docker manifest: {e}")))?;
        let platform = oci::config_platform(
            &cs.read_config(&config)
                .await
                .map_err(|e| CmdError::Failed(format!("unable to resolve platform: {e}")))?,
        );
        let tags = m.repo_tags.clone().unwrap_or_default();
        index_entries
            .extend(archive::docker_index_entries(&desc, Some(platform), &tags).map_err(failed)?);
    }
    let index = archive::index_json(index_entries).map_err(failed)?;
    write_document(cs, &index, media::OCI_INDEX).await
}

/// An archive-model error as bctr's.
fn failed(e: archive::ModelError) -> CmdError {
    CmdError::Failed(e.to_string())
}

/// A tar reading failure as one line: a corrupt header is said so, not quoted.
fn tar_error(e: std::io::Error) -> CmdError {
    let msg = e.to_string();
    // The tar crate quotes the bad header ("… when getting cksum for <name>").
    if msg.contains(" when getting ") {
        return CmdError::Failed("reading archive: invalid tar header".into());
    }
    let first: String = msg
        .lines()
        .next()
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    CmdError::Failed(format!("reading archive: {first}"))
}

fn read_json_file(entry: &mut impl Read, name: &str) -> Result<Vec<u8>, CmdError> {
    let mut bytes = Vec::new();
    entry
        .take(archive::JSON_LIMIT)
        .read_to_end(&mut bytes)
        .map_err(|e| CmdError::Failed(format!("reading {name}: {e}")))?;
    Ok(bytes)
}

/// Streams one file of the archive into the content store under `tar-<name>`. A file at
/// `blobs/<alg>/<hex>` is expected to have that digest, so one the daemon already has is not
/// sent again.
async fn ingest_entry(
    cs: &mut ContentStore,
    entry: &mut impl Read,
    name: &str,
    size: i64,
) -> Result<BlobInfo, String> {
    let expected = archive::blob_path_digest(name).unwrap_or_default();
    let mut hasher = Sha256::new();
    let mut head = Vec::new();
    let writer = cs
        .writer(&format!("tar-{name}"), size, &expected)
        .await
        .map_err(|s| format!("failed to open writer: {}", s.message()))?;
    match writer {
        None => {
            // Already stored: only its first bytes are needed (to tell a layer's compression).
            let mut tee = Tee {
                inner: entry.take(10),
                hasher: &mut hasher,
                head: &mut head,
            };
            std::io::copy(&mut tee, &mut std::io::sink()).map_err(|e| e.to_string())?;
            Ok(BlobInfo {
                digest: expected,
                size,
                head,
            })
        }
        Some(w) => {
            let mut tee = Tee {
                inner: entry,
                hasher: &mut hasher,
                head: &mut head,
            };
            w.copy_from(&mut tee, size, &expected, HashMap::new())
                .await
                .map_err(|e| e.to_string())?;
            let digest = berth_oci::Digest::from_sha256(hasher.finalize().into()).into_string();
            Ok(BlobInfo {
                digest: if expected.is_empty() {
                    digest
                } else {
                    expected
                },
                size,
                head,
            })
        }
    }
}

/// Writes a document containerd generated (manifest or index) under `manifest-<digest>`.
async fn write_document(
    cs: &mut ContentStore,
    bytes: &[u8],
    media_type: &str,
) -> Result<Descriptor, CmdError> {
    let digest = oci::sha256_digest(bytes);
    let desc =
        oci::descriptor(media_type, &digest, bytes.len() as i64).map_err(CmdError::Failed)?;
    store::write_blob(
        cs,
        &format!("manifest-{digest}"),
        &mut &bytes[..],
        bytes.len() as i64,
        &digest,
        HashMap::new(),
    )
    .await?;
    Ok(desc)
}

/// A layer of a docker archive while its media type is being worked out.
struct PendingLayer {
    digest: String,
    size: i64,
    /// `None` until known.
    media_type: Option<&'static str>,
}

/// containerd's `resolveLayers`: each layer file's descriptor, replaced by an already stored
/// compressed blob when one is labelled as its compression, otherwise typed by its first bytes
/// (and gzip-compressed into the store with `--compress-blobs`).
async fn resolve_layers(
    cs: &mut ContentStore,
    files: &[String],
    blobs: &HashMap<String, BlobInfo>,
    compress: bool,
) -> Result<Vec<Descriptor>, String> {
    let mut layers = Vec::with_capacity(files.len());
    let mut heads = Vec::with_capacity(files.len());
    for f in files {
        let b = blobs
            .get(f)
            .ok_or_else(|| format!("layer {f:?} not found"))?;
        layers.push(PendingLayer {
            digest: b.digest.clone(),
            size: b.size,
            media_type: None,
        });
        heads.push(b.head.clone());
    }
    if !layers.is_empty() {
        let filters = layers
            .iter()
            .map(|l| format!("labels.\"{}\"=={}", oci::LABEL_UNCOMPRESSED, l.digest))
            .collect();
        let found = cs
            .list(filters)
            .await
            .map_err(|s| format!("failure checking for compressed blobs: {}", s.message()))?;
        for info in found {
            let Some(uncompressed) = info.labels.get(oci::LABEL_UNCOMPRESSED) else {
                continue;
            };
            for (i, l) in layers.iter_mut().enumerate() {
                if &l.digest == uncompressed && l.media_type.is_none() {
                    let mut head = Vec::new();
                    cs.read_chunks(&info.digest, 0, 10, |c| {
                        head.extend_from_slice(c);
                        Ok(())
                    })
                    .await
                    .map_err(|e| {
                        format!(
                            "failed to detect media type of layer: {}",
                            CmdError::from(e)
                        )
                    })?;
                    l.digest = info.digest.clone();
                    l.size = info.size;
                    l.media_type = Some(archive::docker_layer_media_type(&head));
                    heads[i] = head;
                }
            }
        }
    }
    let mut out = Vec::with_capacity(layers.len());
    for (l, head) in layers.iter().zip(&heads) {
        let desc = match l.media_type {
            Some(mt) => oci::descriptor(mt, &l.digest, l.size)?,
            None => {
                let mt = archive::docker_layer_media_type(head);
                if mt == media::DOCKER_LAYER && compress {
                    compress_blob(cs, &l.digest).await?
                } else {
                    oci::descriptor(mt, &l.digest, l.size)?
                }
            }
        };
        out.push(desc);
    }
    Ok(out)
}

/// Stores a gzip-compressed copy of the uncompressed layer `digest`, labelled with the digest
/// it uncompresses to; returns its descriptor.
async fn compress_blob(cs: &mut ContentStore, layer: &str) -> Result<Descriptor, String> {
    use std::io::Write;
    let (_, enc) = oci::split_digest(layer)?;
    let r#ref = format!("compress-blob-sha256-{enc}");
    // Read the layer back and gzip it in memory chunk by chunk; the compressed bytes are sent
    // as they accumulate.
    let mut writer = match cs.writer(&r#ref, 0, "").await {
        Ok(Some(w)) => w,
        Ok(None) => return Err(format!("failed to open writer for {ref}")),
        Err(s) => return Err(format!("failed to open writer: {}", s.message())),
    };
    if writer.offset > 0 {
        // An earlier attempt left data: start over (containerd truncates the writer).
        drop(writer);
        cs.abort(&r#ref).await.map_err(|s| s.message().to_owned())?;
        writer = match cs.writer(&r#ref, 0, "").await {
            Ok(Some(w)) => w,
            Ok(None) => return Err(format!("failed to open writer for {ref}")),
            Err(s) => return Err(format!("failed to open writer: {}", s.message())),
        };
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut hasher = Sha256::new();
    let mut size = 0i64;
    let mut stream = cs
        .open_read(layer, 0, 0)
        .await
        .map_err(|s| format!("failed to read {layer}: {}", s.message()))?;
    loop {
        let msg = stream
            .message()
            .await
            .map_err(|s| format!("failed to read {layer}: {}", s.message()))?;
        let last = msg.is_none();
        match msg {
            Some(m) => gz.write_all(&m.data).map_err(|e| e.to_string())?,
            None => gz.try_finish().map_err(|e| e.to_string())?,
        }
        if gz.get_ref().len() >= CHUNK || (last && !gz.get_ref().is_empty()) {
            let chunk = std::mem::take(gz.get_mut());
            hasher.update(&chunk);
            size += chunk.len() as i64;
            writer
                .write(chunk)
                .await
                .map_err(|s| format!("failed to write: {}", s.message()))?;
        }
        if last {
            break;
        }
    }
    let digest = berth_oci::Digest::from_sha256(hasher.finalize().into()).into_string();
    let labels = HashMap::from([(oci::LABEL_UNCOMPRESSED.to_owned(), layer.to_owned())]);
    match writer.commit(size, &digest, labels).await {
        Ok(_) => {}
        Err(s) if s.code() == Code::AlreadyExists => {}
        Err(s) => return Err(format!("failed to commit: {}", s.message())),
    }
    oci::descriptor(media::DOCKER_LAYER_GZIP, &digest, size)
}
