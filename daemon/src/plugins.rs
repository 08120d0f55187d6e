//! The built-in plugin set: the one place that lists what berthd is assembled from.

use std::sync::Arc;

use berth_plugin::{InitError, Registration, Registry};

use crate::config::{Config, ProxyPlugin};

pub fn registry(cfg: &Config) -> Result<Registry, berth_plugin::registry::RegistryError> {
    let mut reg = Registry::new();
    reg.register(berth_events::registration())?;
    reg.register(berth_metadata::registration())?;
    reg.register(berth_content_store::registration())?;
    reg.register(berth_snapshotter_overlay::registration())?;
    reg.register(berth_snapshotter_native::registration())?;
    reg.register(berth_gc::registration())?;
    reg.register(berth_content_service::registration())?;
    reg.register(berth_images::registration())?;
    reg.register(berth_leases::registration())?;
    reg.register(berth_snapshots::registration())?;
    reg.register(berth_snapshots_service::registration())?;
    reg.register(berth_diff_service::registration())?;
    reg.register(berth_unpack::registration())?;
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
