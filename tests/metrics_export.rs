//! `CacheStats::publish_metrics`: what an exporter installed as the `metrics` recorder gets. A
//! recorder that keeps what it is given (metrics-util's debugging recorder, installed for the
//! test's thread only) reads the published metrics back, and each is checked against the
//! snapshot it came from.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::float_cmp
)]

use std::collections::BTreeMap;

#[cfg(feature = "redis")]
#[path = "support/mount.rs"]
mod mount;
#[cfg(feature = "redis")]
#[path = "support/mod.rs"]
mod support;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use uno_cache::{CacheConfig, CacheManager, CacheStats};

/// Metric name and its labels (sorted, `key=value`) → value (counters as f64).
type Published = BTreeMap<(String, Vec<String>), f64>;

fn publish(stats: &CacheStats, name: &str, times: usize) -> Published {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..times {
            stats.publish_metrics(name);
        }
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let mut labels: Vec<String> = key
                .key()
                .labels()
                .map(|l| format!("{}={}", l.key(), l.value()))
                .collect();
            labels.sort();
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(_) => panic!("no histogram is published: {key:?}"),
            };
            ((key.key().name().to_owned(), labels), value)
        })
        .collect()
}

fn get(published: &Published, name: &str, labels: &[&str]) -> f64 {
    let mut labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
    labels.sort();
    *published
        .get(&(name.to_owned(), labels.clone()))
        .unwrap_or_else(|| {
            panic!(
                "{name} {labels:?} was not published; published: {:#?}",
                published.keys()
            )
        })
}

fn manager(memory_tier: bool) -> (tempfile::TempDir, CacheManager) {
    let dir = tempfile::tempdir().unwrap();
    let tier = if memory_tier {
        "memory_items = 100\n"
    } else {
        "memory_items = 0\n"
    };
    let toml = format!("[local]\npath = {:?}\n{tier}", dir.path().join("l1"));
    let config = CacheConfig::from_toml_str(&toml).unwrap();
    (dir, CacheManager::new(config).unwrap())
}

#[test]
fn every_level_figure_is_published_with_its_cache_and_tier_labels_and_the_value_of_the_snapshot() {
    let (_dir, cache) = manager(false);
    for i in 0..10u64 {
        cache.set(&format!("k{i}"), &i, None).unwrap();
    }
    for i in 0..15u64 {
        let _ = cache.get::<u64>(&format!("k{i}")).unwrap();
    }
    cache.delete("k0").unwrap();
    cache.set_raw("raw", b"\xff\xff", None).unwrap();
    assert!(cache.get::<Vec<String>>("raw").is_err());
    let stats = cache.monitor().get_stats();
    assert_eq!((stats.local.hits, stats.local.misses), (11, 5), "{stats:?}");
    let published = publish(&stats, "sessions", 1);
    let local = ["cache=sessions", "tier=local"];
    assert_eq!(get(&published, "uno_cache_hits_total", &local), 11.0);
    assert_eq!(get(&published, "uno_cache_misses_total", &local), 5.0);
    assert_eq!(
        get(&published, "uno_cache_hit_ratio", &local),
        stats.local.hit_rate
    );
    assert_eq!(
        get(&published, "uno_cache_sets_total", &local),
        stats.local.sets as f64
    );
    assert_eq!(
        get(&published, "uno_cache_deletes_total", &local),
        stats.local.deletes as f64
    );
    assert_eq!(get(&published, "uno_cache_entries", &local), 10.0);
    assert_eq!(
        get(&published, "uno_cache_bytes", &local),
        stats.size.local.bytes as f64
    );
    assert_eq!(stats.overall.decode_errors, 1, "{stats:?}");
    assert_eq!(
        get(&published, "uno_cache_decode_errors_total", &["cache=sessions"]),
        1.0
    );
    let all = ["cache=sessions", "tier=all"];
    assert_eq!(
        get(&published, "uno_cache_hits_total", &all),
        stats.overall.hits as f64
    );
    assert_eq!(
        get(&published, "uno_cache_misses_total", &all),
        stats.overall.misses as f64
    );
    assert_eq!(
        get(&published, "uno_cache_hit_ratio", &all),
        stats.hit_rate.overall
    );
    assert_eq!(
        get(
            &published,
            "uno_cache_loader_timeouts_total",
            &["cache=sessions", "kind=hard"]
        ),
        0.0
    );
    // A level the manager does not use is not published: no L2 here, and no memory tier.
    for name in published.keys().map(|(_, labels)| labels) {
        assert!(
            !name.iter().any(|l| l == "tier=distributed" || l == "tier=memory"),
            "{name:?} published for a level the manager does not use"
        );
    }
}

#[test]
fn latencies_are_published_in_seconds_at_the_median_and_the_99th_percentile() {
    let (_dir, cache) = manager(false);
    // One local read in 16 per thread is timed.
    for i in 0..64u64 {
        cache.set(&format!("k{i}"), &i, None).unwrap();
        let _ = cache.get::<u64>(&format!("k{i}")).unwrap();
    }
    let stats = cache.monitor().get_stats();
    let latency = stats.file.get_latency;
    assert!(latency.samples > 0, "{stats:?}");
    let published = publish(&stats, "c", 1);
    let at = |q: &'static str| ["cache=c", "tier=file", q];
    assert_eq!(
        get(&published, "uno_cache_get_latency_seconds", &at("quantile=0.5")),
        latency.p50_ns as f64 / 1e9
    );
    assert_eq!(
        get(&published, "uno_cache_get_latency_seconds", &at("quantile=0.99")),
        latency.p99_ns as f64 / 1e9
    );
}

#[test]
fn the_memory_tier_is_published_as_a_tier_of_its_own() {
    let (_dir, cache) = manager(true);
    cache.set("k", &7u64, None).unwrap();
    for _ in 0..3 {
        assert_eq!(cache.get::<u64>("k").unwrap(), Some(7));
    }
    let stats = cache.monitor().get_stats();
    assert!(stats.memory.enabled && stats.memory.hits > 0, "{stats:?}");
    let published = publish(&stats, "c", 1);
    let memory = ["cache=c", "tier=memory"];
    assert_eq!(
        get(&published, "uno_cache_hits_total", &memory),
        stats.memory.hits as f64
    );
    assert_eq!(
        get(&published, "uno_cache_entries", &memory),
        stats.size.memory.items as f64
    );
    assert_eq!(
        get(&published, "uno_cache_hits_total", &["cache=c", "tier=file"]),
        stats.file.hits as f64
    );
}

/// The memory tier counts no deletes of its own, so it publishes none: its
/// `uno_cache_deletes_total` was 0 however many keys were deleted, while `tier="local"` has them.
#[test]
fn deletes_errors_and_damage_are_published_for_the_local_level_not_as_the_memory_tiers_zeros() {
    let (_dir, cache) = manager(true);
    cache.set("k", &7u64, None).unwrap();
    assert_eq!(cache.get::<u64>("k").unwrap(), Some(7));
    assert!(cache.delete("k").unwrap());
    let stats = cache.monitor().get_stats();
    assert_eq!(stats.local.deletes, 1, "{stats:?}");
    let published = publish(&stats, "c", 1);
    assert_eq!(
        get(&published, "uno_cache_deletes_total", &["cache=c", "tier=local"]),
        1.0
    );
    let memory = ["cache=c", "tier=memory"];
    assert!(
        published.contains_key(&(
            "uno_cache_hits_total".to_owned(),
            memory.map(str::to_owned).to_vec()
        )),
        "the memory tier is published"
    );
    for always_zero in [
        "uno_cache_deletes_total",
        "uno_cache_errors_total",
        "uno_cache_corrupt_reads_total",
    ] {
        assert!(
            !published.contains_key(&(always_zero.to_owned(), memory.map(str::to_owned).to_vec())),
            "{always_zero}, always 0 for the memory tier, was published"
        );
        assert!(
            published.contains_key(&(
                always_zero.to_owned(),
                ["cache=c", "tier=local"].map(str::to_owned).to_vec()
            )),
            "{always_zero} of the local level was not published"
        );
    }
}

#[test]
fn publishing_a_snapshot_again_counts_nothing_twice() {
    let (_dir, cache) = manager(false);
    cache.set("k", &1u64, None).unwrap();
    let _ = cache.get::<u64>("k").unwrap();
    let stats = cache.monitor().get_stats();
    let once = publish(&stats, "c", 1);
    let thrice = publish(&stats, "c", 3);
    assert_eq!(once, thrice);
    assert_eq!(
        get(&thrice, "uno_cache_hits_total", &["cache=c", "tier=local"]),
        1.0
    );
}

#[test]
fn two_caches_of_one_process_are_told_apart_by_their_name() {
    let (_d1, first) = manager(false);
    let (_d2, second) = manager(false);
    first.set("k", &1u64, None).unwrap();
    let _ = first.get::<u64>("k").unwrap();
    let _ = second.get::<u64>("k").unwrap();
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        first.monitor().get_stats().publish_metrics("first");
        second.monitor().get_stats().publish_metrics("second");
    });
    let hits: BTreeMap<String, u64> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key().name() == "uno_cache_hits_total"
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == "tier" && l.value() == "local")
        })
        .map(|(key, _, _, value)| {
            let cache = key
                .key()
                .labels()
                .find(|l| l.key() == "cache")
                .unwrap()
                .value()
                .to_owned();
            let DebugValue::Counter(n) = value else {
                panic!("a counter: {value:?}")
            };
            (cache, n)
        })
        .collect();
    assert_eq!(
        hits,
        BTreeMap::from([("first".to_owned(), 1), ("second".to_owned(), 0)])
    );
}

/// The replay queue latched (its log takes no writes after a failed write or fsync, so every
/// L2 write that fails meanwhile is lost) had no metric: `uno_cache_replay_pending` may read 0
/// all the while. It is a gauge, with the acks held in memory and the room the new log needs.
#[test]
fn a_latched_replay_queue_is_published_with_its_held_acks_and_the_room_it_needs() {
    let mut stats = CacheStats::default();
    stats.consistency.replay_enabled = true;
    stats.consistency.replay_write_failure = Some("no space left on device".to_owned());
    stats.consistency.replay_acks_held = 3;
    stats.consistency.replay_recovery_needs_bytes = 4096;
    stats.consistency.queue_failures = 2;
    let published = publish(&stats, "c", 1);
    let cache = ["cache=c"];
    assert_eq!(get(&published, "uno_cache_replay_latched", &cache), 1.0);
    assert_eq!(get(&published, "uno_cache_replay_acks_held", &cache), 3.0);
    assert_eq!(
        get(&published, "uno_cache_replay_recovery_needs_bytes", &cache),
        4096.0
    );
    assert_eq!(
        get(&published, "uno_cache_replay_queue_failures_total", &cache),
        2.0
    );
    stats.consistency.replay_write_failure = None;
    let recovered = publish(&stats, "c", 1);
    assert_eq!(get(&recovered, "uno_cache_replay_latched", &cache), 0.0);
}

/// The same through a manager whose replay queue lives on a real device that fills while L2 (a
/// real Redis) is configured: latched once a push finds no room, and not once the queue recovers.
#[cfg(feature = "redis")]
#[test]
fn a_replay_queue_latched_by_a_full_device_is_published_as_latched_until_it_recovers() {
    let redis = support::RedisServer::start();
    let fs = mount::Mount::tmpfs(1024);
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "memory"
            [distributed]
            enabled = true
            hosts = ["{}"]
            [offline]
            replay_dir = {:?}
            "#,
            redis.addr(),
            fs.path().display().to_string()
        ))
        .unwrap(),
    )
    .unwrap();
    let latched = |cache: &CacheManager| {
        let stats = cache.monitor().get_stats();
        let published = publish(&stats, "c", 1);
        (get(&published, "uno_cache_replay_latched", &["cache=c"]), stats)
    };
    assert_eq!(latched(&cache).0, 0.0);
    let q = std::sync::Arc::clone(cache.replay_queue().unwrap());
    let ballast = fs.fill("ballast");
    assert!(q.push_set("latch", &[7u8; 64 * 1024], 0).is_err());
    let (gauge, stats) = latched(&cache);
    assert!(
        stats.consistency.replay_write_failure.is_some(),
        "{:?}",
        stats.consistency
    );
    assert_eq!(gauge, 1.0);

    fs.remove(&ballast);
    q.recover().unwrap();
    let (gauge, stats) = latched(&cache);
    assert!(
        stats.consistency.replay_write_failure.is_none(),
        "{:?}",
        stats.consistency
    );
    assert_eq!(gauge, 0.0);
}

/// The backplane's re-sends of failed publishes, and the refusals of a bus whose ACL user may
/// not PUBLISH (a real Redis), are published as the manager's stats count them: the failed
/// re-sends were in the backplane's own stats alone, and no publish figure was exported.
#[cfg(feature = "redis")]
#[test]
fn backplane_publish_and_re_send_failures_are_published_with_the_configuration_errors() {
    let l2 = support::RedisServer::start();
    let bus = support::RedisServer::start_with(
        &["--user", "app", "on", ">pw", "~*", "&*", "+@all", "-publish"],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::from_toml_str(&format!(
        "[local]\npath = {:?}\n[distributed]\nenabled = true\nhosts = [{:?}]\n",
        dir.path().join("l1"),
        l2.addr()
    ))
    .unwrap();
    config.invalidation.enabled = true;
    config.invalidation.hosts = vec![format!("redis://app:pw@{}/", bus.addr())];
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw("k", b"v", None).unwrap();
    // The publish's refusal, then a re-send's (counted after the failed re-send itself).
    support::wait_until("a re-send refused", || {
        cache.monitor().get_stats().distributed.config_errors >= 2
    });
    let stats = cache.monitor().get_stats();
    let published = publish(&stats, "c", 1);
    let c = &stats.consistency;
    let cache_label = ["cache=c"];
    assert_eq!(get(&published, "uno_cache_published_total", &cache_label), 0.0);
    assert_eq!(
        get(&published, "uno_cache_publish_failures_total", &cache_label),
        1.0
    );
    assert_eq!(
        get(&published, "uno_cache_republish_failures_total", &cache_label),
        c.republish_failures as f64
    );
    assert_eq!(get(&published, "uno_cache_republish_pending", &cache_label), 1.0);
    assert_eq!(
        get(&published, "uno_cache_republish_overflows_total", &cache_label),
        0.0
    );
    let config_errors = get(
        &published,
        "uno_cache_config_errors_total",
        &["cache=c", "tier=distributed"],
    );
    assert_eq!(config_errors, stats.distributed.config_errors as f64);
    assert!(c.republish_failures >= 1, "{c:?}");
}
