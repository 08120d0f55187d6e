//! `berthd check [--repair]`: the offline check of a root (`berth_check` holds the logic).
//!
//! It claims the root as the daemon does (a running berthd makes it refuse), opens only the
//! storage plugins through the daemon's own registrations — metadata, content store, the
//! built-in snapshotter drivers and, to repair, the collector — with the daemon's directories
//! and config sections, runs the check and closes them as the daemon closes them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_check::{Mode, Report, Stores};
use berth_plugin::registry::{InitOptions, Initialised, PluginStatus, RegistryError};
use berth_plugin::{types, Registry};
use berth_snapshotter::SnapshotterInstance;

use crate::config::Config;
use crate::{init_options, plugins, rootdir};

const METADATA: &str = "io.containerd.metadata.v1.redb";
const CONTENT: &str = "io.containerd.content.v1.content";
const GC: &str = "io.containerd.gc.v1.scheduler";

#[derive(Debug, thiserror::Error)]
pub enum CheckCmdError {
    #[error("root {0} does not exist: nothing to check")]
    NoRoot(PathBuf),
    #[error(transparent)]
    Root(#[from] rootdir::RootError),
    #[error("plugins: {0}")]
    Registry(#[from] RegistryError),
    #[error("plugin {0} is ready but not of the type berthd check expects")]
    WrongType(&'static str),
    #[error(transparent)]
    Check(#[from] berth_check::CheckError),
}

/// Checks (and with `repair`, repairs) the root of `cfg`. The runtime is the daemon's: the
/// collector's plugin needs one to initialise, and its collection runs on it.
pub fn run(
    cfg: &Config,
    repair: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<Report, CheckCmdError> {
    // Claiming would create the directories: a mistyped --root must not pass as a clean one.
    if !cfg.root.is_dir() {
        return Err(CheckCmdError::NoRoot(cfg.root.clone()));
    }
    let _root = rootdir::claim(&cfg.root, &cfg.state)?;
    let registry = registry(repair)?;
    let uris: Vec<String> = registry_uris(repair);
    let mut configs: BTreeMap<String, toml::Value> = cfg
        .plugins
        .iter()
        .filter(|(section, _)| uris.contains(section))
        .map(|(section, value)| (section.clone(), value.clone()))
        .collect();
    if repair {
        // The check runs the one collection it needs, after its repairs, and reports what it
        // freed: the scheduler's own start-up collection and timer are put off past its end.
        let gc = configs
            .entry(GC.to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let toml::Value::Table(t) = gc {
            t.insert("startup_delay".into(), toml::Value::String("8760h".into()));
            t.insert("interval".into(), toml::Value::String("0s".into()));
        }
    }
    let mut required = vec![METADATA.to_owned(), CONTENT.to_owned()];
    if repair {
        required.push(GC.to_owned());
    }
    let opts = InitOptions {
        configs,
        required,
        ..init_options(cfg)
    };
    let initialised = {
        // The collector spawns its loop on the runtime as it initialises.
        let _entered = runtime.enter();
        registry.init_all(opts)?
    };
    let result = check(cfg, &initialised, repair, runtime);
    // Closed as the daemon closes them (the metadata database last, cleanly), whatever the
    // check found; a failure to close is logged by the registry.
    initialised.close();
    result
}

fn check(
    cfg: &Config,
    initialised: &Initialised,
    repair: bool,
    runtime: &tokio::runtime::Runtime,
) -> Result<Report, CheckCmdError> {
    let db = initialised
        .get(types::METADATA, "redb")
        .and_then(|i| i.downcast::<berth_metadata::MetadataDb>().ok())
        .ok_or(CheckCmdError::WrongType(METADATA))?;
    let content = initialised
        .get(types::CONTENT, "content")
        .and_then(|i| i.downcast::<berth_content_store::ContentStore>().ok())
        .ok_or(CheckCmdError::WrongType(CONTENT))?;
    let drivers = initialised
        .get_all(types::SNAPSHOTTER)
        .into_iter()
        .filter_map(|(id, i)| {
            i.downcast::<SnapshotterInstance>()
                .ok()
                .map(|s| (id, s.0.clone()))
        })
        .collect();
    let mut unavailable: BTreeMap<String, String> = initialised
        .plugins
        .snapshot()
        .into_iter()
        .filter(|r| r.plugin_type == types::SNAPSHOTTER)
        .filter_map(|r| match r.status {
            PluginStatus::Ok => None,
            PluginStatus::Skip(why) | PluginStatus::Error(why) => Some((r.id, why)),
        })
        .collect();
    for (name, proxy) in &cfg.proxy_plugins {
        if proxy.plugin_type == "snapshot" {
            // An offline check does not reach into other processes.
            unavailable.insert(
                name.clone(),
                format!(
                    "proxy snapshotter at {}: berthd check does not open proxies",
                    proxy.address
                ),
            );
        }
    }
    let stores = Stores {
        db,
        content,
        drivers,
        unavailable,
    };
    if !repair {
        return Ok(berth_check::check(&stores, Mode::Report)?);
    }
    let scheduler = initialised
        .get(types::GC, "scheduler")
        .and_then(|i| i.downcast::<berth_gc::Scheduler>().ok())
        .ok_or(CheckCmdError::WrongType(GC))?;
    // The same full collection `bctr gc` asks the running daemon for.
    let mut collect = || runtime.block_on(scheduler.collect_now());
    Ok(berth_check::check(&stores, Mode::Repair(&mut collect))?)
}

/// The storage plugins, through the registrations the daemon uses.
fn registry(repair: bool) -> Result<Registry, RegistryError> {
    let mut reg = Registry::new();
    reg.register(berth_metadata::registration())?;
    reg.register(berth_content_store::registration())?;
    for driver in plugins::snapshotters() {
        reg.register(driver)?;
    }
    if repair {
        reg.register(berth_gc::registration())?;
    }
    Ok(reg)
}

/// The `<type>.<id>` of what [`registry`] registers, whose config sections apply.
fn registry_uris(repair: bool) -> Vec<String> {
    let mut uris = vec![METADATA.to_owned(), CONTENT.to_owned()];
    if repair {
        uris.push(GC.to_owned());
    }
    uris.extend(plugins::snapshotters().iter().map(|r| r.uri()));
    uris
}
