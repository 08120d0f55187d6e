//! One module per `ctr` command group.

mod namespaces;
mod plugins;
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
}

/// What every command needs: a channel to the daemon and the namespace to work in.
pub struct Ctx {
    pub channel: Channel,
    pub namespace: String,
}

impl Ctx {
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        bctr::client::request(&self.namespace, msg)
    }
}

pub async fn run(cli: Cli) -> Result<(), CmdError> {
    let channel = bctr::client::connect(&cli.address).await?;
    let ctx = Ctx {
        channel,
        namespace: cli.namespace,
    };
    match cli.command {
        Command::Version => version::run(&ctx).await,
        Command::Plugins { command } => plugins::run(&ctx, command).await,
        Command::Namespaces { command } => namespaces::run(&ctx, command).await,
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
