//! `LocalStorage::holds_many`, which the two tiers' batch delete asks of the level below
//! instead of reading its values: each level's answer is what a read would find, live values
//! only (not expired, deleted or never written).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use uno_cache::local::hot::HotTier;
use uno_cache::local::tiered::Tiered;
use uno_cache::{FileStore, FileStoreOptions, LocalStorage, ManualClock, MemoryStore};

const T0: u64 = 1_700_000_000_000;

/// Writes a live key, one that expires, one deleted; then asks of them and of a key never
/// written, before and after the expiry, and checks the answers against `get_many`'s.
fn holds_what_a_read_finds(level: &dyn LocalStorage, clock: &ManualClock) {
    level.set("live", b"1", None).unwrap();
    level.set("expiring", b"2", Some(Duration::from_secs(1))).unwrap();
    level.set("deleted", b"3", None).unwrap();
    assert!(level.delete("deleted").unwrap());
    let keys = ["live", "expiring", "deleted", "never", "live"];
    for (moment, want) in [
        ("before the expiry", [true, true, false, false, true]),
        ("at the expiry", [true, false, false, false, true]),
    ] {
        let holds = level.holds_many(&keys).unwrap();
        assert_eq!(holds, want, "{}: {moment}", level.name());
        let read: Vec<bool> = level
            .get_many(&keys)
            .unwrap()
            .iter()
            .map(Option::is_some)
            .collect();
        assert_eq!(holds, read, "{}: {moment}, as a read finds", level.name());
        clock.advance(Duration::from_secs(1));
    }
}

#[test]
fn a_file_store_holds_what_a_read_finds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = FileStore::open(
        dir.path(),
        FileStoreOptions::default().clock(Arc::new(clock.clone())),
    )
    .unwrap();
    holds_what_a_read_finds(&store, &clock);
}

#[cfg(feature = "redb")]
#[test]
fn a_redb_store_holds_what_a_read_finds() {
    use uno_cache::{RedbOptions, RedbStore, REDB_FILE_NAME};
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let store = RedbStore::open(
        dir.path().join(REDB_FILE_NAME),
        RedbOptions::default().clock(Arc::new(clock.clone())),
    )
    .unwrap();
    holds_what_a_read_finds(&store, &clock);
}

/// The default, which reads the values.
#[test]
fn a_memory_store_holds_what_a_read_finds() {
    let clock = ManualClock::new(T0);
    let store = MemoryStore::with_clock(100, Arc::new(clock.clone())).unwrap();
    holds_what_a_read_finds(&store, &clock);
}

#[test]
fn the_two_tiers_hold_what_a_read_of_the_level_below_finds() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let base = FileStore::open(
        dir.path(),
        FileStoreOptions::default().clock(Arc::new(clock.clone())),
    )
    .unwrap();
    let hot = Arc::new(HotTier::new(100, 1 << 20, Arc::new(clock.clone())));
    holds_what_a_read_finds(&Tiered::new(hot, Arc::new(base)), &clock);
}
