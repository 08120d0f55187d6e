//! Invoking a shim binary: `start` (the shim daemonizes and prints the ttrpc address it serves)
//! and `delete` (clean up after a shim that is gone), with containerd's flags and environment so
//! that any shim v2 binary works (`containerd-shim-runc-v2`, Berth's own).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use prost::Message;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, Result};
use crate::proto::task::DeleteResponse;

/// How long a shim may take to start or clean up before berthd gives up on it.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything a shim invocation needs to know about its task and the daemon.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    pub binary: PathBuf,
    pub namespace: String,
    pub id: String,
    pub bundle: PathBuf,
    /// berthd's gRPC socket (`-address`).
    pub grpc_address: String,
    /// The events service shims forward to (`TTRPC_ADDRESS`).
    pub ttrpc_address: String,
    /// What the shim may run to publish events (`-publish-binary`): berthd itself.
    pub publish_binary: PathBuf,
    pub debug: bool,
}

impl ShimCommand {
    fn command(&self, args: &[&str], cwd: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.grpc_address)
            .arg("-publish-binary")
            .arg(&self.publish_binary)
            .args(args)
            .current_dir(cwd)
            // containerd caps Go shims at two threads; harmless for shims that are not Go.
            .env("GOMAXPROCS", "2")
            .env("TTRPC_ADDRESS", &self.ttrpc_address)
            .kill_on_drop(true);
        cmd
    }

    async fn run(
        &self,
        action: &'static str,
        mut cmd: Command,
        stdin: Option<Vec<u8>>,
    ) -> Result<Output> {
        let io = |what, source| Error::Io {
            action: what,
            path: self.binary.display().to_string(),
            source,
        };
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| io("run shim", e))?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(&bytes)
                .await
                .map_err(|e| io("write options to shim", e))?;
        }
        let output = tokio::time::timeout(INVOKE_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| Error::Timeout {
                method: action,
                after_ms: INVOKE_TIMEOUT.as_millis(),
            })?
            .map_err(|e| io("wait for shim", e))?;
        if !output.status.success() {
            let mut text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            let stderr = String::from_utf8_lossy(&output.stderr);
            if !stderr.trim().is_empty() {
                if !text.is_empty() {
                    text.push_str("; ");
                }
                text.push_str(stderr.trim());
            }
            return Err(Error::Binary {
                binary: self.binary.display().to_string(),
                action,
                output: text,
                status: exit_words(output.status),
            });
        }
        Ok(output)
    }

    /// Starts the shim for this task; returns the ttrpc address it serves. `options` (the task's
    /// or runtime's options) go to the shim's stdin, as containerd sends them.
    pub async fn start(&self, options: Option<&prost_types::Any>) -> Result<String> {
        let mut args = vec!["-id", self.id.as_str()];
        if self.debug {
            args.push("-debug");
        }
        args.push("start");
        let cmd = self.command(&args, &self.bundle);
        let output = self
            .run("start", cmd, options.map(Message::encode_to_vec))
            .await?;
        let address = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if address.is_empty() {
            return Err(Error::Binary {
                binary: self.binary.display().to_string(),
                action: "start",
                output: "printed no address".to_owned(),
                status: String::new(),
            });
        }
        Ok(address)
    }

    /// Runs `<shim> delete` for a task whose shim is gone: the shim binary removes what the
    /// runtime left (the container, its mounts) and reports the exit it knows of.
    pub async fn delete(&self) -> Result<DeleteResponse> {
        let bundle = self.bundle.display().to_string();
        let args = [
            "-id",
            self.id.as_str(),
            "-bundle",
            bundle.as_str(),
            "delete",
        ];
        // The bundle may be half gone; the shim finds it through `-bundle` either way.
        let cwd = if self.bundle.is_dir() {
            self.bundle.clone()
        } else {
            PathBuf::from("/")
        };
        let cmd = self.command(&args, &cwd);
        let output = self.run("delete", cmd, None).await?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !stderr.trim().is_empty() {
            tracing::warn!(id = %self.id, warnings = %stderr.trim(), "shim delete");
        }
        DeleteResponse::decode(output.stdout.as_slice()).map_err(|source| Error::Decode {
            what: "delete output",
            source,
        })
    }
}

/// How a process ended, in Go's words (what containerd's messages say): `: exit status 1`.
fn exit_words(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!(": exit status {code}"),
        (None, Some(sig)) => format!(": signal: {sig}"),
        _ => String::new(),
    }
}

/// The binary name containerd derives from a runtime name: `io.containerd.runc.v2` →
/// `containerd-shim-runc-v2`; `None` for a name with fewer than two dot-separated parts.
pub fn binary_name(runtime: &str) -> Option<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(format!(
        "containerd-shim-{}-{}",
        parts[parts.len() - 2],
        parts[parts.len() - 1]
    ))
}

/// Finds the shim binary for a runtime name as containerd does: an absolute path is used as it
/// is (it must exist); otherwise the derived binary name on `PATH`, then next to `self_exe`.
pub fn resolve_runtime_binary(runtime: &str, self_exe: Option<&Path>) -> Result<PathBuf> {
    if runtime.is_empty() {
        return Err(Error::InvalidRuntimeName(runtime.to_owned()));
    }
    let path = Path::new(runtime);
    if path.is_absolute() {
        return match std::fs::metadata(path) {
            Ok(_) => Ok(path.to_owned()),
            Err(e) => {
                let why = match e.kind() {
                    std::io::ErrorKind::NotFound => "no such file or directory".to_owned(),
                    _ => e.to_string(),
                };
                Err(Error::RuntimeNotFound(format!(
                    "invalid custom binary path: stat {runtime}: {why}"
                )))
            }
        };
    }
    let name = binary_name(runtime).ok_or_else(|| Error::InvalidRuntimeName(runtime.to_owned()))?;
    let search = std::env::var_os("PATH").unwrap_or_default();
    let beside = self_exe.and_then(Path::parent).map(Path::to_owned);
    std::env::split_paths(&search)
        .chain(beside)
        .map(|dir| dir.join(&name))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| {
            Error::RuntimeNotFound(format!(
                "runtime {runtime:?} binary not installed {name:?}: file does not exist"
            ))
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_names_follow_containerd() {
        assert_eq!(
            binary_name("io.containerd.runc.v2").as_deref(),
            Some("containerd-shim-runc-v2")
        );
        assert_eq!(
            binary_name("io.containerd.berth.v1").as_deref(),
            Some("containerd-shim-berth-v1")
        );
        assert_eq!(binary_name("runc"), None);
        assert_eq!(binary_name("a..b"), None);
    }

    #[test]
    fn resolution_finds_absolute_paths_and_rejects_missing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let shim = dir.path().join("containerd-shim-fake-v9");
        std::fs::write(&shim, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&shim, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        assert_eq!(
            resolve_runtime_binary(shim.to_str().unwrap(), None).unwrap(),
            shim
        );
        // Beside the daemon's own executable.
        let exe = dir.path().join("berthd");
        assert_eq!(
            resolve_runtime_binary("io.example.fake.v9", Some(&exe)).unwrap(),
            shim
        );
        let missing = resolve_runtime_binary("io.example.nothing.v9", Some(&exe)).unwrap_err();
        assert!(
            missing.to_string().contains("containerd-shim-nothing-v9"),
            "{missing}"
        );
        assert!(resolve_runtime_binary("/no/such/shim", None).is_err());
        assert!(matches!(
            resolve_runtime_binary("runc", None),
            Err(Error::InvalidRuntimeName(_))
        ));
    }
}
