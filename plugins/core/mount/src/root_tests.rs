//! Real mounts: these tests need root and say so, rather than passing without checking anything.

use std::fs;
use std::path::Path;

use nix::errno::Errno;

use crate::{mount_all, unmount_all, Mount, MountError, OverlayOptions, TempMount};

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts filesystems and needs root: run `cargo test -p berth-mount` as root"
    );
}

/// Whether `path` is a mount point now, from /proc/self/mountinfo.
fn is_mount_point(path: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let path = path.to_str().expect("test paths are UTF-8");
    info.lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|p| p == path))
}

fn bind(source: &Path, options: &[&str]) -> Mount {
    Mount {
        mount_type: "bind".into(),
        source: source.display().to_string(),
        target: String::new(),
        options: options.iter().map(|s| s.to_string()).collect(),
    }
}

fn assert_read_only(dir: &Path) {
    let err = fs::write(dir.join("new"), b"x").expect_err("a read-only mount took a write");
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

#[test]
fn a_read_only_bind_shows_its_source_and_refuses_writes() {
    require_root();
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("f"), b"hello").unwrap();
    let m = TempMount::new(&[bind(src.path(), &["ro", "rbind"])]).unwrap();
    let mounted = m.path().to_owned();
    assert!(is_mount_point(&mounted));
    assert_eq!(fs::read(mounted.join("f")).unwrap(), b"hello");
    assert_read_only(&mounted);
    drop(m);
    assert!(!is_mount_point(&mounted));
    assert!(!mounted.exists(), "the temporary mount point stays");
    assert_eq!(fs::read(src.path().join("f")).unwrap(), b"hello");
}

#[test]
fn unmount_all_takes_off_every_stacked_mount_and_accepts_none() {
    require_root();
    let (a, b, target) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    fs::write(a.path().join("a"), b"").unwrap();
    fs::write(b.path().join("b"), b"").unwrap();
    mount_all(
        &[bind(a.path(), &["rbind"]), bind(b.path(), &["ro", "rbind"])],
        target.path(),
    )
    .unwrap();
    // The later mount stacks on the earlier one.
    assert!(target.path().join("b").exists());
    assert!(!target.path().join("a").exists());
    unmount_all(target.path()).unwrap();
    assert!(!is_mount_point(target.path()));
    assert!(fs::read_dir(target.path()).unwrap().next().is_none());
    unmount_all(target.path()).unwrap();
}

#[test]
fn a_failed_mount_reports_its_step_and_errno() {
    require_root();
    let target = tempfile::tempdir().unwrap();
    let missing = target.path().join("missing");
    let err = bind(&missing, &["rbind"]).mount(target.path()).unwrap_err();
    assert!(
        matches!(
            &err,
            MountError::Mount {
                op: "bind mount",
                source: Errno::ENOENT,
                ..
            }
        ),
        "{err:?}"
    );
    let io = std::error::Error::source(&err).expect("the errno is kept as the source");
    assert_eq!(io.to_string(), Errno::ENOENT.to_string());
    let err = TempMount::new(&[bind(&missing, &[])]).unwrap_err();
    assert_eq!(err.errno(), Some(Errno::ENOENT));
}

/// Layers `0..n`, each with a file of its own and a `shared` file naming the layer, under
/// directory names long enough for `n` of them to overflow a page.
fn layers(root: &Path, n: usize) -> Vec<std::path::PathBuf> {
    (0..n)
        .map(|i| {
            let d = root.join(format!("layer-{i:03}-{}", "d".repeat(40)));
            fs::create_dir(&d).unwrap();
            fs::write(d.join(format!("own-{i}")), b"").unwrap();
            fs::write(d.join("shared"), i.to_string()).unwrap();
            d
        })
        .collect()
}

fn overlay(lower_nearest_first: Vec<std::path::PathBuf>, upper: Option<&Path>) -> Mount {
    let o = OverlayOptions {
        upperdir: upper.map(|u| u.join("fs")),
        workdir: upper.map(|u| u.join("work")),
        lowerdirs: lower_nearest_first,
        ..Default::default()
    };
    if let Some(u) = upper {
        fs::create_dir_all(u.join("fs")).unwrap();
        fs::create_dir_all(u.join("work")).unwrap();
    }
    let mut options = o.to_options();
    if upper.is_none() {
        options.insert(0, "ro".into());
    }
    Mount {
        mount_type: "overlay".into(),
        source: "overlay".into(),
        target: String::new(),
        options,
    }
}

fn check_stack(dir: &Path, n: usize) {
    for i in 0..n {
        assert!(dir.join(format!("own-{i}")).exists(), "layer {i} missing");
    }
    // The nearest layer (the last made) wins.
    assert_eq!(
        fs::read_to_string(dir.join("shared")).unwrap(),
        (n - 1).to_string()
    );
}

#[test]
fn an_overlay_within_a_page_stacks_its_layers_and_writes_to_the_upper() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let mut lower = layers(root.path(), 3);
    lower.reverse();
    let upper = root.path().join("upper");
    let m = overlay(lower, Some(&upper));
    assert!(m.options.join(",").len() <= crate::plan::PAGE_LIMIT);
    let t = TempMount::new(&[m]).unwrap();
    check_stack(t.path(), 3);
    fs::write(t.path().join("written"), b"w").unwrap();
    drop(t);
    assert_eq!(fs::read(upper.join("fs/written")).unwrap(), b"w");
}

#[test]
fn an_overlay_over_a_page_goes_through_lowerdir_plus() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let n = 100;
    let mut lower = layers(root.path(), n);
    lower.reverse();
    let m = overlay(lower.clone(), None);
    assert!(m.options.join(",").len() > crate::plan::PAGE_LIMIT);
    let t = TempMount::new(&[m]).unwrap();
    check_stack(t.path(), n);
    assert_read_only(t.path());
    drop(t);

    let upper = root.path().join("upper");
    let t = TempMount::new(&[overlay(lower, Some(&upper))]).unwrap();
    check_stack(t.path(), n);
    fs::write(t.path().join("written"), b"w").unwrap();
    drop(t);
    assert_eq!(fs::read(upper.join("fs/written")).unwrap(), b"w");
}

#[test]
fn a_bad_layer_of_a_deep_overlay_names_the_call() {
    require_root();
    let root = tempfile::tempdir().unwrap();
    let mut lower = layers(root.path(), 100);
    lower.insert(50, root.path().join("no-such-layer"));
    let err = TempMount::new(&[overlay(lower, None)]).unwrap_err();
    assert!(
        matches!(
            &err,
            MountError::NewMountApi { call: "fsconfig", key: Some(k), source: Errno::ENOENT, .. }
                if k == "lowerdir+"
        ),
        "{err:?}"
    );
}
