//! Proxy snapshotters both ways: berthd using a snapshotter in another process, and a real
//! containerd using Berth's overlayfs snapshotter (`berthd snapshotter serve`) to run a container.

use berth_tests::{
    fixtures, ok, require_program, require_root, Berthd, Containerd, SnapshotterServer,
};

#[test]
fn berthd_unpacks_into_a_proxy_snapshotter_and_collects_through_it() {
    require_root("mounting snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:proxied");
    let server = SnapshotterServer::start("overlayfs");
    let cfg = dir.path().join("berthd.toml");
    std::fs::write(
        &cfg,
        format!(
            "version = 2\n[proxy_plugins.remote]\n  type = \"snapshot\"\n  address = \"{}\"\n",
            server.socket().display()
        ),
    )
    .unwrap();
    let berthd = Berthd::start_with(&["--config", cfg.to_str().unwrap()]);
    let plugins = ok(&berthd.ctr(&["plugins", "ls", "id==remote"]));
    assert!(
        plugins.contains("io.containerd.snapshotter.v1    remote") && plugins.contains(" ok"),
        "{plugins}"
    );
    ok(&berthd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "remote",
        archive.to_str().unwrap(),
    ]));
    assert_eq!(
        ok(&berthd.ctr(&["snapshots", "--snapshotter", "remote", "ls"]))
            .lines()
            .count(),
        4
    );
    // The snapshots live in the other process's root.
    assert_eq!(
        std::fs::read_dir(server.snapshots_dir("overlayfs"))
            .unwrap()
            .count(),
        3
    );
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    ok(&berthd.bctr(&["images", "mount", "--snapshotter", "remote", &img.name, m]));
    assert_eq!(
        std::fs::read_to_string(mnt.join("etc/layer3")).unwrap(),
        "layer 3\n"
    );
    ok(&berthd.bctr(&["images", "unmount", "--rm", "--snapshotter", "remote", m]));
    ok(&berthd.ctr(&["images", "rm", "--sync", &img.name]));
    assert_eq!(
        ok(&berthd.ctr(&["snapshots", "--snapshotter", "remote", "ls"])),
        "KEY PARENT KIND \n"
    );
    assert_eq!(
        std::fs::read_dir(server.snapshots_dir("overlayfs"))
            .unwrap()
            .count(),
        0,
        "left on the proxy"
    );
}

#[test]
fn containerd_runs_a_container_on_berths_overlayfs() {
    require_root("running a container with containerd");
    require_program("runc", "runc");
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:proxy-run");
    let server = SnapshotterServer::start("overlayfs");
    let containerd = Containerd::start_with(&format!(
        "[proxy_plugins.berth]\n  type = \"snapshot\"\n  address = \"{}\"\n",
        server.socket().display()
    ));
    ok(&containerd.ctr(&[
        "images",
        "import",
        "--snapshotter",
        "berth",
        archive.to_str().unwrap(),
    ]));
    let out = containerd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "berth",
        &img.name,
        "t1",
        "/bin/true",
    ]);
    assert!(
        out.status.success(),
        "ctr run failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ok(&containerd.ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "berth",
        &img.name,
        "t2",
        "/bin/sh",
        "-c",
        "cat /etc/layer3; ls /opt/app",
    ]));
    assert_eq!(out, "layer 3\nnew.txt\n");
    // containerd removes a deleted container's snapshot from the proxy in its next collection,
    // which runs just after the delete.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(server.snapshots_dir("overlayfs"))
        .unwrap()
        .count()
        != 3
    {
        assert!(
            std::time::Instant::now() < deadline,
            "container snapshots not removed from the proxy"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
