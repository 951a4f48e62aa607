//! The file store's promises, one test each: values round-trip, deletes and TTLs survive restarts,
//! the size bound holds while a hot set survives, bad input changes nothing, and compaction never
//! brings a deleted or expired value back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use uno_cache::{Durability, Error, FileStore, FileStoreOptions, KeyProblem, ManualClock, MAX_KEY_LEN};

const T0: u64 = 1_700_000_000_000;

fn manual_options(clock: &ManualClock) -> FileStoreOptions {
    FileStoreOptions::default()
        .max_size_mb(64)
        .segment_size(256 * 1024)
        .background_threads(false)
        .clock(Arc::new(clock.clone()))
}

fn value_for(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn values_round_trip_and_overwrites_win() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    store.set("a", b"first", None).unwrap();
    store.set("b", b"", None).unwrap();
    store.set("a", b"second", None).unwrap();
    assert_eq!(store.get("a").unwrap().as_deref(), Some(&b"second"[..]));
    assert_eq!(store.get("b").unwrap().as_deref(), Some(&b""[..]));
    assert_eq!(store.get("missing").unwrap(), None);
    assert_eq!(store.stats().live_items, 2);
}

#[test]
fn entries_overwrites_and_deletes_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .max_size_mb(64)
            .segment_size(64 * 1024)
    };
    {
        let store = FileStore::open(dir.path(), options()).unwrap();
        for i in 0..2000 {
            store.set(&format!("key-{i}"), &value_for(i, 100), None).unwrap();
        }
        for i in (0..2000).step_by(3) {
            assert!(store.delete(&format!("key-{i}")).unwrap());
        }
        store.set("key-1", b"rewritten", None).unwrap();
        assert!(!store.delete("never-written").unwrap());
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), options()).unwrap();
    for i in 0..2000 {
        let got = store.get(&format!("key-{i}")).unwrap();
        match i {
            1 => assert_eq!(got.as_deref(), Some(&b"rewritten"[..])),
            _ if i % 3 == 0 => assert_eq!(got, None, "deleted key-{i} came back"),
            _ => assert_eq!(got, Some(value_for(i, 100)), "key-{i}"),
        }
    }
    assert!(
        store.recovery_report().from_hints > 0,
        "{:?}",
        store.recovery_report()
    );
}

#[test]
fn a_store_leaked_in_this_process_still_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        store.set("k", b"v", None).unwrap();
        std::mem::forget(store);
    }
    // The leaked store still holds the lock (its file descriptor is open): refuse a second opener.
    let err = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::Locked { path, .. } if path == dir.path()),
        "{err}"
    );
    assert!(err.to_string().contains(&dir.path().display().to_string()));
}

#[test]
fn expired_entries_are_never_returned_even_before_the_compactor_runs() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    store.set("short", b"x", Some(Duration::from_secs(10))).unwrap();
    store.set("long", b"y", Some(Duration::from_secs(100))).unwrap();
    store.set("forever", b"z", None).unwrap();
    clock.advance(Duration::from_millis(9_999));
    assert!(store.get("short").unwrap().is_some());
    clock.advance(Duration::from_millis(1));
    assert_eq!(store.get("short").unwrap(), None);
    assert!(!store.contains("short"));
    let entry = store.get_entry("long").unwrap().unwrap();
    let left = entry
        .remaining_ttl(std::time::UNIX_EPOCH + Duration::from_millis(clock_now(&clock)))
        .unwrap();
    assert_eq!(left, Duration::from_secs(90));
    assert_eq!(store.get_entry("forever").unwrap().unwrap().expires_at, None);
}

#[test]
fn set_each_gives_every_value_its_own_ttl_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let expiry = |store: &FileStore, key: &str| {
        store
            .get_entry(key)
            .unwrap()
            .unwrap()
            .expires_at
            .map(|at| at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64 - T0)
    };
    {
        let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
        store
            .set_each(&[
                ("short", b"x", Some(Duration::from_secs(5))),
                ("long", b"y", Some(Duration::from_secs(50))),
                ("forever", b"z", None),
            ])
            .unwrap();
        assert_eq!(expiry(&store, "short"), Some(5_000));
        assert_eq!(expiry(&store, "long"), Some(50_000));
        assert_eq!(expiry(&store, "forever"), None);
        // One bad item writes nothing.
        let too_long = "k".repeat(MAX_KEY_LEN + 1);
        let err = store
            .set_each(&[("fine", b"v", None), (too_long.as_str(), b"v", None)])
            .unwrap_err();
        assert!(matches!(err, Error::InvalidKey { .. }), "{err}");
        assert!(!store.contains("fine"));
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    assert_eq!(expiry(&store, "long"), Some(50_000));
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.get("short").unwrap(), None);
    assert_eq!(store.get("long").unwrap().as_deref(), Some(&b"y"[..]));
}

fn clock_now(clock: &ManualClock) -> u64 {
    use uno_cache::Clock;
    clock.now_ms()
}

#[test]
fn compactor_sweeps_expired_entries_and_they_stay_gone_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let store = FileStore::open(dir.path(), manual_options(&clock).min_live_ratio(0.75)).unwrap();
        for i in 0..1000 {
            let ttl = (i % 2 == 0).then_some(Duration::from_secs(60));
            store.set(&format!("k{i}"), &value_for(i, 1000), ttl).unwrap();
        }
        clock.advance(Duration::from_secs(61));
        let report = store.compact().unwrap();
        assert_eq!(report.expired, 500);
        assert_eq!(store.stats().live_items, 500);
        assert_eq!(store.stats().expirations, 500);
        assert!(report.segments_rewritten > 0, "{report:?}");
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    for i in 0..1000 {
        let got = store.get(&format!("k{i}")).unwrap();
        assert_eq!(got.is_some(), i % 2 == 1, "k{i}");
    }
}

#[test]
fn expiry_is_absolute_wall_clock_time_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
        store.set("k", b"v", Some(Duration::from_secs(30))).unwrap();
    }
    clock.advance(Duration::from_secs(31));
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    assert_eq!(store.get("k").unwrap(), None);
    assert_eq!(store.recovery_report().expired, 1);
}

/// Overwrites do not write tombstones, so when a newer record expires and is compacted away, an
/// older record of the key must not resurface.
#[test]
fn compaction_never_resurrects_an_older_value_of_an_expired_or_deleted_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let opts = || manual_options(&clock).min_live_ratio(1.0);
    {
        let store = FileStore::open(dir.path(), opts()).unwrap();
        store.set("expiring", b"old-forever", None).unwrap();
        store.set("deleted", b"old", None).unwrap();
        fill(&store, "pad-a", 300); // push the old records into sealed segments
        store
            .set("expiring", b"new-with-ttl", Some(Duration::from_secs(5)))
            .unwrap();
        assert!(store.delete("deleted").unwrap());
        fill(&store, "pad-b", 300);
        clock.advance(Duration::from_secs(6));
        // Rewrite everything (min_live_ratio = 1.0 makes every sealed segment a candidate), twice.
        store.compact().unwrap();
        store.compact().unwrap();
        assert_eq!(store.get("expiring").unwrap(), None);
        assert_eq!(store.get("deleted").unwrap(), None);
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), opts()).unwrap();
    assert_eq!(store.get("expiring").unwrap(), None);
    assert_eq!(store.get("deleted").unwrap(), None);
    assert_eq!(store.get("pad-a-7").unwrap(), Some(value_for(7, 1000)));
}

fn fill(store: &FileStore, prefix: &str, n: usize) {
    for i in 0..n {
        store
            .set(&format!("{prefix}-{i}"), &value_for(i, 1000), None)
            .unwrap();
    }
}

#[test]
fn compaction_reclaims_space_of_overwritten_values() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    for round in 0..5 {
        for i in 0..200 {
            store
                .set(&format!("k{i}"), &value_for(i + round, 1000), None)
                .unwrap();
        }
    }
    let before = store.stats();
    let report = store.compact().unwrap();
    let after = store.stats();
    assert!(report.segments_rewritten > 0);
    assert!(
        after.disk_bytes < before.disk_bytes / 2,
        "before {before:?} after {after:?}"
    );
    for i in 0..200 {
        assert_eq!(store.get(&format!("k{i}")).unwrap(), Some(value_for(i + 4, 1000)));
    }
}

/// Compaction rewrites a segment a batch of records at a time (256): every live record of a
/// sparse segment holding several batches is moved, and every deleted key stays deleted.
#[test]
fn compaction_moves_every_live_record_of_a_segment_holding_several_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    // About 100 bytes per record: the first 256 KiB segment holds some 2,000 records.
    for i in 0..2_000 {
        store.set(&format!("k{i}"), &value_for(i, 64), None).unwrap();
    }
    // Three in five overwritten, one in five deleted: a fifth stays live where written.
    for i in (0..2_000).filter(|i| i % 5 < 3) {
        store.set(&format!("k{i}"), &value_for(i + 1, 64), None).unwrap();
    }
    for i in (0..2_000).filter(|i| i % 5 == 3) {
        store.delete(&format!("k{i}")).unwrap();
    }
    let report = store.compact().unwrap();
    assert!(report.segments_rewritten > 0, "{report:?}");
    assert!(report.records_moved > 256, "{report:?}");
    for i in 0..2_000 {
        let expected = match i % 5 {
            0..=2 => Some(value_for(i + 1, 64)),
            3 => None,
            _ => Some(value_for(i, 64)),
        };
        assert_eq!(store.get(&format!("k{i}")).unwrap(), expected, "k{i}");
    }
    drop(store);
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    assert_eq!(
        store.get("k3").unwrap(),
        None,
        "a deleted key came back after reopen"
    );
    assert_eq!(store.get("k4").unwrap(), Some(value_for(4, 64)));
}

#[test]
fn size_bound_holds_under_sustained_writes_and_second_chance_keeps_the_hot_set() {
    let dir = tempfile::tempdir().unwrap();
    let max_mb = 2;
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .max_size_mb(max_mb)
            .segment_size(128 * 1024)
            .background_threads(false),
    )
    .unwrap();
    let hot: Vec<String> = (0..50).map(|i| format!("hot-{i}")).collect();
    for (i, key) in hot.iter().enumerate() {
        store.set(key, &value_for(i, 1000), None).unwrap();
    }
    let bound = max_mb * 1024 * 1024;
    for i in 0..20_000 {
        store
            .set(&format!("cold-{i}"), &value_for(i, 1000), None)
            .unwrap();
        if i % 100 == 0 {
            for key in &hot {
                assert!(
                    store.get(key).unwrap().is_some(),
                    "{key} was evicted at write {i}"
                );
            }
        }
        assert!(store.stats().disk_bytes <= bound, "{:?}", store.stats());
    }
    let stats = store.stats();
    assert!(stats.evictions > 10_000, "{stats:?}");
    assert!(stats.second_chances > 0, "{stats:?}");
    assert_eq!(
        store.get("cold-0").unwrap(),
        None,
        "the oldest cold entry should be evicted"
    );
    assert_eq!(store.get("cold-19999").unwrap(), Some(value_for(19_999, 1000)));
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    // Segment files are preallocated; their count bounds the space even before counting blocks.
    assert!(
        on_disk <= bound + 2 * 128 * 1024,
        "segment files total {on_disk} bytes"
    );
}

#[test]
fn a_key_read_only_right_after_its_write_gives_way_at_eviction_to_a_key_read_later() {
    // Reads of a new entry while it is still in the newest part of the log are taken as
    // correlated with its write (a burst): they do not earn it a place when its segment is
    // evicted. A read once the log has moved on does.
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default()
            .max_size_mb(1)
            .segment_size(128 * 1024)
            .durability(Durability::None)
            .background_threads(false),
    )
    .unwrap();
    let value = value_for(0, 1000);
    let mut n = 0usize;
    // Writes fillers (never read) until the store starts a new segment; returns how many.
    let mut fill_segment = |store: &FileStore| {
        let (segments, from) = (store.stats().segments, n);
        while store.stats().segments == segments {
            store.set(&format!("filler-{n}"), &value, None).unwrap();
            n += 1;
        }
        n - from
    };
    // The first call only starts the first segment.
    fill_segment(&store);
    let per_segment = fill_segment(&store);
    // Past its first eviction: what a store writes while it fills up starts protected, and a
    // protected entry's reads always count.
    while store.stats().evictions == 0 {
        fill_segment(&store);
    }
    store.set("burst", &value, None).unwrap();
    store.set("later", &value, None).unwrap();
    for _ in 0..2 {
        assert!(store.get("burst").unwrap().is_some());
    }
    fill_segment(&store);
    // Their segment is no longer the newest: this read counts.
    assert!(store.get("later").unwrap().is_some());
    // Write on, with no read in between, until the segment holding both keys has been evicted
    // (once): as many segments as the store holds, and one more.
    for _ in 0..=store.stats().segments {
        fill_segment(&store);
    }
    assert!(
        store.stats().evictions > per_segment as u64,
        "{:?}",
        store.stats()
    );
    assert_eq!(
        store.get("burst").unwrap(),
        None,
        "read only in its burst: evicted"
    );
    assert_eq!(store.get("later").unwrap(), Some(value));
}

#[test]
fn bad_input_is_refused_with_a_typed_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4)).unwrap();
    store.set("k", b"original", None).unwrap();
    let before = store.stats();

    let err = store.set("", b"v", None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidKey {
                problem: KeyProblem::Empty,
                ..
            }
        ),
        "{err}"
    );
    let long = "x".repeat(MAX_KEY_LEN + 1);
    let err = store.set(&long, b"v", None).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidKey {
                problem: KeyProblem::TooLong { .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().len() < 400,
        "error message must not echo a huge key"
    );
    let err = store.set("k", b"new", Some(Duration::ZERO)).unwrap_err();
    assert!(matches!(&err, Error::ZeroTtl { key } if key == "k"), "{err}");
    let huge = vec![0u8; 1024 * 1024];
    let err = store.set("k", &huge, None).unwrap_err();
    assert!(
        matches!(&err, Error::ValueTooLarge { key, len, .. } if key == "k" && *len == huge.len()),
        "{err}"
    );
    // Asked ahead (as the manager asks a level before a write that will not wait for it), the
    // store refuses the same value with the same error, and accepts the largest that fits.
    let asked = uno_cache::Storage::check_value(&store, "k", huge.len()).unwrap_err();
    assert_eq!(asked.to_string(), err.to_string());
    let max = match asked {
        Error::ValueTooLarge { max, .. } => max,
        other => panic!("{other}"),
    };
    uno_cache::Storage::check_value(&store, "k", max).unwrap();
    uno_cache::Storage::check_value(&store, "k", max + 1).unwrap_err();
    // One bad item in a batch writes nothing.
    let err = store.set_many(&[("fine", b"1"), ("", b"2")], None).unwrap_err();
    assert!(matches!(err, Error::InvalidKey { .. }));
    assert!(matches!(store.delete(""), Err(Error::InvalidKey { .. })));

    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"original"[..]));
    assert_eq!(store.get("fine").unwrap(), None);
    assert_eq!(store.stats().disk_bytes, before.disk_bytes);
}

#[test]
fn invalid_options_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for (options, field) in [
        (FileStoreOptions::default().max_size_mb(0), "max_size_mb"),
        (FileStoreOptions::default().segment_size(1000), "segment_size"),
        (
            FileStoreOptions::default().max_size_mb(1).segment_size(1 << 20),
            "segment_size",
        ),
        (
            FileStoreOptions::default().durability(Durability::Periodic(Duration::ZERO)),
            "durability",
        ),
        (FileStoreOptions::default().min_live_ratio(1.5), "min_live_ratio"),
    ] {
        match FileStore::open(dir.path(), options) {
            Err(Error::Config { field: f, .. }) => assert_eq!(f, field),
            other => panic!("expected a config error for {field}, got {other:?}"),
        }
    }
}

#[test]
fn a_directory_left_with_only_a_half_written_metadata_file_opens_as_a_new_store() {
    // A first open killed between writing `uno-cache.meta.tmp` and renaming it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("uno-cache.meta.tmp"), b"UNOCMETA\x01").unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    store.set("k", b"v", None).unwrap();
    store.close().unwrap();
    assert!(!dir.path().join("uno-cache.meta.tmp").exists());
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

#[test]
fn a_foreign_directory_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
    let err = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::NotOurDirectory { .. }), "{err}");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("notes.txt")]);
}

#[test]
fn a_second_opener_in_the_same_process_gets_locked() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    let err = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    first.close().unwrap();
    FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
}

#[test]
fn clear_removes_everything_and_a_reopen_finds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = || FileStoreOptions::default().max_size_mb(4).segment_size(64 * 1024);
    {
        let store = FileStore::open(dir.path(), options()).unwrap();
        fill(&store, "k", 200);
        store.clear().unwrap();
        assert_eq!(store.get("k-1").unwrap(), None);
        store.set("after", b"clear", None).unwrap();
        assert_eq!(store.stats().live_items, 1);
    }
    let store = FileStore::open(dir.path(), options()).unwrap();
    assert_eq!(store.get("k-1").unwrap(), None);
    assert_eq!(store.get("after").unwrap().as_deref(), Some(&b"clear"[..]));
    assert_eq!(store.stats().live_items, 1);
}

#[test]
fn concurrent_readers_and_writers_see_only_values_that_were_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        FileStore::open(
            dir.path(),
            FileStoreOptions::default()
                .max_size_mb(8)
                .segment_size(256 * 1024),
        )
        .unwrap(),
    );
    let keys = 200;
    // Each value encodes its key and version, so a reader can check what it got.
    let encode = |k: usize, v: usize| format!("{k}:{v}:{}", "p".repeat((k * 13 + v) % 500)).into_bytes();
    // Every key has a value before the threads start, so readers hit from their first read
    // (they could otherwise all run before any write landed and check nothing).
    for k in 0..keys {
        store.set(&format!("k{k}"), &encode(k, 0), None).unwrap();
    }
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let writers: Vec<_> = (0..2)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for v in 0..3000 {
                    let k = (v * 7 + t) % keys;
                    if v % 10 == 9 {
                        store.delete(&format!("k{k}")).unwrap();
                    } else {
                        store.set(&format!("k{k}"), &encode(k, v), None).unwrap();
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = Arc::clone(&store);
            let writing = Arc::clone(&writing);
            std::thread::spawn(move || {
                let mut hits = 0;
                // At least 20 000 reads, and on until the writers are done.
                let mut n = 0;
                while n < 20_000 || writing.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let k = n % keys;
                    if let Some(v) = store.get(&format!("k{k}")).unwrap() {
                        let text = String::from_utf8(v).unwrap();
                        let mut parts = text.splitn(3, ':');
                        assert_eq!(parts.next().unwrap(), k.to_string());
                        let version: usize = parts.next().unwrap().parse().unwrap();
                        assert_eq!(text.into_bytes(), encode(k, version));
                        hits += 1;
                    }
                }
                hits
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    let hits: usize = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(hits > 0);
    assert_eq!(store.stats().corrupt_reads, 0);
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn close_stops_a_busy_compactor_promptly_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .max_size_mb(256)
            .segment_size(1024 * 1024)
            .compaction_interval(Duration::from_millis(1))
            .min_live_ratio(1.0)
    };
    {
        let store = FileStore::open(dir.path(), options()).unwrap();
        fill(&store, "k", 20_000);
        // With min_live_ratio 1.0 and a 1 ms interval the compactor is rewriting segments now.
        let started = Instant::now();
        store.close().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "close took {:?}",
            started.elapsed()
        );
    }
    let store = FileStore::open(dir.path(), options().background_threads(false)).unwrap();
    for i in (0..20_000).step_by(97) {
        assert_eq!(
            store.get(&format!("k-{i}")).unwrap(),
            Some(value_for(i, 1000)),
            "k-{i}"
        );
    }
    assert_eq!(store.stats().live_items, 20_000);
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn every_durability_mode_serves_writes_at_once_and_after_a_reopen() {
    for durability in [
        Durability::None,
        Durability::EveryWrite,
        Durability::Periodic(Duration::from_millis(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path(), FileStoreOptions::default().durability(durability)).unwrap();
        store.set("k", b"v", None).unwrap();
        assert_eq!(
            store.get("k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "{durability:?}"
        );
        store.flush().unwrap();
        store.close().unwrap();
        let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        assert_eq!(
            store.get("k").unwrap().as_deref(),
            Some(&b"v"[..]),
            "{durability:?}"
        );
    }
}

#[test]
fn many_restarts_without_writes_do_not_pile_up_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
        store.set("k", b"v", None).unwrap();
    }
    let segments_after_first = FileStore::open(dir.path(), FileStoreOptions::default())
        .unwrap()
        .stats()
        .segments;
    for _ in 0..10 {
        FileStore::open(dir.path(), FileStoreOptions::default())
            .unwrap()
            .close()
            .unwrap();
    }
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.stats().segments, segments_after_first);
    assert_eq!(store.get("k").unwrap().as_deref(), Some(&b"v"[..]));
}

/// Eviction (in the write path) and the background compactor both remove segments; when they race
/// for the same one, neither may double-count space, fail, or resurrect anything.
#[test]
fn eviction_racing_the_background_compactor_keeps_accounting_and_values_right() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .max_size_mb(1)
            .segment_size(64 * 1024)
            .compaction_interval(Duration::from_millis(1))
            .min_live_ratio(0.9)
    };
    let keys = 300;
    let mut latest = vec![None; keys];
    {
        let store = FileStore::open(dir.path(), options()).unwrap();
        for n in 0..30_000usize {
            let k = (n * 7919) % keys;
            if n % 11 == 0 {
                store.delete(&format!("k{k}")).unwrap();
                latest[k] = None;
            } else {
                let value = value_for(n, 100 + n % 400);
                store.set(&format!("k{k}"), &value, None).unwrap();
                latest[k] = Some(value);
            }
            if n % 1000 == 0 {
                let stats = store.stats();
                assert!(stats.disk_bytes <= 1024 * 1024, "{stats:?}");
                assert!(stats.live_bytes <= stats.disk_bytes, "{stats:?}");
            }
        }
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), options().background_threads(false)).unwrap();
    for (k, want) in latest.iter().enumerate() {
        let got = store.get(&format!("k{k}")).unwrap();
        match (want, &got) {
            (None, Some(_)) => panic!("deleted k{k} came back"),
            (Some(want), Some(got)) => assert_eq!(got, want, "k{k} has an older value"),
            _ => {} // evicted, or deleted: a miss is allowed
        }
    }
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

/// Entries restored from disk, or written before a loss of certainty (`mark_all_suspect`), are
/// reported as suspect until confirmed or rewritten; the manager revalidates them against L2.
#[test]
fn restored_and_pre_loss_entries_are_suspect_until_confirmed_or_rewritten() {
    use uno_cache::Freshness::{Suspect, Trusted};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    {
        let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
        store.set("old", b"1", None).unwrap();
        store.set("confirmed", b"2", None).unwrap();
        assert_eq!(
            store.get_checked("old").unwrap().unwrap().1,
            Trusted,
            "written in this run"
        );
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), manual_options(&clock)).unwrap();
    let freshness = |key: &str| store.get_checked(key).unwrap().map(|(_, f)| f);
    assert_eq!(freshness("old"), Some(Suspect), "restored from disk");
    store.confirm("confirmed", store.suspect_epoch());
    assert_eq!(freshness("confirmed"), Some(Trusted));
    store.set("new", b"3", None).unwrap();
    assert_eq!(freshness("new"), Some(Trusted));
    assert_eq!(freshness("missing"), None);

    // Confirmation survives a compaction that moves the record (same seq).
    fill(&store, "pad", 600);
    store.compact().unwrap();
    assert_eq!(freshness("confirmed"), Some(Trusted));

    store.mark_all_suspect();
    assert_eq!(
        freshness("confirmed"),
        Some(Suspect),
        "a confirmation from before the loss"
    );
    assert_eq!(freshness("new"), Some(Suspect));
    store.set("old", b"rewritten", None).unwrap();
    assert_eq!(freshness("old"), Some(Trusted));
    store.confirm("new", store.suspect_epoch());
    assert_eq!(freshness("new"), Some(Trusted));
    assert_eq!(store.get_checked("old").unwrap().unwrap().0.value, b"rewritten");
}

/// `set_many` writes each run of records that fits in a segment with one `pwrite`; batches that
/// span segment rolls and evictions, and keys repeated within a batch, must come out exactly as
/// if the records had been set one by one.
#[test]
fn set_many_batches_span_segments_and_evictions_and_the_last_duplicate_wins() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        FileStoreOptions::default()
            .max_size_mb(1)
            .segment_size(64 * 1024)
            .background_threads(false)
    };
    let mut model = std::collections::BTreeMap::new();
    {
        let store = FileStore::open(dir.path(), options()).unwrap();
        for round in 0..40usize {
            let mut values: Vec<(String, Vec<u8>)> = (0..100)
                .map(|i| {
                    (
                        format!("k{}", (round * 37 + i * 11) % 3000),
                        value_for(round * 100 + i, 50 + i * 7),
                    )
                })
                .collect();
            // The first key again, later in the same batch: this value must win.
            values.push((values[0].0.clone(), value_for(round, 33)));
            let items: Vec<(&str, &[u8])> = values.iter().map(|(k, v)| (k.as_str(), v.as_slice())).collect();
            store.set_many(&items, None).unwrap();
            for (k, v) in values {
                model.insert(k, v);
            }
            assert!(store.stats().disk_bytes <= 1024 * 1024, "{:?}", store.stats());
        }
        assert!(
            store.stats().evictions > 0,
            "the bound should have evicted: {:?}",
            store.stats()
        );
        for (k, v) in &model {
            if let Some(got) = store.get(k).unwrap() {
                assert_eq!(&got, v, "{k}");
            }
        }
        store.close().unwrap();
    }
    let store = FileStore::open(dir.path(), options()).unwrap();
    let mut present = 0;
    for (k, v) in &model {
        if let Some(got) = store.get(k).unwrap() {
            assert_eq!(&got, v, "{k} has an older value after restart");
            present += 1;
        }
    }
    assert!(present > 100, "only {present} keys survived");
    assert!(store.verify(|_, _| {}).unwrap().is_clean());
}

#[test]
fn a_store_or_replay_path_that_is_a_file_is_refused_naming_it_and_the_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache");
    std::fs::write(&file, b"not a store").unwrap();
    let err = FileStore::open(&file, FileStoreOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Io { path, .. } if path == &file)
            && text.contains("is a file, not a directory"),
        "{text}"
    );
    let err =
        uno_cache::replay::ReplayQueue::open(&file, uno_cache::replay::ReplayOptions::default()).unwrap_err();
    assert!(err.to_string().contains("is a file, not a directory"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store");
}
