//! Issue 11, first step, end to end: the Containers service driven by containerd's own `ctr`,
//! side by side with a real containerd, and the collector keeping a container's snapshot.

use std::process::Output;

use berth_api::containers::{containers_client::ContainersClient, DeleteContainerRequest};
use berth_tests::{fails, fixtures, ok, require_root, Berthd, Containerd};

/// The keys of `ctr containers info`'s JSON, line by line (values differ: ids, timestamps).
fn keys(info: &str) -> Vec<String> {
    info.lines()
        .map(|l| l.split(':').next().unwrap_or("").trim().to_owned())
        .collect()
}

/// The ids column of `ctr containers ls` / `ctr snapshots ls`.
fn first_column(out: &str) -> Vec<String> {
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Exit code and stderr, without ctr's log timestamps (`time="…" `), which differ by the second.
fn status_and_stderr(out: &Output) -> (Option<i32>, String) {
    let stderr = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| match l.strip_prefix("time=\"") {
            Some(rest) => rest.split_once("\" ").map_or(l, |(_, after)| after),
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    (out.status.code(), stderr)
}

#[test]
fn ctr_containers_sequence_matches_containerd() {
    require_root("comparing ctr containers against containerd");
    let berthd = Berthd::start();
    let containerd = Containerd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:containers");
    let archive = archive.to_str().unwrap();
    type Ctr<'a> = Box<dyn Fn(&[&str]) -> Output + 'a>;
    let daemons: [(&str, Ctr); 2] = [
        ("berthd", Box::new(|a: &[&str]| berthd.ctr(a))),
        ("containerd", Box::new(|a: &[&str]| containerd.ctr(a))),
    ];
    let mut infos = Vec::new();
    let mut failures = Vec::new();
    for (name, ctr) in &daemons {
        ok(&ctr(&["images", "import", archive]));
        ok(&ctr(&[
            "containers",
            "create",
            "--snapshotter",
            "overlayfs",
            &img.name,
            "c1",
            "/bin/true",
        ]));
        let ls = ok(&ctr(&["containers", "ls"]));
        assert_eq!(first_column(&ls), ["c1"], "{name}: {ls}");
        assert!(ls.contains(&img.name), "{name}: {ls}");
        infos.push(ok(&ctr(&["containers", "info", "c1"])));
        ok(&ctr(&["containers", "label", "c1", "a=b"]));
        let info = ok(&ctr(&["containers", "info", "c1"]));
        assert!(info.contains("\"a\": \"b\""), "{name}: {info}");
        let again = ctr(&[
            "containers",
            "create",
            "--snapshotter",
            "overlayfs",
            &img.name,
            "c1",
            "/bin/true",
        ]);
        fails(&again);
        let missing = ctr(&["containers", "rm", "missing"]);
        fails(&missing);
        failures.push((status_and_stderr(&again), status_and_stderr(&missing)));
        ok(&ctr(&["containers", "rm", "c1"]));
        let ls = ok(&ctr(&["containers", "ls"]));
        assert!(first_column(&ls).is_empty(), "{name}: {ls}");
        let snaps = ok(&ctr(&["snapshots", "ls"]));
        assert!(
            !first_column(&snaps).contains(&"c1".to_owned()),
            "{name}: ctr rm removes the snapshot too:\n{snaps}"
        );
    }
    assert_eq!(
        keys(&infos[0]),
        keys(&infos[1]),
        "berthd:\n{}\ncontainerd:\n{}",
        infos[0],
        infos[1]
    );
    assert_eq!(failures[0], failures[1], "exit codes and stderr");
}

#[test]
fn a_container_keeps_its_snapshot_from_the_collector() {
    require_root("unpacking an image into overlayfs");
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:gc");
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
    ok(&berthd.ctr(&["containers", "create", &img.name, "c2", "/bin/true"]));
    ok(&berthd.ctr(&["images", "rm", &img.name]));
    ok(&berthd.bctr(&["gc"]));
    let snaps = first_column(&ok(&berthd.ctr(&["snapshots", "ls"])));
    assert!(snaps.contains(&"c2".to_owned()), "{snaps:?}");
    assert!(snaps.len() >= 2, "and its parent chain: {snaps:?}");

    // Remove the record alone (ctr would also remove the snapshot): the collector frees it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ch = berthd.channel().await;
        ContainersClient::new(ch)
            .delete(bctr::client::request(
                "default",
                DeleteContainerRequest { id: "c2".into() },
            ))
            .await
            .unwrap();
    });
    ok(&berthd.bctr(&["gc"]));
    let snaps = first_column(&ok(&berthd.ctr(&["snapshots", "ls"])));
    assert!(snaps.is_empty(), "{snaps:?}");
}
