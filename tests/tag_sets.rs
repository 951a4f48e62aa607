//! Tag sets as Redis holds them: the layout storage-format.md documents (a sorted set scored by
//! the moment, on Redis's clock, until which a member may be read), built by hand and read; what
//! a write of a tag drops; the plain set an earlier version wrote, read and then upgraded; a key
//! tagged again while its tag is invalidated; and a tag too large to read in one command.
//! How tags invalidate across instances is in `tests/consistency_tags.rs`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, Error};

/// One instance over `redis`: a file L1 in `dir`, L2 under `app:`. Tag sets live in L2 alone, so
/// no backplane is needed to read them.
fn config(dir: &Path, redis: &str) -> CacheConfig {
    let mut config = CacheConfig::default();
    config.local.path = Some(dir.to_path_buf());
    config.distributed.enabled = true;
    config.distributed.hosts = vec![redis.to_owned()];
    config.distributed.key_prefix = "app:".to_owned();
    config.distributed.timeout_ms = 500;
    config
}

/// Redis's clock, in Unix ms: the clock tag sets score their members by.
fn redis_now_ms(redis: &RedisServer) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut redis.raw()).unwrap();
    secs * 1000 + micros / 1000
}

/// The number of keys of each `UNLINK` in the server's slow log. It keeps a command's first 31
/// arguments, and for the rest one more saying how many there were.
fn keys_per_unlink(redis: &RedisServer) -> Vec<usize> {
    let entries: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut redis.raw())
        .unwrap();
    entries
        .into_iter()
        .filter_map(|entry| {
            let redis::Value::Array(fields) = entry else {
                panic!("a slow log entry is an array: {entry:?}");
            };
            let args: Vec<String> = redis::from_redis_value(fields[3].clone()).unwrap();
            if !args[0].eq_ignore_ascii_case("UNLINK") {
                return None;
            }
            let last = &args[args.len() - 1];
            let more = last
                .strip_prefix("... (")
                .and_then(|rest| rest.strip_suffix(" more arguments)"))
                .map(|n| n.parse::<usize>().unwrap());
            Some(match more {
                Some(more) => args.len() - 2 + more,
                None => args.len() - 1,
            })
        })
        .collect()
}

/// A tag's members and their scores.
fn scored(redis: &RedisServer, tag: &str) -> Vec<(String, u64)> {
    redis::cmd("ZRANGE")
        .arg(format!("app:uno-cache:tag:{tag}"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query(&mut redis.raw())
        .unwrap()
}

/// The layout storage-format.md gives, built by hand: a sorted set whose scores are the moments
/// (Redis's clock) until which a member may be read. A write of the tag drops the members whose
/// moment is more than a minute gone, and keeps the others. A plain set grew for as long as its
/// tag was written: it held every key the tag was ever given.
#[test]
fn a_write_of_a_tag_drops_the_members_whose_time_ended_a_minute_ago() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    a.set("gone", "g", None).unwrap();
    let now = redis_now_ms(&redis);
    let () = redis::cmd("ZADD")
        .arg("app:uno-cache:tag:t")
        .arg(now - 61_000)
        .arg("ended")
        .arg(now - 30_000)
        .arg("ending")
        .arg(now + 600_000)
        .arg("gone")
        .query(&mut redis.raw())
        .unwrap();
    a.set_with_tags("new", "n", Some(Duration::from_secs(10)), &["t"])
        .unwrap();
    let after = redis_now_ms(&redis);
    let members = scored(&redis, "t");
    let names: Vec<&str> = members.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(names, ["ending", "new", "gone"], "{members:?}");
    let new = members[1].1;
    // A tagged write tags its key twice (once more when its value can be read from L2); the
    // second tagging, in the same ms of Redis's clock as the first, moves the score one ms on.
    assert!(
        (now + 10_000..=after + 10_001).contains(&new),
        "scored {new}, written between {now} and {after} with 10 s to live"
    );
    // A shorter write later never cuts a member's time (each of its two taggings moves it by a
    // ms, so that an invalidation that read the member before leaves it tagged).
    a.set_with_tags("gone", "g", Some(Duration::from_secs(1)), &["t"])
        .unwrap();
    assert_eq!(scored(&redis, "t")[2], ("gone".to_owned(), now + 600_002));
    // And the members still kept are invalidated.
    assert_eq!(a.invalidate_tag("t").unwrap(), 3);
    assert_eq!(a.get::<String>("gone").unwrap(), None);
    assert_eq!(a.get::<String>("new").unwrap(), None);
}

/// A tag set of an earlier version (a plain Redis set, with a TTL) is read and forgotten as it
/// is, and turned into a sorted set by the next write of its tag, its members scored with the
/// set's expiry.
#[test]
fn a_plain_tag_set_an_earlier_version_wrote_is_read_and_then_turned_into_a_sorted_set() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    let old_set = |tag: &str, members: &[&str]| {
        let key = format!("app:uno-cache:tag:{tag}");
        let () = redis::cmd("SADD")
            .arg(&key)
            .arg(members)
            .query(&mut redis.raw())
            .unwrap();
        let () = redis::cmd("PEXPIRE")
            .arg(&key)
            .arg(600_000)
            .query(&mut redis.raw())
            .unwrap();
        let at: u64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query(&mut redis.raw())
            .unwrap();
        at
    };
    a.set("a", "1", None).unwrap();
    a.set("b", "2", None).unwrap();
    old_set("t", &["a", "b"]);
    assert_eq!(a.invalidate_tag("t").unwrap(), 2);
    assert_eq!(a.get::<String>("a").unwrap(), None);
    let exists: i64 = redis::cmd("EXISTS")
        .arg("app:uno-cache:tag:t")
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(exists, 0, "its members were forgotten");

    a.set("c", "3", None).unwrap();
    let expiry = old_set("u", &["c"]);
    a.set_with_tags("d", "4", Some(Duration::from_secs(10)), &["u"])
        .unwrap();
    let kind: String = redis::cmd("TYPE")
        .arg("app:uno-cache:tag:u")
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(kind, "zset");
    let members = scored(&redis, "u");
    assert_eq!(members[0], ("d".to_owned(), members[0].1));
    assert_eq!(members[1], ("c".to_owned(), expiry));
    let set_expiry: u64 = redis::cmd("PEXPIRETIME")
        .arg("app:uno-cache:tag:u")
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(
        set_expiry,
        expiry + 60_000,
        "the set outlives its members by the minute"
    );
    assert_eq!(a.invalidate_tag("u").unwrap(), 2);
    assert_eq!(a.get::<String>("c").unwrap(), None);
}

/// A member another program put in a tag's set that is not UTF-8 (no cache key is) is passed
/// over, and left there: read as text, it failed the read of the tag, and so every invalidation
/// of the tag.
#[test]
fn an_invalidation_passes_over_a_member_that_is_not_utf8() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    a.set_with_tags("k", "v", Some(Duration::from_secs(60)), &["t"])
        .unwrap();
    let foreign = b"\xff\xfe not a key".to_vec();
    let () = redis::cmd("ZADD")
        .arg("app:uno-cache:tag:t")
        .arg(redis_now_ms(&redis) + 600_000)
        .arg(&foreign)
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(a.invalidate_tag("t").unwrap(), 1);
    assert_eq!(a.get::<String>("k").unwrap(), None);
    let left: Vec<Vec<u8>> = redis::cmd("ZRANGE")
        .arg("app:uno-cache:tag:t")
        .arg(0)
        .arg(-1)
        .query(&mut redis.raw())
        .unwrap();
    assert_eq!(left, [foreign]);
}

/// The scripts the manager runs on tag sets, run by hand here to interleave them.
const ADD: &str = concat!(
    include_str!("../src/manager/tag_scripts/convert.lua"),
    include_str!("../src/manager/tag_scripts/add.lua")
);
const SORTED: &str = concat!(
    include_str!("../src/manager/tag_scripts/convert.lua"),
    include_str!("../src/manager/tag_scripts/sorted.lua")
);
const FORGET: &str = include_str!("../src/manager/tag_scripts/forget.lua");

/// An invalidation reads a tag's members, deletes them, then forgets them. A key tagged again
/// in between (another instance's `set_with_tags`, whose value lands after the delete) must stay
/// in the set: forgotten, the next invalidation of the tag missed the new value. Its score
/// changes with every write of the tag, even a shorter one, and forgetting asks for the score
/// it read. The same holds for a plain set of an earlier version, which the read turns into a
/// sorted set first.
#[test]
fn a_key_tagged_again_while_its_tag_is_invalidated_stays_in_the_tag() {
    let redis = RedisServer::start();
    let mut raw = redis.raw();
    let set = "app:uno-cache:tag:t";
    let eval = |raw: &mut redis::Connection, script: &str, args: &[&str]| {
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(set)
            .arg(args)
            .exec(raw)
            .unwrap();
    };
    // As `invalidate_tag` reads: the set made sorted, then its members with their scores.
    let read = |raw: &mut redis::Connection| -> Vec<String> {
        eval(raw, SORTED, &["60000"]);
        redis::cmd("ZRANGE")
            .arg(set)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(raw)
            .unwrap()
    };
    let members = |raw: &mut redis::Connection| -> Vec<String> {
        redis::cmd("ZRANGE").arg(set).arg(0).arg(-1).query(raw).unwrap()
    };
    for plain in [false, true] {
        if plain {
            redis::cmd("SADD")
                .arg(set)
                .arg(&["k", "other"])
                .exec(&mut raw)
                .unwrap();
            redis::cmd("PEXPIRE")
                .arg(set)
                .arg(600_000)
                .exec(&mut raw)
                .unwrap();
        } else {
            eval(&mut raw, ADD, &["600000", "60000", "k", "other"]);
        }
        let pairs = read(&mut raw);
        assert_eq!(pairs.len(), 4, "{pairs:?}");
        // Tagged again, with a shorter TTL, between the read and the forget.
        eval(&mut raw, ADD, &["1000", "60000", "k"]);
        let pairs: Vec<&str> = pairs.iter().map(String::as_str).collect();
        eval(&mut raw, FORGET, &pairs);
        assert_eq!(
            members(&mut raw),
            ["k"],
            "plain: {plain}: the key tagged again was forgotten with the one read once"
        );
        redis::cmd("DEL").arg(set).exec(&mut raw).unwrap();
    }

    // Through the manager, a member not tagged again is forgotten.
    eval(&mut raw, ADD, &["600000", "60000", "k"]);
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    assert_eq!(a.invalidate_tag("t").unwrap(), 1);
    let exists: i64 = redis::cmd("EXISTS").arg(set).query(&mut raw).unwrap();
    assert_eq!(exists, 0);
}

/// A tag of 60,000 members, read, deleted and forgotten in round trips of a thousand, each
/// within a 100 ms timeout. Read in one command, such a tag took longer than that (a `SMEMBERS` or
/// `ZRANGE` of 100,000 members takes Redis 50 to 90 ms, its reply longer to arrive), and every
/// invalidation of it timed out: the tag could not be invalidated at all.
#[test]
fn a_tag_of_sixty_thousand_members_is_invalidated_with_a_short_timeout() {
    const MEMBERS: usize = 60_000;
    let redis = RedisServer::start();
    let config = CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "memory"
        [distributed]
        enabled = true
        hosts = ["{}"]
        key_prefix = "app:"
        timeout_ms = 100
        "#,
        redis.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set_with_tags("k:0", "v", None, &["big"]).unwrap();
    let until = redis_now_ms(&redis) + 600_000;
    let mut raw = redis.raw();
    for chunk in (1..MEMBERS).collect::<Vec<_>>().chunks(5_000) {
        let mut cmd = redis::cmd("ZADD");
        cmd.arg("app:uno-cache:tag:big");
        for i in chunk {
            cmd.arg(until).arg(format!("k:{i}"));
        }
        cmd.exec(&mut raw).unwrap();
    }
    // Every command logged from here on, to count the keys of each `UNLINK` (and those the
    // forget script runs, two per member).
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(0)
        .arg("slowlog-max-len")
        .arg(4 * MEMBERS)
        .exec(&mut raw)
        .unwrap();
    redis::cmd("SLOWLOG").arg("RESET").exec(&mut raw).unwrap();
    assert_eq!(cache.invalidate_tag("big").unwrap(), MEMBERS as u64);
    assert_eq!(cache.get::<String>("k:0").unwrap(), None);
    // Deleted a thousand keys per round trip: one `UNLINK` of a tag some times larger would
    // take its round trip past the timeout (see `TAG_DELETE_STEP` in the manager).
    let unlinks = keys_per_unlink(&redis);
    assert_eq!(unlinks.iter().sum::<usize>(), MEMBERS, "{unlinks:?}");
    assert!(unlinks.iter().all(|&n| n <= 1_000), "{unlinks:?}");
    let exists: i64 = redis::cmd("EXISTS")
        .arg("app:uno-cache:tag:big")
        .query(&mut raw)
        .unwrap();
    assert_eq!(exists, 0, "every member was forgotten");
}

/// storage-format.md ("Tag sets") lists what tags need of an ACL user: `EVAL`, the commands of
/// the scripts, and `ZSCAN`, the read of a tag (a `ZRANGE` of a large tag outran the timeout and
/// was replaced; the list still named it, and not `ZSCAN`). A user granted those and the L2's
/// own commands (a `NOPERM`'s advice), and nothing else, tags, invalidates and turns an earlier
/// version's plain set into a sorted set; one refused `ZSCAN` is told by the invalidation that
/// the ACL refuses it.
#[test]
fn an_acl_user_granted_the_commands_storage_format_lists_uses_tags_and_needs_zscan() {
    let l2 = ["+get", "+mget", "+set", "+unlink", "+scan", "+strlen", "+ping"];
    let tags = [
        "+eval",
        "+time",
        "+type",
        "+pexpiretime",
        "+pexpireat",
        "+smembers",
        "+srem",
        "+del",
        "+zadd",
        "+zscore",
        "+zrem",
        "+zremrangebyscore",
        "+zscan",
    ];
    let mut args = vec!["--user", "listed", "on", ">pw", "~*", "-@all"];
    args.extend(l2.iter().chain(&tags));
    args.extend(["--user", "noscan", "on", ">pw", "~*", "+@all", "-zscan"]);
    let redis = RedisServer::start_with(&args, None);
    let as_user = |user: &str, dir: &Path| {
        let mut config = config(dir, &format!("redis://{user}:pw@{}/", redis.addr()));
        config.fallback_on_error = false;
        CacheManager::new(config).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let cache = as_user("listed", dir.path());
    cache.set_with_tags("a", &1u32, None, &["t"]).unwrap();
    cache.invalidate_tag("t").unwrap();
    assert_eq!(cache.get::<u32>("a").unwrap(), None);
    assert_eq!(scored(&redis, "t"), Vec::new(), "the tag forgot its member");
    // An earlier version's plain set, turned by a write and by an invalidation.
    for tag in ["old1", "old2"] {
        let () = redis::cmd("SADD")
            .arg(format!("app:uno-cache:tag:{tag}"))
            .arg("x")
            .query(&mut redis.raw())
            .unwrap();
    }
    cache.set_with_tags("b", &2u32, None, &["old1"]).unwrap();
    cache.invalidate_tag("old1").unwrap();
    cache.invalidate_tag("old2").unwrap();
    assert_eq!(cache.get::<u32>("b").unwrap(), None);
    drop(cache);

    let dir = tempfile::tempdir().unwrap();
    let cache = as_user("noscan", dir.path());
    cache.set_with_tags("c", &3u32, None, &["u"]).unwrap();
    let err = cache.invalidate_tag("u").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
    assert!(
        text.contains("ACL refuses") && text.to_lowercase().contains("'zscan'"),
        "{text}"
    );
}

/// `clear` of the Redis level deletes the values under its prefix and leaves the tag sets there,
/// as a prefix deletion does: an L1 copy of a tagged key outlives the values in L2, and only its
/// tag's set leads an invalidation of the tag to it. Deleted with the values, the set was gone,
/// the invalidation found no member, and the copy was still served after it.
#[test]
fn a_clear_of_the_redis_level_leaves_the_tag_sets_so_an_invalidation_still_reaches_l1() {
    use uno_cache::{RedisOptions, RedisStore, Storage};
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = CacheManager::new(config(dir.path(), &redis.addr())).unwrap();
    a.set_with_tags("k", "v", Some(Duration::from_secs(600)), &["t"])
        .unwrap();
    let level = RedisStore::connect(
        RedisOptions::new(redis.addr())
            .prefix("app:")
            .timeout(Duration::from_secs(5)),
    )
    .unwrap();
    assert_eq!(
        level.size().unwrap().items,
        1,
        "the value; a tag's set is no item"
    );
    level.clear().unwrap();
    assert_eq!(level.get("k").unwrap(), None, "the value went from L2");
    let members: Vec<String> = scored(&redis, "t").into_iter().map(|(m, _)| m).collect();
    assert_eq!(members, ["k"], "the tag's set stays");
    assert_eq!(a.invalidate_tag("t").unwrap(), 1);
    assert_eq!(a.get::<String>("k").unwrap(), None, "L1's copy went with its tag");
}
