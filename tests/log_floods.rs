//! What a service that keeps calling at production rates logs while a failure lasts: a line at
//! its start, then at most one a second, not one a call. Each test makes its calls under a
//! subscriber that counts the lines at warning level and above (on the calling thread, where
//! these failures are logged), against a real Redis killed mid-run or a real full tmpfs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use mount::Mount;
use support::RedisServer;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};
use uno_cache::{CacheConfig, CacheManager};

/// Counts the events at WARN and above; keeps the first of each message to show a failure.
#[derive(Clone, Default)]
struct Lines(Arc<AtomicUsize>);

impl Subscriber for Lines {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

const CALLS: usize = 2000;

/// The lines `CALLS` calls of `call` log, and the seconds they took: a line a second each
/// place may log, besides the first ones.
fn lines_of(mut call: impl FnMut(usize)) -> (usize, u64) {
    let lines = Lines::default();
    let started = Instant::now();
    tracing::subscriber::with_default(lines.clone(), || (0..CALLS).for_each(&mut call));
    (lines.0.load(Ordering::Relaxed), started.elapsed().as_secs())
}

/// Redis killed mid-run; every write goes to the replay queue, full after ten: each write lost
/// a warning for its key and an error for the call, 4,000 lines for 2,000 writes.
#[test]
fn a_full_replay_queue_under_a_killed_redis_logs_a_few_lines_not_two_a_write() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{}"]
        timeout_ms = 500
        breaker_failures = 1
        breaker_cooldown_ms = 600000
        [offline]
        replay_max_entries = 10
        replay_interval_ms = 3600000
        "#,
        dir.path().display(),
        redis.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw("before", b"v", None).unwrap();
    redis.kill();
    let (lines, secs) = lines_of(|i| cache.set_raw(&format!("k{i}"), b"v", None).unwrap());
    let stats = cache.stats();
    assert!(stats.consistency.replay_overflowed, "{stats:?}");
    assert!(
        lines <= 8 + 4 * secs as usize,
        "{lines} lines for {CALLS} writes in {secs} s"
    );
}

/// The file store's device full before its first segment: every write is refused (the caller
/// gets `DiskFull`), and the store logged each refusal.
#[test]
fn a_file_store_on_a_full_tmpfs_logs_a_few_lines_not_one_a_write() {
    let disk = Mount::tmpfs(1024);
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        max_size = 16
        "#,
        disk.path().join("store").display()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    disk.fill("ballast");
    let (lines, secs) = lines_of(|i| {
        let err = cache.set_raw(&format!("k{i}"), b"v", None).unwrap_err();
        assert!(matches!(err, uno_cache::Error::DiskFull { .. }), "{err:?}");
    });
    let stats = cache.stats();
    assert!(stats.local.errors >= CALLS as u64, "{stats:?}");
    assert!(
        lines <= 2 + secs as usize,
        "{lines} lines for {CALLS} writes in {secs} s"
    );
}
