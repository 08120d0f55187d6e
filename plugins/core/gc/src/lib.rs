//! The `io.containerd.gc.v1.scheduler` plugin.
//!
//! A collection is the metadata mark-and-sweep (`berth_metadata::MetadataDb::collect_garbage`,
//! one write transaction), then, under the sweep guard, deleting blob files no namespace records
//! (but those an open writer pinned), then removing ingests that are abandoned: opened under a
//! lease no lease holds any longer, or stale. Ingests being set up are never touched.
//!
//! When collections run: once at start-up, before berthd serves (so no client races with it);
//! after deletions, debounced by `schedule_delay`, as containerd does; and — what containerd
//! lacks, since it collects only on change — every `interval` the timer checks whether a lease
//! has expired or an ingest has gone stale, and collects if so, so an expired lease frees its data
//! even when nothing else happens. Unreferenced content that nothing deleted is left alone by the
//! timer, exactly as containerd leaves it until the next change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_content_store::{ContentError, ContentStore};
use berth_metadata::{MetaError, MetadataDb};
use berth_plugin::{types, Classify, ErrorKind, InitError, Instance, Registration};
use berth_snapshotter::{SnapshotError, Snapshotter};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GcConfig {
    /// The largest share of time collections may take: with `d` the average collection time
    /// (at least 5 ms, as containerd), the next collection waits `d / pause_threshold - d` after
    /// the last (containerd's default 0.02: 245 ms or more). Berth does not pause writers for
    /// the metadata pass; the driver and blob sweeps hold them out.
    pub pause_threshold: f64,
    /// Accepted for containerd compatibility; every deletion schedules a collection.
    pub deletion_threshold: u32,
    /// Accepted for containerd compatibility.
    pub mutation_threshold: u32,
    /// Wait after a deletion before collecting, so a burst of deletions costs one collection.
    pub schedule_delay: String,
    /// Wait after start-up before the first collection; "0s" collects before serving.
    pub startup_delay: String,
    /// How often the timer checks for expired leases and stale ingests ("0s" disables it).
    pub interval: String,
    /// An ingest opened without a lease and not written to for this long is removed (one opened
    /// under a lease is removed once no lease holds it, as containerd does).
    pub ingest_expiry: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            pause_threshold: 0.02,
            deletion_threshold: 0,
            mutation_threshold: 100,
            schedule_delay: "0s".into(),
            startup_delay: "0s".into(),
            interval: "10s".into(),
            ingest_expiry: "24h".into(),
        }
    }
}

struct Durations {
    schedule_delay: Duration,
    startup_delay: Duration,
    interval: Duration,
    ingest_expiry: Duration,
}

fn parse(name: &str, v: &str) -> Result<Duration, InitError> {
    humantime::parse_duration(v).map_err(|e| InitError::Config(format!("gc {name} {v:?}: {e}")))
}

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Content(#[from] ContentError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error("collection task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl Classify for GcError {
    fn kind(&self) -> ErrorKind {
        match self {
            GcError::Meta(e) => e.kind(),
            GcError::Snapshot(e) => e.kind(),
            GcError::Content(e) => e.kind(),
            GcError::Task(_) => ErrorKind::Internal,
        }
    }
}

/// What one collection freed.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub blobs: Vec<(String, String)>,
    /// `(snapshotter, driver key)` of snapshots removed.
    pub snapshots: Vec<(String, String)>,
    pub leases: Vec<(String, String)>,
    pub ingests: Vec<String>,
    pub deleted_files: Vec<String>,
    pub freed_bytes: u64,
    pub duration: Duration,
}

struct Inner {
    db: Arc<MetadataDb>,
    drivers: HashMap<String, Arc<dyn Snapshotter>>,
    content: Arc<ContentStore>,
    wake: Notify,
    /// Serialises collections: a sync delete waits for its own full run.
    running: tokio::sync::Mutex<()>,
    last: Mutex<Option<Stats>>,
    /// When the last collection ended, and the collections' time so far (for `pause_threshold`).
    last_run: Mutex<Option<Pacing>>,
    pause_threshold: f64,
    d: Durations,
}

/// containerd's floor on the average collection time used for pacing: a fast collection must
/// not make the next one follow almost at once.
const MIN_PACED_COLLECTION: Duration = Duration::from_millis(5);

/// The collections' timing, for `pause_threshold`.
#[derive(Debug, Clone)]
struct Pacing {
    ended: Instant,
    total: Duration,
    runs: u32,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing {
            ended: Instant::now(),
            total: Duration::ZERO,
            runs: 0,
        }
    }
}

impl Pacing {
    fn record(&mut self, took: Duration) {
        self.ended = Instant::now();
        self.total += took;
        self.runs = self.runs.saturating_add(1);
    }

    /// The quiet owed after the last collection, as containerd's scheduler computes its
    /// interval: with `d` the average collection time, at least 5 ms, `d / threshold - d`, so
    /// collections take at most `threshold` of the time; none for a threshold outside (0, 1).
    fn quiet_after(&self, threshold: f64) -> Duration {
        if !(threshold > 0.0 && threshold < 1.0) || self.runs == 0 {
            return Duration::ZERO;
        }
        let avg = (self.total / self.runs).max(MIN_PACED_COLLECTION);
        avg.mul_f64(1.0 / threshold - 1.0)
    }
}

/// Handle to the collector; cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    /// The daemon's collector, for a plugin that requires `io.containerd.gc.v1`; `None` when it
    /// is disabled (deleted data then simply stays on disk).
    pub fn from_context(ctx: &berth_plugin::InitContext) -> Option<Scheduler> {
        ctx.get_as::<Scheduler>(types::GC)
            .ok()
            .map(|s| (*s).clone())
    }

    /// What a deletion calls: with `sync` (containerd's Delete option) a full collection before
    /// answering. Without it there is nothing to do: the metadata store's dereference callback
    /// has already scheduled one.
    pub async fn after_delete(&self, sync: bool) -> Result<(), GcError> {
        if sync {
            self.collect_now().await?;
        }
        Ok(())
    }

    /// Runs a collection now and waits for it (what `Delete` with `sync` needs).
    pub async fn collect_now(&self) -> Result<Stats, GcError> {
        let _running = self.inner.running.lock().await;
        let inner = self.inner.clone();
        let stats = tokio::task::spawn_blocking(move || collect(&inner)).await??;
        if !(stats.blobs.is_empty()
            && stats.snapshots.is_empty()
            && stats.leases.is_empty()
            && stats.ingests.is_empty()
            && stats.deleted_files.is_empty())
        {
            tracing::info!(
                blobs = stats.blobs.len(),
                snapshots = stats.snapshots.len(),
                leases = stats.leases.len(),
                ingests = stats.ingests.len(),
                files = stats.deleted_files.len(),
                freed_bytes = stats.freed_bytes,
                duration_us = stats.duration.as_micros() as u64,
                "garbage collected"
            );
        }
        *self.inner.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(stats.clone());
        self.inner
            .last_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(Pacing::default)
            .record(stats.duration);
        Ok(stats)
    }

    pub fn last(&self) -> Option<Stats> {
        self.inner
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn run_loop(self, collect_first: bool) {
        if collect_first {
            tokio::time::sleep(self.inner.d.startup_delay).await;
            self.collect_logged().await;
        }
        let interval = self.inner.d.interval;
        loop {
            let woken = if interval.is_zero() {
                self.inner.wake.notified().await;
                true
            } else {
                tokio::select! {
                    _ = self.inner.wake.notified() => true,
                    _ = tokio::time::sleep(interval) => false,
                }
            };
            if woken {
                tokio::time::sleep(self.inner.d.schedule_delay).await;
                // containerd's pause_threshold: collections take at most that share of the time,
                // so a burst of deletions is collected in a few passes, not one pass each.
                if let Some(wait) = self.pause_left() {
                    tokio::time::sleep(wait).await;
                }
                self.collect_logged().await;
            } else if self.time_made_garbage().await {
                self.collect_logged().await;
            }
        }
    }

    /// How long to wait before the next collection so that collections stay within
    /// `pause_threshold` of the time (see [`Pacing`]).
    fn pause_left(&self) -> Option<Duration> {
        let pacing = self
            .inner
            .last_run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        pacing
            .quiet_after(self.inner.pause_threshold)
            .checked_sub(pacing.ended.elapsed())
    }

    async fn collect_logged(&self) {
        if let Err(e) = self.collect_now().await {
            tracing::error!(error = %e, "garbage collection failed");
        }
    }

    /// Whether a lease has expired, an unheld ingest has gone stale since it was written, or an
    /// ingest outlived its lease (a writer still had it when the lease's collection ran).
    async fn time_made_garbage(&self) -> bool {
        let inner = self.inner.clone();
        let check = tokio::task::spawn_blocking(move || -> Result<bool, GcError> {
            let now = now_nanos();
            if inner.db.has_expired_lease(now)? {
                return Ok(true);
            }
            let expiry = i64::try_from(inner.d.ingest_expiry.as_nanos()).unwrap_or(i64::MAX);
            for ingest in inner.content.local().list_ingests()? {
                if now.saturating_sub(ingest.updated_at) >= expiry {
                    return Ok(true);
                }
                // Not while a writer holds it: that writer keeps it (and a collection would find
                // nothing to do on every tick).
                if ingest.lease.is_some() && !inner.content.local().is_locked(&ingest.key) {
                    let (ns, reference) = ingest.key.split_once('/').unwrap_or(("", &ingest.key));
                    if !inner.db.ingest_leased(ns, reference)? {
                        return Ok(true);
                    }
                }
            }
            Ok(false)
        })
        .await;
        match check {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "gc timer check failed");
                false
            }
            Err(_) => false,
        }
    }
}

fn now_nanos() -> i64 {
    berth_metadata::now_nanos()
}

/// Driver snapshots that no key in `keep` names, each after its children.
fn orphans(driver: &dyn Snapshotter, keep: &HashSet<String>) -> Result<Vec<String>, GcError> {
    let mut parents: HashMap<String, String> = HashMap::new();
    driver.walk(&mut |i| {
        parents.insert(i.name.clone(), i.parent.clone());
        true
    })?;
    let depth = |key: &str| {
        let mut d = 0usize;
        let mut cur = parents.get(key).map(String::as_str).unwrap_or("");
        while !cur.is_empty() && d < parents.len() {
            d += 1;
            cur = parents.get(cur).map(String::as_str).unwrap_or("");
        }
        d
    };
    let mut dead: Vec<(usize, String)> = parents
        .keys()
        .filter(|k| !keep.contains(*k))
        .map(|k| (depth(k), k.clone()))
        .collect();
    dead.sort_by(|a, b| b.cmp(a));
    Ok(dead.into_iter().map(|(_, k)| k).collect())
}

/// One full collection: metadata first, then disk under the sweep guard.
fn collect(inner: &Inner) -> Result<Stats, GcError> {
    let start = Instant::now();
    let meta = inner.db.collect_garbage(now_nanos())?;
    let mut stats = Stats {
        blobs: meta.blobs,
        leases: meta.leases,
        ..Default::default()
    };
    {
        // Snapshots: every driver snapshot no record points to goes, children first. The guard
        // keeps out Prepare, View and Commit (which hold it from their record change to their
        // driver call), so the records read under it describe the drivers exactly.
        let _guard = inner.db.sweep_guard();
        let live = inner.db.live_snapshot_backends()?;
        let none = HashSet::new();
        for (sn, driver) in &inner.drivers {
            let keep = live.get(sn).unwrap_or(&none);
            for key in orphans(driver.as_ref(), keep)? {
                match driver.remove(&key) {
                    Ok(()) | Err(SnapshotError::NotFound(_)) => {
                        stats.snapshots.push((sn.clone(), key))
                    }
                    Err(e) => {
                        tracing::warn!(snapshotter = %sn, key = %key, error = %e, "cannot remove snapshot")
                    }
                }
            }
        }
        // Records of an unavailable snapshotter (a proxy that is down) keep their driver
        // snapshots until it is back; say so once per collection.
        for (sn, _) in meta
            .snapshots
            .iter()
            .filter(|(sn, _)| !inner.drivers.contains_key(sn))
        {
            tracing::warn!(snapshotter = %sn, "snapshots of an unavailable snapshotter not removed");
        }
    }
    let local = inner.content.local();
    {
        // No commit can put a file in place and record it while this guard is held, so a blob
        // that no namespace records now is truly unreferenced.
        let _guard = inner.db.sweep_guard();
        for digest in local.list_blobs()? {
            if meta.live_digests.contains(&digest) || inner.db.blob_in_use(&digest)? {
                continue;
            }
            // A pinned blob is one an open writer will record (it found it already on disk).
            if let Some(size) = local.delete_unpinned(&digest)? {
                stats.freed_bytes += size as u64;
                stats.deleted_files.push(digest);
            }
        }
    }
    let held: &HashSet<(String, String)> = &meta.held_ingests;
    let expiry = i64::try_from(inner.d.ingest_expiry.as_nanos()).unwrap_or(i64::MAX);
    let now = now_nanos();
    // Ingests being built are not listed (they live under `.tmp-*` names until complete), and
    // nothing here removes those: a writer may be building one right now.
    for ingest in local.list_ingests()? {
        let (ns, reference) = ingest.key.split_once('/').unwrap_or(("", &ingest.key));
        if held.contains(&(ns.to_owned(), reference.to_owned())) {
            continue;
        }
        // One opened under a lease that no longer holds it goes now, as containerd removes it
        // with its lease; one opened without a lease goes once it is stale.
        if ingest.lease.is_none() && now.saturating_sub(ingest.updated_at) < expiry {
            continue;
        }
        // Kept if a writer holds it or used it since the listing.
        if local.remove_idle(&ingest)? {
            stats.freed_bytes += ingest.offset.max(0) as u64;
            stats.ingests.push(ingest.key.clone());
        }
    }
    stats.duration = start.elapsed();
    Ok(stats)
}

/// The `io.containerd.gc.v1.scheduler` plugin.
pub fn registration() -> Registration {
    Registration::new(
        types::GC,
        "scheduler",
        &[types::METADATA, types::CONTENT, types::SNAPSHOTTER],
        |ctx| {
            let cfg: GcConfig = ctx.config()?;
            let d = Durations {
                schedule_delay: parse("schedule_delay", &cfg.schedule_delay)?,
                startup_delay: parse("startup_delay", &cfg.startup_delay)?,
                interval: parse("interval", &cfg.interval)?,
                ingest_expiry: parse("ingest_expiry", &cfg.ingest_expiry)?,
            };
            let db = ctx.get_as::<MetadataDb>(types::METADATA)?;
            let content = ctx.get_as::<ContentStore>(types::CONTENT)?;
            let handle = tokio::runtime::Handle::try_current().map_err(|_| {
                InitError::Failed("the gc scheduler needs the async runtime".into())
            })?;
            let scheduler = Scheduler {
                inner: Arc::new(Inner {
                    db,
                    drivers: berth_snapshotter::drivers(ctx),
                    content,
                    wake: Notify::new(),
                    running: tokio::sync::Mutex::new(()),
                    last: Mutex::new(None),
                    last_run: Mutex::new(None),
                    pause_threshold: cfg.pause_threshold,
                    d,
                }),
            };
            // With no start-up delay, collect now, before anything is served, so no client's fresh
            // (still unreferenced) content can be caught by a start-up collection.
            let collect_first = !scheduler.inner.d.startup_delay.is_zero();
            if !collect_first {
                let stats = collect(&scheduler.inner).map_err(InitError::failed)?;
                tracing::info!(
                    blobs = stats.blobs.len(),
                    files = stats.deleted_files.len(),
                    freed_bytes = stats.freed_bytes,
                    "start-up garbage collection"
                );
            }
            // Every committed deletion wakes the collector. Weak, so the database (which the
            // scheduler holds) does not keep the scheduler alive in turn.
            let weak = Arc::downgrade(&scheduler.inner);
            scheduler.inner.db.on_dereference(move || {
                if let Some(inner) = weak.upgrade() {
                    inner.wake.notify_one();
                }
            });
            let task = handle.spawn(scheduler.clone().run_loop(collect_first));
            // On shutdown (before the stores it collects close): let a collection under way
            // finish, then stop the loop so none starts on closed stores.
            let closing = scheduler.clone();
            ctx.on_close(move || {
                let _running = closing.inner.running.blocking_lock();
                task.abort();
                Ok::<_, berth_plugin::CloseError>(())
            });
            Ok(Arc::new(scheduler) as Instance)
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_follows_containerds_interval() {
        let mut p = Pacing::default();
        assert_eq!(p.quiet_after(0.02), Duration::ZERO, "no collection yet");
        // Fast collections count as 5 ms: 5 / 0.02 - 5 = 245 ms.
        p.record(Duration::from_millis(2));
        assert_eq!(p.quiet_after(0.02), Duration::from_millis(245));
        // The average, not the last: (2 + 18) / 2 = 10 ms -> 490 ms.
        p.record(Duration::from_millis(18));
        assert_eq!(p.quiet_after(0.02), Duration::from_millis(490));
        assert_eq!(p.quiet_after(0.5), Duration::from_millis(10));
        assert_eq!(p.quiet_after(0.0), Duration::ZERO, "pacing off");
        assert_eq!(p.quiet_after(1.0), Duration::ZERO, "pacing off");
    }

    #[test]
    fn errors_keep_their_source() {
        use std::error::Error as _;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let join = rt
            .block_on(async { tokio::task::spawn_blocking(|| panic!("collector bug")).await })
            .unwrap_err();
        let e = GcError::from(join);
        assert_eq!(e.kind(), ErrorKind::Internal);
        assert!(e.source().unwrap().is::<tokio::task::JoinError>());

        // A metadata failure is passed through whole: its source is the store's own cause.
        let e = GcError::from(MetaError::CreateDir {
            path: "/nowhere".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        });
        assert!(e.source().unwrap().is::<std::io::Error>());
    }
    use berth_snapshotter_fake::FakeSnapshotter;
    use std::collections::BTreeMap;

    #[test]
    fn orphans_are_every_unrecorded_driver_snapshot_children_first() {
        let d = FakeSnapshotter::new();
        let none = BTreeMap::new;
        d.prepare("a", "", none()).unwrap();
        d.commit("A", "a", none()).unwrap();
        d.prepare("b", "A", none()).unwrap();
        d.commit("B", "b", none()).unwrap();
        d.view("v", "B", none()).unwrap();
        d.prepare("kept", "", none()).unwrap();
        let keep: HashSet<String> = ["kept".to_owned()].into();
        let dead = orphans(&d, &keep).unwrap();
        assert_eq!(dead, ["v", "B", "A"], "deepest first, the kept one left");
        // Removing in that order always finds the children gone.
        for k in &dead {
            d.remove(k).unwrap();
        }
        assert_eq!(d.keys(), ["kept"]);
    }

    #[test]
    fn a_recorded_child_keeps_nothing_else_alive_by_itself() {
        // The metadata pass marks parents of live records; the driver sweep only trusts the
        // set it is given, so a parent missing from it is removed after its children.
        let d = FakeSnapshotter::new();
        d.prepare("a", "", BTreeMap::new()).unwrap();
        d.commit("A", "a", BTreeMap::new()).unwrap();
        d.prepare("b", "A", BTreeMap::new()).unwrap();
        let keep: HashSet<String> = ["A".to_owned(), "b".to_owned()].into();
        assert!(orphans(&d, &keep).unwrap().is_empty());
    }
    mod content {
        use super::*;
        use berth_content_store::LocalStore;

        fn collector(dir: &std::path::Path) -> Arc<Inner> {
            let db = Arc::new(MetadataDb::open(&dir.join("meta")).unwrap());
            let local = Arc::new(LocalStore::open(&dir.join("content")).unwrap());
            Arc::new(Inner {
                content: Arc::new(ContentStore::new(local, db.clone())),
                db,
                drivers: HashMap::new(),
                wake: Notify::new(),
                running: tokio::sync::Mutex::new(()),
                last: Mutex::new(None),
                last_run: Mutex::new(None),
                pause_threshold: 0.02,
                d: Durations {
                    schedule_delay: Duration::ZERO,
                    startup_delay: Duration::ZERO,
                    interval: Duration::ZERO,
                    ingest_expiry: Duration::from_secs(24 * 3600),
                },
            })
        }

        fn ingest_entries(dir: &std::path::Path) -> Vec<String> {
            std::fs::read_dir(dir.join("content/ingest"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        }

        #[test]
        fn a_collection_while_a_writer_is_set_up_leaves_it_alone() {
            let dir = tempfile::tempdir().unwrap();
            let inner = collector(dir.path());
            let weak = Arc::downgrade(&inner);
            let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let count = ran.clone();
            inner.content.local().set_building_hook(move || {
                if let Some(inner) = weak.upgrade() {
                    collect(&inner).unwrap();
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            let mut w = inner
                .content
                .writer("default", "being-set-up", 0, "", None)
                .unwrap();
            assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 1);
            w.write(b"survives").unwrap();
            w.commit(&inner.content, 8, "", BTreeMap::new()).unwrap();
            assert_eq!(ingest_entries(dir.path()), Vec::<String>::new());
        }

        #[test]
        fn an_ingest_goes_with_its_lease() {
            let dir = tempfile::tempdir().unwrap();
            let inner = collector(dir.path());
            let (db, cs) = (&inner.db, &inner.content);
            db.create_lease("default", "l", BTreeMap::new()).unwrap();
            let mut w = cs.writer("default", "leased", 0, "", Some("l")).unwrap();
            w.write(b"half").unwrap();
            drop(w);
            let mut w = cs.writer("default", "unleased", 0, "", None).unwrap();
            w.write(b"fresh").unwrap();
            drop(w);
            assert!(collect(&inner).unwrap().ingests.is_empty(), "held");
            db.delete_lease("default", "l").unwrap();
            let stats = collect(&inner).unwrap();
            assert_eq!(stats.ingests, ["default/leased"]);
            assert!(matches!(
                cs.status("default", "leased"),
                Err(ContentError::IngestNotFound(_))
            ));
            assert_eq!(
                cs.status("default", "unleased").unwrap().offset,
                5,
                "not stale"
            );
        }

        #[test]
        fn a_blob_a_writer_found_survives_the_collection_that_unreferenced_it() {
            let dir = tempfile::tempdir().unwrap();
            let inner = collector(dir.path());
            let (db, cs) = (&inner.db, &inner.content);
            db.create_lease("a", "import-1", BTreeMap::new()).unwrap();
            let mut w = cs.writer("a", "layer", 0, "", Some("import-1")).unwrap();
            w.write(b"layer bytes").unwrap();
            let d = w.commit(cs, 0, "", BTreeMap::new()).unwrap().digest;
            // The next import finds the blob on disk (another namespace's writer, or the same
            // namespace's after its record went) ...
            db.create_lease("b", "import-2", BTreeMap::new()).unwrap();
            let present = cs.writer("b", "layer", 0, &d, Some("import-2")).unwrap();
            // ... while the collection after the first image's removal runs.
            db.delete_lease("a", "import-1").unwrap();
            let stats = collect(&inner).unwrap();
            assert_eq!(stats.blobs, [("a".to_owned(), d.clone())]);
            assert!(stats.deleted_files.is_empty(), "pinned: {stats:?}");
            present.commit(cs, 11, &d, BTreeMap::new()).unwrap();
            assert!(collect(&inner).unwrap().deleted_files.is_empty(), "leased");
            assert_eq!(cs.info("b", &d).unwrap().size, 11);
        }

        #[test]
        fn a_blob_reported_present_is_held_by_the_writers_lease() {
            let dir = tempfile::tempdir().unwrap();
            let inner = collector(dir.path());
            let (db, cs) = (&inner.db, &inner.content);
            db.create_lease("a", "old", BTreeMap::new()).unwrap();
            let mut w = cs.writer("a", "cfg", 0, "", Some("old")).unwrap();
            w.write(b"config").unwrap();
            let d = w.commit(cs, 0, "", BTreeMap::new()).unwrap().digest;
            db.create_lease("a", "new", BTreeMap::new()).unwrap();
            assert!(matches!(
                cs.writer("a", "cfg", 0, &d, Some("new")),
                Err(ContentError::AlreadyExists(_))
            ));
            db.delete_lease("a", "old").unwrap();
            let stats = collect(&inner).unwrap();
            assert!(stats.blobs.is_empty(), "{stats:?}");
            assert_eq!(cs.info("a", &d).unwrap().size, 6);
        }
    }
}
