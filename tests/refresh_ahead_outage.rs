//! Refresh-ahead while L2 is down (a real `redis-server`, killed by the test): a background
//! reload must never make a cached key less available than it was without refresh-ahead.
//!
//! With `fallback_on_error = false` a write L2 did not take is taken out of L1 again. A reload's
//! store did so too: the key, an L1 hit holding the value L2 held before the outage, became an
//! L1 miss, and every read of it went to the dead L2 and failed for the rest of the outage. Now
//! the older entry is put back instead (the new value, which L2 did not take, does not stay).
//! With `fallback_on_error = true` the reload's value stays in L1, as any write's does, unless
//! the replay queue refuses it too (its device, a real tmpfs, filled by the test): any other
//! write then leaves L1, and a reload's puts the older entry back, as without fallback. With
//! write-behind and no fallback, a reload whose key still has a write in the queue (its batch
//! held by the test once Redis took it) stores nothing, rather than be handed to the queue behind
//! that write and taken out of L1 when it fails.
//!
//! The reload's L2 write is held at a gate after Redis answered it (with an error), so the test
//! knows L1 then holds the reloaded value and waits for it to change, not for time to pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

#[path = "support/mount.rs"]
mod mount;

#[path = "manager_support/threads.rs"]
mod threads;

mod manager_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manager_support::gated::{GatedStore, Point};
use mount::Mount;
use support::{wait_until, RedisServer};
use threads::until_thread;
use uno_cache::{
    CacheConfig, CacheManager, DistributedStorage, Error, Fetched, LocalKind, ManualClock, RedisOptions,
    RedisStore, Result as CacheResult, WriteMode,
};

const START_MS: u64 = 1_700_000_000_000;
const TTL: Duration = Duration::from_secs(10);

struct Rig {
    cache: CacheManager,
    clock: ManualClock,
    _dir: tempfile::TempDir,
    /// The small file system the replay queue is on, where a test fills it.
    replay_fs: Option<Mount>,
}

fn redis(server: &RedisServer) -> Arc<RedisStore> {
    Arc::new(
        RedisStore::connect(
            RedisOptions::new(server.addr())
                .prefix("ra:")
                .timeout(Duration::from_millis(500)),
        )
        .unwrap(),
    )
}

/// A manager over a file L1 on a manual clock, refresh-ahead at 80 % of the TTL, and `l2`.
fn rig(l2: Arc<dyn DistributedStorage>, fallback_on_error: bool, mode: WriteMode) -> Rig {
    rig_replaying_on(l2, fallback_on_error, mode, None)
}

/// [`rig`] whose replay queue is on `replay_fs` (by default it is in L1's directory).
fn rig_replaying_on(
    l2: Arc<dyn DistributedStorage>,
    fallback_on_error: bool,
    mode: WriteMode,
    replay_fs: Option<Mount>,
) -> Rig {
    rig_configured(l2, (fallback_on_error, mode), replay_fs, |_| {})
}

/// [`rig_replaying_on`] with the rest of its configuration changed by `configure`.
fn rig_configured(
    l2: Arc<dyn DistributedStorage>,
    (fallback_on_error, mode): (bool, WriteMode),
    replay_fs: Option<Mount>,
    configure: impl FnOnce(&mut CacheConfig),
) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(START_MS);
    let mut config = CacheConfig {
        fallback_on_error,
        ..CacheConfig::default()
    };
    config.local.kind = LocalKind::File;
    config.local.path = Some(dir.path().to_owned());
    config.loader.refresh_ahead = 0.8;
    config.distributed.write_mode = mode;
    if let Some(fs) = &replay_fs {
        config.offline.replay_dir = Some(fs.path().to_owned());
        // The replay thread never drains in the test's time: the queue keeps what it took.
        config.offline.replay_interval_ms = 3_600_000;
    }
    configure(&mut config);
    let cache = CacheManager::builder()
        .config(config)
        .clock(Arc::new(clock.clone()))
        .distributed(l2)
        .build()
        .unwrap();
    Rig {
        cache,
        clock,
        _dir: dir,
        replay_fs,
    }
}

fn value(v: &str) -> impl FnOnce() -> std::result::Result<String, Error> + Send + 'static {
    let v = v.to_owned();
    move || Ok(v)
}

/// Waits (bounded) until a plain `get` of "k" answers something other than `held`: the reload's
/// store, held at its L2 write while L1 held `held`, has ended. Every state before that end
/// reads `held` (L1 was written before L2 was asked), so the first other answer is the last.
fn after_the_store(cache: &CacheManager, held: &str) -> CacheResult<Option<String>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = cache.get::<String>("k");
        if !matches!(&got, Ok(Some(v)) if v == held) || Instant::now() > deadline {
            return got;
        }
        std::thread::yield_now();
    }
}

/// "k" loaded as "v1" into both levels, Redis killed, the clock moved past the due time, and
/// a hit that starts the reload (answering "v1" at once) by `start`; returns once the reload's
/// L2 write has failed and been handed back to the manager.
fn reload_in_an_outage(fallback_on_error: bool, start: impl FnOnce(&Rig)) -> Rig {
    reload_in_an_outage_with(fallback_on_error, WriteMode::Through, start)
}

/// [`reload_in_an_outage`] in write mode `mode`: the reload's L2 write is the first `set` or
/// `set_each` (a write-behind batch) of "k" after the kill.
fn reload_in_an_outage_with(fallback_on_error: bool, mode: WriteMode, start: impl FnOnce(&Rig)) -> Rig {
    reload_in_an_outage_on(fallback_on_error, mode, None, start)
}

/// [`reload_in_an_outage_with`] with the replay queue on `replay_fs`, which, if given, is
/// filled once Redis is killed, so that the queue refuses every push from then on (see
/// [`refuse_pushes`]).
fn reload_in_an_outage_on(
    fallback_on_error: bool,
    mode: WriteMode,
    replay_fs: Option<Mount>,
    start: impl FnOnce(&Rig),
) -> Rig {
    let mut server = RedisServer::start();
    let l2 = GatedStore::new(redis(&server));
    let rig = rig_replaying_on(l2.clone(), fallback_on_error, mode, replay_fs);
    assert_eq!(
        rig.cache.get_or_load("k", Some(TTL), value("v1")).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    // With write-behind: in L2 before the kill.
    rig.cache.flush().unwrap();
    server.kill();
    if rig.replay_fs.is_some() {
        refuse_pushes(&rig);
    }
    rig.clock.advance(Duration::from_secs(9));
    let held = [
        l2.gate("set", "k", Point::After),
        l2.gate("set_each", "k", Point::After),
    ];
    start(&rig);
    assert_eq!(rig.cache.stats().loader.refreshes, 1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !held.iter().any(manager_support::GateHandle::entered) {
        assert!(Instant::now() < deadline, "the reload never wrote L2");
        std::thread::yield_now();
    }
    for gate in &held {
        gate.release();
    }
    rig
}

fn start_sync(rig: &Rig) {
    assert_eq!(
        rig.cache.get_or_load("k", Some(TTL), value("v2")).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
}

/// A runtime for the async starts.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// [`start_sync`] through `get_or_load_async`, on `runtime`.
fn start_async(runtime: &tokio::runtime::Runtime) -> impl FnOnce(&Rig) + '_ {
    move |rig| {
        let fetched = runtime
            .block_on(
                rig.cache
                    .get_or_load_async("k", Some(TTL), || async { Ok::<_, Error>("v2".to_string()) }),
            )
            .unwrap();
        assert_eq!(fetched, Fetched::Fresh("v1".to_string()));
    }
}

/// After the reload's failed store, the key still answers as it did before the reload started.
fn still_served_as_before(rig: &Rig, got: &CacheResult<Option<String>>) {
    assert!(
        matches!(got, Ok(Some(v)) if v == "v1"),
        "a reload whose L2 write failed left the key {got:?}, where it was an L1 hit of v1"
    );
    // The loading calls are answered from L1 too, their loader not called.
    loads_answer_from_l1(rig, "v1");
}

/// A loading call of "k" answers `expected` without calling its loader.
fn loads_answer_from_l1(rig: &Rig, expected: &str) {
    let fetched = rig
        .cache
        .get_or_load("k", Some(TTL), || -> std::result::Result<String, Error> {
            panic!("the source was asked for a cached key")
        })
        .unwrap();
    assert_eq!(fetched, Fetched::Fresh(expected.to_string()));
}

#[test]
fn without_fallback_a_reload_whose_l2_write_fails_keeps_the_older_value_in_l1() {
    let rig = reload_in_an_outage(false, start_sync);
    let got = after_the_store(&rig.cache, "v2");
    still_served_as_before(&rig, &got);
}

#[test]
fn without_fallback_an_async_reload_whose_l2_write_fails_keeps_the_older_value_in_l1() {
    let runtime = two_workers();
    let rig = reload_in_an_outage(false, start_async(&runtime));
    let got = after_the_store(&rig.cache, "v2");
    still_served_as_before(&rig, &got);
}

/// With write-behind the reload's value waited for the writer thread, whose failed batch took
/// it out of L1 later, with nothing to put back: the key emptied as before. A reload's store
/// with an entry to keep goes to L2 itself, as a write the queue has no room for does.
#[test]
fn without_fallback_a_write_behind_reload_whose_l2_write_fails_keeps_the_older_value_in_l1() {
    let rig = reload_in_an_outage_with(false, WriteMode::Behind, start_sync);
    let got = after_the_store(&rig.cache, "v2");
    still_served_as_before(&rig, &got);
}

/// The older value put back keeps its own expiry: it is not made to live longer than it would
/// have without the reload.
#[test]
fn the_older_value_kept_after_a_failed_reload_expires_when_it_would_have() {
    let rig = reload_in_an_outage(false, start_sync);
    let got = after_the_store(&rig.cache, "v2");
    assert_eq!(got.unwrap().as_deref(), Some("v1"));
    // Loaded at 0 s with a 10 s TTL; now at 9 s.
    rig.clock.advance(Duration::from_millis(1_100));
    assert!(
        !matches!(rig.cache.get::<String>("k"), Ok(Some(_))),
        "the kept value outlived its TTL"
    );
}

/// With write-behind, a reload's store whose key still had a write on its way to L2 (the
/// load's own batch, slower than the settle's wait: a stuck sender, a batch resent key by key)
/// was handed to the queue behind that batch once its settle gave up waiting. The batch then
/// landed, and the reload's write, sent after it into the outage, failed on the writer thread,
/// which took the key out of L1 with nothing to put back: the key, an L1 hit of the value L2
/// now held, became a miss, where without refresh-ahead it stayed a hit. The reload now gives
/// way to the write on its way and stores nothing.
#[test]
fn without_fallback_a_write_behind_reload_of_a_key_whose_write_is_on_its_way_keeps_the_older_value_in_l1() {
    let rig = reload_behind_a_batch_on_its_way(false, None, |_| {});
    let got = rig.cache.get::<String>("k");
    still_served_as_before(&rig, &got);
}

/// "k" loaded as "v1" in write-behind mode, its batch held once Redis took it, Redis killed
/// (then, with `replay_fs`, the replay queue made to refuse every push), `before_reload` run,
/// and a reload started by a hit past the due time; returns once the reload's store has ended,
/// the batch has been let go, and whatever the queue held after it has failed in the outage.
fn reload_behind_a_batch_on_its_way(
    fallback_on_error: bool,
    replay_fs: Option<Mount>,
    before_reload: impl FnOnce(&Rig),
) -> Rig {
    let configure = |c: &mut CacheConfig| c.distributed.write_behind_max_keys = 1;
    let mut server = RedisServer::start();
    let l2 = GatedStore::new(redis(&server));
    let rig = rig_configured(
        l2.clone(),
        (fallback_on_error, WriteMode::Behind),
        replay_fs,
        configure,
    );
    let on_its_way = l2.gate("set_each", "k", Point::After);
    assert_eq!(
        rig.cache.get_or_load("k", Some(TTL), value("v1")).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    // Redis has v1; the batch has not told the writer yet.
    on_its_way.wait_entered();
    server.kill();
    if rig.replay_fs.is_some() {
        refuse_pushes(&rig);
    }
    before_reload(&rig);
    rig.clock.advance(Duration::from_secs(9));
    let (called, reloading) = std::sync::mpsc::channel();
    let reload = move || {
        let _ = called.send(());
        Ok::<_, Error>("v2".to_string())
    };
    assert_eq!(
        rig.cache.get_or_load("k", Some(TTL), reload).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    assert_eq!(rig.cache.stats().loader.refreshes, 1);
    // The reload runs on its load thread (named by then), which ends once its store has ended
    // (where the store settles the key, once its settle gave up waiting for the batch).
    reloading.recv_timeout(Duration::from_secs(10)).unwrap();
    until_thread("uno-cache-load", false);
    on_its_way.release();
    // Whatever the queue still held goes to the dead L2 and fails (lost: an error here).
    let _ = rig.cache.flush();
    rig
}

/// With fallback a write-behind reload's write goes through the queue as any write's does;
/// here it finds the queue full (the writer held by the batch on its way, a write of another
/// key waiting), goes through L2 itself after settling its key, and the settle, which gives up
/// on the batch, hands it back to the queue behind it (`Requeue`). The queue holds it (past its
/// bound: not a refusal), and when its batch fails and the full replay queue refuses it, it
/// stays in L1 as every write-behind write with fallback does: the key never empties, and the
/// older value need not come back.
#[test]
fn with_fallback_a_write_behind_reload_handed_back_behind_a_batch_on_its_way_keeps_its_value_in_l1() {
    let rig = reload_behind_a_batch_on_its_way(true, Some(Mount::tmpfs(4096)), |rig| {
        rig.cache.set("other", &"x".to_string(), Some(TTL)).unwrap();
    });
    let stats = rig.cache.stats().consistency;
    assert_eq!(
        stats.write_behind_overflows, 1,
        "the reload found the queue full: {stats:?}"
    );
    assert!(
        stats.queue_failures > 0,
        "the replay queue refused the failed batch: {stats:?}"
    );
    assert_eq!(rig.cache.get::<String>("k").unwrap().as_deref(), Some("v2"));
    loads_answer_from_l1(&rig, "v2");
}

/// With fallback the failure is hidden and the write stays in L1, queued for replay, as every
/// write's does: the reloaded value is served.
#[test]
fn with_fallback_a_reload_whose_l2_write_fails_serves_the_reloaded_value_from_l1() {
    let rig = reload_in_an_outage(true, start_sync);
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.cache.stats().consistency.queued == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(
        rig.cache.stats().consistency.queued,
        1,
        "the failed write was not queued"
    );
    assert_eq!(rig.cache.get::<String>("k").unwrap().as_deref(), Some("v2"));
}

/// Fills the device the replay queue of `rig` is on, and latches the queue with a push that
/// finds no room: from then on it refuses every push, as on a full disk.
fn refuse_pushes(rig: &Rig) {
    let fs = rig
        .replay_fs
        .as_ref()
        .expect("the rig's replay queue is on a file system of its own");
    let q = rig.cache.replay_queue().expect("a replay queue");
    fs.fill("ballast");
    assert!(
        q.push_set("latch", &[7u8; 64 * 1024], 0).is_err(),
        "the full device took a push"
    );
}

/// Waits until the replay queue refused the reload's write, then for the store's end.
fn after_the_refused_store(rig: &Rig) -> CacheResult<Option<String>> {
    wait_until("the replay queue refuses the reload's write", || {
        rig.cache.stats().consistency.queue_failures > 0
    });
    after_the_store(&rig.cache, "v2")
}

/// With fallback a reload whose L2 write failed waits in L1 for the replay; but when the replay
/// queue refuses it too (its device full), nothing will send it, and it leaves L1. The reload's
/// key left with it, an L1 hit of the value L2 held before the outage: every read of it went to
/// the dead L2 and missed, and a loading call ran its loader, whose store failed the same way,
/// for as long as the queue's device stayed full. The older entry goes back instead, as it does
/// without fallback.
#[test]
fn with_fallback_a_reload_the_full_replay_queue_refuses_keeps_the_older_value_in_l1() {
    let rig = reload_in_an_outage_on(true, WriteMode::Through, Some(Mount::tmpfs(4096)), start_sync);
    let got = after_the_refused_store(&rig);
    still_served_as_before(&rig, &got);
}

/// The same for an async reload, whose store is the same as a blocking one's.
#[test]
fn with_fallback_an_async_reload_the_full_replay_queue_refuses_keeps_the_older_value_in_l1() {
    let runtime = two_workers();
    let rig = reload_in_an_outage_on(
        true,
        WriteMode::Through,
        Some(Mount::tmpfs(4096)),
        start_async(&runtime),
    );
    let got = after_the_refused_store(&rig);
    still_served_as_before(&rig, &got);
}

/// With write-behind a failed batch leaves its values in L1 whether or not the replay queue
/// takes them (the writes were acknowledged; the loss is reported at the next flush): the
/// reload's value stays, and the key never empties. It is not sent through L2 to put the older
/// value back.
#[test]
fn with_fallback_a_write_behind_reload_the_full_replay_queue_refuses_keeps_its_value_in_l1() {
    let rig = reload_in_an_outage_on(true, WriteMode::Behind, Some(Mount::tmpfs(4096)), start_sync);
    wait_until("the replay queue refuses the reload's write", || {
        rig.cache.stats().consistency.queue_failures > 0
    });
    assert_eq!(rig.cache.get::<String>("k").unwrap().as_deref(), Some("v2"));
    loads_answer_from_l1(&rig, "v2");
}

/// A key loaded during the outage waits in the replay queue, so its reload's write goes
/// straight there, without L2 being asked; refused, it took the key out of L1 as well.
#[test]
fn with_fallback_a_reload_of_a_key_waiting_for_replay_that_the_full_queue_refuses_keeps_the_older_value_in_l1(
) {
    let mut server = RedisServer::start();
    let rig = rig_replaying_on(redis(&server), true, WriteMode::Through, Some(Mount::tmpfs(4096)));
    server.kill();
    assert_eq!(
        rig.cache.get_or_load("k", Some(TTL), value("v1")).unwrap(),
        Fetched::Fresh("v1".to_string())
    );
    assert!(rig.cache.replay_queue().unwrap().is_pending("k"));
    refuse_pushes(&rig);
    rig.clock.advance(Duration::from_secs(9));
    start_sync(&rig);
    assert_eq!(rig.cache.stats().loader.refreshes, 1);
    let got = after_the_refused_store(&rig);
    still_served_as_before(&rig, &got);
}

/// A value whose `Serialize` panics while `armed`: the store of a loaded value panics before
/// any level is written. (A level of the user's own that panics is a failed call of that level,
/// not a panic of the store: see `tests/level_panics.rs`.)
#[derive(Clone, Debug, serde::Deserialize)]
struct Fragile {
    v: String,
    #[serde(skip)]
    armed: Arc<AtomicBool>,
}

impl serde::Serialize for Fragile {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Plain<'a> {
            v: &'a str,
        }
        assert!(!self.armed.load(Ordering::SeqCst), "a value's Serialize panicked");
        Plain { v: &self.v }.serialize(s)
    }
}

/// A reload whose store panicked was counted nowhere: its caller had been answered and left,
/// and it was the caller that counted a load that ended without an answer.
#[test]
fn a_reload_whose_store_panics_counts_as_a_failed_load() {
    let server = RedisServer::start();
    let rig = rig(redis(&server), false, WriteMode::Through);
    let armed = Arc::new(AtomicBool::new(false));
    let fragile = |v: &str| {
        let value = Fragile {
            v: v.to_owned(),
            armed: Arc::clone(&armed),
        };
        move || Ok::<_, Error>(value)
    };
    rig.cache.get_or_load("k", Some(TTL), fragile("v1")).unwrap();
    rig.clock.advance(Duration::from_secs(9));
    armed.store(true, Ordering::SeqCst);
    let fetched = rig.cache.get_or_load("k", Some(TTL), fragile("v2")).unwrap();
    assert!(
        matches!(&fetched, Fetched::Fresh(f) if f.v == "v1"),
        "the reload's caller was not answered from L1: {fetched:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.cache.stats().loader.failures == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(rig.cache.stats().loader.failures, 1);
}
