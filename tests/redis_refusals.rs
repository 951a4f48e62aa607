//! A Redis that is up and answers, but will not do what the cache asks until its operator
//! changes something, against real `redis-server` processes: a read-only replica, a command
//! renamed away with `rename-command`, an ACL user whose password is accepted but who may not
//! touch the cache's keys (while one granted only the commands that advice names runs the
//! cache), a server in protected mode. Each is `Error::Misconfigured` naming the
//! host and what to change, at start-up and on later calls (single, batch, async), never an
//! outage retried for good without a word. A primary demoted under a running cache, a server
//! that stopped taking writes because its RDB snapshot failed (MISCONF, which refuses PING too,
//! and ends once a snapshot succeeds), a server at `maxclients`, one busy in a script and one
//! loading its dataset are outages, naming the host and the server's reason (and, for MISCONF,
//! what to fix).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use support::RedisServer;
use uno_cache::{
    BreakerState, CacheConfig, CacheManager, DistributedStorage, Error, RedisOptions, RedisStore, Storage,
};

/// `result` is `Error::Misconfigured` of the Redis level at `host`, whose text has every one of
/// `says`.
#[track_caller]
fn misconfigured<T: std::fmt::Debug>(result: uno_cache::Result<T>, host: &str, says: &[&str]) {
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Misconfigured { level: "redis", hosts, .. } if hosts == host),
        "{err:?}"
    );
    for needle in says {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

/// A file L1 in `dir` and a Redis L2 at `host`, with `fallback_on_error`.
fn config(dir: &std::path::Path, host: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        use_multi_level = true
        fallback_on_error = true
        [local]
        type = "file"
        path = {path:?}
        max_size = 16
        [distributed]
        enabled = true
        hosts = [{host:?}]
        timeout_ms = 500
        breaker_cooldown_ms = 50
        "#,
        path = dir.join("l1").display().to_string(),
    ))
    .unwrap()
}

/// A replica serves reads and answers READONLY to every write: it was found only at the first
/// write, as an outage (no host, no advice), and with fallback the writes waited for good. A
/// host that is a replica is refused at start-up; a primary demoted under a running cache (a
/// failover, which the level follows by reconnecting) is an outage of writes naming the host.
#[test]
fn a_replica_is_refused_at_start_up_and_a_demoted_primary_names_itself() {
    let primary = RedisServer::start();
    let port = primary.addr().rsplit(':').next().unwrap().to_owned();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &port], None);
    let host = replica.addr();
    let says = ["read-only replica", "primary"];
    misconfigured(RedisStore::connect(RedisOptions::new(&host)), &host, &says);
    let dir = tempfile::tempdir().unwrap();
    misconfigured(CacheManager::new(config(dir.path(), &host)), &host, &says);

    let store = RedisStore::connect(RedisOptions::new(primary.addr()).prefix("r:")).unwrap();
    let _: () = redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(replica.addr().rsplit(':').next().unwrap())
        .query(&mut primary.raw())
        .unwrap();
    for result in [
        store.set("k", b"v", None),
        store.set_many(&[("k", b"v".as_slice()), ("j", b"w".as_slice())], None),
        support::block_on(store.set_async("k", b"v", None)),
    ] {
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Backend { .. }), "{err:?}");
        assert!(
            text.contains(&primary.addr()) && text.contains("read-only replica"),
            "{text}"
        );
    }
}

/// `result` is an outage (`Error::Backend`) of the Redis level naming `host`, whose text has
/// every one of `says`.
#[track_caller]
fn outage<T: std::fmt::Debug>(result: uno_cache::Result<T>, host: &str, says: &[&str]) {
    let err = result.unwrap_err();
    let text = err.to_string();
    assert!(matches!(&err, Error::Backend { level: "redis", .. }), "{err:?}");
    for needle in [host].iter().chain(says) {
        assert!(text.contains(needle), "{needle:?} not in {text}");
    }
}

/// A server whose snapshots cannot be written (its `dir` is /proc), so that a failed one stops
/// its writes (MISCONF).
fn server_that_cannot_save() -> RedisServer {
    RedisServer::start_with(&["--save", "3600 1", "--dir", "/proc"], None)
}

/// Has the server behind `admin` (one of [`server_that_cannot_save`]) try a snapshot, and waits
/// until it failed: from then on it answers MISCONF to writes and to PING.
fn fail_a_snapshot(admin: &mut redis::Connection) {
    let _: String = redis::cmd("BGSAVE").query(admin).unwrap();
    support::wait_until("the snapshot into /proc to fail", || {
        redis::cmd("INFO")
            .arg("persistence")
            .query::<String>(admin)
            .unwrap()
            .contains("rdb_last_bgsave_status:err")
    });
}

/// A Redis whose snapshot failed (its `dir` not writable) with stop-writes-on-bgsave-error
/// answers MISCONF to every write and to PING: start-up failed with "the server refused the
/// connection; check the server and the options". It is an outage (the server retries the
/// snapshot and serves again once its disk is fixed), so a start-up with fallback goes on
/// degraded, but every error says what to fix.
#[test]
fn a_server_that_cannot_save_is_an_outage_that_says_what_to_fix() {
    let server = server_that_cannot_save();
    let host = server.addr();
    let store = RedisStore::connect(RedisOptions::new(&host).prefix("m:")).unwrap();
    store.set("k", b"v", None).unwrap();
    let mut admin = server.raw();
    fail_a_snapshot(&mut admin);

    let says = ["stop-writes-on-bgsave-error", "dir"];
    outage(store.set("k", b"w", None), &host, &says);
    outage(store.set_each(&[("k", b"w".as_slice(), None)]), &host, &says);
    outage(support::block_on(store.set_async("k", b"w", None)), &host, &says);
    outage(RedisStore::connect(RedisOptions::new(&host)), &host, &says);
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &host)).unwrap();
    // Served from L1 while the level is not connected; the call's error says why.
    assert_eq!(cache.get_raw("k").unwrap(), None);
    let shown = cache.stats().distributed.last_error.unwrap_or_default();
    assert!(
        says.iter().all(|needle| shown.contains(needle)) && shown.contains(&host),
        "{shown}"
    );
    assert_eq!(cache.stats().distributed.config_errors, 0);
}

/// `rename-command UNLINK ""` (and SCAN): the store's delete and clear were outages.
#[test]
fn a_command_renamed_away_is_a_misconfiguration_naming_it() {
    let server = RedisServer::start_with(
        &["--rename-command", "UNLINK", "", "--rename-command", "SCAN", ""],
        None,
    );
    let host = server.addr();
    let store = RedisStore::connect(RedisOptions::new(&host).prefix("n:")).unwrap();
    store.set("k", b"v", None).unwrap();
    misconfigured(store.delete("k"), &host, &["UNLINK", "rename-command"]);
    misconfigured(
        store.delete_many(&["k", "j"]),
        &host,
        &["UNLINK", "rename-command"],
    );
    misconfigured(store.clear(), &host, &["SCAN", "rename-command"]);
    assert_eq!(store.get("k").unwrap().unwrap().value, b"v", "the rest works");
}

/// An ACL user whose password is accepted but who may not touch the cache's keys was told to
/// check its password.
#[test]
fn an_acl_user_refused_the_cache_keys_is_told_to_grant_them_not_to_check_its_password() {
    let server = RedisServer::start_with(&["--user", "app", "on", ">pw", "~other:*", "+@all"], None);
    let host = server.addr();
    let store =
        RedisStore::connect(RedisOptions::new(format!("redis://app:pw@{host}/")).prefix("c:")).unwrap();
    for result in [
        store.set("k", b"v", None).map(|_| ()),
        store.get("k").map(|_| ()),
        store.get_many(&["k", "j"]).map(|_| ()),
    ] {
        let err = result.unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, Error::Misconfigured { hosts, .. } if *hosts == host),
            "{err:?}"
        );
        assert!(text.contains("ACL") && text.contains("~<prefix>*"), "{text}");
        assert!(!text.contains("check them"), "the password was accepted: {text}");
    }
}

/// A server in protected mode (no password, reached from another address than loopback)
/// answers DENIED and hangs up: taken for "the server refused the connection", a degraded
/// start retried it for good.
#[test]
fn protected_mode_refuses_start_up_as_a_misconfiguration_naming_what_to_set() {
    // Not skipped without one: a test that returns early passes without asserting anything.
    let Some(address) = non_loopback_address() else {
        panic!(
            "this test needs a non-loopback IPv4 address on the machine (protected mode refuses \
             only clients from other interfaces): give it one, e.g. as root \
             `ip addr add 192.0.2.10/32 dev lo` (iproute2)"
        );
    };
    let server = RedisServer::start_with(
        &["--bind", "127.0.0.1", &address, "--protected-mode", "yes"],
        None,
    );
    let port = server.addr().rsplit(':').next().unwrap().to_owned();
    let host = format!("{address}:{port}");
    misconfigured(
        RedisStore::connect(RedisOptions::new(&host)),
        &host,
        &["protected mode", "requirepass"],
    );
    let dir = tempfile::tempdir().unwrap();
    misconfigured(
        CacheManager::new(config(dir.path(), &host)),
        &host,
        &["protected mode"],
    );
}

/// A server at `maxclients` sends its reason as it accepts and hangs up: an outage (others'
/// connections end), said with the server's reason and the host, not "cannot reach the server".
#[test]
fn a_server_at_maxclients_is_an_outage_saying_so() {
    let server = RedisServer::start_with(&["--maxclients", "1"], None);
    let _only = server.raw();
    let err = RedisStore::connect(RedisOptions::new(server.addr())).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { op: "connect", .. }), "{err:?}");
    assert!(
        text.contains(&server.addr()) && text.contains("max number of clients"),
        "{text}"
    );
}

/// This machine's first IPv4 address outside 127.0.0.0/8, if it has one.
fn non_loopback_address() -> Option<String> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.200:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then(|| ip.to_string())
}

/// A server busy in a script (BUSY) fails calls as an outage, which named no host: on a
/// cluster, or behind a name a failover moved, the settings do not say which server it was.
#[test]
fn a_server_busy_in_a_script_fails_calls_as_an_outage_naming_the_host() {
    let server = RedisServer::start_with(&["--busy-reply-threshold", "10"], None);
    let store =
        RedisStore::connect(RedisOptions::new(server.addr()).timeout(std::time::Duration::from_secs(2)))
            .unwrap();
    let mut script = server.raw();
    let busy = std::thread::spawn(move || {
        redis::cmd("EVAL")
            .arg("while true do end")
            .arg(0)
            .query::<()>(&mut script)
    });
    let mut seen = None;
    support::wait_until("a call answered BUSY", || match store.get("k") {
        Err(err) if err.to_string().contains("BUSY") => {
            seen = Some(err);
            true
        }
        _ => false,
    });
    let err = seen.unwrap();
    assert!(matches!(err, Error::Backend { op: "get", .. }), "{err:?}");
    assert!(err.to_string().contains(&server.addr()), "{err}");
    let _: () = redis::cmd("SCRIPT").arg("KILL").query(&mut server.raw()).unwrap();
    assert!(busy.join().unwrap().is_err(), "the script was killed");
    assert_eq!(store.get("k").unwrap(), None);
}

/// A server loading its dataset at start answers LOADING until it is done: an outage (it serves
/// once loaded), said as such, where start-up said "the server refused the connection; check
/// the server and the options". With fallback the manager starts without L2 and takes it up
/// once the load is done.
#[test]
fn a_server_loading_its_dataset_is_an_outage_that_says_so_and_ends() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_owned();
    {
        let first = RedisServer::start_with(&["--dir", &dir], None);
        let mut raw = first.raw();
        for i in 0..40u32 {
            // Values that do not compress, so that the file is read in steps of the server's
            // loading-process-events-interval-bytes, between which it answers.
            let value: Vec<u8> = (0..2048u32)
                .map(|j| (j.wrapping_mul(2_654_435_761).wrapping_add(i.wrapping_mul(40_503)) >> 13) as u8)
                .collect();
            let _: () = redis::cmd("SET")
                .arg(format!("x{i}"))
                .arg(value)
                .query(&mut raw)
                .unwrap();
        }
        let _: () = redis::cmd("SAVE").query(&mut raw).unwrap();
    }
    // A password, so that the harness sees the server up (NOAUTH comes before LOADING); 50 ms
    // a key: two seconds of loading.
    let server = RedisServer::start_with(
        &[
            "--dir",
            &dir,
            "--key-load-delay",
            "50000",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
        Some("pw"),
    );
    let url = format!("redis://:pw@{}/", server.addr());
    let err = RedisStore::connect(RedisOptions::new(&url)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Backend { op: "connect", .. }), "{err:?}");
    assert!(
        text.contains(&server.addr()) && text.contains("loading its dataset"),
        "{text}"
    );

    let l1 = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(l1.path(), &url)).unwrap();
    support::wait_until("the manager to take up L2 once loaded", || {
        cache.set_raw("k", b"v", None).is_ok()
            && redis::cmd("EXISTS")
                .arg("k")
                .query::<i64>(&mut server.raw())
                .is_ok_and(|n| n == 1)
    });
}

/// A write the cache acknowledged while its Redis refused writes (MISCONF) is not lost: hidden
/// by fallback, counted as an error of the level, queued, and replayed once the operator has
/// fixed the server.
#[test]
fn a_write_refused_by_a_server_that_cannot_save_is_replayed_once_it_is_fixed() {
    let server = server_that_cannot_save();
    let l1 = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(l1.path(), &server.addr())).unwrap();
    let mut admin = server.raw();
    fail_a_snapshot(&mut admin);

    cache.set_raw("k", b"kept", None).unwrap();
    let stats = cache.stats();
    assert!(stats.distributed.errors >= 1, "{:?}", stats.distributed);
    assert_eq!(stats.distributed.config_errors, 0, "{:?}", stats.distributed);
    assert!(
        stats
            .distributed
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("stop-writes-on-bgsave-error")),
        "{:?}",
        stats.distributed
    );
    assert_eq!(stats.consistency.replay_pending, 1);
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"kept"[..]));

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("stop-writes-on-bgsave-error")
        .arg("no")
        .query(&mut admin)
        .unwrap();
    support::wait_until("the write replayed into Redis", || {
        let _ = cache.replay_now();
        redis::cmd("EXISTS")
            .arg("k")
            .query::<i64>(&mut admin)
            .is_ok_and(|n| n == 1)
    });
    assert_eq!(cache.stats().consistency.replay_pending, 0);
}

/// Tag sets run Lua scripts: a server with EVAL renamed away refused every tagged write and tag
/// invalidation as an outage with no host and no word of what to change.
#[test]
fn tag_calls_on_a_server_without_eval_are_a_misconfiguration_naming_the_command() {
    let server = RedisServer::start_with(&["--rename-command", "EVAL", ""], None);
    let l1 = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(l1.path(), &server.addr())).unwrap();
    let says = ["EVAL", "rename-command"];
    let host = server.addr();
    for err in [
        cache.set_with_tags("k", "v", None, &["t"]).unwrap_err(),
        cache.invalidate_tag("t").unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            matches!(&err, Error::Misconfigured { level: "tags", hosts, .. } if *hosts == host),
            "{err:?}"
        );
        assert!(says.iter().all(|s| text.contains(s)), "{text}");
    }
}

/// [`config`] with a cool-down no test outlasts: a breaker that opens stays open, and no probe
/// hides that it did.
fn config_without_probes(dir: &std::path::Path, host: &str) -> CacheConfig {
    let mut config = config(dir, host);
    config.distributed.breaker_cooldown_ms = 600_000;
    config
}

/// Through a cache on `url` (at `host`), whose server refuses UNLINK alone: twice the breaker's
/// threshold of deletes, each `Error::Misconfigured` naming the host with every one of `says`,
/// leave the breaker closed, and keys written to L2 before are still read from it.
#[track_caller]
fn reads_outlive_refused_deletes(url: &str, host: &str, says: &[&str]) {
    let l1 = tempfile::tempdir().unwrap();
    let config = config_without_probes(l1.path(), url);
    let deletes = config.distributed.breaker_failures * 2;
    let cache = CacheManager::new(config).unwrap();
    let l2 = cache.distributed().unwrap();
    // Written to L2 alone: a read of one through the cache asks L2.
    for i in 0..3 {
        l2.set(&format!("before{i}"), b"in L2", None).unwrap();
    }
    for i in 0..deletes {
        let key = format!("gone{i}");
        misconfigured(l2.delete(&key), host, says);
        misconfigured(support::block_on(l2.delete_async(&key)), host, says);
        misconfigured(l2.delete_many(&[&key, "other"]), host, says);
        // Hidden by fallback_on_error, and counted where an operator looks.
        cache.delete(&key).unwrap();
    }
    let stats = cache.stats().distributed;
    assert_eq!(
        stats.breaker.map(|b| b.state),
        Some(BreakerState::Closed),
        "{stats:?}"
    );
    assert!(stats.config_errors >= u64::from(deletes), "{stats:?}");
    let shown = stats.last_config_error.unwrap_or_default();
    assert!(
        shown.contains(host) && says.iter().all(|needle| shown.contains(needle)),
        "{shown}"
    );
    for i in 0..3 {
        let key = format!("before{i}");
        assert_eq!(
            cache.get_raw(&key).unwrap().as_deref(),
            Some(&b"in L2"[..]),
            "{key}"
        );
    }
    assert!(cache.stats().distributed.hits >= 3, "served from L1 alone");
}

/// `rename-command UNLINK ""`: every delete failed as a misconfiguration (right), which the
/// breaker counted as a failure of the level, so after `breaker_failures` deletes it opened and
/// the reads the server still served were skipped (the cache degraded to L1). A refusal of one
/// command is no failure of the level.
#[test]
fn deletes_refused_by_a_server_with_unlink_renamed_away_leave_its_reads_served() {
    let server = RedisServer::start_with(&["--rename-command", "UNLINK", ""], None);
    let host = server.addr();
    reads_outlive_refused_deletes(&host, &host, &["UNLINK", "rename-command"]);
}

/// As with UNLINK renamed away, for an ACL user allowed everything but UNLINK (NOPERM).
#[test]
fn deletes_refused_to_an_acl_user_without_unlink_leave_its_reads_served() {
    let server = RedisServer::start_with(&["--user", "app", "on", ">pw", "~*", "+@all", "-unlink"], None);
    let host = server.addr();
    reads_outlive_refused_deletes(&format!("redis://app:pw@{host}/"), &host, &["ACL", "UNLINK"]);
}

/// A password refused under a running cache (rotated) concerns the connection, so every call:
/// it still opens the breaker, which then probes once per cool-down instead of sending every call
/// to a server that refuses them all.
#[test]
fn a_refused_password_still_opens_the_breaker() {
    let server = RedisServer::with_password("old");
    let l1 = tempfile::tempdir().unwrap();
    let config = config_without_probes(l1.path(), &format!("redis://:old@{}", server.addr()));
    let threshold = config.distributed.breaker_failures;
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw("k", b"v", None).unwrap();
    let mut admin = server.raw();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new")
        .query(&mut admin)
        .unwrap();
    let _: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query(&mut admin)
        .unwrap();

    for i in 0..threshold + 2 {
        assert_eq!(cache.get_raw(&format!("absent{i}")).unwrap(), None);
    }
    let stats = cache.stats().distributed;
    assert_eq!(
        stats.breaker.map(|b| b.state),
        Some(BreakerState::Open),
        "{stats:?}"
    );
    assert!(
        stats
            .last_config_error
            .as_deref()
            .is_some_and(|e| e.contains("password") && e.contains(&server.addr())),
        "{stats:?}"
    );
}

/// A tag call whose client the settings keep from being built (a CA file with no certificate
/// rustls takes; the L2 met it at connect, and start_degraded_on_config_error started the cache
/// without it)
/// failed with no host: the error of building the client was not named as the tag calls' are.
#[cfg(feature = "tls")]
#[test]
fn a_tag_call_whose_client_cannot_be_built_names_the_host() {
    let server = RedisServer::start();
    let l1 = tempfile::tempdir().unwrap();
    let ca = l1.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let mut config = config(l1.path(), &format!("rediss://{}", server.addr()));
    config.distributed.tls_ca_file = Some(ca);
    config.distributed.start_degraded_on_config_error = true;
    let cache = CacheManager::new(config).unwrap();
    for err in [
        cache.invalidate_tag("t").unwrap_err(),
        support::block_on(cache.invalidate_tag_async("t")).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains(&server.addr()) && text.contains("trust anchors"),
            "{err:?}"
        );
    }
}

/// A `NOPERM` tells the operator which commands to grant (GET, MGET, SET, UNLINK, SCAN, STRLEN
/// and PING): a user granted those and nothing else must run the cache (connect, reads, writes,
/// batches, deletes, the size and a clear), or the advice sends the operator round again.
#[test]
fn an_acl_user_granted_only_the_commands_a_noperm_names_runs_the_cache() {
    let server = RedisServer::start_with(
        &[
            "--user", "app", "on", ">pw", "~*", "-@all", "+get", "+mget", "+set", "+unlink", "+scan",
            "+strlen", "+ping",
        ],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &format!("redis://app:pw@{}/", server.addr()));
    config.fallback_on_error = false;
    let cache = CacheManager::new(config).unwrap();
    cache.set("k", &1u32, None).unwrap();
    cache.multi_set([("a", 2u32), ("b", 3)], None).unwrap();
    let stats = cache.monitor().get_stats();
    assert_eq!(stats.size.distributed.items, 3, "{stats:?}");
    assert_eq!(stats.distributed.config_errors, 0, "{stats:?}");
    cache.delete("k").unwrap();
    let found = cache.multi_get::<u32>(&["a", "b", "k"]).unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(cache.monitor().get_stats().distributed.errors, 0);
    drop(cache);
    let store = RedisStore::connect(RedisOptions::new(format!("redis://app:pw@{}/", server.addr()))).unwrap();
    store.clear().unwrap();
    assert_eq!(store.size().unwrap().items, 0);
}

/// The commands a NOPERM names, as ACL rules for a user `name` (password `pw`), and `more`.
fn granted(name: &str, more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["--user", name, "on", ">pw", "~*", "-@all"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for command in ["get", "mget", "set", "unlink", "scan", "strlen", "ping"]
        .iter()
        .chain(more)
    {
        args.push(format!("+{command}"));
    }
    args
}

/// A URL naming a database other than 0 has the client SELECT it on each connection: a user
/// granted the commands a NOPERM names and SELECT runs the cache there; one without SELECT is
/// told to grant it.
#[test]
fn an_acl_user_on_another_database_is_told_to_grant_select() {
    let args = [granted("app", &[]), granted("sel", &["select"])].concat();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = RedisServer::start_with(&args, None);
    let host = server.addr();
    misconfigured(
        RedisStore::connect(RedisOptions::new(format!("redis://app:pw@{host}/2"))),
        &host,
        &["ACL", "SELECT"],
    );
    let store =
        RedisStore::connect(RedisOptions::new(format!("redis://sel:pw@{host}/2")).prefix("p:")).unwrap();
    store.set("k", b"v", None).unwrap();
    assert_eq!(store.get("k").unwrap().map(|e| e.value), Some(b"v".to_vec()));
    let mut admin = server.raw();
    let in_two: Option<Vec<u8>> = redis::pipe()
        .cmd("SELECT")
        .arg(2)
        .ignore()
        .cmd("GET")
        .arg("p:k")
        .query::<(Option<Vec<u8>>,)>(&mut admin)
        .unwrap()
        .0;
    assert!(in_two.is_some(), "the value is not in database 2");
}
