use std::collections::HashMap;

use bctr::table::Table;
use berth_api::namespaces::{
    namespaces_client::NamespacesClient, CreateNamespaceRequest, DeleteNamespaceRequest,
    ListNamespacesRequest, Namespace, UpdateNamespaceRequest,
};
use clap::Subcommand;

use super::output::{print_rows, ListFormat};
use super::{parse_labels, CmdError, Ctx};

/// One namespace in `namespaces ls --format json`.
#[derive(serde::Serialize)]
struct NamespaceRow {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Subcommand)]
pub enum NamespacesCommand {
    /// Create a namespace, with optional labels.
    Create {
        name: String,
        /// key=value labels.
        labels: Vec<String>,
    },
    /// List namespaces.
    #[command(alias = "list")]
    Ls {
        /// Print only the names (wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
    },
    /// Set or clear (`key=`) labels on a namespace.
    Label { name: String, labels: Vec<String> },
    /// Remove one or more (empty) namespaces.
    #[command(aliases = ["remove", "delete", "del"])]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn format_labels(labels: &HashMap<String, String>) -> String {
    let mut pairs: Vec<_> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    pairs.sort();
    pairs.join(",")
}

pub async fn run(ctx: &Ctx, cmd: NamespacesCommand) -> Result<(), CmdError> {
    let mut client = NamespacesClient::new(ctx.channel.clone());
    match cmd {
        NamespacesCommand::Create { name, labels } => {
            let labels = parse_labels(&labels)?.into_iter().collect();
            client
                .create(ctx.request(CreateNamespaceRequest {
                    namespace: Some(Namespace { name, labels }),
                }))
                .await?;
        }
        NamespacesCommand::Ls { quiet, format } => {
            let mut namespaces = client
                .list(ctx.request(ListNamespacesRequest::default()))
                .await?
                .into_inner()
                .namespaces;
            namespaces.sort_by(|a, b| a.name.cmp(&b.name));
            if quiet {
                for ns in namespaces {
                    println!("{}", ns.name);
                }
                return Ok(());
            }
            let rows: Vec<NamespaceRow> = namespaces
                .iter()
                .map(|ns| NamespaceRow {
                    name: ns.name.clone(),
                    labels: super::output::labels(&ns.labels),
                })
                .collect();
            print_rows(format, &rows, |_| {
                let mut t = Table::new(1, 1);
                t.row(["NAME", "LABELS"]);
                for ns in &namespaces {
                    t.row([ns.name.clone(), format_labels(&ns.labels)]);
                }
                t.print();
            });
        }
        NamespacesCommand::Label { name, labels } => {
            let labels = parse_labels(&labels)?;
            // One field path per key, so labels not named are left alone and `k=` removes k.
            let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
            client
                .update(ctx.request(UpdateNamespaceRequest {
                    namespace: Some(Namespace {
                        name,
                        labels: labels.into_iter().collect(),
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }))
                .await?;
        }
        NamespacesCommand::Rm { names } => {
            let mut failed = Vec::new();
            for name in names {
                match client
                    .delete(ctx.request(DeleteNamespaceRequest { name: name.clone() }))
                    .await
                {
                    // Like ctr: removing what is already gone succeeds.
                    Ok(_) => println!("{name}"),
                    Err(s) if s.code() == tonic::Code::NotFound => println!("{name}"),
                    Err(s) => {
                        eprintln!("bctr: unable to delete {name}: {}", s.message());
                        failed.push(name);
                    }
                }
            }
            if !failed.is_empty() {
                return Err(CmdError::Failed(format!(
                    "{} namespace(s) not removed: {}",
                    failed.len(),
                    failed.join(", ")
                )));
            }
        }
    }
    Ok(())
}
