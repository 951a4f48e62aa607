//! A walk of every primary of a real three-primary Redis Cluster (`clear`, `size`, a prefix
//! invalidation) that a resharding overlaps fails naming the slots that moved, instead of
//! saying `Ok`: a key that moved from a primary not walked yet to one walked already was seen
//! by neither, and a prefix invalidation that said `Ok` left its value in L2 for every instance
//! to read back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::sync::mpsc;

use support::{RedisCluster, RedisServer};
use uno_cache::{CacheConfig, CacheManager, Error, Storage};

fn node_id(node: &RedisServer) -> String {
    redis::cmd("CLUSTER").arg("MYID").query(&mut node.raw()).unwrap()
}

/// `CLUSTER SETSLOT` on `node`. A node may refuse to mark a slot it was just given as moving
/// out ("I'm not the owner") until gossip has settled the slot's new epoch: retried.
fn set_slot(node: &RedisServer, slot: u16, state: &str, id: Option<&str>) {
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SETSLOT").arg(slot).arg(state);
    if let Some(id) = id {
        cmd.arg(id);
    }
    let mut conn = node.raw();
    support::until_ok(&format!("SETSLOT {slot} {state} on {}", node.port), || {
        cmd.query::<()>(&mut conn)
    });
}

/// Keys under `pattern` on every node, each asked directly.
fn keys_left(cluster: &RedisCluster, pattern: &str) -> Vec<String> {
    let mut left = Vec::new();
    for node in &cluster.nodes {
        let mut conn = node.raw();
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
        left.extend(keys);
    }
    left
}

/// Moves `slot` and its keys from `from` to `to` as `redis-cli --cluster reshard` does: both
/// nodes marked (then `marked` is called), the keys migrated one by one, then the new owner
/// set on every node; returns once every node agrees on the owner and the epoch, so that the
/// next move does not race the gossip of this one (a node that gives a slot back before it
/// heard of the epoch its taker bumped to can lose the tie, and refuse the next move).
fn move_slot(cluster: &RedisCluster, slot: u16, (from, to): (usize, usize), marked: impl FnOnce()) {
    let (from_node, to_node) = (&cluster.nodes[from], &cluster.nodes[to]);
    let (from_id, to_id) = (node_id(from_node), node_id(to_node));
    set_slot(to_node, slot, "IMPORTING", Some(&from_id));
    set_slot(from_node, slot, "MIGRATING", Some(&to_id));
    marked();
    let mut conn = from_node.raw();
    loop {
        let keys: Vec<String> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(1)
            .query(&mut conn)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        let () = redis::cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to_node.port)
            .arg("")
            .arg(0)
            .arg(5_000)
            .arg("REPLACE")
            .arg("KEYS")
            .arg(&keys)
            .query(&mut conn)
            .unwrap();
    }
    set_slot(to_node, slot, "NODE", Some(&to_id));
    set_slot(from_node, slot, "NODE", Some(&to_id));
    for (i, node) in cluster.nodes.iter().enumerate() {
        if i != from && i != to {
            set_slot(node, slot, "NODE", Some(&to_id));
        }
    }
    support::wait_until("every node agreeing on the moved slot's owner and epoch", || {
        let epochs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| {
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut node.raw()).unwrap();
                info.lines()
                    .find(|l| l.starts_with("cluster_current_epoch:"))
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        epochs.iter().all(|e| *e == epochs[0])
            && (0..cluster.nodes.len()).all(|asked| cluster.port_of_slot_asking(asked, slot) == to_node.port)
    });
}

/// A slot left marked as moving (both of its nodes marked, as during a migration): `clear`,
/// `size` and a manager's prefix invalidation each fail naming the slot, after having handled
/// what they found (the keys of other slots are gone); once the mark is gone, all three answer
/// `Ok` again.
#[test]
fn a_walk_while_a_slot_is_marked_as_moving_fails_naming_the_slot() {
    let cluster = RedisCluster::start();
    let redis = cluster.store("mv:");
    let tag = cluster.key_on(0, "m");
    let slot = cluster.keyslot(&format!("mv:{tag}"));
    for i in 0..300 {
        redis.set(&format!("k{i}"), b"v", None).unwrap();
    }
    redis.set(&format!("{tag}x"), b"v", None).unwrap();
    let (source, destination) = (&cluster.nodes[0], &cluster.nodes[1]);
    set_slot(destination, slot, "IMPORTING", Some(&node_id(source)));
    set_slot(source, slot, "MIGRATING", Some(&node_id(destination)));

    let named = format!("hash slots {slot} moved between primaries while the walk ran");
    let err = redis.size().unwrap_err();
    assert!(err.to_string().contains(&named), "{err}");
    let err = redis.clear().unwrap_err();
    assert!(
        matches!(&err, Error::WalkIncomplete { op: "clear", .. }) && err.to_string().contains(&named),
        "{err}"
    );
    assert_eq!(
        keys_left(&cluster, "mv:k*"),
        Vec::<String>::new(),
        "the walk went on"
    );

    // A file L1 lists its keys, so the calls' counts are exact.
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = cluster.addrs().iter().map(|h| format!("{h:?}")).collect();
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = {:?}\ndurability = \"none\"\n[distributed]\nenabled = true\ncluster = true\n\
         timeout_ms = 500\nkey_prefix = \"mv:\"\nhosts = [{}]\n",
        dir.path(),
        hosts.join(", ")
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set("user:1", &1u32, None).unwrap();
    let err = cache.invalidate_prefix("user:").unwrap_err();
    assert!(err.to_string().contains(&named), "{err}");
    assert_eq!(
        cache.get::<u32>("user:1").unwrap(),
        None,
        "deleted before the error"
    );

    for node in [source, destination] {
        set_slot(node, slot, "STABLE", None);
    }
    cache.set("user:2", &2u32, None).unwrap();
    assert_eq!(cache.invalidate_prefix("user:").unwrap(), 1);
    redis.set("k0", b"v", None).unwrap();
    assert_eq!(redis.size().unwrap().items, 1);
    redis.clear().unwrap();
    assert_eq!(keys_left(&cluster, "mv:*"), Vec::<String>::new());
}

/// A slot whose keys are moved between two primaries, as a resharding moves them, while
/// `clear` walks: every `clear` that answers `Ok` left no key behind, and those that fail say
/// that a slot moved. Each round writes keys into the moving slot and others, starts a move
/// the other way than the last, clears once both nodes are marked, and counts what is left
/// once the move is over. Most such walks fail on the `UNLINK` of a migrated key; without the
/// walk's own check, one round in four to twelve said `Ok` with keys of the slot left.
#[test]
fn a_clear_that_a_resharding_overlaps_never_says_ok_with_keys_left() {
    let cluster = RedisCluster::start();
    let redis = cluster.store("rs:");
    let tag = cluster.key_on(0, "r");
    let slot = cluster.keyslot(&format!("rs:{tag}"));
    let mut owner = 0;
    let mut moved_errors = 0;
    for round in 0..16 {
        // The client may be sent on by MOVED after a move, until its map has the new owner.
        for i in 0..150 {
            support::until_ok("set", || redis.set(&format!("{tag}{i}"), b"v", None));
        }
        for i in 0..1_500 {
            support::until_ok("set", || redis.set(&format!("other{i}"), b"v", None));
        }
        let to = 1 - owner;
        let (marked, moving) = mpsc::channel();
        let outcome = std::thread::scope(|scope| {
            let mover = scope.spawn(|| move_slot(&cluster, slot, (owner, to), || marked.send(()).unwrap()));
            moving.recv().unwrap();
            let outcome = redis.clear();
            mover.join().unwrap();
            outcome
        });
        owner = to;
        let left = keys_left(&cluster, "rs:*");
        match outcome {
            Ok(()) => assert_eq!(left, Vec::<String>::new(), "round {round}: Ok with keys left"),
            // The walk's own check, or a request of the walk caught by the move: an `UNLINK`
            // of several of the slot's keys while some are migrated (`TRYAGAIN`), redirects the
            // client gave up following, or a request the client's link stalled on.
            Err(err) => {
                let text = err.to_string();
                assert!(
                    text.contains(&format!("hash slots {slot} moved between primaries"))
                        || text.contains("hash slot is being moved to another node")
                        || text.contains(&format!("Moved: {slot} "))
                        || text.contains(&format!("Ask: {slot} "))
                        || text.contains("no reply within the cluster client's own response timeout"),
                    "round {round}: {err}"
                );
                moved_errors += 1;
            }
        }
        // A clear whose request timed out replaced the connection: the next one is served.
        support::until_ok("clear", || redis.clear());
    }
    assert!(
        moved_errors > 0,
        "no clear overlapped a move: the test moved nothing"
    );
}

/// The cluster map a walk reads (one node's `CLUSTER SLOTS`) may be stale: a node that has not
/// heard of a primary yet (gossip lag after one joins and is given slots; here the seed asked
/// forgets it, which holds that view for a minute) leaves that primary's slots out, and its
/// keys were never walked while `size` counted short and `clear` said `Ok`. Each walked
/// primary's `CLUSTER NODES` places those slots on a node not walked: the walk fails naming
/// them, after handling the keys it found.
#[test]
fn a_walk_whose_map_lacks_a_primary_fails_naming_its_slots() {
    let cluster = RedisCluster::start_with(&["--cluster-require-full-coverage", "no"]);
    let everyone = cluster.store("gl:");
    let (on_0, on_2) = (cluster.key_on(0, "a"), cluster.key_on(2, "c"));
    everyone.set(&on_0, b"v", None).unwrap();
    everyone.set(&on_2, b"v", None).unwrap();
    let forgotten = node_id(&cluster.nodes[2]);
    let () = redis::cmd("CLUSTER")
        .arg("FORGET")
        .arg(&forgotten)
        .query(&mut cluster.nodes[0].raw())
        .unwrap();
    let slot_2 = cluster.keyslot(&format!("gl:{on_2}"));
    let unaware = uno_cache::RedisStore::connect(
        uno_cache::RedisOptions::with_hosts(vec![cluster.nodes[0].addr()])
            .cluster(true)
            .prefix("gl:")
            .timeout(std::time::Duration::from_millis(500)),
    )
    .unwrap();

    let named = "were not walked: a primary's CLUSTER NODES assigns them to a node";
    let err = unaware.size().unwrap_err();
    assert!(err.to_string().contains(named), "{err}");
    let err = unaware.clear().unwrap_err();
    let text = err.to_string();
    assert!(text.contains(named) && text.contains("10923-16383"), "{err}");
    assert!(
        (10_923..=16_383).contains(&slot_2),
        "node 2 serves the last third"
    );
    assert_eq!(
        keys_left(&cluster, "gl:*"),
        vec![format!("gl:{on_2}")],
        "the key on the walked primary was deleted, the other left (and named)"
    );
}

/// A slot moved away and back while a walk ran leaves every primary's slots as they were at its
/// start; a key of that slot was on the walked-already primary while the other was walked, and
/// would have been missed. The primary that took the slot back bumped its config epoch: the
/// walk fails naming it. The walk is held on its last primary (writes paused there: its
/// `UNLINK` waits, its reads do not) while the slot goes there and back between the other two.
#[test]
fn a_walk_during_which_a_slot_moved_away_and_back_fails_naming_its_primary() {
    let cluster = RedisCluster::start();
    let redis = uno_cache::RedisStore::connect(
        uno_cache::RedisOptions::with_hosts(cluster.addrs())
            .cluster(true)
            .prefix("ab:")
            .timeout(std::time::Duration::from_secs(60)),
    )
    .unwrap();
    // A walk goes over the primaries in the order of their addresses.
    let mut order: Vec<usize> = (0..cluster.nodes.len()).collect();
    order.sort_by_key(|&i| cluster.nodes[i].port);
    let (first, second, last) = (order[0], order[1], order[2]);
    for (i, node) in order.iter().enumerate() {
        redis
            .set(&cluster.key_on(*node, &format!("n{i}")), b"v", None)
            .unwrap();
    }
    let slot = cluster.keyslot(&format!("ab:{}", cluster.key_on(first, "s")));
    let epoch_of = |node: usize| -> String {
        let nodes: String = redis::cmd("CLUSTER")
            .arg("NODES")
            .query(&mut cluster.nodes[node].raw())
            .unwrap();
        let own = nodes.lines().find(|l| l.contains("myself")).unwrap();
        own.split(' ').nth(6).unwrap().to_owned()
    };
    let epoch_before = epoch_of(first);
    let mut held = cluster.nodes[last].raw();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut held)
        .unwrap();

    let outcome = std::thread::scope(|scope| {
        let walk = scope.spawn(|| redis.clear());
        support::wait_until("the walk past the first two primaries", || {
            [first, second].iter().all(|&node| {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg("ab:*")
                    .query(&mut cluster.nodes[node].raw())
                    .unwrap();
                keys.is_empty()
            })
        });
        move_slot(&cluster, slot, (first, second), || ());
        move_slot(&cluster, slot, (second, first), || ());
        let () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut held).unwrap();
        walk.join().unwrap()
    });

    assert_eq!(cluster.node_of_slot(slot), first, "the slot came back");
    let epoch_after = epoch_of(first);
    assert_ne!(epoch_before, epoch_after, "taking the slot back bumped the epoch");
    let err = outcome.unwrap_err();
    let port = cluster.nodes[first].port;
    let named = format!("(those 127.0.0.1:{port} serves; its config epoch went from {epoch_before} to ");
    let text = err.to_string();
    assert!(
        matches!(&err, Error::WalkIncomplete { op: "clear", .. }) && text.contains(&named),
        "{err}"
    );
    assert_eq!(
        keys_left(&cluster, "ab:*"),
        Vec::<String>::new(),
        "the keys found were deleted"
    );
    redis.clear().unwrap();
}

/// A migration begun and undone while a walk runs (a slot's key moved to another primary and
/// back, both nodes marked meanwhile, the marks cleared at the end; an aborted resharding
/// rolled back) leaves every primary's slots, marks and config epoch as they were at the
/// walk's start: no `CLUSTER SETSLOT … NODE` ran, so no epoch was bumped. The key was on the
/// last primary while the first was walked, and back on the first when the last was; `clear`
/// must not answer `Ok` with it left, served. The walk is held twice on the middle primary:
/// its `CLUSTER NODES` paused (`CLIENT PAUSE ALL`, which nothing lifts before it expires)
/// while the key leaves the first, then its `UNLINK` (`CLIENT PAUSE WRITE`, queued behind the
/// walk's request) while the key comes back.
#[test]
fn a_walk_during_which_a_key_moved_away_and_back_unmarked_at_both_ends_never_says_ok() {
    let cluster = RedisCluster::start();
    let redis = uno_cache::RedisStore::connect(
        uno_cache::RedisOptions::with_hosts(cluster.addrs())
            .cluster(true)
            .prefix("rb:")
            .timeout(std::time::Duration::from_secs(60)),
    )
    .unwrap();
    let mut order: Vec<usize> = (0..cluster.nodes.len()).collect();
    order.sort_by_key(|&i| cluster.nodes[i].port);
    let (first, middle, last) = (order[0], order[1], order[2]);
    let hidden = cluster.key_on(first, "k");
    let slot = cluster.keyslot(&format!("rb:{hidden}"));
    redis.set(&hidden, b"old", None).unwrap();
    // Others on the first and the middle primary: the first's walked once it has none left,
    // and the middle one's `UNLINK` holds the walk.
    let on_first = (0..)
        .map(|i| cluster.key_on(first, &format!("f{i}")))
        .find(|key| cluster.keyslot(&format!("rb:{key}")) != slot)
        .unwrap();
    redis.set(&on_first, b"v", None).unwrap();
    redis.set(&cluster.key_on(middle, "m"), b"v", None).unwrap();
    let (first_node, middle_node, last_node) = (
        &cluster.nodes[first],
        &cluster.nodes[middle],
        &cluster.nodes[last],
    );
    let (first_id, last_id) = (node_id(first_node), node_id(last_node));
    let views_read = [first_node, last_node].map(|node| node.command_calls("cluster|nodes"));
    let migrate = |from: &RedisServer, to: &RedisServer, asking: bool| {
        let mut pipe = redis::pipe();
        if asking {
            pipe.cmd("ASKING").ignore();
        }
        pipe.cmd("MIGRATE")
            .arg("127.0.0.1")
            .arg(to.port)
            .arg("")
            .arg(0)
            .arg(5_000)
            .arg("KEYS")
            .arg(format!("rb:{hidden}"))
            .ignore();
        let () = pipe.query(&mut from.raw()).unwrap();
    };

    let mut paused = middle_node.raw();
    let () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2_000)
        .arg("ALL")
        .query(&mut paused)
        .unwrap();
    let outcome = std::thread::scope(|scope| {
        let walk = scope.spawn(|| redis.clear());
        support::wait_until(
            "the walk reading the views of the first and last primaries",
            || {
                [first_node, last_node]
                    .iter()
                    .zip(views_read)
                    .all(|(node, before)| node.command_calls("cluster|nodes") > before)
            },
        );
        // Runs once the pause expires, right after the walk's `CLUSTER NODES` queued before it.
        let second_hold = scope.spawn(|| {
            let () = redis::cmd("CLIENT")
                .arg("PAUSE")
                .arg(60_000)
                .arg("WRITE")
                .query(&mut middle_node.raw())
                .unwrap();
        });
        set_slot(last_node, slot, "IMPORTING", Some(&first_id));
        set_slot(first_node, slot, "MIGRATING", Some(&last_id));
        migrate(first_node, last_node, false);
        second_hold.join().unwrap();
        support::wait_until("the walk past the first primary", || {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("rb:*")
                .query(&mut first_node.raw())
                .unwrap();
            keys.is_empty()
        });
        // The move undone: the first primary takes its key back, and both marks go.
        set_slot(first_node, slot, "STABLE", None);
        migrate(last_node, first_node, true);
        set_slot(last_node, slot, "STABLE", None);
        let () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut paused).unwrap();
        walk.join().unwrap()
    });

    assert_eq!(cluster.node_of_slot(slot), first, "the slot never changed owner");
    assert!(
        redis.get(&hidden).unwrap().is_some(),
        "the key is served, as it was"
    );
    let left = keys_left(&cluster, "rb:*");
    assert_eq!(left, vec![format!("rb:{hidden}")], "the walk missed it");
    // Without the primaries' command counts, this walk answered `Ok` with the key left.
    let named = format!("(those 127.0.0.1:{} serves; it ran MIGRATE", first_node.port);
    assert!(
        matches!(&outcome, Err(Error::WalkIncomplete { op: "clear", .. }))
            && outcome.as_ref().unwrap_err().to_string().contains(&named),
        "{outcome:?}"
    );
    redis.clear().unwrap();
    assert_eq!(keys_left(&cluster, "rb:*"), Vec::<String>::new());
}
