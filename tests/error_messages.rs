//! Every variant of the public errors, as a user meets it: made through the calls that really
//! return it where a test can make them (a bad key, a bad TOML field, a locked or damaged
//! directory, an L2 that is down, a value over Memcached's item limit, ...), and built by hand
//! only where making it takes a rig another test already drives (a full disk, a failed fsync, a
//! hung loader). Each message must name what is at fault and say what to do about it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use uno_cache::distributed::envelope;
use uno_cache::invalidation::{InstanceId, InvalidationMessage};
use uno_cache::{
    CacheConfig, CacheManager, CircuitBreaker, Codec, Error, FileStore, FileStoreOptions, Guarded,
    Invalidation, MemcachedOptions, MemcachedStore, MemoryStore, PartialBatch, RedbOptions, RedbStore,
    RedisOptions, RedisStore, Served, Storage, MAX_KEY_LEN,
};

/// Asserts that `error`'s message contains every one of `names` (what is at fault) and at least
/// one of `advice` (what to do); returns the message.
#[track_caller]
fn says(error: &Error, names: &[&str], advice: &[&str]) -> String {
    let text = error.to_string();
    eprintln!("{text}");
    for name in names {
        assert!(text.contains(name), "{error:?} does not name {name:?}: {text}");
    }
    assert!(
        advice.iter().any(|a| text.contains(a)),
        "{error:?} says nothing of what to do (looked for {advice:?}): {text}"
    );
    text
}

fn store(dir: &std::path::Path) -> FileStore {
    FileStore::open(dir, FileStoreOptions::default()).unwrap()
}

#[test]
fn a_file_store_refusing_a_key_a_value_or_a_ttl_names_it_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let empty = s.set("", b"v", None).unwrap_err();
    says(&empty, &["\"\"", "empty"], &["use a non-empty key"]);
    let long = "k".repeat(MAX_KEY_LEN + 1);
    let too_long = s.set(&long, b"v", None).unwrap_err();
    says(
        &too_long,
        &[
            &long[..64],
            &(MAX_KEY_LEN + 1).to_string(),
            &MAX_KEY_LEN.to_string(),
        ],
        &["hash or shorten it"],
    );
    assert!(!too_long.to_string().contains(&long), "the key is shortened");

    let small = tempfile::tempdir().unwrap();
    let s = FileStore::open(small.path(), FileStoreOptions::default().segment_size(65_536)).unwrap();
    let big = s.set("big:1", &vec![0u8; 70_000], None).unwrap_err();
    assert!(matches!(big, Error::ValueTooLarge { .. }), "{big:?}");
    says(
        &big,
        &["\"big:1\"", "70000 bytes"],
        &["store it elsewhere or raise the limit"],
    );

    let zero = s.set("t:1", b"v", Some(Duration::ZERO)).unwrap_err();
    says(&zero, &["\"t:1\"", "zero TTL"], &["pass None for no expiry"]);
}

#[test]
fn a_directory_that_cannot_be_opened_is_named_with_what_to_do() {
    // Another program's files.
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("notes.txt"), b"mine").unwrap();
    let err = FileStore::open(foreign.path(), FileStoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotOurDirectory { .. }), "{err:?}");
    says(
        &err,
        &[&foreign.path().display().to_string(), "uno-cache.meta"],
        &["choose an empty or new directory"],
    );

    // Held by another store.
    let dir = tempfile::tempdir().unwrap();
    let held = store(dir.path());
    let err = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err:?}");
    says(&err, &[&dir.path().display().to_string()], &["close it first"]);
    drop(held);

    // Damaged metadata: one byte of the segment size flipped, so the CRC fails.
    let meta = dir.path().join("uno-cache.meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[17] ^= 0xff;
    std::fs::write(&meta, &bytes).unwrap();
    let err = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::CorruptMetadata { .. }), "{err:?}");
    says(
        &err,
        &[&meta.display().to_string()],
        &["restore it from a backup", "delete the directory"],
    );

    // Written by a newer format: the version field with a CRC that checks out.
    let mut newer = bytes[..32].to_vec();
    newer[17] ^= 0xff;
    newer[8..10].copy_from_slice(&99u16.to_le_bytes());
    let crc = crc32fast::hash(&newer);
    newer.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&meta, &newer).unwrap();
    let err = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 99, .. }),
        "{err:?}"
    );
    says(
        &err,
        &[&meta.display().to_string(), "99"],
        &["open it with a newer uno-cache"],
    );
}

#[test]
fn a_configuration_that_cannot_be_read_or_is_wrong_names_the_field_or_file() {
    let err = CacheConfig::from_toml_str("[local]\ntype = \"file\"\nmax_size = -3\n").unwrap_err();
    assert!(matches!(err, Error::Config { .. }), "{err:?}");
    says(&err, &["max_size"], &["invalid configuration"]);
    let text = err.to_string();
    assert!(
        text.contains("expected") || text.contains("must"),
        "says what is accepted: {text}"
    );

    let err = CacheConfig::from_toml_str("[local]\nmax_sise = 3\n").unwrap_err();
    says(&err, &["max_sise"], &["expected", "unknown field"]);

    let dir = tempfile::tempdir().unwrap();
    let err = CacheConfig::from_toml_file(dir.path()).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    says(
        &err,
        &[&dir.path().display().to_string()],
        &["give the path of the TOML configuration file"],
    );

    let err = Error::FeatureDisabled {
        field: "distributed.type".into(),
        what: "a Redis L2".into(),
        feature: "redis",
    };
    says(&err, &["distributed.type", "`redis`"], &["enable it"]);
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
}

#[test]
fn a_value_the_codec_cannot_write_or_read_names_the_key_and_the_codec() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&format!(
        "codec = \"json\"\n[local]\ntype = \"file\"\npath = {:?}\n",
        dir.path()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();

    let by_pairs: HashMap<(u8, u8), u8> = HashMap::from([((1, 2), 3)]);
    let err = cache.set("pairs:1", &by_pairs, None).unwrap_err();
    assert!(matches!(err, Error::Encode { .. }), "{err:?}");
    says(&err, &["\"pairs:1\"", "json"], &["nothing was stored"]);

    cache.set("user:1", &7u64, None).unwrap();
    let err = cache.get::<User>("user:1").unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    says(
        &err,
        &["\"user:1\"", "json"],
        &["was another type stored under this key?"],
    );

    cache.set_raw("raw:1", b"\x01plain", None).unwrap();
    let err = cache.get::<User>("raw:1").unwrap_err();
    assert!(matches!(err, Error::CodecMismatch { .. }), "{err:?}");
    says(
        &err,
        &["\"raw:1\"", "json"],
        &["use the same codec everywhere or read it with get_raw"],
    );

    let bytes = Codec::bincode().encode("any:1", &5u8).unwrap();
    let err = Codec::bincode()
        .decode::<serde_json::Value>("any:1", &bytes)
        .unwrap_err();
    assert!(matches!(err, Error::TypeNotDecodable { .. }), "{err:?}");
    says(&err, &["\"any:1\"", "bincode"], &["json", "JSON"]);
}

#[test]
fn a_redb_file_of_another_program_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(uno_cache::REDB_FILE_NAME);
    std::fs::write(&path, b"not a database").unwrap();
    let err = RedbStore::open(&path, RedbOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Redb { .. }), "{err:?}");
    says(&err, &[&path.display().to_string()], &["move it away"]);
}

#[test]
fn a_bad_invalidation_message_says_which_check_failed_and_who_sent_it() {
    let err = InvalidationMessage::decode(b"HELLO, this is someone else's message").unwrap_err();
    assert!(matches!(err, Error::InvalidMessage { .. }), "{err:?}");
    says(&err, &["UNOI"], &["another program publishes on this channel"]);
    let mut newer = InvalidationMessage {
        origin: InstanceId::random(),
        seq: 1,
        invalidation: Invalidation::Keys(vec!["k".into()]),
    }
    .encode();
    newer[4] = 99;
    let err = InvalidationMessage::decode(&newer).unwrap_err();
    says(&err, &["99"], &["upgrade every instance on the channel"]);
}

#[test]
fn the_global_manager_used_out_of_order_says_which_call_to_make() {
    let err = CacheManager::get_instance().unwrap_err();
    says(
        &err,
        &["global cache manager"],
        &["call CacheManager::init_global(config) at start-up"],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        CacheConfig::from_toml_str(&format!("[local]\ntype = \"file\"\npath = {:?}\n", dir.path())).unwrap()
    };
    CacheManager::init_global(config()).unwrap();
    let err = CacheManager::init_global(config()).unwrap_err();
    says(
        &err,
        &["global cache manager"],
        &["call CacheManager::get_instance() instead"],
    );
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    support::free_port()
}

#[test]
fn an_l2_that_is_down_or_refuses_names_the_host_and_says_what_to_do() {
    let port = closed_port();
    let host = format!("127.0.0.1:{port}");
    let err = RedisStore::connect(RedisOptions::new(format!("redis://{host}"))).unwrap_err();
    says(&err, &["redis", &host], &["check the host and port"]);

    let server = support::RedisServer::with_password("right");
    let host = format!("127.0.0.1:{}", server.port);
    let err =
        RedisStore::connect(RedisOptions::new(format!("redis://{host}")).password("wrong")).unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
    says(&err, &["redis", &host], &["password"]);
    assert!(!err.to_string().contains("wrong"), "never the password: {err}");

    // A key in the namespace the Redis level keeps for tag sets.
    let l2 = RedisStore::connect(RedisOptions::new(format!("redis://{host}")).password("right")).unwrap();
    let reserved = l2.get("uno-cache:tag:x").map(|_| ()).unwrap_err();
    says(&reserved, &["uno-cache:tag:"], &["use a key that does not"]);

    // Bytes another program wrote under a key the level reads.
    let mut raw = redis::Client::open(format!("redis://:right@{host}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("foreign:1")
        .arg("plain text")
        .query(&mut raw)
        .unwrap();
    let err = l2.get("foreign:1").unwrap_err();
    assert!(matches!(err, Error::InvalidEnvelope { .. }), "{err:?}");
    says(
        &err,
        &["\"foreign:1\"", "redis"],
        &["delete the key or check which program writes it"],
    );

    // Out of memory for writes, with the default noeviction policy.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("1")
        .query(&mut raw)
        .unwrap();
    let err = l2.set("full:1", b"v", None).unwrap_err();
    assert!(matches!(err, Error::ServerFull { .. }), "{err:?}");
    says(
        &err,
        &["redis", "out of memory"],
        &["maxmemory-policy allkeys-lru"],
    );
}

#[test]
fn a_value_over_memcacheds_item_limit_names_the_key_and_the_limit() {
    let server = support::MemcachedServer::start();
    let l2 = MemcachedStore::connect(MemcachedOptions::new(server.addr()).max_item_size(2048)).unwrap();
    let err = l2.set("blob:1", &vec![7u8; 4096], None).unwrap_err();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{err:?}");
    says(
        &err,
        &["\"blob:1\"", "4096 bytes", "2048"],
        &["store it elsewhere or raise the limit"],
    );
}

#[test]
fn a_memcached_host_that_is_down_at_connect_is_named_with_what_to_check() {
    let server = support::MemcachedServer::start();
    let down = format!("127.0.0.1:{}", closed_port());
    let err =
        MemcachedStore::connect(MemcachedOptions::with_hosts([server.addr(), down.clone()])).unwrap_err();
    says(&err, &["memcached", &down], &["check the host and port"]);
}

#[test]
fn a_level_behind_an_open_breaker_says_where_the_cause_is() {
    let breaker = Arc::new(CircuitBreaker::new(5, Duration::from_secs(60)));
    let l2 = Guarded::new("redis", MemoryStore::new(10).unwrap(), Arc::clone(&breaker));
    breaker.trip();
    let err = l2.get("k").unwrap_err();
    assert!(matches!(err, Error::CircuitOpen { .. }), "{err:?}");
    says(
        &err,
        &["redis", "circuit breaker is open"],
        &["stats().distributed.last_error"],
    );
}

#[test]
fn the_errors_a_test_cannot_cheaply_cause_still_name_their_subject_and_say_what_to_do() {
    let path = PathBuf::from("/var/cache/app");
    says(
        &Error::WritesDisabled {
            path: path.clone(),
            cause: "write segment: Input/output error".into(),
        },
        &["/var/cache/app", "Input/output error"],
        &["reopen the store"],
    );
    says(
        &Error::DiskFull {
            path: path.clone(),
            op: "write segment",
            needed: 4096,
        },
        &["/var/cache/app", "write segment", "4096"],
        &["free space on that device"],
    );
    says(
        &Error::LostKeysUnreadable {
            op: "read".into(),
            path: path.join("3.hint"),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        },
        &["/var/cache/app/3.hint"],
        &["check the owner and mode", "fix the cause and reopen"],
    );
    says(
        &Error::Timeout {
            level: "redis",
            op: "get",
            server: "cache-1.internal:6379".into(),
            after: Duration::from_millis(250),
        },
        &["redis get", "250ms", "cache-1.internal:6379"],
        &["`timeout` option"],
    );
    // Made for real by tests/l2_prefix_invalidation.rs, on a memcached server.
    says(
        &Error::PrefixKeptInL2 {
            level: "memcached",
            prefix: "user:".into(),
            dropped: 3,
        },
        &["memcached", "\"user:\"", "3 key(s)"],
        &["delete such keys by name or tag"],
    );
    // Made for real by tests/l2_prefix_own_levels.rs, on a level of the test's own: the advice
    // names the method such a level implements.
    says(
        &Error::PrefixKeptInL2 {
            level: "L2",
            prefix: "user:".into(),
            dropped: 3,
        },
        &["L2 cannot list its keys", "\"user:\""],
        &["DistributedStorage::delete_prefix"],
    );
    // Made for real by tests/local_tiers_failing_disk.rs, on a file store whose segment is
    // made immutable: the cause names the file.
    says(
        &Error::PrefixKeptInL1 {
            prefix: "user:".into(),
            dropped: 1,
            cause: Box::new(Error::WritesDisabled {
                path: "/var/cache/app".into(),
                cause: "write segment /var/cache/app/3.seg: Operation not permitted".into(),
            }),
        },
        &[
            "\"user:\"",
            "/var/cache/app/3.seg",
            "1 key(s)",
            "next start serves",
        ],
        &["fix the cause, then call invalidate_prefix again"],
    );
    says(
        &Error::LoaderTimeout {
            key: "report:7".into(),
            after: Duration::from_secs(2),
        },
        &["\"report:7\"", "2s"],
        &["loader.hard_timeout_ms"],
    );
    let cause = Arc::new(Error::Backend {
        level: "redis",
        op: "connect",
        reason: "127.0.0.1:6379: Connection refused".into(),
    });
    says(
        &Error::NotConnected {
            level: "redis",
            op: "get",
            cause,
        },
        &["redis get", "127.0.0.1:6379"],
        &["retries the connection in the background"],
    );
    says(
        &Error::ItemRefused {
            level: "memcached",
            key: "blob:2".into(),
            reason: "SERVER_ERROR out of memory storing object; give memcached more memory (-m)".into(),
        },
        &["memcached", "\"blob:2\""],
        &["more memory"],
    );
    says(
        &Error::WriteBehindLost {
            writes: 3,
            key: "user:9".into(),
            reason: "no replay queue took them; configure [offline]".into(),
        },
        &["3 write-behind", "\"user:9\""],
        &["configure [offline]", "written again"],
    );
    let partial = PartialBatch::new(
        "memcached",
        "set_many",
        4,
        vec![2],
        vec![],
        Error::NodeUnavailable {
            level: "memcached",
            node: "10.0.0.2:11211".into(),
            cause: Box::new(Error::CircuitOpen { level: "memcached" }),
        },
        Served::Written,
    );
    says(
        &Error::PartialBatch(Box::new(partial)),
        &["memcached set_many", "1 of 4", "10.0.0.2:11211"],
        &["a probe retries it"],
    );
    // The envelope's own reasons, as InvalidEnvelope carries them.
    let reason = envelope::decode(b"xy").unwrap_err();
    assert!(reason.to_string().contains("2 bytes"), "{reason}");
}
