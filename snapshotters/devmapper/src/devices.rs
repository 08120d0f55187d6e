//! The device records: one per thin device the driver made, with the state of its life cycle,
//! written (and fsynced) **before** each device-mapper step, so that after a crash at any point
//! the driver knows which step may have been half-done and repairs it at start
//! ([`crate::DevmapperSnapshotter::cleanup`]).
//!
//! They live in a redb file of their own, `<root>/devices.redb`, not in the snapshot metadata:
//! in berthd the snapshot records are written in the snapshots store's transaction, which it
//! lends to the driver and commits only after the driver returns (see `berth_redb::lent`), so a
//! state written there would not be durable before the step it announces, and the database takes
//! no second writer meanwhile. The snapshot records stay the truth of which snapshots exist; a
//! device whose snapshot has no record is an orphan and is deleted from the pool.

use std::path::{Path, PathBuf};

use berth_snapshotter::SnapshotError;
use redb::{ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const DEVICES: TableDefinition<&str, &[u8]> = TableDefinition::new("devices");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// Where a device is in its life. Each step writes the state it is about to enter; a crash
/// leaves the last state written, which says what may be half-done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// The thin id is reserved; `create_thin`/`create_snap` may or may not have happened.
    Creating,
    /// The thin device exists in the pool; no device-mapper device for it.
    Created,
    /// Being activated (a dm device made and its table loaded): may be half-made.
    Activating,
    /// Active: `/dev/mapper/<name>` exists.
    Activated,
    /// Being suspended (to take a snapshot of it).
    Suspending,
    /// Suspended: I/O on it waits until it is resumed.
    Suspended,
    /// Being resumed.
    Resuming,
    /// Being deactivated (the dm device removed).
    Deactivating,
    /// The thin device exists in the pool, inactive.
    Deactivated,
    /// Being deleted from the pool.
    Removing,
    /// A step failed and undoing it failed too: repaired at the next cleanup.
    Faulty,
}

impl State {
    /// States a crash (or a failed undo) leaves in the middle of a step.
    pub fn interrupted(self) -> bool {
        matches!(
            self,
            State::Creating
                | State::Activating
                | State::Suspending
                | State::Suspended
                | State::Resuming
                | State::Deactivating
                | State::Removing
                | State::Faulty
        )
    }
}

/// One thin device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// The device-mapper name (`<prefix>-snap-<id>`, `<prefix>-base`), also the record's key.
    pub name: String,
    /// Its id in the pool.
    pub thin_id: u64,
    pub sectors: u64,
    pub state: State,
    /// The snapshot it holds (its id in the snapshot metadata); `None` for the base device.
    pub snapshot_id: Option<String>,
    /// Activated read-only (a view).
    #[serde(default)]
    pub readonly: bool,
    /// The base device is formatted and ready to be snapshotted.
    #[serde(default)]
    pub formatted: bool,
    /// Which opening of the driver made it, so a cleanup while this one runs leaves alone the
    /// devices whose snapshot record its caller has not committed yet.
    pub generation: String,
}

pub struct DeviceStore {
    db: berth_redb::Db,
    path: PathBuf,
}

fn corrupt(key: &str, source: serde_json::Error) -> SnapshotError {
    SnapshotError::Corrupt {
        key: format!("device {key}"),
        source,
    }
}

impl DeviceStore {
    pub fn open(path: &Path) -> Result<DeviceStore, SnapshotError> {
        let db = berth_redb::Db::create(path).map_err(|source| match source {
            redb::DatabaseError::DatabaseAlreadyOpen => SnapshotError::AlreadyOpen {
                path: path.to_owned(),
                source,
            },
            source => SnapshotError::Open {
                path: path.to_owned(),
                source,
            },
        })?;
        let store = DeviceStore {
            db,
            path: path.to_owned(),
        };
        let wtx = store.db.begin_write()?;
        wtx.open_table(DEVICES)?;
        wtx.open_table(META)?;
        wtx.commit()?;
        Ok(store)
    }

    pub fn close(&self) -> Result<(), SnapshotError> {
        self.db.close().map_err(|source| SnapshotError::Close {
            path: self.path.clone(),
            source,
        })
    }

    pub fn get(&self, name: &str) -> Result<Option<Device>, SnapshotError> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(DEVICES)?;
        match t.get(name)? {
            Some(v) => Ok(Some(
                serde_json::from_slice(v.value()).map_err(|e| corrupt(name, e))?,
            )),
            None => Ok(None),
        }
    }

    pub fn all(&self) -> Result<Vec<Device>, SnapshotError> {
        let rtx = self.db.begin_read()?;
        let t = rtx.open_table(DEVICES)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.push(serde_json::from_slice(v.value()).map_err(|e| corrupt(k.value(), e))?);
        }
        Ok(out)
    }

    /// Writes `dev` (durably: the next step may depend on it).
    pub fn put(&self, dev: &Device) -> Result<(), SnapshotError> {
        let bytes = serde_json::to_vec(dev).map_err(SnapshotError::Encode)?;
        let wtx = self.db.begin_write()?;
        wtx.open_table(DEVICES)?
            .insert(dev.name.as_str(), bytes.as_slice())?;
        wtx.commit()?;
        Ok(())
    }

    /// Moves `dev` to `state` and records it.
    pub fn set(&self, dev: &mut Device, state: State) -> Result<(), SnapshotError> {
        dev.state = state;
        self.put(dev)
    }

    /// Reserves a thin id and records `dev` with it, in state `Creating`, in one commit.
    pub fn reserve(&self, dev: &mut Device) -> Result<(), SnapshotError> {
        let wtx = self.db.begin_write()?;
        {
            let mut meta = wtx.open_table(META)?;
            let next = meta.get("next_thin_id")?.map(|v| v.value()).unwrap_or(0);
            meta.insert("next_thin_id", next + 1)?;
            dev.thin_id = next;
            dev.state = State::Creating;
            let bytes = serde_json::to_vec(&*dev).map_err(SnapshotError::Encode)?;
            wtx.open_table(DEVICES)?
                .insert(dev.name.as_str(), bytes.as_slice())?;
        }
        wtx.commit()?;
        Ok(())
    }

    pub fn delete(&self, name: &str) -> Result<(), SnapshotError> {
        let wtx = self.db.begin_write()?;
        wtx.open_table(DEVICES)?.remove(name)?;
        wtx.commit()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_survive_a_reopen_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("devices.redb");
        let store = DeviceStore::open(&path).unwrap();
        let mut a = Device {
            name: "p-snap-1".into(),
            thin_id: 0,
            sectors: 2048,
            state: State::Creating,
            snapshot_id: Some("1".into()),
            readonly: false,
            formatted: false,
            generation: "g".into(),
        };
        store.reserve(&mut a).unwrap();
        let mut b = Device {
            name: "p-snap-2".into(),
            ..a.clone()
        };
        store.reserve(&mut b).unwrap();
        assert_eq!((a.thin_id, b.thin_id), (0, 1));
        store.set(&mut a, State::Activated).unwrap();
        store.delete("p-snap-2").unwrap();
        drop(store);
        let store = DeviceStore::open(&path).unwrap();
        assert_eq!(
            store.get("p-snap-1").unwrap().unwrap().state,
            State::Activated
        );
        assert_eq!(store.get("p-snap-2").unwrap(), None);
        let mut c = Device {
            name: "p-snap-3".into(),
            ..a.clone()
        };
        store.reserve(&mut c).unwrap();
        assert_eq!(c.thin_id, 2);
        assert_eq!(store.all().unwrap().len(), 2);
        assert!(State::Creating.interrupted() && !State::Deactivated.interrupted());
    }
}
