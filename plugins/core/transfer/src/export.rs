//! Export: images of the image store written as an OCI layout tar to the client
//! (containerd's `core/transfer/local/export.go`).
//!
//! The images are looked up as containerd's image store looks them up for an export (its name,
//! then each extra reference; prefixes are not looked up), each target named after its image,
//! and `berth-image-archive`'s exporter writes the archive on a blocking thread, every blob it
//! reads held by a lease until the export ends.

use std::io::{BufWriter, Write};
use std::time::Instant;

use berth_image_archive::export::{self, StoreSource};
use berth_image_archive::ExportOptions;
use berth_metadata::MetaError;
use berth_oci::Descriptor;
use tracing::Instrument as _;

use crate::import::ARCHIVE_LEASE_TTL;
use crate::jobs::status;
use crate::store::oci_descriptor;
use crate::{ImageStore, ProgressFn, TransferError, Transferrer};

/// Writes to the client's stream go out in pieces of about this much.
const WRITE_BUFFER: usize = 128 * 1024;

impl Transferrer {
    /// Writes the images `src` names, from namespace `ns`, as an archive to `writer` (flushed
    /// before this returns).
    #[tracing::instrument(skip_all, fields(ns = %ns))]
    pub async fn export(
        &self,
        ns: &str,
        src: &ImageStore,
        options: ExportOptions,
        writer: Box<dyn Write + Send>,
        progress: ProgressFn,
    ) -> Result<(), TransferError> {
        // A job of its own, so its lease goes even when the client's RPC is dropped.
        let (this, ns, src) = (self.clone(), ns.to_owned(), src.clone());
        tokio::spawn(
            async move { this.export_job(&ns, &src, options, writer, progress).await }
                .in_current_span(),
        )
        .await?
    }

    async fn export_job(
        &self,
        ns: &str,
        src: &ImageStore,
        options: ExportOptions,
        writer: Box<dyn Write + Send>,
        progress: ProgressFn,
    ) -> Result<(), TransferError> {
        let lease = self.begin_lease(ns, "export", ARCHIVE_LEASE_TTL).await?;
        status(&progress, "Exporting");
        let started = Instant::now();
        let (this, ns_owned, lease_owned, src) =
            (self.clone(), ns.to_owned(), lease.clone(), src.clone());
        let span = tracing::Span::current();
        let result = tokio::task::spawn_blocking(move || -> Result<u64, TransferError> {
            let _in = span.enter();
            let targets = this.lookup(&ns_owned, &src)?;
            let mut source = StoreSource {
                content: &this.content,
                ns: &ns_owned,
                lease: Some(&lease_owned),
            };
            let mut w = BufWriter::with_capacity(WRITE_BUFFER, writer);
            let mut written = 0u64;
            export::export(&mut source, &targets, &options, &mut w, &mut |n| {
                written += n;
            })?;
            Ok(written)
        })
        .await
        .map_err(TransferError::from)
        .and_then(|r| r);
        self.end_lease(ns, &lease, "export").await;
        let bytes = result?;
        status(&progress, "Completed export");
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::info!(bytes, ms, "exported");
        Ok(())
    }

    /// containerd's `Lookup` for an export: the store's name, then each extra reference, each
    /// an image that must exist; every target named after its image. Blocks.
    fn lookup(&self, ns: &str, src: &ImageStore) -> Result<Vec<Descriptor>, TransferError> {
        let mut names = Vec::new();
        if !src.name.is_empty() {
            names.push(src.name.clone());
        }
        for r in &src.extra_references {
            if r.is_prefix {
                return Err(TransferError::NotImplemented(
                    "prefix lookup on export not implemented".into(),
                ));
            }
            names.push(r.name.clone());
        }
        let mut targets = Vec::with_capacity(names.len());
        for name in names {
            let img = match self.db.get_image(ns, &name) {
                Ok(i) => i,
                Err(MetaError::NotFound(_)) => return Err(TransferError::ImageNotFound(name)),
                Err(e) => return Err(e.into()),
            };
            let target = oci_descriptor(&img.target).ok_or_else(|| {
                TransferError::InvalidArgument(format!(
                    "image {name:?} has an invalid target {:?}",
                    img.target.digest
                ))
            })?;
            targets.push(export::named_target(&name, &target));
        }
        Ok(targets)
    }
}
