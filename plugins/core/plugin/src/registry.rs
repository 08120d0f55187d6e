//! Dependency-ordered plugin initialisation.
//!
//! Registrations are sorted so that a plugin comes after every plugin of each type it requires
//! (`"*"` means after all others), keeping registration order otherwise. Each is initialised once.
//! A failure is recorded with its reason and never stops the others; only a plugin named in
//! `required_plugins` failing makes start-up fail.
//!
//! On shutdown, [`Initialised::close`] runs the close hooks plugins registered with
//! [`InitContext::on_close`], in reverse initialisation order.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::context::{InitContext, Instance, Ready};

type InitFn = Box<dyn FnOnce(&mut InitContext) -> Result<Instance, InitError> + Send>;

/// Why a plugin's close hook failed.
pub type CloseError = Box<dyn std::error::Error + Send + Sync>;

/// A close hook, registered with [`InitContext::on_close`].
pub(crate) type CloseFn = Box<dyn FnOnce() -> Result<(), CloseError> + Send>;

/// A close hook that failed.
#[derive(Debug)]
pub struct CloseFailure {
    /// `<type>.<id>` of the plugin.
    pub plugin: String,
    pub error: CloseError,
}

/// A plugin, as data.
pub struct Registration {
    pub plugin_type: String,
    pub id: String,
    /// Plugin types that must be initialised first; `"*"` for all other plugins.
    pub requires: Vec<String>,
    pub init: InitFn,
}

impl Registration {
    pub fn new<F>(plugin_type: &str, id: &str, requires: &[&str], init: F) -> Self
    where
        F: FnOnce(&mut InitContext) -> Result<Instance, InitError> + Send + 'static,
    {
        Registration {
            plugin_type: plugin_type.to_owned(),
            id: id.to_owned(),
            requires: requires.iter().map(|s| (*s).to_owned()).collect(),
            init: Box::new(init),
        }
    }

    /// `<type>.<id>`, the name used in config sections and `disabled_plugins`.
    pub fn uri(&self) -> String {
        format!("{}.{}", self.plugin_type, self.id)
    }
}

/// Why a plugin is not ready.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InitError {
    /// The plugin does not apply here (wrong filesystem, not configured); containerd shows "skip".
    #[error("{0}: skip plugin")]
    Skip(String),
    #[error("invalid configuration {0}")]
    Config(String),
    #[error("no plugin of type {0} is ready")]
    MissingDependency(String),
    #[error("{0}")]
    Failed(String),
}

impl InitError {
    pub fn failed(err: impl std::fmt::Display) -> Self {
        InitError::Failed(err.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginStatus {
    Ok,
    Skip(String),
    Error(String),
}

/// What introspection reports about one plugin.
#[derive(Debug, Clone)]
pub struct PluginRecord {
    pub plugin_type: String,
    pub id: String,
    pub requires: Vec<String>,
    pub platforms: Vec<String>,
    pub exports: BTreeMap<String, String>,
    pub capabilities: Vec<String>,
    pub status: PluginStatus,
}

/// The shared, growing list of plugin records; introspection reads it at request time.
#[derive(Clone, Default)]
pub struct PluginSet(Arc<RwLock<Vec<PluginRecord>>>);

impl PluginSet {
    pub fn snapshot(&self) -> Vec<PluginRecord> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn push(&self, rec: PluginRecord) {
        match self.0.write() {
            Ok(mut g) => g.push(rec),
            Err(p) => p.into_inner().push(rec),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugin {0} registered twice")]
    Duplicate(String),
    #[error("plugin dependency cycle through {0}")]
    Cycle(String),
    #[error("required plugin {uri} is not ready: {reason}")]
    RequiredFailed { uri: String, reason: String },
    #[error("required plugin {0} is not registered or is disabled")]
    RequiredMissing(String),
}

/// Everything `Registry::init_all` needs besides the registrations.
pub struct InitOptions {
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: String,
    /// `[plugins."<type>.<id>"]` sections by `<type>.<id>`.
    pub configs: BTreeMap<String, toml::Value>,
    /// `<type>.<id>` or a bare id, as containerd accepts.
    pub disabled: Vec<String>,
    pub required: Vec<String>,
}

/// The result of initialisation: ready instances plus the record of every plugin.
pub struct Initialised {
    ready: Vec<Ready>,
    pub plugins: PluginSet,
    /// `(<type>.<id>, hook)` in the order the hooks were registered.
    closers: Mutex<Vec<(String, CloseFn)>>,
}

impl Initialised {
    /// A ready instance by type and id.
    pub fn get(&self, plugin_type: &str, id: &str) -> Option<Instance> {
        self.ready
            .iter()
            .find(|r| r.plugin_type == plugin_type && r.id == id)
            .map(|r| r.instance.clone())
    }

    /// Runs every close hook once, the last registered first (reverse initialisation order),
    /// and returns those that failed (each is logged too). Call it after the server stopped;
    /// calling it again does nothing. Hooks may block (they flush to disk).
    pub fn close(&self) -> Vec<CloseFailure> {
        let hooks = std::mem::take(&mut *self.closers.lock().unwrap_or_else(|p| p.into_inner()));
        let mut failures = Vec::new();
        for (plugin, close) in hooks.into_iter().rev() {
            match close() {
                Ok(()) => tracing::debug!(%plugin, "plugin closed"),
                Err(error) => {
                    tracing::warn!(%plugin, %error, "plugin failed to close");
                    failures.push(CloseFailure { plugin, error });
                }
            }
        }
        failures
    }

    /// Every ready instance of a type, as `(id, instance)`.
    pub fn get_all(&self, plugin_type: &str) -> Vec<(String, Instance)> {
        self.ready
            .iter()
            .filter(|r| r.plugin_type == plugin_type)
            .map(|r| (r.id.clone(), r.instance.clone()))
            .collect()
    }
}

#[derive(Default)]
pub struct Registry {
    regs: Vec<Registration>,
}

impl Registry {
    pub fn new() -> Self {
        Registry::default()
    }

    pub fn register(&mut self, reg: Registration) -> Result<(), RegistryError> {
        if self
            .regs
            .iter()
            .any(|r| r.plugin_type == reg.plugin_type && r.id == reg.id)
        {
            return Err(RegistryError::Duplicate(reg.uri()));
        }
        self.regs.push(reg);
        Ok(())
    }

    /// Registration indices in initialisation order.
    fn order(&self) -> Result<Vec<usize>, RegistryError> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Visiting,
            Done,
        }
        fn visit(
            regs: &[Registration],
            i: usize,
            marks: &mut [Mark],
            out: &mut Vec<usize>,
        ) -> Result<(), RegistryError> {
            match marks[i] {
                Mark::Done => return Ok(()),
                Mark::Visiting => return Err(RegistryError::Cycle(regs[i].uri())),
                Mark::New => {}
            }
            marks[i] = Mark::Visiting;
            for req in &regs[i].requires {
                for j in 0..regs.len() {
                    let wanted = if req == "*" {
                        j != i && !regs[j].requires.iter().any(|r| r == "*")
                    } else {
                        regs[j].plugin_type == *req && j != i
                    };
                    if wanted {
                        visit(regs, j, marks, out)?;
                    }
                }
            }
            marks[i] = Mark::Done;
            out.push(i);
            Ok(())
        }
        let mut marks = vec![Mark::New; self.regs.len()];
        let mut out = Vec::with_capacity(self.regs.len());
        for i in 0..self.regs.len() {
            visit(&self.regs, i, &mut marks, &mut out)?;
        }
        Ok(out)
    }

    /// Initialises every enabled plugin in dependency order.
    pub fn init_all(self, opts: InitOptions) -> Result<Initialised, RegistryError> {
        let order = self.order()?;
        let disabled: HashSet<&str> = opts.disabled.iter().map(String::as_str).collect();
        let is_disabled = |r: &Registration| {
            disabled.contains(r.uri().as_str()) || disabled.contains(r.id.as_str())
        };

        let known: HashSet<String> = self.regs.iter().map(Registration::uri).collect();
        for section in opts.configs.keys() {
            if !known.contains(section) {
                tracing::warn!(plugin = %section, "config section for a plugin that is not registered");
            }
        }

        let mut slots: Vec<Option<Registration>> = self.regs.into_iter().map(Some).collect();
        let plugins = PluginSet::default();
        let mut ready: Vec<Ready> = Vec::new();
        let mut closers: Vec<(String, CloseFn)> = Vec::new();
        let mut enabled_uris = HashSet::new();

        for i in order {
            let Some(reg) = slots[i].take() else { continue };
            let uri = reg.uri();
            if is_disabled(&reg) {
                tracing::info!(plugin = %uri, "plugin disabled by configuration");
                continue;
            }
            enabled_uris.insert(uri.clone());
            let span = tracing::info_span!("plugin_init", plugin = %uri);
            let _enter = span.enter();
            let mut ctx = InitContext::new(
                &reg.plugin_type,
                &reg.id,
                &opts.root,
                &opts.state,
                &opts.address,
                opts.configs.get(&uri),
                &ready,
                plugins.clone(),
            );
            let result = (reg.init)(&mut ctx);
            let (exports, platforms, capabilities, hooks) = (
                std::mem::take(&mut ctx.exports),
                std::mem::take(&mut ctx.platforms),
                std::mem::take(&mut ctx.capabilities),
                std::mem::take(&mut ctx.closers),
            );
            drop(ctx);
            let status = match result {
                Ok(instance) => {
                    tracing::info!("plugin ready");
                    closers.extend(hooks.into_iter().map(|h| (uri.clone(), h)));
                    ready.push(Ready {
                        plugin_type: reg.plugin_type.clone(),
                        id: reg.id.clone(),
                        instance,
                    });
                    PluginStatus::Ok
                }
                Err(InitError::Skip(reason)) => {
                    tracing::info!(%reason, "plugin skipped");
                    PluginStatus::Skip(InitError::Skip(reason).to_string())
                }
                Err(e) => {
                    tracing::warn!(error = %e, "plugin failed to initialise");
                    PluginStatus::Error(e.to_string())
                }
            };
            plugins.push(PluginRecord {
                plugin_type: reg.plugin_type,
                id: reg.id,
                requires: reg.requires,
                platforms,
                exports,
                capabilities,
                status,
            });
        }

        let records = plugins.snapshot();
        for uri in &opts.required {
            if !enabled_uris.contains(uri) {
                return Err(RegistryError::RequiredMissing(uri.clone()));
            }
            if let Some(rec) = records
                .iter()
                .find(|r| format!("{}.{}", r.plugin_type, r.id) == *uri)
            {
                match &rec.status {
                    PluginStatus::Ok => {}
                    PluginStatus::Skip(reason) | PluginStatus::Error(reason) => {
                        return Err(RegistryError::RequiredFailed {
                            uri: uri.clone(),
                            reason: reason.clone(),
                        })
                    }
                }
            }
        }
        Ok(Initialised {
            ready,
            plugins,
            closers: Mutex::new(closers),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn opts() -> InitOptions {
        InitOptions {
            root: PathBuf::from("/nonexistent/root"),
            state: PathBuf::from("/nonexistent/state"),
            address: "/nonexistent/sock".into(),
            configs: BTreeMap::new(),
            disabled: vec![],
            required: vec![],
        }
    }

    fn recorder(log: &Arc<Mutex<Vec<String>>>, t: &str, id: &str, req: &[&str]) -> Registration {
        let log = log.clone();
        let name = format!("{t}.{id}");
        Registration::new(t, id, req, move |_ctx| {
            log.lock().unwrap().push(name);
            Ok(Arc::new(()) as Instance)
        })
    }

    /// A recorder whose instance logs `close:<type>.<id>` when closed.
    fn closing(log: &Arc<Mutex<Vec<String>>>, t: &str, id: &str, req: &[&str]) -> Registration {
        let log = log.clone();
        let name = format!("{t}.{id}");
        Registration::new(t, id, req, move |ctx| {
            log.lock().unwrap().push(name.clone());
            let log = log.clone();
            ctx.on_close(move || {
                log.lock().unwrap().push(format!("close:{name}"));
                Ok::<_, CloseError>(())
            });
            Ok(Arc::new(()) as Instance)
        })
    }

    #[test]
    fn close_hooks_run_once_in_reverse_initialisation_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        // Registered out of order: initialisation sorts them, closing reverses that.
        reg.register(closing(&log, "grpc", "svc", &["store"]))
            .unwrap();
        reg.register(closing(&log, "store", "content", &["meta"]))
            .unwrap();
        reg.register(closing(&log, "meta", "db", &[])).unwrap();
        reg.register(recorder(&log, "events", "x", &[])).unwrap();
        let done = reg.init_all(opts()).unwrap();
        assert!(done.close().is_empty());
        assert!(done.close().is_empty(), "a second close runs nothing");
        assert_eq!(
            *log.lock().unwrap(),
            vec![
                "meta.db",
                "store.content",
                "grpc.svc",
                "events.x",
                "close:grpc.svc",
                "close:store.content",
                "close:meta.db",
            ]
        );
    }

    #[test]
    fn a_failing_close_hook_is_reported_and_the_others_still_run() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        reg.register(closing(&log, "meta", "db", &[])).unwrap();
        reg.register(Registration::new("svc", "broken", &["meta"], |ctx| {
            ctx.on_close(|| Err(std::io::Error::other("flush failed")));
            Ok(Arc::new(()) as Instance)
        }))
        .unwrap();
        // A plugin whose init fails after registering a hook: the hook never runs.
        let l = log.clone();
        reg.register(Registration::new("svc", "failed", &["meta"], move |ctx| {
            ctx.on_close(move || {
                l.lock().unwrap().push("close:svc.failed".into());
                Ok::<_, CloseError>(())
            });
            Err(InitError::Failed("no".into()))
        }))
        .unwrap();
        let done = reg.init_all(opts()).unwrap();
        let failures = done.close();
        assert_eq!(failures.len(), 1);
        assert_eq!(failures[0].plugin, "svc.broken");
        assert_eq!(failures[0].error.to_string(), "flush failed");
        assert_eq!(*log.lock().unwrap(), vec!["meta.db", "close:meta.db"]);
    }

    #[test]
    fn dependencies_initialise_first_and_order_is_otherwise_kept() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        reg.register(recorder(&log, "grpc", "a", &["svc"])).unwrap();
        reg.register(recorder(&log, "svc", "s1", &["meta"]))
            .unwrap();
        reg.register(recorder(&log, "meta", "m", &[])).unwrap();
        reg.register(recorder(&log, "grpc", "intro", &["*"]))
            .unwrap();
        reg.register(recorder(&log, "svc", "s2", &[])).unwrap();
        reg.init_all(opts()).unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            vec!["meta.m", "svc.s1", "svc.s2", "grpc.a", "grpc.intro"]
        );
    }

    #[test]
    fn failure_is_recorded_and_dependants_see_it() {
        let mut reg = Registry::new();
        reg.register(Registration::new("meta", "m", &[], |_| {
            Err(InitError::Failed("disk on fire".into()))
        }))
        .unwrap();
        reg.register(Registration::new("svc", "s", &["meta"], |ctx| {
            ctx.get("meta")?;
            Ok(Arc::new(()) as Instance)
        }))
        .unwrap();
        reg.register(Registration::new("snap", "x", &[], |_| {
            Err(InitError::Skip("not btrfs".into()))
        }))
        .unwrap();
        let done = reg.init_all(opts()).unwrap();
        let recs = done.plugins.snapshot();
        assert_eq!(recs[0].status, PluginStatus::Error("disk on fire".into()));
        assert_eq!(
            recs[1].status,
            PluginStatus::Error("no plugin of type meta is ready".into())
        );
        assert_eq!(
            recs[2].status,
            PluginStatus::Skip("not btrfs: skip plugin".into())
        );
    }

    #[test]
    fn disabled_plugins_are_not_initialised_by_uri_or_bare_id() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        reg.register(recorder(&log, "t", "one", &[])).unwrap();
        reg.register(recorder(&log, "t", "two", &[])).unwrap();
        reg.register(recorder(&log, "t", "three", &[])).unwrap();
        let mut o = opts();
        o.disabled = vec!["t.one".into(), "three".into()];
        let done = reg.init_all(o).unwrap();
        assert_eq!(*log.lock().unwrap(), vec!["t.two"]);
        assert_eq!(done.plugins.snapshot().len(), 1);
    }

    #[test]
    fn required_plugin_failure_is_fatal() {
        let mut reg = Registry::new();
        reg.register(Registration::new("t", "x", &[], |_| {
            Err(InitError::Failed("nope".into()))
        }))
        .unwrap();
        let mut o = opts();
        o.required = vec!["t.x".into()];
        let err = reg.init_all(o).err().unwrap();
        assert!(err
            .to_string()
            .contains("required plugin t.x is not ready: nope"));
    }

    #[test]
    fn cycles_and_duplicates_are_rejected() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut reg = Registry::new();
        reg.register(recorder(&log, "a", "1", &["b"])).unwrap();
        reg.register(recorder(&log, "b", "1", &["a"])).unwrap();
        assert!(reg.register(recorder(&log, "a", "1", &[])).is_err());
        assert!(matches!(reg.init_all(opts()), Err(RegistryError::Cycle(_))));
    }

    #[test]
    fn config_section_reaches_its_plugin() {
        #[derive(serde::Deserialize, Default)]
        struct Cfg {
            size: u32,
        }
        let seen = Arc::new(Mutex::new(0));
        let s = seen.clone();
        let mut reg = Registry::new();
        reg.register(Registration::new("t", "x", &[], move |ctx| {
            *s.lock().unwrap() = ctx.config::<Cfg>()?.size;
            assert!(ctx.root().ends_with("t.x"));
            Ok(Arc::new(()) as Instance)
        }))
        .unwrap();
        let mut o = opts();
        o.configs
            .insert("t.x".into(), toml::from_str("size = 7").unwrap());
        reg.init_all(o).unwrap();
        assert_eq!(*seen.lock().unwrap(), 7);
    }
}
