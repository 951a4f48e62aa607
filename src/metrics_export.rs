//! A cache's statistics published through the [`metrics`] facade, so whatever exporter the
//! application installed (Prometheus, StatsD, OpenTelemetry, …) serves them with its own.
//!
//! [`CacheStats::publish_metrics`] sets one metric per figure of a snapshot: the cumulative
//! counts as counters (their absolute value, so publishing twice counts nothing twice), the
//! rest (sizes, ratios, latency percentiles, queue lengths, states) as gauges. Every metric is
//! labelled `cache` with the name given, so the managers of one process stay apart; a level's
//! figures are labelled `tier` too: `memory` (the tier of decoded values), `file` (the tier
//! behind it, file store or redb), `local` (both), `distributed` (L2), or `all` (the manager as
//! a whole). A level the manager does not use is not published.
//!
//! | metric | kind | tiers | from |
//! |---|---|---|---|
//! | `uno_cache_hits_total`, `uno_cache_misses_total` | counter | each, `all` | `hits`, `misses` |
//! | `uno_cache_hit_ratio` | gauge | each, `all` | `hit_rate` |
//! | `uno_cache_sets_total` | counter | each | `sets` |
//! | `uno_cache_deletes_total`, `uno_cache_errors_total`, `uno_cache_corrupt_reads_total` | counter | each but `memory` (it drops a key with every change of L1, whose deletes `local` counts, and holds decoded values in RAM, with nothing to fail or be damaged) | `deletes`, `errors` (failed calls: a batch's once, however many keys it named), `corrupt_reads` |
//! | `uno_cache_config_errors_total` | counter | `distributed` | `config_errors` (the backplane's refusals included) |
//! | `uno_cache_late_writes_deleted_total`, `uno_cache_writes_in_doubt` | counter, gauge | `distributed` | `late_writes_deleted`, `writes_in_doubt` (writes that timed out, see `RedisStore::writes_in_doubt`) |
//! | `uno_cache_evictions_total`, `uno_cache_expirations_total` | counter | each | as named |
//! | `uno_cache_entries`, `uno_cache_bytes` | gauge | each but `all` | `size` (for `memory`, its places: values, and keys removed since their value was kept, which keep their place, empty, until evicted; see `Sizes::memory`) |
//! | `uno_cache_get_latency_seconds`, `uno_cache_set_latency_seconds` (label `quantile`: `0.5`, `0.99`) | gauge | each, `all` (get) | `get_latency`, `set_latency` |
//! | `uno_cache_breaker_open` (1 open, 0.5 half-open, 0 closed), `uno_cache_breaker_trips_total` | gauge, counter | `distributed` | `breaker` |
//! | `uno_cache_backfills_total`, `uno_cache_loads_total`, `uno_cache_load_waits_total`, `uno_cache_decode_errors_total` | counter | — | `overall` |
//! | `uno_cache_replay_pending`, `uno_cache_replay_bytes`, `uno_cache_replay_overflowed` | gauge | — | `consistency` |
//! | `uno_cache_replay_latched` (1 while the replay log takes no writes after a failed write or fsync: L2 writes that fail meanwhile are lost), `uno_cache_replay_acks_held`, `uno_cache_replay_recovery_needs_bytes` | gauge | — | `consistency`: `replay_write_failure` set, `replay_acks_held`, `replay_recovery_needs_bytes` |
//! | `uno_cache_replay_queued_total`, `uno_cache_replay_queue_failures_total`, `uno_cache_replayed_total`, `uno_cache_replay_failures_total` | counter | — | `consistency`: `queued`, `queue_failures`, `replayed`, `replay_failures` |
//! | `uno_cache_tags_owed`, `uno_cache_retag_failures_total`, `uno_cache_retags_dropped_total` | gauge, counter, counter | — | `consistency`: `tags_owed`, `retag_failures`, `retags_dropped` (replayed tagged writes) |
//! | `uno_cache_backplane_connected`, `uno_cache_invalidations_received_total`, `uno_cache_keys_invalidated_total`, `uno_cache_subscription_losses_total` | gauge, counters | — | `consistency` |
//! | `uno_cache_published_total`, `uno_cache_publish_failures_total`, `uno_cache_republish_pending`, `uno_cache_republish_failures_total`, `uno_cache_republish_overflows_total` | counters, gauge | — | `consistency` (the backplane's publishes and the re-sends of the failed ones) |
//! | `uno_cache_write_behind_pending`, `uno_cache_write_behind_failures_total` | gauge, counter | — | `consistency` |
//! | `uno_cache_loader_failures_total`, `uno_cache_stale_served_total`, `uno_cache_loader_timeouts_total` (label `kind`: `soft`, `hard`) | counter | — | `loader` |
//!
//! Publishing reads nothing but the snapshot: call it from a timer or the exporter's scrape
//! hook, with [`Monitor::get_stats`](crate::Monitor::get_stats) (or its async twin) for the
//! snapshot.

use ::metrics::{counter, gauge, Label};

use crate::distributed::BreakerState;
use crate::stats::{CacheStats, LatencyStats, LevelStats};
use crate::storage::StorageSize;

/// The labels of one metric: the cache's name, then the rest.
fn labels(cache: &str, rest: &[(&'static str, &'static str)]) -> Vec<Label> {
    std::iter::once(Label::new("cache", cache.to_owned()))
        .chain(rest.iter().map(|&(k, v)| Label::new(k, v)))
        .collect()
}

/// Nanoseconds as the seconds Prometheus' conventions ask of a duration.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn latency(name: &'static str, cache: &str, tier: &'static str, l: &LatencyStats) {
    if l.samples == 0 {
        return;
    }
    for (quantile, ns) in [("0.5", l.p50_ns), ("0.99", l.p99_ns)] {
        gauge!(name, labels(cache, &[("tier", tier), ("quantile", quantile)])).set(seconds(ns));
    }
}

fn level(cache: &str, tier: &'static str, l: &LevelStats, size: Option<&StorageSize>) {
    if !l.enabled {
        return;
    }
    let at = || labels(cache, &[("tier", tier)]);
    counter!("uno_cache_hits_total", at()).absolute(l.hits);
    counter!("uno_cache_misses_total", at()).absolute(l.misses);
    gauge!("uno_cache_hit_ratio", at()).set(l.hit_rate);
    counter!("uno_cache_sets_total", at()).absolute(l.sets);
    // The memory tier has no deletes, errors or damaged reads of its own (each is always 0: a
    // change of L1 drops its key from the tier, which holds decoded values in RAM). Published,
    // a 0 would read as a tier nothing was deleted from and nothing ever failed in.
    if tier != "memory" {
        counter!("uno_cache_deletes_total", at()).absolute(l.deletes);
        counter!("uno_cache_errors_total", at()).absolute(l.errors);
        counter!("uno_cache_corrupt_reads_total", at()).absolute(l.corrupt_reads);
    }
    // Only L2 (and the backplane, counted with it) is told its settings are wrong by a server.
    if tier == "distributed" {
        counter!("uno_cache_config_errors_total", at()).absolute(l.config_errors);
        counter!("uno_cache_late_writes_deleted_total", at()).absolute(l.late_writes_deleted);
        gauge!("uno_cache_writes_in_doubt", at()).set(l.writes_in_doubt as f64);
    }
    counter!("uno_cache_evictions_total", at()).absolute(l.evictions);
    counter!("uno_cache_expirations_total", at()).absolute(l.expirations);
    // A size that could not be read (`size_error`) is left as last published, not set to 0.
    if let Some(size) = size.filter(|_| l.size_error.is_none()) {
        gauge!("uno_cache_entries", at()).set(size.items as f64);
        gauge!("uno_cache_bytes", at()).set(size.bytes as f64);
    }
    latency("uno_cache_get_latency_seconds", cache, tier, &l.get_latency);
    latency("uno_cache_set_latency_seconds", cache, tier, &l.set_latency);
    if let Some(breaker) = &l.breaker {
        let open = match breaker.state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 0.5,
            BreakerState::Open => 1.0,
        };
        gauge!("uno_cache_breaker_open", at()).set(open);
        counter!("uno_cache_breaker_trips_total", at()).absolute(breaker.trips);
    }
}

fn flag(on: bool) -> f64 {
    if on {
        1.0
    } else {
        0.0
    }
}

impl CacheStats {
    /// Publishes this snapshot through the [`metrics`] facade, every metric labelled
    /// `cache = name`; the names and labels are in the [module docs](crate::metrics_export). Without
    /// an installed recorder it does nothing.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// # let config = uno_cache::CacheConfig::from_toml_str(&format!("[local]\npath = {:?}\n", dir.path()))?;
    /// let manager = uno_cache::CacheManager::new(config)?;
    /// // From a timer, or the exporter's scrape hook:
    /// manager.monitor().get_stats().publish_metrics("sessions");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn publish_metrics(&self, name: &str) {
        let s = &self.size;
        level(name, "local", &self.local, Some(&s.local));
        level(name, "memory", &self.memory, Some(&s.memory));
        level(name, "file", &self.file, Some(&s.file));
        level(name, "distributed", &self.distributed, Some(&s.distributed));

        let o = &self.overall;
        let all = || labels(name, &[("tier", "all")]);
        counter!("uno_cache_hits_total", all()).absolute(o.hits);
        counter!("uno_cache_misses_total", all()).absolute(o.misses);
        gauge!("uno_cache_hit_ratio", all()).set(self.hit_rate.overall);
        latency("uno_cache_get_latency_seconds", name, "all", &o.get_latency);
        let cache = || labels(name, &[]);
        counter!("uno_cache_backfills_total", cache()).absolute(o.backfills);
        counter!("uno_cache_loads_total", cache()).absolute(o.loads);
        counter!("uno_cache_load_waits_total", cache()).absolute(o.load_waits);
        counter!("uno_cache_decode_errors_total", cache()).absolute(o.decode_errors);

        let c = &self.consistency;
        let latched = c.replay_write_failure.is_some();
        if c.replay_enabled || c.replay_pending > 0 || latched {
            gauge!("uno_cache_replay_pending", cache()).set(c.replay_pending as f64);
            gauge!("uno_cache_replay_bytes", cache()).set(c.replay_bytes as f64);
            gauge!("uno_cache_replay_overflowed", cache()).set(flag(c.replay_overflowed));
            // While latched every L2 write that fails is lost, not queued: the state to alert
            // on, which `replay_pending` alone does not show (it may be 0 meanwhile).
            gauge!("uno_cache_replay_latched", cache()).set(flag(latched));
            gauge!("uno_cache_replay_acks_held", cache()).set(c.replay_acks_held as f64);
            gauge!("uno_cache_replay_recovery_needs_bytes", cache())
                .set(c.replay_recovery_needs_bytes as f64);
            counter!("uno_cache_replay_queued_total", cache()).absolute(c.queued);
            counter!("uno_cache_replay_queue_failures_total", cache()).absolute(c.queue_failures);
            counter!("uno_cache_replayed_total", cache()).absolute(c.replayed);
            counter!("uno_cache_replay_failures_total", cache()).absolute(c.replay_failures);
            gauge!("uno_cache_tags_owed", cache()).set(c.tags_owed as f64);
            counter!("uno_cache_retag_failures_total", cache()).absolute(c.retag_failures);
            counter!("uno_cache_retags_dropped_total", cache()).absolute(c.retags_dropped);
        }
        if c.backplane_enabled {
            gauge!("uno_cache_backplane_connected", cache()).set(flag(c.backplane_connected));
            counter!("uno_cache_invalidations_received_total", cache()).absolute(c.invalidations_received);
            counter!("uno_cache_keys_invalidated_total", cache()).absolute(c.keys_invalidated);
            counter!("uno_cache_subscription_losses_total", cache()).absolute(c.subscription_losses);
            counter!("uno_cache_published_total", cache()).absolute(c.published);
            counter!("uno_cache_publish_failures_total", cache()).absolute(c.publish_failures);
            gauge!("uno_cache_republish_pending", cache()).set(c.republish_pending as f64);
            counter!("uno_cache_republish_failures_total", cache()).absolute(c.republish_failures);
            counter!("uno_cache_republish_overflows_total", cache()).absolute(c.republish_overflows);
        }
        if c.write_behind {
            gauge!("uno_cache_write_behind_pending", cache()).set(c.write_behind_pending as f64);
            counter!("uno_cache_write_behind_failures_total", cache()).absolute(c.write_behind_failures);
        }

        let l = &self.loader;
        counter!("uno_cache_loader_failures_total", cache()).absolute(l.failures);
        counter!("uno_cache_stale_served_total", cache()).absolute(l.stale_served);
        for (kind, n) in [("soft", l.soft_timeouts), ("hard", l.hard_timeouts)] {
            counter!("uno_cache_loader_timeouts_total", labels(name, &[("kind", kind)])).absolute(n);
        }
    }
}
