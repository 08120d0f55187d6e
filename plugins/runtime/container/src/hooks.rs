//! Running one OCI hook: its program with its arguments (the first is `argv[0]`) and only its
//! own environment, the container's state as JSON on stdin, within its timeout. Used by the shim
//! for the hooks that run in the runtime's namespaces (`prestart`, `createRuntime`, `poststart`,
//! `poststop`) and by the container process for those that run in the container's
//! (`createContainer` before `pivot_root`, `startContainer` right before the exec).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::Hook;

/// Runs `hook`, waiting for it synchronously (so a caller that reaps every child cannot take its
/// status meanwhile). The error says what failed, with the hook's stderr.
pub fn run(hook: &Hook, state: &[u8]) -> Result<(), String> {
    let path = hook.path();
    let fail = |reason: String| format!("hook {}: {reason}", path.display());
    let mut cmd = Command::new(path);
    if let Some((argv0, rest)) = hook.args().as_deref().and_then(<[String]>::split_first) {
        std::os::unix::process::CommandExt::arg0(&mut cmd, argv0);
        cmd.args(rest);
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

/// Runs each of `hooks` in order; the first failure stops them.
pub fn run_all(hooks: Option<&Vec<Hook>>, state: &[u8]) -> Result<(), String> {
    for h in hooks.into_iter().flatten() {
        run(h, state)?;
    }
    Ok(())
}
