//! What a caller sees of a partial batch (`Error::PartialBatch`) through the manager when
//! `fallback_on_error = false`: `failed` lists the keys not served and `unreached()` those whose
//! node was down, as indices into the caller's batch (not into the part of it that reached L2).
//! The L2 is a two-node level of our own, one node down; the real servers' partial batches are
//! in `tests/manager_partial_writes.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "support/delegate.rs"]
mod delegate;

use std::sync::Arc;
use std::time::Duration;

use delegate::{Delegate, Wrap};
use uno_cache::{CacheConfig, CacheManager, Error, MemoryStore, Served, Storage};

/// A two-node level of our own: keys starting with "down:" live on a node that is down.
struct HalfDown(MemoryStore);

fn node_down() -> Error {
    Error::Backend {
        level: "half",
        op: "node",
        reason: "node down".into(),
    }
}

fn partial(op: &'static str, total: usize, failed: Vec<usize>, served: Served) -> Error {
    Error::PartialBatch(Box::new(uno_cache::PartialBatch::new(
        "half",
        op,
        total,
        failed,
        Vec::new(),
        node_down(),
        served,
    )))
}

impl Wrap for HalfDown {
    type Inner = MemoryStore;
    fn inner(&self) -> &MemoryStore {
        &self.0
    }
    fn name(&self) -> &str {
        "half"
    }
    fn get(&self, key: &str) -> uno_cache::Result<Option<uno_cache::Entry>> {
        if key.starts_with("down:") {
            return Err(node_down());
        }
        self.0.get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> uno_cache::Result<()> {
        if key.starts_with("down:") {
            return Err(node_down());
        }
        self.0.set(key, value, ttl)
    }
    fn delete(&self, key: &str) -> uno_cache::Result<bool> {
        if key.starts_with("down:") {
            return Err(node_down());
        }
        self.0.delete(key)
    }
    fn get_many(&self, keys: &[&str]) -> uno_cache::Result<Vec<Option<uno_cache::Entry>>> {
        let mut failed = Vec::new();
        let mut found = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if key.starts_with("down:") {
                failed.push(i);
                found.push(None);
            } else {
                found.push(self.0.get(key)?);
            }
        }
        if failed.is_empty() {
            return Ok(found);
        }
        Err(partial("get_many", keys.len(), failed, Served::Entries(found)))
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> uno_cache::Result<()> {
        let mut failed = Vec::new();
        // Keys starting with "big:" are refused as too large, as a Memcached server whose item
        // limit is below the store's refuses them.
        let mut refused = Vec::new();
        for (i, (key, value)) in items.iter().enumerate() {
            if key.starts_with("down:") {
                failed.push(i);
            } else if key.starts_with("big:") {
                failed.push(i);
                refused.push(i);
            } else {
                self.0.set(key, value, ttl)?;
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        if refused.is_empty() {
            return Err(partial("set_many", items.len(), failed, Served::Written));
        }
        let too_large = Error::ValueTooLarge {
            key: items[refused[0]].0.to_owned(),
            len: items[refused[0]].1.len(),
            max: 0,
            store: "half".to_owned(),
        };
        Err(Error::PartialBatch(Box::new(uno_cache::PartialBatch::new(
            "half",
            "set_many",
            items.len(),
            failed,
            refused,
            too_large,
            Served::Written,
        ))))
    }
    fn delete_many(&self, keys: &[&str]) -> uno_cache::Result<u64> {
        let mut failed = Vec::new();
        let mut removed = 0;
        for (i, key) in keys.iter().enumerate() {
            if key.starts_with("down:") {
                failed.push(i);
            } else if self.0.delete(key)? {
                removed += 1;
            }
        }
        if failed.is_empty() {
            return Ok(removed);
        }
        Err(partial(
            "delete_many",
            keys.len(),
            failed,
            Served::Removed(removed),
        ))
    }
}

fn manager() -> CacheManager {
    manager_and_l2().0
}

/// The manager and its L2, to write there behind the manager's back.
fn manager_and_l2() -> (CacheManager, Arc<Delegate<HalfDown>>) {
    let config = CacheConfig {
        fallback_on_error: false,
        ..CacheConfig::default()
    };
    let l2 = Arc::new(Delegate(HalfDown(MemoryStore::new(100).unwrap())));
    let cache = CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(100).unwrap()))
        .distributed(Arc::new(uno_cache::InProcess::shared(Arc::clone(&l2))))
        .build()
        .unwrap();
    (cache, l2)
}

/// The values a partial batch read says it found, sorted by key.
fn found_of(err: &Error) -> Vec<(String, Vec<u8>)> {
    let Error::PartialBatch(p) = err else {
        panic!("not a PartialBatch: {err:?}")
    };
    let Served::Found(found) = &p.served else {
        panic!("a batch read serves what it found, got {:?}", p.served)
    };
    let mut found: Vec<_> = found.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    found.sort();
    found
}

fn failed_of(err: &Error) -> (Vec<usize>, Vec<usize>, usize) {
    let Error::PartialBatch(p) = err else {
        panic!("not a PartialBatch: {err:?}")
    };
    (p.failed.clone(), p.unreached(), p.total)
}

#[test]
fn a_partial_multi_set_names_the_unreached_item() {
    let cache = manager();
    let err = cache
        .multi_set_raw(&[("up:a", &b"1"[..]), ("down:b", b"2")], None)
        .unwrap_err();
    assert_eq!(failed_of(&err), (vec![1], vec![1], 2), "{err}");
}

#[test]
fn without_fallback_a_set_l2_failed_is_taken_out_of_l1_so_no_instance_serves_it() {
    let (cache, l2) = manager_and_l2();
    // L1 and L2 hold the old value (written behind the manager's back: the node of "down:"
    // keys is down); L2 then fails the write of the new one.
    l2.inner().set("down:k", b"old", None).unwrap();
    cache.local().set("down:k", b"old", None).unwrap();
    let err = cache.set_raw("down:k", b"new", None).unwrap_err();
    assert!(matches!(err, Error::Backend { .. }), "{err}");
    // Every other instance reads L2's "old"; this one must not keep "new" in L1.
    assert_eq!(cache.local().get("down:k").unwrap(), None);
    assert_eq!(
        l2.inner().get("down:k").unwrap().map(|e| e.value),
        Some(b"old".to_vec())
    );
}

#[test]
fn without_fallback_a_partial_multi_set_takes_only_the_unreached_items_out_of_l1() {
    let (cache, l2) = manager_and_l2();
    let err = cache
        .multi_set_raw(&[("up:a", &b"1"[..]), ("down:b", b"2")], None)
        .unwrap_err();
    assert_eq!(failed_of(&err), (vec![1], vec![1], 2), "{err}");
    // L2 took "up:a": both levels keep it. It did not take "down:b": neither does.
    assert_eq!(
        cache.local().get("up:a").unwrap().map(|e| e.value),
        Some(b"1".to_vec())
    );
    assert_eq!(
        l2.inner().get("up:a").unwrap().map(|e| e.value),
        Some(b"1".to_vec())
    );
    assert_eq!(cache.local().get("down:b").unwrap(), None);
}

#[test]
fn without_fallback_a_batch_with_refused_and_unreached_items_takes_both_out_of_l1() {
    let (cache, l2) = manager_and_l2();
    let err = cache
        .multi_set_raw(&[("up:a", &b"1"[..]), ("big:b", b"2"), ("down:c", b"3")], None)
        .unwrap_err();
    assert!(
        err.is_bad_input(),
        "the refusal is what the caller is told: {err}"
    );
    assert_eq!(failed_of(&err), (vec![1, 2], vec![2], 3), "{err}");
    assert_eq!(
        cache.local().get("up:a").unwrap().map(|e| e.value),
        Some(b"1".to_vec())
    );
    assert_eq!(
        l2.inner().get("up:a").unwrap().map(|e| e.value),
        Some(b"1".to_vec())
    );
    // Refused, and not reached (nothing replays it without fallback): neither stays in L1.
    assert_eq!(cache.local().get("big:b").unwrap(), None);
    assert_eq!(cache.local().get("down:c").unwrap(), None);
}

#[test]
fn a_partial_multi_delete_names_the_unreached_key() {
    let cache = manager();
    let err = cache.multi_delete(&["up:a", "down:b"]).unwrap_err();
    assert_eq!(failed_of(&err), (vec![1], vec![1], 2), "{err}");
}

#[test]
fn a_partial_multi_get_names_the_unreached_key_by_its_index_in_the_callers_batch() {
    let cache = manager();
    // "up:a" is in L1, so only "down:b" and "up:c" reach L2.
    cache.set_raw("up:a", b"1", None).unwrap();
    let err = cache.multi_get_raw(&["up:a", "down:b", "up:c"]).unwrap_err();
    assert_eq!(failed_of(&err), (vec![1], vec![1], 3), "{err}");
}

#[test]
fn a_partial_typed_multi_get_names_every_position_of_a_key_given_twice() {
    let cache = manager();
    cache.set("up:a", &1u32, None).unwrap();
    let err = cache
        .multi_get::<u32>(&["down:b", "up:a", "up:c", "down:b"])
        .unwrap_err();
    assert_eq!(failed_of(&err), (vec![0, 3], vec![0, 3], 4), "{err}");
}

/// A raw batch reads a key listed twice once (see `multi_get_raw`); the error of a partial one
/// still names both positions, sync and async, and the total is the caller's batch.
#[test]
fn a_partial_raw_multi_get_names_every_position_of_a_key_given_twice() {
    let cache = manager();
    cache.set_raw("up:a", b"1", None).unwrap();
    let keys = ["down:b", "up:a", "down:b", "up:c", "up:a"];
    let err = cache.multi_get_raw(&keys).unwrap_err();
    assert_eq!(failed_of(&err), (vec![0, 2], vec![0, 2], 5), "{err}");
    let err = support::block_on(cache.multi_get_raw_async(&keys)).unwrap_err();
    assert_eq!(failed_of(&err), (vec![0, 2], vec![0, 2], 5), "async: {err}");
}

#[test]
fn a_partial_async_multi_get_names_the_unreached_key_by_its_index_in_the_callers_batch() {
    let cache = manager();
    cache.set("up:a", &1u32, None).unwrap();
    let err = support::block_on(cache.multi_get_async::<u32>(&["up:a", "down:b", "up:c"])).unwrap_err();
    assert_eq!(failed_of(&err), (vec![1], vec![1], 3), "{err}");
}

/// The values a partial batch read did find (L1's, and those of the L2 node it reached) are in
/// the error; before, it said `Written` and the caller had to read them all again.
#[test]
fn a_partial_multi_get_carries_the_values_it_found_in_both_levels() {
    let (cache, l2) = manager_and_l2();
    cache.set_raw("up:a", b"1", None).unwrap();
    l2.inner().set("up:c", b"3", None).unwrap();
    let err = cache.multi_get_raw(&["up:a", "down:b", "up:c"]).unwrap_err();
    let expected = vec![
        ("up:a".to_owned(), b"1".to_vec()),
        ("up:c".to_owned(), b"3".to_vec()),
    ];
    assert_eq!(found_of(&err), expected, "{err}");
    cache.local().delete("up:c").unwrap();
    let err = support::block_on(cache.multi_get_raw_async(&["up:a", "down:b", "up:c"])).unwrap_err();
    assert_eq!(found_of(&err), expected, "async: {err}");
    assert_eq!(failed_of(&err), (vec![1], vec![1], 3), "{err}");
}
