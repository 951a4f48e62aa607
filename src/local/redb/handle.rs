//! The store's hold on its redb [`Database`]: opening it, turning redb's errors into ours, and
//! reopening it after an I/O error.
//!
//! redb latches the first I/O error of a write (a full device, say): from then on every
//! transaction fails with "Previous I/O error occurred", until the database is closed and opened
//! again. A cache must not stay broken after the user freed space, so the store notes every
//! such error and closes and reopens the database. Each open after a latch repairs, scanning
//! the whole file (the latched instance cannot write its clean-close mark), so a disk that stays
//! full must not cost a repair per write:
//! - A write that finds the device full reopens the database itself, before it returns
//!   [`Error::DiskFull`] (or a call that meets the latch first does), so reads go on being
//!   answered from what was durable; and writes are refused as `DiskFull` without reaching
//!   redb for [`REOPEN_EVERY`] after it, so a device that stays full latches the database, and
//!   costs a repair, at most once in that time.
//! - Any other latching error (a failing device) has the next call reopen the database, at most
//!   once every [`REOPEN_EVERY`]; the calls in between fail with the error that latched it.
//! - So does a panic of redb's on a damaged page ([`Inner::guarded`]), which poisons the
//!   instance's locks: every later call on it would fail, and a file the user moved away or
//!   deleted, as the error advises, would not be replaced until a restart. A reopen that finds
//!   no file creates it, with the store's mode.
//!
//! The commits since the last durable one are lost with the latched instance, and what another
//! process changed meanwhile cannot be told apart, so every entry restored by the reopen is
//! suspect, as at open.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::{MappedRwLockReadGuard, RwLockReadGuard};
use redb::{Database, ReadableDatabase};

use super::inner::Inner;
use super::tables::{ENTRIES, META, META_NEXT_SEQ, ORDER};
use crate::clock::instant_after;
use crate::disk::Disk;
use crate::error::{io_advice, is_no_space, Error, Result};
use crate::perms;

/// What to do with a database file redb cannot read.
pub(super) const START_EMPTY: &str = "it holds only a cache: move it away or delete it to start empty";

/// The least time between two reopens of a latched database (see the module docs).
pub(super) const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// Opens the database at `path`, creating its file with `mode` if there is none (at a reopen
/// too: the file of a damaged database may have been deleted, as its error advises).
/// Also whether it created the file.
pub(super) fn open_or_create(path: &Path, mode: u32) -> Result<(Database, bool)> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let creating = !path.exists();
    if creating {
        // redb creates the file with the umask's bits; create it first with ours (an empty
        // file is a new database to redb).
        perms::new_file(mode)
            .create_new(true)
            .open(path)
            .map_err(|e| open_io_error("create database file", path, parent, e))?;
        // redb fsyncs the file at each durable commit, never its directory: without this the
        // file's name, and every commit in it, could be lost in a power cut.
        Disk::default()
            .sync_dir(parent)
            .map_err(|e| open_io_error("fsync directory", parent, parent, e))?;
    }
    let opened = open_database(path).inspect_err(|_| {
        // redb sizes a new file before it writes its header: one it could not finish (a full
        // device) would be refused at every later open as no redb database. It is the file
        // made just above, holding nothing: the next open starts it again.
        if creating {
            if let Err(rm) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), error = %rm, "removing the database file whose creation failed");
            }
        }
    });
    Ok((opened?, creating))
}

/// An I/O error of a step of the open that is not redb's (its directory, its new file): the
/// device's lack of room is [`Error::DiskFull`], as redb's own is (see `convert`), naming the
/// directory to free space in. On ext4 the directory of a new store takes a block: that, not
/// redb, is what finds a full disk first, and it was [`Error::Io`].
pub(super) fn open_io_error(op: &'static str, path: &Path, dir: &Path, e: std::io::Error) -> Error {
    if is_no_space(&e) {
        return Error::DiskFull {
            path: dir.to_path_buf(),
            op,
            needed: 0,
        };
    }
    Error::io(op, path, e)
}

/// Opens (or creates) the database, a panic of redb's on a damaged file made an error.
fn open_database(path: &Path) -> Result<Database> {
    // redb panics on a page it cannot parse rather than returning an error (here too: a debug
    // build visits every page at open): a damaged file must be refused, not bring the
    // application down.
    let created = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Database::create(path)))
        .map_err(|panic| damaged("open", path, &*panic))?;
    created.map_err(|e| open_error(path, e))
}

/// redb's refusal to open `path` as ours.
pub(super) fn open_error(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        // Both say another process has the file open. The second names a process of a redb
        // version whose locking protocol differs from this build's: the two cannot share the
        // file either, whatever version writes it next. (This build's redb answers the first
        // for such a process too, an exclusive open taking every lock byte; `redb = "4"` lets a
        // later 4.x answer the second.)
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            Error::Locked {
                path: path.to_path_buf(),
                lock: path.to_path_buf(),
            }
        }
        other => convert("open", path, other.into()).0,
    }
}

/// The next sequence number, as last committed in `db`.
pub(super) fn next_seq_of(store: &Inner, db: &Database) -> Result<u64> {
    let txn = db.begin_read().map_err(|e| store.err("begin read", e))?;
    let meta = txn.open_table(META).map_err(|e| store.err("open table", e))?;
    Ok(meta
        .get(META_NEXT_SEQ)
        .map_err(|e| store.err("read meta", e))?
        .map_or(0, |g| g.value()))
}

impl Inner {
    /// The open database, reopened first if an I/O error latched it (see the module docs). Keep
    /// the guard until the transaction begun on it ends: a reopen must not close the database
    /// under a transaction, and the error it returns must latch before a reopen can look.
    pub(super) fn db(&self) -> Result<MappedRwLockReadGuard<'_, Database>> {
        if self.latched.load(Ordering::Acquire) {
            let due = {
                let mut last = self.last_reopen.lock();
                // A full disk's latch at once, by whichever call meets it first: writes are
                // held back by `check_room` instead, so that costs one reopen per latch.
                let due = self.reopen_now.swap(false, Ordering::AcqRel)
                    || last.is_none_or(|at| at.elapsed() >= REOPEN_EVERY);
                if due {
                    *last = Some(Instant::now());
                }
                due
            };
            if !due {
                return Err(self.latched_error());
            }
            self.reopen()?;
        }
        RwLockReadGuard::try_map(self.db.read(), Option::as_ref).map_err(|_| {
            // Only after a reopen that failed, which left `latched` set: the next call retries.
            redb_error(
                "open",
                &self.path,
                "the database is closed after an I/O error and could not be reopened yet; the next call tries again",
            )
        })
    }

    /// Closes the latched database and opens it again; entries restored are suspect.
    fn reopen(&self) -> Result<()> {
        let mut slot = self.db.write();
        // Another caller may have reopened it while this one waited for the lock.
        if !self.latched.load(Ordering::Acquire) {
            return Ok(());
        }
        if let Some(old) = slot.take() {
            // Its close reports the latched error again; what matters is that it lets go of the
            // file's lock, which it does whatever it returns.
            let closed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| old.close()));
            if let Ok(Err(e)) = closed {
                tracing::debug!(error = %e, path = %self.path.display(), "closing the latched redb database");
            }
        }
        let (db, created) = open_or_create(&self.path, self.file_mode)?;
        if created {
            // Readers expect the tables (the open creates them the same way).
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
            txn.open_table(ORDER).map_err(|e| self.err("open table", e))?;
            txn.open_table(META).map_err(|e| self.err("open table", e))?;
            txn.commit().map_err(|e| self.err("commit", e))?;
        }
        let next_seq = next_seq_of(self, &db)?;
        if self.commits_since_durable.swap(0, Ordering::AcqRel) > 0 {
            self.lost_commits.store(true, Ordering::Release);
            // What they overwrote or deleted is back in the file, older than what the
            // caller was told: it reads as a miss.
            self.lost.reopened_after_loss(next_seq);
        } else {
            self.lost.durable();
        }
        {
            let mut suspicion = self.suspicion.lock();
            suspicion.confirmed.clear();
            self.suspect_epoch.fetch_add(1, Ordering::AcqRel);
            self.suspect_below_seq.store(next_seq, Ordering::Release);
        }
        *slot = Some(db);
        self.reopen_now.store(false, Ordering::Release);
        self.latched_by_damage.store(false, Ordering::Release);
        self.latched.store(false, Ordering::Release);
        tracing::warn!(
            path = %self.path.display(),
            "reopened the redb store after an I/O error: commits since the last durable one are lost, and the entries kept are suspect until revalidated"
        );
        Ok(())
    }

    /// redb's error as ours, naming the file; one that latched the database has a later call
    /// reopen it.
    pub(super) fn err(&self, op: &'static str, e: impl Into<redb::Error>) -> Error {
        let (error, latched) = convert(op, &self.path, e.into());
        if latched {
            self.latched_by_damage.store(false, Ordering::Release);
            if matches!(error, Error::DiskFull { .. }) {
                *self.writes_refused_until.lock() = Some(instant_after(Instant::now(), REOPEN_EVERY));
                self.latched_by_no_space.store(true, Ordering::Release);
                self.reopen_now.store(true, Ordering::Release);
            } else if !self.latched.load(Ordering::Acquire) {
                // Not for the "previous I/O error" of a call that met the latch: the error
                // that latched it is the one to report.
                self.latched_by_no_space.store(false, Ordering::Release);
            }
            self.latched.store(true, Ordering::Release);
        }
        error
    }

    /// Refuses a write while a recent one found the device full (see the module docs).
    pub(super) fn check_room(&self) -> Result<()> {
        let refused = self
            .writes_refused_until
            .lock()
            .is_some_and(|until| Instant::now() < until);
        if refused {
            return Err(self.disk_full());
        }
        Ok(())
    }

    /// After a write that failed: if the device was full, reopens the database it latched at
    /// once, so that reads go on being answered from what was durable (see the module docs).
    /// Only once per such latch: a write that merely met the latch (a reopen that failed) leaves
    /// the next try to [`db`](Self::db), once a second.
    pub(super) fn reopen_after_no_space(&self) {
        if !self.reopen_now.swap(false, Ordering::AcqRel) {
            return;
        }
        *self.last_reopen.lock() = Some(Instant::now());
        if let Err(e) = self.guarded("reopen", || self.reopen()) {
            tracing::warn!(error = %e, path = %self.path.display(), "reopening the redb store after a full disk failed; the next call after a second tries again");
        }
    }

    fn disk_full(&self) -> Error {
        Error::DiskFull {
            path: self.path.parent().unwrap_or(&self.path).to_path_buf(),
            op: "write",
            needed: 0,
        }
    }

    /// The error of a call that meets the latch before the next reopen is due.
    fn latched_error(&self) -> Error {
        if self.latched_by_no_space.load(Ordering::Acquire) {
            return self.disk_full();
        }
        if self.latched_by_damage.load(Ordering::Acquire) {
            return redb_error(
                "write",
                &self.path,
                format!("damaged database file, which redb failed on; {START_EMPTY} (it is reopened at most once a second)"),
            );
        }
        redb_error(
            "write",
            &self.path,
            "an earlier I/O error stopped the database; it is reopened at most once a second",
        )
    }

    /// Runs `f`, a panic of redb's made [`Error::Redb`] naming the file: redb panics on a page
    /// it cannot parse rather than return an error, and a damaged cache file must fail the call
    /// (the manager falls back on L2, the user is told to delete the file), not unwind through
    /// the application. (With `panic = "abort"` nothing can be caught: the process ends.)
    pub(super) fn guarded<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
            // The panic left redb's locks poisoned: the instance fails every call from now on.
            // Latched, it is reopened (at most once a second), so a file the user moved away
            // or deleted, as the error advises, is replaced by a new one without a restart.
            self.latched_by_no_space.store(false, Ordering::Release);
            self.latched_by_damage.store(true, Ordering::Release);
            self.latched.store(true, Ordering::Release);
            Err(damaged(op, &self.path, &*panic))
        })
    }
}

/// `e` as our error, and whether redb latched it (every later transaction fails until reopen).
/// Every I/O error counts as latched: redb latches those of its writes, and a reopen after one
/// it did not latch costs only the marks of suspicion.
fn convert(op: &'static str, path: &Path, e: redb::Error) -> (Error, bool) {
    match e {
        redb::Error::Io(io) if is_no_space(&io) => (
            Error::DiskFull {
                path: path.parent().unwrap_or(path).to_path_buf(),
                op,
                needed: 0,
            },
            true,
        ),
        // redb's word for a file without its magic number (another program's file).
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => (
            redb_error(
                op,
                path,
                format!("not a redb database ({io}); if it is another program's file, give the store another path (local.path), otherwise move it away or delete it"),
            ),
            true,
        ),
        // A read past the end: a file cut short inside redb's header (a copy interrupted).
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => (
            redb_error(
                op,
                path,
                format!("damaged database file, cut short ({io}); {START_EMPTY}"),
            ),
            true,
        ),
        // With the advice an `Error::Io` of the file store gives (a read-only mount, a mode).
        redb::Error::Io(io) => (
            redb_error(op, path, format!("I/O error: {io}{}", io_advice(op, &io))),
            true,
        ),
        // redb's own advice ("manual upgrade") does not apply: an older file only held a cache.
        redb::Error::UpgradeRequired(version) => (
            redb_error(
                op,
                path,
                format!("file format version {version}, written by an older redb than this build's, which cannot read it; {START_EMPTY}"),
            ),
            false,
        ),
        // Also what a release build of redb returns where a debug build panics, and a file
        // in a newer format version ("Expected file format version <= 3, found 4").
        redb::Error::Corrupted(why) => (
            redb_error(
                op,
                path,
                format!("damaged database file, or one written by a newer redb ({why}); {START_EMPTY}"),
            ),
            false,
        ),
        redb::Error::PreviousIo => (
            redb_error(
                op,
                path,
                "an earlier I/O error stopped the database; the next call reopens it",
            ),
            true,
        ),
        other => (redb_error(op, path, other), false),
    }
}

/// The error of a file redb panicked on, with the panic's message.
pub(super) fn damaged(op: &'static str, path: &Path, panic: &(dyn std::any::Any + Send)) -> Error {
    let why = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    redb_error(op, path, format!("damaged database file ({why}); {START_EMPTY}"))
}

pub(super) fn redb_error(op: &'static str, path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Redb {
        op,
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}
