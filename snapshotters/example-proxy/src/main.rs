//! `dir-snapshotter ROOT SOCKET`: the smallest complete snapshotter that runs in a process of its
//! own, as a proxy plugin of berthd or containerd (see docs/snapshotters.md).
//!
//! Every snapshot is a directory `ROOT/snapshots/<id>` holding a full copy of its parent, mounted
//! as a bind mount (read-only for a view). The driver writes only that copy: ids, kinds, parents,
//! labels and usage are kept by [`MetaStore`] (in `ROOT/metadata.redb`), and the crash-safe
//! making and removing of the directories is [`SnapshotDirs`]'s. The snapshots gRPC API, without
//! namespaces (the client keeps those), is `berth_snapshots_service::RawSnapshotsService`, the
//! server `berthd snapshotter serve` uses.
//!
//! Use it from berthd (or containerd) with
//!
//! ```toml
//! [proxy_plugins.dir]
//!   type = "snapshot"
//!   address = "/run/dir-snapshotter.sock"
//! ```
//!
//! and `--snapshotter dir`. It stops on SIGTERM or SIGINT, closing its metadata file.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::Arc;

use berth_snapshots_service::RawSnapshotsService;
use berth_snapshotter::dirs::SnapshotDirs;
use berth_snapshotter::metastore::Snapshot;
use berth_snapshotter::usage::disk_usage;
use berth_snapshotter::{Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, Usage};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

struct DirSnapshotter {
    ms: MetaStore,
    dirs: SnapshotDirs,
}

impl DirSnapshotter {
    fn open(root: &Path) -> Result<Self, SnapshotError> {
        Ok(DirSnapshotter {
            ms: MetaStore::open(&root.join("metadata.redb"))?,
            dirs: SnapshotDirs::open(root)?,
        })
    }

    fn mounts_for(&self, s: &Snapshot) -> Vec<Mount> {
        let mode = if s.kind == Kind::View { "ro" } else { "rw" };
        vec![Mount {
            mount_type: "bind".into(),
            source: self.dirs.path(&s.id).display().to_string(),
            target: String::new(),
            options: vec![mode.into(), "rbind".into()],
        }]
    }
}

/// The driver's own filesystem work: `to` becomes a full copy of `from`, with owners, modes,
/// times, xattrs and hardlinks (`cp -a`). A real driver puts its storage here.
fn copy(from: &Path, to: &Path) -> Result<(), SnapshotError> {
    let out = Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from.join("."))
        .arg(to)
        .output()
        .map_err(SnapshotError::io("run cp -a from", from))?;
    if !out.status.success() {
        return Err(SnapshotError::Io {
            op: "cp -a from",
            path: from.to_owned(),
            source: std::io::Error::other(String::from_utf8_lossy(&out.stderr).into_owned()),
        });
    }
    Ok(())
}

impl Snapshotter for DirSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.write(|tx| tx.update_info(info, paths))
    }

    /// Measured for an active snapshot; what commit stored for the others.
    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind() == Kind::Active {
            return disk_usage(&self.dirs.path(&id));
        }
        Ok(usage)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        Ok(self.mounts_for(&self.ms.get_snapshot(key)?))
    }

    /// Prepare and View (the trait's `prepare` and `view` call this): the record and the
    /// directory are made together by [`SnapshotDirs::create`], which calls the closure inside
    /// the metadata transaction, so a failed copy leaves neither. [`MetaStore`] refuses
    /// `Kind::Committed` (InvalidArgument): only `commit` makes one.
    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let s = self
            .dirs
            .create(&self.ms, kind, key, parent, labels, |s, dir| {
                match s.parent_ids.first() {
                    Some(parent_id) => copy(&self.dirs.path(parent_id), dir),
                    None => Ok(()),
                }
            })?;
        Ok(self.mounts_for(&s))
    }

    /// The directory stays where it is: committing only changes the record (the active key
    /// becomes the committed name, with the usage measured now).
    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let (id, _, _) = self.ms.get_info(key)?;
        let usage = disk_usage(&self.dirs.path(&id))?;
        self.ms
            .write(|tx| tx.commit_active(key, name, usage, labels))?;
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        self.dirs.remove(&self.ms, key)
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }

    /// Removes the directories a crash left without a record.
    fn cleanup(&self) -> Result<(), SnapshotError> {
        self.dirs.cleanup(&self.ms)
    }

    fn close(&self) -> Result<(), SnapshotError> {
        self.ms.close()
    }
}

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [root, socket] = args.as_slice() else {
        eprintln!("usage: dir-snapshotter ROOT SOCKET");
        return ExitCode::from(2);
    };
    let served = tokio::runtime::Runtime::new()
        .map_err(Box::<dyn Error>::from)
        .and_then(|rt| rt.block_on(serve(root, socket)));
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dir-snapshotter: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(root: &Path, socket: &Path) -> Result<(), Box<dyn Error>> {
    let driver = Arc::new(DirSnapshotter::open(root)?);
    // What a crash left behind goes before the first request.
    driver.cleanup()?;
    let listener = bind(socket).map_err(|e| format!("listen on {}: {e}", socket.display()))?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stopped = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    let served = tonic::transport::Server::builder()
        .add_service(RawSnapshotsService::server(driver.clone()))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stopped)
        .await;
    let _ = std::fs::remove_file(socket);
    driver.close()?;
    Ok(served?)
}

/// Listens on `socket`, replacing a socket file nobody listens on any more (left by a crash).
fn bind(socket: &Path) -> std::io::Result<UnixListener> {
    if socket.exists() && std::os::unix::net::UnixStream::connect(socket).is_err() {
        std::fs::remove_file(socket)?;
    }
    UnixListener::bind(socket)
}
