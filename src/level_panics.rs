//! A level's panic as the error of its call: [`Caught`], the wrapper the manager puts around
//! the levels a user plugs in, and [`caught`] / [`caught_future`], the same for one call (the
//! circuit breaker's wrapper uses them, so that a panic is a failure it counts).
//!
//! A panic in a level (a user's own `Storage`, or a bug in one of ours) that unwound through
//! the manager left its call half-done: a write L1 had taken and L2 never did stayed in L1,
//! neither undone nor queued for replay, the failure was counted nowhere, and a background
//! thread (replay, the write-behind writer) that met it ended. Made the call's error, it takes
//! the path every failed call of that level takes. The calls that answer no `Result` (`name`,
//! `suspect_epoch`, `watch_tier_above`, `on_late_write_deleted`) are left to unwind:
//! none of them does I/O, and an answer made up for them could be wrong where an error cannot.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::error::{key_for_error, Error, Result};
use crate::storage::{
    BoxFuture, Confirmation, DistributedStorage, Entry, Freshness, LocalStorage, Storage, StorageCounters,
    StorageSize, SuspectEpoch, TierAbove,
};

/// What a call was about, for its error: nothing (size, clear), a key, or a batch.
#[derive(Clone, Copy)]
pub(crate) enum About<'a> {
    Level,
    Key(&'a str),
    Keys(Option<&'a str>, usize),
}

impl<'a> About<'a> {
    pub(crate) fn keys(keys: &[&'a str]) -> Self {
        About::Keys(keys.first().copied(), keys.len())
    }

    pub(crate) fn items<V>(items: &'a [(&'a str, V)]) -> Self {
        About::Keys(items.first().map(|(k, _)| *k), items.len())
    }

    pub(crate) fn each(items: &'a [(&'a str, &'a [u8], Option<Duration>)]) -> Self {
        About::Keys(items.first().map(|(k, _, _)| *k), items.len())
    }
}

/// The error of a call of `level` (named `name`) that panicked.
fn panicked(level: &'static str, name: &str, op: &'static str, about: About<'_>) -> Error {
    tracing::error!(
        level,
        name,
        op,
        "a cache level's call panicked; handled as a failed call"
    );
    let of = match about {
        About::Level => String::new(),
        About::Key(key) => format!(" of {:?}", key_for_error(key)),
        About::Keys(Some(first), n) => format!(" of {n} key(s) (first {:?})", key_for_error(first)),
        About::Keys(None, _) => " of no keys".to_owned(),
    };
    Error::Backend {
        level,
        op,
        reason: format!("the {name} level's {op}{of} panicked"),
    }
}

/// `call()`, or, if it panicked, the error of a failed call of `level`.
pub(crate) fn caught<T>(
    level: &'static str,
    name: &str,
    op: &'static str,
    about: About<'_>,
    call: impl FnOnce() -> Result<T>,
) -> Result<T> {
    // Unwind safety: what the level left half-done is its own, as after any failed call of
    // it; nothing of the caller's is half-changed across the call.
    catch_unwind(AssertUnwindSafe(call)).unwrap_or_else(|_| Err(panicked(level, name, op, about)))
}

/// The future `make()` returns, awaited, with a panic in `make` or in a poll of the future made
/// the error of a failed call of `level`. The future is not polled again after a panic.
pub(crate) fn caught_future<'a, T: Send + 'a>(
    level: &'static str,
    name: &'a str,
    op: &'static str,
    about: About<'a>,
    make: impl FnOnce() -> BoxFuture<'a, Result<T>>,
) -> BoxFuture<'a, Result<T>> {
    let Ok(mut call) = catch_unwind(AssertUnwindSafe(make)) else {
        return Box::pin(std::future::ready(Err(panicked(level, name, op, about))));
    };
    let mut done = false;
    Box::pin(std::future::poll_fn(move |cx| {
        if done {
            return Poll::Ready(Err(panicked(level, name, op, about)));
        }
        match catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
            Ok(polled) => polled,
            Err(_) => {
                done = true;
                Poll::Ready(Err(panicked(level, name, op, about)))
            }
        }
    }))
}

/// A level whose panics are its calls' errors (see the module docs); `level` ("L1", "L2")
/// names it in them, with the level's own name.
pub(crate) struct Caught<S: ?Sized> {
    level: &'static str,
    name: String,
    inner: Arc<S>,
}

impl<S: Storage + ?Sized> Caught<S> {
    pub(crate) fn new(level: &'static str, inner: Arc<S>) -> Self {
        let name = catch_unwind(AssertUnwindSafe(|| inner.name().to_owned()))
            .unwrap_or_else(|_| "custom".to_owned());
        Caught { level, name, inner }
    }

    fn call<T>(&self, op: &'static str, about: About<'_>, call: impl FnOnce(&S) -> Result<T>) -> Result<T> {
        caught(self.level, &self.name, op, about, || call(&self.inner))
    }

    fn call_async<'a, T: Send + 'a>(
        &'a self,
        op: &'static str,
        about: About<'a>,
        make: impl FnOnce(&'a S) -> BoxFuture<'a, Result<T>>,
    ) -> BoxFuture<'a, Result<T>> {
        caught_future(self.level, &self.name, op, about, || make(&self.inner))
    }
}

impl<S: Storage + ?Sized> Storage for Caught<S> {
    fn name(&self) -> &str {
        &self.name
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.call("get", About::Key(key), |l| l.get(key))
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.call("set", About::Key(key), |l| l.set(key, value, ttl))
    }

    fn delete(&self, key: &str) -> Result<bool> {
        self.call("delete", About::Key(key), |l| l.delete(key))
    }

    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        self.call("get_many", About::keys(keys), |l| l.get_many(keys))
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        self.call("set_many", About::items(items), |l| l.set_many(items, ttl))
    }

    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.call("set_each", About::each(items), |l| l.set_each(items))
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        self.call("delete_many", About::keys(keys), |l| l.delete_many(keys))
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.call("check_value", About::Key(key), |l| l.check_value(key, value_len))
    }

    fn size(&self) -> Result<StorageSize> {
        self.call("size", About::Level, |l| l.size())
    }

    fn clear(&self) -> Result<()> {
        self.call("clear", About::Level, |l| l.clear())
    }

    fn flush(&self) -> Result<()> {
        self.call("flush", About::Level, |l| l.flush())
    }

    /// Stats read them: a level whose counters panic reports none.
    fn counters(&self) -> StorageCounters {
        self.call("counters", About::Level, |l| Ok(l.counters()))
            .unwrap_or_default()
    }
}

impl<S: LocalStorage + ?Sized> LocalStorage for Caught<S> {
    fn get_checked(&self, key: &str) -> Result<Option<(Entry, Freshness)>> {
        self.call("get_checked", About::Key(key), |l| l.get_checked(key))
    }

    fn get_stale(&self, key: &str) -> Result<Option<Entry>> {
        self.call("get_stale", About::Key(key), |l| l.get_stale(key))
    }

    fn mark_all_suspect(&self) -> Result<()> {
        self.call("mark_all_suspect", About::Level, |l| l.mark_all_suspect())
    }

    fn suspect_epoch(&self) -> SuspectEpoch {
        self.inner.suspect_epoch()
    }

    fn confirm(&self, key: &str, checked_at: SuspectEpoch) -> Result<Confirmation> {
        self.call("confirm", About::Key(key), |l| l.confirm(key, checked_at))
    }

    fn keys_with_prefix(&self, prefix: &str) -> Result<Option<Vec<String>>> {
        self.call("keys_with_prefix", About::Key(prefix), |l| {
            l.keys_with_prefix(prefix)
        })
    }

    fn fill_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<usize> {
        self.call("fill_each", About::each(items), |l| l.fill_each(items))
    }

    fn watch_tier_above(&self, above: Arc<dyn TierAbove>) {
        self.inner.watch_tier_above(above);
    }

    fn holds_many(&self, keys: &[&str]) -> Result<Vec<bool>> {
        self.call("holds_many", About::keys(keys), |l| l.holds_many(keys))
    }
}

impl<S: DistributedStorage + ?Sized> DistributedStorage for Caught<S> {
    fn on_late_write_deleted(&self, hook: crate::storage::LateWriteHook) {
        self.inner.on_late_write_deleted(hook);
    }

    fn delete_prefix(&self, prefix: &str) -> Result<Option<u64>> {
        self.call("delete_prefix", About::Key(prefix), |l| l.delete_prefix(prefix))
    }

    fn delete_prefix_async<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Option<u64>>> {
        self.call_async("delete_prefix", About::Key(prefix), |l| {
            l.delete_prefix_async(prefix)
        })
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        self.call_async("get", About::Key(key), |l| l.get_async(key))
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.call_async("set", About::Key(key), |l| l.set_async(key, value, ttl))
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        self.call_async("delete", About::Key(key), |l| l.delete_async(key))
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        self.call_async("get_many", About::keys(keys), |l| l.get_many_async(keys))
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        self.call_async("set_many", About::items(items), |l| l.set_many_async(items, ttl))
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        self.call_async("set_each", About::each(items), |l| l.set_each_async(items))
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        self.call_async("delete_many", About::keys(keys), |l| l.delete_many_async(keys))
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        self.call_async("size", About::Level, |l| l.size_async())
    }
}
