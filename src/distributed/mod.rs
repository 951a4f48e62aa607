//! The distributed (L2) levels: [`RedisStore`] (standalone or Cluster) and [`MemcachedStore`]
//! (one or more hosts), plus what the manager wraps them with: a [`CircuitBreaker`] and the
//! [`Guarded`] storage wrapper.
//!
//! Every L2 value is stored inside a small [`envelope`] that carries its absolute expiry, so a
//! reader knows the remaining TTL even where the server cannot say.
//!
//! | module     | job                                                                      |
//! |------------|--------------------------------------------------------------------------|
//! | `envelope` | the 12-byte header in front of every L2 value                            |
//! | `breaker`  | closed → open → half-open circuit breaker on atomics                      |
//! | `guarded`  | a level wrapper that consults a breaker; async calls go to the level's async calls |
//! | `nodes`    | a breaker per node of a multi-node level (Memcached host, Cluster primary) |
//! | `runtime`  | the internal I/O thread (shareable): deadlines, blocking and async entry points |
//! | `deadline` | the deadlines of calls polled in the caller's task, swept on the I/O thread |
//! | `resolve`  | host name lookups for blocking connects, bounded by the call's deadline   |
//! | `doubt_ledger` | the writes in doubt both network levels keep: keys, probes, values, counts |
//! | `redis`    | Redis standalone and Cluster on the `redis` crate (a folder of modules)  |
//! | `memcached`| Memcached over its binary protocol, with our own sharding and key mapping |
//!
//! # Deadlines
//! Every call has an explicit deadline (the `timeout` option, 100 ms by default) that wraps the
//! client library's own retries and reconnects; a call that misses it returns
//! [`Error::Timeout`]. One exception: a blocking call to a standalone Redis without TLS runs on
//! a pooled connection of the caller's thread, whose socket timeout bounds each read and write,
//! not their sum; a reply that stalls mid-way more than once can take a multiple of `timeout`
//! (the `redis` crate's blocking connection gives no hook between its reads). A blocking call
//! that must connect looks its host's name up within its deadline too (`resolve`): the system
//! resolver has none of its own, and waited seconds when the name server was gone. Server and
//! connection failures are
//! [`Error::Backend`]. Construction checks the connection (and the
//! credentials) once, within `connect_timeout`, and names the host in its error.
//!
//! # Threads
//! Each store runs on an I/O thread (`uno-cache-redis` / `uno-cache-memcached`) running a
//! current-thread tokio runtime: its own, or (Redis) one shared with the backplane and tags.
//! Redis's async calls are polled in the caller's task within that runtime's context;
//! Memcached's await a oneshot from its thread. Redis's blocking API uses a pool of connections
//! on the caller's thread (a standalone server) or waits on the I/O thread (Cluster, TLS);
//! Memcached's blocking API runs on the caller's thread, on connections of its own, with socket
//! timeouts cut to what is left of the deadline. Both work without a runtime and do not panic
//! inside one; the async API never blocks the executor. Dropping the last user of an I/O thread
//! stops and joins it.

mod breaker;
pub mod envelope;
mod guarded;
#[cfg(feature = "memcached")]
mod memcached;
#[cfg(feature = "memcached")]
pub(crate) use self::memcached::replies as memcached_replies;
// The per-node breakers are shown in stats in every build; they are driven by the network
// levels, each using its part.
#[cfg(any(feature = "redis", feature = "memcached"))]
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
mod deadline;
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) mod doubt_ledger;
#[cfg_attr(not(all(feature = "redis", feature = "memcached")), allow(dead_code))]
mod nodes;
#[cfg(feature = "redis")]
pub(crate) mod redis;
#[cfg(feature = "redis")]
pub(crate) use self::redis::replies as redis_replies;
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) mod resolve;
#[cfg(any(feature = "redis", feature = "memcached"))]
// Memcached uses the thread and its blocking and async entry points only; tasks and sharing the
// thread serve Redis.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(crate) mod runtime;

use std::time::Duration;
#[cfg(any(feature = "redis", feature = "memcached"))]
use std::time::{SystemTime, UNIX_EPOCH};

pub use self::breaker::{BreakerState, BreakerStats, CircuitBreaker};
pub use self::guarded::Guarded;
#[cfg(feature = "memcached")]
pub use self::memcached::{
    map_key as map_memcached_key, MemcachedOptions, MemcachedStore, DEFAULT_MAX_ITEM_SIZE, MAX_MEMCACHED_KEY,
};
pub use self::nodes::{Node, NodeBreakers, NodeStats};
#[cfg(feature = "redis")]
pub use self::redis::{RedisOptions, RedisStore};

#[cfg(any(feature = "redis", feature = "memcached"))]
use crate::error::{key_for_error, Error, KeyProblem, Result};
#[cfg(any(feature = "redis", feature = "memcached"))]
use crate::storage::Entry;

/// The default per-call deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
/// The default deadline for connecting (and checking credentials) at construction.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The default deadline for whole-level calls that walk every key (`size`, `clear`).
pub const DEFAULT_ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Refuses the empty key (every other key is accepted; each level maps what its server cannot
/// take).
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn check_key(key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidKey {
            key: String::new(),
            problem: KeyProblem::Empty,
        });
    }
    Ok(())
}

/// The deadlines and default TTL that the options of both network levels carry, gathered to
/// be checked by one rule ([`check`](Self::check)).
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) struct LevelDurations {
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) admin_timeout: Duration,
    pub(crate) default_ttl: Option<Duration>,
}

#[cfg(any(feature = "redis", feature = "memcached"))]
impl LevelDurations {
    /// Refuses a zero deadline or a zero default TTL in the options type `options`
    /// (`RedisOptions`) of the level whose configuration section is `level` (`redis`).
    ///
    /// A zero deadline is named by the builder call that set it (`RedisOptions::connect_timeout`):
    /// no configuration key can set one to zero (`distributed.timeout_ms = 0` is refused before,
    /// and the others are not keys), so only a caller of the builder meets this error, and a
    /// key-like name sent them looking for a key that does not exist.
    pub(crate) fn check(&self, options: &str, level: &str) -> Result<()> {
        let timeouts = [
            ("timeout", self.timeout),
            ("connect_timeout", self.connect_timeout),
            ("admin_timeout", self.admin_timeout),
        ];
        if let Some((method, _)) = timeouts.iter().find(|(_, timeout)| timeout.is_zero()) {
            return Err(Error::Config {
                field: format!("{options}::{method}"),
                reason: "must be above zero (a deadline of zero fails every call it bounds); leave it \
                         unset for the default"
                    .to_owned(),
            });
        }
        if self.default_ttl.is_some_and(|ttl| ttl.is_zero()) {
            return Err(Error::Config {
                field: format!("{level}.default_ttl"),
                reason: "a default TTL of zero would expire every entry at once; use None for no expiry"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// A TTL rounded up to whole milliseconds (at least 1).
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn ceil_ms(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000).max(1);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// The TTL a `set` uses: `Some(0)` is refused, `None` falls back to the level's default.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn effective_ttl(
    key: &str,
    ttl: Option<Duration>,
    default: Option<Duration>,
) -> Result<Option<Duration>> {
    match ttl {
        Some(ttl) if ttl.is_zero() => Err(Error::ZeroTtl {
            key: key_for_error(key),
        }),
        Some(ttl) => Ok(Some(ttl)),
        None => Ok(default),
    }
}

/// Turns an enveloped value into an entry; `None` if it has expired by `now_ms`.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn open_envelope(
    level: &'static str,
    key: &str,
    bytes: Vec<u8>,
    now_ms: u64,
) -> Result<Option<Entry>> {
    let (value, expires_at_ms) = envelope::decode_owned(bytes).map_err(|err| Error::InvalidEnvelope {
        level,
        key: key_for_error(key),
        reason: err.to_string(),
    })?;
    match expires_at_ms {
        Some(at) if at <= now_ms => Ok(None),
        Some(at) => Ok(Some(Entry {
            value,
            expires_at: UNIX_EPOCH.checked_add(Duration::from_millis(at)),
        })),
        None => Ok(Some(Entry {
            value,
            expires_at: None::<SystemTime>,
        })),
    }
}

/// The most bytes of a server's own text (an error's, a version's) kept in an error message or
/// a log line: servers' texts are a few words, and a server out of step, or hostile, can send
/// megabytes that must not be copied into every error and log line.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) const MAX_SERVER_TEXT: usize = 256;

/// A server's text as it goes into an error message or a log line: at most [`MAX_SERVER_TEXT`]
/// bytes of it, a longer one cut and its length said.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn server_text(text: &[u8]) -> String {
    let Some(head) = text
        .get(..MAX_SERVER_TEXT)
        .filter(|_| text.len() > MAX_SERVER_TEXT)
    else {
        return String::from_utf8_lossy(text).into_owned();
    };
    // A character the cut split in two is left out, not shown as a replacement character.
    let head = match std::str::from_utf8(head) {
        Err(e) if e.error_len().is_none() => head.get(..e.valid_up_to()).unwrap_or(head),
        _ => head,
    };
    format!(
        "{}... ({} bytes in all)",
        String::from_utf8_lossy(head),
        text.len()
    )
}

/// Hides the password in a URL-ish host string for error messages and logs, even when the
/// string does not parse as a URL.
#[cfg(any(feature = "redis", feature = "memcached"))]
pub(crate) fn redact(host: &str) -> String {
    if let Ok(mut url) = url::Url::parse(host) {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        // A unix socket URL carries its password in the query (`?pass=`).
        if url.query_pairs().any(|(k, _)| k == "pass") {
            let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
            url.query_pairs_mut().clear().extend_pairs(
                pairs
                    .iter()
                    .map(|(k, v)| (k.as_str(), if k == "pass" { "***" } else { v.as_str() })),
            );
        }
        return url.to_string();
    }
    // Not a URL.
    crate::error::redact_host(host)
}

#[cfg(all(test, any(feature = "redis", feature = "memcached")))]
mod tests {
    use super::*;

    #[test]
    fn ceil_ms_rounds_sub_millisecond_parts_up() {
        assert_eq!(ceil_ms(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_ms(Duration::from_micros(1_500)), 2);
        assert_eq!(ceil_ms(Duration::from_millis(250)), 250);
        assert_eq!(ceil_ms(Duration::MAX), u64::MAX);
    }

    #[test]
    fn expired_envelopes_read_as_misses() {
        let bytes = envelope::encode(b"v", Some(1_000));
        assert_eq!(open_envelope("t", "k", bytes.clone(), 1_000).unwrap(), None);
        let entry = open_envelope("t", "k", bytes, 999).unwrap().unwrap();
        assert_eq!(entry.value, b"v");
        assert_eq!(entry.expires_at, Some(UNIX_EPOCH + Duration::from_millis(1_000)));
    }

    #[test]
    fn foreign_values_are_a_typed_error_naming_the_key() {
        let err = open_envelope("redis", "user:1", b"plain text".to_vec(), 0).unwrap_err();
        assert!(matches!(err, Error::InvalidEnvelope { level: "redis", ref key, .. } if key == "user:1"));
    }

    #[test]
    fn a_long_server_text_is_cut_and_says_its_length() {
        assert_eq!(server_text(b"ERR unknown command"), "ERR unknown command");
        let exact = "x".repeat(MAX_SERVER_TEXT);
        assert_eq!(server_text(exact.as_bytes()), exact);
        let long = "y".repeat(1 << 20);
        let cut = server_text(long.as_bytes());
        assert_eq!(
            cut,
            format!("{}... (1048576 bytes in all)", &long[..MAX_SERVER_TEXT])
        );
        // A two-byte character across the cut is left out whole.
        let split = format!("{}é{}", "z".repeat(MAX_SERVER_TEXT - 1), "z".repeat(10));
        assert_eq!(
            server_text(split.as_bytes()),
            format!(
                "{}... ({} bytes in all)",
                "z".repeat(MAX_SERVER_TEXT - 1),
                split.len()
            )
        );
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(redact("redis://user:s3cret@h:1/"), "redis://user:***@h:1/");
        assert_eq!(redact("h:6379"), "h:6379");
        assert_eq!(redact("redis://:s3cret@:1"), "redis://:***@:1");
        assert_eq!(redact("redis://u:s3c@ret@/x"), "redis://u:***@/x");
        assert_eq!(
            redact("unix:///run/r.sock?db=2&pass=s3cret"),
            "unix:///run/r.sock?db=2&pass=***"
        );
        // Not a URL (a bad port): the query's password is hidden all the same.
        assert_eq!(
            redact("unix://h:x/r.sock?db=1&pass=s3cret"),
            "unix://h:x/r.sock?db=1&pass=***"
        );
    }
}
