//! `bctr content`: list, read, ingest, label and delete blobs; show active ingests.

use std::collections::HashMap;
use std::io::Write;

use bctr::oci;
use bctr::table::TabWriter;
use bctr::units::{age_since, human_size};
use berth_api::content::{
    content_client::ContentClient, DeleteContentRequest, ListContentRequest, ListStatusesRequest,
};
use clap::Subcommand;
use tonic::Code;

use super::output::{labels as label_map, print_rows, rfc3339, ListFormat};
use super::store::ContentStore;
use super::{join_labels, label_args, CmdError, Ctx};

/// One blob in `content ls --format json`.
#[derive(serde::Serialize)]
struct BlobRow {
    digest: String,
    size: i64,
    created_at: Option<String>,
    updated_at: Option<String>,
    labels: std::collections::BTreeMap<String, String>,
}

/// One ingest in `content active --format json`.
#[derive(serde::Serialize)]
struct ActiveRow {
    r#ref: String,
    offset: i64,
    total: i64,
    expected: String,
    started_at: Option<String>,
    updated_at: Option<String>,
}

#[derive(Subcommand)]
pub enum ContentCommand {
    /// Display active transfers.
    Active {
        /// Print only the refs (wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
        /// Path to content store root (accepted for ctr compatibility; unused).
        #[arg(long, default_value = "/tmp/content", hide_default_value = true)]
        root: String,
        /// Filter on the active ingests.
        filter: Option<String>,
    },
    /// Permanently delete one or more blobs; deleted blobs are printed.
    #[command(aliases = ["delete", "del", "remove"])]
    Rm {
        #[arg(value_name = "DIGEST")]
        digests: Vec<String>,
    },
    /// Get the data for an object (written to stdout).
    Get {
        #[arg(value_name = "DIGEST")]
        digest: String,
    },
    /// Accept content into the store from stdin.
    Ingest {
        /// Validate against provided size.
        #[arg(long, default_value_t = 0)]
        expected_size: i64,
        /// Verify content against expected digest.
        #[arg(long, default_value = "", hide_default_value = true)]
        expected_digest: String,
        /// Label the committed blob, key=value (may be repeated).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// The transaction reference (key) of the ingest.
        #[arg(value_name = "KEY")]
        r#ref: Option<String>,
    },
    /// Fetch one blob by digest into the store. Until pulling from registries lands, the source
    /// is a local file (`--file`); the blob is verified against the digest and its size.
    FetchBlob {
        /// The file holding the blob's bytes.
        #[arg(long)]
        file: std::path::PathBuf,
        /// Label the committed blob, key=value (may be repeated).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(value_name = "DIGEST")]
        digest: String,
    },
    /// List all blobs in the store.
    #[command(alias = "list")]
    Ls {
        /// Print only the blob digest (wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
        /// Filters (e.g. `labels."containerd.io/uncompressed"`).
        filters: Vec<String>,
    },
    /// Add labels to content (`key=` clears one).
    Label {
        #[arg(value_name = "DIGEST")]
        digest: String,
        labels: Vec<String>,
    },
}

pub async fn run(ctx: &Ctx, cmd: ContentCommand) -> Result<(), CmdError> {
    let mut client = ContentClient::new(ctx.channel.clone());
    match cmd {
        ContentCommand::Ls {
            quiet,
            format,
            filters,
        } => {
            let mut stream = client
                .list(ctx.request(ListContentRequest { filters }))
                .await?
                .into_inner();
            let mut infos = Vec::new();
            while let Some(msg) = stream.message().await? {
                infos.extend(msg.info);
            }
            if quiet {
                let mut out = std::io::stdout().lock();
                for i in &infos {
                    let _ = writeln!(out, "{}", i.digest);
                }
                return Ok(());
            }
            let rows: Vec<BlobRow> = infos
                .iter()
                .map(|i| BlobRow {
                    digest: i.digest.clone(),
                    size: i.size,
                    created_at: rfc3339(i.created_at.as_ref()),
                    updated_at: rfc3339(i.updated_at.as_ref()),
                    labels: label_map(&i.labels),
                })
                .collect();
            print_rows(format, &rows, |_| {
                let mut text = String::from("DIGEST\tSIZE\tAGE\tLABELS\n");
                for i in &infos {
                    let labels = if i.labels.is_empty() {
                        "-".to_owned()
                    } else {
                        join_labels(&i.labels)
                    };
                    text.push_str(&format!(
                        "{}\t{}\t{}\t{labels}\n",
                        i.digest,
                        human_size(i.size),
                        age_since(i.created_at.as_ref())
                    ));
                }
                TabWriter::TABS.print(&text);
            });
        }
        ContentCommand::Get { digest } => {
            oci::validate_digest(&digest).map_err(CmdError::Usage)?;
            let mut cs = ContentStore::new(ctx);
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            cs.read_chunks(&digest, 0, 0, |chunk| {
                out.write_all(chunk)
                    .map_err(|e| CmdError::Failed(format!("writing to stdout: {e}")))
            })
            .await?;
            out.flush()
                .map_err(|e| CmdError::Failed(format!("writing to stdout: {e}")))?;
        }
        ContentCommand::Ingest {
            expected_size,
            expected_digest,
            labels,
            r#ref,
        } => {
            if !expected_digest.is_empty() {
                oci::validate_digest(&expected_digest).map_err(CmdError::Usage)?;
            }
            let r#ref = r#ref
                .filter(|r| !r.is_empty())
                .ok_or_else(|| CmdError::Usage("must specify a transaction reference".into()))?;
            let labels: HashMap<String, String> = label_args(&labels).into_iter().collect();
            let mut cs = ContentStore::new(ctx);
            let stdin = std::io::stdin();
            let mut input = stdin.lock();
            super::store::write_blob(
                &mut cs,
                &r#ref,
                &mut input,
                expected_size,
                &expected_digest,
                labels,
            )
            .await?;
        }
        ContentCommand::FetchBlob {
            file,
            labels,
            digest,
        } => {
            oci::validate_digest(&digest).map_err(CmdError::Usage)?;
            let mut f = std::fs::File::open(&file)
                .map_err(|e| CmdError::Failed(format!("open {}: {e}", file.display())))?;
            let size = f
                .metadata()
                .map_err(|e| CmdError::Failed(format!("stat {}: {e}", file.display())))?
                .len() as i64;
            let labels: HashMap<String, String> = label_args(&labels).into_iter().collect();
            let mut cs = ContentStore::new(ctx);
            let r#ref = format!("fetch-blob-{digest}");
            super::store::write_blob(&mut cs, &r#ref, &mut f, size, &digest, labels).await?;
            println!("{digest}");
        }
        ContentCommand::Rm { digests } => {
            let mut first_err: Option<CmdError> = None;
            for d in digests {
                if let Err(e) = oci::validate_digest(&d) {
                    eprintln!("bctr: could not delete {d}: {e}");
                    first_err.get_or_insert(CmdError::Failed(e));
                    continue;
                }
                match client
                    .delete(ctx.request(DeleteContentRequest { digest: d.clone() }))
                    .await
                {
                    Ok(_) => println!("{d}"),
                    // Like ctr: what is already gone is skipped silently.
                    Err(s) if s.code() == Code::NotFound => {}
                    Err(s) => {
                        eprintln!("bctr: could not delete {d}: {}", s.message());
                        first_err.get_or_insert(CmdError::Rpc(s));
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        ContentCommand::Label { digest, labels } => {
            oci::validate_digest(&digest).map_err(CmdError::Usage)?;
            let labels = label_args(&labels);
            let mut cs = ContentStore::new(ctx);
            // Nothing to change: just show the labels.
            let info = if labels.is_empty() {
                cs.info(&digest).await?
            } else {
                cs.update_labels(&digest, &labels).await?
            };
            println!("{}", join_labels(&info.labels));
        }
        ContentCommand::Active {
            quiet,
            format,
            root: _,
            filter,
        } => {
            let statuses = client
                .list_statuses(ctx.request(ListStatusesRequest {
                    filters: filter.into_iter().collect(),
                }))
                .await?
                .into_inner()
                .statuses;
            if quiet {
                for s in &statuses {
                    println!("{}", s.r#ref);
                }
                return Ok(());
            }
            let rows: Vec<ActiveRow> = statuses
                .iter()
                .map(|s| ActiveRow {
                    r#ref: s.r#ref.clone(),
                    offset: s.offset,
                    total: s.total,
                    expected: s.expected.clone(),
                    started_at: rfc3339(s.started_at.as_ref()),
                    updated_at: rfc3339(s.updated_at.as_ref()),
                })
                .collect();
            print_rows(format, &rows, |_| {
                let mut text = String::from("REF\tSIZE\tAGE\t\n");
                for s in &statuses {
                    text.push_str(&format!(
                        "{}\t{}\t{}\t\n",
                        s.r#ref,
                        human_size(s.offset),
                        age_since(s.started_at.as_ref())
                    ));
                }
                TabWriter::TABS.print(&text);
            });
        }
    }
    Ok(())
}
