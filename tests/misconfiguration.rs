//! A misconfiguration is told apart from an outage, against real `redis-server` processes: a
//! refused password, a database that does not exist, a host name that does not resolve, or a
//! cluster setting that does not match the server fails `CacheManager::new` with
//! `Error::Misconfigured` naming the host and what to fix (even with `fallback_on_error`), while
//! an unreachable server still starts degraded. A password changed under a running cache is
//! counted apart in the stats and shown, and L1 keeps serving; so is a backplane publish, re-send
//! or SUBSCRIBE its server refuses as a wrong setting. `start_degraded_on_config_error` starts
//! both L2 and the backplane degraded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::{free_port, wait_until, RedisServer};
use uno_cache::{CacheConfig, CacheManager, Error};

/// A file L1 in `dir` and a Redis L2 at `host`, with `fallback_on_error` (the default) and
/// `extra` lines in `[distributed]`.
fn config(dir: &std::path::Path, host: &str, extra: &str) -> CacheConfig {
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
        {extra}
        "#,
        path = dir.join("l1").display().to_string(),
    ))
    .unwrap()
}

/// `CacheManager::new`'s error for `host`, which must be a misconfiguration naming `shown`.
fn refused(host: &str, shown: &str, extra: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let err = CacheManager::new(config(dir.path(), host, extra)).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, Error::Misconfigured { level: "redis", ref hosts, .. } if hosts == shown),
        "{text}"
    );
    assert!(err.is_misconfiguration(), "{text}");
    assert!(text.contains(shown), "{text}");
    text
}

#[test]
fn a_wrong_password_fails_cache_manager_new_naming_the_host_and_what_to_fix() {
    let server = RedisServer::with_password("right-secret");
    let text = refused(
        &format!("redis://:wrong-secret@{}", server.addr()),
        &server.addr(),
        "",
    );
    assert!(text.contains("password"), "{text}");
    assert!(
        !text.contains("wrong-secret") && !text.contains("right-secret"),
        "{text}"
    );
    // No password at all (NOAUTH on the first command) is the same mistake.
    let text = refused(&server.addr(), &server.addr(), "");
    assert!(text.contains("password"), "{text}");
}

#[test]
fn a_database_the_server_does_not_have_fails_start_up() {
    let server = RedisServer::start();
    let text = refused(&format!("redis://{}/99", server.addr()), &server.addr(), "");
    assert!(text.contains("database"), "{text}");
}

#[test]
fn a_host_name_that_does_not_resolve_fails_start_up() {
    let text = refused(
        "redis://no-such-host.invalid:6379",
        "no-such-host.invalid:6379",
        "",
    );
    assert!(text.contains("does not resolve"), "{text}");
}

#[test]
fn a_cluster_url_on_a_standalone_server_and_the_reverse_fail_start_up() {
    let standalone = RedisServer::start();
    let text = refused(
        &format!("redis+cluster://{}", standalone.addr()),
        &standalone.addr(),
        "",
    );
    assert!(text.contains("not a Redis Cluster node"), "{text}");
    // A cluster node (no slots needed: it says cluster_enabled:1) reached as a standalone server.
    let node = RedisServer::start_with(&["--cluster-enabled", "yes"], None);
    let text = refused(&node.addr(), &node.addr(), "");
    assert!(text.contains("cluster = true"), "{text}");
}

/// A Redis L2 (the default `type`) whose host is a Memcached: the server answers, in another
/// protocol. It was taken for an outage, "the server refused the connection", retried in the
/// background for good with a parser's words ("Unexpected `82`") as the only clue (found by
/// following the README as a new user). It fails start-up saying to set the type.
#[test]
fn a_redis_level_pointed_at_a_memcached_fails_start_up_naming_the_type_to_set() {
    let memcached = support::MemcachedServer::start();
    let text = refused(&memcached.addr(), &memcached.addr(), "");
    assert!(
        text.contains("not in the Redis protocol") && text.contains("type = \"memcached\""),
        "{text}"
    );
}

#[test]
fn an_unreachable_server_is_an_outage_and_still_starts_degraded() {
    let dir = tempfile::tempdir().unwrap();
    let host = format!("127.0.0.1:{}", free_port());
    let cache = CacheManager::new(config(dir.path(), &host, "")).unwrap();
    cache.set_raw("k", b"v", None).unwrap();
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"v"[..]));
    let stats = cache.stats();
    assert_eq!(stats.distributed.config_errors, 0);
    assert_eq!(cache.monitor().config_error(), None);
    // Without fallback an outage is an error too, but not a misconfiguration.
    let strict = CacheConfig {
        fallback_on_error: false,
        ..config(dir.path().join("strict").as_path(), &host, "")
    };
    let err = CacheManager::new(strict).unwrap_err();
    assert!(!err.is_misconfiguration(), "{err}");
}

#[test]
fn start_degraded_on_config_error_starts_without_l2_and_reports_the_refusal() {
    let server = RedisServer::with_password("right");
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(
        dir.path(),
        &format!("redis://:wrong@{}", server.addr()),
        "start_degraded_on_config_error = true",
    ))
    .unwrap();
    // Shown from the start, before any call meets the refusal (a health check right after
    // start-up must see it).
    let stats = cache.stats();
    assert_eq!(stats.distributed.config_errors, 1, "{:?}", stats.distributed);
    let shown = stats.distributed.last_config_error.unwrap();
    assert!(
        shown.contains(&server.addr()) && shown.contains("password"),
        "{shown}"
    );
    assert_eq!(cache.monitor().config_error(), Some(shown));
    cache.set_raw("k", b"v", None).unwrap();
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert!(cache.stats().distributed.config_errors >= 2);
}

#[test]
fn a_password_changed_while_running_is_counted_and_reported_and_l1_keeps_serving() {
    let server = RedisServer::with_password("old");
    let dir = tempfile::tempdir().unwrap();
    let cache =
        CacheManager::new(config(dir.path(), &format!("redis://:old@{}", server.addr()), "")).unwrap();
    cache.set_raw("kept", b"in both", None).unwrap();
    assert_eq!(cache.stats().distributed.config_errors, 0);

    // Rotate the password and drop every authenticated connection, as a restart would.
    let mut admin = server.raw();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("new")
        .query::<()>(&mut admin)
        .unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query::<i64>(&mut admin)
        .unwrap();

    // Writes and misses now reach a server that refuses the password: hidden by fallback (L1
    // has the write), counted apart, and shown with the host.
    cache.set_raw("after", b"l1 only", None).unwrap();
    assert_eq!(support::block_on(cache.get_raw_async("absent")).unwrap(), None);
    let stats = cache.stats();
    assert!(stats.distributed.config_errors >= 1, "{:?}", stats.distributed);
    let shown = stats.distributed.last_config_error.clone().unwrap();
    assert!(shown.contains(&server.addr()), "{shown}");
    assert!(shown.contains("password"), "{shown}");
    assert!(!shown.contains("old"), "{shown}");
    assert_eq!(cache.monitor().config_error().as_deref(), Some(shown.as_str()));
    // Reads of what L1 holds are still served.
    assert_eq!(cache.get_raw("kept").unwrap().as_deref(), Some(&b"in both"[..]));
    assert_eq!(cache.get_raw("after").unwrap().as_deref(), Some(&b"l1 only"[..]));

    // The refusal opens the breaker (probed once per cool-down) instead of failing every call
    // on the network; restoring the password lets the probe close it again.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("old")
        .query::<()>(&mut admin)
        .unwrap();
    let started = Instant::now();
    loop {
        cache.set_raw("back", b"in l2", None).unwrap();
        if redis::cmd("EXISTS").arg("back").query::<i64>(&mut admin).unwrap() == 1 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "L2 never came back after the password was restored"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An L2 that takes the cache's settings and a backplane on a server of its own that refuses
/// its password ("wrong-secret"), with `extra` lines in `[distributed]`.
fn backplane_with_a_wrong_password(
    extra: &str,
) -> (RedisServer, RedisServer, tempfile::TempDir, CacheConfig) {
    let l2 = RedisServer::start();
    let bus = RedisServer::with_password("right-secret");
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &l2.addr(), extra);
    config.invalidation.enabled = true;
    config.invalidation.hosts = vec![bus.addr()];
    config.invalidation.password = Some("wrong-secret".to_owned());
    (l2, bus, dir, config)
}

#[test]
fn a_backplane_with_a_wrong_password_fails_start_up_instead_of_running_offline() {
    let (_l2, bus, _dir, config) = backplane_with_a_wrong_password("");
    let err = CacheManager::new(config).unwrap_err();
    let text = err.to_string();
    assert!(err.is_misconfiguration(), "{text}");
    assert!(text.contains(&bus.addr()), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
}

/// `start_degraded_on_config_error` covers the backplane. It used to start L2 degraded on a
/// refused password while the backplane, on the same server with the same password, failed the
/// start: with the backplane on, the setting did nothing. The backplane now starts unsubscribed
/// and shown as refused, and once the server takes the password it subscribes and hears
/// another instance's invalidations.
#[test]
fn start_degraded_on_config_error_starts_the_backplane_unsubscribed_until_its_password_is_taken() {
    let server = RedisServer::with_password("right");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("redis://:wrong@{}", server.addr());
    let with_backplane = |mut config: CacheConfig| {
        config.invalidation.enabled = true;
        config.invalidation.channel = "degraded-bus".to_owned();
        config
    };
    let degraded = config(
        &dir.path().join("degraded"),
        &url,
        "start_degraded_on_config_error = true",
    );
    let cache = CacheManager::new(with_backplane(degraded)).unwrap();
    let stats = cache.stats();
    assert!(!stats.consistency.backplane_connected, "{:?}", stats.consistency);
    assert!(stats.distributed.config_errors >= 1, "{:?}", stats.distributed);

    // The server takes the password the cache was given: L2 and the backplane connect.
    let mut admin = server.raw();
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("wrong")
        .query::<()>(&mut admin)
        .unwrap();
    wait_until("the backplane subscribed", || {
        cache.stats().consistency.backplane_connected
    });
    wait_until("L2 connected", || {
        cache.set_raw("probe", b"p", None).is_ok()
            && redis::cmd("EXISTS")
                .arg("probe")
                .query::<i64>(&mut admin)
                .unwrap()
                == 1
    });

    // Written after the subscription, so not suspect: only an invalidation drops it.
    cache.set_raw("k", b"old", None).unwrap();
    let other = CacheManager::new(with_backplane(config(&dir.path().join("other"), &url, ""))).unwrap();
    other.set_raw("k", b"new", None).unwrap();
    wait_until("the other instance's invalidation heard", || {
        cache.get_raw("k").unwrap().as_deref() == Some(&b"new"[..])
    });
}

/// A backplane of its own refused at start-up, with `start_degraded_on_config_error`, starts
/// unsubscribed, and the refusal is shown where L2's would be, naming the backplane's host.
#[test]
fn a_backplane_refused_at_start_up_is_shown_when_the_start_is_degraded() {
    let (l2, bus, _dir, config) = backplane_with_a_wrong_password("start_degraded_on_config_error = true");
    let cache = CacheManager::new(config).unwrap();
    let stats = cache.stats();
    assert!(!stats.consistency.backplane_connected, "{:?}", stats.consistency);
    assert!(stats.distributed.config_errors >= 1, "{:?}", stats.distributed);
    let shown = stats.distributed.last_config_error.unwrap_or_default();
    assert!(
        shown.contains("backplane") && shown.contains(&bus.addr()) && !shown.contains("wrong-secret"),
        "{shown}"
    );
    // L1 and L2 serve meanwhile.
    cache.set_raw("k", b"v", None).unwrap();
    assert_eq!(
        redis::cmd("EXISTS").arg("k").query::<i64>(&mut l2.raw()).unwrap(),
        1
    );
    assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// A backplane whose user may subscribe but not PUBLISH: each publish failed as a
/// misconfiguration, counted only in `consistency.publish_failures` and logged at debug level,
/// so `config_errors`, `last_config_error` and `monitor().config_error()` said nothing was
/// wrong. They show it now (not counted in `errors`, which counts L2's calls).
#[test]
fn a_backplane_publish_refused_by_the_acl_is_shown_as_a_configuration_error() {
    let l2 = RedisServer::start();
    let bus = RedisServer::start_with(
        &["--user", "app", "on", ">pw", "~*", "&*", "+@all", "-publish"],
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &l2.addr(), "");
    config.invalidation.enabled = true;
    config.invalidation.hosts = vec![format!("redis://app:pw@{}/", bus.addr())];
    let cache = CacheManager::new(config).unwrap();

    cache.set_raw("k", b"v", None).unwrap();
    let stats = cache.stats();
    assert!(stats.consistency.publish_failures >= 1, "{:?}", stats.consistency);
    assert!(stats.distributed.config_errors >= 1, "{:?}", stats.distributed);
    assert_eq!(
        stats.distributed.errors, 0,
        "no L2 call failed: {:?}",
        stats.distributed
    );
    let shown = stats.distributed.last_config_error.unwrap_or_default();
    assert!(
        shown.contains("backplane") && shown.contains(&bus.addr()) && shown.contains("PUBLISH"),
        "{shown}"
    );
    assert_eq!(cache.monitor().config_error(), Some(shown));
}

/// A manager whose backplane user has `limits` taken away, on a bus of its own.
fn with_backplane_user(limits: &[&str]) -> (RedisServer, RedisServer, tempfile::TempDir, CacheManager) {
    let l2 = RedisServer::start();
    let mut user = vec!["--user", "app", "on", ">pw", "~*", "&*", "+@all"];
    user.extend_from_slice(limits);
    let bus = RedisServer::start_with(&user, None);
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &l2.addr(), "");
    config.invalidation.enabled = true;
    config.invalidation.channel = "acl-bus".to_owned();
    config.invalidation.hosts = vec![format!("redis://app:pw@{}/", bus.addr())];
    let cache = CacheManager::new(config).unwrap();
    (l2, bus, dir, cache)
}

/// The ACL took the channel from the backplane's user under a running cache: Redis dropped the
/// subscription and refused every SUBSCRIBE after, which the subscriber logged at debug level and
/// retried for good, so the stats said only "not connected", as in an outage. It is a
/// configuration error now, naming the channel and what to grant, where L2's are shown (not in
/// `errors`, which counts L2's calls); once granted, the subscription comes back.
#[test]
fn a_backplane_subscribe_refused_by_the_acl_is_shown_as_a_configuration_error_naming_the_channel() {
    let (_l2, bus, _dir, cache) = with_backplane_user(&[]);
    assert!(cache.stats().consistency.backplane_connected);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("resetchannels")
        .query(&mut bus.raw())
        .unwrap();
    wait_until("the refused SUBSCRIBE shown", || {
        cache.stats().distributed.config_errors >= 1
    });
    let stats = cache.stats();
    assert!(!stats.consistency.backplane_connected, "{:?}", stats.consistency);
    assert_eq!(
        stats.distributed.errors, 0,
        "no L2 call failed: {:?}",
        stats.distributed
    );
    let shown = stats.distributed.last_config_error.unwrap_or_default();
    assert!(
        shown.contains("backplane")
            && shown.contains(&bus.addr())
            && shown.contains("\"acl-bus\"")
            && shown.contains("+subscribe")
            && shown.contains("&acl-bus"),
        "{shown}"
    );
    assert_eq!(cache.monitor().config_error(), Some(shown));

    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("app")
        .arg("allchannels")
        .query(&mut bus.raw())
        .unwrap();
    wait_until("the subscription restored", || {
        cache.stats().consistency.backplane_connected
    });
}

/// A publish the ACL refuses is kept and re-sent by the backplane's own task, whose failures
/// were in the backplane's stats alone: the manager showed one refusal, and then nothing while
/// the re-sends kept failing. They are in `consistency.republish_failures` (and the refusals in
/// `config_errors`), the message still kept in `republish_pending`.
#[test]
fn backplane_re_sends_refused_by_the_acl_are_counted_in_the_managers_stats() {
    let (_l2, _bus, _dir, cache) = with_backplane_user(&["-publish"]);
    cache.set_raw("k", b"v", None).unwrap();
    let published = cache.stats();
    assert_eq!(
        published.consistency.publish_failures, 1,
        "{:?}",
        published.consistency
    );
    assert!(
        published.distributed.config_errors >= 1,
        "{:?}",
        published.distributed
    );
    // The publish's refusal, then at least one re-send's.
    wait_until("a refused re-send counted", || {
        cache.stats().distributed.config_errors >= 2
    });
    let stats = cache.stats();
    assert!(
        stats.consistency.republish_failures >= 1,
        "{:?}",
        stats.consistency
    );
    assert_eq!(stats.consistency.republish_pending, 1, "{:?}", stats.consistency);
    assert!(
        stats
            .distributed
            .last_config_error
            .clone()
            .unwrap_or_default()
            .contains("PUBLISH"),
        "{:?}",
        stats.distributed
    );
    assert_eq!(stats.distributed.errors, 0, "{:?}", stats.distributed);
}
