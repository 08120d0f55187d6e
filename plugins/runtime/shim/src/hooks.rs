//! OCI hooks, run by the shim with the container's state on stdin: `prestart` and
//! `createRuntime` while the container is being made (its namespaces exist, before
//! `pivot_root`), `poststart` after Start, `poststop` after Delete. A failing hook before the
//! start fails Create; after it, it is logged (as runc does).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

fn run(hook: &Hook, state: &[u8]) -> Result<()> {
    let path = hook.path();
    let fail = |reason: String| Error::Hook {
        path: path.display().to_string(),
        reason,
    };
    let mut cmd = Command::new(path);
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
            cmd.args(rest);
        }
    }
    cmd.env_clear();
    for e in hook.env().iter().flatten() {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its state must not block us.
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    loop {
        // Waited for here, synchronously: the shim's reaper cannot run meanwhile (one thread),
        // so it never takes this child's status.
        match child.try_wait().map_err(|e| fail(e.to_string()))? {
            Some(status) if status.success() => return Ok(()),
            Some(status) => {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(fail(format!("{status}: {}", err.trim())));
            }
            None => {}
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail("timed out".into()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_all(hooks: Option<&Vec<Hook>>, state: &[u8]) -> Result<()> {
    for h in hooks.into_iter().flatten() {
        run(h, state)?;
    }
    Ok(())
}

pub fn run_create_runtime(spec: &Spec, bundle: &Path, id: &str, pid: i32) -> Result<()> {
    let Some(h) = spec.hooks() else { return Ok(()) };
    let state = state_json(spec, bundle, id, pid, "creating");
    run_all(h.prestart().as_ref(), &state)?;
    run_all(h.create_runtime().as_ref(), &state)
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
