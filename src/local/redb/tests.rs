//! Unit tests of the redb store: values, TTLs, counts, eviction, locking and batches.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::{self, ManualClock};
use crate::durability::Durability;
use crate::error::Error;

fn open(dir: &Path, mb: u64, clock: &ManualClock) -> RedbStore {
    RedbStore::open(
        dir.join(REDB_FILE_NAME),
        RedbOptions::default()
            .max_size_mb(mb)
            .durability(Durability::None)
            .clock(Arc::new(clock.clone())),
    )
    .unwrap()
}

#[test]
fn values_ttls_and_counts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    {
        let s = open(dir.path(), 1, &clock);
        s.set("a", b"1", None).unwrap();
        s.set("b", b"22", Some(Duration::from_secs(10))).unwrap();
        s.set("a", b"333", None).unwrap();
    }
    let s = open(dir.path(), 1, &clock);
    assert_eq!(s.get("a").unwrap().unwrap().value, b"333");
    let b = s.get("b").unwrap().unwrap();
    assert_eq!(b.expires_at, Some(clock::ms_to_system_time(15_000)));
    assert_eq!(
        s.size().unwrap(),
        StorageSize {
            items: 2,
            bytes: (1 + 16 + 3) + (1 + 16 + 2)
        }
    );
    clock.advance(Duration::from_secs(10));
    assert_eq!(s.get("b").unwrap(), None);
    assert_eq!(s.purge_expired().unwrap(), 1);
    assert_eq!(s.counters().expirations, 1);
    assert!(s.delete("a").unwrap());
    assert!(!s.delete("a").unwrap());
    assert_eq!(s.size().unwrap(), StorageSize::default());
}

#[test]
fn size_bound_evicts_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    let value = vec![7u8; 100 * 1024];
    for i in 0..20 {
        s.set(&format!("k{i:02}"), &value, None).unwrap();
    }
    let size = s.size().unwrap();
    assert!(size.bytes <= 1024 * 1024, "{size:?}");
    assert_eq!(size.items, 10);
    assert_eq!(s.counters().evictions, 10);
    assert_eq!(s.get("k09").unwrap(), None);
    assert!(s.get("k10").unwrap().is_some());
    assert!(matches!(
        s.set("huge", &vec![0u8; 2 * 1024 * 1024], None),
        Err(Error::ValueTooLarge { .. })
    ));
}

#[test]
fn a_lowered_bound_holds_from_the_open_not_from_the_first_write() {
    // Evicting only at a write left a store that is only read at the old bound's size (the
    // local model test, restarting a manager with a smaller `max_size`).
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let value = vec![7u8; 100 * 1024];
    {
        let s = open(dir.path(), 2, &clock);
        for i in 0..20 {
            s.set(&format!("k{i:02}"), &value, None).unwrap();
        }
        assert!(s.size().unwrap().bytes > 1024 * 1024);
    }
    let s = open(dir.path(), 1, &clock);
    let size = s.size().unwrap();
    assert!(size.bytes <= 1024 * 1024, "{size:?}");
    assert_eq!(size.items, 10);
    assert_eq!(s.counters().evictions, 10);
    // The oldest went; the newest are read as they were.
    assert_eq!(s.get("k09").unwrap(), None);
    assert_eq!(s.get("k19").unwrap().unwrap().value, value);
    drop(s);
    // Within its bound, an open evicts nothing.
    let s = open(dir.path(), 1, &clock);
    assert_eq!(s.counters().evictions, 0);
    assert_eq!(s.size().unwrap(), size);
}

#[test]
fn second_open_is_locked_and_clear_empties() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    let again = RedbStore::open(dir.path().join(REDB_FILE_NAME), RedbOptions::default());
    assert!(matches!(again, Err(Error::Locked { .. })), "{again:?}");
    s.set_many(&[("x", b"1"), ("y", b"2")], None).unwrap();
    assert_eq!(
        s.get_many(&["x", "nope", "y"])
            .unwrap()
            .iter()
            .filter(|e| e.is_some())
            .count(),
        2
    );
    s.clear().unwrap();
    assert_eq!(s.size().unwrap(), StorageSize::default());
    assert_eq!(s.get("x").unwrap(), None);
    s.set("z", b"3", None).unwrap();
    assert_eq!(s.size().unwrap().items, 1);
}

#[test]
fn set_each_writes_the_whole_batch_or_nothing_each_item_with_its_own_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    let huge = vec![0u8; 2 * 1024 * 1024];
    assert!(matches!(
        s.set_each(&[("first", b"1", None), ("huge", &huge, None)]),
        Err(Error::ValueTooLarge { ref key, .. }) if key == "huge"
    ));
    assert_eq!(
        s.get("first").unwrap(),
        None,
        "one transaction: nothing of a refused batch"
    );
    s.set_each(&[
        ("short", b"1", Some(Duration::from_secs(1))),
        ("long", b"2", Some(Duration::from_secs(60))),
        ("never", b"3", None),
    ])
    .unwrap();
    assert_eq!(
        s.get("short").unwrap().unwrap().expires_at,
        Some(clock::ms_to_system_time(6_000))
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(s.get("short").unwrap(), None);
    assert_eq!(
        s.get("long").unwrap().unwrap().expires_at,
        Some(clock::ms_to_system_time(65_000))
    );
    assert_eq!(s.get("never").unwrap().unwrap().expires_at, None);
}

#[test]
fn a_file_mode_given_is_applied_to_an_existing_database_file_and_kept_otherwise() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    drop(RedbStore::open(&path, RedbOptions::default()).unwrap());
    assert_eq!(mode(&path), 0o600, "created owner-only");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(RedbStore::open(&path, RedbOptions::default()).unwrap());
    assert_eq!(mode(&path), 0o644, "kept when no mode is given");
    drop(RedbStore::open(&path, RedbOptions::default().file_mode(0o600)).unwrap());
    assert_eq!(mode(&path), 0o600, "set to the mode given");
}

/// Expired entries held their share of the bound until evicted, and the eviction (oldest
/// written first) dropped live entries written before them: the purge removes them first.
#[test]
fn purged_expired_entries_leave_room_so_older_live_ones_are_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    let value = vec![7u8; 150 * 1024];
    for i in 0..3 {
        s.set(&format!("live{i}"), &value, None).unwrap();
    }
    for i in 0..3 {
        s.set(&format!("brief{i}"), &value, Some(Duration::from_secs(1)))
            .unwrap();
    }
    clock.advance(Duration::from_secs(2));
    assert_eq!(s.purge_expired().unwrap(), 3);
    assert_eq!(s.counters().expirations, 3);
    for i in 0..3 {
        s.set(&format!("new{i}"), &value, None).unwrap();
    }
    assert_eq!(s.counters().evictions, 0);
    for key in ["live0", "live2", "new2"] {
        assert!(s.get(key).unwrap().is_some(), "{key}");
    }
}

#[test]
fn a_purge_of_more_than_a_round_removes_every_expired_entry() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 64, &clock);
    let n = inner::PURGE_ROUND + 7;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8], Option<Duration>)> = keys
        .iter()
        .map(|k| (k.as_str(), &b"v"[..], Some(Duration::from_secs(1))))
        .collect();
    s.set_each(&items).unwrap();
    s.set("kept", b"v", None).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(s.purge_expired().unwrap(), n as u64);
    assert_eq!(s.size().unwrap().items, 1);
}

#[test]
fn the_background_thread_purges_expired_entries_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = RedbStore::open(
        dir.path().join(REDB_FILE_NAME),
        RedbOptions::default()
            .durability(Durability::EveryWrite)
            .clock(Arc::new(clock.clone()))
            .purge_every(Duration::from_millis(10)),
    )
    .unwrap();
    s.set("brief", b"v", Some(Duration::from_secs(1))).unwrap();
    s.set("kept", b"v", None).unwrap();
    clock.advance(Duration::from_secs(2));
    // The counter is the event: it moves when the thread's transaction commits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.counters().expirations == 0 {
        assert!(std::time::Instant::now() < deadline, "the thread never purged");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(s.size().unwrap().items, 1);
}

/// Intervals too long to add to an instant (`Duration::MAX`, "as good as never") panicked the
/// background thread as it started (`Instant + Duration` overflows): no purge and no periodic
/// durable commit ever ran, and nothing but a panic message on stderr said so.
#[test]
fn the_background_thread_outlives_intervals_too_long_to_add_to_an_instant() {
    let dir = tempfile::tempdir().unwrap();
    let s = RedbStore::open(
        dir.path().join(REDB_FILE_NAME),
        RedbOptions::default()
            .durability(Durability::Periodic(Duration::MAX))
            .purge_every(Duration::MAX),
    )
    .unwrap();
    s.set("k", b"v", None).unwrap();
    let flusher = s
        .flusher
        .as_ref()
        .expect("a store with a purge interval has the thread");
    // The event: the thread is asleep until its first turn (past where it panicked), or ended.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !flusher.is_asleep() && flusher.is_running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background thread neither slept nor ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(flusher.is_running(), "the background thread ended");
}

/// A purge removes nothing a caller was told of: its commit left the store "at risk" every
/// minute without a write, and a reopen that lost only it made the next flush report lost
/// writes.
#[test]
fn a_purge_puts_no_acknowledged_write_at_risk() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    s.set("brief", b"v", Some(Duration::from_secs(1))).unwrap();
    Storage::flush(&s).unwrap();
    clock.advance(Duration::from_secs(2));
    assert_eq!(s.purge_expired().unwrap(), 1);
    assert!(!s.has_non_durable_commits());
    assert_eq!(
        s.inner
            .commits_since_durable
            .load(std::sync::atomic::Ordering::Acquire),
        0
    );
}

/// The purge's removal of an older version a rollback brought back was never made durable
/// (a purge marks nothing at risk, so no flush committed it): a crash brought the deleted
/// value back after the restart, when nothing hides it any more.
#[test]
fn the_purge_of_what_a_rollback_brought_back_is_durable_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    s.set("gone", b"old", None).unwrap();
    Storage::flush(&s).unwrap();
    // As a reopen after a full disk does when it lost a delete of "gone".
    s.inner.lost.changed(["gone"]);
    s.inner.lost.reopened_after_loss(1_000_000);
    assert_eq!(s.get("gone").unwrap(), None);
    assert_eq!(s.purge_expired().unwrap(), 1);
    // What a crash leaves: the file as it is now, without the close's durable commit.
    let copy = dir.path().join("after-crash");
    std::fs::create_dir(&copy).unwrap();
    std::fs::copy(dir.path().join(REDB_FILE_NAME), copy.join(REDB_FILE_NAME)).unwrap();
    let restarted = open(&copy, 1, &clock);
    assert_eq!(
        restarted.get("gone").unwrap(),
        None,
        "the deleted value came back"
    );
}

/// Too many keys changed to list before a reopen lost them: every entry it restored is hidden,
/// and a flush removes them all from the file (in more than one round), keeping what was
/// written since.
#[test]
fn a_flush_removes_every_entry_a_rollback_brought_back_when_too_many_keys_changed_to_list() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 64, &clock);
    let n = inner::PURGE_ROUND + 7;
    let keys: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    s.set_many(&items, None).unwrap();
    Storage::flush(&s).unwrap();
    // As a reopen after a full disk does when the lost commits changed too many keys to list;
    // the database it reopened gives the next write seq `n`.
    let changed: Vec<String> = (0..=lost::MAX_KEYS).map(|i| format!("c{i}")).collect();
    s.inner.lost.changed(changed.iter().map(String::as_str));
    s.inner.lost.reopened_after_loss(n as u64);
    s.set("after", b"v", None).unwrap();
    assert_eq!(s.get("k0").unwrap(), None);
    Storage::flush(&s).unwrap();
    assert_eq!(
        s.size().unwrap().items,
        1,
        "only the write since the reopen is left"
    );
    drop(s);
    let reopened = open(dir.path(), 64, &clock);
    assert_eq!(reopened.get(&keys[n - 1]).unwrap(), None);
    assert_eq!(reopened.get("after").unwrap().unwrap().value, b"v");
}

/// A round is bounded by the entries it reads, not only by those it removes: over a large
/// store of live entries one round was the whole scan, and the flusher's durable commits
/// waited for it. Stopped between rounds, a purge resumes after the last key it read.
#[test]
fn a_purge_stopped_between_rounds_resumes_after_the_last_key_it_read() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 64, &clock);
    let keys: Vec<String> = (0..inner::PURGE_ROUND + 7).map(|i| format!("a{i:05}")).collect();
    let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &b"v"[..])).collect();
    s.set_many(&items, None).unwrap();
    s.set("z", b"v", Some(Duration::from_secs(1))).unwrap();
    clock.advance(Duration::from_secs(2));
    let (removed, after) = s.inner.purge_until(None, || true).unwrap();
    assert_eq!(removed, 0);
    assert_eq!(after.as_deref(), Some(keys[inner::PURGE_ROUND - 1].as_str()));
    assert_eq!(s.inner.purge_until(after, || true).unwrap(), (1, None));
    assert_eq!(s.size().unwrap().items, keys.len() as u64);
}

/// The open of `path`'s file, which must fail: the `Error::Redb` it returns, as text, after
/// checking that it names the file.
fn refused(path: &Path) -> String {
    match RedbStore::open(path, RedbOptions::default()) {
        Err(e @ Error::Redb { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains(&path.display().to_string()),
                "names the file: {text}"
            );
            text
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_that_is_no_redb_database_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    std::fs::write(&path, b"some other program's notes, not a database").unwrap();
    let text = refused(&path);
    assert!(text.contains("not a redb database"), "{text}");
    assert!(text.contains("move it away"), "says what to do: {text}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"some other program's notes, not a database",
        "left as it was"
    );
    // A mode in the options applies to the store's own file only: this one keeps its mode.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let refused_with_mode = RedbStore::open(&path, RedbOptions::default().file_mode(0o600));
    assert!(refused_with_mode.is_err(), "opened another program's file");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "another program's file had its mode changed");
}

/// A database file cut short inside redb's header (a copy interrupted) is refused saying what
/// to do, where the error was a bare "I/O error: failed to fill whole buffer".
#[test]
fn a_redb_file_cut_short_in_its_header_is_refused_saying_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    store.set("k", b"v", None).unwrap();
    drop(store);
    let bytes = std::fs::read(&path).unwrap();
    for cut in [100, 300] {
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let text = refused(&path);
        assert!(text.contains("cut short"), "{cut}: {text}");
        assert!(
            text.contains("move it away or delete it"),
            "{cut}: says what to do: {text}"
        );
    }
}

/// A redb file in another file format version (both commit slots of the header carry it, at
/// bytes 64 and 192): an older one (redb 1 and 2 wrote versions 1 and 2) and a newer one.
#[test]
fn a_redb_file_in_another_format_version_is_refused_saying_which_and_what_to_do() {
    for (version, which, says) in [(2u8, "version 2", "older redb"), (4, "found 4", "newer redb")] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REDB_FILE_NAME);
        let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
        store.set("k", b"v", None).unwrap();
        drop(store);
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!((bytes[64], bytes[192]), (3, 3), "redb 4 writes format version 3");
        bytes[64] = version;
        bytes[192] = version;
        std::fs::write(&path, &bytes).unwrap();
        let text = refused(&path);
        assert!(text.contains(which), "{text}");
        assert!(text.contains(says), "{text}");
        assert!(
            text.contains("move it away or delete it"),
            "says what to do: {text}"
        );
    }
}

/// The file's layout as storage-format.md gives it ("redb L1 file"), written with redb alone:
/// the store reads it, and writes the same layout back.
#[test]
fn a_database_built_from_the_documented_layout_is_read_and_written_the_same_way() {
    use redb::{ReadableDatabase, TableDefinition};
    const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new("entries");
    const ORDER: TableDefinition<u64, &str> = TableDefinition::new("order");
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let record = |expires_at_ms: u64, seq: u64, value: &[u8]| {
        [&expires_at_ms.to_le_bytes()[..], &seq.to_le_bytes(), value].concat()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut entries = txn.open_table(ENTRIES).unwrap();
            let mut order = txn.open_table(ORDER).unwrap();
            let mut meta = txn.open_table(META).unwrap();
            entries.insert("kept", record(0, 3, b"v1").as_slice()).unwrap();
            entries
                .insert("lapsed", record(4_000, 4, b"v2").as_slice())
                .unwrap();
            order.insert(3, "kept").unwrap();
            order.insert(4, "lapsed").unwrap();
            // Weight: key + 16-byte header + value, summed.
            meta.insert("bytes", (4 + 16 + 2) + (6 + 16 + 2)).unwrap();
            meta.insert("next_seq", 5).unwrap();
        }
        txn.commit().unwrap();
    }
    let clock = ManualClock::new(5_000);
    let store = open(dir.path(), 1, &clock);
    assert_eq!(store.get("kept").unwrap().unwrap().value, b"v1");
    assert_eq!(
        store.get("lapsed").unwrap(),
        None,
        "expired at 4,000 ms, read at 5,000"
    );
    store.set("new", b"v3", Some(Duration::from_secs(1))).unwrap();
    drop(store);
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    let entries = txn.open_table(ENTRIES).unwrap();
    let written = entries.get("new").unwrap().unwrap().value().to_vec();
    assert_eq!(
        written,
        record(6_000, 5, b"v3"),
        "expiry, then seq, then the value"
    );
    let order = txn.open_table(ORDER).unwrap();
    assert_eq!(order.get(5).unwrap().unwrap().value(), "new");
    let meta = txn.open_table(META).unwrap();
    assert_eq!(meta.get("next_seq").unwrap().unwrap().value(), 6);
}

/// A redb database of another program: opened as a store, it got the store's three tables
/// beside its own (or, with a table of one of their names but other types, failed every call).
#[test]
fn another_programs_redb_database_is_refused_and_left_as_it_was() {
    use redb::{ReadableDatabase, TableDefinition, TableHandle};
    const USERS: TableDefinition<&str, &str> = TableDefinition::new("users");
    const ENTRIES_OF_ANOTHER_TYPE: TableDefinition<u64, u64> = TableDefinition::new("entries");
    for (name, with_ours) in [("users", false), ("entries", false), ("users", true)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REDB_FILE_NAME);
        {
            let db = redb::Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            if name == "users" {
                txn.open_table(USERS).unwrap().insert("ada", "admin").unwrap();
            } else {
                txn.open_table(ENTRIES_OF_ANOTHER_TYPE)
                    .unwrap()
                    .insert(1, 2)
                    .unwrap();
            }
            txn.commit().unwrap();
        }
        if with_ours {
            // The store's tables beside another program's: still not the store's file.
            let db = redb::Database::open(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(tables::ENTRIES).unwrap();
            txn.open_table(tables::ORDER).unwrap();
            txn.open_table(tables::META).unwrap();
            txn.commit().unwrap();
        }
        let text = refused(&path);
        assert!(text.contains("another program's database"), "{name}: {text}");
        assert!(text.contains("local.path"), "says what to do: {text}");
        let db = redb::Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let mut names: Vec<String> = txn.list_tables().unwrap().map(|t| t.name().to_owned()).collect();
        names.sort();
        let expected: Vec<&str> = if with_ours {
            vec!["entries", "meta", "order", "users"]
        } else {
            vec![name]
        };
        assert_eq!(names, expected, "tables added to another program's file");
        if name == "users" {
            let users = txn.open_table(USERS).unwrap();
            assert_eq!(users.get("ada").unwrap().unwrap().value(), "admin");
        }
    }
}

/// A redb before 4.3 (the versions older uno-cache builds used) holds a database with a lock of
/// the whole file (`flock`), exclusive for a writer and shared for a reader, where this build's
/// redb takes byte ranges: a file held so, built here by hand, is refused as `Locked`, naming
/// the file, as when this build holds it.
#[test]
fn a_file_held_with_the_whole_file_lock_of_an_older_redb_is_locked_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    drop(RedbStore::open(&path, RedbOptions::default()).unwrap());
    for shared in [false, true] {
        let holder = std::fs::File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        if shared {
            holder.try_lock_shared().unwrap();
        } else {
            holder.try_lock().unwrap();
        }
        let err = RedbStore::open(&path, RedbOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::Locked { path: p, lock } if p == &path && lock == &path),
            "shared {shared}: {err:?}"
        );
        assert!(
            err.to_string().contains("close it first"),
            "says what to do: {err}"
        );
        drop(holder);
    }
    RedbStore::open(&path, RedbOptions::default()).unwrap();
}

/// redb refuses an open while a process of another generation of its multi-process locking
/// protocol (another redb version) has the file open: that is the file being open elsewhere,
/// `Locked` naming it, not a generic redb error.
#[test]
fn another_redb_locking_protocol_holding_the_file_is_locked_naming_the_file() {
    let path = Path::new("/var/cache/app").join(REDB_FILE_NAME);
    let err = handle::open_error(&path, redb::DatabaseError::LockProtocolMismatch);
    assert!(
        matches!(&err, Error::Locked { path: p, lock } if p == &path && lock == &path),
        "{err:?}"
    );
}

/// A database whose tables bear exactly this store's three names but hold other types (another
/// program's, or a layout of another uno-cache version) is another program's too: refused
/// saying so and what to do, not with redb's bare type mismatch, and left as it was.
#[test]
fn a_database_with_the_stores_table_names_but_other_types_is_refused_and_left_as_it_was() {
    use redb::{ReadableDatabase, TableDefinition};
    const ENTRIES_OF_ANOTHER_TYPE: TableDefinition<&str, u64> = TableDefinition::new("entries");
    const META_OF_ANOTHER_TYPE: TableDefinition<&str, &str> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(ENTRIES_OF_ANOTHER_TYPE)
            .unwrap()
            .insert("k", 7)
            .unwrap();
        txn.open_table(tables::ORDER).unwrap();
        txn.open_table(META_OF_ANOTHER_TYPE)
            .unwrap()
            .insert("owner", "ada")
            .unwrap();
        txn.commit().unwrap();
    }
    let text = refused(&path);
    assert!(text.contains("another program's database"), "{text}");
    assert!(text.contains("local.path"), "says what to do: {text}");
    let db = redb::Database::open(&path).unwrap();
    let txn = db.begin_read().unwrap();
    assert_eq!(
        txn.open_table(ENTRIES_OF_ANOTHER_TYPE)
            .unwrap()
            .get("k")
            .unwrap()
            .unwrap()
            .value(),
        7
    );
    assert_eq!(
        txn.open_table(META_OF_ANOTHER_TYPE)
            .unwrap()
            .get("owner")
            .unwrap()
            .unwrap()
            .value(),
        "ada"
    );
}

/// A read that meets the latch a full disk left, before the write that found it full has
/// reopened the database (another thread's read, in between), reopens it at once and is served,
/// where it failed until the next reopen fell due by the clock.
#[test]
fn a_read_that_meets_a_full_disks_latch_reopens_the_database_at_once_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    s.set("k", b"v", None).unwrap();
    s.flush().unwrap();
    // What a commit that found the device full leaves, a reopen having just been made.
    *s.inner.last_reopen.lock() = Some(std::time::Instant::now());
    let full = s.inner.err(
        "commit",
        redb::Error::Io(std::io::Error::from(std::io::ErrorKind::StorageFull)),
    );
    assert!(matches!(full, Error::DiskFull { .. }), "{full:?}");
    assert_eq!(s.get("k").unwrap().map(|e| e.value), Some(b"v".to_vec()));
    assert!(matches!(s.set("k", b"w", None), Err(Error::DiskFull { .. })));
}

/// A `meta` row `next_seq` at its maximum (a damaged or foreign file) leaves no sequence number
/// for a write: the write is refused naming the file and the field, and saying what to do,
/// where a release build wrapped the number to 0 (new rows then took the `order` slots of old
/// ones, and every later write read as suspect).
#[test]
fn a_next_seq_at_its_maximum_refuses_writes_naming_the_field_and_what_to_do() {
    use redb::TableDefinition;
    const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(tables::ENTRIES).unwrap();
        txn.open_table(tables::ORDER).unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("next_seq", u64::MAX)
            .unwrap();
        txn.commit().unwrap();
    }
    let clock = ManualClock::new(5_000);
    let store = open(dir.path(), 1, &clock);
    let err = store.set("k", b"v", None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Redb { .. }), "{err:?}");
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("next_seq"), "names the field: {text}");
    assert!(text.contains("move it away"), "says what to do: {text}");
    assert_eq!(store.get("k").unwrap(), None, "nothing written");
}

/// redb takes no value over 3 GiB, and a record is the value with a 16-byte header: with a
/// size bound above that, a larger value is refused up front as `ValueTooLarge` naming the key
/// and the limit (bad input, before anything is written anywhere), not by redb's generic error
/// at commit.
#[test]
fn a_value_over_redbs_own_limit_is_refused_up_front_under_a_larger_size_bound() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 8 * 1024, &clock);
    let largest = 3 * 1024 * 1024 * 1024 - tables::HEADER_LEN;
    s.check_value("k", largest).unwrap();
    match s.check_value("k", largest + 1) {
        Err(Error::ValueTooLarge { key, len, max, .. }) => {
            assert_eq!((key.as_str(), len, max), ("k", largest + 1, largest));
        }
        other => panic!("{other:?}"),
    }
}

/// `size().items` is redb's row count, which holds an expired entry until the purge removes
/// it: a reader of the stats took it for entries they could read. `count_live` counts only
/// those, and the purge brings the two together.
#[test]
fn count_live_leaves_out_expired_rows_that_size_counts_until_the_purge() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    s.set("stays", b"1", None).unwrap();
    s.set("goes", b"2", Some(Duration::from_secs(1))).unwrap();
    assert_eq!((s.size().unwrap().items, s.count_live().unwrap()), (2, 2));
    clock.advance(Duration::from_secs(1));
    assert_eq!(s.get("goes").unwrap(), None);
    assert_eq!(
        (s.size().unwrap().items, s.count_live().unwrap()),
        (2, 1),
        "the expired row is in the row count until purged, never in the live count"
    );
    assert_eq!(s.purge_expired().unwrap(), 1);
    assert_eq!((s.size().unwrap().items, s.count_live().unwrap()), (1, 1));
}

/// A value over the size bound with its key is refused naming the largest value the bound
/// takes for that key, as the file store names the largest its segment takes: the error named
/// the bound itself, so a value a few bytes under it read as "N bytes, over the limit of M"
/// with N below M.
#[test]
fn a_value_over_the_size_bound_names_the_largest_value_the_bound_takes_for_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(5_000);
    let s = open(dir.path(), 1, &clock);
    let bound = 1024 * 1024;
    let largest = bound - "key".len() - tables::HEADER_LEN;
    s.check_value("key", largest).unwrap();
    s.set("key", &vec![1u8; largest], None).unwrap();
    for len in [largest + 1, bound - 1] {
        match s.check_value("key", len) {
            Err(Error::ValueTooLarge {
                key,
                len: refused,
                max,
                ..
            }) => {
                assert_eq!((key.as_str(), refused, max), ("key", len, largest));
                assert!(refused > max, "the value named is over the limit named");
            }
            other => panic!("{len}: {other:?}"),
        }
    }
}
