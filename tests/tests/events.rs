//! Events reach `ctr events` subscribers as containerd's clients decode them.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{fixtures, ok, require_program, Berthd};

/// `ctr events FILTER` against `berthd`, writing to a file; returns once the subscription is live
/// (a probe namespace's `/namespaces/create` shows up, so FILTER must let that topic through).
fn subscribe(berthd: &Berthd, dir: &Path, filter: &str) -> (Child, PathBuf) {
    let out_path = dir.join("events.out");
    let sub = Command::new(require_program("ctr", "containerd"))
        .arg("--address")
        .arg(berthd.socket())
        .args(["events", filter])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while !std::fs::read_to_string(&out_path)
        .unwrap()
        .contains("/namespaces/create")
    {
        assert!(Instant::now() < deadline, "ctr events never saw an event");
        ok(&berthd.ctr(&["namespaces", "create", &format!("probe{n}")]));
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    (sub, out_path)
}

/// Waits until `done` accepts what the subscriber printed; returns it.
fn wait_for(out_path: &Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = std::fs::read_to_string(out_path).unwrap();
        if done(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "missing {what}; got:\n{got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ctr_events_sees_namespace_and_image_changes() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:events");

    let (mut sub, out_path) = subscribe(&berthd, dir.path(), "topic~=^/(namespaces|images)/");
    ok(&berthd.ctr(&["images", "import", "--no-unpack", archive.to_str().unwrap()]));
    ok(&berthd.ctr(&["images", "rm", &img.name]));
    let want = [
        format!("default /images/create {{\"name\":\"{}\"}}", img.name),
        format!("default /images/delete {{\"name\":\"{}\"}}", img.name),
    ];
    let got = wait_for(&out_path, "image events", |got| {
        want.iter().all(|w| got.contains(w.as_str()))
    });
    assert!(!got.contains("/content/"), "filter not applied:\n{got}");
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn ctr_events_sees_snapshot_changes() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut sub, out_path) = subscribe(&berthd, dir.path(), "topic~=^/(snapshot|namespaces)/");
    for sn in ["overlayfs", "native"] {
        ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "prepare", "a"]));
        ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "commit", "A", "a"]));
        ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "rm", "A"]));
    }
    // containerd 1.6's ctr decodes these events without the newer `snapshotter` field.
    let want = [
        r#"default /snapshot/prepare {"key":"a"}"#,
        r#"default /snapshot/commit {"key":"a","name":"A"}"#,
        r#"default /snapshot/remove {"key":"A"}"#,
    ];
    wait_for(&out_path, "snapshot events", |got| {
        want.iter().all(|w| got.matches(w).count() == 2)
    });
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn the_daemon_side_unpack_publishes_snapshot_events() {
    // bctr's import unpacks inside berthd, through the same namespaced snapshots instance as the
    // snapshots service, so subscribers see its snapshots as they see ctr's.
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:unpackevents");
    let (mut sub, out_path) = subscribe(&berthd, dir.path(), "topic~=^/(snapshot|namespaces)/");
    ok(&berthd.bctr(&["images", "import", archive.to_str().unwrap()]));
    let chain = ok(&berthd.ctr(&["snapshots", "ls"]));
    let names: Vec<&str> = chain
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!names.is_empty(), "{} unpacked nothing:\n{chain}", img.name);
    let got = wait_for(&out_path, "unpack's snapshot events", |got| {
        names
            .iter()
            .all(|n| got.contains(&format!(r#""name":"{n}""#)))
    });
    assert!(got.contains("default /snapshot/prepare"), "{got}");
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn ctr_events_sees_container_changes() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:containerevents");
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
    let (mut sub, out_path) = subscribe(&berthd, dir.path(), "topic~=^/(containers|namespaces)/");
    ok(&berthd.ctr(&["containers", "create", &img.name, "ev1", "/bin/true"]));
    ok(&berthd.ctr(&["containers", "label", "ev1", "k=v"]));
    ok(&berthd.ctr(&["containers", "rm", "ev1"]));
    let got = wait_for(&out_path, "container events", |got| {
        [
            "/containers/create",
            "/containers/update",
            "/containers/delete",
        ]
        .iter()
        .all(|t| got.contains(&format!("default {t} ")))
    });
    // ctr decodes the messages: the create names the container and its image.
    let create = got
        .lines()
        .find(|l| l.contains("/containers/create"))
        .unwrap_or_default();
    assert!(
        create.contains(r#""id":"ev1""#) && create.contains(&img.name),
        "{create}"
    );
    let _ = sub.kill();
    let _ = sub.wait();
}
