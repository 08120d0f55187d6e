use std::io::Write;
use std::process::Command;

use redb::TableDefinition;

use super::*;

const T: TableDefinition<u64, &[u8]> = TableDefinition::new("t");

fn put(db: &Db, k: u64, len: usize) -> Result<(), String> {
    let wtx = db.begin_write().map_err(|e| format!("{e:?}"))?;
    {
        let mut t = wtx.open_table(T).map_err(|e| e.to_string())?;
        t.insert(k, vec![7u8; len].as_slice())
            .map_err(|e| e.to_string())?;
    }
    wtx.commit().map_err(|e| {
        if let redb::CommitError::Storage(s) = &e {
            if is_disk_full(s) {
                return "disk full".to_owned();
            }
        }
        e.to_string()
    })
}

#[test]
fn a_full_disk_does_not_wedge_the_database() {
    // A real ENOSPC needs a small file system of its own: root, and mount(8).
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a 2 MiB tmpfs: run it as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("fs");
    std::fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount a tmpfs");
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());

    let db = Db::create(&mnt.join("x.redb")).unwrap();
    put(&db, 0, 100).unwrap();
    // Fill what is left, then write until a commit meets the full disk.
    let filler = mnt.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write(&[0u8; 4096]).is_ok_and(|n| n > 0) {}
    drop(f);
    let mut refused = false;
    for k in 1..200 {
        if let Err(e) = put(&db, k, 64 * 1024) {
            assert!(e.contains("disk full") || e.contains("Previous"), "{e}");
            refused = true;
            break;
        }
    }
    assert!(refused, "the full disk never refused a write");
    // While full, redb alone would answer PreviousIo forever; the handle retries, and the error
    // is the disk's again (or a reopen that could not be made), never a wedge.
    assert!(put(&db, 500, 64 * 1024).is_err());

    std::fs::remove_file(&filler).unwrap();
    put(&db, 501, 100).expect("writes work again once there is room");
    let rtx = db.begin_read().unwrap();
    let t = rtx.open_table(T).unwrap();
    assert!(t.get(0).unwrap().is_some() && t.get(501).unwrap().is_some());
    drop(t);
    drop(rtx);
    db.close().unwrap();
    assert!(matches!(
        db.begin_write(),
        Err(BeginError::Transaction(redb::TransactionError::Storage(
            redb::StorageError::DatabaseClosed
        )))
    ));
}
