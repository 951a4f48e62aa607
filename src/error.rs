//! Errors: one enum for the crate, each variant naming the key, file or field at fault.

use std::io;
use std::path::PathBuf;

mod partial_batch;

pub use partial_batch::{PartialBatch, Served};

/// The result type of every fallible uno-cache call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyProblem {
    /// The key is the empty string.
    Empty,
    /// The key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN) bytes.
    TooLong {
        /// Length of the refused key in bytes.
        len: usize,
        /// The largest accepted length in bytes.
        max: usize,
    },
    /// The key starts with a namespace the level keeps for its own keys (the Redis tag sets).
    Reserved {
        /// The namespace the key starts with.
        namespace: &'static str,
    },
}

impl std::fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyProblem::Empty => f.write_str("the key is empty; use a non-empty key"),
            KeyProblem::TooLong { len, max } => {
                write!(
                    f,
                    "the key is {len} bytes, over the limit of {max} bytes; hash or shorten it"
                )
            }
            KeyProblem::Reserved { namespace } => write!(
                f,
                "the key starts with `{namespace}`, which the Redis level keeps for tag sets; \
                 use a key that does not"
            ),
        }
    }
}

/// Everything that can go wrong in uno-cache.
///
/// Errors never carry values, only keys (shortened to 64 characters), paths and sizes, so they
/// are safe to log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A key was refused; nothing was changed.
    #[error("invalid key {key:?}: {problem}")]
    InvalidKey {
        /// The key (shortened).
        key: String,
        /// What is wrong with it.
        problem: KeyProblem,
    },

    /// A value does not fit the store. Refused before it was written or sent (by every store,
    /// and by the Memcached level's own check against `max_item_size`), nothing was changed.
    /// Refused by a Memcached server itself (its `-I` is below the level's `max_item_size`), the
    /// value was sent, and the server removed the key's previous value there as well (memcached
    /// unlinks it on a failed set): the key reads as a miss on that server, never as an older
    /// value.
    #[error("value for key {key:?} is {len} bytes, over the limit{} for {store}; store it elsewhere or raise the limit", limit_text(*.max))]
    ValueTooLarge {
        /// The key (shortened).
        key: String,
        /// Size of the refused value in bytes.
        len: usize,
        /// The largest value the store accepts for this key, in bytes; 0 where it is unknown
        /// (a Memcached server refused the value, and the level does not know that server's
        /// item limit: it did not answer at connect, or has been restarted with a smaller one).
        max: usize,
        /// Which store or limit refused it (for example "a 64 MiB file-store segment").
        store: String,
    },

    /// A TTL of zero was given; it would expire before it could be read. Use `None` for "no TTL".
    #[error("zero TTL for key {key:?}: a TTL must be at least 1 ms; pass None for no expiry or delete the key instead")]
    ZeroTtl {
        /// The key (shortened).
        key: String,
    },

    /// The directory holds files but no uno-cache metadata (no metadata file, or one whose magic
    /// bytes are not uno-cache's): it belongs to something else.
    #[error("{path} is not an uno-cache directory: it is not empty, and its {meta} file is missing or does not start with uno-cache's magic bytes; choose an empty or new directory")]
    NotOurDirectory {
        /// The directory.
        path: PathBuf,
        /// The metadata file name that was looked for.
        meta: &'static str,
    },

    /// A file was written by a newer (or unknown) format version of uno-cache.
    #[error("{path} has storage format version {found}, but this build reads version {supported}; open it with a newer uno-cache or use another directory")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u16,
        /// The version this build understands.
        supported: u16,
    },

    /// The directory metadata is unreadable.
    #[error("{path} is damaged ({reason}); restore it from a backup or delete the directory to start an empty cache")]
    CorruptMetadata {
        /// The metadata file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },

    /// Another store (in this or another process) holds the directory.
    #[error("{path} is already open by another uno-cache store (lock file {lock}); close it first or use another directory")]
    Locked {
        /// The directory.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },

    /// An I/O call failed. The message ends with what to do where the error's kind says it (a
    /// permission, a full disk, a read-only mount, a directory where a file should be, too many
    /// open files).
    #[error("{op} {path}: {source}{}", io_advice(op, source))]
    Io {
        /// What was being done ("write segment", "open", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// A file naming the keys of a segment lost to damage (its hint, or the `.lost` file kept
    /// from it) exists but could not be read. Opening without those keys could serve values
    /// they hide (deleted or overwritten ones), so the file store refuses to open. The file and
    /// its segment are left as they were, so the next open tries again; what the open had
    /// already done stands (other damaged segments moved aside with their keys kept, files that
    /// hid nothing removed), each step complete, as the next open would do it too. (A hint read
    /// whole that cannot be renamed to `.lost` no longer refuses the open: its keys are held as
    /// deleted for the run, and the next open tries the rename again.)
    #[error("{path} names the keys of a segment lost to damage and could not be {op}: {source}{}. Opening without them could serve deleted or overwritten values of those keys, so the store does not open: fix the cause and reopen, or delete the file to open without it (older versions of its keys may then be read again)", io_advice(op, source))]
    LostKeysUnreadable {
        /// What failed: "read" (builds before held a hint they could not rename as this error
        /// too, with "renamed to" and the `.lost` file it was to become).
        op: String,
        /// The file.
        path: PathBuf,
        /// The operating-system error.
        #[source]
        source: io::Error,
    },

    /// An earlier write or fsync failed; the store refuses writes until it is reopened, because
    /// retrying an fsync can silently lose data. Reads still work. A replay queue's log is
    /// written anew instead, from what the queue holds in memory, once the device takes it
    /// (`ReplayQueue::recover`, which a manager runs by itself).
    #[error("writes to {path} are disabled after an earlier failure ({cause}); reads still work; fix the cause (disk full? I/O error?) and reopen the store (a replay queue's log is written anew by itself once the device takes it)")]
    WritesDisabled {
        /// The store directory.
        path: PathBuf,
        /// The first failure.
        cause: String,
    },

    /// The device has no room for a write. The file store evicts every entry it can before it
    /// says so; the redb store says so at once (its file does not shrink when entries go, so
    /// evicting frees nothing on the device). Nothing was written, and writes work again once
    /// space returns (the redb store reopens its database by itself for that).
    #[error("no space left in {path} to {op}{}; free space on that device, or lower the bound of what fills it (local.max_size for a store, offline.replay_max_bytes for the replay queue)", needed_text(*.needed))]
    DiskFull {
        /// The store directory.
        path: PathBuf,
        /// What needed the space ("create segment", "write segment", "commit", ...).
        op: &'static str,
        /// Bytes the operation needed; 0 where the store cannot tell (a redb commit that
        /// only deletes).
        needed: u64,
    },

    /// A configuration value is invalid.
    #[error("invalid configuration: {field}: {reason}")]
    Config {
        /// The field at fault, in the configuration's own naming (for example `local.max_size`);
        /// for an option no configuration key sets, the builder call that set it (for example
        /// `RedisOptions::connect_timeout`).
        field: String,
        /// What is wrong and what is accepted.
        reason: String,
    },

    /// The configuration asks for something this build of uno-cache was compiled without (an
    /// L2, the backplane, a redb L1): enable the Cargo feature it names. Never a silent
    /// fallback to less than the configuration says.
    #[error("{field}: {what} needs the `{feature}` feature, which this build of uno-cache was compiled without; enable it (features = [\"{feature}\"] on the uno-cache dependency; for the uno-cache command-line tool, build it with --features cli,{feature}) or change {field}")]
    FeatureDisabled {
        /// The field at fault (for example `distributed.type`).
        field: String,
        /// What the configuration asked for (for example `a Redis L2`).
        what: String,
        /// The Cargo feature that provides it (`redis`, `memcached`, `redb`).
        feature: &'static str,
    },

    /// A call to a distributed level did not finish within its deadline, which covers the client
    /// library's own retries and reconnects; whether the command reached the server is unknown.
    #[error("{level} {op} timed out after {after:?} waiting for {server}; the server is slow or unreachable (the deadline is the level's `timeout` option, or its `admin_timeout` for size and clear)")]
    Timeout {
        /// The level ("redis", "memcached", ...).
        level: &'static str,
        /// The operation ("get", "set_many", "connect", ...).
        op: &'static str,
        /// The server or servers asked, as configured (`host:port`, several joined by `, `).
        server: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },

    /// The loader of [`get_or_load`](crate::CacheManager::get_or_load) did not answer within
    /// `loader.hard_timeout_ms` and no stale value was kept for the key. The load goes on in the
    /// background and stores its value if it finishes.
    #[error("loading key {key:?} timed out after {after:?} with no stale value to serve; the data source is slow or down (the limit is `loader.hard_timeout_ms`; `loader.fail_safe_max_duration` keeps stale values to serve instead)")]
    LoaderTimeout {
        /// The key being loaded (cut to a readable length).
        key: String,
        /// The limit that passed.
        after: std::time::Duration,
    },

    /// A distributed level's server or client failed (connection refused, wrong password, server
    /// error reply, ...).
    #[error("{level} {op} failed: {reason}")]
    Backend {
        /// The level ("redis", "memcached", ...).
        level: &'static str,
        /// The operation ("get", "set_many", "connect", ...).
        op: &'static str,
        /// What went wrong, naming the host where known, and what to do.
        reason: String,
    },

    /// A walk of a distributed level's keys under its prefix (`size`, `clear`, a prefix
    /// invalidation) ended without having seen every key: on a Redis Cluster, hash slots moved
    /// between primaries while it ran (a resharding, a failover), or are served by a node that
    /// the cluster map it read did not name. The keys it found were handled (counted, deleted),
    /// and the level answered every request, so no circuit breaker counts it (a resharding can
    /// last hours; the reads and writes of single keys are served meanwhile). `reason` names
    /// the slots; retry once the cluster agrees where its slots are.
    #[error("{level} {op} did not see every key: {reason}")]
    WalkIncomplete {
        /// The level ("redis").
        level: &'static str,
        /// The operation ("size", "clear", "invalidate_prefix").
        op: &'static str,
        /// Which slots, why, and when to retry.
        reason: String,
    },

    /// A distributed level answered, and its answer says the configuration is wrong: the
    /// credentials were refused (`WRONGPASS`, `NOAUTH`) or the user's ACL refuses a command or
    /// key (`NOPERM`), the server is a read-only replica (`READONLY`), a command the level uses
    /// was renamed away
    /// (`rename-command`), it runs in protected mode, the database does not exist,
    /// the server's TLS certificate is not trusted, the host name does not resolve, the host
    /// answers in another protocol (a Memcached where a Redis was configured, or the reverse; a
    /// memcached speaking only its text protocol), or a cluster
    /// setting does not match the server. Unlike an outage, waiting cannot fix it: at start-up the
    /// manager refuses to start with it (see `distributed.start_degraded_on_config_error`); later
    /// (a rotated password) it is logged once, counted in `stats().distributed.config_errors` and
    /// shown as `last_error`.
    #[error("{level} at {hosts} refuses this configuration: {reason}")]
    Misconfigured {
        /// The level ("redis", "memcached", "backplane", ...).
        level: &'static str,
        /// The host or hosts (`host:port`, never a password).
        hosts: String,
        /// What the server said and what to fix.
        reason: String,
        /// The refusal concerns this call's command or keys only (a command renamed away, an
        /// ACL refusing a command or key): other calls are served, so no circuit breaker counts
        /// it. False when it concerns the connection (credentials, database, TLS, a replica).
        call_only: bool,
    },

    /// A distributed level that could not be reached at start-up (or whose server refused the
    /// configuration, with `start_degraded_on_config_error`) is not connected yet: the manager
    /// started without it (`fallback_on_error`) and connects in the background, every
    /// `breaker_cooldown_ms`. The call was not sent: it is counted as a failure of the level (by
    /// its circuit breaker too), but not timed, since it says nothing of the server's latency.
    /// `cause` is why the last attempt to connect failed.
    #[error("{level} {op} was not sent: the level is not connected yet ({cause}); it retries the connection in the background, and is used once that succeeds")]
    NotConnected {
        /// The level ("redis", "memcached").
        level: &'static str,
        /// The operation ("get", "set_many", ...).
        op: &'static str,
        /// The last attempt's failure ([`Error::Misconfigured`] if the server refused the
        /// configuration, else an outage: [`Error::Backend`], [`Error::Timeout`]), shared by
        /// every call it fails.
        cause: std::sync::Arc<Error>,
    },

    /// A circuit breaker in front of a level is open after repeated failures; the call was not
    /// attempted. It is retried by a probe once the cool-down has passed.
    #[error("{level} is skipped: its circuit breaker is open after repeated failures (the errors that opened it say why; a manager keeps the last in stats().distributed.last_error); a probe retries it after the cool-down")]
    CircuitOpen {
        /// The level ("redis", "memcached", ...).
        level: &'static str,
    },

    /// One node of a multi-node level (a Redis Cluster primary, a Memcached host) failed, or its
    /// own circuit breaker is open; keys on the level's other nodes are still served. `cause`
    /// is the node's failure ([`Error::Timeout`], [`Error::Backend`]) or
    /// [`Error::CircuitOpen`] when the call was skipped without touching the network.
    #[error("{level} node {node} is unavailable ({cause}); keys on the other nodes are still served")]
    NodeUnavailable {
        /// The level ("redis", "memcached").
        level: &'static str,
        /// The node, as `host:port`.
        node: String,
        /// Why.
        cause: Box<Error>,
    },

    /// A batch call served some of its keys but not others: the keys at `failed` (indices into
    /// the batch) were not read, written or deleted, because their node of a multi-node level
    /// could not be reached, because a server refused the item as too large (listed in
    /// [`PartialBatch::refused`] as well), in a `get_many`, because their value could not be
    /// read ([`Error::InvalidEnvelope`]), in the `delete_many` of a level that deletes key
    /// by key (the file store), because a delete failed after others had succeeded, or, in a
    /// manager's batch read with `fallback_on_error = false`, because L1 failed to read that key
    /// (level `"L1"`, op `"get"`, the L1 error as `cause` when L2 failed no key; with an L2
    /// partial batch as well, L2's error is the one returned, its `failed` naming both); the
    /// others were. What the call did serve is in [`PartialBatch::served`].
    #[error("{0}")]
    PartialBatch(Box<PartialBatch>),

    /// A distributed level's server is up but out of memory for writes (Redis at `maxmemory`
    /// with the `noeviction` policy, its default): reads and deletes still work there. An
    /// outage of writes, so `fallback_on_error` hides it and the write waits in the replay
    /// queue (the server keeps the key's older value until then), but not of the server: the
    /// circuit breaker does not count it, so reads go on being served from L2.
    #[error("{level} {op} refused: the server is out of memory ({reason}); it still serves reads. For a cache, give it an eviction policy (maxmemory-policy allkeys-lru) or more memory")]
    ServerFull {
        /// The level ("redis", ...).
        level: &'static str,
        /// The operation.
        op: &'static str,
        /// What the server said.
        reason: String,
    },

    /// A distributed level's server, up and answering, would not store this item (Memcached out
    /// of memory under `-M`, where it refuses items rather than evicting). Like a value too large
    /// it is the item's error, not the level's: the circuit breaker does not count it, and it is
    /// not queued for a replay (see [`Error::is_bad_input`]).
    #[error("{level} refused the value for key {key:?}: {reason}")]
    ItemRefused {
        /// The level ("memcached", ...).
        level: &'static str,
        /// The key (shortened).
        key: String,
        /// What the server said, and what to do about it.
        reason: String,
    },

    /// Write-behind writes that will never reach L2, returned once by the first
    /// [`CacheManager::flush`](crate::CacheManager::flush) after they were lost: L2 refused them
    /// (they left L1 too), or they failed and no replay queue took them (none, or a full one).
    /// L2 keeps its older values of those keys; L1 and L2 were flushed all the same.
    #[error("{writes} write-behind write(s) will never reach L2 (first key {key:?}): {reason}; L2 keeps its older values of these keys until they expire or are written again")]
    WriteBehindLost {
        /// How many writes were lost since the last report.
        writes: u64,
        /// The key of the first one (shortened).
        key: String,
        /// Why, and what to do about it.
        reason: String,
    },

    /// [`CacheManager::invalidate_prefix`](crate::CacheManager::invalidate_prefix) on an L2 that
    /// cannot list its keys: Memcached, or a level given to the builder whose
    /// [`DistributedStorage::delete_prefix`](crate::DistributedStorage::delete_prefix) answers
    /// `None` (its default, and [`InProcess`](crate::InProcess)'s unless made with
    /// [`listing`](crate::InProcess::listing)). L1 was dropped here and, through the backplane,
    /// in every instance, but L2 keeps the values under the prefix until their TTL, and a read
    /// brings one back into L1. Not an outage: every call on such an L2 returns it; match it if
    /// that is acceptable, or, for a level of your own that can find its keys by prefix,
    /// implement `delete_prefix` and `delete_prefix_async`.
    #[error("{level} cannot list its keys: the values under prefix {prefix:?} stay in it until their TTL, and a read brings them back into L1 (the call dropped {dropped} key(s) from L1 here, and the other instances drop theirs); delete such keys by name or tag (multi_delete, invalidate_tag), or use a Redis L2; a level of your own lists them by implementing DistributedStorage::delete_prefix")]
    PrefixKeptInL2 {
        /// The L2: `memcached`, or `L2` for a level given to the builder that `[distributed]`
        /// does not describe.
        level: &'static str,
        /// The prefix (shortened).
        prefix: String,
        /// The keys the call dropped from L1 here.
        dropped: u64,
    },

    /// [`CacheManager::invalidate_prefix`](crate::CacheManager::invalidate_prefix) whose L1
    /// listed the keys under the prefix and then could not delete them all (a store latched
    /// read-only after a failed write: a file system gone read-only, a failing device), where
    /// the next start serves what L1 keeps without asking L2: there is no L2 (and L1 could not
    /// be cleared either), or `consistency.restart_policy = "trust"`. For the rest of this run
    /// no read serves those values (every L1 entry is suspect, checked against L2; without an
    /// L2, every L1 read misses until L1 can be cleared: for a latched store, until the process
    /// ends); but they are still on disk, and the next start serves them. Fix the cause
    /// (`cause` names the file), reopen the store, and call `invalidate_prefix` again. The
    /// other steps of the call ran (L2's deletes and the backplane's message included).
    #[error("L1 kept keys under prefix {prefix:?} ({cause}); the call dropped {dropped} key(s) from L1, and this run serves none of the rest, but the next start serves them without asking L2 (there is none, or restart_policy = \"trust\"): fix the cause, then call invalidate_prefix again")]
    PrefixKeptInL1 {
        /// The prefix (shortened).
        prefix: String,
        /// The keys the call dropped from L1 before the failure.
        dropped: u64,
        /// L1's failure.
        cause: Box<Error>,
    },

    /// A value read from a distributed level does not carry a valid uno-cache envelope (written
    /// by another program, by a newer uno-cache, or damaged). It is never returned as a value.
    #[error("value for key {key:?} in {level} has no valid uno-cache envelope ({reason}); delete the key or check which program writes it")]
    InvalidEnvelope {
        /// The level ("redis", "memcached", ...).
        level: &'static str,
        /// The key (shortened).
        key: String,
        /// What check failed.
        reason: String,
    },

    /// Bytes on the invalidation channel are not a valid backplane message (another program
    /// publishes there, a newer uno-cache, or damage). The backplane counts and ignores them.
    #[error("invalid invalidation message: {reason}")]
    InvalidMessage {
        /// Which check failed.
        #[source]
        reason: MessageError,
    },

    /// A value could not be encoded by the manager's codec; nothing was written.
    #[error("cannot encode the value for key {key:?} with the {codec} codec: {reason}; nothing was stored: change the value's type so that this codec can write it (JSON map keys must be strings), or choose another codec (`codec` in the configuration)")]
    Encode {
        /// The key (shortened).
        key: String,
        /// The codec's name ("bincode", "json").
        codec: &'static str,
        /// What the codec reported.
        reason: String,
    },

    /// Stored bytes carry this manager's codec tag but do not decode as the requested type (a
    /// different type was stored under the key, the bytes are damaged, or bincode cannot read
    /// the type at all; the reason says which).
    #[error("cannot decode the value for key {key:?} with the {codec} codec: {reason}")]
    Decode {
        /// The key (shortened).
        key: String,
        /// The codec's name.
        codec: &'static str,
        /// What the codec reported.
        reason: String,
    },

    /// The codec cannot decode a field of the type asked for: bincode and a field that asks the
    /// format what comes next (serde's `deserialize_any`: an untagged enum, `serde_json::Value`).
    /// Whether a read meets such a field can depend on the bytes (an `Option` of one is read
    /// only when `Some`). A loading call loads such a key anew, as for [`Error::Decode`], and
    /// does not store a loaded value that would not read back: it returns this error instead.
    #[error("the {codec} codec cannot decode the type read for key {key:?}: {reason}")]
    TypeNotDecodable {
        /// The key (shortened).
        key: String,
        /// The codec's name.
        codec: &'static str,
        /// Why, and what to do.
        reason: &'static str,
    },

    /// Stored bytes were written by another codec (or by a raw-bytes call) and are not decoded.
    #[error("value for key {key:?} was stored with {stored}, but this cache manager decodes {expected}; use the same codec everywhere or read it with get_raw")]
    CodecMismatch {
        /// The key (shortened).
        key: String,
        /// The codec the stored tag names ("json"), or "no codec (…)" for bytes whose first byte
        /// is no codec's tag (raw bytes, saying where such bytes come from).
        stored: String,
        /// This manager's codec.
        expected: &'static str,
    },

    /// The redb-backed level failed.
    #[error("redb store {path}: {op}: {reason}")]
    Redb {
        /// What was being done ("open", "commit", ...).
        op: &'static str,
        /// The database file.
        path: PathBuf,
        /// What redb reported.
        reason: String,
    },

    /// [`CacheManager::init_global`](crate::CacheManager::init_global) was called twice.
    #[error("the global cache manager is already initialised; call CacheManager::get_instance() instead of initialising it again")]
    GlobalAlreadyInitialized,

    /// [`CacheManager::get_instance`](crate::CacheManager::get_instance) was called before
    /// [`CacheManager::init_global`](crate::CacheManager::init_global).
    #[error(
        "the global cache manager is not initialised; call CacheManager::init_global(config) at start-up"
    )]
    GlobalNotInitialized,
}

impl Error {
    /// True for errors about the caller's input (a bad key, a zero TTL, a value too large for a
    /// level) and for an item a server that is up refused ([`Error::ItemRefused`]): retrying at
    /// once cannot help, and `fallback_on_error` does not hide them, since they are not an
    /// outage. Also true for an [`Error::PartialBatch`] whose cause is one (a Memcached server
    /// refused some items of a batch, and stored the others); other items of that batch may have
    /// failed for an outage, which [`PartialBatch::unreached`] lists.
    #[must_use]
    pub fn is_bad_input(&self) -> bool {
        match self {
            Error::InvalidKey { .. }
            | Error::ZeroTtl { .. }
            | Error::ValueTooLarge { .. }
            | Error::ItemRefused { .. } => true,
            Error::PartialBatch(partial) => partial.cause.is_bad_input(),
            _ => false,
        }
    }

    /// True for a call skipped by an open circuit breaker: the level's ([`Error::CircuitOpen`]),
    /// one node's ([`Error::NodeUnavailable`] with that cause), or a batch's whose first failure
    /// is such a skip. A skip is no failure of its own: the error that opened the breaker says why.
    #[must_use]
    pub fn is_breaker_skip(&self) -> bool {
        match self {
            Error::CircuitOpen { .. } => true,
            Error::NodeUnavailable { cause, .. } => cause.is_breaker_skip(),
            Error::PartialBatch(partial) => partial.cause.is_breaker_skip(),
            _ => false,
        }
    }

    /// True for [`Error::Misconfigured`] and [`Error::Config`]: the configuration is wrong, and
    /// retrying the call (or waiting for the server) cannot help. Also for one node's
    /// ([`Error::NodeUnavailable`] with that cause), a level's not connected yet because its
    /// server refused the configuration ([`Error::NotConnected`] with that cause), and a batch's
    /// whose first failure is one.
    #[must_use]
    pub fn is_misconfiguration(&self) -> bool {
        match self {
            Error::Misconfigured { .. } | Error::Config { .. } => true,
            Error::NodeUnavailable { cause, .. } => cause.is_misconfiguration(),
            Error::NotConnected { cause, .. } => cause.is_misconfiguration(),
            Error::PartialBatch(partial) => partial.cause.is_misconfiguration(),
            _ => false,
        }
    }

    /// True if this is an I/O error that says the device (or the user's quota) is full.
    pub(crate) fn is_no_space(&self) -> bool {
        matches!(self, Error::Io { source, .. } if is_no_space(source))
            || matches!(self, Error::DiskFull { .. })
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

/// ` of N bytes` for [`Error::ValueTooLarge`], nothing when the limit is unknown (0).
fn limit_text(max: usize) -> String {
    if max == 0 {
        String::new()
    } else {
        format!(" of {max} bytes")
    }
}

/// ` (N bytes)` for [`Error::DiskFull`], nothing when the need is unknown.
fn needed_text(needed: u64) -> String {
    if needed == 0 {
        String::new()
    } else {
        format!(" ({needed} bytes)")
    }
}

/// True if an I/O error says the device or the quota is full (ENOSPC, EDQUOT).
pub(crate) fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// [`Error::Io`]'s `op` for reading a configuration file.
pub(crate) const CONFIG_READ: &str = "read config";

/// What to do about an I/O error of this kind during `op`, as the end of [`Error::Io`]'s
/// message; nothing where the error alone cannot tell (a damaged disk's `EIO`, say).
pub(crate) fn io_advice(op: &str, e: &io::Error) -> &'static str {
    // No stable `ErrorKind` names these two.
    if e.raw_os_error() == Some(rustix::io::Errno::MFILE.raw_os_error()) {
        return "; the process has as many files open as its limit allows (RLIMIT_NOFILE): raise it (`ulimit -n`, `LimitNOFILE=` in a systemd unit) or open fewer files; a file store holds open its lock, its active segment and the sealed segments awaiting their fsync, not one file per segment";
    }
    if e.raw_os_error() == Some(rustix::io::Errno::NFILE.raw_os_error()) {
        return "; the system has as many files open as it allows (`fs.file-max`): close files or raise that limit";
    }
    match e.kind() {
        // The one file read that is not the store's: the store's advice sent a user who gave
        // `--config` a directory to look for one inside a store.
        io::ErrorKind::IsADirectory if op == CONFIG_READ => {
            "; give the path of the TOML configuration file, not of a directory"
        }
        io::ErrorKind::PermissionDenied => {
            "; check the owner and mode of the file and of its directory, or run as their owner"
        }
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
            "; the disk (or the quota) is full: free space, or lower the store's max_size_mb"
        }
        io::ErrorKind::ReadOnlyFilesystem => {
            "; the file system is mounted read-only: remount it read-write or use another directory"
        }
        io::ErrorKind::IsADirectory => {
            "; a directory stands where the store keeps a file: move it out of the store's directory"
        }
        _ => "",
    }
}

/// Shortens a key for error messages so a huge key does not flood logs.
pub(crate) fn key_for_error(key: &str) -> String {
    const MAX_CHARS: usize = 64;
    if key.chars().count() <= MAX_CHARS {
        key.to_owned()
    } else {
        let mut short: String = key.chars().take(MAX_CHARS).collect();
        short.push('…');
        short
    }
}

/// Why bytes on the invalidation channel are not a valid backplane message (see
/// `crate::invalidation::message`). The bytes are counted and ignored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// Fewer bytes than the smallest message.
    #[error("{len} bytes is shorter than the smallest message ({min} bytes)")]
    TooShort {
        /// Length of the payload.
        len: usize,
        /// The smallest valid length.
        min: usize,
    },
    /// The payload does not start with `UNOI`: another program publishes on the channel.
    #[error(
        "the payload does not start with the magic bytes \"UNOI\"; another program publishes on this channel"
    )]
    BadMagic,
    /// Written by a newer (or unknown) version of the format.
    #[error("message format version {found}, but this build reads version {supported}; upgrade every instance on the channel")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
        /// The version this build reads.
        supported: u8,
    },
    /// The CRC-32 trailer does not match the bytes: damaged.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// The CRC in the trailer.
        stored: u32,
        /// The CRC of the bytes.
        computed: u32,
    },
    /// An unknown kind byte.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// The reserved field is not zero.
    #[error("reserved field is {0:#06x}, not zero")]
    ReservedNotZero(u16),
    /// The string count does not fit the kind (`Prefix` carries one string, `All` none).
    #[error("a message of kind {kind} cannot carry {count} strings")]
    BadCount {
        /// The kind byte.
        kind: u8,
        /// The string count found.
        count: u32,
    },
    /// A string's length runs past the end of the message.
    #[error("string {index} runs past the end of the message")]
    Truncated {
        /// Index of the string (from 0).
        index: usize,
    },
    /// A string is not UTF-8.
    #[error("string {index} is not valid UTF-8")]
    NotUtf8 {
        /// Index of the string (from 0).
        index: usize,
    },
    /// Bytes are left between the last string and the CRC.
    #[error("{count} unexpected bytes after the last string")]
    TrailingBytes {
        /// How many.
        count: usize,
    },
}

/// Hides the passwords in a host string, by its text alone (no URL parsing): every `pass=` of
/// its query, and whatever follows the first ':' of its user info. For `Debug` and for host
/// strings that do not parse as URLs.
pub(crate) fn redact_host(host: &str) -> String {
    let host = match host.split_once('?') {
        Some((before, query)) => {
            let pairs: Vec<&str> = query
                .split('&')
                .map(|pair| {
                    if pair.starts_with("pass=") {
                        "pass=***"
                    } else {
                        pair
                    }
                })
                .collect();
            format!("{before}?{}", pairs.join("&"))
        }
        None => host.to_owned(),
    };
    let Some(scheme_end) = host.find("://").map(|i| i + 3) else {
        return host;
    };
    let (head, rest) = host.split_at(scheme_end);
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest.get(..authority_end).and_then(|a| a.rfind('@')) else {
        return host;
    };
    let (userinfo, tail) = rest.split_at(at);
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{head}{user}:***{tail}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_says_what_to_do_where_its_kind_tells() {
        let told =
            |kind: io::ErrorKind| Error::io("open segment", "/s/1.seg", io::Error::from(kind)).to_string();
        for (kind, advice) in [
            (io::ErrorKind::PermissionDenied, "owner and mode"),
            (io::ErrorKind::StorageFull, "free space"),
            (io::ErrorKind::QuotaExceeded, "free space"),
            (io::ErrorKind::ReadOnlyFilesystem, "remount it read-write"),
            (io::ErrorKind::IsADirectory, "move it out"),
        ] {
            let message = told(kind);
            assert!(message.starts_with("open segment /s/1.seg: "), "{message}");
            assert!(message.contains(advice), "{kind:?}: {message}");
        }
        // Where the kind alone cannot tell, the message says no more than the system did.
        assert_eq!(
            told(io::ErrorKind::InvalidData),
            format!(
                "open segment /s/1.seg: {}",
                io::Error::from(io::ErrorKind::InvalidData)
            )
        );
    }

    #[test]
    fn a_partial_batch_built_from_indices_in_any_order_keeps_them_ascending_and_once_each() {
        let cause = Error::ValueTooLarge {
            key: "k0".into(),
            len: 10,
            max: 1,
            store: "mine".into(),
        };
        let p = PartialBatch::new(
            "mine",
            "set_many",
            6,
            vec![4, 1, 4, 0],
            vec![4, 0, 4],
            cause,
            Served::Written,
        );
        assert_eq!(
            (p.failed.as_slice(), p.refused.as_slice()),
            (&[0, 1, 4][..], &[0, 4][..])
        );
        assert_eq!(p.unreached(), vec![1]);
        let text = p.to_string();
        assert!(
            text.contains("3 of 6 keys") && text.contains("2 refused as bad input, 1 not reached"),
            "{text}"
        );
    }
}
