//! Tag and prefix invalidation through the two local tiers (the memory tier of decoded values in
//! front of the file store) with a real Redis as L2 and another as the tag store and backplane:
//! no old value may be read back from either tier, by any read (`get`, `multi_get`,
//! `get_or_load`, their async forms), right after the invalidation, after a restart (the file
//! tier keeps its data, the memory tier starts empty), and once L2 returns from an outage the
//! invalidation was made in (its deletes owed to L2 in the replay queue), also when the process
//! restarted before L2 came back. The risk: the memory tier keeps a decoded copy that the file
//! tier's delete does not reach, or a restart (memory tier empty, the replay queue reloaded
//! from disk) lets an L2 read backfill the old value before the owed deletes land.
//!
//! The same with a file tier that stops taking writes (its active segment made immutable on a
//! real ext4 mount): a delete, another instance's write and a write here that the file tier
//! refuses leave no old value readable, also once the memory tier has evicted and after a
//! restart; and under `restart_policy = "trust"`, whose next start serves the file tier's
//! entries unchecked, a prefix invalidation the file tier refused says so.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/proxy.rs"]
mod proxy;

#[path = "support/mount.rs"]
mod mount;

use std::path::Path;

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, Error};

const OLD: &str = "old";
const NEW: &str = "new";

/// A file L1 with its memory tier, `l2` as L2, and tags on `bus` (`None`: on `l2`, where a
/// prefix invalidation also deletes L2's keys; with a Redis of its own, L2 keeps them until
/// their TTL, as the README says).
fn config(dir: &Path, l2: &str, bus: Option<&RedisServer>) -> CacheConfig {
    let mut config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        memory_items = 1000
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "app:"
        timeout_ms = 100
        breaker_failures = 1000
        [invalidation]
        enabled = true
        [offline]
        replay_interval_ms = 3600000
        "#,
        dir.display(),
        l2
    ))
    .unwrap();
    if let Some(bus) = bus {
        config.invalidation.hosts = vec![bus.addr()];
    }
    config
}

/// Every read form, sync and async, of `key` on `cache`: none may answer [`OLD`]. The loader
/// answers [`NEW`], so `get_or_load` shows what a caller with a source of truth is served.
fn no_read_answers_old(cache: &CacheManager, key: &str, when: &str) {
    let got: Option<String> = cache.get(key).unwrap();
    assert_ne!(got.as_deref(), Some(OLD), "get of {key} {when}");
    let many = cache.multi_get::<String>(&[key]).unwrap();
    assert_ne!(
        many.get(key).map(String::as_str),
        Some(OLD),
        "multi_get of {key} {when}"
    );
    let raw = cache.get_raw(key).unwrap();
    assert_ne!(
        raw.as_deref(),
        Some(br#""old""#.as_slice()),
        "get_raw of {key} {when}"
    );
    let got: Option<String> = support::block_on(cache.get_async(key)).unwrap();
    assert_ne!(got.as_deref(), Some(OLD), "get_async of {key} {when}");
    let many = support::block_on(cache.multi_get_async::<String>(&[key])).unwrap();
    assert_ne!(
        many.get(key).map(String::as_str),
        Some(OLD),
        "multi_get_async of {key} {when}"
    );
    let loaded = cache
        .get_or_load(key, None, || Ok::<_, Error>(NEW.to_owned()))
        .unwrap();
    assert_eq!(loaded.value(), NEW, "get_or_load of {key} {when}");
    let loaded =
        support::block_on(cache.get_or_load_async(key, None, || async { Ok::<_, Error>(NEW.to_owned()) }))
            .unwrap();
    assert_eq!(loaded.value(), NEW, "get_or_load_async of {key} {when}");
    // What the loader wrote: gone again, so the next check starts from the invalidated state.
    cache.delete(key).unwrap();
}

/// Writes `t:1` (tag `t`) and `p:1` with [`OLD`] and reads each typed, so both tiers hold them.
fn write_and_warm(cache: &CacheManager) {
    cache.set_with_tags("t:1", OLD, None, &["t"]).unwrap();
    cache.set("p:1", OLD, None).unwrap();
    for key in ["t:1", "p:1"] {
        let got: Option<String> = cache.get(key).unwrap();
        assert_eq!(got.as_deref(), Some(OLD));
    }
    assert!(
        cache.stats().size.memory.items >= 2,
        "the memory tier holds both: {:?}",
        cache.stats().size.memory
    );
}

#[test]
fn a_tag_or_prefix_invalidation_leaves_no_old_value_in_either_tier_nor_after_a_restart() {
    for async_api in [false, true] {
        let l2 = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheManager::new(config(dir.path(), &l2.addr(), None)).unwrap();
        write_and_warm(&cache);
        let (tagged, prefixed) = if async_api {
            (
                support::block_on(cache.invalidate_tag_async("t")),
                support::block_on(cache.invalidate_prefix_async("p:")),
            )
        } else {
            (cache.invalidate_tag("t"), cache.invalidate_prefix("p:"))
        };
        assert_eq!(tagged.unwrap(), 1);
        assert_eq!(prefixed.unwrap(), 1);
        for key in ["t:1", "p:1"] {
            no_read_answers_old(&cache, key, "after the invalidation");
        }
        drop(cache);
        let cache = CacheManager::new(config(dir.path(), &l2.addr(), None)).unwrap();
        for key in ["t:1", "p:1"] {
            no_read_answers_old(&cache, key, "after a restart");
        }
    }
}

/// A tag invalidated while L2 is unreachable (its deletes owed to L2, in the replay queue; the
/// tags on a Redis of their own that stays up), the process restarted before L2 returns, then
/// L2 back with the old value still in it (the proxy severs every connection, so no command of
/// the outage lands late): no read answers the old value, in the outage, after the restart,
/// once L2 returned but before the replay (the owed delete keeps L2's copy out of L1), nor
/// after the replay.
#[test]
fn a_tag_invalidated_in_an_outage_stays_invalidated_across_a_restart_and_l2s_return() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let to_l2 = proxy::TcpProxy::start(&l2.addr());
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &to_l2.addr(), Some(&bus))).unwrap();
    write_and_warm(&cache);
    cache.set("probe", "in L2", None).unwrap();

    to_l2.hold();
    to_l2.sever();
    assert_eq!(
        cache.invalidate_tag("t").unwrap(),
        1,
        "the replay queue took the delete"
    );
    assert!(cache.replay_queue().unwrap().is_pending("t:1"));
    no_read_answers_old(&cache, "t:1", "in the outage");
    drop(cache);

    let cache = CacheManager::new(config(dir.path(), &to_l2.addr(), Some(&bus))).unwrap();
    assert!(
        cache.replay_queue().unwrap().is_pending("t:1"),
        "the owed delete outlived the restart"
    );
    no_read_answers_old(&cache, "t:1", "after a restart in the outage");

    to_l2.release();
    let mut raw = l2.raw();
    let in_l2: Option<Vec<u8>> = redis::cmd("GET").arg("app:t:1").query(&mut raw).unwrap();
    assert!(in_l2.is_some(), "L2 still holds the old value");
    // Reads ask L2 again (its connection made anew): a key L1 lacks is read from it.
    support::wait_until("L2 answers the restarted manager's reads", || {
        cache.local().delete("probe").unwrap();
        cache.get::<String>("probe").unwrap().is_some()
    });
    assert!(
        cache.replay_queue().unwrap().is_pending("t:1"),
        "not replayed yet"
    );
    no_read_answers_old(&cache, "t:1", "once L2 returned, before the replay");
    support::until_ok("the replay", || cache.replay_now());
    assert!(cache.replay_queue().unwrap().is_empty());
    no_read_answers_old(&cache, "t:1", "after the replay");
    let in_l2: Option<Vec<u8>> = redis::cmd("GET").arg("app:t:1").query(&mut raw).unwrap();
    assert_eq!(in_l2, None);
}

/// With one Redis for L2 and tags, frozen: a tag invalidation fails before it touches anything
/// (its members cannot be read), a prefix invalidation fails after it dropped its keys from
/// both tiers (L2 could not be scanned); both tell the caller. The prefix's key stays out of
/// both tiers across a restart in the outage, and both calls, retried once Redis is back,
/// leave no old value.
#[test]
fn invalidations_refused_in_an_outage_tell_the_caller_and_succeed_when_retried() {
    let l2 = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &l2.addr(), None)).unwrap();
    write_and_warm(&cache);

    l2.pause();
    assert!(
        cache.invalidate_tag("t").is_err(),
        "the tag's members could not be read"
    );
    assert!(cache.invalidate_prefix("p:").is_err(), "L2 could not be scanned");
    no_read_answers_old(&cache, "p:1", "in the outage");
    drop(cache);
    let cache = CacheManager::new(config(dir.path(), &l2.addr(), None)).unwrap();
    no_read_answers_old(&cache, "p:1", "after a restart in the outage");

    l2.resume();
    support::until_ok("the tag's retry", || cache.invalidate_tag("t"));
    support::until_ok("the prefix's retry", || cache.invalidate_prefix("p:"));
    support::until_ok("the replay", || cache.replay_now());
    for key in ["t:1", "p:1"] {
        no_read_answers_old(&cache, key, "after the retries");
    }
}

/// Under `restart_policy = "trust"` the next start serves what the file tier kept without asking
/// L2. A prefix invalidation whose file-tier deletes fail (its active segment made immutable on
/// a real ext4 mount: EPERM, and the store latched) drops L2's keys and the memory tier's, and
/// this run serves no old value (every L1 entry suspect); but the file tier kept the value, the
/// next start served it, and the call had answered `Ok`. It says so now
/// (`Error::PrefixKeptInL1`, naming the file), so the caller retries once the device is back.
#[test]
fn under_trust_a_prefix_invalidation_the_file_tier_refused_fails_rather_than_answer_ok() {
    let l2 = RedisServer::start();
    let fs = mount::Mount::ext4(16);
    let dir = fs.path().join("store");
    let config = || {
        let mut config = config(&dir, &l2.addr(), None);
        config.consistency.restart_policy = uno_cache::RestartPolicy::Trust;
        // 128 KiB segments, on a 16 MiB device.
        config.local.max_size = Some(1);
        config
    };
    let cache = CacheManager::new(config()).unwrap();
    write_and_warm(&cache);
    let segment = fs.freeze_active_segment(&dir);

    let err = cache
        .invalidate_prefix("p:")
        .expect_err("the file tier kept p:1, which the next start serves unchecked");
    assert!(
        matches!(&err, Error::PrefixKeptInL1 { prefix, .. } if prefix == "p:")
            && err.to_string().contains(&segment.display().to_string()),
        "{err}"
    );
    let got: Option<String> = cache.get("p:1").unwrap();
    assert_eq!(got, None, "this run checks p:1 against L2, which lost it");
    drop(cache);

    fs.set_immutable(&segment, false);
    let cache = CacheManager::new(config()).unwrap();
    let got: Option<String> = cache.get("p:1").unwrap();
    assert_eq!(
        got.as_deref(),
        Some(OLD),
        "the file tier kept what it refused to drop, and trust serves it: hence the error"
    );
    assert_eq!(cache.invalidate_prefix("p:").unwrap(), 1, "the retry");
    drop(cache);
    let cache = CacheManager::new(config()).unwrap();
    no_read_answers_old(&cache, "p:1", "after the retry and a restart");
}

/// What every typed read form (sync and async, single and batch) and the raw read of `key`
/// answer on `cache`: each must be one of `allowed` or a miss.
fn reads_within(cache: &CacheManager, key: &str, allowed: &[&str], when: &str) {
    let check = |form: &str, got: Option<&str>| {
        assert!(
            got.is_none_or(|got| allowed.contains(&got)),
            "{form} of {key} {when} answered {got:?}; allowed: {allowed:?} or a miss"
        );
    };
    let got: Option<String> = cache.get(key).unwrap();
    check("get", got.as_deref());
    let got: Option<String> = support::block_on(cache.get_async(key)).unwrap();
    check("get_async", got.as_deref());
    let many = cache.multi_get::<String>(&[key]).unwrap();
    check("multi_get", many.get(key).map(String::as_str));
    let many = support::block_on(cache.multi_get_async::<String>(&[key])).unwrap();
    check("multi_get_async", many.get(key).map(String::as_str));
    let raw = cache.get_raw(key).unwrap();
    let raw = raw.map(|raw| cache.codec().decode::<String>(key, &raw).unwrap());
    check("get_raw", raw.as_deref());
}

/// The memory tier in front of a file tier that stops taking writes (its active segment made
/// immutable on a real ext4 mount: EPERM, and the store latched), with L2 and the backplane on
/// one Redis, and another instance B: a delete here, B's write (its message), and a write here
/// all fail in the file tier, which keeps the old values; the memory tier drops them. No read
/// form answers the deleted value, the value B replaced, or the write the caller was told
/// failed: right away, once the memory tier has evicted the keys (it holds four values, and
/// reads of other keys, checked against L2, refill it), and after a restart on the repaired
/// device (the memory tier empty, the file tier's old values revalidated against L2).
#[test]
fn a_latched_file_tier_behind_the_memory_tier_serves_no_old_value_with_an_l2() {
    let l2 = RedisServer::start();
    let fs = mount::Mount::ext4(16);
    let dir = fs.path().join("store");
    let config = || {
        let mut config = config(&dir, &l2.addr(), None);
        config.local.max_size = Some(1);
        config.local.memory_items = 4;
        config
    };
    let cache = CacheManager::new(config()).unwrap();
    let mut other = config();
    other.local = CacheConfig::default().local;
    other.local.kind = uno_cache::LocalKind::Memory;
    other.offline.replay = false;
    let b = CacheManager::new(other).unwrap();
    b.set("hello", "b", None).unwrap();
    support::wait_until("this instance to hear B", || {
        cache.stats().consistency.invalidations_received >= 1
    });
    let fillers: Vec<String> = (0..8).map(|i| format!("filler:{i}")).collect();
    for key in ["deleted", "replaced", "rewritten"]
        .iter()
        .copied()
        .chain(fillers.iter().map(String::as_str))
    {
        cache.set(key, OLD, None).unwrap();
    }
    for key in ["deleted", "replaced", "rewritten"] {
        let got: Option<String> = cache.get(key).unwrap();
        assert_eq!(got.as_deref(), Some(OLD), "{key} in both tiers");
    }
    let segment = fs.freeze_active_segment(&dir);

    let err = cache.delete("deleted").unwrap_err();
    assert!(err.to_string().contains(&segment.display().to_string()), "{err}");
    let heard = cache.stats().consistency.invalidations_received;
    b.set("replaced", NEW, None).unwrap();
    support::wait_until("this instance to hear B's write", || {
        cache.stats().consistency.invalidations_received > heard
    });
    let err = cache.set("rewritten", NEW, None).unwrap_err();
    assert!(
        matches!(err, Error::WritesDisabled { .. }) && err.to_string().contains("reopen"),
        "{err}"
    );
    let check = |cache: &CacheManager, when: &str| {
        reads_within(cache, "deleted", &[], when);
        reads_within(cache, "replaced", &[NEW], when);
        reads_within(cache, "rewritten", &[OLD], when);
    };
    check(&cache, "right after the failures");
    for key in &fillers {
        let got: Option<String> = cache.get(key).unwrap();
        assert_eq!(got.as_deref(), Some(OLD), "{key}, confirmed by L2");
    }
    assert!(
        cache.stats().memory.evictions > 0,
        "the memory tier evicted: {:?}",
        cache.stats().memory
    );
    check(&cache, "once the memory tier evicted");
    drop(cache);

    fs.set_immutable(&segment, false);
    let cache = CacheManager::new(config()).unwrap();
    check(&cache, "after a restart");
    let got: Option<String> = cache.get("rewritten").unwrap();
    assert_eq!(got.as_deref(), Some(OLD), "the value L2 kept, revalidated");
}
