//! The values of refused fills a full file store holds in RAM for a second read (see
//! `src/local/file/stash.rs`) answer as a record in the log would: a newer fill of the key
//! displaces the older value even when it is refused and too large to hold itself, a delete
//! reports an expired held value as nothing removed, and only a read that counts for eviction
//! (`get`, not `get_stale` or `contains`) counts as the key coming back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use uno_cache::{Durability, FileStore, FileStoreOptions, ManualClock};

const VALUE_BYTES: usize = 4_000;

/// A full store of 1 MiB on `clock` (about 250 values of 4,000 bytes), every entry read three
/// times: fills of new keys are refused against them.
fn full_store(dir: &Path, clock: &ManualClock) -> FileStore {
    full_store_with(dir, clock, FileStoreOptions::default())
}

/// [`full_store`] opened with `options` (its size, durability, threads and clock set here).
fn full_store_with(dir: &Path, clock: &ManualClock, options: FileStoreOptions) -> FileStore {
    let options = options
        .max_size_mb(1)
        .durability(Durability::None)
        .background_threads(false)
        .clock(Arc::new(clock.clone()));
    let store = FileStore::open(dir, options).unwrap();
    let value = vec![7u8; VALUE_BYTES];
    let mut i = 0;
    while store.stats().evictions == 0 {
        store.set(&format!("k{i}"), &value, None).unwrap();
        i += 1;
    }
    // The first fill of a full store starts the admission sketch.
    let _ = store.fill("starter", &value, None).unwrap();
    for key in store.keys() {
        for _ in 0..3 {
            store.get(&key).unwrap();
        }
    }
    store
}

/// A key never written whose fill of `value` the store refused, so it holds the value in RAM.
fn held_key(store: &FileStore, tag: &str, value: &[u8], ttl: Option<Duration>) -> String {
    let key = (0..1_000)
        .map(|j| format!("{tag}{j}"))
        .find(|key| {
            assert!(store.get(key).unwrap().is_none());
            !store.fill(key, value, ttl).unwrap()
        })
        .expect("a refused fill among 1,000 new keys");
    // A stale read, which is not a read of it (see `fill_admitted_after`).
    assert!(
        store.get_stale(&key).unwrap().is_some(),
        "the refused value is held for a second read"
    );
    key
}

#[test]
fn a_newer_fill_too_large_to_hold_still_displaces_the_older_held_value() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = full_store(dir.path(), &clock);
    let older = vec![7u8; VALUE_BYTES];
    let key = held_key(&store, "new", &older, None);
    // Reads of other keys age the refusal out of the window in which a refused key that comes
    // back is let in, so the newer fill is weighed, and refused, again.
    for i in 0..5_000 {
        store.get(&format!("miss{i}")).unwrap();
    }
    // Larger than the RAM a 1 MiB store holds refused values in (a 64th of it).
    let newer = vec![9u8; 20_000];
    assert!(
        !store.fill(&key, &newer, None).unwrap(),
        "the newer fill is refused"
    );
    assert_eq!(
        store.get(&key).unwrap(),
        None,
        "{key}: the older held value outlived a newer fill of the key"
    );
}

#[test]
fn deleting_an_expired_held_value_reports_nothing_removed_as_for_a_record() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = full_store(dir.path(), &clock);
    let key = held_key(&store, "ttl", &[7u8; VALUE_BYTES], Some(Duration::from_secs(5)));
    store.set("logged", b"v", Some(Duration::from_secs(5))).unwrap();
    clock.advance(Duration::from_secs(6));
    assert!(
        !store.delete("logged").unwrap(),
        "an expired record: nothing removed"
    );
    assert!(
        !store.delete(&key).unwrap(),
        "{key}: an expired held value reported as removed"
    );
    // A live held value is.
    let live = held_key(&store, "live", &[7u8; VALUE_BYTES], None);
    assert!(
        store.delete(&live).unwrap(),
        "{live}: a live held value is removed"
    );
    assert_eq!(store.get(&live).unwrap(), None);
}

/// Whether a fill of a key whose held value was looked at by `look`, then pushed out of RAM by
/// refused fills of other keys, is let in: a read of a held value counts as the key coming back
/// (see `src/local/file/refused.rs`), a stale read for fail-safe or a `contains` does not.
fn fill_admitted_after(look: impl Fn(&FileStore, &str)) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = full_store(dir.path(), &clock);
    let value = vec![7u8; VALUE_BYTES];
    let key = held_key(&store, "held", &value, None);
    look(&store, &key);
    // Reads of the entries age the refusal itself out of the window of keys that come back,
    // and keep the entries read more than the key.
    for other in store.keys().iter().filter(|other| **other != key) {
        for _ in 0..6 {
            store.get(other).unwrap();
        }
    }
    // Refused fills of other keys push the held value out of RAM.
    let mut pushed = 0;
    for i in 0..1_000 {
        if !store.fill(&format!("push{i}"), &value, None).unwrap() {
            pushed += 1;
        }
        if store.get_stale(&key).unwrap().is_none() && pushed >= 8 {
            break;
        }
    }
    assert!(
        store.get_stale(&key).unwrap().is_none(),
        "{key} was pushed out of RAM"
    );
    store.fill(&key, &value, None).unwrap()
}

#[test]
fn a_held_value_read_by_get_counts_as_its_key_coming_back_and_a_stale_read_or_contains_does_not() {
    assert!(
        fill_admitted_after(|store, key| assert!(store.get(key).unwrap().is_some())),
        "a held value read: its key's next fill is let in"
    );
    assert!(
        !fill_admitted_after(|store, key| assert!(store.get_stale(key).unwrap().is_some())),
        "a stale read counted as a read of the held value"
    );
    assert!(
        !fill_admitted_after(|store, key| assert!(store.contains(key))),
        "contains counted as a read of the held value"
    );
}

#[test]
fn a_key_given_twice_in_one_batch_of_fills_ends_with_its_last_value_as_in_a_batch_of_sets() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = full_store(dir.path(), &clock);
    let (older, newer) = (vec![1u8; VALUE_BYTES], vec![2u8; VALUE_BYTES]);
    // The first value takes free room, the fills between take the rest of it, and the last
    // value is weighed against entries read thrice.
    let mut items: Vec<(String, Vec<u8>, Option<Duration>)> = vec![("dup".into(), older, None)];
    items.extend((0..64).map(|i| (format!("between{i}"), vec![3u8; VALUE_BYTES], None)));
    items.push(("dup".into(), newer.clone(), None));
    let batch: Vec<(&str, &[u8], Option<Duration>)> = items
        .iter()
        .map(|(k, v, ttl)| (k.as_str(), v.as_slice(), *ttl))
        .collect();
    store.fill_each(&batch).unwrap();
    assert_eq!(
        store.get("dup").unwrap().map(|v| (v.len(), v[0])),
        Some((newer.len(), newer[0])),
        "dup: an earlier value of the batch was left where set_each leaves the last"
    );
}

/// A refused fill of a key whose value expired but is kept for stale reads (`keep_expired`) is
/// newer than that value: a stale read of the key must not go back to it. The fill used to be
/// dropped, as the index held the key, and `get_stale` (a fail-safe read) answered the older
/// value the fill had replaced.
#[test]
fn a_refused_fill_over_an_expired_value_kept_for_stale_reads_is_what_a_stale_read_answers() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = full_store_with(
        dir.path(),
        &clock,
        FileStoreOptions::default().keep_expired(Duration::from_secs(60)),
    );
    // Old values that expire, each a stale copy for a minute after.
    let keys: Vec<String> = (0..1_000).map(|j| format!("lapsed{j}")).collect();
    for key in &keys {
        store.set(key, b"old", Some(Duration::from_secs(1))).unwrap();
    }
    clock.advance(Duration::from_secs(2));
    let mut refused = 0;
    for key in &keys {
        assert_eq!(store.get(key).unwrap(), None, "{key} expired");
        if store.fill(key, b"new", None).unwrap() {
            continue;
        }
        refused += 1;
        // Read at once: later refused fills push the held value out.
        let stale = store.get_stale(key).unwrap().map(|e| e.value);
        assert_eq!(
            stale.as_deref(),
            Some(&b"new"[..]),
            "{key}: a stale read answered the value its refused fill replaced, or nothing"
        );
        assert_eq!(store.get(key).unwrap().as_deref(), Some(&b"new"[..]), "{key}");
    }
    assert!(refused > 0, "no fill was refused");
}

/// A held value that expires is, for the keep window (`keep_expired`: fail-safe's), a stale copy
/// as a record of the key would be: a stale read answers it, the key listing (prefix
/// invalidation) names it, and a delete removes it. It was dropped at its expiry, and with it the
/// only copy a fail-safe read had of the key when its refused fill had replaced an expired one.
#[test]
fn a_held_value_that_expires_is_a_stale_copy_for_the_keep_window_as_a_record_is() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let store = full_store_with(
        dir.path(),
        &clock,
        FileStoreOptions::default().keep_expired(Duration::from_secs(60)),
    );
    let value = vec![7u8; VALUE_BYTES];
    let ttl = Some(Duration::from_secs(5));
    let key = held_key(&store, "ttl", &value, ttl);
    clock.advance(Duration::from_secs(6));
    assert_eq!(store.get(&key).unwrap(), None, "{key} expired");
    let stale = store.get_stale(&key).unwrap();
    assert!(
        stale
            .as_ref()
            .is_some_and(|e| e.value == value && e.expires_at.is_some()),
        "{key}: no stale copy within the keep window"
    );
    assert!(
        store.keys().contains(&key),
        "{key}: prefix invalidation must reach it"
    );
    assert!(
        store.delete(&key).unwrap(),
        "{key}: a stale copy is removed by a delete"
    );
    assert!(store.get_stale(&key).unwrap().is_none(), "{key} deleted");
    // Past the window it is gone, as a record is.
    let key = held_key(&store, "gone", &value, ttl);
    clock.advance(Duration::from_secs(5 + 60));
    assert!(
        store.get_stale(&key).unwrap().is_none(),
        "{key}: served past the window"
    );
    assert!(!store.keys().contains(&key), "{key} listed past the window");
    assert!(!store.delete(&key).unwrap(), "{key}: removed past the window");
}
