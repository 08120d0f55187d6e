//! The device-mapper thin-pool snapshotter, registered as `io.containerd.snapshotter.v1.devmapper`.
//!
//! Every snapshot is a thin device in a thin pool the operator made beforehand (`pool_name`;
//! `scripts/create-pool.sh DIR POOL` makes a loop-backed one to try it out). A **base device**
//! of `base_image_size` is created once and formatted (`mkfs.ext4` or `mkfs.xfs`); a snapshot
//! without parent is a thin snapshot of it, a snapshot on a parent a thin snapshot of the
//! parent's device (copy-on-write at the pool's block size: no file is copied). Active
//! snapshots and views are active devices, `/dev/mapper/<prefix>-snap-<id>`, and their mounts
//! are that device with its file system type (`ro` for a view, which is also read-only at the
//! device level); committing deactivates the device, which then only serves as an origin.
//! Remove deactivates the device and sends the pool `delete <thin id>`.
//!
//! Device-mapper is driven through its ioctls on `/dev/mapper/control` ([`dm`]), never by
//! running `dmsetup`. Each device's life is a state machine recorded before every step
//! ([`devices`], [`pool`]): at start, and on Cleanup, a creation or removal a crash interrupted
//! is finished by deleting the device, an origin left suspended is resumed, and a device whose
//! snapshot has no record (its transaction never committed) is deleted, so the pool and the
//! metadata agree. `BERTH_DEVMAPPER_FAULT` aborts the process at a chosen step for the crash
//! tests ([`fault`]).
//!
//! A full pool makes Prepare and View fail with "no space" (ResourceExhausted), and the driver
//! goes on serving. The plugin is skipped, with the reason, when no pool is configured or the
//! kernel has no device-mapper.

pub mod config;
pub mod devices;
pub mod dm;
pub mod fault;
pub mod pool;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use berth_plugin::{types, InitError, Instance, Registration};
use berth_snapshotter::{Info, Kind, MetaStore, Mount, SnapshotError, Snapshotter, Usage};

pub use config::{Config, FsType, Settings};
use devices::{Device, DeviceStore, State};
use pool::{node, Pool};

/// The plugin id (`io.containerd.snapshotter.v1.devmapper`).
pub const PLUGIN_ID: &str = "devmapper";

/// Why a base device could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{program} {}: {source}", device.display())]
    Spawn {
        program: &'static str,
        device: PathBuf,
        source: io::Error,
    },
    #[error("{program} {}: {status}: {stderr}", device.display())]
    Failed {
        program: &'static str,
        device: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

pub struct DevmapperSnapshotter {
    ms: MetaStore,
    pool: Arc<Pool>,
    settings: Settings,
    /// `<root>/tmp`: mount points of the driver's own (formatting the base device). Whatever is
    /// there at cleanup was left by a crash.
    scratch: PathBuf,
    /// Background removals (`async_remove`), joined by close.
    removals: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Checks that this kernel has device-mapper and that Berth may use it.
pub fn device_mapper_available() -> Result<dm::Control, dm::DmError> {
    let c = dm::Control::open()?;
    c.version()?;
    Ok(c)
}

fn new_generation() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", std::process::id())
}

impl DevmapperSnapshotter {
    /// A driver alone on `root`, with its snapshot metadata in `<root>/metadata.redb`.
    pub fn new(root: &Path, settings: Settings) -> Result<Self, SnapshotError> {
        let ms = MetaStore::open(&root.join("metadata.redb"))?;
        Self::with_metastore(root, ms, settings)
    }

    /// A driver whose snapshot metadata is `ms` and whose own files are under `root`: opens the
    /// pool, repairs what a crash left (see [`Snapshotter::cleanup`]) and makes the base device
    /// ready.
    pub fn with_metastore(
        root: &Path,
        ms: MetaStore,
        settings: Settings,
    ) -> Result<Self, SnapshotError> {
        fs::create_dir_all(root).map_err(SnapshotError::io("create", root))?;
        fs::set_permissions(root, fs::Permissions::from_mode(0o700))
            .map_err(SnapshotError::io("chmod", root))?;
        let scratch = root.join("tmp");
        fs::create_dir_all(&scratch).map_err(SnapshotError::io("create", &scratch))?;
        let control = dm::Control::open().map_err(pool::dm_err("open", "control"))?;
        let store = DeviceStore::open(&root.join("devices.redb"))?;
        let pool = Pool::open(
            control,
            &settings.pool_name,
            store,
            new_generation(),
            settings.discard_blocks,
        )?;
        let sn = DevmapperSnapshotter {
            ms,
            pool: Arc::new(pool),
            settings,
            scratch,
            removals: Mutex::new(Vec::new()),
        };
        sn.cleanup()?;
        {
            let _g = sn.pool.lock();
            sn.base()?;
        }
        Ok(sn)
    }

    fn dev_name(&self, snapshot_id: &str) -> String {
        format!("{}-snap-{snapshot_id}", self.settings.device_prefix)
    }

    fn base_name(&self) -> String {
        format!("{}-base", self.settings.device_prefix)
    }

    /// The base device, formatted; made now if it is not (the pool lock held).
    fn base(&self) -> Result<Device, SnapshotError> {
        let name = self.base_name();
        if let Some(dev) = self.pool.store.get(&name)? {
            if dev.formatted && !dev.state.interrupted() {
                if dev.sectors != self.settings.base_size / 512 {
                    tracing::warn!(device = %name, "base_image_size changed; the existing base device keeps its size");
                }
                return Ok(dev);
            }
            // A base whose formatting never finished: start again.
            self.pool.destroy(dev)?;
        }
        self.pool.check_room()?;
        let mut dev = self
            .pool
            .create(&name, None, self.settings.base_size / 512, None, false)?;
        match self.format(&mut dev) {
            Ok(()) => Ok(dev),
            Err(e) => {
                self.pool.undo(dev);
                Err(e)
            }
        }
    }

    /// mkfs, then the root made as a new snapshot's should be: empty (no `lost+found`), 0755.
    fn format(&self, dev: &mut Device) -> Result<(), SnapshotError> {
        self.pool.activate(dev)?;
        let path = node(&dev.name);
        let fs_type = self.settings.fs_type;
        let (program, mut args): (&'static str, Vec<String>) = match fs_type {
            FsType::Ext4 => (
                "mkfs.ext4",
                vec![
                    "-q".into(),
                    "-F".into(),
                    "-E".into(),
                    "nodiscard,lazy_itable_init=0,lazy_journal_init=0".into(),
                ],
            ),
            FsType::Xfs => ("mkfs.xfs", vec!["-q".into(), "-f".into(), "-K".into()]),
        };
        args.extend(self.settings.fs_options.iter().cloned());
        tracing::info!(device = %dev.name, program, "formatting the base device");
        let out = Command::new(program)
            .args(&args)
            .arg(&path)
            .output()
            .map_err(|source| FormatError::Spawn {
                program,
                device: path.clone(),
                source,
            })
            .and_then(|out| {
                if out.status.success() {
                    Ok(out)
                } else {
                    Err(FormatError::Failed {
                        program,
                        device: path.clone(),
                        status: out.status,
                        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                    })
                }
            });
        if let Err(e) = out {
            return Err(SnapshotError::Io {
                op: "format the base device",
                path,
                source: io::Error::other(e),
            });
        }
        let target = self.scratch.join("base");
        fs::create_dir_all(&target).map_err(SnapshotError::io("create", &target))?;
        let m = Mount {
            mount_type: fs_type.as_str().into(),
            source: path.display().to_string(),
            target: String::new(),
            options: self.fs_mount_options(false),
        };
        m.mount(&target)?;
        let tidy = (|| {
            let lost = target.join("lost+found");
            if lost.exists() {
                fs::remove_dir(&lost).map_err(SnapshotError::io("remove", &lost))?;
            }
            fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
                .map_err(SnapshotError::io("chmod", &target))
        })();
        let unmounted = berth_mount::unmount_all(&target).map_err(SnapshotError::from);
        let _ = fs::remove_dir(&target);
        tidy?;
        unmounted?;
        self.pool.deactivate(dev, false)?;
        dev.formatted = true;
        self.pool.store.set(dev, State::Deactivated)
    }

    fn fs_mount_options(&self, readonly: bool) -> Vec<String> {
        let mut o = Vec::new();
        if readonly {
            o.push("ro".to_owned());
        }
        if self.settings.fs_type == FsType::Xfs {
            // Every snapshot has its origin's file system UUID.
            o.push("nouuid".to_owned());
        }
        o
    }

    fn mounts_of(&self, dev: &Device) -> Vec<Mount> {
        vec![Mount {
            mount_type: self.settings.fs_type.as_str().into(),
            source: node(&dev.name).display().to_string(),
            target: String::new(),
            options: self.fs_mount_options(dev.readonly),
        }]
    }

    /// The device of snapshot `id`, active (activated again if it is not: after a commit that
    /// its transaction then aborted, or a restart).
    fn active_device(&self, id: &str) -> Result<Device, SnapshotError> {
        let name = self.dev_name(id);
        let mut dev =
            self.pool.store.get(&name)?.ok_or_else(|| {
                SnapshotError::NotFound(format!("device {name} of snapshot {id}"))
            })?;
        self.pool.activate(&mut dev)?;
        Ok(dev)
    }

    fn remove_device(pool: &Pool, name: &str) {
        let _g = pool.lock();
        match pool.store.get(name) {
            Ok(Some(dev)) => {
                if let Err(e) = pool.destroy(dev) {
                    tracing::warn!(device = %name, error = %e, "cannot remove the device of a removed snapshot; cleanup will retry");
                }
            }
            Ok(None) => {
                tracing::warn!(device = %name, "removed snapshot had no device record")
            }
            Err(e) => tracing::warn!(device = %name, error = %e, "cannot read device record"),
        }
    }

    /// Removes every file left in the scratch directory (unmounting first what is mounted).
    fn clean_scratch(&self) -> Result<(), SnapshotError> {
        let entries =
            fs::read_dir(&self.scratch).map_err(SnapshotError::io("read dir", &self.scratch))?;
        for entry in entries {
            let entry = entry.map_err(SnapshotError::io("read dir", &self.scratch))?;
            let path = entry.path();
            if let Err(e) = berth_mount::unmount_all(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot unmount a leftover mount point");
                continue;
            }
            tracing::info!(path = %path.display(), "removing a leftover of an interrupted operation");
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(SnapshotError::io("remove", &path))?;
        }
        Ok(())
    }

    /// The pool this driver uses and its state (for tests and introspection).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The device records (for tests and introspection).
    pub fn devices(&self) -> Result<Vec<Device>, SnapshotError> {
        self.pool.store.all()
    }
}

impl Snapshotter for DevmapperSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        Ok(self.ms.get_info(key)?.1)
    }

    fn update(&self, info: &Info, paths: &[String]) -> Result<Info, SnapshotError> {
        self.ms.write(|tx| tx.update_info(info, paths))
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        let (id, info, usage) = self.ms.get_info(key)?;
        if info.kind() != Kind::Active {
            return Ok(usage);
        }
        let _g = self.pool.lock();
        let dev = self.active_device(&id)?;
        let size = self.pool.mapped_bytes(&dev)?.unwrap_or(0);
        Ok(Usage {
            size: i64::try_from(size).unwrap_or(i64::MAX),
            inodes: 0,
        })
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        let s = self.ms.get_snapshot(key)?;
        let _g = self.pool.lock();
        let dev = self.active_device(&s.id)?;
        Ok(self.mounts_of(&dev))
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        let made = std::cell::RefCell::new(None::<Device>);
        let out = self.ms.write(|tx| {
            let s = tx.create_snapshot(kind, key, parent, labels)?;
            let _g = self.pool.lock();
            self.pool.check_room()?;
            let name = self.dev_name(&s.id);
            // The id is new in this transaction: a device of that name was made for a
            // transaction that then aborted, and nothing refers to it.
            if let Some(stale) = self.pool.store.get(&name)? {
                tracing::info!(device = %name, "replacing the device of an aborted snapshot");
                self.pool.destroy(stale)?;
            }
            let mut origin = match s.parent_ids.first() {
                Some(pid) => {
                    let pname = self.dev_name(pid);
                    self.pool.store.get(&pname)?.ok_or_else(|| {
                        SnapshotError::NotFound(format!("device {pname} of parent {parent:?}"))
                    })?
                }
                None => self.base()?,
            };
            let sectors = origin.sectors;
            let mut dev = self.pool.create(
                &name,
                Some(&mut origin),
                sectors,
                Some(s.id.clone()),
                kind == Kind::View,
            )?;
            if let Err(e) = self.pool.activate(&mut dev) {
                self.pool.undo(dev);
                return Err(e);
            }
            fault::point("after-activate");
            let mounts = self.mounts_of(&dev);
            *made.borrow_mut() = Some(dev);
            Ok(mounts)
        });
        if out.is_err() {
            // The record did not commit: the device must not stay (when the transaction is
            // lent, an abort after this returns is repaired when the id comes again, or at
            // the next start).
            if let Some(dev) = made.take() {
                let _g = self.pool.lock();
                self.pool.undo(dev);
            }
        }
        out
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let (id, info, _) = self.ms.get_info(key)?;
        if info.kind() != Kind::Active {
            return Err(SnapshotError::FailedPrecondition(format!(
                "snapshot {key:?} is not active"
            )));
        }
        let usage = {
            let _g = self.pool.lock();
            let dev = self.active_device(&id)?;
            Usage {
                size: i64::try_from(self.pool.mapped_bytes(&dev)?.unwrap_or(0)).unwrap_or(i64::MAX),
                inodes: 0,
            }
        };
        self.ms
            .write(|tx| tx.commit_active(key, name, usage, labels))?;
        // Committed: the device only serves as an origin from now on. One still mounted goes
        // when it is unmounted.
        let _g = self.pool.lock();
        if let Some(mut dev) = self.pool.store.get(&self.dev_name(&id))? {
            if let Err(e) = self.pool.deactivate(&mut dev, true) {
                tracing::warn!(device = %dev.name, error = %e, "cannot deactivate a committed snapshot's device");
            }
        }
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let (id, _) = self.ms.write(|tx| tx.remove(key))?;
        let name = self.dev_name(&id);
        if self.settings.async_remove {
            let pool = self.pool.clone();
            let handle = std::thread::Builder::new()
                .name("devmapper-remove".into())
                .spawn(move || Self::remove_device(&pool, &name))
                .map_err(SnapshotError::io(
                    "start a removal thread for",
                    Path::new("/dev/mapper"),
                ))?;
            let mut removals = self.removals.lock().unwrap_or_else(|p| p.into_inner());
            removals.retain(|h| !h.is_finished());
            removals.push(handle);
        } else {
            Self::remove_device(&self.pool, &name);
        }
        Ok(())
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        self.ms.walk(f)
    }

    /// Repairs what a crash or a failed step left: devices in the middle of a step are brought
    /// to a stable state (an interrupted creation or removal is finished by deleting the
    /// device), devices whose snapshot has no record (made by another opening of the driver)
    /// are deleted from the pool, and the scratch directory is emptied.
    fn cleanup(&self) -> Result<(), SnapshotError> {
        let _g = self.pool.lock();
        let live = self.ms.ids()?;
        let mut kept = std::collections::HashSet::new();
        for dev in self.pool.store.all()? {
            let Some(dev) = self.pool.repair(dev)? else {
                continue;
            };
            match &dev.snapshot_id {
                Some(id) if !live.contains_key(id) => {
                    if dev.generation == self.pool.generation {
                        // Its snapshot's transaction may not have committed yet.
                        continue;
                    }
                    tracing::info!(device = %dev.name, thin_id = dev.thin_id, "removing a device whose snapshot has no record");
                    self.pool.destroy(dev)?;
                }
                Some(id) => {
                    kept.insert(id.clone());
                }
                None => {}
            }
        }
        for (id, key) in &live {
            if !kept.contains(id) {
                tracing::error!(snapshot = %key, id = %id, "snapshot has no device: its data is lost; remove it");
            }
        }
        self.clean_scratch()
    }

    /// Waits for background removals, then closes the device records and the metadata.
    fn close(&self) -> Result<(), SnapshotError> {
        let handles = std::mem::take(&mut *self.removals.lock().unwrap_or_else(|p| p.into_inner()));
        for h in handles {
            let _ = h.join();
        }
        self.pool.store.close()?;
        self.ms.close()
    }
}

/// The `io.containerd.snapshotter.v1.devmapper` plugin.
pub fn registration() -> Registration {
    Registration::new(types::SNAPSHOTTER, PLUGIN_ID, &[types::METADATA], |ctx| {
        ctx.add_platform(berth_oci::platform::format(&berth_oci::host_platform()));
        let config: Config = ctx.config()?;
        let settings = config
            .settings()
            .map_err(|e| InitError::Config(e.to_string()))?
            .ok_or_else(|| {
                InitError::Skip(
                    "devmapper not configured: set pool_name in [plugins.\"io.containerd.snapshotter.v1.devmapper\"]".into(),
                )
            })?;
        if let Err(e) = device_mapper_available() {
            return Err(InitError::Skip(format!(
                "device-mapper is not available: {e}"
            )));
        }
        let root = settings
            .root_path
            .clone()
            .unwrap_or_else(|| ctx.root().to_owned());
        let ms = berth_snapshotter::open_metastore(ctx).map_err(InitError::failed)?;
        let sn =
            DevmapperSnapshotter::with_metastore(&root, ms, settings).map_err(InitError::failed)?;
        ctx.set_export("root", root.display().to_string());
        ctx.set_export("pool", sn.pool.name.clone());
        let sn = Arc::new(sn);
        let closing = sn.clone();
        ctx.on_close(move || closing.close());
        Ok(Arc::new(berth_snapshotter::SnapshotterInstance(sn)) as Instance)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_configured_is_a_skip_with_the_reason() {
        // The registration's first check, without a registry: no pool_name, no plugin.
        assert_eq!(Config::default().settings(), Ok(None));
    }

    #[test]
    fn without_device_mapper_the_check_fails_cleanly() {
        // On a kernel without device-mapper this is the skip reason; with it, the version.
        match device_mapper_available() {
            Ok(c) => assert_eq!(c.version().unwrap()[0], 4),
            Err(e) => assert!(
                e.to_string().contains("/dev/mapper/control") || e.errno().is_some(),
                "{e}"
            ),
        }
    }
}
