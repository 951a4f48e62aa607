//! `[offline]`, `[consistency]` and `[invalidation]`: writes that could not reach L2, how far
//! L1 entries that may be stale are trusted, and the backplane between instances.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::local::LocalKind;
use super::{invalid, CacheConfig, DistributedKind};
use crate::error::Result;
use crate::replay::{DEFAULT_MAX_BYTES, DEFAULT_MAX_ENTRIES};

/// The offline mode (`[offline]`): writes and deletes that could not reach L2.
///
/// With `fallback_on_error = true`, a `set` or `delete` whose L2 call failed (or was skipped by
/// the open circuit breaker) is queued in a durable [replay queue](crate::replay) and replayed in
/// order (deletes first, a later delete winning over an earlier set of the same key) when L2
/// answers again: on a background tick every `replay_interval_ms`, and at once after an L2 call
/// succeeds. While a key has a queued op, L2 is older than it: a read never backfills it from
/// L2, a read that misses L1 does not return L2's (stale) value, and a suspect L1 entry of the
/// key is settled by the op (its value served, or a miss for a delete), not served as it is.
///
/// **When the queue is full** (`replay_max_bytes` or `replay_max_entries`): a set that does not
/// fit is queued as a delete of its key (L2 loses the key rather than keeping a stale value); a
/// delete replaces its key's pending op and always fits; when even a new key's delete does not
/// fit, the op is lost and the queue is marked **overflowed** (durably, in the stats as
/// `consistency.replay_overflowed`): L2 may then hold stale values until an operator reconciles
/// it and calls [`CacheManager::clear_replay_overflow`](crate::CacheManager::clear_replay_overflow).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OfflineConfig {
    /// Queue and replay L2 writes that failed (default true; needs a directory, see
    /// `replay_dir`, and `fallback_on_error = true`). Off, a run still drains what an earlier
    /// run left queued in the directory (a write of such a key waits behind its op), so that a
    /// later run does not replay those ops over newer values.
    pub replay: bool,
    /// Where the queue's files live (`replay.log`, `replay.lock`). Default: the L1 directory
    /// (`local.path`) for `type = "file"` and `"redb"`; with `type = "memory"` or an L1 given to
    /// the builder there is no queue unless this is set.
    pub replay_dir: Option<PathBuf>,
    /// Bound on the queued bytes (default [`DEFAULT_MAX_BYTES`](crate::replay::DEFAULT_MAX_BYTES)).
    pub replay_max_bytes: u64,
    /// Bound on the queued keys (default [`DEFAULT_MAX_ENTRIES`](crate::replay::DEFAULT_MAX_ENTRIES)).
    pub replay_max_entries: usize,
    /// How often a background thread tries to replay a non-empty queue, in milliseconds
    /// (default 1000). An open breaker skips the attempt until its cool-down has passed.
    pub replay_interval_ms: u64,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        OfflineConfig {
            replay: true,
            replay_dir: None,
            replay_max_bytes: DEFAULT_MAX_BYTES,
            replay_max_entries: DEFAULT_MAX_ENTRIES,
            replay_interval_ms: 1000,
        }
    }
}

/// What to do with an L1 entry that may be stale (`consistency.restart_policy`): one restored
/// from disk at start-up, or one written before the invalidation backplane lost its
/// subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RestartPolicy {
    /// On its first read, compare it with L2 (default): same bytes → trusted and served; other
    /// bytes → replaced by L2's; missing in L2 → dropped (a miss). While L2 cannot be reached it
    /// is served as is (offline mode). An entry of a key with a queued replay op is compared
    /// with the op instead, whatever the policy (L2 is older than it): a set's value is served
    /// (and put in L1), a delete is a miss.
    #[default]
    Revalidate,
    /// Serve entries restored at start-up without asking L2. Entries made suspect by a lost
    /// backplane subscription are still revalidated (and, from then on, restored ones too).
    /// Keys with a queued replay op are settled by their ops in L1 when the manager is built.
    Trust,
    /// Drop a suspect entry on its first read and read L2 as on a miss; while L2 is down it is a
    /// miss (nothing possibly stale is served).
    Drop,
}

/// How a restarted instance treats the L1 entries that may have missed invalidations while it
/// was down (`[consistency]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsistencyConfig {
    /// `"revalidate"` (default), `"trust"` or `"drop"`; see [`RestartPolicy`]. Applies only with
    /// an L2 (without one there is nothing to compare with, and entries are served).
    pub restart_policy: RestartPolicy,
}

/// The invalidation backplane (`[invalidation]`): Redis pub/sub between instances that share an
/// L2. Every set and delete publishes the key; every other instance drops it from its L1.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InvalidationConfig {
    /// Whether to connect the backplane (default false). In TOML, an `[invalidation]` table with
    /// any setting must say it, either way.
    pub enabled: bool,
    /// The backplane's Redis (`host:port`, or Cluster seed nodes). Default: the L2's hosts when
    /// the L2 is Redis (with its cluster flag and credentials); required when L2 is Memcached.
    pub hosts: Vec<String>,
    /// Redis Cluster mode for `hosts` (default false). With `hosts` empty the L2's applies:
    /// `true` is refused unless `distributed.cluster` is `true` too.
    pub cluster: bool,
    /// User name for `hosts`. With `hosts` empty the L2's applies: a value other than
    /// `distributed.username` is refused.
    pub username: Option<String>,
    /// Password for `hosts` (never printed by `Debug`). With `hosts` empty the L2's applies: a
    /// value other than `distributed.password` is refused.
    pub password: Option<String>,
    /// The pub/sub channel (default `uno-cache:invalidate`). Instances that share an L2 must
    /// share it; applications that share a server under different `distributed.key_prefix`
    /// should each have their own: messages name keys without the prefix, so on one channel
    /// each would drop the other's same-named keys from L1 and turn its writes of them still
    /// on their way to L2 into deletes (misses, never stale values).
    pub channel: String,
    /// The longest a dead subscription goes unnoticed, in milliseconds (default 1000, at least
    /// 30). Until it is restored, every L1 hit is checked against L2.
    pub staleness_bound_ms: u64,
    /// Deadline of one publish, in milliseconds (default 100).
    pub publish_timeout_ms: u64,
}

impl Default for InvalidationConfig {
    fn default() -> Self {
        InvalidationConfig {
            enabled: false,
            hosts: Vec::new(),
            cluster: false,
            username: None,
            password: None,
            channel: crate::invalidation::DEFAULT_CHANNEL.to_owned(),
            staleness_bound_ms: 1000,
            publish_timeout_ms: 100,
        }
    }
}

impl std::fmt::Debug for InvalidationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InvalidationConfig")
            .field("enabled", &self.enabled)
            .field("hosts", &super::redacted_hosts(&self.hosts))
            .field("cluster", &self.cluster)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("channel", &self.channel)
            .field("staleness_bound_ms", &self.staleness_bound_ms)
            .field("publish_timeout_ms", &self.publish_timeout_ms)
            .finish()
    }
}

impl CacheConfig {
    pub(super) fn validate_consistency(&self) -> Result<()> {
        let offline = &self.offline;
        super::local::check_path("offline.replay_dir", offline.replay_dir.as_deref())?;
        if offline.replay_interval_ms == 0 {
            return Err(invalid("offline.replay_interval_ms", "must be at least 1"));
        }
        if offline.replay_max_entries == 0 {
            return Err(invalid("offline.replay_max_entries", "must be at least 1"));
        }
        if !(4124..=u64::from(u32::MAX)).contains(&offline.replay_max_bytes) {
            return Err(invalid(
                "offline.replay_max_bytes",
                "must be between 4124 (one delete of the longest key) and 4294967295",
            ));
        }
        let inv = &self.invalidation;
        if !inv.enabled {
            return Ok(());
        }
        if inv.hosts.is_empty()
            && !(self.distributed.enabled && self.distributed.kind == DistributedKind::Redis)
        {
            return Err(invalid(
                "invalidation.hosts",
                "needed unless the L2 is an enabled Redis (its hosts are the default)",
            ));
        }
        let d = &self.distributed;
        if inv.hosts.is_empty() {
            // These describe hosts of the backplane's own; on the L2's hosts the L2's settings
            // apply, so a value other than the L2's would be silently unused.
            let own = [
                (
                    "invalidation.username",
                    inv.username.is_some() && inv.username != d.username,
                ),
                (
                    "invalidation.password",
                    inv.password.is_some() && inv.password != d.password,
                ),
                ("invalidation.cluster", inv.cluster && !d.cluster),
            ];
            if let Some((field, _)) = own.iter().find(|(_, unused)| *unused) {
                return Err(invalid(
                    field,
                    "differs from the L2's, and applies only to invalidation.hosts, which is not set (the backplane uses the L2's hosts and settings); set invalidation.hosts, or remove it",
                ));
            }
        } else if inv.username.is_some()
            && inv.password.is_none()
            && !inv.hosts.iter().any(|h| super::carries_password(h))
        {
            return Err(invalid(
                "invalidation.username",
                "a user name without a password is not used to log in (the connection would be the default user's); set invalidation.password too, or remove it",
            ));
        }
        if let Some(i) = inv.hosts.iter().position(|h| h.trim().is_empty()) {
            return Err(invalid(&format!("invalidation.hosts[{i}]"), "is empty"));
        }
        if inv.channel.is_empty() {
            return Err(invalid("invalidation.channel", "must not be empty"));
        }
        if inv.staleness_bound_ms < 30 {
            return Err(invalid("invalidation.staleness_bound_ms", "must be at least 30"));
        }
        if inv.publish_timeout_ms == 0 {
            return Err(invalid("invalidation.publish_timeout_ms", "must be at least 1"));
        }
        Ok(())
    }
}

/// `replay = true` written out in `[offline]` where no queue can be kept: a memory L1 without
/// `replay_dir` has no directory for it. Left at its default, replay is simply off there (the
/// README says so); written out, it says the user counts on failed L2 writes being replayed,
/// and an outage would instead leave L2 with older values, silently. A configuration built in
/// code cannot tell the two apart, and keeps the default's behaviour.
pub(super) fn check_replay_stated(written: &toml::Table, config: &CacheConfig) -> Result<()> {
    let stated = written
        .get("offline")
        .and_then(|offline| offline.get("replay"))
        .and_then(toml::Value::as_bool)
        == Some(true);
    let queues = config.use_multi_level && config.distributed.enabled && config.fallback_on_error;
    if stated && queues && config.local.kind == LocalKind::Memory && config.offline.replay_dir.is_none() {
        return Err(invalid(
            "offline.replay",
            "true, but a memory L1 has no directory to keep the replay queue in, so L2 writes that \
             fail would not be replayed: give offline.replay_dir (a directory on local disk), use \
             a file or redb L1, or write replay = false",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(local: &str, offline: &str, top: &str) -> Result<CacheConfig> {
        CacheConfig::from_toml_str(&format!(
            "{top}\n[local]\n{local}\n[distributed]\nenabled = true\nhosts = [\"127.0.0.1:6379\"]\n[offline]\n{offline}\n"
        ))
    }

    /// Written out for a memory L1 with nowhere to keep the queue, `replay = true` is refused
    /// naming the field and the ways out; left at its default, or with somewhere to keep the
    /// queue, or where no failure is ever queued, it is taken.
    #[test]
    fn replay_written_out_for_a_memory_l1_without_a_directory_is_refused() {
        let memory = "type = \"memory\"";
        let err = config(memory, "replay = true", "").unwrap_err();
        assert!(
            matches!(&err, crate::Error::Config { field, reason }
                if field == "offline.replay" && reason.contains("give offline.replay_dir")),
            "{err}"
        );
        assert!(config(memory, "", "").is_ok(), "the default");
        assert!(config(memory, "replay = false", "").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let with_dir = format!("replay = true\nreplay_dir = {:?}", dir.path());
        assert!(config(memory, &with_dir, "").is_ok());
        let file = format!("type = \"file\"\npath = {:?}", dir.path());
        assert!(config(&file, "replay = true", "").is_ok());
        assert!(
            config(memory, "replay = true", "fallback_on_error = false").is_ok(),
            "no failure is queued: each fails its call"
        );
    }
}
