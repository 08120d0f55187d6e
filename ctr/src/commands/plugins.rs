use bctr::table::Table;
use berth_api::introspection::{introspection_client::IntrospectionClient, Plugin, PluginsRequest};
use berth_api::types::Platform;
use clap::Subcommand;

use super::output::{print_rows, ListFormat};
use super::{CmdError, Ctx};

/// One plugin in `plugins ls --format json`.
#[derive(serde::Serialize)]
struct PluginRow {
    r#type: String,
    id: String,
    platforms: Vec<String>,
    status: &'static str,
    requires: Vec<String>,
    capabilities: Vec<String>,
    exports: std::collections::BTreeMap<String, String>,
    error: Option<String>,
}

#[derive(Subcommand)]
pub enum PluginsCommand {
    /// List plugins, optionally filtered (`type==io.containerd.snapshotter.v1`).
    #[command(alias = "list")]
    Ls {
        /// Print every detail of each plugin (table format; the JSON always has them).
        #[arg(long, short = 'd')]
        detailed: bool,
        #[command(flatten)]
        format: ListFormat,
        filters: Vec<String>,
    },
}

fn platform(p: &Platform) -> String {
    let mut s = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        s.push('/');
        s.push_str(&p.variant);
    }
    s
}

/// ok, skip or error, by the rule ctr uses: an init error mentioning "skip plugin" is a skip.
fn status(p: &Plugin) -> &'static str {
    match &p.init_err {
        None => "ok",
        Some(e) if e.message.contains("skip plugin") => "skip",
        Some(_) => "error",
    }
}

pub async fn run(ctx: &Ctx, cmd: PluginsCommand) -> Result<(), CmdError> {
    let PluginsCommand::Ls {
        detailed,
        format,
        filters,
    } = cmd;
    let plugins = IntrospectionClient::new(ctx.channel.clone())
        .plugins(ctx.request(PluginsRequest { filters }))
        .await?
        .into_inner()
        .plugins;
    let rows: Vec<PluginRow> = plugins
        .iter()
        .map(|p| PluginRow {
            r#type: p.r#type.clone(),
            id: p.id.clone(),
            platforms: p.platforms.iter().map(platform).collect(),
            status: status(p),
            requires: p.requires.clone(),
            capabilities: p.capabilities.clone(),
            exports: p
                .exports
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            error: p.init_err.as_ref().map(|e| e.message.clone()),
        })
        .collect();
    print_rows(format, &rows, |rows| {
        if detailed {
            print_detailed(&plugins);
            return;
        }
        let mut t = Table::new(4, 4);
        t.row(["TYPE", "ID", "PLATFORMS", "STATUS"]);
        for p in rows {
            let platforms = if p.platforms.is_empty() {
                "-".to_owned()
            } else {
                p.platforms.join(",")
            };
            t.row([
                p.r#type.clone(),
                p.id.clone(),
                platforms,
                p.status.to_owned(),
            ]);
        }
        t.print();
    });
    Ok(())
}

fn print_detailed(plugins: &[Plugin]) {
    let indent = " ".repeat(15);
    for p in plugins {
        println!("{:<15}{}", "Type:", p.r#type);
        println!("{:<15}{}", "ID:", p.id);
        if !p.requires.is_empty() {
            println!("Requires:");
            for r in &p.requires {
                println!("{indent}{r}");
            }
        }
        if !p.platforms.is_empty() {
            let list: Vec<_> = p.platforms.iter().map(platform).collect();
            println!("{:<15}{}", "Platforms:", list.join(","));
        }
        if !p.exports.is_empty() {
            println!("Exports:");
            let mut exports: Vec<_> = p.exports.iter().collect();
            exports.sort();
            let width = exports.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 4;
            for (k, v) in exports {
                println!("{indent}{k:<width$}{v}");
            }
        }
        if !p.capabilities.is_empty() {
            println!("{:<15}{}", "Capabilities:", p.capabilities.join(","));
        }
        if let Some(e) = &p.init_err {
            println!("Error:");
            println!("{indent}{:<13}{}", "Code:", tonic::Code::from(e.code));
            println!("{indent}{:<13}{}", "Message:", e.message);
        }
        println!();
    }
}
