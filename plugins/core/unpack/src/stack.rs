//! Making the snapshots of resolved layers. Everything here blocks (redb transactions, directory
//! work, extraction) and runs on the job's blocking thread, or on the extraction threads it
//! starts; nothing here runs on an async worker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use berth_archive::{ApplyOptions, ApplyStats, WhiteoutMode, XattrPrefix};
use berth_plugin::{Classify, ErrorKind};
use berth_snapshots::NewSnapshot;

use crate::{unique, Layer, LayerState, Progress, UnpackError, Unpacker};

/// How layer `i` of a chain realises its whiteouts when extracted into its own directory.
///
/// The bottom layer has nothing below it to hide, and its snapshot has no parent: the overlay
/// snapshotter mounts it as a plain bind, so the diff service (like containerd's, which unpacks it
/// through a temporary mount with plain `archive.Apply`) applies it with whiteouts as deletions in
/// an empty directory: a `.wh.` entry removes at most what the layer itself wrote before it, and an
/// opaque marker removes nothing. The same here, so both paths leave the same tree for the same
/// chain ID — not a `c 0 0` device or an `overlay.opaque` xattr that a view of that one layer (a
/// read-only bind) would show as files. Every other layer becomes an overlay upper above its
/// parents, where whiteouts must be overlay's devices and xattrs.
fn whiteouts_for(i: usize, prefix: XattrPrefix) -> WhiteoutMode {
    if i == 0 {
        WhiteoutMode::Delete
    } else {
        WhiteoutMode::Overlay {
            xattr_prefix: prefix,
        }
    }
}

/// Removes staged directories that were not adopted (a failed or interrupted unpack).
struct StagedDirs(Vec<PathBuf>);

impl Drop for StagedDirs {
    fn drop(&mut self) {
        for d in &self.0 {
            if d.exists() {
                if let Err(e) = std::fs::remove_dir_all(d) {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot remove staged layer");
                }
            }
        }
    }
}

/// What the stacking of one image's layers needs.
pub(crate) struct Job<'a> {
    pub unpacker: &'a Unpacker,
    pub ns: &'a str,
    pub sn: &'a str,
    pub lease: &'a str,
    pub layers: &'a [Layer],
    /// Layers still being downloaded (see [`crate::LayerGate`]).
    pub gate: Option<&'a crate::LayerGate>,
    pub progress: &'a (dyn Fn(Progress) + Sync),
}

impl Job<'_> {
    fn report(&self, i: usize, state: LayerState, bytes: u64, parallel: bool) {
        let l = &self.layers[i];
        (self.progress)(Progress {
            chain_id: l.chain_id.clone(),
            layer: l.digest.clone(),
            state,
            index: i,
            total: self.layers.len(),
            bytes,
            parallel,
        });
    }

    /// How many layers, from the bottom, are already unpacked: a chain ID present means every
    /// layer below it is too.
    fn present(&self) -> usize {
        let db = &self.unpacker.db;
        let sn = berth_snapshots::canonical(self.sn);
        self.layers
            .iter()
            .rposition(|l| {
                db.get_snapshot_record(self.ns, sn, l.chain_id.as_str())
                    .is_ok()
            })
            .map_or(0, |i| i + 1)
    }

    /// Unpacks every layer not yet unpacked: extracted at once into staging and adopted (drivers
    /// with staging), or applied one after the other onto prepared snapshots (the others).
    pub fn run(&self) -> Result<(), UnpackError> {
        let total = self.layers.len();
        let start = self.present();
        for i in 0..start {
            self.report(i, LayerState::Present, 0, false);
        }
        if start == total {
            return Ok(());
        }
        let snapshots = &self.unpacker.snapshots;
        let staging = snapshots.staging(self.sn)?;
        let parallel = staging.is_some();
        let mut staged = StagedDirs(Vec::new());
        if let Some(staging) = &staging {
            std::fs::create_dir_all(&staging.dir).map_err(|source| UnpackError::Staging {
                path: staging.dir.clone(),
                source,
            })?;
            staged.0 = (start..total)
                .map(|i| staging.dir.join(format!("{}-{i}", unique())))
                .collect();
            let prefix = if staging.userxattr {
                XattrPrefix::User
            } else {
                XattrPrefix::Trusted
            };
            let stats = self.extract_all(start, &staged.0, prefix)?;
            self.inherit_implied_dirs(start, &staged.0, &stats)?;
        }
        for i in start..total {
            let dir = staged.0.get(i - start).map(PathBuf::as_path);
            let bytes = self.stack_one(i, dir)?;
            self.report(i, LayerState::Committed, bytes, parallel);
        }
        Ok(())
    }

    /// Extracts layers `start..` into `dirs` (one each) on up to one thread per CPU, reporting
    /// each as it finishes. The first failure stops the layers not yet started.
    fn extract_all(
        &self,
        start: usize,
        dirs: &[PathBuf],
        prefix: XattrPrefix,
    ) -> Result<Vec<ApplyStats>, UnpackError> {
        let n = dirs.len();
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, n.max(1));
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let mut results: Vec<Option<Result<ApplyStats, UnpackError>>> =
            (0..n).map(|_| None).collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| {
                        let mut done = Vec::new();
                        while !failed.load(Ordering::Relaxed) {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            if k >= n {
                                break;
                            }
                            let i = start + k;
                            let r = self.extract_one(i, &dirs[k], prefix);
                            match &r {
                                Ok(stats) => {
                                    self.report(i, LayerState::Extracted, stats.size, true)
                                }
                                Err(_) => failed.store(true, Ordering::Relaxed),
                            }
                            done.push((k, r));
                        }
                        done
                    })
                })
                .collect();
            for h in handles {
                match h.join() {
                    Ok(done) => {
                        for (k, r) in done {
                            results[k] = Some(r);
                        }
                    }
                    Err(_) => failed.store(true, Ordering::Relaxed),
                }
            }
        });
        let mut out = Vec::with_capacity(n);
        for r in results {
            // A layer never started is missing only because another failed or panicked.
            out.push(r.unwrap_or(Err(UnpackError::ExtractPanicked))?);
        }
        Ok(out)
    }

    /// Blocks until layer `i`'s blob is in the content store, when a pull is still bringing it.
    fn wait_for(&self, i: usize) -> Result<(), UnpackError> {
        match self.gate {
            Some(gate) => gate.wait(self.layers[i].digest.as_str()),
            None => Ok(()),
        }
    }

    /// Decompresses, hashes (against the diff_id) and extracts layer `i` into `dir`, in
    /// overlay's whiteout format when it has a parent.
    fn extract_one(
        &self,
        i: usize,
        dir: &Path,
        prefix: XattrPrefix,
    ) -> Result<ApplyStats, UnpackError> {
        let l = &self.layers[i];
        self.wait_for(i)?;
        std::fs::create_dir(dir).map_err(|source| UnpackError::Staging {
            path: dir.to_owned(),
            source,
        })?;
        let (f, _) = self
            .unpacker
            .content
            .open_reader(self.ns, l.digest.as_str())?;
        let r = berth_archive::decompress(
            std::io::BufReader::with_capacity(1 << 20, f),
            &l.media_type,
        )?;
        let opts = ApplyOptions {
            whiteouts: whiteouts_for(i, prefix),
            allow_devices: true,
            expected_diff_id: Some(l.diff_id.to_string()),
            ..Default::default()
        };
        Ok(berth_archive::apply(r, dir, &opts)?)
    }

    /// Directories a layer only implies take their metadata from the layers below, nearest
    /// first: the ones staged by this unpack, then those already unpacked (read from a view).
    fn inherit_implied_dirs(
        &self,
        start: usize,
        dirs: &[PathBuf],
        stats: &[ApplyStats],
    ) -> Result<(), UnpackError> {
        let mut below: Vec<PathBuf> = Vec::new();
        if start > 0 && stats.iter().any(|s| !s.implied_dirs.is_empty()) {
            below = self.existing_layer_dirs(self.layers[start - 1].chain_id.as_str())?;
        }
        for (dir, st) in dirs.iter().zip(stats) {
            if !st.implied_dirs.is_empty() {
                let parents: Vec<PathBuf> = below.iter().rev().cloned().collect();
                berth_archive::inherit_dir_metadata(dir, &st.implied_dirs, &parents)?;
            }
            below.push(dir.clone());
        }
        Ok(())
    }

    /// The layer directories of an unpacked chain, bottom first, read from a temporary view's
    /// mounts.
    fn existing_layer_dirs(&self, chain_id: &str) -> Result<Vec<PathBuf>, UnpackError> {
        let snapshots = &self.unpacker.snapshots;
        let key = format!("probe-{}", unique());
        let new = NewSnapshot {
            key: key.clone(),
            parent: chain_id.to_owned(),
            labels: BTreeMap::new(),
            view: true,
        };
        let mounts = snapshots.prepare(self.ns, self.sn, None, new)?;
        if let Err(e) = snapshots.remove(self.ns, self.sn, &key) {
            tracing::warn!(%key, error = %e, "cannot remove probe view; the collector will");
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        for m in mounts {
            match m.overlay_options() {
                Some(overlay) => dirs.extend(overlay.lowerdirs),
                None => dirs.push(PathBuf::from(m.source)),
            }
        }
        dirs.reverse(); // lowerdir lists nearest first
        Ok(dirs)
    }

    /// Prepares layer `i` on its parent, fills it (adopting `staged`, or applying the blob), and
    /// commits it under its chain ID. Returns the uncompressed bytes applied here (0 when
    /// adopted: those were reported when extracted).
    fn stack_one(&self, i: usize, staged: Option<&Path>) -> Result<u64, UnpackError> {
        let (ns, sn, lease) = (self.ns, self.sn, Some(self.lease));
        let snapshots = &self.unpacker.snapshots;
        let l = &self.layers[i];
        let parent = match i {
            0 => String::new(),
            _ => self.layers[i - 1].chain_id.to_string(),
        };
        let key = format!("extract-{}-{}", unique(), l.chain_id);
        let new = NewSnapshot {
            key: key.clone(),
            parent,
            labels: BTreeMap::new(),
            view: false,
        };
        let discard = || {
            if let Err(e) = snapshots.remove(ns, sn, &key) {
                tracing::warn!(%key, error = %e, "cannot remove unfinished snapshot; the collector will");
            }
        };
        let bytes = match staged {
            Some(dir) => {
                snapshots.prepare_adopt(ns, sn, lease, new, dir)?;
                0
            }
            None => {
                self.wait_for(i)?;
                let mounts = snapshots.prepare(ns, sn, lease, new)?;
                let applied = match berth_diff::apply_layer(
                    &self.unpacker.content,
                    ns,
                    &l.descriptor(),
                    mounts,
                    false,
                ) {
                    Ok(a) => a,
                    Err(e) => {
                        discard();
                        return Err(e.into());
                    }
                };
                if applied.digest != l.diff_id.as_str() {
                    discard();
                    return Err(UnpackError::DiffIdMismatch {
                        layer: l.digest.clone(),
                        actual: applied.digest,
                        expected: l.diff_id.clone(),
                    });
                }
                u64::try_from(applied.size).unwrap_or(0)
            }
        };
        match snapshots.commit(ns, sn, l.chain_id.as_str(), &key, BTreeMap::new(), lease) {
            Ok(()) => Ok(bytes),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Unpacked meanwhile by someone else: theirs is as good as ours.
                discard();
                Ok(bytes)
            }
            Err(e) => {
                discard();
                Err(e.into())
            }
        }
    }
}
