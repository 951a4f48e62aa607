//! L2 outages in the middle of a workload, through `CacheManager` (file L1, `fallback_on_error`):
//! the Redis server, the Memcached server, or one node of a three-node Redis Cluster is killed
//! (SIGKILL) while two threads keep reading and writing. Every call must return within the L2
//! deadline plus 50 ms and without an error, L1 keeps serving the keys it holds, a circuit
//! breaker opens (the level's for a standalone Redis, the dead node's for Memcached and a
//! Cluster, see `tests/node_breakers.rs`); when the server is started again the breakers close
//! and writes reach L2 again;
//! nothing panics. The waits are for events (the breaker's state, a value landing in L2), with
//! deadlines; no test sleeps to synchronise.
//!
//! L1 and the replay queue live on a tmpfs ([`scratch`]): a set whose L2 write fails waits for
//! the replay log's fsync, and on the CI machine's disk one fsync took up to 180 ms, twice
//! the deadline under test. The bound is about the L2 deadline; what a disk adds is its own.
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::{MemcachedServer, RedisCluster, RedisServer};
use uno_cache::{BreakerState, CacheConfig, CacheManager};

const TIMEOUT_MS: u64 = 100;
/// Every call must return within this, the L2 deadline plus 50 ms (see `outage_mid_workload`
/// for the stragglers a loaded machine makes).
const BOUND: Duration = Duration::from_millis(TIMEOUT_MS + 50);
const HOT_KEYS: u64 = 50;
const WORKERS: usize = 2;

static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// One test at a time, servers' start-up included: the bound on call time is about the cache,
/// not about several workloads and a cluster being created on two vCPUs at once.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A tmpfs for L1 and the replay queue (see the module docs).
fn scratch() -> mount::Mount {
    mount::Mount::tmpfs(512 * 1024)
}

fn manager(kind: &str, cluster: bool, hosts: &[String], dir: &std::path::Path) -> CacheManager {
    manager_with(kind, cluster, hosts, dir, "through")
}

fn manager_with(
    kind: &str,
    cluster: bool,
    hosts: &[String],
    dir: &std::path::Path,
    write_mode: &str,
) -> CacheManager {
    CacheManager::new(config_with(kind, cluster, hosts, dir, write_mode)).unwrap()
}

fn config_with(
    kind: &str,
    cluster: bool,
    hosts: &[String],
    dir: &std::path::Path,
    write_mode: &str,
) -> CacheConfig {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    CacheConfig::from_toml_str(&format!(
        r#"
            fallback_on_error = true
            [local]
            type = "file"
            path = {:?}
            durability = "none"
            ttl = 300
            [distributed]
            enabled = true
            type = "{kind}"
            cluster = {cluster}
            hosts = [{}]
            key_prefix = "outage:"
            timeout_ms = {TIMEOUT_MS}
            breaker_failures = 2
            breaker_cooldown_ms = 200
            write_mode = "{write_mode}"
            "#,
        dir.display().to_string(),
        hosts.join(", ")
    ))
    .unwrap()
}

/// What the workers saw.
#[derive(Default)]
struct Observed {
    calls: AtomicU64,
    slowest: Mutex<(Duration, String)>,
    too_slow: AtomicU64,
    errors: Mutex<Vec<String>>,
}

impl Observed {
    fn timed<T>(&self, what: &str, call: impl FnOnce() -> uno_cache::Result<T>) -> Option<T> {
        let start = Instant::now();
        let result = call();
        let took = start.elapsed();
        self.calls.fetch_add(1, Ordering::Relaxed);
        if took > BOUND {
            self.too_slow.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut slowest = self.slowest.lock().unwrap();
            if took > slowest.0 {
                *slowest = (took, what.to_owned());
            }
        }
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.lock().unwrap().push(format!("{what}: {e}"));
                None
            }
        }
    }
}

/// One worker: reads of keys L1 holds, reads of keys it does not (they go to L2), and writes.
fn work(cache: &CacheManager, worker: usize, stop: &AtomicBool, seen: &Observed) {
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match n % 4 {
            0 | 1 => {
                let key = format!("hot:{}", n % HOT_KEYS);
                let got = seen.timed("get hot", || cache.get::<u64>(&key));
                if got != Some(Some(n % HOT_KEYS)) {
                    seen.errors
                        .lock()
                        .unwrap()
                        .push(format!("L1 did not serve {key}: {got:?}"));
                }
            }
            2 => {
                let key = format!("cold:{worker}:{n}");
                seen.timed("get cold", || cache.get::<u64>(&key));
            }
            _ => {
                let key = format!("w:{worker}:{}", n % 500);
                seen.timed("set", || cache.set(&key, &n, None));
            }
        }
    }
}

/// Polls `ready` until it holds or `deadline` passes.
fn wait_for(what: &str, deadline: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < deadline, "{what}: not within {deadline:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn breaker(cache: &CacheManager) -> uno_cache::BreakerStats {
    cache.stats().distributed.breaker.expect("a breaker")
}

/// Times a breaker opened: the level's, plus its nodes' (Memcached hosts and Cluster primaries
/// have one each; a dead node opens its own, not the level's).
fn trips(cache: &CacheManager) -> u64 {
    let stats = cache.stats().distributed;
    stats.breaker.map_or(0, |b| b.trips) + stats.nodes.iter().map(|n| n.trips).sum::<u64>()
}

/// Whether the level's breaker and every node's are closed.
fn all_closed(cache: &CacheManager) -> bool {
    let stats = cache.stats().distributed;
    stats.breaker.is_some_and(|b| b.state == BreakerState::Closed)
        && stats.nodes.iter().all(|n| n.state == BreakerState::Closed)
}

/// Sets the flag when dropped, also while unwinding.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Runs the workload, calls `kill` once it is going, waits for the breaker to open, calls
/// `restart`, waits for the breaker to close and a write of `{tag}after:N` to reach L2 (`tag`
/// puts it on the restarted server), then checks what the workers saw.
fn outage_mid_workload(
    name: &str,
    cache: &CacheManager,
    tag: &str,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
) {
    for i in 0..HOT_KEYS {
        cache.set(&format!("hot:{i}"), &i, None).unwrap();
    }
    let stop = AtomicBool::new(false);
    let seen = Observed::default();
    std::thread::scope(|s| {
        // A failed assertion below must stop the workers, or the scope would wait for them
        // forever instead of reporting it.
        let _stop_workers = StopOnDrop(&stop);
        let workers: Vec<_> = (0..WORKERS)
            .map(|w| {
                let (stop, seen) = (&stop, &seen);
                s.spawn(move || work(cache, w, stop, seen))
            })
            .collect();
        wait_for("workload started", Duration::from_secs(10), || {
            seen.calls.load(Ordering::Relaxed) >= 500
        });
        let trips_before = trips(cache);
        kill();
        let killed_at = seen.calls.load(Ordering::Relaxed);
        wait_for("breaker opened", Duration::from_secs(10), || {
            trips(cache) > trips_before
        });
        // Keep working through the outage for a while.
        wait_for("calls during the outage", Duration::from_secs(10), || {
            seen.calls.load(Ordering::Relaxed) >= killed_at + 2_000
        });
        assert!(
            cache.stats().distributed.errors > 0,
            "{name}: the outage was seen"
        );
        restart();
        let mut n = 0u64;
        wait_for("breaker closed and L2 written", Duration::from_secs(15), || {
            n += 1;
            cache.set(&format!("{tag}after:{n}"), &n, None).unwrap();
            // The previous round's key: with write-behind a set reaches L2 about a millisecond
            // after it returns, and a round is longer than that.
            let key = format!("{tag}after:{}", n - 1);
            all_closed(cache) && cache.distributed().unwrap().get(&key).is_ok_and(|e| e.is_some())
        });
        stop.store(true, Ordering::Relaxed);
        for w in workers {
            assert!(w.join().is_ok(), "{name}: a worker panicked");
        }
    });
    assert!(
        all_closed(cache),
        "{name}: the breakers stay closed once the server is back: {:?}",
        cache.stats().distributed
    );
    let errors = seen.errors.lock().unwrap();
    assert!(
        errors.is_empty(),
        "{name}: {} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    let (slowest, op) = seen.slowest.lock().unwrap().clone();
    // Every call within the bound, but for one per worker: a machine that does not schedule
    // the workers for 50 ms (two workers, the I/O thread and the server on two vCPUs, beside
    // whatever else the machine runs) delays the call each has in flight: with two busy loops
    // beside the tests on a 2-core machine, one call in some thousands went over (150 to
    // 252 ms) in 10 of 36 runs of these tests, never more than one in a run.
    // None may hang: a call that waited for a reconnect (the connect timeout is 2 s) or that
    // its deadline did not end fails the second check.
    assert!(
        seen.too_slow.load(Ordering::Relaxed) <= WORKERS as u64,
        "{name}: {} calls over {BOUND:?} (slowest {slowest:?}, a {op}) of {}",
        seen.too_slow.load(Ordering::Relaxed),
        seen.calls.load(Ordering::Relaxed)
    );
    assert!(
        slowest <= BOUND + Duration::from_secs(1),
        "{name}: a {op} took {slowest:?}"
    );
    eprintln!(
        "{name}: {} calls, slowest {slowest:?} ({op}), breaker {:?}",
        seen.calls.load(Ordering::Relaxed),
        breaker(cache)
    );
}

#[test]
fn redis_killed_mid_workload_l1_serves_calls_stay_bounded_and_the_breaker_recovers() {
    let _serial = serial();
    let dir = scratch();
    let server = Mutex::new(RedisServer::start());
    let cache = manager("redis", false, &[server.lock().unwrap().addr()], dir.path());
    outage_mid_workload(
        "redis",
        &cache,
        "",
        || server.lock().unwrap().kill(),
        || server.lock().unwrap().restart(),
    );
}

/// The same outage with `write_mode = "behind"`: sets never wait for L2 at all, the writer's
/// failed batches open the breaker and go to the replay queue, and once Redis is back the
/// queue drains into it.
#[test]
fn redis_killed_mid_workload_with_write_behind_keeps_sets_local_and_replays_them() {
    let _serial = serial();
    let dir = scratch();
    let server = Mutex::new(RedisServer::start());
    let cache = manager_with(
        "redis",
        false,
        &[server.lock().unwrap().addr()],
        dir.path(),
        "behind",
    );
    outage_mid_workload(
        "redis, write-behind",
        &cache,
        "",
        || server.lock().unwrap().kill(),
        || server.lock().unwrap().restart(),
    );
    let stats = cache.stats().consistency;
    assert!(stats.write_behind_failures > 0, "{stats:?}");
    assert!(
        stats.queued > 0,
        "failed batches went to the replay queue: {stats:?}"
    );
    wait_for("the replay queue drained", Duration::from_secs(15), || {
        let _ = cache.replay_now();
        cache.stats().consistency.replay_pending == 0
    });
    // The newest value of a key written during the outage reached Redis.
    let l2 = cache.distributed().unwrap();
    let (key, newest) = (0..WORKERS)
        .flat_map(|w| (0..500).map(move |i| format!("w:{w}:{i}")))
        .find_map(|key| cache.get::<u64>(&key).unwrap().map(|v| (key, v)))
        .expect("a key written by the workload");
    let in_l2 = l2.get(&key).unwrap().expect("replayed into L2");
    assert_eq!(
        in_l2.value,
        uno_cache::Codec::bincode().encode(&key, &newest).unwrap()
    );
}

#[test]
fn memcached_killed_mid_workload_l1_serves_calls_stay_bounded_and_the_breaker_recovers() {
    let _serial = serial();
    let dir = scratch();
    let server = Mutex::new(MemcachedServer::start());
    let cache = manager("memcached", false, &[server.lock().unwrap().addr()], dir.path());
    outage_mid_workload(
        "memcached",
        &cache,
        "",
        || server.lock().unwrap().kill(),
        || server.lock().unwrap().restart(),
    );
}

/// One primary of the cluster dies: its own breaker opens, not the level's (which would skip
/// the live primaries too); once it is back its breaker closes and writes reach it again.
#[test]
fn cluster_node_killed_mid_workload_opens_only_its_own_breaker_and_recovers() {
    let _serial = serial();
    let dir = scratch();
    let cluster = Mutex::new(RedisCluster::start());
    let hosts = cluster.lock().unwrap().addrs();
    let cache = manager("redis", true, &hosts, dir.path());
    // A hash tag whose slot node 1 (the one killed) owns.
    let tag = {
        let cluster = cluster.lock().unwrap();
        (0..)
            .map(|i| format!("{{t{i}}}"))
            .find(|tag| cluster.node_of_slot(cluster.keyslot(&format!("outage:{tag}"))) == 1)
            .unwrap()
    };
    let killed = cluster.lock().unwrap().nodes[1].addr();
    outage_mid_workload(
        "cluster",
        &cache,
        &tag,
        || cluster.lock().unwrap().nodes[1].kill(),
        || cluster.lock().unwrap().nodes[1].restart(),
    );
    let stats = cache.stats().distributed;
    assert_eq!(breaker(&cache).trips, 0, "the level's breaker never opened");
    let node = stats
        .nodes
        .iter()
        .find(|n| n.node == killed)
        .expect("the killed primary's breaker");
    assert!(node.trips > 0, "{node:?}");
}

/// Stats polled while L2 is down: the failed reading of L2's size is reused as a good one is
/// (for `size_max_age_secs`), so polling neither walks the level on every call nor counts one
/// breaker failure per poll (two polls used to open the breaker on their own).
#[test]
fn stats_polled_during_an_outage_read_l2_once_and_do_not_open_its_breaker() {
    let _serial = serial();
    let dir = scratch();
    let mut server = RedisServer::start();
    let mut config = config_with("redis", false, &[server.addr()], dir.path(), "through");
    let max_age = Duration::from_secs(2);
    config.distributed.size_max_age_secs = max_age.as_secs();
    let cache = CacheManager::new(config).unwrap();
    cache.set("k", &1u32, None).unwrap();
    assert!(cache.stats().distributed.size_error.is_none());
    server.kill();
    // The good reading above is still fresh: the first polls reuse it.
    let started = Instant::now();
    let mut failed_polls = 0;
    while started.elapsed() < max_age * 2 + Duration::from_secs(1) {
        let stats = cache.stats().distributed;
        if stats.size_error.is_some() {
            failed_polls += 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let breaker = breaker(&cache);
    assert!(failed_polls > 1, "L2's size error is reported while it lasts");
    assert!(
        breaker.consecutive_failures <= 1 && breaker.trips == 0,
        "{failed_polls} polls after the kill fed the breaker: {breaker:?}"
    );
}

/// A call the open breaker skips takes no time and tells nothing of L2's latency: timed, the
/// skips pulled L2's percentiles to well under a microsecond during the outage they are read for.
#[test]
fn reads_the_open_breaker_skips_are_not_timed_as_l2_latency() {
    let _serial = serial();
    let dir = scratch();
    let mut server = RedisServer::start();
    let cache = manager("redis", false, &[server.addr()], dir.path());
    assert_eq!(cache.get_raw("warm").unwrap(), None);
    let before = cache.stats().distributed.get_latency.samples;
    assert!(before >= 1, "a read that reached L2 is timed");
    server.kill();
    let reads = 50;
    for i in 0..reads {
        assert_eq!(cache.get_raw(&format!("absent{i}")).unwrap(), None);
    }
    let stats = cache.stats().distributed;
    assert!(
        trips(&cache) >= 1,
        "the breaker never opened: {:?}",
        stats.breaker
    );
    let timed = stats.get_latency.samples - before;
    // The reads that failed before the breaker opened (two), and a probe per cool-down.
    assert!(
        timed <= 5,
        "{timed} of {reads} reads timed while the breaker skipped them: {:?}",
        stats.get_latency
    );
}
