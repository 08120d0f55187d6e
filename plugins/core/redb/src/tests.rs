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

thread_local! {
    /// The keys whose joined writes' after-commit hooks ran.
    static AFTER: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn after_commit_ran() -> Vec<u64> {
    AFTER.with(|a| std::mem::take(&mut *a.borrow_mut()))
}

fn count(db: &Db) -> usize {
    let rtx = db.begin_read().unwrap();
    match rtx.open_table(T) {
        Ok(t) => redb::ReadableTableMetadata::len(&t).unwrap() as usize,
        Err(redb::TableError::TableDoesNotExist(_)) => 0,
        Err(e) => panic!("{e}"),
    }
}

/// A store joining a lent transaction: `Ok` when it wrote into it, `Err` when it failed.
fn joined_put(db: &Db, k: u64, fail: bool) -> Result<Result<(), String>, &'static str> {
    let write = |wtx: &redb::WriteTransaction, after: &mut AfterCommit| {
        after.push(move || AFTER.with(|a| a.borrow_mut().push(k)));
        wtx.open_table(T)
            .map_err(|e| e.to_string())?
            .insert(k, b"x".as_slice())
            .map_err(|e| e.to_string())?;
        if fail {
            return Err("driver failed".to_owned());
        }
        Ok(())
    };
    match db.join_lent(write) {
        Ok(r) => Ok(r),
        Err(JoinError::NotLent(_)) => Err("not lent"),
        Err(JoinError::Nested) => Err("nested"),
    }
}

#[test]
fn a_lent_transaction_commits_both_writers_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(&dir.path().join("db")).unwrap();
    // Nothing lent: the store is told to write on its own.
    assert_eq!(joined_put(&db, 1, false), Err("not lent"));

    let wtx = db.begin_write().unwrap();
    wtx.open_table(T)
        .unwrap()
        .insert(1, b"a".as_slice())
        .unwrap();
    let (back, joined) = db.lend(wtx, || joined_put(&db, 2, false));
    assert_eq!(joined, Ok(Ok(())));
    // Neither is visible before the lender commits, and what waits for the commit has not run.
    assert_eq!(count(&db), 0);
    assert_eq!(after_commit_ran(), Vec::<u64>::new());
    back.unwrap().commit().unwrap();
    assert_eq!(count(&db), 2);
    assert_eq!(after_commit_ran(), vec![2]);
}

#[test]
fn a_failed_join_spoils_the_lent_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(&dir.path().join("db")).unwrap();
    let wtx = db.begin_write().unwrap();
    wtx.open_table(T)
        .unwrap()
        .insert(1, b"a".as_slice())
        .unwrap();
    // The driver fails, then reports success anyway: its half-write must not be committed.
    let (back, _) = db.lend(wtx, || {
        let _ = joined_put(&db, 2, true);
    });
    assert!(matches!(back, Err(LendError::Spoiled)));
    assert_eq!(count(&db), 0);
    assert_eq!(after_commit_ran(), Vec::<u64>::new());
    // The database takes writers again.
    put(&db, 3, 1).unwrap();
    assert_eq!(count(&db), 1);
}

#[test]
fn only_the_lending_database_and_thread_join() {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::create(&dir.path().join("db")).unwrap();
    let other = Db::create(&dir.path().join("other")).unwrap();
    let wtx = db.begin_write().unwrap();
    let (back, (on_other, on_thread, nested)) = db.lend(wtx, || {
        let on_other = joined_put(&other, 1, false);
        let on_thread = std::thread::scope(|s| {
            s.spawn(|| match db.join_lent(|_, _| Ok::<(), ()>(())) {
                Err(JoinError::NotLent(_)) => "not lent",
                _ => "joined",
            })
            .join()
            .unwrap()
        });
        let nested = match db.join_lent(|_, _| match db.join_lent(|_, _| Ok::<(), ()>(())) {
            Err(JoinError::Nested) => Ok::<_, ()>("nested refused"),
            _ => Ok("nested ran"),
        }) {
            Ok(Ok(s)) => s,
            _ => "outer join failed",
        };
        (on_other, on_thread, nested)
    });
    assert_eq!(on_other, Err("not lent"));
    assert_eq!(on_thread, "not lent");
    assert_eq!(nested, "nested refused");
    back.unwrap().commit().unwrap();
    assert_eq!(count(&other), 0);
}
