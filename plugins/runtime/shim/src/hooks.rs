//! The OCI hooks the shim runs, in the runtime's namespaces, with the container's state on
//! stdin: `prestart` and `createRuntime` while the container is being made (its namespaces
//! exist, before `pivot_root`), `poststart` after Start, `poststop` after Delete. A failing hook
//! before the start fails Create; after it, it is logged (as runc does). `createContainer` and
//! `startContainer` run inside the container (berth-container).

use std::path::Path;

use oci_spec::runtime::{Hook, Spec};

use crate::error::{Error, Result};

fn state_json(spec: &Spec, bundle: &Path, id: &str, pid: i32, status: &str) -> Vec<u8> {
    let annotations = spec.annotations().clone().unwrap_or_default();
    serde_json::to_vec(&serde_json::json!({
        "ociVersion": spec.version(),
        "id": id,
        "status": status,
        "pid": pid,
        "bundle": bundle.display().to_string(),
        "annotations": annotations,
    }))
    .unwrap_or_default()
}

fn run_all(hooks: Option<&Vec<Hook>>, state: &[u8]) -> Result<()> {
    berth_container::hooks::run_all(hooks, state).map_err(Error::Hook)
}

/// Runs `prestart` and `createRuntime`; returns the state the container's own hooks get.
pub fn run_create_runtime(spec: &Spec, bundle: &Path, id: &str, pid: i32) -> Result<Vec<u8>> {
    let state = state_json(spec, bundle, id, pid, "creating");
    if let Some(h) = spec.hooks() {
        run_all(h.prestart().as_ref(), &state)?;
        run_all(h.create_runtime().as_ref(), &state)?;
    }
    Ok(state)
}

pub fn run_poststart(spec: &Spec, bundle: &Path, id: &str, pid: i32) -> Result<()> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    run_all(
        h.poststart().as_ref(),
        &state_json(spec, bundle, id, pid, "running"),
    )
}

pub fn run_poststop(spec: &Spec, bundle: &Path, id: &str) -> Result<()> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    run_all(
        h.poststop().as_ref(),
        &state_json(spec, bundle, id, 0, "stopped"),
    )
}
