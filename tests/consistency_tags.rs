//! Tags, prefixes and events across two instances (own file L1s, one Redis as L2 and
//! backplane). The bug this guards against: a tag or prefix invalidation that clears only the
//! instance that issued it, or only L2, leaving the other instance's L1 copies to be served; a
//! prefix invalidated during an L2 outage brought back by the replay of writes made before it;
//! tag sets touched by the values, prefix deletions or size counts that share their prefix; a
//! tag set that expires before one of its members, in L2 or in L1, or before a copy fail-safe
//! keeps to serve stale. Tag sets as Redis holds them: `tests/tag_sets.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/proxy.rs"]
mod proxy;

use std::path::Path;
use std::time::{Duration, Instant};

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, Fetched, InvalidationEvent};

fn config(dir: &Path, redis: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        [distributed]
        enabled = true
        hosts = ["{redis}"]
        key_prefix = "app:"
        timeout_ms = 500
        [invalidation]
        enabled = true
        "#,
        dir.display()
    ))
    .unwrap()
}

/// Waits until `key` is gone from `cache`'s L1 (the backplane message was applied).
fn wait_dropped(cache: &CacheManager, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while cache.local().get(key).unwrap().is_some() {
        assert!(Instant::now() < deadline, "{key} never dropped from the other L1");
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct OrderShipped {
    user_id: u64,
}

impl InvalidationEvent for OrderShipped {
    fn keys(&self) -> Vec<String> {
        vec![format!("user:{}:orders", self.user_id)]
    }
    fn tags(&self) -> Vec<String> {
        vec!["orders".to_owned()]
    }
}

#[test]
fn a_tag_a_prefix_and_an_event_invalidate_both_levels_and_the_other_instances_l1() {
    let redis = RedisServer::start();
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = CacheManager::new(config(da.path(), &redis.addr())).unwrap();
    let b = CacheManager::new(config(db.path(), &redis.addr())).unwrap();

    // Tags.
    a.set_with_tags("team:1", "red", None, &["teams"]).unwrap();
    a.set_with_tags("team:2", "blue", None, &["teams", "blue"])
        .unwrap();
    a.set("untagged", "x", None).unwrap();
    for key in ["team:1", "team:2", "untagged"] {
        assert!(b.get::<String>(key).unwrap().is_some(), "{key} read through B");
    }
    assert_eq!(a.invalidate_tag("teams").unwrap(), 2);
    wait_dropped(&b, "team:1");
    wait_dropped(&b, "team:2");
    assert_eq!(b.get::<String>("team:1").unwrap(), None, "gone from L2 too");
    assert_eq!(b.get::<String>("team:2").unwrap(), None);
    assert_eq!(b.get::<String>("untagged").unwrap().as_deref(), Some("x"));
    assert_eq!(a.invalidate_tag("teams").unwrap(), 0, "the tag set was consumed");
    let ttl: i64 = redis::cmd("TTL")
        .arg("app:uno-cache:tag:blue")
        .query(&mut redis.raw())
        .unwrap();
    assert!(ttl > 3000, "the tag set lives as long as its members: {ttl}");

    // Prefix.
    for key in ["sess:1", "sess:2", "session-other"] {
        a.set(key, "s", None).unwrap();
        assert!(b.get::<String>(key).unwrap().is_some());
    }
    assert_eq!(
        a.invalidate_prefix("sess:").unwrap(),
        2,
        "2 keys, each in A's L1 and in L2"
    );
    wait_dropped(&b, "sess:1");
    wait_dropped(&b, "sess:2");
    assert_eq!(b.get::<String>("sess:1").unwrap(), None);
    assert_eq!(b.get::<String>("session-other").unwrap().as_deref(), Some("s"));

    // Event.
    a.set("user:42:orders", &vec![1u32], None).unwrap();
    a.set_with_tags("report:daily", "r", None, &["orders"]).unwrap();
    assert!(b.get::<Vec<u32>>("user:42:orders").unwrap().is_some());
    assert!(b.get::<String>("report:daily").unwrap().is_some());
    assert_eq!(a.invalidate_event(&OrderShipped { user_id: 42 }).unwrap(), 2);
    wait_dropped(&b, "user:42:orders");
    wait_dropped(&b, "report:daily");
    assert_eq!(b.get::<String>("report:daily").unwrap(), None);
    assert!(b.stats().consistency.invalidations_received > 0);
}

/// A tag set that expired before a member leaves that member out of the tag's invalidation:
/// the set must outlive every copy of its members, to the millisecond (a TTL of 2.9 s once
/// gave the set 2 s) and in L1 too, whose TTL may be longer than L2's.
#[test]
fn a_tag_set_outlives_its_members_in_both_levels() {
    let redis = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "memory"
        ttl = 600
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "app:"
        ttl = 60
        timeout_ms = 500
        "#,
        redis.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    // The set first, then the member: the set's time left, read earlier, must still be larger.
    let pttls = |tag: &str, key: &str| -> (i64, i64) {
        let mut raw = redis.raw();
        let set: i64 = redis::cmd("PTTL")
            .arg(format!("app:uno-cache:tag:{tag}"))
            .query(&mut raw)
            .unwrap();
        let member: i64 = redis::cmd("PTTL")
            .arg(format!("app:{key}"))
            .query(&mut raw)
            .unwrap();
        (set, member)
    };
    let l1_left_ms = |key: &str| -> i64 {
        let entry = cache.local().get(key).unwrap().unwrap();
        let left = entry.remaining_ttl(std::time::SystemTime::now()).unwrap();
        i64::try_from(left.as_millis()).unwrap()
    };

    cache
        .set_with_tags("short", "s", Some(Duration::from_millis(2_900)), &["t"])
        .unwrap();
    let (set, member) = pttls("t", "short");
    assert!(member > 2_000, "the member's PX is 2.9 s: {member}");
    assert!(set >= member, "tag set {set} ms < member {member} ms");

    // No TTL given: 60 s in L2, 600 s in L1.
    cache.set_with_tags("long", "l", None, &["u"]).unwrap();
    let (set, member) = pttls("u", "long");
    let l1 = l1_left_ms("long");
    assert!(set >= member, "tag set {set} ms < member {member} ms in L2");
    assert!(set >= l1, "tag set {set} ms < member {l1} ms in L1");

    // A shorter member later never shortens the set.
    cache
        .set_with_tags("brief", "b", Some(Duration::from_secs(3)), &["u"])
        .unwrap();
    let (set, _) = pttls("u", "brief");
    assert!(
        set >= l1_left_ms("long"),
        "the later, shorter member cut the set to {set} ms"
    );
    assert_eq!(cache.invalidate_tag("u").unwrap(), 2);
}

/// An entry kept past its TTL for fail-safe is still a member of its tag while it may be served
/// stale, so invalidating the tag then removes it. The tag set lived only as long as the longer
/// of the entry's L1 and L2 TTLs: invalidated after that, the tag had no members, and the
/// invalidated value was still served stale.
#[test]
fn a_tag_invalidated_after_its_members_expired_still_removes_their_fail_safe_copies() {
    const WINDOW_S: u64 = 3600;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &redis.addr());
    config.loader.fail_safe_max_duration = Duration::from_secs(WINDOW_S);
    let cache = CacheManager::new(config).unwrap();
    cache
        .set_with_tags("price:1", &10u64, Some(Duration::from_millis(300)), &["prices"])
        .unwrap();
    let set_pttl: i64 = redis::cmd("PTTL")
        .arg("app:uno-cache:tag:prices")
        .query(&mut redis.raw())
        .unwrap();
    assert!(
        set_pttl > i64::try_from(WINDOW_S * 1000).unwrap(),
        "the tag set lives {set_pttl} ms, less than the fail-safe window"
    );

    // Both levels' TTLs pass: Redis drops the value (L1's copy, written first, expired before).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let exists: i64 = redis::cmd("EXISTS")
            .arg("app:price:1")
            .query(&mut redis.raw())
            .unwrap();
        if exists == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the value never expired in Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        cache.get_with_state::<u64>("price:1").unwrap(),
        Some(Fetched::Stale(10)),
        "fail-safe keeps the expired copy to serve stale"
    );
    assert_eq!(cache.invalidate_tag("prices").unwrap(), 1);
    assert_eq!(
        cache.get_with_state::<u64>("price:1").unwrap(),
        None,
        "an invalidated value is not served stale"
    );
}

#[test]
fn tag_sets_share_the_prefix_with_values_but_no_value_write_prefix_delete_or_size_touches_them() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    let members = |tag: &str| -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(format!("app:uno-cache:tag:{tag}"))
            .arg(0)
            .arg(-1)
            .query(&mut redis.raw())
            .unwrap()
    };
    a.set_with_tags("order:1", "o", None, &["orders"]).unwrap();
    a.set("unopened", "u", None).unwrap();
    assert_eq!(members("orders"), ["order:1"]);

    // The tag set is no value of the L2: two keys, one set.
    let size = a.stats().size.distributed;
    assert_eq!(size.items, 2, "{size:?}");

    // A value cannot replace the tag's set, and a read of its name is refused, not a WRONGTYPE.
    let key = "uno-cache:tag:orders";
    for (call, result) in [
        ("set", a.set(key, "x", None).map(drop)),
        ("get", a.get::<String>(key).map(drop)),
    ] {
        match result {
            Err(uno_cache::Error::InvalidKey { key: named, .. }) => assert_eq!(named, key, "{call}"),
            other => panic!("{call} of a tag set's name: {other:?}"),
        }
    }
    assert_eq!(
        a.local().get(key).unwrap(),
        None,
        "the refused set left no L1 copy"
    );
    assert_eq!(members("orders"), ["order:1"]);

    // A prefix that the tag set's name starts with deletes the values under it, not the set.
    assert!(a.invalidate_prefix("uno").unwrap() >= 1);
    assert_eq!(a.get::<String>("unopened").unwrap(), None);
    assert_eq!(
        members("orders"),
        ["order:1"],
        "the prefix delete kept the tag set"
    );
    assert_eq!(a.invalidate_tag("orders").unwrap(), 1);
    assert_eq!(
        a.get::<String>("order:1").unwrap(),
        None,
        "the tag still reached its member"
    );
}

#[test]
fn a_member_that_is_no_key_does_not_stop_its_tag_from_invalidating_the_others() {
    // An empty member and one past the key limit, added to the set by hand: refused as keys,
    // they failed every invalidation of the tag, and the valid member stayed readable.
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    a.set_with_tags("order:1", "o", None, &["orders"]).unwrap();
    let too_long = "k".repeat(uno_cache::MAX_KEY_LEN + 1);
    let set = "app:uno-cache:tag:orders";
    let forever = u64::MAX >> 12;
    let () = redis::cmd("ZADD")
        .arg(set)
        .arg(forever)
        .arg("")
        .arg(forever)
        .arg(&too_long)
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(a.invalidate_tag("orders").unwrap(), 1, "only the key is counted");
    assert_eq!(a.get::<String>("order:1").unwrap(), None);
    assert_eq!(a.local().get("order:1").unwrap(), None);
    let left: Vec<String> = redis::cmd("ZRANGE")
        .arg(set)
        .arg(0)
        .arg(-1)
        .query(&mut redis.raw())
        .unwrap();
    assert!(left.is_empty(), "the set kept {} members", left.len());
}

/// A member in the namespace Redis keeps for tag sets (`uno-cache:tag:…`, put in the set by hand
/// or by a build that tagged before checking the key): Redis refuses its delete, and with it
/// the whole `UNLINK` of its step, so every invalidation of the tag failed and the valid
/// member's value stayed readable in L2.
#[test]
fn a_member_in_the_tag_sets_namespace_does_not_stop_its_tag_from_invalidating_the_others() {
    for async_api in [false, true] {
        let redis = RedisServer::start();
        let dir = tempfile::tempdir().unwrap();
        let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
        a.set_with_tags("order:1", "o", None, &["orders"]).unwrap();
        let set = "app:uno-cache:tag:orders";
        let () = redis::cmd("ZADD")
            .arg(set)
            .arg(u64::MAX >> 12)
            .arg("uno-cache:tag:x")
            .query(&mut redis.raw())
            .unwrap();
        let invalidated = if async_api {
            support::block_on(a.invalidate_tag_async("orders"))
        } else {
            a.invalidate_tag("orders")
        };
        assert_eq!(
            invalidated.unwrap(),
            1,
            "async {async_api}: only the key is counted"
        );
        assert_eq!(a.get::<String>("order:1").unwrap(), None, "async {async_api}");
        let left: Vec<String> = redis::cmd("ZRANGE")
            .arg(set)
            .arg(0)
            .arg(-1)
            .query(&mut redis.raw())
            .unwrap();
        assert!(left.is_empty(), "async {async_api}: the set kept {left:?}");
    }
}

/// A tagged write of a key Redis refuses (the tag sets' namespace) is refused before its key
/// joins its tags: it joined them first, and its refusal left it there, where it stopped every
/// later invalidation of those tags (see the test above).
#[test]
fn a_tagged_write_of_a_key_redis_refuses_joins_no_tag() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    let key = "uno-cache:tag:x";
    let sync = a.set_with_tags(key, "v", None, &["orders"]);
    let async_ = support::block_on(a.set_with_tags_async(key, "v", None, &["orders"]));
    for (api, result) in [("sync", sync), ("async", async_)] {
        assert!(
            matches!(&result, Err(uno_cache::Error::InvalidKey { key: named, .. }) if named == key),
            "{api}: {result:?}"
        );
    }
    let exists: i64 = redis::cmd("EXISTS")
        .arg("app:uno-cache:tag:orders")
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(exists, 0, "the refused key was added to its tag");
}

/// What `invalidate_prefix` returns counts keys, each once, whichever levels held it: before,
/// it added L1's keys dropped to L2's, so a key in both counted twice, and a caller reading "keys
/// invalidated" was told twice the keys there were.
#[test]
fn a_prefix_invalidation_counts_a_key_in_both_levels_once() {
    prefix_counts_each_key_once(false);
}

#[test]
fn async_a_prefix_invalidation_counts_a_key_in_both_levels_once() {
    prefix_counts_each_key_once(true);
}

fn prefix_counts_each_key_once(async_api: bool) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    let invalidate = |prefix: &str| {
        if async_api {
            support::block_on(cache.invalidate_prefix_async(prefix)).unwrap()
        } else {
            cache.invalidate_prefix(prefix).unwrap()
        }
    };
    for round in 0..2 {
        cache.set("p:both:1", "b", None).unwrap();
        cache.set("p:both:2", "b", None).unwrap();
        cache.set("p:l2-only", "2", None).unwrap();
        assert!(cache.invalidate_local("p:l2-only").unwrap());
        cache.set("p:l1-only", "1", None).unwrap();
        let _: () = redis::cmd("DEL")
            .arg("app:p:l1-only")
            .query(&mut redis.raw())
            .unwrap();
        cache.set("q:other", "kept", None).unwrap();
        assert!(cache.local().get("p:both:1").unwrap().is_some());
        assert_eq!(
            invalidate("p:"),
            4,
            "round {round}: two keys in both levels, one in each level alone"
        );
        assert_eq!(
            invalidate("p:"),
            0,
            "round {round}: nothing left under the prefix"
        );
        let left: Vec<String> = redis::cmd("KEYS").arg("app:p:*").query(&mut redis.raw()).unwrap();
        assert!(left.is_empty(), "round {round}: L2 kept {left:?}");
        assert_eq!(cache.get::<String>("q:other").unwrap().as_deref(), Some("kept"));
    }
}

#[test]
fn a_prefix_invalidated_during_an_outage_is_not_brought_back_by_the_replay_of_earlier_writes() {
    prefix_invalidated_during_an_outage(false);
}

#[test]
fn async_a_prefix_invalidated_during_an_outage_is_not_brought_back_by_the_replay_of_earlier_writes() {
    prefix_invalidated_during_an_outage(true);
}

fn prefix_invalidated_during_an_outage(async_api: bool) {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
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
        dir.path().display(),
        redis.addr()
    ))
    .unwrap();
    let a = CacheManager::new(config).unwrap();
    let l2 =
        uno_cache::RedisStore::connect(uno_cache::RedisOptions::new(redis.addr()).prefix("app:")).unwrap();

    redis.pause();
    a.set("sess:1", "written during the outage", None).unwrap();
    a.set("other", "kept", None).unwrap();
    let queue = a.replay_queue().unwrap();
    assert_eq!(queue.len(), 2, "both writes wait for L2");
    let invalidated = if async_api {
        support::block_on(a.invalidate_prefix_async("sess:"))
    } else {
        a.invalidate_prefix("sess:")
    };
    // L2 could not be scanned, so the caller is told (what L2 held before the outage stays
    // there), but the writes queued under the prefix are made deletes all the same.
    assert!(invalidated.is_err(), "{invalidated:?}");
    assert!(queue.is_pending("sess:1"), "{:?}", queue.pending());
    assert_eq!(a.get::<String>("sess:1").unwrap(), None);
    redis.resume();

    assert_eq!(a.replay_now().unwrap(), 2);
    assert!(queue.is_empty());
    assert_eq!(
        uno_cache::Storage::get(&l2, "sess:1").unwrap(),
        None,
        "the replay brought the invalidated key back to L2"
    );
    assert_eq!(a.get::<String>("sess:1").unwrap(), None);
    assert_eq!(a.get::<String>("other").unwrap().as_deref(), Some("kept"));
    assert!(uno_cache::Storage::get(&l2, "other").unwrap().is_some());
}

/// A manager whose L2 and tags (with the backplane) are on Redis servers of their own, with an
/// L2 timeout well past the one-second timeout of [`gives_up_on_a_tagged_write`], so that the
/// caller gives up first.
fn tagged_rig() -> (RedisServer, RedisServer, tempfile::TempDir, CacheManager) {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &l2.addr());
    config.invalidation.hosts = vec![bus.addr()];
    config.distributed.timeout_ms = 10_000;
    let cache = CacheManager::new(config).unwrap();
    (l2, bus, dir, cache)
}

/// Whether a caller gave up (a timeout of one second, well within the tag call's own deadline)
/// on an async write of `k` tagged `t`.
fn gives_up_on_a_tagged_write(cache: &CacheManager) -> bool {
    support::block_on(async {
        tokio::time::timeout(
            Duration::from_secs(1),
            cache.set_raw_with_tags_async("k", b"v", None, &["t"]),
        )
        .await
        .is_err()
    })
}

/// Waits until `key` is a member of tag `t` in the tag Redis `bus`.
fn wait_tagged(bus: &RedisServer, key: &str) {
    let mut raw = bus.raw();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg("app:uno-cache:tag:t")
            .arg(0)
            .arg(-1)
            .query(&mut raw)
            .unwrap();
        if members.iter().any(|m| m == key) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{key} never joined its tag's set: {members:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An async tagged write whose caller gives up (a timeout) while its second tagging, after the
/// value was written, waits on the tag Redis: that tagging runs to its end. Aborted, it left the
/// key's score where the first tagging put it, and an invalidation that had read the member in
/// between forgot it while the value stayed.
#[test]
fn a_tagged_async_write_given_up_during_its_tag_still_tags_the_key() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let to_l2 = proxy::TcpProxy::start(&l2.addr());
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &to_l2.addr());
    config.invalidation.hosts = vec![bus.addr()];
    config.distributed.timeout_ms = 10_000;
    let cache = CacheManager::new(config).unwrap();
    // The async tag connection is open, so that the taggings wait on the frozen server rather
    // than fail to connect.
    support::block_on(cache.set_raw_with_tags_async("warm", b"w", None, &["t"])).unwrap();
    to_l2.hold();
    let score = || -> Option<u64> {
        redis::cmd("ZSCORE")
            .arg("app:uno-cache:tag:t")
            .arg("k")
            .query(&mut bus.raw())
            .unwrap()
    };
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| gives_up_on_a_tagged_write(&cache));
        // The first tagging is done once the set waits on L2.
        let deadline = Instant::now() + Duration::from_secs(10);
        while to_l2.waiting() == 0 {
            assert!(Instant::now() < deadline, "the set never reached L2");
            std::thread::sleep(Duration::from_millis(2));
        }
        let first = score().expect("the key joined its tag before its value was written");
        bus.pause();
        to_l2.release();
        assert!(
            writer.join().unwrap(),
            "the tagged write finished while the tag Redis was frozen"
        );
        assert_eq!(cache.get_raw("k").unwrap().as_deref(), Some(&b"v"[..]));
        bus.resume();
        let deadline = Instant::now() + Duration::from_secs(10);
        while score() <= Some(first) {
            assert!(Instant::now() < deadline, "the second tagging never ran");
            std::thread::sleep(Duration::from_millis(10));
        }
    });
}

/// An async tagged write whose caller gives up while its set waits on L2: the set is handed to
/// the replay queue and reaches L2 later, but the key joined its tag only once the set had
/// returned, so the value landed untagged and no invalidation of the tag found it. The key is
/// tagged from the dropped future now.
#[test]
fn a_tagged_async_write_given_up_during_its_set_is_found_by_its_tag() {
    let (l2, bus, _dir, cache) = tagged_rig();
    l2.pause();
    assert!(
        gives_up_on_a_tagged_write(&cache),
        "the tagged write finished while L2 was frozen"
    );
    l2.resume();
    cache.replay_now().unwrap();
    let mut raw = l2.raw();
    let in_l2: Option<Vec<u8>> = redis::cmd("GET").arg("app:k").query(&mut raw).unwrap();
    assert!(in_l2.is_some(), "the given-up set reached L2 by the replay");
    wait_tagged(&bus, "k");
    assert_eq!(cache.invalidate_tag("t").unwrap(), 1, "the tag found its key");
    let in_l2: Option<Vec<u8>> = redis::cmd("GET").arg("app:k").query(&mut raw).unwrap();
    assert_eq!(in_l2, None, "the key's value is gone from L2");
    assert_eq!(cache.get_raw("k").unwrap(), None);
}

/// A prefix invalidation drops L1 before L2's scan and again after it, so that a set that ran
/// whole meanwhile (its L2 copy gone with the scan's `UNLINK`s) leaves no L1 copy. An async one
/// dropped during the scan (a caller's timeout) skipped the second drop; it runs from the drop.
#[test]
fn an_async_prefix_invalidation_dropped_during_l2s_scan_still_drops_l1_again() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    // Frozen, the server cannot answer the scan before the first poll has returned; a fast
    // scan once made that poll ready, and the test then had nothing to drop.
    redis.pause();
    {
        let invalidation = cache.invalidate_prefix_async("p:");
        let mut invalidation = std::pin::pin!(invalidation);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(
            std::future::Future::poll(invalidation.as_mut(), &mut cx).is_pending(),
            "the invalidation waits for L2's scan"
        );
        // What a set of this manager that ran whole meanwhile leaves in L1.
        cache.local().set("p:meanwhile", b"v", None).unwrap();
    }
    redis.resume();
    assert_eq!(
        cache.local().get("p:meanwhile").unwrap(),
        None,
        "the dropped invalidation left a key under its prefix in L1"
    );
}

/// An invalidation whose deletes L2 refuses still takes every member out of L1, not only those
/// deleted before the first refusal, and says it failed: the members of a step after a failed
/// one stayed readable here (and in every other instance) until their TTL.
#[test]
fn a_tag_whose_deletes_l2_refuses_leaves_none_of_its_members_in_l1() {
    tag_whose_deletes_l2_refuses(false);
}

#[test]
fn async_a_tag_whose_deletes_l2_refuses_leaves_none_of_its_members_in_l1() {
    tag_whose_deletes_l2_refuses(true);
}

/// A manager with a memory L1 over `redis`, whose L2 errors reach the caller (hidden, the
/// deletes would be queued for replay).
fn without_fallback(redis: &RedisServer) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        fallback_on_error = false
        [local]
        type = "memory"
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "app:"
        "#,
        redis.addr()
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// Forbids `UNLINK` to `redis`'s default user, so every delete fails; returns a connection
/// that may still run everything else.
fn refusing_unlink(redis: &RedisServer) -> redis::Connection {
    let mut raw = redis.raw();
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-unlink")
        .exec(&mut raw)
        .unwrap();
    raw
}

fn tag_whose_deletes_l2_refuses(async_api: bool) {
    const MEMBERS: usize = 1_500;
    let redis = RedisServer::start();
    let cache = without_fallback(&redis);
    for i in 0..MEMBERS {
        cache.set_with_tags(&format!("k:{i}"), "v", None, &["t"]).unwrap();
    }
    let mut raw = refusing_unlink(&redis);
    let invalidated = if async_api {
        support::block_on(cache.invalidate_tag_async("t"))
    } else {
        cache.invalidate_tag("t")
    };
    assert!(invalidated.is_err(), "L2 refused every delete");
    // L2 kept the values: gone by hand, whatever a read still finds is L1's.
    redis::cmd("FLUSHDB").exec(&mut raw).unwrap();
    let left = (0..MEMBERS)
        .filter(|i| cache.get::<String>(&format!("k:{i}")).unwrap().is_some())
        .count();
    assert_eq!(left, 0, "members left in L1");
}

/// A tagged write's key joins its tags before its value is written (and again after): once the
/// value can be read anywhere, every invalidation of the tag finds it. Tagged only after the
/// write, the value was readable (here, in L2) while the tag call was on its way, and an
/// invalidation that another instance started then, having read the value, missed it.
#[test]
fn a_tagged_value_is_not_written_before_its_key_joins_the_tag() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let to_bus = proxy::TcpProxy::start(&bus.addr());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let with_bus = |dir: &Path, bus: String| {
        let mut config = config(dir, &l2.addr());
        config.invalidation.hosts = vec![bus];
        config.distributed.timeout_ms = 10_000;
        // Few PINGs: a held one would stand for the tag call.
        config.invalidation.staleness_bound_ms = 60_000;
        CacheManager::new(config).unwrap()
    };
    let a = with_bus(da.path(), to_bus.addr());
    let b = with_bus(db.path(), bus.addr());
    a.set_raw_with_tags("warm", b"w", None, &["t"]).unwrap();
    to_bus.hold();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| a.set_raw_with_tags("k", b"v", None, &["t"]));
        let deadline = Instant::now() + Duration::from_secs(10);
        while to_bus.waiting() == 0 {
            assert!(Instant::now() < deadline, "A's tag call never reached the proxy");
            std::thread::sleep(Duration::from_millis(2));
        }
        let in_l2: Option<Vec<u8>> = redis::cmd("GET").arg("app:k").query(&mut l2.raw()).unwrap();
        assert_eq!(
            in_l2, None,
            "the value was readable before its key joined the tag"
        );
        to_bus.release();
        writer.join().unwrap().unwrap();
    });
    assert_eq!(b.invalidate_tag("t").unwrap(), 2, "the tag found both keys");
    assert_eq!(b.get_raw("k").unwrap(), None);
}

/// A tag call has the configured deadline (the larger of the L2 timeout and the publish
/// timeout): a tag Redis that answers in 800 ms is waited for under a deadline of 2 s. The tag
/// connection kept the Redis client's default reply timeout of 500 ms, and every tag call to a
/// server slower than that failed, whatever the deadline (the one a large tag needs).
#[test]
fn a_tag_call_waits_for_its_configured_deadline() {
    let (l2, bus) = (RedisServer::start(), RedisServer::start());
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), &l2.addr());
    config.invalidation.hosts = vec![bus.addr()];
    config.distributed.timeout_ms = 2_000;
    let cache = CacheManager::new(config).unwrap();
    cache.set_raw_with_tags("warm", b"w", None, &["t"]).unwrap();
    bus.pause();
    std::thread::scope(|scope| {
        // The server is slow for 800 ms: the scenario, not a wait for an event.
        scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(800));
            bus.resume();
        });
        let started = Instant::now();
        let tagged = cache.set_raw_with_tags("k", b"v", None, &["t"]);
        assert!(tagged.is_ok(), "after {:?}: {tagged:?}", started.elapsed());
    });
    assert_eq!(cache.invalidate_tag("t").unwrap(), 2);
}

/// An event naming a key and two tags.
struct Shipped;

impl InvalidationEvent for Shipped {
    fn keys(&self) -> Vec<String> {
        vec!["order:1".to_owned()]
    }
    fn tags(&self) -> Vec<String> {
        vec!["a".to_owned(), "b".to_owned()]
    }
}

#[test]
fn an_event_whose_deletes_l2_refuses_still_drops_every_tagged_key_from_l1() {
    event_whose_deletes_l2_refuses(false);
}

#[test]
fn async_an_event_whose_deletes_l2_refuses_still_drops_every_tagged_key_from_l1() {
    event_whose_deletes_l2_refuses(true);
}

/// L2 refuses every delete: each step of the event (its keys, then each tag) fails, and each
/// must still take its keys out of L1. Stopped at the first failure, the event left the members
/// of its tags in L1, served long after the call.
fn event_whose_deletes_l2_refuses(async_api: bool) {
    let redis = RedisServer::start();
    let cache = without_fallback(&redis);
    cache.set("order:1", "o", None).unwrap();
    cache.set_with_tags("in:a", "v", None, &["a"]).unwrap();
    cache.set_with_tags("in:b", "v", None, &["b"]).unwrap();
    let mut raw = refusing_unlink(&redis);
    let invalidated = if async_api {
        support::block_on(cache.invalidate_event_async(&Shipped))
    } else {
        cache.invalidate_event(&Shipped)
    };
    assert!(invalidated.is_err(), "L2 refused every delete");
    // L2 kept the values: gone by hand, whatever a read still finds is L1's.
    redis::cmd("FLUSHDB").exec(&mut raw).unwrap();
    for key in ["order:1", "in:a", "in:b"] {
        assert_eq!(cache.get::<String>(key).unwrap(), None, "{key} left in L1");
    }
}

#[test]
fn a_tag_whose_l2_deletes_fallback_hid_keeps_its_members_for_a_retry() {
    tag_whose_l2_deletes_fallback_hid(false);
}

#[test]
fn async_a_tag_whose_l2_deletes_fallback_hid_keeps_its_members_for_a_retry() {
    tag_whose_l2_deletes_fallback_hid(true);
}

/// `fallback_on_error` hides L2's failed delete of a tag's members, and without a replay queue
/// (a memory L1) nothing deletes them later: L2 keeps the values. The invalidation then forgot
/// the members all the same and said it succeeded, so no retry was made and none could have
/// found them: once L2 answered again, every instance read the values back, listed by no tag,
/// until their TTL. The call must fail and the tag keep its members, as a prefix's does.
fn tag_whose_l2_deletes_fallback_hid(async_api: bool) {
    let redis = RedisServer::start();
    let cache = CacheManager::new(
        CacheConfig::from_toml_str(&format!(
            r#"
            fallback_on_error = true
            [local]
            type = "memory"
            [distributed]
            enabled = true
            hosts = ["{}"]
            key_prefix = "app:"
            "#,
            redis.addr()
        ))
        .unwrap(),
    )
    .unwrap();
    cache.set_with_tags("k", "v", None, &["t"]).unwrap();
    let mut raw = refusing_unlink(&redis);
    let invalidate = || {
        if async_api {
            support::block_on(cache.invalidate_tag_async("t"))
        } else {
            cache.invalidate_tag("t")
        }
    };
    let first = invalidate();
    let member: Option<String> = redis::cmd("ZSCORE")
        .arg("app:uno-cache:tag:t")
        .arg("k")
        .query(&mut raw)
        .unwrap();
    // L2 answers again: the documented answer to a failed invalidation is a retry.
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("+unlink")
        .exec(&mut raw)
        .unwrap();
    if first.is_err() {
        assert!(member.is_some(), "a failed invalidation forgot its member");
        support::until_ok("the retried invalidation", invalidate);
    }
    let left: Option<Vec<u8>> = redis::cmd("GET").arg("app:k").query(&mut raw).unwrap();
    assert_eq!(
        left, None,
        "L2 kept a member of the invalidated tag (the first call answered {first:?}, its member left the tag: {})",
        member.is_none()
    );
    assert_eq!(cache.get::<String>("k").unwrap(), None);
}
