//! `bctr containers …` (alias `c`): create, list, inspect, label and delete container records,
//! as ctr does.

use std::collections::BTreeMap;

use bctr::gojson::{rfc3339_nano, Json};
use bctr::protojson::any_json;
use berth_api::containerd::v1::types::Status;
use berth_api::containers::{
    containers_client::ContainersClient, Container, ListContainersRequest, UpdateContainerRequest,
};
use berth_api::tasks::{tasks_client::TasksClient, DeleteTaskRequest};
use clap::{Args, Subcommand};
use tonic::Code;

use super::output::{labels as label_map, print_rows, rfc3339, ListFormat};
use super::run::{self, ContainerFlags, NewContainer};
use super::tasks::{get_process, load_container, status_name, LIST_TABLE};
use super::{join_labels, label_args, stdio, CmdError, Ctx};

/// One container in `containers ls --format json`.
#[derive(serde::Serialize)]
struct ContainerRow {
    id: String,
    image: String,
    runtime: String,
    snapshotter: String,
    snapshot_key: String,
    created_at: Option<String>,
    updated_at: Option<String>,
    labels: BTreeMap<String, String>,
}

#[derive(Subcommand)]
pub enum ContainersCommand {
    /// Create a container.
    Create(Box<CreateArgs>),
    /// Delete one or more existing containers (and their snapshots).
    #[command(aliases = ["rm", "del", "remove"])]
    Delete {
        /// Do not clean up the snapshot with the container.
        #[arg(long = "keep-snapshot")]
        keep_snapshot: bool,
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a container's record as JSON, its spec decoded.
    Info {
        /// Only display the spec.
        #[arg(long)]
        spec: bool,
        container: String,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        /// Print only the container id (wins over --format).
        #[arg(long, short = 'q')]
        quiet: bool,
        #[command(flatten)]
        format: ListFormat,
        filters: Vec<String>,
    },
    /// Set and clear labels for a container.
    Label {
        container: String,
        labels: Vec<String>,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    flags: ContainerFlags,
    /// Image reference.
    image: String,
    /// Container id.
    id: String,
    /// Command and arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

pub async fn run(ctx: &Ctx, cmd: ContainersCommand) -> Result<(), CmdError> {
    let mut client = ContainersClient::new(ctx.channel.clone());
    match cmd {
        ContainersCommand::Create(a) => {
            run::new_container(
                ctx,
                NewContainer {
                    image: &a.image,
                    id: &a.id,
                    args: a.command,
                    flags: &a.flags,
                },
            )
            .await?;
        }
        ContainersCommand::List {
            quiet,
            format,
            filters,
        } => {
            let list = client
                .list(ctx.request(ListContainersRequest { filters }))
                .await?
                .into_inner()
                .containers;
            if quiet {
                for c in &list {
                    println!("{}", c.id);
                }
                return Ok(());
            }
            let rows: Vec<ContainerRow> = list
                .iter()
                .map(|c| ContainerRow {
                    id: c.id.clone(),
                    image: c.image.clone(),
                    runtime: c
                        .runtime
                        .as_ref()
                        .map_or("", |r| r.name.as_str())
                        .to_owned(),
                    snapshotter: c.snapshotter.clone(),
                    snapshot_key: c.snapshot_key.clone(),
                    created_at: rfc3339(c.created_at.as_ref()),
                    updated_at: rfc3339(c.updated_at.as_ref()),
                    labels: label_map(&c.labels),
                })
                .collect();
            print_rows(format, &rows, |rows| {
                let mut text = String::from("CONTAINER\tIMAGE\tRUNTIME\t\n");
                for c in rows {
                    let image = if c.image.is_empty() { "-" } else { &c.image };
                    text.push_str(&format!("{}\t{image}\t{}\t\n", c.id, c.runtime));
                }
                LIST_TABLE.print(&text);
            });
        }
        ContainersCommand::Delete {
            keep_snapshot,
            containers,
        } => {
            let mut first: Option<CmdError> = None;
            for id in &containers {
                if let Err(e) = delete(ctx, id, keep_snapshot).await {
                    eprintln!("bctr: failed to delete container {id:?}: {e}");
                    first.get_or_insert(e);
                }
            }
            if let Some(e) = first {
                return Err(e);
            }
        }
        ContainersCommand::Info { spec, container } => {
            let c = load_container(ctx, &container).await?;
            let decoded = match &c.spec {
                Some(a) if !a.value.is_empty() => Some(Json::parse(&a.value).map_err(|e| {
                    CmdError::Failed(format!("container {}: invalid spec: {e}", c.id))
                })?),
                _ => None,
            };
            if spec {
                println!("{}", decoded.unwrap_or(Json::Null).indent("    "));
            } else {
                println!("{}", info_json(&c, decoded).indent("    "));
            }
        }
        ContainersCommand::Label { container, labels } => {
            if container.is_empty() {
                return Err(CmdError::Usage("container id must be provided".into()));
            }
            let mut c = load_container(ctx, &container).await?;
            let labels = label_args(&labels);
            let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
            c.labels.extend(labels);
            let updated = client
                .update(ctx.request(UpdateContainerRequest {
                    container: Some(c),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .container
                .unwrap_or_default();
            println!("{}", join_labels(&updated.labels));
        }
    }
    Ok(())
}

/// ctr's `deleteContainer`: a stopped (or created) task goes first; a live one stops it.
async fn delete(ctx: &Ctx, id: &str, keep_snapshot: bool) -> Result<(), CmdError> {
    let c = load_container(ctx, id).await?;
    match get_process(ctx, &c.id, "").await {
        Err(s) if s.code() == Code::NotFound => {}
        Err(s) => return Err(s.into()),
        Ok(p) => {
            let status = Status::try_from(p.status).unwrap_or(Status::Unknown);
            if !matches!(status, Status::Stopped | Status::Created) {
                return Err(CmdError::Failed(format!(
                    "cannot delete a non stopped container: {{{} {} 0001-01-01 00:00:00 +0000 UTC}}",
                    status_name(p.status).to_ascii_lowercase(),
                    p.exit_status
                )));
            }
            TasksClient::new(ctx.channel.clone())
                .delete(ctx.request(DeleteTaskRequest {
                    container_id: c.id.clone(),
                }))
                .await?;
            stdio::remove_fifo_paths(&[&p.stdin, &p.stdout, &p.stderr]);
        }
    }
    run::delete_container(ctx, &c, keep_snapshot).await
}

/// A map as Go prints one: keys sorted, `null` when empty.
fn string_map(m: &std::collections::HashMap<String, String>) -> Json {
    if m.is_empty() {
        return Json::Null;
    }
    let sorted: BTreeMap<_, _> = m.iter().collect();
    Json::obj(
        sorted
            .into_iter()
            .map(|(k, v)| (k.clone(), Json::str(v.clone()))),
    )
}

/// `ctr containers info`: containerd's `containers.Container` as Go's JSON, with the spec
/// decoded in place of its `Any`.
fn info_json(c: &Container, spec: Option<Json>) -> Json {
    let runtime = c.runtime.clone().unwrap_or_default();
    let extensions = if c.extensions.is_empty() {
        Json::Null
    } else {
        let sorted: BTreeMap<_, _> = c.extensions.iter().collect();
        Json::obj(sorted.into_iter().map(|(k, v)| (k.clone(), any_json(v))))
    };
    let mut fields: Vec<(String, Json)> = vec![
        ("ID".into(), Json::str(c.id.clone())),
        ("Labels".into(), string_map(&c.labels)),
        ("Image".into(), Json::str(c.image.clone())),
        (
            "Runtime".into(),
            Json::obj([
                ("Name", Json::str(runtime.name)),
                (
                    "Options",
                    runtime.options.as_ref().map_or(Json::Null, any_json),
                ),
            ]),
        ),
    ];
    if spec.is_none() {
        fields.push(("Spec".into(), c.spec.as_ref().map_or(Json::Null, any_json)));
    }
    fields.extend([
        ("SnapshotKey".into(), Json::str(c.snapshot_key.clone())),
        ("Snapshotter".into(), Json::str(c.snapshotter.clone())),
        (
            "CreatedAt".into(),
            Json::str(rfc3339_nano(c.created_at.as_ref())),
        ),
        (
            "UpdatedAt".into(),
            Json::str(rfc3339_nano(c.updated_at.as_ref())),
        ),
        ("Extensions".into(), extensions),
    ]);
    if let Some(s) = spec {
        fields.push(("Spec".into(), s));
    }
    Json::Obj(fields)
}
