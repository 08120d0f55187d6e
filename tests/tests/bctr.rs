//! bctr against berthd: each command gives what containerd's `ctr` gives on the same daemon, and
//! Berth's own commands (gc, images mount) work end to end.

use std::process::Command;

use berth_tests::{bin, fails, fixtures, ok, output_with_stdin, require_root, Berthd};

fn bctr_stdin(berthd: &Berthd, args: &[&str], input: &[u8]) -> std::process::Output {
    output_with_stdin(
        Command::new(bin("bctr"))
            .arg("--address")
            .arg(berthd.socket())
            .args(args),
        input,
    )
}

#[test]
fn content_commands_agree_with_ctr() {
    let berthd = Berthd::start();
    let data = b"bctr content\n";
    let digest = fixtures::sha256_digest(data);
    ok(&bctr_stdin(&berthd, &["content", "ingest", "r1"], data));
    assert_eq!(
        ok(&berthd.bctr(&["content", "ls", "-q"])),
        ok(&berthd.ctr(&["content", "ls", "-q"]))
    );
    assert_eq!(
        ok(&berthd.bctr(&["content", "get", &digest])).as_bytes(),
        data
    );
    ok(&berthd.bctr(&["content", "label", &digest, "a=1"]));
    let ls = ok(&berthd.ctr(&["content", "ls"]));
    assert!(ls.contains("a=1"), "{ls}");
    ok(&berthd.bctr(&["content", "rm", &digest]));
    assert_eq!(ok(&berthd.ctr(&["content", "ls", "-q"])), "");
    // Wrong expected digest: refused, nothing committed.
    let wrong = fixtures::sha256_digest(b"other");
    let out = bctr_stdin(
        &berthd,
        &["content", "ingest", "--expected-digest", &wrong, "r2"],
        data,
    );
    assert!(
        fails(&out).contains("unexpected commit digest"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(ok(&berthd.ctr(&["content", "ls", "-q"])), "");
}

#[test]
fn import_export_round_trip_with_ctr() {
    let dir = tempfile::tempdir().unwrap();
    let (img, oci) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:bctr");
    let docker = fixtures::busybox_image("docker.io/library/busybox:bctr-docker");
    let docker_tar = dir.path().join("docker.tar");
    fixtures::write_docker_archive(&docker_tar, &docker);
    let berthd = Berthd::start();
    ok(&berthd.bctr(&["images", "import", "--no-unpack", oci.to_str().unwrap()]));
    ok(&berthd.bctr(&[
        "images",
        "import",
        "--no-unpack",
        docker_tar.to_str().unwrap(),
    ]));
    assert_eq!(
        ok(&berthd.bctr(&["images", "ls"])),
        ok(&berthd.ctr(&["images", "ls"]))
    );
    // bctr's export imports into containerd's ctr unchanged, with the same target.
    let exported = dir.path().join("export.tar");
    ok(&berthd.bctr(&["images", "export", exported.to_str().unwrap(), &img.name]));
    ok(&berthd.ctr(&[
        "-n",
        "other",
        "images",
        "import",
        "--no-unpack",
        exported.to_str().unwrap(),
    ]));
    let theirs = ok(&berthd.ctr(&["-n", "other", "images", "ls"]));
    assert!(theirs.contains(&img.manifest.digest), "{theirs}");
    // And ctr's export imports with bctr.
    let by_ctr = dir.path().join("ctr-export.tar");
    ok(&berthd.ctr(&["images", "export", by_ctr.to_str().unwrap(), &docker.name]));
    ok(&berthd.bctr(&[
        "-n",
        "third",
        "images",
        "import",
        "--no-unpack",
        by_ctr.to_str().unwrap(),
    ]));
    assert_eq!(
        ok(&berthd.bctr(&["-n", "third", "images", "ls", "-q"])),
        format!("{}\n", docker.name)
    );
}

#[test]
fn leases_and_gc() {
    let berthd = Berthd::start();
    assert_eq!(
        ok(&berthd.bctr(&["leases", "create", "--id", "l1"])),
        "l1\n"
    );
    assert_eq!(ok(&berthd.bctr(&["leases", "ls", "-q"])), "l1\n");
    assert_eq!(
        ok(&berthd.bctr(&["leases", "ls"])),
        ok(&berthd.ctr(&["leases", "ls"]))
    );
    ok(&berthd.bctr(&["leases", "rm", "l1"]));
    assert_eq!(ok(&berthd.ctr(&["leases", "ls", "-q"])), "");

    // Content nothing refers to, written without a lease: nothing triggers a collection, so it
    // stays until one runs; bctr gc runs one and must name it.
    let data = b"garbage\n";
    let digest = fixtures::sha256_digest(data);
    ok(&bctr_stdin(&berthd, &["content", "ingest", "junk"], data));
    assert_eq!(
        ok(&berthd.ctr(&["content", "ls", "-q"])),
        format!("{digest}\n")
    );
    let out = ok(&berthd.bctr(&["gc"]));
    assert!(out.contains(&format!("content  default {digest}")), "{out}");
    assert!(
        out.lines()
            .last()
            .unwrap()
            .starts_with("freed 8B in 1 files"),
        "{out}"
    );
    assert_eq!(ok(&berthd.ctr(&["content", "ls", "-q"])), "");
}

#[test]
fn images_mount_and_unmount() {
    require_root("mounting an image");
    let dir = tempfile::tempdir().unwrap();
    let (img, oci) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:mount");
    let berthd = Berthd::start();
    ok(&berthd.bctr(&["images", "import", "--no-unpack", oci.to_str().unwrap()]));
    for sn in ["overlayfs", "native"] {
        let target = dir.path().join(format!("mnt-{sn}"));
        std::fs::create_dir(&target).unwrap();
        let t = target.to_str().unwrap();
        let out = ok(&berthd.bctr(&["images", "mount", "--snapshotter", sn, &img.name, t]));
        assert!(out.ends_with(&format!("{t}\n")), "{out}");
        assert_eq!(
            std::fs::read_to_string(target.join("etc/layer3")).unwrap(),
            "layer 3\n"
        );
        assert!(!target.join("etc/motd").exists(), "whiteout not applied");
        assert!(
            std::fs::write(target.join("new"), b"x").is_err(),
            "read-only mount is writable"
        );
        ok(&berthd.bctr(&["images", "unmount", "--rm", "--snapshotter", sn, t]));
        assert!(!target.join("etc").exists(), "still mounted");
        let left = ok(&berthd.bctr(&["snapshots", "--snapshotter", sn, "ls"]));
        assert!(!left.contains(t), "mount snapshot left behind:\n{left}");
        assert_eq!(
            ok(&berthd.bctr(&["snapshots", "--snapshotter", sn, "ls"])),
            ok(&berthd.ctr(&["snapshots", "--snapshotter", sn, "ls"]))
        );
    }
}

#[test]
fn content_fetch_blob_from_a_file_verifies_the_digest() {
    let berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    let digest = fixtures::write_large_blob(&path, 3 << 20, 11);
    let p = path.to_str().unwrap();
    assert_eq!(
        ok(&berthd.bctr(&["content", "fetch-blob", "--file", p, &digest])),
        format!("{digest}\n")
    );
    let got = berthd.ctr(&["content", "get", &digest]);
    assert!(got.stdout == std::fs::read(&path).unwrap());
    // Again: already there, nothing to do.
    ok(&berthd.bctr(&["content", "fetch-blob", "--file", p, &digest]));
    // A file that is not the blob.
    let wrong = fixtures::sha256_digest(b"something else");
    let err = fails(&berthd.bctr(&["content", "fetch-blob", "--file", p, &wrong]));
    assert!(err.contains("unexpected commit"), "{err}");
}

#[test]
fn image_archive_with_an_oversized_tar_header_is_refused() {
    // Issue 15, defect 5, on bctr's client-side import: a PAX header declaring 64 MiB in a
    // stream of a few blocks fails at once, before anything is buffered or written.
    require_root("starting berthd");
    let berthd = Berthd::start();
    let mut header = tar::Header::new_ustar();
    header.set_path("PaxHeaders/huge").unwrap();
    header.set_entry_type(tar::EntryType::XHeader);
    header.set_size(64 << 20);
    header.set_mode(0o644);
    header.set_cksum();
    let mut archive = header.as_bytes().to_vec();
    archive.extend_from_slice(&[b'9'; 4096]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hostile.tar");
    std::fs::write(&path, &archive).unwrap();
    let err = fails(&berthd.bctr(&["images", "import", path.to_str().unwrap()]));
    assert!(err.contains("extension header"), "{err}");
    assert_eq!(ok(&berthd.bctr(&["images", "ls", "-q"])).trim(), "");
}

/// `--format json` on every listing: one array of objects with the full values, and
/// `--format table` is exactly the default output.
#[test]
fn listings_in_json() {
    require_root("unpacking an image into overlayfs snapshots");
    let dir = tempfile::tempdir().unwrap();
    let (img, oci) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:json");
    let berthd = Berthd::start();
    ok(&berthd.bctr(&["images", "import", oci.to_str().unwrap()]));
    ok(&berthd.bctr(&["leases", "create", "--id", "l-json", "a=b"]));
    ok(&berthd.bctr(&["containers", "create", &img.name, "c-json", "/bin/true"]));
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut with: Vec<&str> = args.to_vec();
        with.extend(["--format", "json"]);
        let out = ok(&berthd.bctr(&with));
        let v: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        let mut table = args.to_vec();
        table.extend(["--format", "table"]);
        assert_eq!(ok(&berthd.bctr(&table)), ok(&berthd.bctr(args)), "{args:?}");
        v.as_array()
            .unwrap_or_else(|| panic!("not an array: {out}"))
            .clone()
    };
    let find = |rows: &[serde_json::Value], key: &str, val: &str| -> serde_json::Value {
        rows.iter()
            .find(|r| r[key] == val)
            .unwrap_or_else(|| panic!("no {key}={val} in {rows:?}"))
            .clone()
    };

    let plugins = json(&["plugins", "ls"]);
    let overlay = plugins
        .iter()
        .find(|p| p["type"] == "io.containerd.snapshotter.v1" && p["id"] == "overlayfs")
        .unwrap_or_else(|| panic!("{plugins:?}"));
    assert!(overlay["status"].is_string() && overlay["platforms"].is_array());

    let ns = json(&["namespaces", "ls"]);
    assert!(find(&ns, "name", "default")["labels"].is_object());

    let images = json(&["images", "ls"]);
    let i = find(&images, "name", &img.name);
    assert_eq!(i["digest"], img.manifest_digest.as_str());
    assert!(i["size"].as_i64().unwrap() > 0, "{i}");
    assert!(i["platforms"].is_array() && i["labels"].is_object());
    let check = json(&["images", "check"]);
    let c = find(&check, "name", &img.name);
    assert_eq!(c["status"], "complete");
    assert_eq!(c["unpacked"], true);

    let content = json(&["content", "ls"]);
    let blob = find(&content, "digest", &img.config_digest);
    assert_eq!(blob["size"].as_u64().unwrap(), img.config_size);
    let created = blob["created_at"].as_str().unwrap();
    assert!(chrono_like_rfc3339(created), "{created}");
    assert!(json(&["content", "active"]).is_empty());

    let leases = json(&["leases", "ls"]);
    assert_eq!(find(&leases, "id", "l-json")["labels"]["a"], "b");

    // The rootfs chain: chain[0] = diff_id[0], chain[n] = sha256("chain[n-1] diff_id[n]").
    let snapshots = json(&["snapshots", "ls"]);
    let mut chain = String::new();
    for layer in &img.layers {
        let parent = chain.clone();
        chain = if chain.is_empty() {
            layer.diff_id.clone()
        } else {
            fixtures::sha256_digest(format!("{chain} {}", layer.diff_id).as_bytes())
        };
        let s = find(&snapshots, "key", &chain);
        assert_eq!(s["parent"], parent.as_str());
        assert_eq!(s["kind"], "Committed");
    }
    assert_eq!(find(&snapshots, "key", "c-json")["kind"], "Active");

    let containers = json(&["containers", "ls"]);
    assert_eq!(
        find(&containers, "id", "c-json")["image"],
        img.name.as_str()
    );
    assert!(json(&["tasks", "ls"]).is_empty());

    // -q wins over --format.
    assert_eq!(
        ok(&berthd.bctr(&["leases", "ls", "-q", "--format", "json"])),
        "l-json\n"
    );
}

fn chrono_like_rfc3339(s: &str) -> bool {
    s.len() >= 20 && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T' && s.ends_with('Z')
}
