//! Mark and sweep over the metadata, with containerd's reference rules.
//!
//! Roots: every image, every container, every unexpired lease's resources, and objects labelled
//! `containerd.io/gc.root`. References: image targets, a container's snapshot
//! (`snapshotter`, `snapshot_key`), `containerd.io/gc.ref.content[.*|/*]` labels (to a digest)
//! and `containerd.io/gc.ref.snapshot.<snapshotter>[/*]` labels (to a snapshot key), followed
//! from images, containers, content and snapshots. Expired leases are deleted and unmarked
//! records swept in one write transaction; the caller then removes what is no longer recorded
//! anywhere from disk.

use std::collections::{HashMap, HashSet, VecDeque};

use redb::ReadableTable;
use serde::Deserialize;

use crate::containers::ContainerRecord;
use crate::leases::remove_resources;
use crate::record::decode;
use crate::schema::{BLOBS, CONTAINERS, IMAGES, LEASES, LEASE_RESOURCES, SNAPSHOTS};
use crate::SnapshotRecord;
use crate::{Lease, MetaError, MetadataDb};

pub const ROOT_LABEL: &str = "containerd.io/gc.root";
pub const REF_CONTENT: &str = "containerd.io/gc.ref.content";
pub const REF_SNAPSHOT: &str = "containerd.io/gc.ref.snapshot.";

/// What one collection removed from the metadata, and what the disk sweep must keep.
#[derive(Debug, Default)]
pub struct Collected {
    /// `(namespace, digest)` blob records removed.
    pub blobs: Vec<(String, String)>,
    /// `(namespace, id)` expired leases removed.
    pub leases: Vec<(String, String)>,
    /// `(namespace, ref)` ingests held by live leases.
    pub held_ingests: HashSet<(String, String)>,
    /// Every digest some namespace still records.
    pub live_digests: HashSet<String>,
    /// `(namespace, snapshotter, key)` snapshots kept.
    pub marked_snapshots: HashSet<(String, String, String)>,
    /// `(snapshotter, driver key)` of snapshot records removed, children before parents, for the
    /// caller to remove from the drivers in this order.
    pub snapshots: Vec<(String, String)>,
}

#[derive(Deserialize)]
struct Labelled {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ImageTarget {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
    target: crate::Descriptor,
}

#[derive(Deserialize)]
struct LeaseLabels {
    #[serde(default)]
    labels: std::collections::BTreeMap<String, String>,
}

/// The objects a set of labels refers to.
fn follow_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
    ns: &str,
    content: &mut Vec<(String, String)>,
    snapshots: &mut Vec<(String, String, String)>,
) {
    for (k, v) in labels {
        if let Some(rest) = k.strip_prefix(REF_CONTENT) {
            if (rest.is_empty() || rest.starts_with('.') || rest.starts_with('/'))
                && crate::digest::validate(v).is_ok()
            {
                content.push((ns.to_owned(), v.clone()));
            }
        } else if let Some(rest) = k.strip_prefix(REF_SNAPSHOT) {
            let snapshotter = rest.split('/').next().unwrap_or_default();
            if !snapshotter.is_empty() && !v.is_empty() {
                snapshots.push((ns.to_owned(), snapshotter.to_owned(), v.clone()));
            }
        }
    }
}

impl MetadataDb {
    /// One mark-and-sweep pass at time `now` (nanoseconds since the epoch).
    pub fn collect_garbage(&self, now: i64) -> Result<Collected, MetaError> {
        let wtx = self.write()?;
        let mut out = Collected::default();
        let mut content_roots: Vec<(String, String)> = Vec::new();
        let mut snapshot_roots: Vec<(String, String, String)> = Vec::new();
        {
            // Leases: drop the expired, take the live ones' resources as roots.
            let mut leases = wtx.open_table(LEASES)?;
            let mut live: Vec<(String, String)> = Vec::new();
            for entry in leases.iter()? {
                let (k, v) = entry?;
                let (ns, id) = k.value();
                let rec: LeaseLabels = decode(&format!("leases/{ns}/{id}"), v.value())?;
                let lease = Lease {
                    id: id.to_owned(),
                    labels: rec.labels,
                    created_at: 0,
                };
                match lease.expires_at() {
                    Some(t) if t <= now => out.leases.push((ns.to_owned(), id.to_owned())),
                    _ => live.push((ns.to_owned(), id.to_owned())),
                }
            }
            for (ns, id) in &out.leases {
                leases.remove((ns.as_str(), id.as_str()))?;
                remove_resources(&wtx, ns, id)?;
            }
            let resources = wtx.open_table(LEASE_RESOURCES)?;
            for entry in resources.iter()? {
                let (k, _) = entry?;
                let (ns, lease, kind, id) = k.value();
                if !live.iter().any(|(lns, lid)| lns == ns && lid == lease) {
                    continue;
                }
                match kind {
                    "content" => content_roots.push((ns.to_owned(), id.to_owned())),
                    "ingests" => {
                        out.held_ingests.insert((ns.to_owned(), id.to_owned()));
                    }
                    k => {
                        if let Some(sn) = k.strip_prefix("snapshots/") {
                            snapshot_roots.push((ns.to_owned(), sn.to_owned(), id.to_owned()));
                        }
                    }
                }
            }

            // Images: their targets and labels.
            let images = wtx.open_table(IMAGES)?;
            for entry in images.iter()? {
                let (k, v) = entry?;
                let (ns, name) = k.value();
                let rec: ImageTarget = decode(&format!("images/{ns}/{name}"), v.value())?;
                content_roots.push((ns.to_owned(), rec.target.digest.clone()));
                follow_labels(&rec.labels, ns, &mut content_roots, &mut snapshot_roots);
            }

            // Containers: their snapshot and labels.
            let containers = wtx.open_table(CONTAINERS)?;
            for entry in containers.iter()? {
                let (k, v) = entry?;
                let (ns, id) = k.value();
                let rec: ContainerRecord = decode(&format!("containers/{ns}/{id}"), v.value())?;
                if !rec.snapshotter.is_empty() && !rec.snapshot_key.is_empty() {
                    snapshot_roots.push((ns.to_owned(), rec.snapshotter, rec.snapshot_key));
                }
                follow_labels(&rec.labels, ns, &mut content_roots, &mut snapshot_roots);
            }

            // Content labelled as a root.
            let blobs = wtx.open_table(BLOBS)?;
            for entry in blobs.iter()? {
                let (k, v) = entry?;
                let (ns, d) = k.value();
                let rec: Labelled = decode(&format!("blobs/{ns}/{d}"), v.value())?;
                if rec.labels.contains_key(ROOT_LABEL) {
                    content_roots.push((ns.to_owned(), d.to_owned()));
                }
            }
        }

        // Snapshots labelled as roots.
        {
            let snaps = wtx.open_table(SNAPSHOTS)?;
            for entry in snaps.iter()? {
                let (k, v) = entry?;
                let (ns, sn, key) = k.value();
                let rec: Labelled = decode(&format!("snapshots/{ns}/{sn}/{key}"), v.value())?;
                if rec.labels.contains_key(ROOT_LABEL) {
                    snapshot_roots.push((ns.to_owned(), sn.to_owned(), key.to_owned()));
                }
            }
        }

        // Mark: breadth-first through content labels, snapshot labels and snapshot parents.
        let mut marked: HashSet<(String, String)> = HashSet::new();
        let mut marked_snaps: HashSet<(String, String, String)> = HashSet::new();
        let mut queue: VecDeque<(String, String)> = content_roots.into();
        let mut squeue: VecDeque<(String, String, String)> = snapshot_roots.into();
        {
            let blobs = wtx.open_table(BLOBS)?;
            let snaps = wtx.open_table(SNAPSHOTS)?;
            while !queue.is_empty() || !squeue.is_empty() {
                while let Some((ns, d)) = queue.pop_front() {
                    if marked.contains(&(ns.clone(), d.clone())) {
                        continue;
                    }
                    let Some(v) = blobs.get((ns.as_str(), d.as_str()))? else {
                        // Referenced but not (yet) present: nothing to keep, nothing to follow.
                        continue;
                    };
                    let rec: Labelled = decode(&format!("blobs/{ns}/{d}"), v.value())?;
                    let (mut next, mut snext) = (Vec::new(), Vec::new());
                    follow_labels(&rec.labels, &ns, &mut next, &mut snext);
                    queue.extend(next);
                    squeue.extend(snext);
                    marked.insert((ns, d));
                }
                while let Some((ns, sn, key)) = squeue.pop_front() {
                    let id = (ns.clone(), sn.clone(), key.clone());
                    if marked_snaps.contains(&id) {
                        continue;
                    }
                    let Some(v) = snaps.get((ns.as_str(), sn.as_str(), key.as_str()))? else {
                        continue;
                    };
                    let rec: SnapshotRecord =
                        decode(&format!("snapshots/{ns}/{sn}/{key}"), v.value())?;
                    if !rec.parent.is_empty() {
                        squeue.push_back((ns.clone(), sn.clone(), rec.parent.clone()));
                    }
                    let (mut next, mut snext) = (Vec::new(), Vec::new());
                    follow_labels(&rec.labels, &ns, &mut next, &mut snext);
                    queue.extend(next);
                    squeue.extend(snext);
                    marked_snaps.insert(id);
                }
            }
        }
        out.marked_snapshots = marked_snaps.clone();

        // Sweep snapshot records, children before parents.
        {
            let mut snaps = wtx.open_table(SNAPSHOTS)?;
            let mut parents: std::collections::HashMap<(String, String, String), String> =
                Default::default();
            let mut dead: Vec<((String, String, String), String)> = Vec::new();
            for entry in snaps.iter()? {
                let (k, v) = entry?;
                let (ns, sn, key) = k.value();
                let rec: SnapshotRecord = decode(&format!("snapshots/{ns}/{sn}/{key}"), v.value())?;
                let id = (ns.to_owned(), sn.to_owned(), key.to_owned());
                parents.insert(id.clone(), rec.parent.clone());
                if !marked_snaps.contains(&id) {
                    dead.push((id, rec.backend_key));
                }
            }
            let depth = |id: &(String, String, String)| {
                let mut d = 0usize;
                let mut cur = parents.get(id).cloned().unwrap_or_default();
                while !cur.is_empty() && d < 10_000 {
                    d += 1;
                    cur = parents
                        .get(&(id.0.clone(), id.1.clone(), cur))
                        .cloned()
                        .unwrap_or_default();
                }
                d
            };
            dead.sort_by_key(|(id, _)| std::cmp::Reverse(depth(id)));
            for ((ns, sn, key), backend) in dead {
                snaps.remove((ns.as_str(), sn.as_str(), key.as_str()))?;
                out.snapshots.push((sn, backend));
            }
        }

        // Sweep blob records.

        {
            let mut blobs = wtx.open_table(BLOBS)?;
            let mut dead = Vec::new();
            for entry in blobs.iter()? {
                let (k, _) = entry?;
                let (ns, d) = k.value();
                if marked.contains(&(ns.to_owned(), d.to_owned())) {
                    out.live_digests.insert(d.to_owned());
                } else {
                    dead.push((ns.to_owned(), d.to_owned()));
                }
            }
            for (ns, d) in &dead {
                blobs.remove((ns.as_str(), d.as_str()))?;
            }
            out.blobs = dead;
        }
        if out.blobs.is_empty() && out.leases.is_empty() && out.snapshots.is_empty() {
            // Nothing was removed: no commit, so no fsync for a collection that found nothing.
            wtx.abort()?;
        } else {
            wtx.commit()?;
        }
        Ok(out)
    }

    /// The driver keys every snapshot record points to, by snapshotter: what the collector must
    /// leave in the drivers. Read it while holding [`MetadataDb::sweep_guard`], so no snapshot is
    /// half made (record committed, driver snapshot still to come, or the reverse).
    pub fn live_snapshot_backends(&self) -> Result<HashMap<String, HashSet<String>>, MetaError> {
        let rtx = self.read()?;
        let snaps = rtx.open_table(SNAPSHOTS)?;
        let mut live: HashMap<String, HashSet<String>> = HashMap::new();
        for entry in snaps.iter()? {
            let (k, v) = entry?;
            let (ns, sn, key) = k.value();
            let rec: SnapshotRecord = decode(&format!("snapshots/{ns}/{sn}/{key}"), v.value())?;
            live.entry(sn.to_owned())
                .or_default()
                .insert(rec.backend_key);
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Descriptor, Image};
    use std::collections::BTreeMap;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keeps_exactly_what_is_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        // index -> manifest -> (config, layer); an orphan; a gc.root blob; a leased blob.
        db.add_blob(
            "n",
            &d('1'),
            1,
            labels(&[("containerd.io/gc.ref.content.m.0", &d('2'))]),
            None,
        )
        .unwrap();
        db.add_blob(
            "n",
            &d('2'),
            1,
            labels(&[
                ("containerd.io/gc.ref.content.config", &d('3')),
                ("containerd.io/gc.ref.content.l.0", &d('4')),
                ("containerd.io/gc.ref.snapshot.overlayfs", "sha256:chain"),
            ]),
            None,
        )
        .unwrap();
        db.add_blob("n", &d('3'), 1, BTreeMap::new(), None).unwrap();
        db.add_blob("n", &d('4'), 1, BTreeMap::new(), None).unwrap();
        db.add_blob("n", &d('5'), 1, BTreeMap::new(), None).unwrap();
        db.add_blob("n", &d('6'), 1, labels(&[(ROOT_LABEL, "x")]), None)
            .unwrap();
        db.create_lease("n", "hold", BTreeMap::new()).unwrap();
        db.add_blob("n", &d('7'), 1, BTreeMap::new(), Some("hold"))
            .unwrap();
        // Same digest as the orphan, in another namespace, referenced there.
        db.add_blob("m", &d('5'), 1, labels(&[(ROOT_LABEL, "x")]), None)
            .unwrap();
        db.create_image(
            "n",
            &Image {
                name: "img".into(),
                target: Descriptor {
                    media_type: "application/vnd.oci.image.index.v1+json".into(),
                    digest: d('1'),
                    size: 1,
                    annotations: BTreeMap::new(),
                },
                ..Default::default()
            },
        )
        .unwrap();

        // Snapshots: the referenced chain top, its parent, and an orphan with a child.
        let none = BTreeMap::new;
        db.create_snapshot_record("n", "overlayfs", "base-a", "", none(), None)
            .unwrap();
        db.commit_snapshot_record("n", "overlayfs", "base", "base-a", none(), None)
            .unwrap();
        db.create_snapshot_record("n", "overlayfs", "top-a", "base", none(), None)
            .unwrap();
        db.commit_snapshot_record("n", "overlayfs", "sha256:chain", "top-a", none(), None)
            .unwrap();
        db.create_snapshot_record("n", "overlayfs", "o1-a", "", none(), None)
            .unwrap();
        let (o1, _) = db
            .commit_snapshot_record("n", "overlayfs", "o1", "o1-a", none(), None)
            .unwrap();
        let (o2, _) = db
            .create_snapshot_record("n", "overlayfs", "o2", "o1", none(), None)
            .unwrap();

        let got = db.collect_garbage(crate::now_nanos()).unwrap();
        assert_eq!(got.blobs, vec![("n".to_owned(), d('5'))]);
        assert!(got.live_digests.contains(&d('5')), "still recorded in m");
        for key in ["sha256:chain", "base"] {
            assert!(
                got.marked_snapshots
                    .contains(&("n".into(), "overlayfs".into(), key.into())),
                "{key}"
            );
        }
        assert_eq!(
            got.snapshots,
            vec![
                ("overlayfs".to_owned(), o2.backend_key),
                ("overlayfs".to_owned(), o1.backend_key)
            ],
            "orphans removed, child first"
        );

        db.delete_image("n", "img", None).unwrap();
        let got = db.collect_garbage(crate::now_nanos()).unwrap();
        let mut removed: Vec<_> = got.blobs.iter().map(|(_, d)| d.clone()).collect();
        removed.sort();
        assert_eq!(removed, vec![d('1'), d('2'), d('3'), d('4')]);
        assert!(db.blob_info("n", &d('7')).is_ok(), "leased blob kept");
        assert!(db.blob_info("n", &d('6')).is_ok(), "gc.root kept");
    }

    #[test]
    fn containers_keep_their_snapshot_and_labelled_content() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        let none = BTreeMap::new;
        db.create_snapshot_record("n", "overlayfs", "base-a", "", none(), None)
            .unwrap();
        db.commit_snapshot_record("n", "overlayfs", "base", "base-a", none(), None)
            .unwrap();
        db.create_snapshot_record("n", "overlayfs", "c1", "base", none(), None)
            .unwrap();
        db.add_blob("n", &d('1'), 1, BTreeMap::new(), None).unwrap();
        db.add_blob("n", &d('2'), 1, BTreeMap::new(), None).unwrap();
        let c = crate::Container {
            id: "c1".into(),
            labels: labels(&[("containerd.io/gc.ref.content.x", &d('1'))]),
            runtime: crate::ContainerRuntime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec: Some(crate::AnyValue::default()),
            snapshotter: "overlayfs".into(),
            snapshot_key: "c1".into(),
            ..Default::default()
        };
        db.create_container("n", &c).unwrap();

        let got = db.collect_garbage(crate::now_nanos()).unwrap();
        assert_eq!(got.blobs, vec![("n".to_owned(), d('2'))]);
        assert!(got.snapshots.is_empty(), "{:?}", got.snapshots);
        for key in ["c1", "base"] {
            assert!(got
                .marked_snapshots
                .contains(&("n".into(), "overlayfs".into(), key.into())));
        }

        db.delete_container("n", "c1").unwrap();
        let got = db.collect_garbage(crate::now_nanos()).unwrap();
        assert_eq!(got.blobs, vec![("n".to_owned(), d('1'))]);
        assert_eq!(
            got.snapshots.len(),
            2,
            "the container's snapshot and its parent"
        );
    }

    #[test]
    fn expired_leases_release_their_resources() {
        let dir = tempfile::tempdir().unwrap();
        let db = MetadataDb::open(dir.path()).unwrap();
        db.create_lease(
            "n",
            "old",
            labels(&[(crate::EXPIRE_LABEL, "2000-01-01T00:00:00Z")]),
        )
        .unwrap();
        db.create_lease(
            "n",
            "new",
            labels(&[(crate::EXPIRE_LABEL, "2999-01-01T00:00:00Z")]),
        )
        .unwrap();
        db.add_blob("n", &d('a'), 1, BTreeMap::new(), Some("old"))
            .unwrap();
        db.add_blob("n", &d('b'), 1, BTreeMap::new(), Some("new"))
            .unwrap();
        db.add_lease_resource(
            "n",
            "new",
            &crate::LeaseResource {
                id: "ref-1".into(),
                kind: "ingests".into(),
            },
        )
        .unwrap();
        let got = db.collect_garbage(crate::now_nanos()).unwrap();
        assert_eq!(got.leases, vec![("n".to_owned(), "old".to_owned())]);
        assert_eq!(got.blobs, vec![("n".to_owned(), d('a'))]);
        assert!(got
            .held_ingests
            .contains(&("n".to_owned(), "ref-1".to_owned())));
        assert_eq!(db.list_leases("n").unwrap().len(), 1);
    }
}
