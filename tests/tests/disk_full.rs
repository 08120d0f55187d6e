//! Issue 15, defect 1: a full disk. berthd's root on a small loop-mounted ext4 is filled up
//! (ext4's delayed allocation can report the lack of space as late as fsync); writes fail
//! with ResourceExhausted while it is full, and as soon as space is freed the same daemon serves
//! every write again (redb refuses all writes after one I/O error until the database is
//! reopened; berthd reopens it in place). Nothing half-written is left.

use std::io::Write;
use std::path::{Path, PathBuf};

use berth_api::namespaces::{
    namespaces_client::NamespacesClient, CreateNamespaceRequest, ListNamespacesRequest, Namespace,
};
use std::process::Command;

use berth_tests::{fixtures, ok, require_program, require_root, Berthd};

/// An ext4 file system of `mib` MiB in a file, loop-mounted on `path`; unmounted (and its loop
/// device released) on drop.
struct LoopFs(PathBuf);

impl LoopFs {
    fn mount(image: &Path, path: &Path, mib: u64) -> LoopFs {
        let mkfs = require_program("mkfs.ext4", "e2fsprogs");
        std::fs::File::create(image)
            .and_then(|f| f.set_len(mib << 20))
            .expect("file for the loop file system");
        let made = Command::new(mkfs)
            .args(["-q", "-F"])
            .arg(image)
            .status()
            .unwrap();
        assert!(made.success(), "mkfs.ext4 failed");
        std::fs::create_dir_all(path).unwrap();
        let mounted = Command::new("mount")
            .args(["-o", "loop"])
            .arg(image)
            .arg(path)
            .status()
            .unwrap();
        assert!(
            mounted.success(),
            "mount -o loop failed (needs root and loop devices)"
        );
        LoopFs(path.to_owned())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // umount releases a loop device that mount -o loop set up.
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Fills the file system holding `dir` with one file; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Whatever partial page is left, take it too.
    while let Ok(n) = f.write(&chunk[..512]) {
        if n == 0 {
            break;
        }
    }
    path
}

fn namespace(name: &str, label_bytes: usize) -> tonic::Request<CreateNamespaceRequest> {
    tonic::Request::new(CreateNamespaceRequest {
        namespace: Some(Namespace {
            name: name.to_owned(),
            labels: [("fill".to_owned(), "x".repeat(label_bytes))].into(),
        }),
    })
}

#[test]
fn a_full_disk_gives_clear_errors_and_service_comes_back_when_space_is_freed() {
    require_root("loop-mounting a small file system for berthd's root");
    let images = tempfile::tempdir().unwrap();
    let mut mounts = Vec::new();
    let berthd = Berthd::start_after(|dir| {
        mounts.push(LoopFs::mount(
            &images.path().join("root.ext4"),
            &dir.join("root"),
            16,
        ))
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let channel = rt.block_on(berthd.channel());
    let mut client = NamespacesClient::new(channel);
    rt.block_on(client.create(namespace("before", 10))).unwrap();

    let filler = fill(&berthd.root());
    // Writes grow the database until one needs a page the disk no longer has.
    let mut refused = None;
    for i in 0..200 {
        match rt.block_on(client.create(namespace(&format!("full{i}"), 3000))) {
            Ok(_) => {}
            Err(status) => {
                refused = Some((i, status));
                break;
            }
        }
    }
    let (first_refused, status) = refused.expect("a full disk never refused a write");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    // Still full: still a clear error, not a wedged store.
    let again = rt
        .block_on(client.create(namespace("still-full", 3000)))
        .unwrap_err();
    assert!(
        matches!(
            again.code(),
            tonic::Code::ResourceExhausted | tonic::Code::Unavailable
        ),
        "{again:?}"
    );

    std::fs::remove_file(&filler).unwrap();
    // The same daemon, no restart: every kind of write works again.
    rt.block_on(client.create(namespace("after", 10)))
        .expect("a namespace once space is back");
    let names: Vec<String> = rt
        .block_on(client.list(ListNamespacesRequest::default()))
        .unwrap()
        .into_inner()
        .namespaces
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert!(names.contains(&"before".to_owned()) && names.contains(&"after".to_owned()));
    // Nothing half-written: the refused namespace does not exist.
    assert!(
        !names.contains(&format!("full{first_refused}")),
        "{names:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (img, archive) =
        fixtures::busybox_oci_archive(dir.path(), "docker.io/library/busybox:full");
    ok(&berthd.ctr(&["images", "import", archive.to_str().unwrap()]));
    assert!(ok(&berthd.ctr(&["images", "ls", "-q"])).contains(&img.name));
    assert!(
        berthd
            .log()
            .contains("reopened the database after an I/O error"),
        "no reopen logged"
    );
    drop(berthd);
    drop(mounts);
}
