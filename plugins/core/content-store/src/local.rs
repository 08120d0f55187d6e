//! The bytes: committed blobs and in-progress ingests on the local filesystem.
//!
//! An ingest is a directory `ingest/<sha256 of key>/` holding `key` (the namespaced ref, so a
//! listing can report it), `data` (whose mtime a closing writer sets to the time of its last
//! write), `startedat`, `total`, `expected` and, when it was opened under a lease, `lease`.
//! Its digest state is not persisted: on resume the data written so far is hashed again, which
//! costs one read of the partial file and keeps nothing on disk that could disagree with the data.
//!
//! A new ingest is built in `ingest/.tmp-*` and renamed into place, so an ingest directory is
//! never seen half made. Nothing removes a `.tmp-*` directory while the daemon runs (a writer may
//! be building it); a failed build removes its own, and [`LocalStore::open`] removes those a
//! crash left, before any writer exists.
//!
//! A commit checks size and digest, fsyncs the data, makes it read-only, renames it to
//! `blobs/sha256/<hex>`, fsyncs that directory and then removes the ingest directory, so after a
//! crash a blob is either whole and in place or not there at all. A crash between the rename and
//! the removal leaves an ingest with `key` but no `data`: start-up removes such invalid ingests,
//! and a writer that finds one builds a new ingest in its place (as containerd recreates them).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::ContentError;

const CHUNK: usize = 1 << 20;

/// Names under `ingest/` that are not ingests: directories being built or being removed.
const TEMP_PREFIX: &str = ".tmp-";

/// What a status request reports about an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The key the writer was opened with (`<namespace>/<ref>` for namespaced writes).
    pub key: String,
    pub offset: i64,
    pub total: i64,
    pub expected: String,
    pub started_at: i64,
    /// The time of the last write (of the start, before any), which containerd's clients check.
    pub updated_at: i64,
    /// The lease the ingest was last opened under. Such an ingest lives as long as a lease holds
    /// it (containerd gives it no expiry), so the collector removes it once no lease does.
    pub lease: Option<String>,
}

#[cfg(any(test, feature = "test-hooks"))]
type Hook = Arc<dyn Fn() + Send + Sync>;

pub struct LocalStore {
    root: PathBuf,
    locks: Mutex<HashMap<String, Instant>>,
    /// Committed blobs that open writers rely on, with how many do: a writer offered a blob
    /// already on disk commits by recording it, so the collector must leave the file there.
    pins: Mutex<HashMap<String, usize>>,
    /// Makes the names of temporary directories unique within this process.
    temp_seq: AtomicU64,
    /// What [`LocalStore::open`] removed from `ingest/` (see [`LocalStore::repaired_at_open`]).
    repaired: Vec<PathBuf>,
    /// Runs while a new ingest is half built (tests put a collection there).
    #[cfg(any(test, feature = "test-hooks"))]
    building_hook: Mutex<Option<Hook>>,
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn mtime_nanos(meta: &fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn fsync_dir(dir: &Path) -> Result<(), ContentError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ContentError::io(dir))
}

/// A number stored in an ingest file; a missing or garbled one counts as 0, as it did when the
/// ingest was made (these files only describe the data, they never decide what it is).
fn read_num(dir: &Path, name: &str) -> i64 {
    fs::read_to_string(dir.join(name))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

/// A directory being built under a temporary name; removed on drop unless it was put in place,
/// so a failed build leaves nothing behind.
struct Building {
    path: PathBuf,
    placed: bool,
}

impl Drop for Building {
    fn drop(&mut self) {
        if !self.placed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A writer's starting point: a resumed or a new ingest.
struct Opened {
    file: File,
    hasher: Sha256,
    offset: i64,
    total: i64,
    expected: String,
    started_at: i64,
    updated_at: i64,
}

impl LocalStore {
    /// Opens the store under `root`, first repairing what a crash may have left in `ingest/`
    /// (nothing else runs yet, so no writer can be caught half way).
    pub fn open(root: &Path) -> Result<LocalStore, ContentError> {
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(ContentError::io(&dir))?;
        }
        let mut store = LocalStore {
            root: root.to_owned(),
            locks: Mutex::new(HashMap::new()),
            pins: Mutex::new(HashMap::new()),
            temp_seq: AtomicU64::new(0),
            repaired: Vec::new(),
            #[cfg(any(test, feature = "test-hooks"))]
            building_hook: Mutex::new(None),
        };
        store.repaired = store.repair()?;
        Ok(store)
    }

    /// The entries of `ingest/` that opening the store removed as a crash left them (half-built
    /// or half-removed `.tmp-*` directories, ingests without `key` or `data`), so that an offline
    /// check (`berthd check`) can report what start-up repaired; the daemon only logs them.
    pub fn repaired_at_open(&self) -> &[PathBuf] {
        &self.repaired
    }

    /// Removes half-built or half-removed directories (`.tmp-*`) and invalid ingests: without
    /// `key` or without `data`, as a crash inside a commit (data already moved to `blobs/`) or
    /// inside a removal leaves them. Only at start-up: while the daemon runs a `.tmp-*` directory
    /// may be a writer's ingest under construction.
    fn repair(&self) -> Result<Vec<PathBuf>, ContentError> {
        let dir = self.root.join("ingest");
        let mut repaired = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ContentError::io(&dir))? {
            let entry = entry.map_err(ContentError::io(&dir))?;
            let path = entry.path();
            let temp = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX);
            if !temp && path.join("key").is_file() && path.join("data").is_file() {
                continue;
            }
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match removed {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed an ingest left invalid by a crash");
                    repaired.push(path);
                }
                // Start-up goes on: the entry is invisible (never listed) and a writer for its
                // ref builds a new ingest in its place.
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove an invalid ingest")
                }
            }
        }
        Ok(repaired)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a committed blob lives. `digest` must already be validated.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let (algo, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        self.root.join("blobs").join(algo).join(hex)
    }

    /// Size of a committed blob, if present.
    pub fn blob_size(&self, digest: &str) -> Result<Option<i64>, ContentError> {
        let path = self.blob_path(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len() as i64)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(ContentError::io(&path)(e)),
        }
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, ContentError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if is_not_found(&e) {
                ContentError::NotFound(digest.to_owned())
            } else {
                ContentError::io(&path)(e)
            }
        })
    }

    /// Every committed blob's digest (sha256 only: the only algorithm Berth writes).
    pub fn list_blobs(&self) -> Result<Vec<String>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ContentError::io(&dir))? {
            let entry = entry.map_err(ContentError::io(&dir))?;
            if let Some(name) = entry.file_name().to_str() {
                out.push(format!("sha256:{name}"));
            }
        }
        Ok(out)
    }

    pub fn delete_blob(&self, digest: &str) -> Result<(), ContentError> {
        let path = self.blob_path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ContentError::io(&path)(e)),
        }
    }

    /// Keeps the blob `digest` on disk while the pin lives: [`LocalStore::delete_unpinned`] (the
    /// collector's sweep) leaves it. Take it under the metadata store's mutation guard, after
    /// checking the blob is there: the sweep runs under the exclusive guard, so it has either
    /// finished (and the check saw its result) or not begun (and will see the pin).
    pub fn pin(self: &Arc<Self>, digest: &str) -> BlobPin {
        *self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_owned())
            .or_insert(0) += 1;
        BlobPin {
            store: self.clone(),
            digest: digest.to_owned(),
        }
    }

    /// The collector's removal of an unreferenced blob: deletes it unless an open writer pinned
    /// it, and returns the bytes freed (`None` when pinned, and so kept).
    pub fn delete_unpinned(&self, digest: &str) -> Result<Option<i64>, ContentError> {
        // Held across the removal so that no pin can be taken between the check and the unlink.
        let pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if pins.contains_key(digest) {
            return Ok(None);
        }
        let size = self.blob_size(digest)?.unwrap_or(0);
        self.delete_blob(digest)?;
        Ok(Some(size))
    }

    fn ingest_dir(&self, key: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(hex::encode(Sha256::digest(key.as_bytes())))
    }

    /// A fresh name under `ingest/` that no listing takes for an ingest.
    fn temp_path(&self) -> PathBuf {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("ingest")
            .join(format!("{TEMP_PREFIX}{}-{seq}", now_nanos()))
    }

    /// Takes an ingest directory out of sight with one rename, then removes it. A crash half way
    /// through leaves a `.tmp-*` directory for start-up to remove, never a damaged ingest. One
    /// already gone counts as removed.
    fn discard(&self, dir: &Path) -> Result<(), ContentError> {
        let trash = self.temp_path();
        match fs::rename(dir, &trash) {
            Ok(()) => {}
            Err(e) if is_not_found(&e) => return Ok(()),
            Err(e) => return Err(ContentError::io(dir)(e)),
        }
        fs::remove_dir_all(&trash).map_err(ContentError::io(&trash))
    }

    fn lock(self: &Arc<Self>, key: &str) -> Result<IngestLock, ContentError> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = locks.get(key) {
            return Err(ContentError::Locked {
                reference: key.to_owned(),
                held_for: since.elapsed(),
            });
        }
        locks.insert(key.to_owned(), Instant::now());
        Ok(IngestLock {
            store: self.clone(),
            key: key.to_owned(),
        })
    }

    pub fn is_locked(&self, key: &str) -> bool {
        self.locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    /// Sets the function a writer calls while its new ingest is half built.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn set_building_hook(&self, hook: impl Fn() + Send + Sync + 'static) {
        *self.building_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(hook));
    }

    #[cfg(any(test, feature = "test-hooks"))]
    fn run_building_hook(&self) {
        let hook = self
            .building_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook();
        }
    }

    /// Opens (or resumes) the ingest for `key`, under `lease` if given. Only one writer per key
    /// at a time: a second one gets `Locked`, as containerd answers ("ref … locked").
    pub fn writer(
        self: &Arc<Self>,
        key: &str,
        total: i64,
        expected: &str,
        lease: Option<&str>,
    ) -> Result<LocalWriter, ContentError> {
        let lock = self.lock(key)?;
        let dir = self.ingest_dir(key);
        let resumed = match self.resume(&dir, key, total, expected) {
            Ok(resumed) => resumed,
            Err(e) => {
                // Keeping an invalid ingest would fail every later write to this ref (containerd
                // recreates it too); its data, if any, cannot be trusted to resume from.
                tracing::info!(ingest = %dir.display(), error = %e, "invalid ingest, building a new one");
                None
            }
        };
        let opened = match resumed {
            Some(opened) => {
                set_lease(&dir, lease)?;
                opened
            }
            None => self.create(&dir, key, total, expected, lease)?,
        };
        let Opened {
            mut file,
            hasher,
            offset,
            total,
            expected,
            started_at,
            updated_at,
        } = opened;
        let data_path = dir.join("data");
        file.seek(SeekFrom::End(0))
            .map_err(ContentError::io(&data_path))?;
        Ok(LocalWriter {
            store: self.clone(),
            dir,
            key: key.to_owned(),
            file,
            hasher,
            offset,
            total,
            expected,
            started_at,
            updated_at,
            lease: lease.map(str::to_owned),
            finished: false,
            _lock: lock,
        })
    }

    /// The ingest in `dir`, rehashed; `None` when there is none, an error when it is invalid.
    fn resume(
        &self,
        dir: &Path,
        key: &str,
        total: i64,
        expected: &str,
    ) -> Result<Option<Opened>, ContentError> {
        let key_path = dir.join("key");
        let stored = match fs::read_to_string(&key_path) {
            Ok(stored) => stored,
            Err(e) if is_not_found(&e) && !dir.exists() => return Ok(None),
            Err(e) => return Err(ContentError::io(&key_path)(e)),
        };
        if stored != key {
            return Err(ContentError::FailedPrecondition(format!(
                "ingest directory {} belongs to {stored:?}, not {key:?}",
                dir.display()
            )));
        }
        let data_path = dir.join("data");
        let io = ContentError::io(&data_path);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut offset = 0i64;
        loop {
            let n = file.read(&mut buf).map_err(ContentError::io(&data_path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            offset += n as i64;
        }
        let meta = file.metadata().map_err(ContentError::io(&data_path))?;
        let stored_expected = fs::read_to_string(dir.join("expected")).unwrap_or_default();
        Ok(Some(Opened {
            file,
            hasher,
            offset,
            total: if total > 0 {
                total
            } else {
                read_num(dir, "total")
            },
            expected: if expected.is_empty() {
                stored_expected
            } else {
                expected.to_owned()
            },
            started_at: read_num(dir, "startedat"),
            // The last write's time: writers set the data's mtime to it when they close.
            updated_at: mtime_nanos(&meta),
        }))
    }

    /// Builds a new ingest under a temporary name and renames it into place (replacing an
    /// invalid one), so no one ever sees it half made.
    fn create(
        &self,
        dir: &Path,
        key: &str,
        total: i64,
        expected: &str,
        lease: Option<&str>,
    ) -> Result<Opened, ContentError> {
        let mut building = Building {
            path: self.temp_path(),
            placed: false,
        };
        let tmp = building.path.clone();
        let io = ContentError::io;
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        let started = now_nanos();
        fs::write(tmp.join("key"), key).map_err(io(&tmp))?;
        fs::write(tmp.join("startedat"), started.to_string()).map_err(io(&tmp))?;
        fs::write(tmp.join("total"), total.to_string()).map_err(io(&tmp))?;
        fs::write(tmp.join("expected"), expected).map_err(io(&tmp))?;
        set_lease(&tmp, lease)?;
        // Opened before the rename: the descriptor stays valid whatever happens to the path.
        let data_path = tmp.join("data");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&data_path)
            .map_err(io(&data_path))?;
        #[cfg(any(test, feature = "test-hooks"))]
        self.run_building_hook();
        // rename() replaces only an empty directory; an invalid ingest in the way goes first.
        if dir.exists() {
            self.discard(dir)?;
        }
        fs::rename(&tmp, dir).map_err(io(dir))?;
        building.placed = true;
        Ok(Opened {
            file,
            hasher: Sha256::new(),
            offset: 0,
            total,
            expected: expected.to_owned(),
            started_at: started,
            updated_at: started,
        })
    }

    /// Status of an ingest by key, whether or not a writer has it open.
    pub fn status(&self, key: &str) -> Result<IngestStatus, ContentError> {
        self.status_of_dir(&self.ingest_dir(key))?
            .filter(|s| s.key == key)
            .ok_or_else(|| ContentError::IngestNotFound(key.to_owned()))
    }

    fn status_of_dir(&self, dir: &Path) -> Result<Option<IngestStatus>, ContentError> {
        let Ok(key) = fs::read_to_string(dir.join("key")) else {
            return Ok(None);
        };
        let data = dir.join("data");
        let meta = match fs::metadata(&data) {
            Ok(m) => m,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(ContentError::io(&data)(e)),
        };
        Ok(Some(IngestStatus {
            key,
            offset: meta.len() as i64,
            total: read_num(dir, "total"),
            expected: fs::read_to_string(dir.join("expected")).unwrap_or_default(),
            started_at: read_num(dir, "startedat"),
            updated_at: mtime_nanos(&meta),
            lease: fs::read_to_string(dir.join("lease")).ok(),
        }))
    }

    /// Every ingest, including ones left by a previous daemon.
    pub fn list_ingests(&self) -> Result<Vec<IngestStatus>, ContentError> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ContentError::io(&dir))? {
            let entry = entry.map_err(ContentError::io(&dir))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                continue;
            }
            if let Some(s) = self.status_of_dir(&path)? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes an ingest, even while a writer holds its key, as containerd does: a client whose
    /// write failed half way must be able to clean up. That writer goes on writing into the
    /// removed data, its commit fails, and the key stays locked until it closes.
    pub fn abort(&self, key: &str) -> Result<(), ContentError> {
        let dir = self.ingest_dir(key);
        let key_path = dir.join("key");
        match fs::read_to_string(&key_path) {
            Ok(stored) if stored != key => {
                return Err(ContentError::IngestNotFound(key.to_owned()))
            }
            Ok(_) => {}
            // The key's own directory, invalid (a crash inside a commit): remove it too.
            Err(e) if is_not_found(&e) && dir.exists() => {}
            Err(e) if is_not_found(&e) => return Err(ContentError::IngestNotFound(key.to_owned())),
            Err(e) => return Err(ContentError::io(&key_path)(e)),
        }
        self.discard(&dir)
    }

    /// The collector's removal: removes the ingest `seen` describes unless a writer holds it or
    /// it changed since it was read (a writer used it in between). Returns whether it went.
    pub fn remove_idle(self: &Arc<Self>, seen: &IngestStatus) -> Result<bool, ContentError> {
        let _lock = match self.lock(&seen.key) {
            Ok(lock) => lock,
            Err(ContentError::Locked { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        let dir = self.ingest_dir(&seen.key);
        if self.status_of_dir(&dir)?.as_ref() != Some(seen) {
            return Ok(false);
        }
        self.discard(&dir)?;
        Ok(true)
    }
}

/// Records the lease an ingest is opened under; without one the record goes, and the ingest is
/// kept until it goes stale (containerd gives an ingest opened without a lease an expiry).
fn set_lease(dir: &Path, lease: Option<&str>) -> Result<(), ContentError> {
    let path = dir.join("lease");
    match lease {
        Some(lease) => fs::write(&path, lease).map_err(ContentError::io(&path)),
        None => match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(ContentError::io(&path)(e)),
        },
    }
}

struct IngestLock {
    store: Arc<LocalStore>,
    key: String,
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        self.store
            .locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Keeps a committed blob on disk; see [`LocalStore::pin`].
pub struct BlobPin {
    store: Arc<LocalStore>,
    digest: String,
}

impl Drop for BlobPin {
    fn drop(&mut self) {
        let mut pins = self.store.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.digest) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.digest);
            }
        }
    }
}

/// An open ingest; dropping it without committing leaves the data for a later resume.
pub struct LocalWriter {
    store: Arc<LocalStore>,
    dir: PathBuf,
    key: String,
    file: File,
    hasher: Sha256,
    offset: i64,
    total: i64,
    expected: String,
    started_at: i64,
    updated_at: i64,
    lease: Option<String>,
    /// Committed: the data file is a blob now, its times are not the ingest's.
    finished: bool,
    _lock: IngestLock,
}

impl LocalWriter {
    pub fn status(&self) -> IngestStatus {
        IngestStatus {
            key: self.key.clone(),
            offset: self.offset,
            total: self.total,
            expected: self.expected.clone(),
            started_at: self.started_at,
            updated_at: self.updated_at,
            lease: self.lease.clone(),
        }
    }

    /// The digest of the data written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hasher.clone().finalize()))
    }

    pub fn set_total(&mut self, total: i64) {
        if total > 0 && total != self.total {
            self.total = total;
            let _ = fs::write(self.dir.join("total"), total.to_string());
        }
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), ContentError> {
        let path = self.dir.join("data");
        self.file.write_all(data).map_err(ContentError::io(&path))?;
        self.hasher.update(data);
        self.offset += data.len() as i64;
        self.updated_at = now_nanos();
        Ok(())
    }

    /// Starts the ingest over (a write at offset 0 after data was written, as containerd does).
    pub fn reset(&mut self) -> Result<(), ContentError> {
        let path = self.dir.join("data");
        self.file.set_len(0).map_err(ContentError::io(&path))?;
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(ContentError::io(&path))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Verifies and moves the data into `blobs/`. Returns the digest and whether the blob was
    /// already on disk (another namespace or an earlier commit), in which case the ingest's copy
    /// is simply dropped.
    pub fn commit(mut self, size: i64, expected: &str) -> Result<(String, bool), ContentError> {
        let data = self.dir.join("data");
        if size > 0 && size != self.offset {
            return Err(ContentError::SizeMismatch {
                actual: self.offset,
                expected: size,
            });
        }
        let digest = self.digest();
        let expected = if expected.is_empty() {
            self.expected.as_str()
        } else {
            expected
        };
        if !expected.is_empty() && expected != digest {
            return Err(ContentError::DigestMismatch {
                actual: digest,
                expected: expected.to_owned(),
            });
        }
        self.file.sync_all().map_err(ContentError::io(&data))?;
        let target = self.store.blob_path(&digest);
        let existed = target.exists();
        if !existed {
            // Gone: someone aborted the ingest while this writer had it open.
            let aborted = |e: std::io::Error| {
                if is_not_found(&e) {
                    ContentError::IngestAborted(self.key.clone())
                } else {
                    ContentError::io(&data)(e)
                }
            };
            fs::set_permissions(&data, fs::Permissions::from_mode(0o444)).map_err(aborted)?;
            fs::rename(&data, &target).map_err(aborted)?;
            if let Some(parent) = target.parent() {
                fsync_dir(parent)?;
            }
        }
        self.finished = true;
        // The blob is durable before its ingest goes: a crash in between leaves an ingest without
        // data, which start-up removes and a writer replaces. A failure to remove it is only
        // logged (as containerd does): the blob is in place, and what is left is either such an
        // invalid ingest or a `.tmp-*` directory, both repaired at start-up.
        if let Err(e) = self.store.discard(&self.dir) {
            tracing::warn!(ingest = %self.dir.display(), error = %e, "cannot remove a committed ingest");
        }
        Ok((digest, existed))
    }
}

impl Drop for LocalWriter {
    fn drop(&mut self) {
        if !self.finished {
            // The time of the last write outlives the writer as the data's mtime (one syscall on
            // the open descriptor), which a resume or a status reads back. The kernel's own mtime
            // is coarser and may fall before the write call began; after a crash it is all
            // there is.
            if let Some(t) = u64::try_from(self.updated_at)
                .ok()
                .map(|n| UNIX_EPOCH + Duration::from_nanos(n))
            {
                let _ = self.file.set_modified(t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(data)))
    }

    #[test]
    fn write_commit_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/a", 11, "", None).unwrap();
        w.write(b"hello ").unwrap();
        w.write(b"world").unwrap();
        let (d, existed) = w.commit(11, &sha(b"hello world")).unwrap();
        assert!(!existed);
        assert_eq!(d, sha(b"hello world"));
        assert_eq!(fs::read(s.blob_path(&d)).unwrap(), b"hello world");
        let mode = fs::metadata(s.blob_path(&d)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o444);
        assert!(s.list_ingests().unwrap().is_empty());
    }

    #[test]
    fn second_writer_is_locked_and_resume_rehashes() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/r", 0, "", None).unwrap();
        assert!(matches!(
            s.writer("ns/r", 0, "", None),
            Err(ContentError::Locked { .. })
        ));
        w.write(b"abc").unwrap();
        drop(w);
        let st = s.status("ns/r").unwrap();
        assert_eq!(st.offset, 3);
        let mut w = s.writer("ns/r", 0, "", None).unwrap();
        assert_eq!(w.status().offset, 3);
        w.write(b"def").unwrap();
        let (d, _) = w.commit(6, "").unwrap();
        assert_eq!(d, sha(b"abcdef"));
    }

    #[test]
    fn mismatches_commit_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/x", 0, "", None).unwrap();
        w.write(b"data").unwrap();
        assert!(matches!(
            w.commit(5, ""),
            Err(ContentError::SizeMismatch { .. })
        ));
        let w = s.writer("ns/x", 0, "", None).unwrap();
        let wrong = sha(b"other");
        assert!(matches!(
            w.commit(4, &wrong),
            Err(ContentError::DigestMismatch { .. })
        ));
        assert!(s.list_blobs().unwrap().is_empty());
        // The ingest is still there to retry or abort.
        assert_eq!(s.status("ns/x").unwrap().offset, 4);
        s.abort("ns/x").unwrap();
        assert!(matches!(
            s.status("ns/x"),
            Err(ContentError::IngestNotFound(_))
        ));
    }

    #[test]
    fn reset_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("k", 0, "", None).unwrap();
        w.write(b"garbage").unwrap();
        w.reset().unwrap();
        w.write(b"ok").unwrap();
        assert_eq!(w.commit(2, "").unwrap().0, sha(b"ok"));
    }
    /// The state a SIGKILL between a commit's rename into `blobs/` and its removal of the ingest
    /// leaves: `key` (and the rest) without `data`.
    fn crash_inside_a_commit(s: &Arc<LocalStore>, key: &str) -> PathBuf {
        let mut w = s.writer(key, 0, "", None).unwrap();
        w.write(b"partial").unwrap();
        drop(w);
        let dir = s.ingest_dir(key);
        fs::remove_file(dir.join("data")).unwrap();
        assert!(dir.join("key").exists());
        dir
    }

    #[test]
    fn an_ingest_left_without_data_is_rebuilt_by_the_next_writer() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        crash_inside_a_commit(&s, "ns/blocked");
        assert!(s.list_ingests().unwrap().is_empty(), "invalid: not listed");
        let mut w = s.writer("ns/blocked", 0, "", None).unwrap();
        assert_eq!(w.status().offset, 0);
        w.write(b"whole").unwrap();
        assert_eq!(w.commit(5, "").unwrap().0, sha(b"whole"));
        assert!(s.list_ingests().unwrap().is_empty());
    }

    #[test]
    fn start_up_removes_invalid_ingests_and_half_built_ones() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let invalid = crash_inside_a_commit(&s, "ns/blocked");
        let mut w = s.writer("ns/kept", 0, "", None).unwrap();
        w.write(b"resume me").unwrap();
        drop(w);
        let half_built = dir.path().join("ingest/.tmp-1-0");
        fs::create_dir(&half_built).unwrap();
        fs::write(half_built.join("key"), "ns/half").unwrap();
        let empty = dir.path().join("ingest/0123");
        fs::create_dir(&empty).unwrap();
        drop(s);
        let s = LocalStore::open(dir.path()).unwrap();
        assert!(!invalid.exists());
        assert!(!half_built.exists());
        assert!(!empty.exists());
        assert_eq!(s.status("ns/kept").unwrap().offset, 9, "valid ingests stay");
        let mut repaired = s.repaired_at_open().to_vec();
        repaired.sort();
        let mut want = vec![invalid, half_built, empty];
        want.sort();
        assert_eq!(repaired, want, "what open removed is reported");
    }

    #[test]
    fn abort_removes_an_ingest_a_writer_holds() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/held", 0, "", None).unwrap();
        w.write(b"half").unwrap();
        s.abort("ns/held").unwrap();
        assert!(matches!(
            s.status("ns/held"),
            Err(ContentError::IngestNotFound(_))
        ));
        assert!(matches!(
            s.abort("ns/held"),
            Err(ContentError::IngestNotFound(_))
        ));
        // The writer that had it cannot commit what is gone, and its ref is free once it closes.
        w.write(b" more").unwrap();
        assert!(matches!(
            w.commit(0, ""),
            Err(ContentError::IngestAborted(k)) if k == "ns/held"
        ));
        let w = s.writer("ns/held", 0, "", None).unwrap();
        assert_eq!(w.status().offset, 0);
        assert!(s.list_blobs().unwrap().is_empty());
        assert_eq!(
            fs::read_dir(dir.path().join("ingest")).unwrap().count(),
            1,
            "nothing left but the new ingest"
        );
    }

    #[test]
    fn updated_at_is_the_last_write_across_close_and_resume() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/t", 0, "", None).unwrap();
        let before = now_nanos();
        w.write(b"first").unwrap();
        let after = now_nanos();
        let written = w.status().updated_at;
        assert!((before..=after).contains(&written));
        drop(w);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(s.status("ns/t").unwrap().updated_at, written);
        let w = s.writer("ns/t", 0, "", None).unwrap();
        assert_eq!(w.status().updated_at, written, "not the time of the resume");
        assert_eq!(w.status().offset, 5);
    }

    #[test]
    fn the_collector_removes_only_idle_unchanged_ingests() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/c", 0, "", Some("lease-1")).unwrap();
        w.write(b"abc").unwrap();
        let seen = s.status("ns/c").unwrap();
        assert_eq!(seen.lease.as_deref(), Some("lease-1"));
        assert!(!s.remove_idle(&seen).unwrap(), "a writer holds it");
        drop(w);
        let seen = s.status("ns/c").unwrap();
        // Reopened without a lease since it was listed: changed, kept.
        drop(s.writer("ns/c", 0, "", None).unwrap());
        assert!(!s.remove_idle(&seen).unwrap());
        let seen = s.status("ns/c").unwrap();
        assert_eq!(seen.lease, None);
        assert!(s.remove_idle(&seen).unwrap());
        assert!(s.list_ingests().unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn pinned_blobs_survive_the_sweep() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/p", 0, "", None).unwrap();
        w.write(b"pinned").unwrap();
        let (d, _) = w.commit(0, "").unwrap();
        let pin = s.pin(&d);
        let again = s.pin(&d);
        assert_eq!(s.delete_unpinned(&d).unwrap(), None);
        drop(pin);
        assert_eq!(s.delete_unpinned(&d).unwrap(), None, "one pin left");
        drop(again);
        assert_eq!(s.delete_unpinned(&d).unwrap(), Some(6));
        assert_eq!(s.blob_size(&d).unwrap(), None);
    }
}
