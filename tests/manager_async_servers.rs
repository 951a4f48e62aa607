//! The async API of the manager against real servers: standalone Redis, a three-node Redis
//! Cluster and Memcached, each as L2 in front of a file-store L1, and with the servers killed
//! mid-test (on the cluster, the primary owning the keys). Every call is the `_async` form,
//! tags, prefixes, events, `flush` and `replay_now` included; the assertions read the levels
//! directly, so an async call that did nothing fails. Also an async delete cancelled while a
//! proxy holds L2's answer, after its L1 step failed on a real ext4 mount, tagged sets
//! (write-behind and write-through) cancelled while a proxy holds their L2 write, and a prefix
//! invalidation cancelled while Redis holds its `UNLINK` (`CLIENT PAUSE WRITE`), or while a
//! proxy holds it and a set goes past it. And a prefix invalidation whose replay queue cannot
//! write (immutable on a real ext4 mount), in both forms.
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

#[path = "support/proxy.rs"]
mod proxy;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{MemcachedServer, RedisCluster, RedisServer};
use uno_cache::{CacheConfig, CacheManager, InvalidationEvent};

fn config(dir: &Path, kind: &str, hosts: &[String], extra: &str) -> CacheConfig {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("\"{h}\"")).collect();
    CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        [distributed]
        enabled = true
        type = "{kind}"
        hosts = [{}]
        key_prefix = "async:"
        timeout_ms = 500
        breaker_failures = 1000
        {extra}
        [offline]
        replay_interval_ms = 3600000
        "#,
        dir.display(),
        hosts.join(", ")
    ))
    .unwrap()
}

/// A file L1 over one Redis and nothing else (no backplane, defaults), whose round trips time
/// out after `timeout_ms`: the tests of a prefix's late `UNLINK` set that deadline.
fn file_over_redis(dir: &Path, host: &str, timeout_ms: u64) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        [distributed]
        enabled = true
        hosts = ["{host}"]
        key_prefix = "async:"
        timeout_ms = {timeout_ms}
        "#,
        dir.display(),
    ))
    .unwrap()
}

/// Runs `invalidate_prefix_async("p:")` and drops it (as a caller's timeout would) once `sent`
/// says its `UNLINK` `went` where the test holds it; fails if it ended before that.
fn cancel_prefix_invalidation_once(cache: &CacheManager, mut sent: impl FnMut() -> bool, went: &str) {
    let cancelled = rt().block_on(async {
        let caller = cache.clone();
        let invalidation = tokio::spawn(async move { caller.invalidate_prefix_async("p:").await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while !sent() {
            assert!(Instant::now() < deadline, "the prefix's UNLINK never {went}");
            tokio::task::yield_now().await;
        }
        invalidation.abort();
        invalidation.await.is_err_and(|e| e.is_cancelled())
    });
    assert!(cancelled, "the invalidation ended before it was cancelled");
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// What L2 holds for `key` (bytes), read through the level itself.
fn in_l2(cache: &CacheManager, key: &str) -> Option<Vec<u8>> {
    cache.distributed().unwrap().get(key).unwrap().map(|e| e.value)
}

fn in_l1(cache: &CacheManager, key: &str) -> Option<Vec<u8>> {
    cache.local().get(key).unwrap().map(|e| e.value)
}

/// Reads, writes, deletes and batches through the async API, checked in both levels.
async fn round_trip(cache: &CacheManager, label: &str) {
    cache.set_raw_async("a", b"1", None).await.unwrap();
    assert_eq!(
        in_l2(cache, "a").as_deref(),
        Some(&b"1"[..]),
        "{label}: set reached L2"
    );
    cache
        .multi_set_raw_async(&[("b", b"2"), ("c", b"3")], None)
        .await
        .unwrap();
    assert_eq!(
        in_l2(cache, "c").as_deref(),
        Some(&b"3"[..]),
        "{label}: multi_set reached L2"
    );
    // An L2 hit is backfilled into L1.
    cache.local().delete("b").unwrap();
    assert_eq!(
        cache.get_raw_async("b").await.unwrap().as_deref(),
        Some(&b"2"[..])
    );
    let many = cache.multi_get_raw_async(&["a", "b", "c", "zz"]).await.unwrap();
    assert_eq!(many.len(), 3, "{label}: multi_get");
    assert!(cache.delete_async("a").await.unwrap(), "{label}: delete found a");
    assert_eq!(in_l2(cache, "a"), None, "{label}: delete reached L2");
    assert_eq!(in_l1(cache, "a"), None);
    assert_eq!(cache.multi_delete_async(&["b", "c"]).await.unwrap(), 2);
    assert_eq!(in_l2(cache, "c"), None, "{label}: multi_delete reached L2");
    cache
        .set_async("typed", &(7u32, "seven".to_owned()), None)
        .await
        .unwrap();
    let typed: Option<(u32, String)> = cache.get_async("typed").await.unwrap();
    assert_eq!(typed, Some((7, "seven".to_owned())));
    cache.flush_async().await.unwrap();
    let stats = cache.monitor().get_stats_async().await;
    assert!(stats.distributed.hits >= 1, "{label}: {stats:?}");
}

#[test]
fn the_async_api_reads_and_writes_both_levels_on_redis() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), "redis", &[redis.addr()], "")).unwrap();
    rt().block_on(round_trip(&cache, "redis"));
}

#[test]
fn the_async_api_reads_and_writes_both_levels_on_memcached() {
    let memcached = MemcachedServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), "memcached", &[memcached.addr()], "")).unwrap();
    rt().block_on(round_trip(&cache, "memcached"));
}

#[test]
fn the_async_api_reads_and_writes_both_levels_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = cluster.nodes.iter().map(RedisServer::addr).collect();
    let cache = CacheManager::new(config(dir.path(), "redis", &hosts, "cluster = true")).unwrap();
    rt().block_on(round_trip(&cache, "cluster"));
}

/// Kills the server (or, on a cluster, the primary that owns the keys), writes and deletes
/// through the async API (served by L1, queued for replay), restarts it, and replays with
/// `replay_now_async`: L2 ends with what L1 holds.
fn outage_then_replay(
    kind: &str,
    extra: &str,
    hosts: &[String],
    (kept, gone): (&str, &str),
    mut restart: impl FnMut(bool),
) {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), kind, hosts, extra)).unwrap();
    let rt = rt();
    rt.block_on(async {
        cache.set_raw_async(kept, b"old", None).await.unwrap();
        cache.set_raw_async(gone, b"x", None).await.unwrap();
    });
    restart(false);
    rt.block_on(async {
        cache.set_raw_async(kept, b"new", None).await.unwrap();
        assert!(cache.delete_async(gone).await.unwrap());
        assert_eq!(
            cache.get_raw_async(kept).await.unwrap().as_deref(),
            Some(&b"new"[..])
        );
        let stats = cache.monitor().get_stats_async().await;
        assert_eq!(
            stats.consistency.replay_pending, 2,
            "{kind}: both ops queued: {stats:?}"
        );
    });
    restart(true);
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while cache.monitor().get_stats_async().await.consistency.replay_pending > 0 {
            if let Err(e) = cache.replay_now_async().await {
                assert!(Instant::now() < deadline, "{kind}: L2 never took the replay: {e}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(
        in_l2(&cache, kept).as_deref(),
        Some(&b"new"[..]),
        "{kind}: replayed set"
    );
    assert_eq!(in_l2(&cache, gone), None, "{kind}: replayed delete");
}

#[test]
fn the_async_api_serves_from_l1_through_a_redis_outage_and_replays_after_it() {
    let mut redis = RedisServer::start();
    let hosts = [redis.addr()];
    outage_then_replay("redis", "", &hosts, ("kept", "gone"), |up| {
        if up {
            redis.restart()
        } else {
            redis.kill()
        }
    });
}

#[test]
fn the_async_api_serves_from_l1_through_a_memcached_outage_and_replays_after_it() {
    let mut memcached = MemcachedServer::start();
    let hosts = [memcached.addr()];
    outage_then_replay("memcached", "", &hosts, ("kept", "gone"), |up| {
        if up {
            memcached.restart()
        } else {
            memcached.kill()
        }
    });
}

#[test]
fn the_async_api_serves_from_l1_through_a_cluster_primary_outage_and_replays_after_it() {
    let mut cluster = RedisCluster::start();
    let hosts = cluster.addrs();
    // A hash tag whose slot the killed primary (node 1) owns, so both keys live there.
    let tag = (0..)
        .map(|i| format!("{{t{i}}}"))
        .find(|tag| cluster.node_of_slot(cluster.keyslot(&format!("async:kept{tag}"))) == 1)
        .unwrap();
    let (kept, gone) = (format!("kept{tag}"), format!("gone{tag}"));
    outage_then_replay("redis", "cluster = true", &hosts, (&kept, &gone), |up| {
        if up {
            cluster.nodes[1].restart()
        } else {
            cluster.nodes[1].kill()
        }
    });
}

struct Shipped;

impl InvalidationEvent for Shipped {
    fn keys(&self) -> Vec<String> {
        vec!["order:1".to_owned()]
    }
    fn tags(&self) -> Vec<String> {
        vec!["orders".to_owned()]
    }
}

#[test]
fn tags_prefixes_and_events_work_through_the_async_api() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let extra = "[invalidation]\nenabled = true";
    let cache = CacheManager::new(config(dir.path(), "redis", &[redis.addr()], extra)).unwrap();
    rt().block_on(async {
        cache
            .set_with_tags_async("team:1", "red", None, &["teams"])
            .await
            .unwrap();
        cache
            .set_raw_with_tags_async("team:2", b"blue", None, &["teams"])
            .await
            .unwrap();
        assert_eq!(cache.invalidate_tag_async("teams").await.unwrap(), 2);
        for key in ["team:1", "team:2"] {
            assert_eq!(in_l1(&cache, key), None, "{key} left L1");
            assert_eq!(in_l2(&cache, key), None, "{key} left L2");
        }
        cache.set_raw_async("user:1:a", b"1", None).await.unwrap();
        cache.set_raw_async("user:1:b", b"2", None).await.unwrap();
        cache.set_raw_async("user:2:a", b"3", None).await.unwrap();
        assert_eq!(
            cache.invalidate_prefix_async("user:1:").await.unwrap(),
            2,
            "2 keys, each in both levels and counted once"
        );
        assert_eq!(in_l2(&cache, "user:1:a"), None);
        assert_eq!(in_l1(&cache, "user:1:b"), None);
        assert_eq!(in_l2(&cache, "user:2:a").as_deref(), Some(&b"3"[..]));
        cache.set_raw_async("order:1", b"o", None).await.unwrap();
        cache
            .set_raw_with_tags_async("report", b"r", None, &["orders"])
            .await
            .unwrap();
        assert_eq!(cache.invalidate_event_async(&Shipped).await.unwrap(), 2);
        assert_eq!(in_l2(&cache, "order:1"), None);
        assert_eq!(in_l2(&cache, "report"), None);
        assert!(cache.invalidate_local_async("user:2:a").await.unwrap());
        assert_eq!(in_l1(&cache, "user:2:a"), None);
        assert_eq!(
            in_l2(&cache, "user:2:a").as_deref(),
            Some(&b"3"[..]),
            "L1-only invalidation"
        );
        assert!(!cache.clear_replay_overflow_async().await.unwrap());
    });
}

#[test]
fn an_async_load_finishing_during_an_async_set_of_its_key_does_not_hang_a_current_thread_runtime() {
    // The set owns the key while it awaits Redis; the load's store waits for that set. On a
    // current-thread runtime the store once waited on the runtime's only thread, so the set
    // could never resume.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), "redis", &[redis.addr()], "")).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let worker = {
        let cache = cache.clone();
        std::thread::spawn(move || {
            support::block_on(async {
                let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
                let (finish_tx, finish_rx) = tokio::sync::oneshot::channel::<()>();
                let loading = {
                    let cache = cache.clone();
                    tokio::spawn(async move {
                        cache
                            .get_or_load_async::<u32, uno_cache::Error, _, _>("k", None, move || async move {
                                let _ = started_tx.send(());
                                let _ = finish_rx.await;
                                Ok(1)
                            })
                            .await
                    })
                };
                started_rx.await.unwrap();
                // The loader can finish as soon as it is polled: while the set awaits Redis.
                finish_tx.send(()).unwrap();
                cache.set_async("k", &2u32, None).await.unwrap();
                loading.await.unwrap().unwrap();
            });
            done_tx.send(()).unwrap();
        })
    };
    done_rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the runtime hung: the load's store waited on the runtime's own thread");
    worker.join().unwrap();
}

/// An async delete whose L1 step failed (a file store on ext4 whose active segment was made
/// immutable: the tombstone's write fails with EPERM) and whose caller went away while L2 was
/// deleting the key leaves every L1 entry suspect, so the value the delete took out of L2 is not
/// served from L1. L1 was distrusted only once L2 had answered, which a cancelled call never
/// gets to: L1 went on serving the deleted value as fresh.
#[test]
fn an_async_delete_cancelled_after_its_l1_step_failed_leaves_l1_distrusted() {
    let redis = RedisServer::start();
    let to_l2 = proxy::TcpProxy::start(&redis.addr());
    let disk = mount::Mount::ext4(16);
    let dir = disk.path().join("store");
    // The L2 deadline is far past the test's: the delete ends by being cancelled, not by timing
    // out (which would finish it).
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            [local]
            type = "file"
            path = "{}"
            max_size = 8
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "async:"
            timeout_ms = 60000
            "#,
            dir.display(),
            to_l2.addr(),
        ))
        .unwrap(),
    )
    .unwrap();
    cache.set_raw("k", b"old", None).unwrap();
    let active = disk.freeze_active_segment(&dir);

    // L2 gets the delete, but its answer is held until the caller has gone away.
    to_l2.hold();
    let cancelled = rt().block_on(async {
        let caller = cache.clone();
        let delete = tokio::spawn(async move { caller.delete_async("k").await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while to_l2.waiting() == 0 {
            assert!(Instant::now() < deadline, "the delete never reached L2");
            tokio::task::yield_now().await;
        }
        delete.abort();
        delete.await.is_err_and(|e| e.is_cancelled())
    });
    assert!(cancelled, "the delete ended before it was cancelled");
    to_l2.release();
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_l2(&cache, "k").is_some() {
        assert!(Instant::now() < deadline, "L2 never deleted the key");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(
        in_l1(&cache, "k").as_deref(),
        Some(&b"old"[..]),
        "L1's delete did not fail: the test made no fault"
    );
    assert_eq!(
        cache.get_raw("k").unwrap(),
        None,
        "L1 served the value the delete took out of L2"
    );
    disk.set_immutable(&active, false);
}

/// A tagged write-behind set whose caller went away while its batch was on its way to L2 (held
/// at a proxy) tags its key again only once the batch has landed, as the call itself would
/// have. Tagged again at once, an invalidation of the tag before the landing forgot the key
/// (this instance never hears it in time to withdraw the write: here, never, as the invalidating
/// instance has no backplane), and the value then landed in L2 listed by no tag: every later
/// invalidation of the tag missed it, and it was read from L2 until its TTL.
#[test]
fn a_cancelled_tagged_write_behind_set_is_tagged_again_only_once_its_batch_landed() {
    // The L2 deadline is far past the test's: the batch lands when the proxy lets it.
    cancelled_tagged_set_stays_found_by_its_tag("write_mode = \"behind\"\ntimeout_ms = 60000");
}

/// The same with write-through: the cancelled set's command, held at the proxy, may land up to
/// four L2 timeouts after the cancellation (the window in which reads do not backfill its key),
/// and the key is tagged again only once that window is over.
#[test]
fn a_cancelled_tagged_write_through_set_is_tagged_again_once_its_command_can_no_longer_land() {
    // Long enough for the test to release the proxy well within the four timeouts.
    cancelled_tagged_set_stays_found_by_its_tag("timeout_ms = 1000");
}

/// A tagged async set of `k` on an instance whose L2 (configured with `distributed`) is
/// reached through a proxy, cancelled while the proxy holds its L2 write; the tag is
/// invalidated by another instance before the write lands. Once it landed, the tag lists `k`
/// again, and an invalidation removes its value from L2.
fn cancelled_tagged_set_stays_found_by_its_tag(distributed: &str) {
    let redis = RedisServer::start();
    let to_l2 = proxy::TcpProxy::start(&redis.addr());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // L2 through the proxy, tag sets on the same Redis directly (the backplane's hosts).
    let writer = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            [local]
            type = "file"
            path = "{}"
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "async:"
            {distributed}
            [invalidation]
            enabled = true
            hosts = ["{}"]
            "#,
            dir_a.path().display(),
            to_l2.addr(),
            redis.addr(),
        ))
        .unwrap(),
    )
    .unwrap();
    let invalidator = CacheManager::new(config(dir_b.path(), "redis", &[redis.addr()], "")).unwrap();
    // L2's connection is made (and answered) before the proxy holds anything.
    assert_eq!(writer.get_raw("k").unwrap(), None);

    to_l2.hold();
    let cancelled = rt().block_on(async {
        let caller = writer.clone();
        let set = tokio::spawn(async move { caller.set_raw_with_tags_async("k", b"v", None, &["t"]).await });
        let deadline = Instant::now() + Duration::from_secs(10);
        while to_l2.waiting() == 0 {
            assert!(Instant::now() < deadline, "the write never left for L2");
            tokio::task::yield_now().await;
        }
        set.abort();
        set.await.is_err_and(|e| e.is_cancelled())
    });
    assert!(cancelled, "the tagged set ended before it was cancelled");
    // Invalidated while the write is held: the key's tagging so far is forgotten.
    let tag_set = "async:uno-cache:tag:t";
    let mut raw = redis.raw();
    let listed =
        |raw: &mut redis::Connection| -> u64 { redis::cmd("ZCARD").arg(tag_set).query(raw).unwrap() };
    while listed(&mut raw) > 0 {
        invalidator.invalidate_tag("t").unwrap();
    }
    to_l2.release();
    // What lands: the cancelled command and, with write-through, the replay queue's copy of it
    // (a cancelled write-through is handed to it), both held at the proxy until now, in either
    // order. When the cancelled one lands last, the correction of writes in doubt deletes its
    // value (a miss, never a wrong value); else the replayed copy stays. Waiting for the value
    // alone failed about one run in six.
    let corrected = || writer.stats().distributed.late_writes_deleted > 0;
    support::wait_until("the write lands in L2, or its late landing is corrected", || {
        in_l2(&invalidator, "k").is_some() || corrected()
    });
    support::wait_until("the key is tagged again once its value landed", || {
        listed(&mut raw) > 0
    });
    assert!(
        in_l2(&invalidator, "k").is_some() || corrected(),
        "the value left L2 uncorrected before the tag's invalidation"
    );
    assert_eq!(invalidator.invalidate_tag("t").unwrap(), 1);
    assert_eq!(
        in_l2(&invalidator, "k"),
        None,
        "a later invalidation of the tag left the value in L2"
    );
}

/// An async prefix invalidation whose caller went away while L2 was deleting the prefix (its
/// `UNLINK` sent, held by the server under `CLIENT PAUSE WRITE`) keeps a read of a key under the
/// prefix from backfilling L1 while that `UNLINK` may still land. Backfilled, the value the
/// `UNLINK` then took out of L2 stayed in L1, served until its TTL.
#[test]
fn an_async_prefix_invalidation_cancelled_during_l2s_deletion_keeps_l2s_old_value_out_of_l1() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    // No backplane: the prefix is deleted on the Redis L2 itself. The quiet window (four L2
    // timeouts) is far longer than the test's steps.
    let cache = CacheManager::new(file_over_redis(dir.path(), &redis.addr(), 5000)).unwrap();
    cache.set_raw("p:1", b"old", None).unwrap();
    let mut raw = redis.raw();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut raw)
        .unwrap();
    let unlink_held = |raw: &mut redis::Connection| {
        let clients: String = redis::cmd("CLIENT").arg("LIST").query(raw).unwrap();
        clients
            .lines()
            .any(|c| c.contains("cmd=unlink") && c.contains("flags=b"))
    };
    cancel_prefix_invalidation_once(&cache, || unlink_held(&mut raw), "reached Redis");
    assert_eq!(in_l1(&cache, "p:1"), None, "L1 was dropped before L2's scan");
    // The UNLINK has not run: L2 answers with the old value, which is given but not kept.
    assert_eq!(cache.get_raw("p:1").unwrap().as_deref(), Some(&b"old"[..]));
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut raw).unwrap();
    support::wait_until("the UNLINK lands", || in_l2(&cache, "p:1").is_none());
    assert_eq!(
        cache.get_raw("p:1").unwrap(),
        None,
        "L1 kept the value the cancelled invalidation's UNLINK took out of L2"
    );
}

/// A prefix invalidation whose replay queue cannot take the deletes of the writes it holds under
/// the prefix (its file made immutable on ext4: every write fails with EPERM) still deletes the
/// prefix from L2 and reports the queue's error, in the sync and the async form alike. The
/// async form returned the error before L2's scan, and L2 kept every value under the prefix.
#[test]
fn a_prefix_invalidation_whose_replay_queue_cannot_write_still_deletes_the_prefix_from_l2() {
    for run_async in [false, true] {
        let shell = if run_async { "async" } else { "sync" };
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let disk = mount::Mount::ext4(16);
        let queue_dir = disk.path().join("q");
        let mut cfg = config(dir.path(), "redis", &[redis.addr()], "");
        cfg.offline.replay_dir = Some(queue_dir.clone());
        let cache = CacheManager::new(cfg).unwrap();
        cache.set_raw("p:1", b"old", None).unwrap();
        // A write during an outage waits in the replay queue.
        redis.pause();
        cache.set_raw("p:1", b"new", None).unwrap();
        assert!(cache.replay_queue().unwrap().is_pending("p:1"), "{shell}");
        disk.set_immutable(&queue_dir.join("replay.log"), true);
        redis.resume();

        let result = if run_async {
            rt().block_on(cache.invalidate_prefix_async("p:"))
        } else {
            cache.invalidate_prefix("p:")
        };
        let left_in_l2 = in_l2(&cache, "p:1");
        disk.set_immutable(&queue_dir.join("replay.log"), false);
        assert!(
            result.is_err(),
            "{shell}: the queue could not take the deletes, yet the call said {result:?}"
        );
        assert_eq!(left_in_l2, None, "{shell}: L2 kept the key under the prefix");
    }
}

/// A set made after a prefix invalidation was left without L2's answer (an async one
/// cancelled during L2's deletion, or either form timed out on it), while the invalidation's
/// `UNLINK` is held on its way (at a proxy), keeps no L1 copy past the window in which that
/// `UNLINK` may land: it lands after the set and takes the set's value out of L2, and L1 alone
/// served that value until its TTL.
#[test]
fn a_set_racing_the_late_unlink_of_an_unanswered_prefix_invalidation_leaves_l1_agreeing_with_l2() {
    for how in [
        Unanswered::Cancelled,
        Unanswered::TimedOut,
        Unanswered::TimedOutAsync,
    ] {
        // The window (four L2 timeouts) is far longer than the test's steps up to the release.
        let raced = set_past_a_held_unlink(1_000, how);
        let cache = &raced.cache;
        raced.to_l2.release();
        support::wait_until("the UNLINK lands", || in_l2(cache, "p:1").is_none());
        support::wait_until(&format!("{how:?}: L1 drops the set's copy L2 lost"), || {
            in_l1(cache, "p:1").is_none()
        });
        assert_eq!(cache.get_raw("p:1").unwrap(), None, "{how:?}");
    }
}

/// The same set, on a manager whose last handle is dropped within the window: L1's keys under
/// the prefix are dropped then, not at the window's end (80 s here), which the drop
/// neither waits for nor outlives. The file store keeps its data past the run, and the set's
/// L1 copy would have outlived the `UNLINK` there.
#[test]
fn a_manager_dropped_in_a_cancelled_prefix_invalidations_window_drops_the_prefix_from_l1_at_once() {
    let raced = set_past_a_held_unlink(20_000, Unanswered::Cancelled);
    let started = Instant::now();
    drop(raced.cache);
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the manager's drop waited out the window: {:?}",
        started.elapsed()
    );
    let l1 = uno_cache::FileStore::open(raced.dir.path(), uno_cache::FileStoreOptions::default()).unwrap();
    assert_eq!(
        l1.get("p:1").unwrap(),
        None,
        "L1 kept the set's copy past the run"
    );
}

/// How a prefix invalidation is left without L2's answer to its `UNLINK`.
#[derive(Debug, Clone, Copy)]
enum Unanswered {
    /// The async form, its future dropped.
    Cancelled,
    /// The sync form, past the L2 timeout.
    TimedOut,
    /// The async form, past the L2 timeout.
    TimedOutAsync,
}

/// A manager whose L2 and tag store (which deletes prefixes) reach Redis through `to_l2`, after
/// an invalidation of `p:` was left `Unanswered` with its `UNLINK` held at the proxy, and a set
/// of `p:1` made then, which reached both levels past the held `UNLINK`.
struct RacedSet {
    _redis: RedisServer,
    to_l2: proxy::TcpProxy,
    dir: tempfile::TempDir,
    cache: CacheManager,
}

fn set_past_a_held_unlink(timeout_ms: u64, how: Unanswered) -> RacedSet {
    let redis = RedisServer::start();
    let to_l2 = proxy::TcpProxy::start(&redis.addr());
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(file_over_redis(dir.path(), &to_l2.addr(), timeout_ms)).unwrap();
    cache.set_raw("p:1", b"old", None).unwrap();
    to_l2.hold_on(b"UNLINK");
    match how {
        Unanswered::Cancelled => {
            cancel_prefix_invalidation_once(&cache, || to_l2.waiting() > 0, "left for Redis");
        }
        Unanswered::TimedOut | Unanswered::TimedOutAsync => {
            let result = if matches!(how, Unanswered::TimedOut) {
                cache.invalidate_prefix("p:")
            } else {
                rt().block_on(cache.invalidate_prefix_async("p:"))
            };
            assert!(
                matches!(result, Err(uno_cache::Error::Timeout { .. })),
                "{how:?}: {result:?}"
            );
            assert!(to_l2.waiting() > 0, "{how:?}: the UNLINK was not held");
        }
    }
    // On L2's own connection, past the held UNLINK.
    cache.set_raw("p:1", b"new", None).unwrap();
    assert_eq!(in_l2(&cache, "p:1").as_deref(), Some(&b"new"[..]));
    assert_eq!(in_l1(&cache, "p:1").as_deref(), Some(&b"new"[..]));
    RacedSet {
        _redis: redis,
        to_l2,
        dir,
        cache,
    }
}
