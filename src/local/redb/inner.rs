//! [`Inner`], the state of one redb store, and every operation on it: the store's handle and its
//! flusher thread share it.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::handle::{damaged, next_seq_of, open_io_error, open_or_create, redb_error, START_EMPTY};
use super::lost::Lost;
use super::tables::{self, weight, Counts, Record, Tables, ENTRIES, META, META_BYTES, META_NEXT_SEQ, ORDER};
use super::RedbOptions;
use crate::clock::{self, Clock};
use crate::disk::Disk;
use crate::durability::Durability;
use crate::error::{key_for_error, Error, Result};
use crate::perms;
use crate::storage::{
    check_write, Confirmation, Entry, Freshness, LocalStorage, Storage, StorageCounters, StorageSize,
    SuspectEpoch,
};

/// Entries one purge round reads, and so removes, at most (see [`Inner::purge_expired`]).
pub(super) const PURGE_ROUND: usize = 10_000;

/// The largest value a record holds: redb refuses a stored value over 3 GiB, and a record is
/// the value behind a header.
const MAX_VALUE_LEN: usize = 3 * 1024 * 1024 * 1024 - tables::HEADER_LEN;

/// The confirmations that make a suspect entry trusted again.
#[derive(Debug, Default)]
pub(super) struct Suspicion {
    /// Key → the seq of the entry that was confirmed since the last loss of certainty.
    pub(super) confirmed: HashMap<String, u64>,
}

/// The store's state, shared by its handle and its flusher thread.
pub(super) struct Inner {
    /// `None` only between the close and the reopen of a latched database, after a reopen that
    /// failed (see `handle.rs`). A reopen takes it for writing.
    pub(super) db: RwLock<Option<Database>>,
    /// An I/O error latched the database: the next call reopens it.
    pub(super) latched: AtomicBool,
    /// What latched it (`true`: no space), for the calls that meet the latch between reopens.
    pub(super) latched_by_no_space: AtomicBool,
    /// When the last reopen was tried: at most one per [`REOPEN_EVERY`](super::handle::REOPEN_EVERY).
    pub(super) last_reopen: Mutex<Option<Instant>>,
    /// Until when writes are refused as [`Error::DiskFull`] without reaching redb, after one
    /// found the device full (see `handle.rs`).
    pub(super) writes_refused_until: Mutex<Option<Instant>>,
    /// A full device latched the database since the last reopen: the write that found it full,
    /// or a call that meets the latch before, reopens the database at once (see `handle.rs`).
    pub(super) reopen_now: AtomicBool,
    /// A panic of redb's latched the database (a damaged page): the calls that meet the latch
    /// say so, and the reopen, once a second, finds a file moved away or deleted as advised.
    pub(super) latched_by_damage: AtomicBool,
    pub(super) path: PathBuf,
    /// The mode of a database file the store creates, also at a reopen.
    pub(super) file_mode: u32,
    pub(super) max_bytes: u64,
    pub(super) durability: Durability,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) last_durable: Mutex<Instant>,
    /// A commit since the last durable one was not durable; locked by every write transaction
    /// from its start to its mark.
    pub(super) dirty: Mutex<bool>,
    /// Commits since the last durable one, counted while the transaction still holds the
    /// database (so a reopen, which takes it whole, sees every one or none): a reopen that finds
    /// any has lost them.
    pub(super) commits_since_durable: AtomicU64,
    /// A reopen lost acknowledged commits: the next [`flush`](Storage::flush) (or close) says so
    /// once, since it cannot make them durable.
    pub(super) lost_commits: AtomicBool,
    pub(super) evictions: AtomicU64,
    pub(super) expirations: AtomicU64,
    /// Entries with a lower sequence number are suspect unless confirmed (see the module docs).
    pub(super) suspect_below_seq: AtomicU64,
    pub(super) suspicion: Mutex<Suspicion>,
    /// Counts the losses of certainty (see `SuspectEpoch`): a confirm whose check began in an
    /// earlier one is refused. Moved only under `suspicion`'s lock, as the confirmations are
    /// forgotten, and read without it: a read's `suspect_epoch` on every checked read takes no
    /// lock. Starts where no other store of this process counts (see
    /// `SuspectEpoch::first_of_a_new_level`), so an epoch of this store before it was reopened
    /// is refused too.
    pub(super) suspect_epoch: AtomicU64,
    /// The keys changed since the last durable commit, and the entries a reopen brought back
    /// older than their lost writes, which read as misses.
    pub(super) lost: Lost,
}

impl Inner {
    /// Opens (or creates) the database file at `path`, creating missing parent directories.
    ///
    /// # Errors
    /// [`Error::Config`] for a zero size bound or zero periodic interval, [`Error::Locked`] if the
    /// file is open elsewhere, [`Error::Io`] or [`Error::Redb`] otherwise.
    pub(super) fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<Inner> {
        let path = path.as_ref().to_path_buf();
        if options.max_size_mb == 0 {
            return Err(Error::Config {
                field: "local.max_size".into(),
                reason: "must be at least 1 (MiB)".into(),
            });
        }
        if matches!(options.durability, Durability::Periodic(d) if d.is_zero()) {
            return Err(Error::Config {
                field: "local.durability_interval_ms".into(),
                reason: "a periodic interval must be above zero".into(),
            });
        }
        perms::check_file_mode(options.file_mode).map_err(|reason| Error::Config {
            field: "local.file_mode".into(),
            reason,
        })?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let disk = Disk::default();
        disk.create_dir(parent, options.file_mode)
            .map_err(|e| open_io_error("create directory", parent, parent, e))?;
        let (db, _) = open_or_create(&path, options.file_mode)?;
        // It reads the table tree's pages, which redb panics on if they are damaged.
        let foreign = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tables::foreign(&db))) {
            Ok(found) => found.map_err(|e| redb_error("open", &path, e))?,
            Err(panic) => {
                let error = damaged("open", &path, &*panic);
                // Closing the database writes to it, and may meet the damage again.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db)));
                return Err(error);
            }
        };
        if let Some(reason) = foreign {
            return Err(redb_error("open", &path, reason));
        }
        // Only once the file opened as a database: a file that is no redb database is another
        // program's, refused as it was found, its mode untouched.
        if options.file_mode_given && perms::mode_of(&path).is_some_and(|m| m != options.file_mode) {
            // A mode changed in the configuration applies to the cached data already there.
            perms::set_mode(&path, options.file_mode)
                .map_err(|e| Error::io("set the mode of database file", &path, e))?;
        }
        let store = Inner {
            db: RwLock::new(Some(db)),
            latched: AtomicBool::new(false),
            latched_by_no_space: AtomicBool::new(false),
            last_reopen: Mutex::new(None),
            writes_refused_until: Mutex::new(None),
            reopen_now: AtomicBool::new(false),
            latched_by_damage: AtomicBool::new(false),
            file_mode: options.file_mode,
            max_bytes: options.max_size_mb.saturating_mul(1024 * 1024),
            durability: options.durability,
            clock: options.clock,
            last_durable: Mutex::new(Instant::now()),
            dirty: Mutex::new(false),
            commits_since_durable: AtomicU64::new(0),
            lost_commits: AtomicBool::new(false),
            evictions: AtomicU64::new(0),
            expirations: AtomicU64::new(0),
            suspect_below_seq: AtomicU64::new(0),
            suspicion: Mutex::new(Suspicion::default()),
            suspect_epoch: AtomicU64::new(SuspectEpoch::first_of_a_new_level()),
            lost: Lost::default(),
            path,
        };
        // In a release build a damaged table page panics at its first use, here. (Only the pages
        // open touches are checked: redb panics on a damaged data page at its first use later.)
        let first_reads = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // Create the tables so readers never meet a missing one.
            store.write(true, Some(&[]), |txn, _| {
                txn.open_table(ENTRIES).map_err(|e| store.err("open table", e))?;
                txn.open_table(ORDER).map_err(|e| store.err("open table", e))?;
                txn.open_table(META).map_err(|e| store.err("open table", e))?;
                Ok(())
            })?;
            store.read_next_seq()
        }));
        // Whatever was restored from disk may have changed elsewhere while we were away.
        let next_seq = match first_reads {
            Ok(read) => read?,
            Err(panic) => {
                let error = damaged("open", &store.path, &*panic);
                // Closing the database writes to it, and may meet the damage again.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(store)));
                return Err(error);
            }
        };
        store.suspect_below_seq.store(next_seq, Ordering::Release);
        store.evict_to_a_lowered_bound();
        Ok(store)
    }

    /// A bound lowered since the last run holds from the open, not from the first write: a
    /// store that is only read would keep the old bound's bytes (the file store evicts at its
    /// open too). Its own transaction, after the open's: should it fail (a full disk, where
    /// redb's copy-on-write needs pages for the rows it drops), the open does not, as opening
    /// needs no free space; the store is read as it is, and the next write evicts, or fails as
    /// any write on that disk would.
    fn evict_to_a_lowered_bound(&self) {
        // Read first: most opens are within the bound, and need no write transaction.
        if !self.size().is_ok_and(|size| size.bytes > self.max_bytes) {
            return;
        }
        let now = self.clock.now_ms();
        // Not durable, and no key noted as changed: a power cut that undoes it brings back
        // only entries that were live and are evicted again by the next write.
        let evicted = self.write(false, None, |txn, counts| {
            let mut t = Tables::open(self, txn)?;
            t.evict(self, now)?;
            t.save(self, counts)
        });
        if let Err(err) = evicted {
            tracing::warn!(path = %self.path.display(), %err,
                "the store holds more than its lowered size bound and could not evict at open; the next write evicts");
        }
    }

    /// The entries a read returns now: one pass over every row (see
    /// [`RedbStore::count_live`](super::RedbStore::count_live)).
    pub(super) fn count_live(&self) -> Result<u64> {
        self.guarded("count", || {
            let now = self.clock.now_ms();
            let db = self.db()?;
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
            let mut live = 0u64;
            for item in entries.iter().map_err(|e| self.err("scan", e))? {
                let (key, value) = item.map_err(|e| self.err("scan", e))?;
                // As `read_with_seq` answers: a row that does not decode is no entry either.
                if Record::decode(value.value()).is_some_and(|r| !self.dead(key.value(), &r, now)) {
                    live += 1;
                }
            }
            Ok(live)
        })
    }

    /// The next sequence number, as last committed.
    fn read_next_seq(&self) -> Result<u64> {
        self.guarded("read meta", || next_seq_of(self, &*self.db()?))
    }

    /// Reads one live entry with its sequence number.
    fn read_with_seq(&self, key: &str) -> Result<Option<(Entry, u64)>> {
        self.guarded("get", || {
            let now = self.clock.now_ms();
            let db = self.db()?;
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
            let found = entries.get(key).map_err(|e| self.err("get", e))?;
            Ok(found.and_then(|guard| {
                let record = Record::decode(guard.value())?;
                (!self.dead(key, &record, now)).then(|| {
                    (
                        Entry {
                            value: record.value.to_vec(),
                            expires_at: (record.expires_at_ms != 0)
                                .then(|| clock::ms_to_system_time(record.expires_at_ms)),
                        },
                        record.seq,
                    )
                })
            }))
        })
    }

    /// The database file.
    #[must_use]
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes every expired entry now, and every older version a reopen's rollback brought
    /// back (see `lost`); returns how many. In rounds that read at most [`PURGE_ROUND`]
    /// entries, each removal its own transaction, so writers get the database in between and a
    /// store full of expired entries never builds one huge transaction.
    ///
    /// # Errors
    /// [`Error::Redb`] if a transaction fails.
    pub(super) fn purge_expired(&self) -> Result<u64> {
        Ok(self.purge_until(None, || false)?.0)
    }

    /// [`purge_expired`](Self::purge_expired) from the key after `after` (the first for
    /// `None`), stopping between rounds once `stop` says so (the background thread: at close,
    /// or when its next durable commit is due). Returns how many it removed, and the key to
    /// resume after if it stopped before the end. At least one round runs, so a purge resumed
    /// again and again still gets through. The error of a failed round, after the earlier
    /// rounds' removals were committed.
    pub(super) fn purge_until(
        &self,
        mut after: Option<String>,
        stop: impl Fn() -> bool,
    ) -> Result<(u64, Option<String>)> {
        let mut removed = 0;
        loop {
            let (round, next) = self.purge_round(after.as_deref())?;
            removed += round;
            let Some(key) = next else {
                return Ok((removed, None));
            };
            if stop() {
                return Ok((removed, Some(key)));
            }
            after = Some(key);
        }
    }

    /// Reads up to [`PURGE_ROUND`] entries after `after` (from the first for `None`) and removes
    /// those expired; returns how many, and the last key read if there may be more (the next
    /// round starts after it, so a purge reads each entry once). Bounded by the entries read,
    /// not only by those removed: a round over a large store of live entries takes a round's
    /// time, not a whole scan's, so the background thread's durable commits are not held up.
    fn purge_round(&self, after: Option<&str>) -> Result<(u64, Option<String>)> {
        self.guarded("purge expired", || {
            let now = self.clock.now_ms();
            // Whether an older version a rollback brought back is among them: its removal must
            // be durable, or a crash brings it back after the restart, when nothing hides it.
            let mut any_hidden = false;
            let (expired, next) = {
                let db = self.db()?;
                let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
                let entries = txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
                let from = after.map_or(Bound::Unbounded, Bound::Excluded);
                let mut keys = Vec::new();
                let mut next = None;
                for (read, item) in entries
                    .range::<&str>((from, Bound::Unbounded))
                    .map_err(|e| self.err("scan", e))?
                    .enumerate()
                {
                    let (k, v) = item.map_err(|e| self.err("scan", e))?;
                    let record = Record::decode(v.value());
                    any_hidden |= record
                        .as_ref()
                        .is_some_and(|r| !r.is_expired(now) && self.lost.hides(k.value(), r.seq));
                    if record.is_none_or(|r| self.dead(k.value(), &r, now)) {
                        keys.push(k.value().to_owned());
                    }
                    if read + 1 == PURGE_ROUND {
                        next = Some(k.value().to_owned());
                        break;
                    }
                }
                (keys, next)
            };
            if expired.is_empty() {
                return Ok((0, next));
            }
            // Expired entries a rollback brings back are still expired: nothing to note, and
            // nothing a caller wrote is at risk.
            let removed = self.write(any_hidden, None, |txn, counts| {
                let mut t = Tables::open(self, txn)?;
                let mut removed = 0;
                for key in &expired {
                    // Listed in an earlier transaction: a key rewritten since keeps its new value.
                    let still_expired = t
                        .entries
                        .get(key.as_str())
                        .map_err(|e| self.err("get", e))?
                        .is_some_and(|old| {
                            Record::decode(old.value()).is_none_or(|r| self.dead(key, &r, now))
                        });
                    if still_expired && t.remove(self, key, now)?.is_some() {
                        removed += 1;
                    }
                }
                t.save(self, counts)?;
                Ok(removed)
            })?;
            Ok((removed, next))
        })
    }

    /// Whether reads hide this entry and the purge removes it: expired, or an older version a
    /// reopen brought back (see `lost`), which reads hide only while this process runs: removed,
    /// it stays gone after a restart too.
    fn dead(&self, key: &str, record: &Record<'_>, now: u64) -> bool {
        record.is_expired(now) || self.lost.hides(key, record.seq)
    }

    /// A durable commit if a commit since the last one was not: what the flusher thread does
    /// every turn. It leaves a loss at a reopen for the next [`flush`](Storage::flush) to
    /// report, so that the caller's flush, not the thread's, hears of it.
    ///
    /// First the entries a reopen's rollback brought back leave the file (see `lost`): a flush
    /// or close that succeeded must not leave a lost delete's old value for the next open.
    pub(super) fn make_durable(&self) -> Result<()> {
        self.purge_hidden()?;
        // Waits for a write under way: a commit that returned before this call is marked.
        let dirty = *self.dirty.lock();
        if dirty {
            self.write(true, Some(&[]), |_, _| Ok(()))?;
        }
        Ok(())
    }

    /// Runs `f` in a write transaction and commits it with the durability the policy asks for
    /// (`force_durable` for flush and close). `changed`: the keys it sets or deletes, noted if
    /// the commit is not durable (see `lost`); `None` for housekeeping (the purge), whose loss
    /// at a reopen takes nothing a caller was told of: it marks nothing at risk.
    pub(super) fn write<T>(
        &self,
        force_durable: bool,
        changed: Option<&[&str]>,
        f: impl FnOnce(&redb::WriteTransaction, &mut Counts) -> Result<T>,
    ) -> Result<T> {
        // Refused before anything else, and without the reopen below: a refusal latches nothing.
        self.check_room()?;
        let written = self.guarded("write", || {
            // Held to the end: redb lets one write transaction run at a time anyway, and holding this
            // across commit and mark keeps the marks in commit order. Marked after `commit` without
            // it, a synced commit's "clean" could land after a later unsynced commit's "dirty", and
            // `flush` would skip that commit.
            let mut dirty = self.dirty.lock();
            let db = self.db()?;
            let mut txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let durable = force_durable
                || match self.durability {
                    Durability::EveryWrite => true,
                    Durability::None => false,
                    Durability::Periodic(every) => self.last_durable.lock().elapsed() >= every,
                };
            let level = if durable {
                redb::Durability::Immediate
            } else {
                redb::Durability::None
            };
            txn.set_durability(level)
                .map_err(|e| self.err("set durability", e))?;
            let mut counts = Counts::default();
            let out = f(&txn, &mut counts)?;
            txn.commit().map_err(|e| self.err("commit", e))?;
            self.evictions.fetch_add(counts.evictions, Ordering::Relaxed);
            self.expirations.fetch_add(counts.expirations, Ordering::Relaxed);
            // Noted while the transaction still holds the database, as the count is.
            if durable {
                *self.last_durable.lock() = Instant::now();
                self.commits_since_durable.store(0, Ordering::Release);
                self.lost.durable();
                *dirty = false;
            } else if let Some(changed) = changed {
                self.commits_since_durable.fetch_add(1, Ordering::AcqRel);
                self.lost.changed(changed.iter().copied());
                *dirty = true;
            }
            drop(db);
            Ok(out)
        });
        if matches!(written, Err(Error::DiskFull { .. })) {
            self.reopen_after_no_space();
        }
        written
    }

    fn read_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.live_many(keys, |record| Entry {
            value: record.value.to_vec(),
            expires_at: (record.expires_at_ms != 0).then(|| clock::ms_to_system_time(record.expires_at_ms)),
        })
    }

    /// `found` of each key's record a read returns (in one read transaction), `None` where a
    /// read misses: no row, a row that does not decode, or a record a read hides (`dead`).
    fn live_many<T>(&self, keys: &[&str], found: impl Fn(&Record<'_>) -> T) -> Result<Vec<Option<T>>> {
        self.guarded("get", || {
            let now = self.clock.now_ms();
            let db = self.db()?;
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
            let mut out = Vec::with_capacity(keys.len());
            for key in keys {
                let row = entries.get(*key).map_err(|e| self.err("get", e))?;
                out.push(row.and_then(|guard| {
                    let record = Record::decode(guard.value())?;
                    (!self.dead(key, &record, now)).then(|| found(&record))
                }));
            }
            Ok(out)
        })
    }

    /// Writes `items` in one transaction; `parts` gives each item's key, value and TTL.
    fn write_many<T>(
        &self,
        items: &[T],
        parts: impl Fn(&T) -> (&str, &[u8], Option<Duration>),
    ) -> Result<()> {
        for item in items {
            let (key, value, ttl) = parts(item);
            check_write(key, ttl)?;
            Storage::check_value(self, key, value.len())?;
        }
        let now = self.clock.now_ms();
        let keys: Vec<&str> = items.iter().map(|item| parts(item).0).collect();
        let written = self.write(false, Some(&keys), |txn, counts| {
            let mut t = Tables::open(self, txn)?;
            for item in items {
                let (key, value, ttl) = parts(item);
                let expires = ttl.map_or(0, |t| clock::expiry_ms(now, t));
                t.remove(self, key, now)?;
                let seq = t.next_seq;
                t.next_seq = seq.checked_add(1).ok_or_else(|| {
                    redb_error(
                        "write",
                        &self.path,
                        format!("damaged database file: its meta row next_seq is at its maximum ({seq}), leaving no sequence number for a write; {START_EMPTY}"),
                    )
                })?;
                // Saturating: a damaged byte count must not overflow either (it then evicts all).
                t.bytes = t.bytes.saturating_add(weight(key, value.len()));
                t.entries
                    .insert(key, Record::encode(expires, seq, value).as_slice())
                    .map_err(|e| self.err("insert", e))?;
                t.order.insert(seq, key).map_err(|e| self.err("insert", e))?;
            }
            t.evict(self, now)?;
            t.save(self, counts)
        });
        written.map_err(|e| match e {
            Error::DiskFull { path, op, needed: 0 } => Error::DiskFull {
                path,
                op,
                needed: items
                    .iter()
                    .map(|item| {
                        let (key, value, _) = parts(item);
                        weight(key, value.len())
                    })
                    .sum(),
            },
            other => other,
        })
    }
}

impl Storage for Inner {
    fn name(&self) -> &str {
        "redb"
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        Ok(self.read_many(&[key])?.into_iter().next().flatten())
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.read_many(keys)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.write_many(&[(key, value, ttl)], |&item| item)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.write_many(items, |&(key, value)| (key, value, ttl))
    }

    /// One transaction for the batch, each item with its own expiry.
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.write_many(items, |&item| item)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        Ok(self.delete_many(&[key])? == 1)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        for key in keys {
            check_write(key, None)?;
        }
        let now = self.clock.now_ms();
        self.write(false, Some(keys), |txn, counts| {
            let mut t = Tables::open(self, txn)?;
            let mut removed = 0;
            for key in keys {
                if t.remove(self, key, now)? == Some(true) {
                    removed += 1;
                }
            }
            t.save(self, counts)?;
            Ok(removed)
        })
    }

    /// A value must fit in the size bound with its key.
    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        if value_len > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge {
                key: key_for_error(key),
                len: value_len,
                max: MAX_VALUE_LEN,
                store: "a redb record (redb's 3 GiB less the store's 16-byte header)".to_owned(),
            });
        }
        if weight(key, value_len) > self.max_bytes {
            // The largest value for this key, as the file store names it: the bound also holds
            // the key and the header, and naming the bound said a value under it was over it.
            let max = self.max_bytes.saturating_sub(weight(key, 0));
            return Err(Error::ValueTooLarge {
                key: key_for_error(key),
                len: value_len,
                max: usize::try_from(max).unwrap_or(usize::MAX),
                store: format!(
                    "the redb store's size bound ({} bytes, each entry's key and 16-byte header included)",
                    self.max_bytes
                ),
            });
        }
        Ok(())
    }

    fn size(&self) -> Result<StorageSize> {
        self.guarded("size", || {
            let db = self.db()?;
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
            let meta = txn.open_table(META).map_err(|e| self.err("open table", e))?;
            Ok(StorageSize {
                items: entries.len().map_err(|e| self.err("count", e))?,
                bytes: meta
                    .get(META_BYTES)
                    .map_err(|e| self.err("read meta", e))?
                    .map_or(0, |g| g.value()),
            })
        })
    }

    fn clear(&self) -> Result<()> {
        self.write(true, Some(&[]), |txn, _| {
            txn.delete_table(ENTRIES).map_err(|e| self.err("clear", e))?;
            txn.delete_table(ORDER).map_err(|e| self.err("clear", e))?;
            let mut meta = txn.open_table(META).map_err(|e| self.err("clear", e))?;
            meta.insert(META_BYTES, 0).map_err(|e| self.err("clear", e))?;
            drop(meta);
            txn.open_table(ENTRIES).map_err(|e| self.err("clear", e))?;
            txn.open_table(ORDER).map_err(|e| self.err("clear", e))?;
            Ok(())
        })
    }

    /// Every completed write durable, or the error that says some were lost (see
    /// [`make_durable`](Self::make_durable)).
    fn flush(&self) -> Result<()> {
        self.make_durable()?;
        if self.lost_commits.swap(false, Ordering::AcqRel) {
            return Err(redb_error(
                "flush",
                &self.path,
                "writes acknowledged since the last durable commit were lost when the database was reopened after an I/O error (a full disk?); the keys they changed read as misses until written again",
            ));
        }
        Ok(())
    }

    fn counters(&self) -> StorageCounters {
        StorageCounters {
            evictions: self.evictions.load(Ordering::Relaxed),
            expirations: self.expirations.load(Ordering::Relaxed),
            corrupt_reads: 0,
            ..StorageCounters::default()
        }
    }
}

impl LocalStorage for Inner {
    /// Every fill is written: the store has no admission policy (its size bound evicts the
    /// way `set` does).
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        self.set_each(items)?;
        Ok(items.len())
    }

    /// Expired entries are not kept: fail-safe has no stale copy to serve from this level.
    fn get_stale(&self, _key: &str) -> Result<Option<Entry>> {
        Ok(None)
    }

    /// A range scan of the key-ordered `entries` table, of the keys a read would find: the rows
    /// reads hide (`dead`, or not decoding) are left to the purge, as the file store lists only
    /// its live keys. A prefix invalidation counts what it drops, and must count the same keys
    /// whichever store L1 is.
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        self.guarded("scan", || {
            let now = self.clock.now_ms();
            let db = self.db()?;
            let txn = db.begin_read().map_err(|e| self.err("begin read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| self.err("open table", e))?;
            let mut keys = Vec::new();
            for item in entries.range(prefix..).map_err(|e| self.err("scan", e))? {
                let (key, value) = item.map_err(|e| self.err("scan", e))?;
                let key = key.value();
                if !key.starts_with(prefix) {
                    break;
                }
                if Record::decode(value.value()).is_some_and(|r| !self.dead(key, &r, now)) {
                    keys.push(key.to_owned());
                }
            }
            Ok(Some(keys))
        })
    }

    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        let Some((entry, seq)) = self.read_with_seq(key)? else {
            return Ok(None);
        };
        let freshness = if seq >= self.suspect_below_seq.load(Ordering::Acquire)
            || self.suspicion.lock().confirmed.get(key) == Some(&seq)
        {
            Freshness::Trusted
        } else {
            Freshness::Suspect
        };
        Ok(Some((entry, freshness)))
    }

    /// Makes every entry written so far suspect, keeping them.
    fn mark_all_suspect(&self) -> Result<()> {
        self.guarded("mark suspect", || {
            // Holding a write transaction keeps every writer out, so the number read is exactly the
            // first one written after this call.
            let db = self.db()?;
            let txn = db.begin_write().map_err(|e| self.err("begin write", e))?;
            let next_seq = {
                let meta = txn.open_table(META).map_err(|e| self.err("open table", e))?;
                let next = meta.get(META_NEXT_SEQ).map_err(|e| self.err("read meta", e))?;
                next.map_or(0, |g| g.value())
            };
            {
                let mut suspicion = self.suspicion.lock();
                suspicion.confirmed = HashMap::new();
                self.suspect_epoch.fetch_add(1, Ordering::AcqRel);
                self.suspect_below_seq.store(next_seq, Ordering::Release);
            }
            txn.abort().map_err(|e| self.err("abort", e))
        })
    }

    fn suspect_epoch(&self) -> SuspectEpoch {
        SuspectEpoch::new(self.suspect_epoch.load(Ordering::Acquire))
    }

    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        let Some((_, seq)) = self.read_with_seq(key)? else {
            return Ok(Confirmation::Missing);
        };
        // Under the lock a loss of certainty takes to empty the map: either it came before this
        // (the epoch moved) or it will forget what this inserts.
        let mut suspicion = self.suspicion.lock();
        if self.suspect_epoch.load(Ordering::Acquire) != checked_at.get() {
            return Ok(Confirmation::EpochMoved);
        }
        if seq < self.suspect_below_seq.load(Ordering::Acquire) {
            suspicion.confirmed.insert(key.to_owned(), seq);
        }
        Ok(Confirmation::Confirmed)
    }

    /// As [`read_many`](Self::read_many) finds values, without copying them out.
    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        let found = self.live_many(keys, |_| ())?;
        Ok(found.iter().map(Option::is_some).collect())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // A panic of redb's that `guarded` caught (a damaged page) leaves its locks poisoned,
        // and redb's own close then panics on them: dropping the store must not bring that
        // panic to the caller, nor abort a thread that is already unwinding.
        if let Some(db) = self.db.get_mut().take() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(db))).is_err() {
                tracing::error!(path = %self.path.display(), "closing the redb database failed after it met a damaged page; {START_EMPTY}");
            }
        }
    }
}
