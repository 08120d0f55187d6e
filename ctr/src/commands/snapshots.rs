//! `bctr snapshots …`: ctr's snapshot commands, over the snapshots service.

use std::collections::BTreeMap;

use bctr::table::Table;
use berth_api::snapshots::{
    snapshots_client::SnapshotsClient, CommitSnapshotRequest, Info, Kind, ListSnapshotsRequest,
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
    UpdateSnapshotRequest, UsageRequest, ViewSnapshotRequest,
};
use berth_api::types::Mount;
use clap::{Args, Subcommand};

use super::output::{labels as label_map, print_rows, rfc3339, ListFormat};
use super::{join_labels, label_args, CmdError, Ctx};

/// One snapshot in `snapshots ls --format json`.
#[derive(serde::Serialize)]
struct SnapshotRow {
    key: String,
    parent: String,
    kind: &'static str,
    created_at: Option<String>,
    updated_at: Option<String>,
    labels: BTreeMap<String, String>,
}
use bctr::units::progress_bytes;

#[derive(Args)]
pub struct SnapshotsArgs {
    /// Snapshotter to use (overlayfs, native, …).
    #[arg(
        long,
        env = "CONTAINERD_SNAPSHOTTER",
        default_value = "overlayfs",
        global = true
    )]
    snapshotter: String,
    #[command(subcommand)]
    command: SnapshotsCommand,
}

#[derive(Subcommand)]
enum SnapshotsCommand {
    /// List snapshots.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        format: ListFormat,
    },
    /// Show the snapshots as a tree of parents and children.
    Tree,
    /// Show one snapshot's details as JSON.
    Info { key: String },
    /// Prepare a writable snapshot on an optional committed parent.
    Prepare {
        /// Print the mount command for this target directory.
        #[arg(long)]
        target: Option<String>,
        /// Print the mounts.
        #[arg(long)]
        mounts: bool,
        key: String,
        parent: Option<String>,
    },
    /// Make a read-only view of a committed snapshot.
    View {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        mounts: bool,
        key: String,
        parent: Option<String>,
    },
    /// Print the mount command of a snapshot for a target directory.
    #[command(alias = "m")]
    Mounts { target: String, key: String },
    /// Commit an active snapshot under a new name.
    Commit { name: String, key: String },
    /// Remove snapshots.
    #[command(aliases = ["del", "delete", "remove"])]
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Disk usage of snapshots (all, or the given keys).
    #[command(alias = "du")]
    Usage {
        /// Print sizes in bytes.
        #[arg(short = 'b')]
        bytes: bool,
        keys: Vec<String>,
    },
    /// Set or clear (`key=`) labels on a snapshot.
    Label { key: String, labels: Vec<String> },
}

fn kind(k: i32) -> &'static str {
    match Kind::try_from(k) {
        Ok(Kind::View) => "View",
        Ok(Kind::Active) => "Active",
        Ok(Kind::Committed) => "Committed",
        _ => "Unknown",
    }
}

/// `mount -t <type> <source> <target> -o <options>`, one line per mount, as ctr prints it.
fn print_mounts(target: &str, mounts: &[Mount]) {
    for m in mounts {
        println!(
            "mount -t {} {} {} -o {}",
            m.r#type,
            m.source,
            target,
            m.options.join(",")
        );
    }
}

/// After prepare/view: the mount command for `--target`, or with a placeholder for `--mounts`.
fn print_requested_mounts(target: Option<String>, mounts: bool, m: &[Mount]) {
    if let Some(t) = target {
        print_mounts(&t, m);
    } else if mounts {
        print_mounts("<target>", m);
    }
}

async fn list(ctx: &Ctx, sn: &str) -> Result<Vec<Info>, CmdError> {
    let mut client = SnapshotsClient::new(ctx.channel.clone());
    let mut stream = client
        .list(ctx.request(ListSnapshotsRequest {
            snapshotter: sn.to_owned(),
            filters: Vec::new(),
        }))
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(msg) = stream.message().await? {
        out.extend(msg.info);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn print_tree(infos: &[Info], parent: &str, depth: usize) {
    for i in infos.iter().filter(|i| i.parent == parent) {
        if depth == 0 {
            println!(" {}", i.name);
        } else {
            println!("{}\\_ {}", " ".repeat(depth * 2), i.name);
        }
        print_tree(infos, &i.name, depth + 1);
    }
}

/// RFC 3339 with nanoseconds, trailing zeros trimmed (Go's `RFC3339Nano`, which ctr prints).
fn timestamp(t: &Option<prost_types::Timestamp>) -> String {
    let Some(t) = t else { return String::new() };
    let Some(dt) =
        chrono::DateTime::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32)
    else {
        return String::new();
    };
    let s = dt.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match s.split_once('.') {
        Some((secs, frac)) => {
            let digits = frac.trim_end_matches('Z').trim_end_matches('0');
            if digits.is_empty() {
                format!("{secs}Z")
            } else {
                format!("{secs}.{digits}Z")
            }
        }
        None => s,
    }
}

pub async fn run(ctx: &Ctx, args: SnapshotsArgs) -> Result<(), CmdError> {
    let sn = args.snapshotter;
    let mut client = SnapshotsClient::new(ctx.channel.clone());
    match args.command {
        SnapshotsCommand::Ls { format } => {
            let rows: Vec<SnapshotRow> = list(ctx, &sn)
                .await?
                .iter()
                .map(|i| SnapshotRow {
                    key: i.name.clone(),
                    parent: i.parent.clone(),
                    kind: kind(i.kind),
                    created_at: rfc3339(i.created_at.as_ref()),
                    updated_at: rfc3339(i.updated_at.as_ref()),
                    labels: label_map(&i.labels),
                })
                .collect();
            print_rows(format, &rows, |rows| {
                let mut t = Table::new(1, 1);
                t.row(["KEY", "PARENT", "KIND"]);
                for i in rows {
                    t.row([i.key.clone(), i.parent.clone(), i.kind.to_owned()]);
                }
                t.print();
            });
        }
        SnapshotsCommand::Tree => {
            let infos = list(ctx, &sn).await?;
            print_tree(&infos, "", 0);
        }
        SnapshotsCommand::Info { key } => {
            let i = client
                .stat(ctx.request(StatSnapshotRequest {
                    snapshotter: sn,
                    key,
                }))
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            let labels: BTreeMap<_, _> = i.labels.iter().collect();
            // The field names ctr's JSON uses.
            let mut out = String::from("{\n");
            out.push_str(&format!("    \"Kind\": \"{}\",\n", kind(i.kind)));
            out.push_str(&format!("    \"Name\": {:?},\n", i.name));
            if !i.parent.is_empty() {
                out.push_str(&format!("    \"Parent\": {:?},\n", i.parent));
            }
            if !labels.is_empty() {
                out.push_str("    \"Labels\": {\n");
                let items: Vec<String> = labels
                    .iter()
                    .map(|(k, v)| format!("        {k:?}: {v:?}"))
                    .collect();
                out.push_str(&items.join(",\n"));
                out.push_str("\n    },\n");
            }
            out.push_str(&format!(
                "    \"Created\": \"{}\",\n",
                timestamp(&i.created_at)
            ));
            out.push_str(&format!(
                "    \"Updated\": \"{}\"\n}}",
                timestamp(&i.updated_at)
            ));
            println!("{out}");
        }
        SnapshotsCommand::Prepare {
            target,
            mounts,
            key,
            parent,
        } => {
            let m = client
                .prepare(ctx.request(PrepareSnapshotRequest {
                    snapshotter: sn,
                    key,
                    parent: parent.unwrap_or_default(),
                    labels: Default::default(),
                }))
                .await?
                .into_inner()
                .mounts;
            print_requested_mounts(target, mounts, &m);
        }
        SnapshotsCommand::View {
            target,
            mounts,
            key,
            parent,
        } => {
            let m = client
                .view(ctx.request(ViewSnapshotRequest {
                    snapshotter: sn,
                    key,
                    parent: parent.unwrap_or_default(),
                    labels: Default::default(),
                }))
                .await?
                .into_inner()
                .mounts;
            print_requested_mounts(target, mounts, &m);
        }
        SnapshotsCommand::Mounts { target, key } => {
            let m = client
                .mounts(ctx.request(MountsRequest {
                    snapshotter: sn,
                    key,
                }))
                .await?
                .into_inner()
                .mounts;
            print_mounts(&target, &m);
        }
        SnapshotsCommand::Commit { name, key } => {
            client
                .commit(ctx.request(CommitSnapshotRequest {
                    snapshotter: sn,
                    name,
                    key,
                    labels: Default::default(),
                    parent: String::new(),
                }))
                .await?;
        }
        SnapshotsCommand::Rm { keys } => {
            for key in keys {
                client
                    .remove(ctx.request(RemoveSnapshotRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    }))
                    .await
                    .map_err(|s| {
                        CmdError::Failed(format!("failed to remove {key:?}: {}", s.message()))
                    })?;
            }
        }
        SnapshotsCommand::Usage { bytes, keys } => {
            let keys = if keys.is_empty() {
                list(ctx, &sn).await?.into_iter().map(|i| i.name).collect()
            } else {
                keys
            };
            let mut t = Table::new(1, 1);
            t.row(["KEY", "SIZE", "INODES"]);
            for key in keys {
                let u = client
                    .usage(ctx.request(UsageRequest {
                        snapshotter: sn.clone(),
                        key: key.clone(),
                    }))
                    .await?
                    .into_inner();
                let size = if bytes {
                    u.size.to_string()
                } else {
                    progress_bytes(u.size)
                };
                t.row([key, size, u.inodes.to_string()]);
            }
            t.print();
        }
        SnapshotsCommand::Label { key, labels } => {
            let labels = label_args(&labels);
            let paths = labels.iter().map(|(k, _)| format!("labels.{k}")).collect();
            let info = client
                .update(ctx.request(UpdateSnapshotRequest {
                    snapshotter: sn,
                    info: Some(Info {
                        name: key,
                        labels: labels.into_iter().collect(),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths }),
                }))
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            println!("{}", join_labels(&info.labels));
        }
    }
    Ok(())
}
