//! Events reach `ctr events` subscribers as containerd's clients decode them.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_tests::{fixtures, ok, require_program, Berthd};

#[test]
fn ctr_events_sees_namespace_and_image_changes() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:events");

    let out_path = dir.path().join("events.out");
    let mut sub = Command::new(require_program("ctr", "containerd"))
        .arg("--address")
        .arg(berthd.socket())
        .args(["events", "topic~=^/(namespaces|images)/"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The subscription is live once a probe event shows up.
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
    ok(&berthd.ctr(&["images", "import", "--no-unpack", archive.to_str().unwrap()]));
    ok(&berthd.ctr(&["images", "rm", &img.name]));
    let want = [
        format!("default /images/create {{\"name\":\"{}\"}}", img.name),
        format!("default /images/delete {{\"name\":\"{}\"}}", img.name),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = std::fs::read_to_string(&out_path).unwrap();
        if want.iter().all(|w| got.contains(w.as_str())) {
            assert!(!got.contains("/content/"), "filter not applied:\n{got}");
            break;
        }
        assert!(Instant::now() < deadline, "missing events; got:\n{got}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sub.kill();
    let _ = sub.wait();
}

#[test]
fn ctr_events_sees_snapshot_changes() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("events.out");
    let mut sub = Command::new(require_program("ctr", "containerd"))
        .arg("--address")
        .arg(berthd.socket())
        .args(["events", "topic~=^/(snapshot|namespaces)/"])
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = std::fs::read_to_string(&out_path).unwrap();
        if want.iter().all(|w| got.matches(w).count() == 2) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "missing snapshot events; got:\n{got}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = sub.kill();
    let _ = sub.wait();
}
