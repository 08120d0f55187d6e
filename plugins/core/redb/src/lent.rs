//! One write transaction across two stores that share a database.
//!
//! The namespaced snapshot records (the metadata store) and a driver's own tables (its metastore)
//! live in the same file. A Prepare or Commit changes both, and must pay for one durable commit,
//! not two: the caller begins the transaction, writes its records, then *lends* the transaction
//! to the current thread while it calls the driver ([`Db::lend`]). The driver's store, asked to
//! write, *joins* the lent transaction instead of beginning its own ([`Db::join_lent`]); the
//! caller commits once when the driver returns. A driver failure aborts both halves together, so
//! no undo step is needed and a crash leaves either both records or neither.
//!
//! What must happen only once the changes are durable (deleting what a commit replaced, say)
//! goes into [`AfterCommit`]: the joined write's hooks travel back with the transaction and the
//! lender runs them after its commit; an aborted transaction drops them.
//!
//! Lending is per thread (a driver is called synchronously) and per database (a store on another
//! file never joins). redb allows one writer at a time, so without lending the driver's
//! `begin_write` would wait forever for the caller's transaction on the same thread.

use std::cell::RefCell;

use crate::Db;

/// Work to run once a write transaction has committed, and only then: what may not be undone
/// if the transaction aborts (removing the files a committed change made unreferenced).
#[derive(Default)]
pub struct AfterCommit(Vec<Box<dyn FnOnce()>>);

impl AfterCommit {
    pub fn push(&mut self, f: impl FnOnce() + 'static) {
        self.0.push(Box::new(f));
    }

    /// Runs the hooks, in the order they were pushed.
    pub fn run(self) {
        for f in self.0 {
            f();
        }
    }
}

/// A lent transaction given back: commit it, then run what the joined writes left for after.
pub struct Returned {
    pub wtx: redb::WriteTransaction,
    pub after_commit: AfterCommit,
}

impl Returned {
    /// Commits the transaction, then runs the after-commit hooks.
    pub fn commit(self) -> Result<(), redb::CommitError> {
        self.wtx.commit()?;
        self.after_commit.run();
        Ok(())
    }
}

/// The transaction lent to this thread, and for which database.
struct Lent {
    owner: usize,
    /// `None` while a joined write runs (a nested join is refused, not deadlocked).
    wtx: Option<redb::WriteTransaction>,
    after_commit: AfterCommit,
    /// A joined write failed: whatever it wrote stays in the transaction, so the lender must not
    /// commit it even if the driver went on and reported success.
    spoiled: bool,
}

thread_local! {
    static LENT: RefCell<Option<Lent>> = const { RefCell::new(None) };
}

/// Why a lent transaction cannot be committed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LendError {
    /// A write that joined it failed; its partial changes must not be committed.
    #[error("a write that joined the transaction failed")]
    Spoiled,
    /// The transaction did not come back (a joined write panicked).
    #[error("the lent transaction was lost")]
    Lost,
}

/// Why a join did not run the write.
pub enum JoinError<F> {
    /// No transaction of this database is lent to this thread: `f` comes back to be run in a
    /// transaction of its own.
    NotLent(F),
    /// A joined write is already running on this thread (a write nested in a write).
    Nested,
}

impl Db {
    fn id(&self) -> usize {
        self as *const Db as usize
    }

    /// Runs `f` with `wtx` (a write transaction of this database) lent to this thread, and gives
    /// it back for the caller to commit (with [`Returned::commit`], which runs the joined
    /// writes' after-commit hooks) — unless a write that joined it failed.
    pub fn lend<R>(
        &self,
        wtx: redb::WriteTransaction,
        f: impl FnOnce() -> R,
    ) -> (Result<Returned, LendError>, R) {
        let previous = LENT.with(|l| {
            l.borrow_mut().replace(Lent {
                owner: self.id(),
                wtx: Some(wtx),
                after_commit: AfterCommit::default(),
                spoiled: false,
            })
        });
        let out = f();
        let lent = LENT.with(|l| std::mem::replace(&mut *l.borrow_mut(), previous));
        let back = match lent {
            Some(Lent { spoiled: true, .. }) => Err(LendError::Spoiled),
            Some(Lent {
                wtx: Some(wtx),
                after_commit,
                ..
            }) => Ok(Returned { wtx, after_commit }),
            _ => Err(LendError::Lost),
        };
        (back, out)
    }

    /// Runs `f` in the transaction of this database lent to this thread, if there is one. Its
    /// changes are committed by the lender, later, with the lender's, and the hooks `f` adds to
    /// the [`AfterCommit`] it is given run after that; an `Err` from `f` spoils the transaction
    /// so the lender aborts it.
    pub fn join_lent<T, E, F>(&self, f: F) -> Result<Result<T, E>, JoinError<F>>
    where
        F: FnOnce(&redb::WriteTransaction, &mut AfterCommit) -> Result<T, E>,
    {
        let wtx = LENT.with(|l| match l.borrow_mut().as_mut() {
            Some(lent) if lent.owner == self.id() => lent.wtx.take().ok_or(()).map(Some),
            _ => Ok(None),
        });
        let wtx = match wtx {
            Ok(Some(wtx)) => wtx,
            Ok(None) => return Err(JoinError::NotLent(f)),
            Err(()) => return Err(JoinError::Nested),
        };
        let mut after_commit = AfterCommit::default();
        let out = f(&wtx, &mut after_commit);
        LENT.with(|l| {
            if let Some(lent) = l.borrow_mut().as_mut() {
                lent.wtx = Some(wtx);
                lent.spoiled |= out.is_err();
                if out.is_ok() {
                    lent.after_commit.0.extend(after_commit.0);
                }
            }
        });
        Ok(out)
    }
}
