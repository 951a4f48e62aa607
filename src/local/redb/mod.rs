//! [`RedbStore`]: a persistent level in a [redb](https://docs.rs/redb) database file, selected
//! with `local.type = "redb"`.
//!
//! Three tables: `entries` (key → expiry, sequence number, value), `order` (sequence number →
//! key, the insertion order used for eviction) and `meta` (the byte count and the next sequence
//! number), all updated in the same transaction, so the counts survive restarts exactly.
//!
//! - **Size bound** (`max_size_mb`): bounds the bytes of the entries (key + value + 16 bytes of
//!   header each), not the database file, which redb grows and reuses but does not shrink. When a
//!   write passes the bound, the oldest-written entries are evicted (FIFO).
//! - **TTL**: the absolute expiry (Unix ms) is stored with the value; an expired entry is a miss.
//!   Reads do not write: expired entries are removed by the background thread every
//!   [`RedbOptions::purge_every`] (a minute by default), or by [`RedbStore::purge_expired`],
//!   so that the size bound evicts live entries only when nothing expired is left.
//! - **Durability**: `EveryWrite` commits with `redb::Durability::Immediate` (fsync). `None` and
//!   `Periodic` commit without fsync, and redb keeps such a commit in process memory only, until
//!   a later durable commit: unlike the file store's writes, which are in the page cache once they
//!   return, these are lost by a killed process as by a power loss (redb rolls back to the last
//!   durable commit). With `None` that is everything since the last [`flush`](Storage::flush) or
//!   close. With `Periodic(d)` the background thread (`uno-cache-redb`, stopped and joined when the
//!   store is dropped) commits durably every `d` when there were writes, and a write finding the
//!   last durable commit older than `d` is made durable itself, so the loss window is `d` (plus
//!   the commit's time, and at most one round of the thread's purge of expired entries, which
//!   stops for the commit between rounds of 10,000 entries), also after writes stop.
//!   [`RedbStore::has_non_durable_commits`] tells
//!   whether anything is at risk now. Entries restored at open are suspect (below).
//! - **Exclusive**: redb locks the file; a second open gets [`Error::Locked`](crate::Error::Locked),
//!   also while a process of another redb version holds it (an older build's whole-file lock, or
//!   another generation of redb's locking protocol).
//! - **Full disk**: a write that finds no room is [`Error::DiskFull`](crate::Error::DiskFull) (at once: the file does not
//!   shrink when entries go, so evicting frees nothing on the device). redb then refuses every
//!   transaction until its database is reopened; the failed write does that before it returns,
//!   so reads go on being answered, and writes are refused as `DiskFull` for a second after it
//!   (each reopen repairs the whole file), then tried again: they resume once space is back.
//!   The reopen keeps only what was durable, and makes every entry it kept suspect, as an open
//!   does; if it lost commits that were not durable yet, the
//!   next [`flush`](Storage::flush) (or close) returns an error that says so, once, and
//!   [`RedbStore::has_non_durable_commits`] is true until then (the flusher thread leaves that
//!   report to the caller's flush). The keys those commits set or deleted read as misses until
//!   written again: the file holds their older values, and a deleted value must not come back
//!   (see `lost`; over 100,000 keys since the last durable commit, every entry the reopen kept
//!   reads as a miss). The next flush, close or `Periodic` turn first removes those older values
//!   from the file in durable commits, and fails if it cannot, so no flush or close that
//!   succeeded leaves one for the next open to restore. An open that creates the file and
//!   finds no room removes it again, so the next open, once space is back, creates the store
//!   (redb left a file without its header, refused as no redb database).
//! - **Suspect entries**: like the file store, it keeps its entries through a loss of certainty
//!   instead of forgetting them. Every entry restored at open, and every entry written before
//!   [`mark_all_suspect`](LocalStorage::mark_all_suspect) (a lost backplane subscription), is
//!   [`Freshness::Suspect`] in [`get_checked`](LocalStorage::get_checked) until it is rewritten or
//!   [confirmed](LocalStorage::confirm): entries carry increasing sequence numbers, and those below
//!   the number current at the last loss are suspect unless confirmed since. Confirmations are
//!   kept in memory (one per confirmed key) and forgotten at the next loss or restart.
//! - **Permissions**: a database file the store creates gets [`RedbOptions::file_mode`] (`0o600`
//!   by default), a directory it creates the same bits plus search (`0o700`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::durability::Durability;
use crate::error::Result;
use crate::storage::{
    Confirmation, Entry, Freshness, LocalStorage, Storage, StorageCounters, StorageSize, SuspectEpoch,
};

/// Name of the database file inside the configured directory.
pub use crate::files::REDB_FILE_NAME;

mod flusher;
mod handle;
mod inner;
mod lost;
mod options;
mod tables;
#[cfg(test)]
mod tests;

use flusher::Flusher;
use inner::Inner;
pub use options::RedbOptions;

/// A persistent cache level in one redb database file.
///
/// ```
/// use uno_cache::{RedbOptions, RedbStore, Storage};
/// let dir = tempfile::tempdir()?;
/// let store = RedbStore::open(dir.path().join("cache.redb"), RedbOptions::default())?;
/// store.set("k", b"v", None)?;
/// assert_eq!(store.get("k")?.map(|e| e.value), Some(b"v".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RedbStore {
    inner: Arc<Inner>,
    /// The background thread (durable commits with `Periodic`, the purge of expired entries);
    /// stopped before the close's flush.
    flusher: Option<Flusher>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.inner.path)
            .field("max_bytes", &self.inner.max_bytes)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`, creating missing parent directories.
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) for a zero size bound or zero periodic interval,
    /// [`Error::Locked`](crate::Error::Locked) if the file is open elsewhere,
    /// [`Error::DiskFull`](crate::Error::DiskFull) if the device has no room,
    /// [`Error::Io`](crate::Error::Io) or [`Error::Redb`](crate::Error::Redb) otherwise.
    pub fn open(path: impl AsRef<Path>, options: RedbOptions) -> Result<RedbStore> {
        let purge_every = options.purge_every;
        let inner = Arc::new(Inner::open(path, options)?);
        let flush_every = match inner.durability {
            Durability::Periodic(every) => Some(every),
            Durability::None | Durability::EveryWrite => None,
        };
        let flusher = Flusher::start(&inner, flush_every, purge_every)?;
        Ok(RedbStore { inner, flusher })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.inner.path()
    }

    /// Removes every expired entry now, and every older version that a reopen after an I/O
    /// error brought back (which reads hide while this process runs); returns how many.
    ///
    /// # Errors
    /// [`Error::Redb`](crate::Error::Redb) if the transaction fails.
    pub fn purge_expired(&self) -> Result<u64> {
        self.inner.purge_expired()
    }

    /// The entries a read would return now: neither expired nor an older version that a
    /// reopen after an I/O error brought back. Unlike [`size`](Storage::size), whose `items` is
    /// read from redb's row count at no cost and so includes the rows the purge has not removed
    /// yet, this reads every row: its time grows with the store (a read transaction, which
    /// writers do not wait for).
    ///
    /// # Errors
    /// [`Error::Redb`](crate::Error::Redb) if the read fails.
    pub fn count_live(&self) -> Result<u64> {
        self.inner.count_live()
    }

    /// Whether a commit since the last durable one is still held only in this process's memory:
    /// a kill of the process would lose it (see the module docs). It stays so until the next
    /// durable commit: a flush, a close, an `EveryWrite` write, or the flusher thread's next
    /// turn with `Periodic`. Also true once a reopen after an I/O error lost such commits, until
    /// a [`flush`](Storage::flush) has reported it.
    #[must_use]
    pub fn has_non_durable_commits(&self) -> bool {
        *self.inner.dirty.lock() || self.inner.lost_commits.load(std::sync::atomic::Ordering::Acquire)
    }
}

impl Storage for RedbStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.get(key)
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.inner.get_many(keys)
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner.set(key, value, ttl)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.inner.set_many(items, ttl)
    }

    /// One transaction for the batch, each item with its own expiry.
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.inner.set_each(items)
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inner.delete_many(keys)
    }

    /// A value must fit in the size bound with its key.
    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.inner.check_value(key, value_len)
    }

    /// `items` counts the rows of the store, read at no cost: the live entries, and until the
    /// purge removes them (every [`RedbOptions::purge_every`], or
    /// [`purge_expired`](RedbStore::purge_expired)) the expired ones, and the older versions a
    /// reopen after an I/O error brought back (until the next flush, close or `Periodic` turn),
    /// which reads do not return. [`count_live`](RedbStore::count_live) counts only what a read
    /// returns, reading every row. `bytes` counts the same rows, as the size bound does.
    fn size(&self) -> Result<StorageSize> {
        self.inner.size()
    }

    fn clear(&self) -> Result<()> {
        self.inner.clear()
    }

    fn flush(&self) -> Result<()> {
        self.inner.flush()
    }

    fn counters(&self) -> StorageCounters {
        self.inner.counters()
    }
}

impl LocalStorage for RedbStore {
    /// Every fill is written: the store has no admission policy (its size bound evicts the
    /// way `set` does).
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        self.inner.fill_each(items)
    }

    /// Expired entries are not kept: fail-safe has no stale copy to serve from this level.
    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        self.inner.get_stale(key)
    }

    /// A range scan of the key-ordered `entries` table, of the keys a read would find (expired
    /// rows are left to the purge, as the file store lists only live keys).
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        self.inner.keys_with_prefix(prefix)
    }

    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        self.inner.get_checked(key)
    }

    /// Makes every entry written so far suspect, keeping them.
    fn mark_all_suspect(&self) -> Result<()> {
        self.inner.mark_all_suspect()
    }

    fn suspect_epoch(&self) -> SuspectEpoch {
        self.inner.suspect_epoch()
    }

    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        self.inner.confirm(key, checked_at)
    }

    /// As [`get_many`](Storage::get_many) tells, without copying the values out.
    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        self.inner.holds_many(keys)
    }
}

impl Drop for RedbStore {
    fn drop(&mut self) {
        // Joined first: a turn under way holds the state, and must not be the one to close the
        // database after this returns (a reopen by the caller would find the file locked).
        drop(self.flusher.take());
        if let Err(e) = Storage::flush(&*self.inner) {
            tracing::error!(error = %e, path = %self.inner.path.display(), "closing the redb store failed");
        }
    }
}
