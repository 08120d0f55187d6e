//! An in-memory [`Snapshotter`] for tests: keeps ids, parents, kinds and labels in a map, mounts
//! nothing, and fails the next call of a chosen operation on request, so the undo paths above it
//! can be exercised without root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use berth_snapshotter::{Info, Kind, Mount, SnapshotError, Snapshotter, Usage};

/// Operations whose next call can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Prepare,
    View,
    Commit,
    Remove,
    Adopt,
}

#[derive(Default)]
struct State {
    snapshots: BTreeMap<String, Info>,
    fail_next: HashSet<Op>,
    calls: HashMap<Op, usize>,
}

/// See the module documentation.
#[derive(Default)]
pub struct FakeSnapshotter {
    state: Mutex<State>,
}

impl FakeSnapshotter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next call of `op` fails with an internal error (and changes nothing).
    pub fn fail_next(&self, op: Op) {
        self.lock().fail_next.insert(op);
    }

    /// How many times `op` was called, failed calls included.
    pub fn calls(&self, op: Op) -> usize {
        self.lock().calls.get(&op).copied().unwrap_or(0)
    }

    /// The keys the driver holds, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock().snapshots.keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, op: Op) -> Result<std::sync::MutexGuard<'_, State>, SnapshotError> {
        let mut st = self.lock();
        *st.calls.entry(op).or_default() += 1;
        if st.fail_next.remove(&op) {
            return Err(SnapshotError::InvalidArgument(format!(
                "injected {op:?} failure"
            )));
        }
        Ok(st)
    }
}

impl Snapshotter for FakeSnapshotter {
    fn stat(&self, key: &str) -> Result<Info, SnapshotError> {
        self.lock()
            .snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))
    }

    fn update(&self, info: &Info, _paths: &[String]) -> Result<Info, SnapshotError> {
        let mut st = self.lock();
        let s = st
            .snapshots
            .get_mut(&info.name)
            .ok_or_else(|| SnapshotError::NotFound(info.name.clone()))?;
        s.labels = info.labels.clone();
        Ok(s.clone())
    }

    fn usage(&self, key: &str) -> Result<Usage, SnapshotError> {
        self.stat(key).map(|_| Usage::default())
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>, SnapshotError> {
        self.stat(key).map(|_| Vec::new())
    }

    fn create(
        &self,
        kind: Kind,
        key: &str,
        parent: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>, SnapshotError> {
        // Refused before counting: Committed is neither a Prepare nor a View.
        kind.ensure_creatable()?;
        let op = if kind == Kind::View {
            Op::View
        } else {
            Op::Prepare
        };
        let mut st = self.enter(op)?;
        if st.snapshots.contains_key(key) {
            return Err(SnapshotError::AlreadyExists(key.to_owned()));
        }
        if !parent.is_empty() {
            match st.snapshots.get(parent).and_then(|p| p.kind) {
                Some(Kind::Committed) => {}
                Some(_) => {
                    return Err(SnapshotError::InvalidArgument(format!(
                        "parent {parent} is not committed"
                    )))
                }
                None => return Err(SnapshotError::NotFound(parent.to_owned())),
            }
        }
        st.snapshots.insert(
            key.to_owned(),
            Info {
                name: key.to_owned(),
                parent: parent.to_owned(),
                kind: Some(kind),
                labels,
                created_at: 0,
                updated_at: 0,
            },
        );
        Ok(Vec::new())
    }

    fn commit(
        &self,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<(), SnapshotError> {
        let mut st = self.enter(Op::Commit)?;
        match st.snapshots.get(key).and_then(|s| s.kind) {
            Some(Kind::Active) => {}
            Some(_) => {
                return Err(SnapshotError::FailedPrecondition(format!(
                    "{key} is not active"
                )))
            }
            None => return Err(SnapshotError::NotFound(key.to_owned())),
        }
        if st.snapshots.contains_key(name) {
            return Err(SnapshotError::AlreadyExists(name.to_owned()));
        }
        let mut s = st
            .snapshots
            .remove(key)
            .ok_or_else(|| SnapshotError::NotFound(key.into()))?;
        s.name = name.to_owned();
        s.kind = Some(Kind::Committed);
        s.labels = labels;
        st.snapshots.insert(name.to_owned(), s);
        Ok(())
    }

    fn remove(&self, key: &str) -> Result<(), SnapshotError> {
        let mut st = self.enter(Op::Remove)?;
        if st.snapshots.values().any(|s| s.parent == key) {
            return Err(SnapshotError::FailedPrecondition(format!(
                "{key} has children"
            )));
        }
        st.snapshots
            .remove(key)
            .map(drop)
            .ok_or_else(|| SnapshotError::NotFound(key.to_owned()))
    }

    fn walk(&self, f: &mut dyn FnMut(&Info) -> bool) -> Result<(), SnapshotError> {
        let all: Vec<Info> = self.lock().snapshots.values().cloned().collect();
        for i in &all {
            if !f(i) {
                break;
            }
        }
        Ok(())
    }

    fn cleanup(&self) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn close(&self) -> Result<(), SnapshotError> {
        Ok(())
    }

    fn adopt(&self, key: &str, _staged: &std::path::Path) -> Result<(), SnapshotError> {
        drop(self.enter(Op::Adopt)?);
        self.stat(key).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepare_and_view_count_as_their_op_and_committed_is_refused() {
        let sn = FakeSnapshotter::new();
        sn.prepare("a", "", BTreeMap::new()).unwrap();
        sn.commit("A", "a", BTreeMap::new()).unwrap();
        sn.view("v", "A", BTreeMap::new()).unwrap();
        assert_eq!(sn.stat("v").unwrap().kind(), Kind::View);
        assert!(matches!(
            sn.create(Kind::Committed, "c", "A", BTreeMap::new()),
            Err(SnapshotError::InvalidArgument(_))
        ));
        assert_eq!((sn.calls(Op::Prepare), sn.calls(Op::View)), (1, 1));
        assert_eq!(sn.keys(), ["A", "v"]);
    }
}
