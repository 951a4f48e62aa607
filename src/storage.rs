//! The one trait every cache level implements: file, memory, Redis, Memcached, or your own.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::error::Result;
/// The key rules live in `keys` (a bottom module); every level reaches them from here too.
pub(crate) use crate::keys::{check_key, check_write};

/// A boxed, sendable future: the return type of the trait's async methods (object safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A value read from a level (a bottom module, so that errors can carry entries too).
pub use crate::entry::Entry;

/// Whether a local entry can be trusted without asking L2.
///
/// An entry is *suspect* when it may have been changed elsewhere without this process hearing of
/// it: it was restored from disk at start-up, or written before the invalidation stream was lost.
/// The manager revalidates suspect entries against L2 when L2 is reachable and serves them as
/// they are when it is not (offline mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Freshness {
    /// Written (or confirmed) since the last loss of certainty.
    Trusted,
    /// May be stale; revalidate before trusting it.
    Suspect,
}

/// How much a level holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageSize {
    /// Live entries.
    pub items: u64,
    /// Bytes of live entries as the level counts them (keys, values and per-entry overhead for the
    /// file store; keys and values for the memory store).
    pub bytes: u64,
}

/// Events a level counted itself since it was opened (for the manager's stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StorageCounters {
    /// Entries dropped to respect the level's size bound.
    pub evictions: u64,
    /// Entries removed because their TTL passed.
    pub expirations: u64,
}

/// A cache level: bytes in, bytes out, keyed by string.
///
/// The trait is object safe, so the level can be picked from configuration at run time
/// (`Box<dyn Storage>`). Implementations know nothing of other levels; multi-level policy lives
/// only in the manager.
///
/// Contract for every implementation:
/// - `get` never returns an expired entry or bytes other than the ones last `set` for the key.
/// - `set` with `Some(ttl)` requires `ttl > 0` ([`Error::ZeroTtl`](crate::Error::ZeroTtl)
///   otherwise); `None` means the level's default (which may be "never").
/// - A failed call changes nothing that a later successful `get` could observe as garbage.
///
/// The `*_async` methods default to the blocking ones, which is right for local levels (an mmap
/// read or an append to the page cache does not wait on the network). Network levels override
/// them with real async I/O and must never block the executor.
pub trait Storage: Send + Sync + 'static {
    /// A short name for logs and stats ("file", "memory", "redis", ...).
    fn name(&self) -> &str {
        "custom"
    }

    /// Reads a key. A miss is `Ok(None)`.
    fn get(&self, key: &str) -> Result<Option<Entry>>;

    /// Writes a key, replacing any previous value.
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()>;

    /// Deletes a key; `true` if a live entry was removed.
    fn delete(&self, key: &str) -> Result<bool>;

    /// Reads several keys; the result has one slot per key, in order.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        keys.iter().map(|key| self.get(key)).collect()
    }

    /// Writes several keys with the same TTL.
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.set(key, value, ttl)?;
        }
        Ok(())
    }

    /// Writes several keys, each with its own TTL: a batched backfill from L2 (each entry keeps
    /// its own remaining TTL) or a write-behind flush. Levels that can batch override it.
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        for (key, value, ttl) in items {
            self.set(key, value, *ttl)?;
        }
        Ok(())
    }

    /// Refuses, before anything is written anywhere, a value this level could never store (too
    /// large for memcached's item limit, say), so that a write that does not wait for this
    /// level (write-behind) still reports bad input to its caller. Default: every value fits.
    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        let _ = (key, value_len);
        Ok(())
    }

    /// Deletes several keys; returns how many live entries were removed.
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        let mut removed = 0;
        for key in keys {
            if self.delete(key)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// How much the level holds now.
    fn size(&self) -> Result<StorageSize>;

    /// Removes every entry.
    fn clear(&self) -> Result<()>;

    /// Makes every completed write durable, where the level has such a notion.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// Evictions and expirations the level has counted; zeros where it does not track them
    /// (the default). Cheap: the manager calls it when stats are read.
    fn counters(&self) -> StorageCounters {
        StorageCounters::default()
    }

    /// Reads a key and says whether the entry is [`Freshness::Suspect`]. Levels that keep nothing
    /// across a loss of certainty (the default) report every entry as trusted.
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        Ok(self.get(key)?.map(|entry| (entry, Freshness::Trusted)))
    }

    /// Reads a key as [`get`](Storage::get) does, and also an entry that expired less than the
    /// level's keep-expired window ago (its `expires_at` is then past): the stale copy that
    /// fail-safe reads fall back on. `Ok(None)` (the default) for levels that keep nothing
    /// expired, which is what a distributed level does.
    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        let _ = key;
        Ok(None)
    }

    /// Every entry written before this call becomes suspect until confirmed or rewritten. The
    /// default forgets everything ([`clear`](Storage::clear)), which is always safe for a cache.
    fn mark_all_suspect(&self) -> Result<()> {
        self.clear()
    }

    /// Marks the current entry of `key` as confirmed fresh (revalidated against L2).
    fn confirm(&self, key: &str) -> Result<()> {
        let _ = key;
        Ok(())
    }

    /// The keys that start with `prefix`, for levels that can list them cheaply (prefix
    /// invalidation then drops just those); `None` (the default) means the level cannot, and
    /// the caller clears it instead.
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        let _ = prefix;
        Ok(None)
    }

    /// Async [`get`](Storage::get).
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(std::future::ready(self.get(key)))
    }

    /// Async [`set`](Storage::set).
    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.set(key, value, ttl)))
    }

    /// Async [`delete`](Storage::delete).
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(std::future::ready(self.delete(key)))
    }

    /// Async [`get_many`](Storage::get_many).
    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        Box::pin(std::future::ready(self.get_many(keys)))
    }

    /// Async [`set_many`](Storage::set_many).
    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.set_many(items, ttl)))
    }

    /// Async [`set_each`](Storage::set_each).
    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(std::future::ready(self.set_each(items)))
    }

    /// Async [`size`](Storage::size) (for stats read from async code).
    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        Box::pin(std::future::ready(self.size()))
    }

    /// Async [`delete_many`](Storage::delete_many).
    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        Box::pin(std::future::ready(self.delete_many(keys)))
    }
}
