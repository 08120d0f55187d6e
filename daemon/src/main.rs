//! berthd: a container daemon speaking containerd's v1 gRPC API.
//!
//! This binary only assembles: it reads the config, sets up logging, claims the socket, initialises
//! the plugins (see `plugins.rs` for the list) and serves until SIGTERM or SIGINT, then closes the
//! plugins in reverse initialisation order.

mod check;
mod config;
mod plugins;
mod rootdir;
mod server;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use berth_grpc::MessageLimits;
use berth_plugin::registry::{InitOptions, Initialised};
use berth_plugin::types;
use berth_snapshotter::SnapshotterInstance;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::config::Config;

#[derive(Parser)]
#[command(
    name = "berthd",
    version,
    about = "Berth container daemon (containerd-compatible API)"
)]
struct Cli {
    /// Config file (TOML, containerd's shape). Default: /etc/berth/config.toml if it exists.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Root directory for persistent data (overrides the config).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// State directory for runtime data (overrides the config).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// Unix socket to serve on (overrides [grpc] address).
    #[arg(long, short = 'a')]
    address: Option<String>,
    /// Log level: trace, debug, info, warn, error (overrides [debug] level).
    #[arg(long, short = 'l', global = true)]
    log_level: Option<String>,
    /// Log format: text or json (overrides [debug] format).
    #[arg(long)]
    log_format: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run one snapshotter alone, for another daemon to use as a proxy plugin.
    Snapshotter {
        #[command(subcommand)]
        command: SnapshotterCommand,
    },
    /// Check a stopped berthd's root, as fsck checks a file system (--repair to fix it).
    ///
    /// Runs offline: it claims the root (--root, --state, --config as berthd takes them) and
    /// refuses while a berthd uses it. It opens the metadata store, the content store and the
    /// snapshotter drivers as berthd does (so what start-up repairs is repaired here too), then
    /// checks that every blob file hashes to its name, every blob record has its file, every
    /// snapshot record has its driver snapshot (with its directories) and a sound parent, and
    /// that no driver snapshot, blob file or leased ingest is left without an owner.
    ///
    /// Prints one line per finding (`corrupt blob sha256:…`, `missing blob sha256:… (namespace
    /// default)`, `missing snapshot …`, `unreferenced …`), per repair and per note (ingests in
    /// progress and their age, images left incomplete), then a summary line.
    ///
    /// With --repair: corrupt blob files are removed (their records then count as missing),
    /// records of missing blobs and snapshots are deleted (children first), then one full
    /// collection runs (what `bctr gc` runs), which removes what nothing references.
    ///
    /// Exit status: 0 when the root is clean (or everything found was repaired), 1 when
    /// problems remain (a report-only run that found any), 2 on a usage or I/O error (the root
    /// in use, a store that cannot be opened or read).
    Check {
        /// Repair what is found.
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
enum SnapshotterCommand {
    /// Serve the snapshots API of one built-in driver (overlayfs, native, btrfs) on its own socket, without
    /// namespaces: a containerd or berthd `[proxy_plugins]` entry with `type = "snapshot"`
    /// points at it. Its data lives under `<root>/io.containerd.snapshotter.v1.<name>`.
    Serve {
        /// overlayfs (alias overlay), native or btrfs.
        name: String,
        /// Socket to serve on.
        #[arg(long)]
        address: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the full default configuration.
    Default,
    /// Print the configuration berthd would run with (file, then flags).
    Dump,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berthd: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Config {
            command: ConfigCommand::Default,
        }) => {
            print!("{}", Config::default().to_toml());
            return ExitCode::SUCCESS;
        }
        Some(Command::Config {
            command: ConfigCommand::Dump,
        }) => {
            print!("{}", cfg.to_toml());
            return ExitCode::SUCCESS;
        }
        Some(Command::Snapshotter { .. } | Command::Check { .. }) | None => {}
    }
    let mut cfg = cfg;
    if matches!(cli.command, Some(Command::Check { .. })) && cli.log_level.is_none() {
        // The check's report goes to stdout; plugin start-up chatter would drown it on stderr.
        cfg.debug.level = "warn".into();
    }
    if let Err(e) = init_logging(&cfg) {
        eprintln!("berthd: {e}");
        return ExitCode::from(2);
    }
    berth_idle_trim::limit_malloc_arenas();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berthd: cannot start the async runtime: {e}");
            // `berthd check` promises 2 for an error that stopped it from checking.
            return match cli.command {
                Some(Command::Check { .. }) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
        }
    };
    if let Some(Command::Check { repair }) = cli.command {
        return match check::run(&cfg, repair, &runtime) {
            Ok(report) => {
                println!("{report}");
                if report.clean() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Err(e) => {
                eprintln!("berthd check: {e}");
                ExitCode::from(2)
            }
        };
    }
    let result = match cli.command {
        Some(Command::Snapshotter {
            command: SnapshotterCommand::Serve { name, address },
        }) => runtime.block_on(serve_snapshotter(cfg, name, address)),
        _ => runtime.block_on(run(cfg)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line on stderr, where the logs go too, so it is the last thing an operator sees.
            eprintln!("berthd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(cli: &Cli) -> Result<Config, config::ConfigError> {
    let mut cfg = Config::load(cli.config.as_deref())?;
    if let Some(r) = &cli.root {
        cfg.root = r.clone();
    }
    if let Some(s) = &cli.state {
        cfg.state = s.clone();
    }
    if let Some(a) = &cli.address {
        cfg.grpc.address = a.clone();
    }
    if let Some(l) = &cli.log_level {
        cfg.debug.level = l.clone();
    }
    if let Some(f) = &cli.log_format {
        cfg.debug.format = f.clone();
    }
    // Relative flags are taken from the working directory, as an operator typing them expects.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    cfg.root = cwd.join(&cfg.root);
    cfg.state = cwd.join(&cfg.state);
    cfg.validate()?;
    Ok(cfg)
}

fn init_logging(cfg: &Config) -> Result<(), String> {
    // RUST_LOG, when set, refines the configured level (e.g. `berth_metadata=trace`).
    let filter = match std::env::var("RUST_LOG") {
        Ok(s) if !s.is_empty() => EnvFilter::try_new(s),
        _ => EnvFilter::try_new(&cfg.debug.level),
    }
    .map_err(|e| format!("invalid log level {:?}: {e}", cfg.debug.level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if cfg.debug.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
enum RunError {
    #[error(transparent)]
    Serve(#[from] server::ServeError),
    #[error("plugins: {0}")]
    Registry(#[from] berth_plugin::registry::RegistryError),
    #[error(transparent)]
    Root(#[from] rootdir::RootError),
    #[error("plugin initialisation stopped: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("unknown snapshotter {name:?} (serve {known})")]
    UnknownSnapshotter { name: String, known: String },
    #[error("plugin {0} is not a snapshotter")]
    NotASnapshotter(String),
}

/// What every plugin is initialised with: the daemon's directories, address and config.
fn init_options(cfg: &Config) -> InitOptions {
    InitOptions {
        root: cfg.root.clone(),
        state: cfg.state.clone(),
        address: cfg.grpc.address.clone(),
        configs: cfg.plugins.clone(),
        disabled: cfg.disabled_plugins.clone(),
        required: cfg.required_plugins.clone(),
    }
}

/// Runs the plugins' close hooks (reverse initialisation order: drivers and stores flush and
/// close, the metadata database last) once the server has stopped.
async fn close(initialised: Initialised) -> Result<(), RunError> {
    let failures = tokio::task::spawn_blocking(move || initialised.close()).await?;
    if !failures.is_empty() {
        // Each failure is logged with its plugin; shutting down goes on.
        tracing::warn!(
            failed = failures.len(),
            "some plugins did not close cleanly"
        );
    }
    Ok(())
}

async fn run(cfg: Config) -> Result<(), RunError> {
    let shutdown = shutdown_signal();
    let address = PathBuf::from(&cfg.grpc.address);
    // Claim the socket and the root before any plugin touches the root, so a second daemon
    // stops here (on the same socket, or on the same root with another socket).
    let socket = server::Socket::claim(&address, cfg.grpc.uid, cfg.grpc.gid)?;
    let started = async {
        let root = rootdir::claim(&cfg.root, &cfg.state)?;
        tracing::info!(version = berth_version::VERSION, revision = berth_version::REVISION, root = %cfg.root.display(), state = %cfg.state.display(), "starting berthd");
        let registry = plugins::registry(&cfg)?;
        let opts = init_options(&cfg);
        // Plugin init does blocking I/O (opening databases, probing filesystems).
        let initialised = tokio::task::spawn_blocking(move || registry.init_all(opts)).await??;
        Ok::<_, RunError>((root, initialised))
    }
    .await;
    let (_root, initialised) = match started {
        Ok(s) => s,
        Err(e) => {
            socket.abandon();
            return Err(e);
        }
    };

    let limits = MessageLimits {
        max_recv: cfg.grpc.max_recv_message_size,
        max_send: cfg.grpc.max_send_message_size,
    };
    let served = server::serve(socket, &initialised, limits, shutdown).await;
    close(initialised).await?;
    served?;
    tracing::info!("berthd stopped");
    Ok(())
}

/// `berthd snapshotter serve`: one driver, the raw snapshots API, nothing else. The driver is
/// built by its plugin registration, as in the daemon, and closed by its close hook.
async fn serve_snapshotter(cfg: Config, name: String, address: PathBuf) -> Result<(), RunError> {
    let shutdown = shutdown_signal();
    let id = berth_snapshots::canonical(&name).to_owned();
    let uri = format!("{}.{id}", types::SNAPSHOTTER);
    let Some(registry) = plugins::snapshotter(&id)? else {
        let known: Vec<String> = plugins::snapshotters().into_iter().map(|r| r.id).collect();
        return Err(RunError::UnknownSnapshotter {
            name,
            known: known.join(" or "),
        });
    };
    let socket = server::Socket::claim(&address, cfg.grpc.uid, cfg.grpc.gid)?;
    let _root = match rootdir::claim(&cfg.root, &cfg.state) {
        Ok(r) => r,
        Err(e) => {
            socket.abandon();
            return Err(e.into());
        }
    };
    let opts = InitOptions {
        // Only this driver's section: the rest of the config is for a whole daemon.
        configs: cfg
            .plugins
            .iter()
            .filter(|(section, _)| **section == uri)
            .map(|(section, value)| (section.clone(), value.clone()))
            .collect(),
        // This driver must be ready, whatever `required_plugins` says of a whole daemon.
        required: vec![uri.clone()],
        ..init_options(&cfg)
    };
    let initialised = tokio::task::spawn_blocking(move || registry.init_all(opts)).await??;
    let Some(driver) = initialised
        .get(types::SNAPSHOTTER, &id)
        .and_then(|instance| instance.downcast::<SnapshotterInstance>().ok())
    else {
        close(initialised).await?;
        return Err(RunError::NotASnapshotter(uri));
    };
    let root = cfg.root.join(&uri);
    tracing::info!(snapshotter = %name, root = %root.display(), address = %address.display(), "serving snapshotter");
    let mut routes = tonic::service::RoutesBuilder::default();
    routes.add_service(
        berth_snapshots_service::RawSnapshotsService::server(driver.0.clone())
            .max_decoding_message_size(cfg.grpc.max_recv_message_size)
            .max_encoding_message_size(cfg.grpc.max_send_message_size),
    );
    let served = server::serve_routes(socket, routes, shutdown).await;
    close(initialised).await?;
    served?;
    Ok(())
}

/// Installs the SIGTERM/SIGINT handlers at once (so a signal during start-up is not fatal) and
/// returns a future that resolves on the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (mut term, mut int) = match handlers {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                tracing::error!("cannot install signal handlers; stop berthd with SIGKILL");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}
