//! `berthd check [--repair]` on a real root: an image imported with containerd's `ctr`, berthd
//! stopped, the root damaged by hand (a flipped byte in a layer blob, the overlay driver's
//! records lost); the check reports it and exits 1, the repair fixes it and exits 0, a second
//! check is clean, and berthd serves the image again once it is imported anew. A check while
//! berthd runs is refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use berth_tests::{bin, fixtures, ok, require_root, Berthd};

/// `berthd check <args> --root <root> --state <state>` on `berthd`'s directories.
fn check(berthd: &Berthd, args: &[&str]) -> Output {
    Command::new(bin("berthd"))
        .arg("check")
        .args(args)
        .arg("--root")
        .arg(berthd.root())
        .arg("--state")
        .arg(berthd.state())
        .output()
        .expect("run berthd check")
}

/// stdout of a check that must exit with `code`.
fn exits(out: &Output, code: i32) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "berthd check exit status:\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn flip_a_byte(path: &Path) {
    // Committed blobs are read-only.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Deletes the overlay driver's tables (its records of every snapshot) from the metadata
/// database, where berthd's drivers keep them.
fn drop_overlay_records(berthd: &Berthd) {
    let path = berthd
        .root()
        .join("io.containerd.metadata.v1.redb/meta.redb");
    let db = redb::Database::open(&path).unwrap();
    let wtx = db.begin_write().unwrap();
    for table in ["snapshots", "children", "meta"] {
        let name = format!("snapshotter/overlayfs/{table}");
        let dropped = match table {
            "children" => wtx
                .delete_table(redb::TableDefinition::<(&str, &str), ()>::new(&name))
                .unwrap(),
            "meta" => wtx
                .delete_table(redb::TableDefinition::<&str, u64>::new(&name))
                .unwrap(),
            _ => wtx
                .delete_table(redb::TableDefinition::<&str, &[u8]>::new(&name))
                .unwrap(),
        };
        assert!(dropped, "no table {name} in {}", path.display());
    }
    wtx.commit().unwrap();
}

#[test]
fn check_reports_and_repair_fixes_a_damaged_root() {
    require_root("overlay snapshots");
    let mut berthd = Berthd::start();
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) = fixtures::busybox_oci_archive(dir.path(), "docker.io/library/check:1");
    let archive = archive.display().to_string();
    ok(&berthd.ctr(&["images", "import", &archive]));

    // While berthd holds the root, nothing may touch its stores.
    let refused = check(&berthd, &[]);
    exits(&refused, 2);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("in use by another berthd"), "{stderr}");

    berthd.stop();
    let clean = exits(&check(&berthd, &[]), 0);
    assert!(clean.starts_with("check: clean;"), "{clean}");
    assert!(clean.contains("3 snapshot record(s)"), "{clean}");

    // The damage: one layer's bytes, and every overlay snapshot's driver entry.
    let layer = &img.layers[1].digest;
    let content = berthd.root().join("io.containerd.content.v1.content");
    flip_a_byte(
        &content
            .join("blobs/sha256")
            .join(fixtures::digest_hex(layer)),
    );
    drop_overlay_records(&berthd);

    let report = exits(&check(&berthd, &[]), 1);
    assert!(
        report
            .lines()
            .any(|l| l.starts_with(&format!("corrupt blob {layer} (its bytes hash to sha256:"))),
        "{report}"
    );
    let missing: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("missing snapshot overlayfs/sha256:"))
        .collect();
    assert_eq!(missing.len(), 3, "{report}");
    assert!(
        missing
            .iter()
            .all(|l| l.contains("(namespace default): the driver has no snapshot default/")),
        "{report}"
    );
    assert!(
        report.contains("check: 4 problem(s) found (berthd check --repair repairs them)"),
        "{report}"
    );

    let repaired = exits(&check(&berthd, &["--repair"]), 0);
    for line in [
        format!("repair: removed blob file {layer}"),
        format!("repair: deleted blob record {layer} (namespace default)"),
        format!("missing blob {layer} (namespace default)"),
        "repair: deleted snapshot record overlayfs/sha256:".to_owned(),
        "note: image docker.io/library/check:1 (namespace default) is incomplete".to_owned(),
        "0 remain;".to_owned(),
    ] {
        assert!(repaired.contains(&line), "{line:?} not in:\n{repaired}");
    }
    let again = exits(&check(&berthd, &[]), 0);
    assert!(again.starts_with("note: image"), "{again}");
    assert!(again.contains("check: clean;"), "{again}");

    // berthd starts on the repaired root, and a new import brings the image back whole.
    berthd.restart();
    let status = ok(&berthd.ctr(&["images", "check"]));
    assert!(status.contains("incomplete"), "{status}");
    ok(&berthd.ctr(&["images", "import", &archive]));
    let status = ok(&berthd.ctr(&["images", "check"]));
    assert!(
        status.contains("complete") && !status.contains("incomplete"),
        "{status}"
    );
    let snapshots = ok(&berthd.ctr(&["snapshots", "ls"]));
    assert_eq!(
        snapshots
            .lines()
            .filter(|l| l.contains("Committed"))
            .count(),
        3,
        "{snapshots}"
    );
    berthd.stop();
    let last = exits(&check(&berthd, &[]), 0);
    assert!(last.starts_with("check: clean;"), "{last}");
}
