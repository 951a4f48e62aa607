//! `[loader]`: fail-safe, loader timeouts, refresh-ahead and cached absent answers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{invalid, CacheConfig, LocalKind};
use crate::error::Result;

/// `[loader]`: what the manager serves when a fresh value cannot be had — the data source
/// behind [`get_or_set_with`](crate::CacheManager::get_or_set_with) fails or is slow, or L2 is
/// unreachable — and how long it waits for a loader.
///
/// **Fail-safe.** With `fail_safe_max_duration` above zero, an entry that expires is kept that
/// much longer in the local level (the file store keeps it on disk, so it survives a restart).
/// A plain `get` never returns it. It is served, marked stale, when the loader fails or times
/// out, and by [`get_with_state`](crate::CacheManager::get_with_state) when no level has a fresh
/// value. After a failed load, the stale value counts as fresh for `fail_safe_throttle`, so a
/// dead source is asked once per throttle period, not on every read (a write of the key ends
/// the period, as does a value of it read from L2 into L1, another instance's write: neither is
/// the stale one). Deletes, invalidations and
/// prefix or tag invalidation remove stale copies as they remove values.
///
/// **Timeouts** ([`get_or_load`](crate::CacheManager::get_or_load) and its async form; the
/// loader then runs off the caller's thread or task). They count from the start of the key's
/// load, which its callers share: with a stale value at hand, a caller gets it after
/// `soft_timeout_ms` and the load goes on in the background to refresh the entry; after
/// `hard_timeout_ms` a caller gets the stale value or [`Error::LoaderTimeout`](crate::Error),
/// and the key's load slot is given up, so the next caller starts a new load. A caller of
/// `get_or_set_with` waiting on another's load gives it up at `hard_timeout_ms` too, then runs
/// its own loader (which has no timeout).
///
/// **Refresh-ahead.** With `refresh_ahead` set (say 0.8), a `get_or_load` hit on a value this
/// process loaded, once that share of its L1 TTL has passed, starts one background reload
/// through the call's loader and returns the current value at once: hot keys never expire
/// under load. Reloads are single-flight per key and at most `refresh_ahead_max` run at once; a
/// failed one keeps the current value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// How long an expired entry is kept for fail-safe, in seconds (default 0: off; otherwise at
    /// least 0.001, as for every duration here: expiries are kept in milliseconds). Needs
    /// `local.type = "file"` or `"memory"`. No copy is served past it, even from an L1 given to
    /// the builder that keeps expired entries longer.
    #[serde(with = "super::seconds")]
    pub fail_safe_max_duration: Duration,
    /// How long a stale value served after a failed load counts as fresh for the loading
    /// calls, in seconds (default 30; 0: ask the source on every call); a write of the key ends
    /// it, as does a value of it read from L2 into L1.
    #[serde(with = "super::seconds")]
    pub fail_safe_throttle: Duration,
    /// With a stale value, how long a caller waits for the load, in milliseconds (default 0:
    /// no soft timeout). Needs `fail_safe_max_duration` above 0, which keeps the stale values.
    pub soft_timeout_ms: u64,
    /// How long any caller waits for the load, in milliseconds (default 0: no limit).
    pub hard_timeout_ms: u64,
    /// How long the answer "absent" of a loader of
    /// [`get_or_load_optional`](crate::CacheManager::get_or_load_optional) is cached, in seconds
    /// (default 30; capped by the call's TTL; 0: not cached, and with fail-safe the answer
    /// deletes the key instead, so its stale copy is not served after it; a refresh-ahead
    /// reload's answer deletes it without fail-safe too, the key holding the value it was to
    /// replace).
    #[serde(with = "super::seconds")]
    pub absent_ttl: Duration,
    /// The share of a loaded value's L1 TTL after which a hit reloads it in the background
    /// (default 0: off; otherwise above 0 and below 1).
    pub refresh_ahead: f64,
    /// Background reloads running at once, at most (default 16).
    pub refresh_ahead_max: usize,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        LoaderConfig {
            fail_safe_max_duration: Duration::ZERO,
            fail_safe_throttle: Duration::from_secs(30),
            soft_timeout_ms: 0,
            hard_timeout_ms: 0,
            absent_ttl: Duration::from_secs(30),
            refresh_ahead: 0.0,
            refresh_ahead_max: 16,
        }
    }
}

impl CacheConfig {
    pub(super) fn validate_loader(&self) -> Result<()> {
        let loader = &self.loader;
        super::at_least_a_millisecond(
            "loader.fail_safe_max_duration",
            loader.fail_safe_max_duration,
            true,
        )?;
        super::at_least_a_millisecond("loader.fail_safe_throttle", loader.fail_safe_throttle, true)?;
        super::at_least_a_millisecond("loader.absent_ttl", loader.absent_ttl, true)?;
        if !loader.fail_safe_max_duration.is_zero() && self.local.kind == LocalKind::Redb {
            return Err(invalid(
                "loader.fail_safe_max_duration",
                "needs local.type = \"file\" or \"memory\" (the redb level keeps no expired entries); set it to 0 or change the local type",
            ));
        }
        if loader.refresh_ahead != 0.0 && !(loader.refresh_ahead > 0.0 && loader.refresh_ahead < 1.0) {
            return Err(invalid(
                "loader.refresh_ahead",
                "must be 0 (off) or a share of the TTL above 0 and below 1, such as 0.8",
            ));
        }
        if loader.refresh_ahead_max == 0 {
            return Err(invalid("loader.refresh_ahead_max", "must be at least 1"));
        }
        if loader.soft_timeout_ms > 0 && loader.fail_safe_max_duration.is_zero() {
            // The soft timeout only ever answers with the stale copy fail-safe keeps: without
            // one it was accepted and never served anything.
            return Err(invalid(
                "loader.soft_timeout_ms",
                "serves the stale copy that fail-safe keeps, and loader.fail_safe_max_duration is 0 (off), so there is none; set fail_safe_max_duration (seconds), or remove soft_timeout_ms (hard_timeout_ms bounds the wait without a stale copy)",
            ));
        }
        if loader.soft_timeout_ms > 0
            && loader.hard_timeout_ms > 0
            && loader.soft_timeout_ms >= loader.hard_timeout_ms
        {
            return Err(invalid(
                "loader.soft_timeout_ms",
                "must be below loader.hard_timeout_ms (the soft timeout serves a stale value before the hard one gives up)",
            ));
        }
        Ok(())
    }
}
