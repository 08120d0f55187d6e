//! bctr: the admin client for berthd, with containerd's `ctr` command tree. It speaks only the
//! public containerd API, so it works against a real containerd as well.

mod commands;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use bctr::client::DEFAULT_ADDRESS;

#[derive(Parser)]
#[command(
    name = "bctr",
    version,
    about = "Admin client for berthd (containerd-compatible)",
    after_help = commands::examples::BCTR
)]
pub struct Cli {
    /// Daemon socket.
    #[arg(long, short = 'a', global = true, env = "BERTH_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: String,
    /// Namespace to work in.
    #[arg(
        long,
        short = 'n',
        global = true,
        env = "CONTAINERD_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    /// Give up on the command after this long (e.g. 10s, 2m); 0 waits forever.
    #[arg(long, global = true, default_value = "0", value_parser = parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: commands::Command,
}

/// `10s`, `1.5m`, `250ms`, `2h` or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "invalid duration unit in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut cli = Cli::parse();
    // CONTAINERD_ADDRESS is honoured when BERTH_ADDRESS and --address are absent, so bctr can be
    // pointed at a containerd the way ctr is.
    if cli.address == DEFAULT_ADDRESS && std::env::var_os("BERTH_ADDRESS").is_none() {
        if let Ok(a) = std::env::var("CONTAINERD_ADDRESS") {
            if !a.is_empty() {
                cli.address = a;
            }
        }
    }
    let timeout = cli.timeout;
    let run = commands::run(cli);
    let result = if timeout.is_zero() {
        run.await
    } else {
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(commands::CmdError::Timeout(timeout)),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(commands::CmdError::Exit(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("bctr: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_tree_is_consistent() {
        super::Cli::command().debug_assert();
    }

    /// The commands an admin reaches for first say how to use them in `--help`.
    #[test]
    fn help_has_examples() {
        let mut cli = super::Cli::command();
        let paths: &[&[&str]] = &[
            &[],
            &["run"],
            &["images", "pull"],
            &["images", "push"],
            &["images", "tag"],
            &["images", "import"],
            &["images", "export"],
            &["tasks", "exec"],
            &["snapshots"],
        ];
        for path in paths {
            let mut cmd = &mut cli;
            for name in *path {
                cmd = cmd
                    .find_subcommand_mut(name)
                    .unwrap_or_else(|| panic!("no subcommand {name}"));
            }
            let help = cmd.render_long_help().to_string();
            assert!(
                help.contains("Examples:\n  bctr "),
                "bctr {}: {help}",
                path.join(" ")
            );
        }
    }
}
