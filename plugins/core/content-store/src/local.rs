//! The bytes: committed blobs and in-progress ingests on the local filesystem.
//!
//! An ingest is a directory `ingest/<sha256 of key>/` holding `key` (the namespaced ref, so a
//! listing can report it), `data`, `startedat`, `total` and `expected`. Its digest state is not
//! persisted: on resume the data written so far is hashed again, which costs one read of the
//! partial file and keeps nothing on disk that could disagree with the data.
//!
//! A commit checks size and digest, fsyncs the data, makes it read-only, renames it to
//! `blobs/sha256/<hex>` and fsyncs that directory, so after a crash a blob is either whole and
//! in place or not there at all.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use sha2::{Digest as _, Sha256};

use crate::ContentError;

const CHUNK: usize = 1 << 20;

/// What a status request reports about an ingest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestStatus {
    /// The key the writer was opened with (`<namespace>/<ref>` for namespaced writes).
    pub key: String,
    pub offset: i64,
    pub total: i64,
    pub expected: String,
    pub started_at: i64,
    pub updated_at: i64,
}

pub struct LocalStore {
    root: PathBuf,
    locks: Mutex<HashMap<String, Instant>>,
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

impl LocalStore {
    pub fn open(root: &Path) -> Result<LocalStore, ContentError> {
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(ContentError::io(&dir))?;
        }
        Ok(LocalStore {
            root: root.to_owned(),
            locks: Mutex::new(HashMap::new()),
        })
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ContentError::io(&path)(e)),
        }
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, ContentError> {
        let path = self.blob_path(digest);
        File::open(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ContentError::io(&path)(e)),
        }
    }

    fn ingest_dir(&self, key: &str) -> PathBuf {
        self.root
            .join("ingest")
            .join(hex::encode(Sha256::digest(key.as_bytes())))
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

    /// Opens (or resumes) the ingest for `key`. Only one writer per key at a time: a second one
    /// gets `Locked`, as containerd answers ("ref … locked").
    pub fn writer(
        self: &Arc<Self>,
        key: &str,
        total: i64,
        expected: &str,
    ) -> Result<LocalWriter, ContentError> {
        let lock = self.lock(key)?;
        let dir = self.ingest_dir(key);
        let data_path = dir.join("data");
        let io = ContentError::io;
        let (file, hasher, offset, started_at, total, expected) = if dir.join("key").exists() {
            let stored = fs::read_to_string(dir.join("key")).map_err(io(&dir))?;
            if stored != key {
                return Err(ContentError::FailedPrecondition(format!(
                    "ingest directory {} belongs to {stored:?}, not {key:?}",
                    dir.display()
                )));
            }
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&data_path)
                .map_err(io(&data_path))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; CHUNK];
            let mut offset = 0i64;
            loop {
                let n = file.read(&mut buf).map_err(io(&data_path))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                offset += n as i64;
            }
            let read_num = |name: &str| -> i64 {
                fs::read_to_string(dir.join(name))
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0)
            };
            let stored_total = read_num("total");
            let stored_expected = fs::read_to_string(dir.join("expected")).unwrap_or_default();
            let total = if total > 0 { total } else { stored_total };
            let expected = if expected.is_empty() {
                stored_expected
            } else {
                expected.to_owned()
            };
            (file, hasher, offset, read_num("startedat"), total, expected)
        } else {
            // Build the ingest in a temporary directory and rename it into place, so a crash
            // never leaves a directory without its key file.
            let tmp = self.root.join("ingest").join(format!(
                ".tmp-{}",
                hex::encode(&Sha256::digest(format!("{key}{}", now_nanos()).as_bytes())[..8])
            ));
            fs::create_dir_all(&tmp).map_err(io(&tmp))?;
            let started = now_nanos();
            fs::write(tmp.join("key"), key).map_err(io(&tmp))?;
            fs::write(tmp.join("startedat"), started.to_string()).map_err(io(&tmp))?;
            fs::write(tmp.join("total"), total.to_string()).map_err(io(&tmp))?;
            fs::write(tmp.join("expected"), expected).map_err(io(&tmp))?;
            File::create(tmp.join("data")).map_err(io(&tmp))?;
            fs::rename(&tmp, &dir).map_err(io(&dir))?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&data_path)
                .map_err(io(&data_path))?;
            (file, Sha256::new(), 0, started, total, expected.to_owned())
        };
        use std::io::Seek;
        let mut file = file;
        file.seek(std::io::SeekFrom::End(0))
            .map_err(io(&data_path))?;
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
            updated_at: now_nanos(),
            _lock: lock,
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ContentError::io(&data)(e)),
        };
        let num = |name: &str| -> i64 {
            fs::read_to_string(dir.join(name))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0)
        };
        Ok(Some(IngestStatus {
            key,
            offset: meta.len() as i64,
            total: num("total"),
            expected: fs::read_to_string(dir.join("expected")).unwrap_or_default(),
            started_at: num("startedat"),
            updated_at: mtime_nanos(&meta),
        }))
    }

    /// Every ingest, including ones left by a previous daemon.
    pub fn list_ingests(&self) -> Result<Vec<IngestStatus>, ContentError> {
        let dir = self.root.join("ingest");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ContentError::io(&dir))? {
            let entry = entry.map_err(ContentError::io(&dir))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                continue;
            }
            if let Some(s) = self.status_of_dir(&path)? {
                out.push(s);
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// Removes an ingest. A writer still holding it keeps it (`Locked`).
    pub fn abort(self: &Arc<Self>, key: &str) -> Result<(), ContentError> {
        let _lock = self.lock(key)?;
        let dir = self.ingest_dir(key);
        if !dir.join("key").exists() {
            return Err(ContentError::IngestNotFound(key.to_owned()));
        }
        fs::remove_dir_all(&dir).map_err(ContentError::io(&dir))
    }

    /// Removes half-built ingest directories a crash may have left (never visible as ingests).
    pub fn remove_temporaries(&self) -> Result<usize, ContentError> {
        let dir = self.root.join("ingest");
        let mut n = 0;
        for entry in fs::read_dir(&dir).map_err(ContentError::io(&dir))? {
            let entry = entry.map_err(ContentError::io(&dir))?;
            if entry.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = fs::remove_dir_all(entry.path());
                n += 1;
            }
        }
        Ok(n)
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
        use std::io::Seek;
        let path = self.dir.join("data");
        self.file.set_len(0).map_err(ContentError::io(&path))?;
        self.file
            .seek(std::io::SeekFrom::Start(0))
            .map_err(ContentError::io(&path))?;
        self.hasher = Sha256::new();
        self.offset = 0;
        Ok(())
    }

    /// Verifies and moves the data into `blobs/`. Returns the digest and whether the blob was
    /// already on disk (another namespace or an earlier commit), in which case the ingest's copy
    /// is simply dropped.
    pub fn commit(self, size: i64, expected: &str) -> Result<(String, bool), ContentError> {
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
            fs::set_permissions(&data, fs::Permissions::from_mode(0o444))
                .map_err(ContentError::io(&data))?;
            fs::rename(&data, &target).map_err(ContentError::io(&target))?;
            if let Some(parent) = target.parent() {
                fsync_dir(parent)?;
            }
        }
        fs::remove_dir_all(&self.dir).map_err(ContentError::io(&self.dir))?;
        Ok((digest, existed))
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
        let mut w = s.writer("ns/a", 11, "").unwrap();
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
        let mut w = s.writer("ns/r", 0, "").unwrap();
        assert!(matches!(
            s.writer("ns/r", 0, ""),
            Err(ContentError::Locked { .. })
        ));
        w.write(b"abc").unwrap();
        drop(w);
        let st = s.status("ns/r").unwrap();
        assert_eq!(st.offset, 3);
        let mut w = s.writer("ns/r", 0, "").unwrap();
        assert_eq!(w.status().offset, 3);
        w.write(b"def").unwrap();
        let (d, _) = w.commit(6, "").unwrap();
        assert_eq!(d, sha(b"abcdef"));
    }

    #[test]
    fn mismatches_commit_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(LocalStore::open(dir.path()).unwrap());
        let mut w = s.writer("ns/x", 0, "").unwrap();
        w.write(b"data").unwrap();
        assert!(matches!(
            w.commit(5, ""),
            Err(ContentError::SizeMismatch { .. })
        ));
        let w = s.writer("ns/x", 0, "").unwrap();
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
        let mut w = s.writer("k", 0, "").unwrap();
        w.write(b"garbage").unwrap();
        w.reset().unwrap();
        w.write(b"ok").unwrap();
        assert_eq!(w.commit(2, "").unwrap().0, sha(b"ok"));
    }
}
