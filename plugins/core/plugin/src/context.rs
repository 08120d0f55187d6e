//! What a plugin's `init` receives: where its files go, its config section, and the instances of
//! the plugins initialised before it.

use std::any::Any;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::registry::{CloseError, CloseFn, InitError, PluginSet};

/// A ready plugin's instance. Consumers downcast to the concrete type they expect.
pub type Instance = Arc<dyn Any + Send + Sync>;

/// One initialised plugin, visible to the plugins after it.
#[derive(Clone)]
pub(crate) struct Ready {
    pub plugin_type: String,
    pub id: String,
    pub instance: Instance,
}

pub struct InitContext<'a> {
    plugin_type: &'a str,
    id: &'a str,
    root: PathBuf,
    state: PathBuf,
    address: &'a str,
    config: Option<&'a toml::Value>,
    ready: &'a [Ready],
    plugins: PluginSet,
    pub(crate) exports: BTreeMap<String, String>,
    pub(crate) platforms: Vec<String>,
    pub(crate) capabilities: Vec<String>,
    pub(crate) closers: Vec<CloseFn>,
}

impl<'a> InitContext<'a> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        plugin_type: &'a str,
        id: &'a str,
        daemon_root: &Path,
        daemon_state: &Path,
        address: &'a str,
        config: Option<&'a toml::Value>,
        ready: &'a [Ready],
        plugins: PluginSet,
    ) -> Self {
        // Each plugin owns `<root>/<type>.<id>` and `<state>/<type>.<id>`, exactly as containerd
        // lays them out, so operators' mounts and tooling carry over.
        let dir = format!("{plugin_type}.{id}");
        InitContext {
            plugin_type,
            id,
            root: daemon_root.join(&dir),
            state: daemon_state.join(&dir),
            address,
            config,
            ready,
            plugins,
            exports: BTreeMap::new(),
            platforms: Vec::new(),
            capabilities: Vec::new(),
            closers: Vec::new(),
        }
    }

    pub fn plugin_type(&self) -> &str {
        self.plugin_type
    }

    pub fn id(&self) -> &str {
        self.id
    }

    /// `<root>/<type>.<id>`: this plugin's persistent directory (not created for it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state>/<type>.<id>`: this plugin's runtime directory (not created for it).
    pub fn state(&self) -> &Path {
        &self.state
    }

    /// The gRPC address the daemon serves on.
    pub fn address(&self) -> &str {
        self.address
    }

    /// This plugin's `[plugins."<type>.<id>"]` section, or `T::default()` when there is none.
    pub fn config<T: DeserializeOwned + Default>(&self) -> Result<T, InitError> {
        match self.config {
            None => Ok(T::default()),
            Some(value) => value.clone().try_into().map_err(|e| {
                InitError::Config(format!(
                    "[plugins.\"{}.{}\"]: {e}",
                    self.plugin_type, self.id
                ))
            }),
        }
    }

    /// The first ready plugin of `plugin_type`.
    pub fn get(&self, plugin_type: &str) -> Result<Instance, InitError> {
        self.ready
            .iter()
            .find(|r| r.plugin_type == plugin_type)
            .map(|r| r.instance.clone())
            .ok_or_else(|| InitError::MissingDependency(plugin_type.to_owned()))
    }

    /// The first ready plugin of `plugin_type`, downcast to the type its plugins promise.
    pub fn get_as<T: Any + Send + Sync>(&self, plugin_type: &str) -> Result<Arc<T>, InitError> {
        self.get(plugin_type)?.downcast::<T>().map_err(|_| {
            InitError::Failed(format!(
                "plugin of type {plugin_type} does not provide {}",
                std::any::type_name::<T>()
            ))
        })
    }

    /// A ready plugin by type and id.
    pub fn get_by_id(&self, plugin_type: &str, id: &str) -> Result<Instance, InitError> {
        self.ready
            .iter()
            .find(|r| r.plugin_type == plugin_type && r.id == id)
            .map(|r| r.instance.clone())
            .ok_or_else(|| InitError::MissingDependency(format!("{plugin_type}.{id}")))
    }

    /// Every ready plugin of `plugin_type`, as `(id, instance)`, in initialisation order.
    pub fn get_all(&self, plugin_type: &str) -> Vec<(String, Instance)> {
        self.ready
            .iter()
            .filter(|r| r.plugin_type == plugin_type)
            .map(|r| (r.id.clone(), r.instance.clone()))
            .collect()
    }

    /// The live record of every plugin, including those initialised after this one.
    pub fn plugins(&self) -> PluginSet {
        self.plugins.clone()
    }

    /// A key/value the plugin publishes through introspection (e.g. `root`).
    pub fn set_export(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.exports.insert(key.into(), value.into());
    }

    /// A platform (`linux/amd64`) the plugin supports.
    pub fn add_platform(&mut self, platform: impl Into<String>) {
        self.platforms.push(platform.into());
    }

    pub fn add_capability(&mut self, capability: impl Into<String>) {
        self.capabilities.push(capability.into());
    }

    /// Runs `close` when the daemon shuts down, after the server has stopped: flush and close
    /// what the instance holds open (a database, a driver's metadata). Hooks run in reverse
    /// initialisation order, so a plugin closes before the plugins it was built on; several
    /// hooks of one plugin run last-registered first. They run only if this `init` succeeds,
    /// and each at most once; a failure is logged and does not stop the others.
    pub fn on_close<F, E>(&mut self, close: F)
    where
        F: FnOnce() -> Result<(), E> + Send + 'static,
        E: Into<CloseError>,
    {
        self.closers
            .push(Box::new(move || close().map_err(Into::into)));
    }
}
