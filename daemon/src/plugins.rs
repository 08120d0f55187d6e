//! The built-in plugin set: the one place that lists what berthd is assembled from.

use std::sync::Arc;

use berth_plugin::registry::RegistryError;
use berth_plugin::{InitError, Registration, Registry};

use crate::config::{Config, ProxyPlugin};

pub fn registry(cfg: &Config) -> Result<Registry, RegistryError> {
    let mut reg = Registry::new();
    reg.register(berth_events::registration())?;
    reg.register(berth_metadata::registration())?;
    reg.register(berth_content_store::registration())?;
    for driver in snapshotters() {
        reg.register(driver)?;
    }
    reg.register(berth_gc::registration())?;
    reg.register(berth_content_service::registration())?;
    reg.register(berth_images::registration())?;
    reg.register(berth_containers::registration())?;
    reg.register(berth_runtime::registration())?;
    reg.register(berth_tasks::registration())?;
    reg.register(berth_leases::registration())?;
    reg.register(berth_snapshots::registration())?;
    reg.register(berth_snapshots_service::registration())?;
    reg.register(berth_diff_service::registration())?;
    reg.register(berth_unpack_service::registration())?;
    reg.register(berth_streams::registration())?;
    reg.register(berth_streaming_service::registration())?;
    reg.register(berth_transfer::registration())?;
    reg.register(berth_transfer_service::registration())?;
    reg.register(berth_gc_service::registration())?;
    reg.register(berth_events_service::registration())?;
    reg.register(berth_namespaces::registration())?;
    reg.register(berth_version::registration())?;
    reg.register(berth_introspection::registration())?;
    reg.register(berth_healthcheck::registration())?;
    for (name, proxy) in &cfg.proxy_plugins {
        reg.register(proxy_registration(name, proxy))?;
    }
    Ok(reg)
}

/// The built-in storage drivers.
pub fn snapshotters() -> Vec<Registration> {
    vec![
        berth_snapshotter_overlay::registration(),
        berth_snapshotter_native::registration(),
        berth_snapshotter_btrfs::registration(),
        berth_snapshotter_devmapper::registration(),
    ]
}

/// What `berthd snapshotter serve <id>` initialises: the built-in driver `id` alone, through the
/// registration the daemon uses (same directories, config section and close hook). `None` when
/// no built-in driver has that id.
pub fn snapshotter(id: &str) -> Result<Option<Registry>, RegistryError> {
    let Some(driver) = snapshotters().into_iter().find(|r| r.id == id) else {
        return Ok(None);
    };
    let mut reg = Registry::new();
    reg.register(driver)?;
    Ok(Some(reg))
}

/// `[proxy_plugins]`: snapshotters become real snapshotter plugins; other types are listed (so
/// introspection shows them) with the reason they cannot be used yet.
fn proxy_registration(name: &str, proxy: &ProxyPlugin) -> Registration {
    if proxy.plugin_type == "snapshot" {
        return berth_snapshotter_proxy::registration(name, &proxy.address);
    }
    let plugin_type = match proxy.plugin_type.as_str() {
        "content" => berth_plugin::types::CONTENT,
        _ => "io.containerd.proxy.unknown",
    };
    let kind = proxy.plugin_type.clone();
    let address = proxy.address.clone();
    Registration::new(plugin_type, name, &[], move |_ctx| {
        Err::<Arc<dyn std::any::Any + Send + Sync>, _>(InitError::Failed(format!(
            "proxy plugin of type {kind:?} at {address}: berthd cannot use proxy plugins of this type yet"
        )))
    })
}
