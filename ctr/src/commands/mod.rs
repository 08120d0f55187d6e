//! One module per `ctr` command group.

mod containers;
mod content;
mod events;
pub(crate) mod examples;
mod export;
mod gc;
mod images;
mod import;
mod leases;
mod mount;
mod namespaces;
mod output;
mod plugins;
mod progress;
mod pull;
mod push;
mod run;
mod server_unpack;
mod snapshots;
mod stdio;
mod store;
mod tasks;
mod transfer;
mod unpack;
mod version;

use std::time::Duration;

use clap::Subcommand;
use tonic::transport::Channel;

use crate::Cli;

#[derive(Subcommand)]
pub enum Command {
    /// Print the client and server versions.
    Version,
    /// Provides information about daemon plugins.
    #[command(alias = "plugin")]
    Plugins {
        #[command(subcommand)]
        command: plugins::PluginsCommand,
    },
    /// Manage namespaces.
    #[command(aliases = ["namespace", "ns"])]
    Namespaces {
        #[command(subcommand)]
        command: namespaces::NamespacesCommand,
    },
    /// Manage content.
    Content {
        #[command(subcommand)]
        command: content::ContentCommand,
    },
    /// Manage images.
    #[command(aliases = ["image", "i"])]
    Images {
        #[command(subcommand)]
        command: images::ImagesCommand,
    },
    /// Manage leases.
    Leases {
        #[command(subcommand)]
        command: leases::LeasesCommand,
    },
    /// Manage snapshots.
    #[command(aliases = ["snapshot", "s"], after_help = examples::SNAPSHOTS)]
    Snapshots(snapshots::SnapshotsArgs),
    /// Run berthd's garbage collector now and show what it freed.
    Gc,
    /// Run a container.
    #[command(after_help = examples::RUN)]
    Run(Box<run::RunArgs>),
    /// Manage containers.
    #[command(aliases = ["c", "container"])]
    Containers {
        #[command(subcommand)]
        command: containers::ContainersCommand,
    },
    /// Manage tasks.
    #[command(aliases = ["t", "task"])]
    Tasks {
        #[command(subcommand)]
        command: tasks::TasksCommand,
    },
    /// Display the daemon's events (optionally filtered, e.g. topic~=/tasks/).
    #[command(alias = "event")]
    Events { filters: Vec<String> },
    /// Print a shell completion script (needs no daemon).
    ///
    /// bash: `bctr completion bash > /etc/bash_completion.d/bctr`; zsh: `bctr completion zsh >
    /// "${fpath[1]}/_bctr"`; fish: `bctr completion fish > ~/.config/fish/completions/bctr.fish`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    #[error(transparent)]
    Connect(#[from] bctr::client::ConnectError),
    /// The daemon's own message, which already says what and why (`namespace "a": already exists`).
    #[error("{}", .0.message())]
    Rpc(#[from] tonic::Status),
    #[error("{0}")]
    Usage(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Failed(String),
    /// The exit status of the process bctr ran (printed nothing, as ctr).
    #[error("exit status {0}")]
    Exit(u8),
}

/// What every command needs: a channel to the daemon, the namespace to work in and, while an
/// import or unpack runs, the lease that protects what it writes from garbage collection.
#[derive(Clone)]
pub struct Ctx {
    pub channel: Channel,
    pub namespace: String,
    pub lease: Option<String>,
}

impl Ctx {
    /// A request carrying the namespace header and, when set, the `containerd-lease` header.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = bctr::client::request(&self.namespace, msg);
        if let Some(lease) = &self.lease {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(lease.as_str()) {
                req.metadata_mut().insert(leases::LEASE_HEADER, v);
            }
        }
        req
    }

    /// The same context, with requests made under `lease`.
    pub fn with_lease(&self, lease: &str) -> Ctx {
        Ctx {
            lease: Some(lease.to_owned()),
            ..self.clone()
        }
    }
}

pub async fn run(cli: Cli) -> Result<(), CmdError> {
    if let Command::Completion { shell } = cli.command {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        // Into a buffer first: clap_complete panics on a failed write (`| head`).
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut cmd, "bctr", &mut script);
        return match std::io::Write::write_all(&mut std::io::stdout(), &script) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
            Err(e) => Err(CmdError::Failed(format!(
                "write the completion script: {e}"
            ))),
        };
    }
    let channel = bctr::client::connect(&cli.address).await?;
    let ctx = Ctx {
        channel,
        namespace: cli.namespace,
        lease: None,
    };
    match cli.command {
        Command::Version => version::run(&ctx).await,
        Command::Plugins { command } => plugins::run(&ctx, command).await,
        Command::Namespaces { command } => namespaces::run(&ctx, command).await,
        Command::Content { command } => content::run(&ctx, command).await,
        Command::Images { command } => images::run(&ctx, command).await,
        Command::Leases { command } => leases::run(&ctx, command).await,
        Command::Snapshots(args) => snapshots::run(&ctx, args).await,
        Command::Gc => gc::run(&ctx).await,
        Command::Run(args) => run::run(&ctx, *args).await,
        Command::Containers { command } => containers::run(&ctx, command).await,
        Command::Tasks { command } => tasks::run(&ctx, command).await,
        Command::Events { filters } => events::run(&ctx, filters).await,
        // Answered above, before connecting.
        Command::Completion { .. } => Ok(()),
    }
}

/// `k=v` arguments as a label map; `k=` (or bare `k`) gives an empty value, which removes a label.
pub fn parse_labels(args: &[String]) -> Result<Vec<(String, String)>, CmdError> {
    args.iter()
        .map(|a| {
            let (k, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
            if k.is_empty() {
                return Err(CmdError::Usage(format!(
                    "invalid label {a:?}: expected key=value"
                )));
            }
            Ok((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// ctr's `LabelArgs`: `k=v` sets, a bare `k` means `k=true`, `k=` gives an empty value (which
/// clears the label when sent with its field path).
pub fn label_args(args: &[String]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for a in args {
        let (k, v) = match a.split_once('=') {
            Some((k, v)) => (k, v),
            None => (a.as_str(), "true"),
        };
        // Like a Go map: a later value for the same key wins.
        out.retain(|(ok, _)| ok != k);
        out.push((k.to_owned(), v.to_owned()));
    }
    out
}

/// Labels as `k=v` joined with commas, sorted (ctr prints Go map order, which is random).
pub fn join_labels<'a>(labels: impl IntoIterator<Item = (&'a String, &'a String)>) -> String {
    let mut pairs: Vec<String> = labels
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    pairs.sort();
    pairs.join(",")
}

/// An RPC failure with what was being done in front: `failed to ingest "x": <daemon message>`.
pub fn rpc_context(what: impl std::fmt::Display) -> impl FnOnce(tonic::Status) -> CmdError {
    move |s| CmdError::Failed(format!("{what}: {}", s.message()))
}
