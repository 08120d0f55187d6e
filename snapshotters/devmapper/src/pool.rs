//! The thin pool and the devices in it: each step of a device's life (create, snapshot,
//! activate, suspend/resume, deactivate, delete) is a device-mapper call preceded by the record
//! of the state it enters ([`crate::devices`]), so a crash between any two steps is repaired by
//! [`Pool::repair`].

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use berth_snapshotter::SnapshotError;
use nix::errno::Errno;

use crate::devices::{Device, DeviceStore, State};
use crate::dm::{self, Control, DmError, PoolStatus};
use crate::fault;

/// How often a device still busy (a mount going away, a udev probe) is asked again to go.
const BUSY_RETRIES: u32 = 20;

pub struct Pool {
    dm: Control,
    /// The pool's device-mapper name.
    pub name: String,
    /// `major:minor` of the pool, as thin targets name it.
    pool_dev: String,
    pub store: DeviceStore,
    /// This opening of the driver (see [`Device::generation`]).
    pub generation: String,
    discard: bool,
    /// Device steps run one at a time: a snapshot of a device must not race its deactivation.
    lock: Mutex<()>,
}

/// `/dev/mapper/<name>`.
pub fn node(name: &str) -> PathBuf {
    Path::new("/dev/mapper").join(name)
}

/// A device-mapper failure as the trait reports it: an I/O error on the device, the dm error
/// (with its errno) as the source. "No space" keeps its errno so it is classified as
/// ResourceExhausted.
pub fn dm_err<'a>(op: &'static str, device: &'a str) -> impl FnOnce(DmError) -> SnapshotError + 'a {
    move |e| {
        let source = match e.errno() {
            Some(Errno::ENOSPC) => io::Error::from_raw_os_error(Errno::ENOSPC as i32),
            _ => io::Error::other(e),
        };
        SnapshotError::Io {
            op,
            path: node(device),
            source,
        }
    }
}

fn is(e: &DmError, errno: Errno) -> bool {
    e.errno() == Some(errno)
}

impl Pool {
    /// Opens the pool `name`, which must exist and be a thin pool.
    pub fn open(
        dm: Control,
        name: &str,
        store: DeviceStore,
        generation: String,
        discard: bool,
    ) -> Result<Pool, SnapshotError> {
        let info = dm
            .info(name)
            .map_err(dm_err("look up the thin pool", name))?
            .ok_or_else(|| {
                SnapshotError::NotFound(format!(
                    "thin pool {name:?} (create it first, e.g. with snapshotters/devmapper/scripts/create-pool.sh)"
                ))
            })?;
        let status = dm
            .status(name)
            .map_err(dm_err("status of the thin pool", name))?;
        if PoolStatus::parse(&status).is_none() {
            return Err(SnapshotError::InvalidArgument(format!(
                "device-mapper device {name:?} is not a thin pool (status {status:?})"
            )));
        }
        Ok(Pool {
            dm,
            name: name.to_owned(),
            pool_dev: format!("{}:{}", info.major(), info.minor()),
            store,
            generation,
            discard,
            lock: Mutex::new(()),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn status(&self) -> Result<PoolStatus, SnapshotError> {
        let line = self
            .dm
            .status(&self.name)
            .map_err(dm_err("status of the thin pool", &self.name))?;
        PoolStatus::parse(&line).ok_or_else(|| SnapshotError::Io {
            op: "parse the status of the thin pool",
            path: node(&self.name),
            source: io::Error::other(format!("unexpected status {line:?}")),
        })
    }

    /// Fails with "no space" (ResourceExhausted) when the pool has no room left.
    pub fn check_room(&self) -> Result<(), SnapshotError> {
        let s = self.status()?;
        if s.mode == "Fail" {
            return Err(SnapshotError::Io {
                op: "the thin pool has failed (see the kernel log); cannot use",
                path: node(&self.name),
                source: io::Error::from_raw_os_error(Errno::EIO as i32),
            });
        }
        if s.is_full() {
            tracing::warn!(pool = %self.name, used = s.used_data, total = s.total_data, mode = %s.mode, "thin pool is full");
            return Err(SnapshotError::ResourceExhausted(format!(
                "the thin pool {} is out of space ({} of {} data blocks used, mode {}): extend it or remove snapshots",
                self.name, s.used_data, s.total_data, s.mode
            )));
        }
        Ok(())
    }

    /// Creates a thin device: a snapshot of `origin`, or an empty one of `sectors` without.
    /// The origin, if active, is suspended around the snapshot (so what it holds is flushed).
    pub fn create(
        &self,
        name: &str,
        origin: Option<&mut Device>,
        sectors: u64,
        snapshot_id: Option<String>,
        readonly: bool,
    ) -> Result<Device, SnapshotError> {
        dm::check_name(name).map_err(dm_err("name a device", name))?;
        let mut dev = Device {
            name: name.to_owned(),
            thin_id: 0,
            sectors,
            state: State::Creating,
            snapshot_id,
            readonly,
            formatted: false,
            generation: self.generation.clone(),
        };
        self.store.reserve(&mut dev)?;
        match self.create_reserved(&mut dev, origin) {
            Ok(()) => Ok(dev),
            Err(e) => {
                self.undo(dev);
                Err(e)
            }
        }
    }

    fn create_reserved(
        &self,
        dev: &mut Device,
        mut origin: Option<&mut Device>,
    ) -> Result<(), SnapshotError> {
        let mut suspended = false;
        if let Some(o) = origin.as_deref_mut() {
            let active = self
                .dm
                .info(&o.name)
                .map_err(dm_err("look up", &o.name))?
                .is_some_and(|i| i.has_table);
            if active {
                self.store.set(o, State::Suspending)?;
                self.dm
                    .suspend(&o.name)
                    .map_err(dm_err("suspend the origin", &o.name))?;
                self.store.set(o, State::Suspended)?;
                suspended = true;
            }
        }
        let mut tries = 0;
        let made = loop {
            let message = match origin.as_deref() {
                Some(o) => format!("create_snap {} {}", dev.thin_id, o.thin_id),
                None => format!("create_thin {}", dev.thin_id),
            };
            match self.dm.message(&self.name, &message) {
                Ok(()) => break Ok(()),
                // The id is taken in the pool (by another user of it): take the next one.
                Err(e) if is(&e, Errno::EEXIST) && tries < 1024 => {
                    tracing::info!(pool = %self.name, thin_id = dev.thin_id, "thin id already in use in the pool; trying the next one");
                    tries += 1;
                    self.store.reserve(dev)?;
                }
                Err(e) => break Err(dm_err("create a thin device in the pool for", &dev.name)(e)),
            }
        };
        fault::point(if origin.is_some() {
            "after-create-snap"
        } else {
            "after-create-thin"
        });
        if let (true, Some(o)) = (suspended, origin) {
            self.store.set(o, State::Resuming)?;
            self.dm
                .resume(&o.name)
                .map_err(dm_err("resume the origin", &o.name))?;
            self.store.set(o, State::Activated)?;
        }
        made?;
        tracing::debug!(pool = %self.name, device = %dev.name, thin_id = dev.thin_id, "created thin device");
        self.store.set(dev, State::Created)
    }

    /// Takes back a device whose creation failed; if even that fails, it is marked `Faulty`
    /// for the next cleanup.
    pub fn undo(&self, dev: Device) {
        let name = dev.name.clone();
        if let Err(e) = self.destroy(dev) {
            tracing::warn!(device = %name, error = %e, "cannot remove a device whose creation failed; cleanup will retry");
        }
    }

    /// Makes `/dev/mapper/<name>` live (idempotent: a device already active is left as it is,
    /// a suspended one resumed, a half-made one finished).
    pub fn activate(&self, dev: &mut Device) -> Result<(), SnapshotError> {
        let info = self
            .dm
            .info(&dev.name)
            .map_err(dm_err("look up", &dev.name))?;
        if let Some(i) = info.filter(|i| i.has_table && !i.suspended) {
            if dev.state != State::Activated {
                self.store.set(dev, State::Activated)?;
            }
            return self.ensure_node(&dev.name, i);
        }
        self.store.set(dev, State::Activating)?;
        if info.is_none() {
            self.dm
                .create(&dev.name)
                .map_err(dm_err("create device", &dev.name))?;
        }
        let table = format!("{} {}", self.pool_dev, dev.thin_id);
        let loaded = match info {
            Some(i) if i.has_table => Ok(()),
            _ => self
                .dm
                .load(&dev.name, dev.sectors, "thin", &table, dev.readonly)
                .map_err(dm_err("load the table of", &dev.name)),
        };
        let live = loaded.and_then(|()| {
            self.dm
                .resume(&dev.name)
                .map_err(dm_err("resume", &dev.name))
        });
        let i = match live {
            Ok(i) => i,
            Err(e) => {
                // Not left half-made: the next activation starts over.
                if let Err(undo) = self.dm.remove(&dev.name, false) {
                    tracing::warn!(device = %dev.name, error = %undo, "cannot remove a device whose activation failed");
                }
                self.store.set(dev, State::Deactivated)?;
                return Err(e);
            }
        };
        self.ensure_node(&dev.name, i)?;
        self.store.set(dev, State::Activated)
    }

    /// Creates `/dev/mapper/<name>` for the device (no udev makes it in a minimal system).
    fn ensure_node(&self, name: &str, info: dm::DevInfo) -> Result<(), SnapshotError> {
        let path = node(name);
        let want = nix::sys::stat::makedev(info.major(), info.minor());
        match fs::metadata(&path) {
            Ok(m) if m.file_type().is_block_device() && m.rdev() == want => return Ok(()),
            Ok(_) => {
                fs::remove_file(&path).map_err(SnapshotError::io("remove stale node", &path))?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // A dangling symlink (udev's, of an earlier device) is in the way too.
                let _ = fs::remove_file(&path);
            }
            Err(e) => return Err(SnapshotError::io("stat", &path)(e)),
        }
        match nix::sys::stat::mknod(
            &path,
            nix::sys::stat::SFlag::S_IFBLK,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            want,
        ) {
            // udev made it meanwhile.
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(e) => Err(SnapshotError::errno("mknod", &path)(e)),
        }
    }

    /// Removes the dm device of `dev` (the thin device stays in the pool). A device still in
    /// use is asked again for a while, then, with `deferred`, left to go when it is closed.
    pub fn deactivate(&self, dev: &mut Device, deferred: bool) -> Result<(), SnapshotError> {
        if self
            .dm
            .info(&dev.name)
            .map_err(dm_err("look up", &dev.name))?
            .is_none()
        {
            self.remove_node(&dev.name);
            if dev.state != State::Removing && dev.state != State::Deactivated {
                self.store.set(dev, State::Deactivated)?;
            }
            return Ok(());
        }
        let removing = dev.state == State::Removing;
        if !removing {
            self.store.set(dev, State::Deactivating)?;
        }
        self.remove_dm(&dev.name, deferred)?;
        self.remove_node(&dev.name);
        if !removing {
            self.store.set(dev, State::Deactivated)?;
        }
        Ok(())
    }

    fn remove_dm(&self, name: &str, deferred: bool) -> Result<(), SnapshotError> {
        let mut tries = 0;
        loop {
            match self.dm.remove(name, false) {
                Ok(()) => return Ok(()),
                Err(e) if is(&e, Errno::ENXIO) => return Ok(()),
                Err(e) if is(&e, Errno::EBUSY) && tries < BUSY_RETRIES => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if is(&e, Errno::EBUSY) && deferred => {
                    tracing::info!(device = %name, "device still open: removed once its last user closes it");
                    return self
                        .dm
                        .remove(name, true)
                        .map_err(dm_err("remove (deferred)", name));
                }
                Err(e) => return Err(dm_err("remove", name)(e)),
            }
        }
    }

    fn remove_node(&self, name: &str) {
        let path = node(name);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove device node")
            }
        }
    }

    /// Deletes `dev` from the pool: deactivated, deleted, its record dropped. A failure leaves
    /// it `Faulty` for the next cleanup.
    pub fn destroy(&self, mut dev: Device) -> Result<(), SnapshotError> {
        let out = self.destroy_steps(&mut dev);
        if out.is_err() {
            if let Err(e) = self.store.set(&mut dev, State::Faulty) {
                tracing::warn!(device = %dev.name, error = %e, "cannot record a device as faulty");
            }
        }
        out
    }

    fn destroy_steps(&self, dev: &mut Device) -> Result<(), SnapshotError> {
        self.store.set(dev, State::Removing)?;
        if self.discard {
            self.discard_blocks(dev);
        }
        self.deactivate(dev, false)?;
        fault::point("before-delete");
        match self
            .dm
            .message(&self.name, &format!("delete {}", dev.thin_id))
        {
            Ok(()) => {}
            // Never created (a crash right after its id was reserved), or already deleted.
            Err(e) if is(&e, Errno::ENODATA) => {}
            Err(e) => return Err(dm_err("delete from the pool", &dev.name)(e)),
        }
        tracing::debug!(pool = %self.name, device = %dev.name, thin_id = dev.thin_id, "deleted thin device");
        self.store.delete(&dev.name)
    }

    /// Discards every block of an active device (best effort), so a loop-backed pool's file
    /// gets the space back.
    fn discard_blocks(&self, dev: &Device) {
        let Ok(Some(_)) = self.dm.info(&dev.name) else {
            return;
        };
        let path = node(&dev.name);
        let f = match fs::OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discard: cannot open");
                return;
            }
        };
        let range: [u64; 2] = [0, dev.sectors * 512];
        // BLKDISCARD = _IO(0x12, 119).
        const BLKDISCARD: u64 = 0x1277;
        use std::os::fd::AsRawFd;
        // SAFETY: the fd is open for the duration of the call; BLKDISCARD reads two u64s
        // (start, length) from the pointer, which points to `range`.
        let rc = unsafe { nix::libc::ioctl(f.as_raw_fd(), BLKDISCARD as _, range.as_ptr()) };
        if rc < 0 {
            tracing::warn!(path = %path.display(), error = %Errno::last(), "discard failed");
        }
    }

    /// Bytes mapped by an active device (its share of the pool, including what it shares with
    /// its origin, as containerd reports it); `None` when it is not active.
    pub fn mapped_bytes(&self, dev: &Device) -> Result<Option<u64>, SnapshotError> {
        if self
            .dm
            .info(&dev.name)
            .map_err(dm_err("look up", &dev.name))?
            .is_none_or(|i| !i.has_table)
        {
            return Ok(None);
        }
        let line = self
            .dm
            .status(&dev.name)
            .map_err(dm_err("status of", &dev.name))?;
        let sectors = dm::thin_mapped_sectors(&line).ok_or_else(|| SnapshotError::Io {
            op: "parse the status of",
            path: node(&dev.name),
            source: io::Error::other(format!("unexpected thin status {line:?}")),
        })?;
        Ok(Some(sectors * 512))
    }

    /// Brings a device whose last recorded step may be half-done to a stable state: an
    /// interrupted creation or removal is finished by deleting the device; an origin left
    /// suspended is resumed; a half-made activation is undone. Returns the device if it is
    /// still there.
    pub fn repair(&self, mut dev: Device) -> Result<Option<Device>, SnapshotError> {
        match dev.state {
            State::Creating | State::Removing | State::Faulty => {
                tracing::info!(device = %dev.name, thin_id = dev.thin_id, state = ?dev.state, "removing a device whose creation or removal was interrupted");
                self.destroy(dev)?;
                Ok(None)
            }
            State::Suspending | State::Suspended | State::Resuming => {
                let info = self
                    .dm
                    .info(&dev.name)
                    .map_err(dm_err("look up", &dev.name))?;
                match info {
                    Some(i) if i.has_table => {
                        if i.suspended {
                            tracing::info!(device = %dev.name, "resuming a device left suspended");
                            self.dm
                                .resume(&dev.name)
                                .map_err(dm_err("resume", &dev.name))?;
                        }
                        self.store.set(&mut dev, State::Activated)?;
                    }
                    _ => self.store.set(&mut dev, State::Deactivated)?,
                }
                Ok(Some(dev))
            }
            State::Activating | State::Deactivating => {
                // Either way the device goes back to inactive; it is activated again when used.
                tracing::info!(device = %dev.name, state = ?dev.state, "finishing an interrupted (de)activation");
                self.remove_dm(&dev.name, true)?;
                self.remove_node(&dev.name);
                self.store.set(&mut dev, State::Deactivated)?;
                Ok(Some(dev))
            }
            State::Created | State::Activated | State::Deactivated => Ok(Some(dev)),
        }
    }

    /// Whether the dm device of `name` exists.
    pub fn is_active(&self, name: &str) -> Result<bool, SnapshotError> {
        Ok(self
            .dm
            .info(name)
            .map_err(dm_err("look up", name))?
            .is_some_and(|i| i.has_table))
    }
}
