//! Walk: every snapshot once, with what Stat reports, even when Stat is called inside it.

use std::collections::BTreeSet;

use berth_snapshotter::{Info, Kind};

use crate::scenario::*;
use crate::support::*;
use crate::{MakeSnapshotter, GC_ROOT};

/// Walk reports every snapshot once with its kind, parent and labels; the queries of
/// containerd's filter test (done here on the reported infos) select the same sets; returning
/// false stops the walk.
pub fn walk(make: &MakeSnapshotter) {
    let env = Env::new(make);
    let gc = || labels(&[(GC_ROOT, "check-walk")]);
    let gc_l = |l: &str| labels(&[(GC_ROOT, "check-walk"), ("l", l)]);
    env.prepare("a-np", "", gc()).must("prepare a-np");
    env.prepare("p-tmp", "", gc()).must("prepare p-tmp");
    env.commit("p", "p-tmp", gc()).must("commit p");
    env.prepare("a", "p", gc()).must("prepare a");
    env.view("v", "p", gc()).must("view v");
    env.prepare("p-wl-tmp", "", gc()).must("prepare p-wl-tmp");
    env.commit("p-wl", "p-wl-tmp", gc_l("1"))
        .must("commit p-wl");
    env.prepare("a-wl", "p-wl", gc_l("2")).must("prepare a-wl");
    env.view("v-wl", "p-wl", gc_l("3")).must("view v-wl");
    env.prepare("a-np-wl", "", gc_l("2"))
        .must("prepare a-np-wl");

    let all = walk_all(&*env);
    assert_eq!(
        all.len(),
        names(&all).len(),
        "walk reported a snapshot twice: {all:?}"
    );
    let expected = [
        ("a-np", Kind::Active, "", gc()),
        ("p", Kind::Committed, "", gc()),
        ("a", Kind::Active, "p", gc()),
        ("v", Kind::View, "p", gc()),
        ("p-wl", Kind::Committed, "", gc_l("1")),
        ("a-wl", Kind::Active, "p-wl", gc_l("2")),
        ("v-wl", Kind::View, "p-wl", gc_l("3")),
        ("a-np-wl", Kind::Active, "", gc_l("2")),
    ];
    assert_eq!(
        all.len(),
        expected.len(),
        "walk should list 8 snapshots: {all:?}"
    );
    for (name, kind, parent, labels) in &expected {
        let i = all
            .iter()
            .find(|i| i.name == *name)
            .unwrap_or_else(|| panic!("walk did not report {name:?}: {all:?}"));
        assert_info(i, name, *kind, parent);
        assert_eq!(&i.labels, labels, "walk: labels of {name:?}");
    }

    type Query = (&'static str, fn(&Info) -> bool, &'static [&'static str]);
    let gc_ok = |i: &Info| i.labels.get(GC_ROOT).map(String::as_str) == Some("check-walk");
    #[rustfmt::skip]
    let queries: [Query; 10] = [
        ("gc.root==check-walk",      |i| i.labels.get(GC_ROOT).is_some_and(|v| v == "check-walk"),
                                     &["a-np", "p", "a", "v", "p-wl", "a-wl", "v-wl", "a-np-wl"]),
        ("kind==active",             |i| i.kind == Some(Kind::Active), &["a-np", "a", "a-wl", "a-np-wl"]),
        ("kind==view",               |i| i.kind == Some(Kind::View), &["v", "v-wl"]),
        ("kind==committed",          |i| i.kind == Some(Kind::Committed), &["p", "p-wl"]),
        ("name==p or name==a-np-wl", |i| i.name == "p" || i.name == "a-np-wl", &["p", "a-np-wl"]),
        ("name==a-wl,labels.l",      |i| i.name == "a-wl" && i.labels.contains_key("l"), &["a-wl"]),
        ("parent==p",                |i| i.parent == "p", &["a", "v"]),
        ("parent!=\"\"",             |i| !i.parent.is_empty(), &["a", "v", "a-wl", "v-wl"]),
        ("labels.l",                 |i| i.labels.contains_key("l"), &["p-wl", "a-wl", "v-wl", "a-np-wl"]),
        ("labels.l==2",              |i| i.labels.get("l").is_some_and(|v| v == "2"), &["a-wl", "a-np-wl"]),
    ];
    for (query, pred, want) in queries {
        let got: BTreeSet<String> = all
            .iter()
            .filter(|i| gc_ok(i) && pred(i))
            .map(|i| i.name.clone())
            .collect();
        assert_eq!(got, set(want), "walk, query {query}");
    }

    let mut calls = 0;
    env.walk(&mut |_| {
        calls += 1;
        false
    })
    .must("walk that stops at once");
    assert_eq!(calls, 1, "walk must stop when the callback returns false");
}

/// Stat can be called from inside a walk callback and reports exactly what the walk does
/// (timestamps included).
pub fn stat_in_walk(make: &MakeSnapshotter) {
    let env = Env::new(make);
    let prefix = "stats-in-walk-";
    chain_with_active_and_view(&*env, prefix);
    let mut seen = 0;
    env.walk(&mut |i| {
        if i.name.starts_with(prefix) {
            let st = env
                .stat(&i.name)
                .must(&format!("stat {} inside walk", i.name));
            assert_eq!(&st, i, "stat inside walk differs from the walked info");
            seen += 1;
        }
        true
    })
    .must("walk");
    assert_eq!(seen, 4, "walk should report c1, c2, a1 and v1");
}
