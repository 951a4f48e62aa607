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
use std::sync::{Arc, OnceLock};
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

/// The lines logged apart from the caller: by the write-behind writer threads
/// (`uno-cache-l2-writer`), of loads run apart from their callers (whose lines begin "a
/// loaded value"), and of backfills (on the caller's thread or the backfill thread; a single
/// read's and a batch read's apart). A global subscriber sees them, the thread-local ones above
/// see the callers'. Only one test here writes behind, one loads apart, one backfills single
/// reads, one batch reads, one receives invalidations of keys no L1 holds, one of keys its L1
/// cannot drop, and one gives up on its calls.
#[derive(Clone, Default)]
struct Apart {
    writers: Lines,
    loads: Lines,
    backfills: Lines,
    batch_backfills: Lines,
    unheld: Lines,
    unwaited: Lines,
    undropped: Lines,
}

#[derive(Default)]
struct Message(String);
impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
impl Subscriber for Apart {
    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        self.writers.enabled(meta)
    }
    fn new_span(&self, a: &Attributes<'_>) -> Id {
        self.writers.new_span(a)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        if std::thread::current().name() == Some("uno-cache-l2-writer") {
            self.writers.event(e);
        }
        let mut message = Message::default();
        e.record(&mut message);
        if message.0.starts_with("a loaded value") {
            self.loads.event(e);
        }
        if message.0.starts_with("backfilling L1 failed; the read goes on") {
            self.backfills.event(e);
        }
        if message.0.starts_with("backfilling L1 failed; the read went on") {
            self.batch_backfills.event(e);
        }
        if message.0.starts_with("an invalidation names keys") {
            self.unheld.event(e);
        }
        if message.0.starts_with("a call whose caller gave up on it") {
            self.unwaited.event(e);
        }
        if message.0.starts_with("dropping invalidated keys from L1 failed") {
            self.undropped.event(e);
        }
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn apart_lines() -> &'static Apart {
    static LINES: OnceLock<Apart> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Apart::default();
        tracing::subscriber::set_global_default(lines.clone()).unwrap();
        lines
    })
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

/// [`lines_of`] for lines logged apart from the caller (see [`Apart`]): that `counter` counts
/// at most one line a second, besides the first, while `run` makes `CALLS` calls of `what`.
fn assert_few_lines_apart(counter: &Lines, what: &str, run: impl FnOnce()) {
    let before = counter.0.load(Ordering::Relaxed);
    let started = Instant::now();
    run();
    let (lines, secs) = (
        counter.0.load(Ordering::Relaxed) - before,
        started.elapsed().as_secs(),
    );
    assert!(
        lines <= 1 + secs as usize,
        "{lines} lines for {CALLS} {what} in {secs} s"
    );
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

/// Redis killed under write-behind without a replay queue: every batch the open breaker skips
/// is lost to L2, and the writer logged a warning per batch (a batch may hold one key when the
/// writer keeps up with the sets).
#[test]
fn write_behind_batches_lost_under_a_killed_redis_log_a_few_lines_not_one_a_batch() {
    let writers = &apart_lines().writers;
    let mut redis = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "memory"
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{}"]
        write_mode = "behind"
        timeout_ms = 500
        breaker_failures = 1
        breaker_cooldown_ms = 600000
        [offline]
        replay = false
        "#,
        redis.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw("before", b"v", None).unwrap();
    cache.flush().unwrap();
    redis.kill();
    let before = writers.0.load(Ordering::Relaxed);
    // A flush sends what is queued on the caller's thread: its lines are the caller's. It
    // reports the writes lost since the one before (no replay queue takes them), as it must.
    let drain = || match cache.flush() {
        Ok(()) | Err(uno_cache::Error::WriteBehindLost { .. }) => {}
        Err(e) => panic!("the flush failed otherwise: {e}"),
    };
    let (callers, secs) = lines_of(|i| {
        cache.set_raw(&format!("k{i}"), b"v", None).unwrap();
        // The writer takes what is queued as soon as there is some: a batch of a key or two at
        // a service's pace, not one batch of everything.
        if i % 2 == 0 {
            drain();
        }
    });
    drain();
    let lines = callers + writers.0.load(Ordering::Relaxed) - before;
    let stats = cache.stats();
    assert!(
        stats.consistency.write_behind_failures >= CALLS as u64,
        "{stats:?}"
    );
    assert!(
        lines <= 4 + 2 * secs as usize,
        "{lines} lines for {CALLS} writes in {secs} s"
    );
}

/// A segment damaged whole (every record's value flipped, as a bad sector or a bad copy leaves
/// it; its hint intact, so the open takes the index from it) is found record by record as the
/// keys are read: a warning each.
#[test]
fn the_reads_of_a_segment_damaged_whole_log_a_few_lines_not_one_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let marker = [0xA5u8; 64];
    let store = uno_cache::FileStore::open(dir.path(), uno_cache::FileStoreOptions::default()).unwrap();
    for i in 0..CALLS {
        store.set(&format!("k{i}"), &marker, None).unwrap();
    }
    store.close().unwrap();
    let mut damaged = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path
            .extension()
            .is_some_and(|e| e == uno_cache::files::SEGMENT_EXT)
        {
            let mut bytes = std::fs::read(&path).unwrap();
            let mut at = 0;
            while let Some(found) = bytes[at..].windows(marker.len()).position(|w| w == marker) {
                bytes[at + found + 1] ^= 0xFF;
                at += found + marker.len();
                damaged += 1;
            }
            std::fs::write(&path, &bytes).unwrap();
        }
    }
    assert_eq!(damaged, CALLS);
    let store = uno_cache::FileStore::open(dir.path(), uno_cache::FileStoreOptions::default()).unwrap();
    let (lines, secs) = lines_of(|i| assert_eq!(store.get(&format!("k{i}")).unwrap(), None));
    assert_eq!(store.stats().corrupt_reads, CALLS as u64);
    assert!(
        lines <= 2 + secs as usize,
        "{lines} lines for {CALLS} reads in {secs} s"
    );
}

/// Loads run apart from their callers (a loader timeout is set) on a file store whose device is
/// full: each loaded value the store refuses has no caller left to tell, and was logged, a
/// warning a load.
#[test]
fn loads_apart_on_a_full_tmpfs_log_a_few_lines_not_one_a_load() {
    let loads = &apart_lines().loads;
    let disk = Mount::tmpfs(1024);
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        max_size = 16
        [loader]
        hard_timeout_ms = 60000
        "#,
        disk.path().join("store").display()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    disk.fill("ballast");
    assert_few_lines_apart(loads, "loads", || {
        for i in 0..CALLS {
            let loaded = cache.get_or_load(&format!("k{i}"), None, move || {
                Ok::<_, uno_cache::Error>(i as u64)
            });
            assert!(loaded.is_ok(), "{loaded:?}");
        }
    });
}

/// [`CALLS`] keys that `redis` holds (written through a memory L1), and a manager over a file
/// L1 on a tmpfs filled to the last byte, so that every backfill of them fails.
fn l2_keys_behind_a_full_file_l1(redis: &RedisServer) -> (Mount, CacheManager, Vec<String>) {
    let disk = Mount::tmpfs(1024);
    let toml = |local: &str| {
        format!(
            "[local]\n{local}\n[distributed]\nenabled = true\ntype = \"redis\"\nhosts = [\"{}\"]\n",
            redis.addr()
        )
    };
    let writer = CacheManager::new(CacheConfig::from_toml_str(&toml("type = \"memory\"")).unwrap()).unwrap();
    let keys: Vec<String> = (0..CALLS).map(|i| format!("k{i}")).collect();
    for key in &keys {
        writer.set_raw(key, b"v", None).unwrap();
    }
    let local = format!(
        "type = \"file\"\npath = \"{}\"\nmax_size = 16",
        disk.path().join("store").display()
    );
    let cache = CacheManager::new(CacheConfig::from_toml_str(&toml(&local)).unwrap()).unwrap();
    disk.fill("ballast");
    (disk, cache, keys)
}

/// Reads that L2 answers for a file L1 whose device is full: every backfill fails, and each
/// logged a warning.
#[test]
fn backfills_on_a_full_tmpfs_log_a_few_lines_not_one_a_read() {
    let backfills = &apart_lines().backfills;
    let redis = RedisServer::start();
    let (_disk, cache, keys) = l2_keys_behind_a_full_file_l1(&redis);
    assert_few_lines_apart(backfills, "reads", || {
        for key in &keys {
            assert_eq!(cache.get_raw(key).unwrap().as_deref(), Some(&b"v"[..]));
        }
        cache.flush().unwrap();
    });
    assert_eq!(cache.stats().local.errors, CALLS as u64);
}

/// The key "k" with a queued op (Redis killed) and a suspect L1 entry that is not the op's,
/// while L1's segment refuses writes, as a failing device's do: `op` queues the op and makes
/// the entry (through the manager, or the store as another user of it). Every read of the key
/// is answered by the op, and puts it into L1 again (the queued value, or a drop), which fails:
/// each logged a warning.
fn reads_of_a_queued_op_l1_cannot_apply(
    op: impl FnOnce(&CacheManager, &uno_cache::FileStore, &dyn Fn(bool)),
    answer: Option<&[u8]>,
) {
    let mut redis = RedisServer::start();
    let disk = Mount::ext4(16);
    let dir = disk.path().join("store");
    let queue = tempfile::tempdir().unwrap();
    let options = uno_cache::FileStoreOptions::default().max_size_mb(8);
    let store = Arc::new(uno_cache::FileStore::open(&dir, options).unwrap());
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{}"]
        timeout_ms = 500
        breaker_failures = 1
        breaker_cooldown_ms = 600000
        [offline]
        replay_dir = "{}"
        replay_interval_ms = 3600000
        "#,
        redis.addr(),
        queue.path().display()
    ))
    .unwrap();
    let cache = CacheManager::builder()
        .config(config)
        .local(store.clone())
        .build()
        .unwrap();
    cache.set_raw("k", b"old", None).unwrap();
    redis.kill();
    let segment = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == uno_cache::files::SEGMENT_EXT))
        .max()
        .unwrap();
    op(&cache, &store, &|on| disk.set_immutable(&segment, on));
    let errors = cache.stats().local.errors;
    let (lines, secs) = lines_of(|_| assert_eq!(cache.get_raw("k").unwrap().as_deref(), answer));
    let stats = cache.stats();
    disk.set_immutable(&segment, false);
    assert_eq!(stats.local.errors - errors, CALLS as u64, "{stats:?}");
    // Besides the manager's: the store's own, once, where its first write failure latches it.
    assert!(
        lines <= 2 + secs as usize,
        "{lines} lines for {CALLS} reads in {secs} s"
    );
}

/// A delete L1 could not apply is queued all the same, and leaves L1 suspect.
#[test]
fn reads_of_a_queued_delete_l1_cannot_apply_log_a_few_lines_not_one_a_read() {
    reads_of_a_queued_op_l1_cannot_apply(
        |cache, _, fault| {
            fault(true);
            assert!(cache.delete("k").is_err(), "L1's delete did not fail: no fault");
        },
        None,
    );
}

/// Another user of the store wrote the key over the queued write's value and made the store
/// suspect (as a restart after a power cut can leave an older value under a queued one).
#[test]
fn reads_of_a_queued_write_l1_cannot_apply_log_a_few_lines_not_one_a_read() {
    reads_of_a_queued_op_l1_cannot_apply(
        |cache, store, fault| {
            cache.set_raw("k", b"new", None).unwrap();
            store.set("k", b"other", None).unwrap();
            store.mark_all_suspect();
            fault(true);
        },
        Some(b"new"),
    );
}

/// Batch reads that L2 answers for a file L1 whose device is full: every batch's backfill
/// fails, on the backfill thread, and each logged a warning.
#[test]
fn batch_backfills_on_a_full_tmpfs_log_a_few_lines_not_one_a_batch() {
    let backfills = &apart_lines().batch_backfills;
    let redis = RedisServer::start();
    let (_disk, cache, keys) = l2_keys_behind_a_full_file_l1(&redis);
    assert_few_lines_apart(backfills, "keys read two a batch", || {
        for pair in keys.chunks(2) {
            let found = cache.multi_get_raw(pair).unwrap();
            assert_eq!(found.len(), pair.len(), "{found:?}");
            // Each batch's fills reach L1 before the next batch: a batch of fills a call.
            cache.flush().unwrap();
        }
    });
    assert_eq!(cache.stats().local.errors, (CALLS / 2) as u64);
}

/// Another program (or a publisher with other key rules) sends invalidations naming a key no
/// L1 can hold, as fast as Redis forwards them: each message was logged.
#[test]
fn invalidations_of_keys_no_l1_holds_log_a_few_lines_not_one_a_message() {
    use uno_cache::invalidation::{InstanceId, Invalidation, InvalidationMessage};
    let unheld = &apart_lines().unheld;
    let redis = RedisServer::start();
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            "[local]\ntype = \"memory\"\n[distributed]\nenabled = true\nhosts = [\"{}\"]\n[invalidation]\nenabled = true\n",
            redis.addr()
        ))
        .unwrap(),
    )
    .unwrap();
    let channel = cache.backplane().unwrap().channel().to_owned();
    let mut raw = redis.raw();
    let too_long = "x".repeat(uno_cache::MAX_KEY_LEN + 1);
    assert_few_lines_apart(unheld, "messages", || {
        for seq in 1..=CALLS as u64 {
            let message = InvalidationMessage {
                origin: InstanceId::from_u128(99),
                seq,
                invalidation: Invalidation::Keys(vec![too_long.clone(), format!("k{seq}")]),
            };
            let _: i64 = redis::cmd("PUBLISH")
                .arg(&channel)
                .arg(message.encode())
                .query(&mut raw)
                .unwrap();
        }
        support::wait_until("every message handled", || {
            cache.stats().consistency.invalidations_received == CALLS as u64
        });
    });
}

/// Tagged writes whose callers give up on them (a timeout of their own, shorter than L2's)
/// while Redis hangs: the tagging goes on to its end on the I/O thread, as it must (a key left
/// out of its tag's set escapes the tag's invalidations), and times out there. Each such call
/// logged a warning when it ended.
#[test]
fn tagged_writes_given_up_under_a_hung_redis_log_a_few_lines_not_one_a_call() {
    let unwaited = &apart_lines().unwaited;
    let redis = RedisServer::start();
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            "fallback_on_error = true\n[local]\ntype = \"memory\"\n[distributed]\nenabled = true\nhosts = [\"{}\"]\ntimeout_ms = 200\n[invalidation]\nenabled = true\n",
            redis.addr()
        ))
        .unwrap(),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(cache.set_raw_with_tags_async("before", b"v", None, &["t"]))
        .unwrap();
    redis.pause();
    let mut gave_up = 0;
    assert_few_lines_apart(unwaited, "tagged writes given up", || {
        rt.block_on(async {
            for i in 0..CALLS {
                let key = format!("k{i}");
                let write = cache.set_raw_with_tags_async(&key, b"v", None, &["t"]);
                if tokio::time::timeout(std::time::Duration::from_millis(1), write)
                    .await
                    .is_err()
                {
                    gave_up += 1;
                }
            }
        });
    });
    redis.resume();
    assert!(gave_up > 0, "no call was given up on: the test made no hang");
}

/// A key whose stale copy was written in another codec (a deploy that changed it), read while
/// its source fails: every read finds the copy, which does not decode, and is not served (the
/// loader's error is); each logged a warning, the same key's as often as it was read.
#[test]
fn stale_copies_that_no_longer_decode_log_a_few_lines_not_one_a_read() {
    let config =
        CacheConfig::from_toml_str("[local]\ntype = \"memory\"\n[loader]\nfail_safe_max_duration = 3600\n")
            .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache
        .set_raw(
            "k",
            b"written by another codec",
            Some(std::time::Duration::from_millis(1)),
        )
        .unwrap();
    support::wait_until("the entry expired", || cache.get_raw("k").unwrap().is_none());
    let (lines, secs) = lines_of(|_| {
        let loaded = cache.get_or_load::<u64, uno_cache::Error, _>("k", None, || {
            Err(uno_cache::Error::Backend {
                level: "source",
                op: "load",
                reason: "down".to_owned(),
            })
        });
        assert!(loaded.is_err(), "{loaded:?}");
    });
    assert_eq!(cache.stats().loader.failures, CALLS as u64);
    assert!(
        lines <= 1 + secs as usize,
        "{lines} lines for {CALLS} reads in {secs} s"
    );
}

/// Invalidations from another instance's writes, received while this one's L1 segment refuses
/// writes (as a failing device's do): each drop fails, and each message logged a warning, at
/// the rate the other instances write.
#[test]
fn invalidations_l1_cannot_apply_log_a_few_lines_not_one_a_message() {
    let undropped = &apart_lines().undropped;
    let redis = RedisServer::start();
    let disk = Mount::ext4(16);
    let dir = disk.path().join("store");
    let toml = |local: &str| {
        format!(
            "[local]\n{local}\n[distributed]\nenabled = true\nhosts = [\"{}\"]\n[invalidation]\nenabled = true\n",
            redis.addr()
        )
    };
    let local = format!("type = \"file\"\npath = \"{}\"\nmax_size = 8", dir.display());
    let cache = CacheManager::new(CacheConfig::from_toml_str(&toml(&local)).unwrap()).unwrap();
    let writer = CacheManager::new(CacheConfig::from_toml_str(&toml("type = \"memory\"")).unwrap()).unwrap();
    let keys: Vec<String> = (0..CALLS).map(|i| format!("k{i}")).collect();
    for key in &keys {
        cache.set_raw(key, b"old", None).unwrap();
    }
    let segment = disk.freeze_active_segment(&dir);
    let received = cache.stats().consistency.invalidations_received;
    let errors = cache.stats().local.errors;
    assert_few_lines_apart(undropped, "invalidations", || {
        for key in &keys {
            writer.set_raw(key, b"new", None).unwrap();
        }
        support::wait_until("every invalidation handled", || {
            cache.stats().consistency.invalidations_received - received == CALLS as u64
        });
    });
    let stats = cache.stats();
    disk.set_immutable(&segment, false);
    assert!(stats.local.errors - errors >= CALLS as u64, "{stats:?}");
}

/// Every key written in another codec (or as another type) is read once and loaded anew after
/// a deploy that changed it, as fast as the service reads: each one logged a warning.
#[test]
fn keys_that_no_longer_decode_log_a_few_lines_not_one_a_key() {
    let config = CacheConfig::from_toml_str("[local]\ntype = \"memory\"\n").unwrap();
    let cache = CacheManager::new(config).unwrap();
    for i in 0..CALLS {
        cache
            .set_raw(&format!("k{i}"), b"written by another codec", None)
            .unwrap();
    }
    let (lines, secs) = lines_of(|i| {
        let n: u64 = cache
            .get_or_set_with(&format!("k{i}"), None, || Ok::<_, uno_cache::Error>(i as u64))
            .unwrap();
        assert_eq!(n, i as u64);
    });
    assert!(
        lines <= 1 + secs as usize,
        "{lines} lines for {CALLS} reads in {secs} s"
    );
}
