//! The plugin model every part of berthd is built from.
//!
//! A plugin is data: a [`Registration`] names its type (`io.containerd.snapshotter.v1`), its id
//! (`overlayfs`), the plugin types it requires and an `init` function. The [`registry`] sorts
//! registrations by dependency, initialises each once with an [`InitContext`] holding its config and
//! the instances it depends on, and records for introspection whether it is ready or why not.
//! A plugin that holds something open registers a close hook ([`InitContext::on_close`]); the
//! daemon runs them in reverse initialisation order when it stops.

pub mod context;
pub mod errdefs;
pub mod registry;
pub mod types;

pub use context::{InitContext, Instance};
pub use errdefs::{Classify, ErrorKind};
pub use registry::{
    CloseError, CloseFailure, InitError, PluginRecord, PluginSet, PluginStatus, Registration,
    Registry,
};
