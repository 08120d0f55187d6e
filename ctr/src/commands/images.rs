//! `bctr images`: list, check, label, remove, pull, push, tag, import and export images.

use std::collections::BTreeSet;

use bctr::oci::{self, Descriptor, DescriptorExt};
use bctr::table::TabWriter;
use bctr::units::progress_bytes;
use berth_api::images::{
    images_client::ImagesClient, DeleteImageRequest, Image, ListImagesRequest, UpdateImageRequest,
};
use berth_api::namespaces::{namespaces_client::NamespacesClient, GetNamespaceRequest};
use berth_api::snapshots::{snapshots_client::SnapshotsClient, StatSnapshotRequest};
use berth_oci::{platform, Matcher};
use clap::Subcommand;
use tonic::Code;

use super::output::{labels as label_map, print_rows, rfc3339, ListFormat};
use super::store::{self, ContentStore, WalkError};
use super::{join_labels, label_args, CmdError, Ctx};

/// One image in `images ls --format json`.
#[derive(serde::Serialize)]
struct ImageRow {
    name: String,
    r#type: String,
    digest: String,
    /// Bytes of the host platform's manifest, config and layers; null when unknown.
    size: Option<i64>,
    platforms: Vec<String>,
    labels: std::collections::BTreeMap<String, String>,
    created_at: Option<String>,
    updated_at: Option<String>,
}

/// One image in `images check --format json`.
#[derive(serde::Serialize)]
struct CheckRow {
    name: String,
    r#type: String,
    digest: String,
    /// complete, incomplete, unavailable or error.
    status: String,
    present: Option<usize>,
    required: Option<usize>,
    present_size: Option<u64>,
    required_size: Option<u64>,
    complete: bool,
    unpacked: bool,
}

/// The namespace label naming the namespace's default snapshotter.
const DEFAULT_SNAPSHOTTER_LABEL: &str = "containerd.io/defaults/snapshotter";
/// containerd's default snapshotter on Linux.
const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

#[derive(Subcommand)]
pub enum ImagesCommand {
    /// Check existing images to ensure all content is available locally.
    Check {
        /// Print only the ready image refs (fully downloaded and unpacked; wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
        /// Snapshotter name; empty means the namespace's default.
        #[arg(
            long,
            env = "CONTAINERD_SNAPSHOTTER",
            default_value = "",
            hide_default_value = true
        )]
        snapshotter: String,
        filters: Vec<String>,
    },
    /// Export images to an OCI tar archive.
    #[command(after_help = super::examples::EXPORT)]
    Export(super::export::ExportArgs),
    /// Pull an image from a registry through the daemon (the Transfer API), with progress.
    Pull(super::pull::PullArgs),
    /// Push an image to a registry through the daemon (the Transfer API), with progress.
    Push(super::push::PushArgs),
    /// Give an image another name (through the Transfer API).
    Tag(super::push::TagArgs),
    /// Import images from a tar archive (OCI layout or docker save).
    #[command(after_help = super::examples::IMPORT)]
    Import(super::import::ImportArgs),
    /// Unpack an image into snapshots inside berthd (layers extracted in parallel on overlayfs).
    Unpack(super::server_unpack::UnpackArgs),
    /// Mount an image's root file system on a directory (unpacking it first if needed).
    Mount(super::mount::MountArgs),
    /// Unmount an image mounted with `images mount` (`--rm` also drops its snapshot and lease).
    Unmount(super::mount::UnmountArgs),
    /// List images known to the daemon.
    #[command(alias = "list")]
    Ls {
        /// Print only the image refs (wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
        filters: Vec<String>,
    },
    /// Remove one or more images by reference.
    #[command(aliases = ["delete", "del", "remove"])]
    Rm {
        /// Synchronously remove image and all associated resources.
        #[arg(long)]
        sync: bool,
        #[arg(required = true, value_name = "REF")]
        names: Vec<String>,
    },
    /// Set and clear labels for an image.
    Label {
        /// Replace all labels.
        #[arg(long, short = 'r')]
        replace_all: bool,
        name: String,
        labels: Vec<String>,
    },
}

/// The image's target descriptor; an image without a valid one is an error.
pub fn image_target(img: &Image) -> Result<Descriptor, CmdError> {
    let target = img.target.clone().unwrap_or_default();
    oci::from_proto(&target)
        .map_err(|e| CmdError::Failed(format!("image {}: invalid target: {e}", img.name)))
}

pub async fn run(ctx: &Ctx, cmd: ImagesCommand) -> Result<(), CmdError> {
    let mut client = ImagesClient::new(ctx.channel.clone());
    match cmd {
        ImagesCommand::Ls {
            quiet,
            format,
            filters,
        } => {
            let images = client
                .list(ctx.request(ListImagesRequest { filters }))
                .await
                .map_err(super::rpc_context("failed to list images"))?
                .into_inner()
                .images;
            if quiet {
                for i in &images {
                    println!("{}", i.name);
                }
                return Ok(());
            }
            let mut cs = ContentStore::new(ctx);
            let platform = Matcher::host();
            let mut text = String::from("REF\tTYPE\tDIGEST\tSIZE\tPLATFORMS\tLABELS\t\n");
            let mut rows = Vec::new();
            for img in &images {
                let proto = img.target.clone().unwrap_or_default();
                let mut row = ImageRow {
                    name: img.name.clone(),
                    r#type: proto.media_type.clone(),
                    digest: proto.digest.clone(),
                    size: None,
                    platforms: Vec::new(),
                    labels: label_map(&img.labels),
                    created_at: rfc3339(img.created_at.as_ref()),
                    updated_at: rfc3339(img.updated_at.as_ref()),
                };
                let target = match image_target(img) {
                    Ok(t) => t,
                    Err(e) => {
                        eprintln!("bctr: {e}");
                        rows.push(row);
                        text.push_str(&format!(
                            "{}\t{}\t{}\t-\t-\t-\t\n",
                            img.name, proto.media_type, proto.digest
                        ));
                        continue;
                    }
                };
                let (size, err) = store::image_size(&mut cs, &target, &platform).await;
                match err {
                    Some(e) => {
                        eprintln!("bctr: failed calculating size for image {}: {e}", img.name)
                    }
                    None => row.size = Some(size),
                }
                let platforms = match store::image_platforms(&mut cs, &target).await {
                    Err(e) => {
                        eprintln!(
                            "bctr: failed resolving platform for image {}: {e}",
                            img.name
                        );
                        "-".to_owned()
                    }
                    Ok(ps) if ps.is_empty() => "-".to_owned(),
                    Ok(ps) => {
                        row.platforms = ps
                            .iter()
                            .map(platform::format)
                            .collect::<BTreeSet<_>>()
                            .into_iter()
                            .collect();
                        row.platforms.join(",")
                    }
                };
                let labels = if img.labels.is_empty() {
                    "-".to_owned()
                } else {
                    join_labels(&img.labels)
                };
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{platforms}\t{labels}\t\n",
                    img.name,
                    target.media_type(),
                    target.digest(),
                    progress_bytes(size)
                ));
                row.r#type = target.media_type().to_string();
                row.digest = target.digest().to_string();
                rows.push(row);
            }
            print_rows(format, &rows, |_| TabWriter::SPACES.print(&text));
        }
        ImagesCommand::Rm { sync, names } => {
            let mut first_err: Option<CmdError> = None;
            let last = names.len().saturating_sub(1);
            for (i, name) in names.iter().enumerate() {
                match client
                    .delete(ctx.request(DeleteImageRequest {
                        name: name.clone(),
                        sync: sync && i == last,
                        target: None,
                    }))
                    .await
                {
                    Ok(_) => println!("{name}"),
                    Err(s) if s.code() == Code::NotFound => {
                        eprintln!("bctr: warning: {name}: image not found");
                    }
                    Err(s) => {
                        eprintln!("bctr: unable to delete {name}: {}", s.message());
                        first_err.get_or_insert(CmdError::Failed(format!(
                            "unable to delete {name}: {}",
                            s.message()
                        )));
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        ImagesCommand::Label {
            replace_all,
            name,
            labels,
        } => {
            let labels = label_args(&labels);
            let paths = labels
                .iter()
                .map(|(k, _)| {
                    if replace_all {
                        "labels".to_owned()
                    } else {
                        format!("labels.{k}")
                    }
                })
                .collect();
            let updated = client
                .update(ctx.request(UpdateImageRequest {
                    image: Some(Image {
                        name,
                        labels: labels.into_iter().collect(),
                        ..Image::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    source_date_epoch: None,
                }))
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            println!("{}", join_labels(&updated.labels));
        }
        ImagesCommand::Check {
            quiet,
            format,
            snapshotter,
            filters,
        } => return check(ctx, &mut client, (quiet, format), &snapshotter, filters).await,
        ImagesCommand::Import(args) => return super::import::run(ctx, args).await,
        ImagesCommand::Mount(args) => return super::mount::mount(ctx, args).await,
        ImagesCommand::Unpack(args) => return super::server_unpack::run(ctx, args).await,
        ImagesCommand::Unmount(args) => return super::mount::unmount(ctx, args).await,
        ImagesCommand::Export(args) => return super::export::run(ctx, args).await,
        ImagesCommand::Pull(args) => return super::pull::run(ctx, args).await,
        ImagesCommand::Push(args) => return super::push::push(ctx, args).await,
        ImagesCommand::Tag(args) => return super::push::tag(ctx, args).await,
    }
    Ok(())
}

/// The snapshotter to use: the one asked for, else the namespace's default label, else
/// overlayfs.
pub async fn resolve_snapshotter(ctx: &Ctx, name: &str) -> Result<String, CmdError> {
    if !name.is_empty() {
        return Ok(name.to_owned());
    }
    let ns = NamespacesClient::new(ctx.channel.clone())
        .get(ctx.request(GetNamespaceRequest {
            name: ctx.namespace.clone(),
        }))
        .await?
        .into_inner()
        .namespace
        .unwrap_or_default();
    Ok(ns
        .labels
        .get(DEFAULT_SNAPSHOTTER_LABEL)
        .filter(|v| !v.is_empty())
        .cloned()
        .unwrap_or_else(|| DEFAULT_SNAPSHOTTER.to_owned()))
}

/// Whether the image's rootfs for this platform exists as a committed snapshot. A daemon
/// without a snapshot service (Unimplemented) has unpacked nothing.
async fn is_unpacked(
    ctx: &Ctx,
    cs: &mut ContentStore,
    target: &Descriptor,
    snapshotter: &str,
) -> Result<bool, String> {
    let platform = Matcher::host();
    let manifest = store::resolve_manifest(cs, target, Some(&platform))
        .await
        .map_err(|e| e.msg)?;
    let config = cs.read_config(manifest.config()).await.map_err(|e| e.msg)?;
    let chain = oci::rootfs_chain_id(&config)?;
    let snapshotter = match resolve_snapshotter(ctx, snapshotter).await {
        Ok(s) => s,
        Err(e) => return Err(e.to_string()),
    };
    match SnapshotsClient::new(ctx.channel.clone())
        .stat(ctx.request(StatSnapshotRequest {
            snapshotter,
            key: chain,
        }))
        .await
    {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound || s.code() == Code::Unimplemented => Ok(false),
        Err(s) => Err(s.message().to_owned()),
    }
}

/// containerd's `images.Check`: whether the config and layers of the image's manifest for the
/// default platform are all present. `None` for required means the manifest itself is missing.
async fn check_content(
    cs: &mut ContentStore,
    target: &Descriptor,
) -> Result<(Option<Vec<Descriptor>>, Vec<Descriptor>), WalkError> {
    let platform = Matcher::host();
    let manifest = match store::resolve_manifest(cs, target, Some(&platform)).await {
        Ok(m) => m,
        Err(e) if e.not_found => return Ok((None, Vec::new())),
        Err(e) => {
            return Err(WalkError::other(format!(
                "failed to check image {}: {}",
                target.digest(),
                e.msg
            )))
        }
    };
    let mut required = vec![manifest.config().clone()];
    required.extend(manifest.layers().iter().cloned());
    let mut present = Vec::new();
    for d in &required {
        match cs.info(d.digest_str()).await {
            Ok(_) => present.push(d.clone()),
            Err(s) if s.code() == Code::NotFound => {}
            Err(s) => {
                return Err(WalkError::other(format!(
                    "failed to check image {}: {}",
                    d.digest(),
                    s.message()
                )))
            }
        }
    }
    Ok((Some(required), present))
}

async fn check(
    ctx: &Ctx,
    client: &mut ImagesClient<tonic::transport::Channel>,
    (quiet, format): (bool, ListFormat),
    snapshotter: &str,
    filters: Vec<String>,
) -> Result<(), CmdError> {
    let images = client
        .list(ctx.request(ListImagesRequest { filters }))
        .await
        .map_err(super::rpc_context("failed listing images"))?
        .into_inner()
        .images;
    if images.is_empty() && format.format == super::output::Format::Table {
        return Ok(());
    }
    let mut rows = Vec::new();
    let mut cs = ContentStore::new(ctx);
    let mut exit_err: Option<CmdError> = None;
    let mut text = String::new();
    if !quiet {
        text.push_str("REF\tTYPE\tDIGEST\tSTATUS\tSIZE\tUNPACKED\t\n");
    }
    for img in &images {
        let target = match image_target(img) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("bctr: unable to check {}: {e}", img.name);
                exit_err.get_or_insert(e);
                continue;
            }
        };
        let mut complete = true;
        let mut row = CheckRow {
            name: img.name.clone(),
            r#type: target.media_type().to_string(),
            digest: target.digest().to_string(),
            status: "error".to_owned(),
            present: None,
            required: None,
            present_size: None,
            required_size: None,
            complete: false,
            unpacked: false,
        };
        let (status, size) = match check_content(&mut cs, &target).await {
            Err(e) => {
                eprintln!("bctr: unable to check {}: {e}", img.name);
                exit_err.get_or_insert(CmdError::Failed(format!(
                    "unable to check {}: {e}",
                    img.name
                )));
                complete = false;
                ("error".to_owned(), "-".to_owned())
            }
            Ok((None, present)) => {
                complete = false;
                let present_size: u64 = present.iter().map(Descriptor::size).sum();
                row.status = "unavailable".to_owned();
                row.present = Some(present.len());
                row.present_size = Some(present_size);
                (
                    format!("unavailable ({}/?)", present.len()),
                    format!("{}/?", progress_bytes(present_size as i64)),
                )
            }
            Ok((Some(required), present)) => {
                let required_size: u64 = required.iter().map(Descriptor::size).sum();
                let present_size: u64 = present.iter().map(Descriptor::size).sum();
                let word = if present.len() < required.len() {
                    complete = false;
                    "incomplete"
                } else {
                    "complete"
                };
                row.status = word.to_owned();
                row.present = Some(present.len());
                row.required = Some(required.len());
                row.present_size = Some(present_size);
                row.required_size = Some(required_size);
                (
                    format!("{word} ({}/{})", present.len(), required.len()),
                    format!(
                        "{}/{}",
                        progress_bytes(present_size as i64),
                        progress_bytes(required_size as i64)
                    ),
                )
            }
        };
        let unpacked = match is_unpacked(ctx, &mut cs, &target, snapshotter).await {
            Ok(u) => u,
            Err(e) => {
                eprintln!("bctr: unable to check unpack for {}: {e}", img.name);
                exit_err.get_or_insert(CmdError::Failed(format!(
                    "unable to check unpack for {}: {e}",
                    img.name
                )));
                false
            }
        };
        row.complete = complete;
        row.unpacked = unpacked;
        rows.push(row);
        if quiet {
            if complete {
                println!("{}", img.name);
            }
        } else {
            text.push_str(&format!(
                "{}\t{}\t{}\t{status}\t{size}\t{unpacked}\n",
                img.name,
                target.media_type(),
                target.digest()
            ));
        }
    }
    if !quiet {
        print_rows(format, &rows, |_| TabWriter::SPACES.print(&text));
    }
    match exit_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
