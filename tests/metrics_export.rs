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
    let stats = cache.monitor().get_stats();
    assert_eq!((stats.local.hits, stats.local.misses), (10, 5), "{stats:?}");
    let published = publish(&stats, "sessions", 1);
    let local = ["cache=sessions", "tier=local"];
    assert_eq!(get(&published, "uno_cache_hits_total", &local), 10.0);
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
    assert_eq!(get(&published, "uno_cache_entries", &local), 9.0);
    assert_eq!(
        get(&published, "uno_cache_bytes", &local),
        stats.size.local.bytes as f64
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
