//! Labels: Update by field paths, and the labels Commit gives a committed snapshot.

use berth_snapshotter::Kind;

use crate::scenario::*;
use crate::support::*;
use crate::{MakeSnapshotter, GC_ROOT};

/// Update replaces all labels (no field path or `labels`) or single ones (`labels.<k>`; a key
/// absent from the request is deleted), never the parent; an unknown path is InvalidArgument
/// and changes nothing. created_at never moves; updated_at moves forward on each update. Checked
/// on committed, active and view snapshots with and without parent.
pub fn update(make: &MakeSnapshotter) {
    let env = Env::new(make);
    let t1 = now_nanos();
    chain_with_active_and_view(&*env, "");
    env.prepare("a2", "", gc_root()).must("prepare a2");
    env.view("v2", "", gc_root()).must("view v2");
    let t2 = now_nanos();

    let cases = [
        ("c1", Kind::Committed, ""),
        ("c2", Kind::Committed, "c1"),
        ("a1", Kind::Active, "c2"),
        ("a2", Kind::Active, ""),
        ("v1", Kind::View, "c2"),
        ("v2", Kind::View, ""),
    ];
    for (name, kind, parent) in cases {
        let st = env.stat(name).must(&format!("stat {name}"));
        assert!(
            t1 <= st.created_at && st.created_at <= t2,
            "{name}: created_at {} is not between {t1} and {t2}",
            st.created_at
        );
        assert_eq!(
            st.created_at, st.updated_at,
            "{name}: updated_at right after creation"
        );
        assert_info(&st, name, kind, parent);
        let created = st.created_at;

        // No field path: all labels replaced; the parent in the request is ignored.
        let want = labels(&[
            ("l1", "v1"),
            ("l2", "v2"),
            ("l3", "v3"),
            (GC_ROOT, "updated"),
        ]);
        let mut req = st.clone();
        req.parent = "doesnotexist".into();
        req.labels = want.clone();
        tick();
        let u1 = now_nanos();
        let st = env.update(&req, &[]).must(&format!("update {name}"));
        let u2 = now_nanos();
        assert_eq!(st.created_at, created, "{name}: update moved created_at");
        assert!(
            u1 <= st.updated_at && st.updated_at <= u2,
            "{name}: updated_at {} is not between {u1} and {u2}",
            st.updated_at
        );
        assert_info(&st, name, kind, parent);
        assert_eq!(st.labels, want, "{name}: labels after replacing them all");
        assert_eq!(env.stat(name).must("stat"), st, "{name}: stat after update");

        // `labels.<k>` paths: l1 set, l2 (absent from the request) deleted, l4 not touched.
        let mut req = st.clone();
        req.labels = labels(&[("l1", "updated"), ("l4", "v4")]);
        tick();
        let before = st.updated_at;
        let st = env
            .update(&req, &["labels.l1".into(), "labels.l2".into()])
            .must(&format!("update {name} by label paths"));
        let want = labels(&[("l1", "updated"), ("l3", "v3"), (GC_ROOT, "updated")]);
        assert_eq!(
            st.labels, want,
            "{name}: labels after updating labels.l1 and labels.l2"
        );
        assert!(
            st.updated_at > before,
            "{name}: updated_at did not move forward"
        );
        assert_eq!(st.created_at, created, "{name}: update moved created_at");

        // `labels`: all replaced.
        let mut req = st.clone();
        req.labels = labels(&[("l4", "v4"), (GC_ROOT, "updated")]);
        let st = env
            .update(&req, &["labels".into()])
            .must(&format!("update {name} by the labels path"));
        assert_eq!(
            st.labels, req.labels,
            "{name}: labels after updating `labels`"
        );

        // An immutable field: InvalidArgument, nothing changed.
        let mut req = st.clone();
        req.parent = "doesnotexist".into();
        req.labels = labels(&[("l5", "v5")]);
        expect_err!(
            env.update(&req, &["parent".into()]),
            InvalidArgument,
            "update of {name} with field path \"parent\""
        );
        assert_eq!(
            env.stat(name).must("stat"),
            st,
            "{name}: a failed update changed it"
        );
    }
}

/// Commit's labels replace the active snapshot's labels, they are not merged with them
/// (containerd's `CommitActive`: "Replace labels, do not inherit").
pub fn commit_labels(make: &MakeSnapshotter) {
    let env = Env::new(make);
    env.prepare("a", "", labels(&[("from-prepare", "1"), (GC_ROOT, "p")]))
        .must("prepare");
    env.commit("c", "a", labels(&[("from-commit", "2")]))
        .must("commit");
    assert_eq!(
        env.stat("c").must("stat").labels,
        labels(&[("from-commit", "2")]),
        "labels of a committed snapshot are the ones given to commit"
    );
}
