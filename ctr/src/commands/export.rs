//! `bctr images export`: images written as an OCI image-layout tar (`oci-layout`,
//! `index.json`, `blobs/<alg>/<hex>`) plus Docker's `manifest.json`, laid out as containerd's
//! exporter lays it out.
//!
//! By default through the daemon, as containerd 2.x's `ctr` exports: an `ImageStore` naming
//! the images, an `ImageExportStream` bctr receives the archive on (granting credit as it
//! writes it), the bytes received and the daemon's progress shown. With `--local`, or by itself
//! when the daemon has no Transfer service, bctr walks the images through the Content API and
//! writes the archive itself. Both write the same bytes: the records and the tar come from
//! `berth-image-archive`'s exporter either way.

use bctr::oci::Descriptor;
use berth_api::images::{images_client::ImagesClient, GetImageRequest};
use berth_api::types::transfer as tt;
use berth_image_archive::export::{self, ExportOptions, ExportSource};
use berth_oci::platform;
use clap::Args;
use prost::Message as _;
use tonic::Code;

use super::images::image_target;
use super::progress;
use super::store::{ContentStore, ReadError, WalkError};
use super::transfer::{self, any, DataStream, Display, Meter, OpenError, Via};
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
    /// Export from the client (as containerd 1.x's ctr) rather than through the daemon's
    /// Transfer API; the default when the daemon has no Transfer service.
    #[arg(long)]
    local: bool,
    /// Print no progress.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// The archive to write, or `-` for stdout.
    #[arg(value_name = "OUT")]
    out: Option<String>,
    /// The images to export.
    #[arg(value_name = "IMAGE")]
    images: Vec<String>,
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
    let platforms = args
        .platform
        .iter()
        .map(|p| platform::parse(p).map_err(|e| format!("invalid platform {p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(CmdError::Usage)?;
    let options = ExportOptions {
        platforms,
        all_platforms: args.all_platforms,
        skip_compatibility_manifest: args.skip_manifest_json,
        skip_non_distributable: args.skip_non_distributable,
    };
    if args.local {
        return run_local(ctx, &args, &out, options).await;
    }
    match through_transfer(ctx, &args, &out, &options).await {
        Ok(()) => Ok(()),
        Err(Via::NoTransfer) => run_local(ctx, &args, &out, options).await,
        Err(Via::Failed(e)) => Err(e),
    }
}

/// Where the archive goes: a file (removed again if the export fails) or stdout.
async fn open_output(out: &str) -> Result<Box<dyn tokio::io::AsyncWrite + Unpin + Send>, CmdError> {
    if out == "-" {
        return Ok(Box::new(tokio::io::stdout()));
    }
    let f = tokio::fs::File::create(out)
        .await
        .map_err(|e| CmdError::Failed(format!("open {out}: {e}")))?;
    Ok(Box::new(tokio::io::BufWriter::with_capacity(1 << 20, f)))
}

/// Removes what a failed export left at `out`: a regular file only (never `/dev/null` or a
/// FIFO the archive was meant to go through).
fn remove_output(out: &str) {
    let regular = std::fs::symlink_metadata(out).is_ok_and(|m| m.file_type().is_file());
    if out != "-" && regular {
        let _ = std::fs::remove_file(out);
    }
}

/// The export through the daemon's Transfer API (containerd 2.x's `ctr images export`).
async fn through_transfer(
    ctx: &Ctx,
    args: &ExportArgs,
    out: &str,
    options: &ExportOptions,
) -> Result<(), Via> {
    let data = match DataStream::open(ctx, "export").await {
        Ok(d) => d,
        Err(OpenError::NoStreaming) => return Err(Via::NoTransfer),
        Err(OpenError::Failed(e)) => return Err(e.into()),
    };
    // The images as ctr names them: each one an extra reference, looked up as given.
    let source = tt::ImageStore {
        extra_references: args
            .images
            .iter()
            .map(|name| tt::ImageReference {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let destination = tt::ImageExportStream {
        stream: data.id.clone(),
        media_type: String::new(),
        platforms: options
            .platforms
            .iter()
            .map(|p| berth_api::types::Platform {
                os: platform::os(p),
                architecture: platform::arch(p),
                variant: platform::variant(p).to_owned(),
                ..Default::default()
            })
            .collect(),
        all_platforms: options.all_platforms,
        skip_compatibility_manifest: options.skip_compatibility_manifest,
        skip_non_distributable: options.skip_non_distributable,
    };
    let writer = open_output(out).await?;
    let meter = Meter::new("received", None);
    let receiving = tokio::spawn(data.receive(writer, meter.clone()));
    // The archive may be stdout: then progress goes to stderr.
    let display = if args.quiet {
        Display::Quiet
    } else if out == "-" {
        Display::on_stderr()
    } else {
        Display::choose(false)
    };
    let result = transfer::run_metered(
        ctx,
        any(transfer::IMAGE_STORE, source.encode_to_vec()),
        any(transfer::IMAGE_EXPORT_STREAM, destination.encode_to_vec()),
        display,
        Some(meter),
    )
    .await;
    let failed = |e: Via| {
        remove_output(out);
        Err(e)
    };
    let status = match result {
        Ok(r) => r,
        Err(e) => {
            receiving.abort();
            return failed(e.into());
        }
    };
    if let Err(s) = status {
        receiving.abort();
        if s.code() == Code::Unimplemented && out != "-" {
            return failed(Via::NoTransfer);
        }
        let hint = if s.code() == Code::NotFound && s.message().starts_with("image ") {
            "\n  hint: `bctr images ls` lists the images here; names are exact \
             (docker.io/library/busybox:latest, not busybox)"
        } else {
            ""
        };
        return failed(Via::Failed(CmdError::Failed(format!(
            "{}{hint}",
            s.message()
        ))));
    }
    // The daemon closed the stream before it answered: the rest is being written out.
    match receiving.await {
        Ok(Ok(_bytes)) => Ok(()),
        Ok(Err(e)) => failed(Via::Failed(e)),
        Err(e) => failed(Via::Failed(CmdError::Failed(format!(
            "receiving the archive: {e}"
        )))),
    }
}

/// The images' targets, named as the export names them.
async fn named_targets(ctx: &Ctx, names: &[String]) -> Result<Vec<Descriptor>, CmdError> {
    let mut images = ImagesClient::new(ctx.channel.clone());
    let mut out = Vec::new();
    for name in names {
        let img = images
            .get(ctx.request(GetImageRequest { name: name.clone() }))
            .await?
            .into_inner()
            .image
            .unwrap_or_default();
        out.push(export::named_target(name, &image_target(&img)?));
    }
    Ok(out)
}

/// The export from the client (containerd 1.x's `ctr images export`).
async fn run_local(
    ctx: &Ctx,
    args: &ExportArgs,
    out: &str,
    options: ExportOptions,
) -> Result<(), CmdError> {
    let manifests = named_targets(ctx, &args.images).await?;
    let rt = tokio::runtime::Handle::current();
    let out_owned = out.to_owned();
    let cs = ContentStore::new(ctx);
    // The exporter is blocking code; the Content API calls it makes are driven from here.
    let job = tokio::task::spawn_blocking(move || -> Result<(), CmdError> {
        let mut source = GrpcSource { rt, cs };
        let plan = export::plan(&mut source, &manifests, &options).map_err(export_error)?;
        let total: u64 = plan.content_size();
        let bar = progress::bar(Some(total), "exporting");
        let result = if out_owned == "-" {
            let stdout = std::io::stdout();
            let mut w = std::io::BufWriter::new(stdout.lock());
            export::write_tar(&mut source, &plan, &mut w, &mut |n| bar.inc(n))
        } else {
            let file = std::fs::File::create(&out_owned)
                .map_err(|e| CmdError::Failed(format!("open {out_owned}: {e}")))?;
            let mut w = std::io::BufWriter::new(file);
            let r = export::write_tar(&mut source, &plan, &mut w, &mut |n| bar.inc(n));
            if r.is_err() {
                drop(w);
                remove_output(&out_owned);
            }
            r
        };
        bar.finish_and_clear();
        result.map_err(export_error)
    });
    job.await
        .map_err(|e| CmdError::Failed(format!("export: {e}")))?
}

fn export_error(e: export::ExportError<CmdError>) -> CmdError {
    match e {
        export::ExportError::Source(e) => e,
        other => CmdError::Failed(other.to_string()),
    }
}

/// The Content API as the exporter's source, from a blocking thread.
struct GrpcSource {
    rt: tokio::runtime::Handle,
    cs: ContentStore,
}

impl ExportSource for GrpcSource {
    type Error = CmdError;

    fn read_document(&mut self, desc: &Descriptor) -> Result<Vec<u8>, CmdError> {
        let digest = desc.digest().to_string();
        let bytes = self
            .rt
            .block_on(self.cs.read_document(&digest))
            .map_err(|e: WalkError| CmdError::Failed(e.msg))?;
        Ok(bytes.as_ref().clone())
    }

    fn copy_blob(
        &mut self,
        desc: &Descriptor,
        sink: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Result<u64, CmdError> {
        let digest = desc.digest().to_string();
        let mut stopped = false;
        let r = self
            .rt
            .block_on(self.cs.read_chunks(&digest, 0, 0, |chunk| {
                if stopped || !sink(chunk) {
                    stopped = true;
                    // Ends the read; the exporter reports the write failure it saw.
                    return Err(CmdError::Failed("archive write failed".into()));
                }
                Ok(())
            }));
        match r {
            Ok(n) => Ok(n),
            Err(ReadError::Sink(_)) if stopped => Ok(0),
            Err(e) => Err(CmdError::from(e)),
        }
    }
}
