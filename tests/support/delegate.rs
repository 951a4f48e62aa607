//! A level of a test's own that wraps another and forwards every call to it but the few the
//! test changes (a fault, a panic, a call that never answers). The test implements [`Wrap`]
//! (and [`WrapLocal`] for an L1, [`WrapDistributed`] for an L2 with async calls of its own),
//! overriding only those calls, and hands the manager a [`Delegate`] of it.
//!
//! One file for both kinds of test: the integration tests include it by `#[path]`, and the
//! library's unit tests by `#[path]` too, where `uno_cache` names the library itself
//! (`extern crate self as uno_cache` under `cfg(test)` in `src/lib.rs`).

use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use uno_cache::{
    BoxFuture, Confirmation, DistributedStorage, Entry, Freshness, LateWriteHook, LocalStorage, Result,
    Storage, StorageCounters, StorageSize, SuspectEpoch, TierAbove,
};

/// The calls of [`Storage`], each forwarded to [`inner`](Wrap::inner) unless overridden.
pub trait Wrap: Send + Sync + 'static {
    /// The level the calls not overridden go to.
    type Inner: Storage + ?Sized;

    /// The wrapped level.
    fn inner(&self) -> &Self::Inner;

    fn name(&self) -> &str {
        self.inner().name()
    }
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.inner().get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.inner().set(key, value, ttl)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.inner().delete(key)
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.inner().get_many(keys)
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.inner().set_many(items, ttl)
    }
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.inner().set_each(items)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.inner().delete_many(keys)
    }
    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.inner().check_value(key, value_len)
    }
    fn size(&self) -> Result<StorageSize> {
        self.inner().size()
    }
    fn clear(&self) -> Result<()> {
        self.inner().clear()
    }
    fn flush(&self) -> Result<()> {
        self.inner().flush()
    }
    fn counters(&self) -> StorageCounters {
        self.inner().counters()
    }
}

/// The calls of [`LocalStorage`], each forwarded to the wrapped L1 unless overridden.
pub trait WrapLocal: Wrap<Inner: LocalStorage> {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        self.inner().get_checked(key)
    }
    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        self.inner().get_stale(key)
    }
    fn mark_all_suspect(&self) -> Result<()> {
        self.inner().mark_all_suspect()
    }
    fn suspect_epoch(&self) -> SuspectEpoch {
        self.inner().suspect_epoch()
    }
    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        self.inner().confirm(key, checked_at)
    }
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        self.inner().keys_with_prefix(prefix)
    }
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        self.inner().fill_each(items)
    }
    fn watch_tier_above(&self, above: Arc<dyn TierAbove>) {
        self.inner().watch_tier_above(above)
    }
    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        self.inner().holds_many(keys)
    }
}

/// The calls of [`DistributedStorage`], each forwarded to the wrapped L2 unless overridden.
pub trait WrapDistributed: Wrap<Inner: DistributedStorage> {
    fn on_late_write_deleted(&self, hook: LateWriteHook) {
        self.inner().on_late_write_deleted(hook);
    }
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.inner().delete_prefix(prefix)
    }
    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.inner().delete_prefix_async(prefix)
    }
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        self.inner().get_async(key)
    }
    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner().set_async(key, value, ttl)
    }
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.inner().delete_async(key)
    }
    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        self.inner().get_many_async(keys)
    }
    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.inner().set_many_async(items, ttl)
    }
    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        self.inner().set_each_async(items)
    }
    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        self.inner().delete_many_async(keys)
    }
    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        self.inner().size_async()
    }
}

/// An L2 that keeps the late-write hook the manager gives it (the last one), so that a test
/// can report a key deleted after a late write when it chooses. (The library's unit tests use
/// it; the integration tests that include this file need not.)
#[allow(dead_code)]
pub struct Hooked<L> {
    pub level: L,
    pub hook: parking_lot::Mutex<Option<LateWriteHook>>,
}

#[allow(dead_code)]
impl<L> Hooked<L> {
    pub fn new(level: L) -> Hooked<L> {
        Hooked {
            level,
            hook: parking_lot::Mutex::new(None),
        }
    }
}

impl<L: DistributedStorage> Wrap for Hooked<L> {
    type Inner = L;
    fn inner(&self) -> &L {
        &self.level
    }
}

impl<L: DistributedStorage> WrapDistributed for Hooked<L> {
    fn on_late_write_deleted(&self, hook: LateWriteHook) {
        *self.hook.lock() = Some(hook);
    }
}

/// The level a test hands the manager: `W`'s calls as a [`Storage`] (and a [`LocalStorage`] or
/// [`DistributedStorage`] where `W` implements [`WrapLocal`] or [`WrapDistributed`]). It derefs
/// to `W`, so the test reaches its switches and its inner level as fields.
pub struct Delegate<W>(pub W);

impl<W> Deref for Delegate<W> {
    type Target = W;
    fn deref(&self) -> &W {
        &self.0
    }
}

impl<W: Wrap> Storage for Delegate<W> {
    fn name(&self) -> &str {
        Wrap::name(&self.0)
    }
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        Wrap::get(&self.0, key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        Wrap::set(&self.0, key, value, ttl)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        Wrap::delete(&self.0, key)
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        Wrap::get_many(&self.0, keys)
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        Wrap::set_many(&self.0, items, ttl)
    }
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        Wrap::set_each(&self.0, items)
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        Wrap::delete_many(&self.0, keys)
    }
    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        Wrap::check_value(&self.0, key, value_len)
    }
    fn size(&self) -> Result<StorageSize> {
        Wrap::size(&self.0)
    }
    fn clear(&self) -> Result<()> {
        Wrap::clear(&self.0)
    }
    fn flush(&self) -> Result<()> {
        Wrap::flush(&self.0)
    }
    fn counters(&self) -> StorageCounters {
        Wrap::counters(&self.0)
    }
}

impl<W: WrapLocal> LocalStorage for Delegate<W> {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        WrapLocal::get_checked(&self.0, key)
    }
    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        WrapLocal::get_stale(&self.0, key)
    }
    fn mark_all_suspect(&self) -> Result<()> {
        WrapLocal::mark_all_suspect(&self.0)
    }
    fn suspect_epoch(&self) -> SuspectEpoch {
        WrapLocal::suspect_epoch(&self.0)
    }
    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        WrapLocal::confirm(&self.0, key, checked_at)
    }
    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        WrapLocal::keys_with_prefix(&self.0, prefix)
    }
    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        WrapLocal::fill_each(&self.0, items)
    }
    fn watch_tier_above(&self, above: Arc<dyn TierAbove>) {
        WrapLocal::watch_tier_above(&self.0, above)
    }
    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        WrapLocal::holds_many(&self.0, keys)
    }
}

impl<W: WrapDistributed> DistributedStorage for Delegate<W> {
    fn on_late_write_deleted(&self, hook: LateWriteHook) {
        WrapDistributed::on_late_write_deleted(&self.0, hook);
    }
    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        WrapDistributed::delete_prefix(&self.0, prefix)
    }
    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        WrapDistributed::delete_prefix_async(&self.0, prefix)
    }
    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        WrapDistributed::get_async(&self.0, key)
    }
    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        WrapDistributed::set_async(&self.0, key, value, ttl)
    }
    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        WrapDistributed::delete_async(&self.0, key)
    }
    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        WrapDistributed::get_many_async(&self.0, keys)
    }
    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        WrapDistributed::set_many_async(&self.0, items, ttl)
    }
    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        WrapDistributed::set_each_async(&self.0, items)
    }
    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        WrapDistributed::delete_many_async(&self.0, keys)
    }
    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        WrapDistributed::size_async(&self.0)
    }
}
