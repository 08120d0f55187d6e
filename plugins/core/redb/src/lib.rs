//! A redb database as Berth's stores hold one: shared behind `&self`, closed cleanly on
//! shutdown (so the next open needs no repair), and **reopened in place after an I/O error**.
//!
//! After one failed write (the disk was full while a transaction committed), redb refuses every
//! later transaction with `PreviousIo` until the database is closed and opened again. A store
//! that waited for a restart would stay wedged after the disk has room again; containerd's
//! recovers at once. [`Db::begin_read`] and [`Db::begin_write`] therefore reopen the file and
//! try once more — once per failure, whoever meets it first — and [`is_disk_full`] lets a store
//! report the failure itself as "out of space".

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use redb::ReadableDatabase;

mod lent;
pub use lent::{AfterCommit, JoinError, LendError, Returned};

/// Why a transaction could not begin.
#[derive(Debug)]
pub enum BeginError {
    Transaction(redb::TransactionError),
    /// Reopening after an I/O error failed (the disk may still be full); the next call tries
    /// again.
    Reopen(redb::DatabaseError),
}

/// The open file, and which opening of it this is.
struct Slot {
    /// `None` once closed, or while a reopen has not succeeded yet.
    db: Option<redb::Database>,
    /// Counts reopenings, so that callers that met the same failure reopen once, not each.
    generation: u64,
    /// Set by [`Db::close`]: no reopening after that.
    closed: bool,
}

pub struct Db {
    slot: RwLock<Slot>,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database at `path`.
    pub fn create(path: &Path) -> Result<Db, redb::DatabaseError> {
        let db = redb::Database::create(path)?;
        Ok(Db {
            slot: RwLock::new(Slot {
                db: Some(db),
                generation: 0,
                closed: false,
            }),
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn begin_read(&self) -> Result<redb::ReadTransaction, BeginError> {
        self.begin(redb::Database::begin_read)
    }

    pub fn begin_write(&self) -> Result<redb::WriteTransaction, BeginError> {
        self.begin(redb::Database::begin_write)
    }

    fn begin<T>(
        &self,
        begin: impl Fn(&redb::Database) -> Result<T, redb::TransactionError>,
    ) -> Result<T, BeginError> {
        let mut reopened = false;
        loop {
            let (result, generation) = {
                let slot = self.slot.read().unwrap_or_else(|p| p.into_inner());
                let result = match (&slot.db, slot.closed) {
                    (Some(db), _) => begin(db),
                    (None, true) => Err(redb::StorageError::DatabaseClosed.into()),
                    // An earlier reopen failed (the disk was still full): try again.
                    (None, false) => Err(redb::StorageError::PreviousIo.into()),
                };
                (result, slot.generation)
            };
            match result {
                Err(redb::TransactionError::Storage(redb::StorageError::PreviousIo))
                    if !reopened =>
                {
                    self.reopen(generation)?;
                    reopened = true;
                }
                other => return other.map_err(BeginError::Transaction),
            }
        }
    }

    /// Closes and reopens the file unless someone already did since `generation`.
    fn reopen(&self, generation: u64) -> Result<(), BeginError> {
        let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
        if slot.closed {
            return Err(BeginError::Transaction(
                redb::StorageError::DatabaseClosed.into(),
            ));
        }
        if slot.generation != generation {
            return Ok(());
        }
        if let Some(old) = slot.db.take() {
            // A write still running keeps the old file open (and locked) until it ends; the
            // open below then fails and a later call tries again.
            if let Err(e) = old.close() {
                tracing::warn!(path = %self.path.display(), error = %e, "closing a database after an I/O error");
            }
        }
        slot.generation += 1;
        let db = redb::Database::create(&self.path).map_err(BeginError::Reopen)?;
        tracing::warn!(path = %self.path.display(), "reopened the database after an I/O error");
        slot.db = Some(db);
        Ok(())
    }

    /// Closes the file as redb shuts down cleanly and releases its lock; every later call fails
    /// with `DatabaseClosed`, closing again does nothing. A write transaction still running keeps
    /// the file open until it ends (that is not an error).
    pub fn close(&self) -> Result<(), redb::DatabaseError> {
        let db = {
            let mut slot = self.slot.write().unwrap_or_else(|p| p.into_inner());
            slot.closed = true;
            slot.db.take()
        };
        match db.map(redb::Database::close) {
            None | Some(Ok(())) => Ok(()),
            Some(Err(redb::DatabaseError::TransactionInProgress)) => {
                tracing::info!(path = %self.path.display(), "database closes when its last write ends");
                Ok(())
            }
            Some(Err(e)) => Err(e),
        }
    }
}

/// Linux's errno for "no space left on device".
const ENOSPC: i32 = 28;
/// Linux's errno for "disk quota exceeded".
const EDQUOT: i32 = 122;

/// True when `e` is the disk (or the quota) being full: the write may succeed once there is room.
pub fn is_disk_full(e: &redb::StorageError) -> bool {
    matches!(e, redb::StorageError::Io(io) if io_is_disk_full(io))
}

/// The same for a plain I/O error (a store's own files).
pub fn io_is_disk_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

#[cfg(test)]
mod tests;
