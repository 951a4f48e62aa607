//! The redb store on a real small file system (a tmpfs or an ext4 image, mounted as root) that
//! fills up: a commit that fails for lack of space changes no counter, is reported as
//! `DiskFull`, reads go on being answered while the disk stays full, and once space is back the
//! store writes again, having lost nothing it had acknowledged as durable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

use mount::Mount;
use std::path::Path;

use uno_cache::{
    Durability, Error, Freshness, LocalStorage, RedbOptions, RedbStore, Storage, REDB_FILE_NAME,
};

const KIB: usize = 1024;

fn open_every_write(path: &Path) -> RedbStore {
    RedbStore::open(
        path,
        RedbOptions::default()
            .max_size_mb(64)
            .durability(Durability::EveryWrite),
    )
    .unwrap()
}

fn value(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i.wrapping_mul(31) + j) as u8).collect()
}

#[test]
fn a_commit_that_fails_on_a_full_disk_counts_no_eviction() {
    let fs = Mount::tmpfs(4 * 1024);
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    let store = RedbStore::open(
        &path,
        RedbOptions::default()
            .max_size_mb(1)
            .durability(Durability::EveryWrite),
    )
    .unwrap();
    for i in 0..10 {
        store.set(&format!("k{i}"), &value(i, 100 * KIB), None).unwrap();
    }
    assert_eq!(store.counters().evictions, 0);
    let _ballast = fs.fill("ballast");
    // Evicts all ten in its transaction; its pages cannot reuse theirs before the commit, so the
    // commit needs new space, and fails.
    let err = store.set("big", &value(99, 1000 * KIB), None).unwrap_err();
    assert_eq!(
        store.counters().evictions,
        0,
        "the failed commit evicted nothing ({err})"
    );
    assert!(store.get("k0").unwrap().is_some(), "rolled back: {err}");
}

/// A store created on a full device: redb sized the new file, then failed to write its header,
/// and the file it left (no magic number) was refused once space was back as "not a redb
/// database", another program's file, to be moved away by hand. The open that fails now
/// leaves no file, and the next one, with space back, creates the store.
#[test]
fn a_store_whose_creation_found_the_disk_full_is_created_once_space_is_back() {
    created_once_space_is_back(&Mount::tmpfs(4 * 1024));
}

/// The same on ext4, where the store's directory itself takes a block: its creation found the
/// disk full before redb did, and was `Io`, not `DiskFull`.
#[test]
fn a_store_whose_directory_creation_found_an_ext4_disk_full_is_disk_full() {
    created_once_space_is_back(&Mount::ext4(16));
}

fn created_once_space_is_back(fs: &Mount) {
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    let ballast = fs.fill("ballast");
    let err = RedbStore::open(&path, RedbOptions::default()).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    fs.remove(&ballast);
    let store = RedbStore::open(&path, RedbOptions::default()).unwrap();
    store.set("k", b"v", None).unwrap();
    assert_eq!(store.get("k").unwrap().unwrap().value, b"v");
}

#[test]
fn a_full_disk_is_disk_full_and_writes_resume_once_space_is_back_without_losing_durable_values() {
    let fs = Mount::tmpfs(4 * 1024);
    let dir = fs.path().join("cache");
    let path = dir.join(REDB_FILE_NAME);
    // Ours to delete when the device is full: the space a user would free.
    let ballast = fs.path().join("ballast");
    std::fs::write(&ballast, vec![0xAA; 1024 * KIB]).unwrap();
    let store = open_every_write(&path);

    let mut acknowledged = Vec::new();
    let err = (0..1000)
        .find_map(|i| {
            let key = format!("k{i}");
            match store.set(&key, &value(i, 16 * KIB), None) {
                Ok(()) => {
                    acknowledged.push((key, value(i, 16 * KIB)));
                    None
                }
                Err(e) => Some(e),
            }
        })
        .expect("a 4 MiB device never filled up");
    assert!(matches!(err, Error::DiskFull { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&dir.display().to_string()),
        "names the directory: {err}"
    );
    assert!(!acknowledged.is_empty());

    // Still full: the next write is refused for the same reason, not for redb's latch.
    let again = store.set("again", &value(7, 16 * KIB), None).unwrap_err();
    assert!(matches!(again, Error::DiskFull { .. }), "{again:?}");

    fs.remove(&ballast);
    // Writes are refused for a second after one found the disk full: this one goes through
    // once that second is over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = store.set("after", b"space is back", None) {
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(std::time::Instant::now() < deadline, "writes never resumed: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(store.get("after").unwrap().unwrap().value, b"space is back");
    // The reopen restored the entries from the file, as an open does: suspect until checked.
    let (_, kept) = store.get_checked(&acknowledged[0].0).unwrap().unwrap();
    assert_eq!(kept, Freshness::Suspect);
    let (_, written) = store.get_checked("after").unwrap().unwrap();
    assert_eq!(written, Freshness::Trusted);
    store.flush().unwrap();
    drop(store);

    let store = open_every_write(&path);
    for (key, value) in &acknowledged {
        assert_eq!(
            store.get(key).unwrap().map(|e| e.value).as_ref(),
            Some(value),
            "{key}, acknowledged with EveryWrite before the disk filled"
        );
    }
    assert_eq!(store.get("after").unwrap().unwrap().value, b"space is back");
}

/// Commits that were not durable yet (`Periodic`) are lost when a full disk latches redb and the
/// store reopens its database: that much is the durability's promise, as after a kill. But a
/// flush after it must not say every completed write is durable: it made an empty commit durable
/// and returned `Ok`, and `has_non_durable_commits` said nothing was at risk. And what the lost
/// commits overwrote or deleted must not be served again: the rollback brought it back.
#[test]
fn a_reopen_that_lost_commits_serves_none_of_what_they_replaced_and_the_next_flush_reports_it() {
    let fs = Mount::tmpfs(4 * 1024);
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    let store = RedbStore::open(
        &path,
        RedbOptions::default()
            .max_size_mb(64)
            .durability(Durability::Periodic(std::time::Duration::from_secs(3600))),
    )
    .unwrap();
    store.set("a", b"1", None).unwrap();
    store.set("gone", b"1", None).unwrap();
    store.set("untouched", b"1", None).unwrap();
    store.flush().unwrap();
    // Held in process memory by redb until a durable commit, which the full disk refuses.
    for i in 0..8 {
        store.set(&format!("k{i}"), &value(i, 64 * KIB), None).unwrap();
    }
    store.set("a", b"2", None).unwrap();
    assert!(store.delete("gone").unwrap());
    assert!(store.has_non_durable_commits());
    let ballast = fs.fill("ballast");
    let full = store.flush().unwrap_err();
    assert!(matches!(full, Error::DiskFull { .. }), "{full:?}");

    fs.remove(&ballast);
    // Writes are refused for a second after one found the disk full.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = store.set("after", b"space is back", None) {
        assert!(std::time::Instant::now() < deadline, "writes never resumed: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(store.get("a").unwrap(), None, "the overwritten value came back");
    assert_eq!(store.get("gone").unwrap(), None, "the deleted value came back");
    assert_eq!(store.get_checked("a").unwrap(), None);
    assert_eq!(
        store.get("untouched").unwrap().map(|e| e.value).as_deref(),
        Some(&b"1"[..]),
        "a durable value no lost commit changed is kept"
    );
    store.set("a", b"3", None).unwrap();
    assert_eq!(
        store.get("a").unwrap().unwrap().value,
        b"3",
        "written again, it is served"
    );
    assert!(store.has_non_durable_commits(), "the lost commits were at risk");
    let lost = store.flush().unwrap_err();
    assert!(lost.to_string().contains("lost"), "{lost}");
    store.flush().unwrap();
    assert!(!store.has_non_durable_commits());
    // Hidden in this process only; the purge removes what the rollback brought back, so a
    // restart does not serve it either.
    store.purge_expired().unwrap();
    store.flush().unwrap();
    drop(store);
    let store = RedbStore::open(&path, RedbOptions::default().max_size_mb(64)).unwrap();
    assert_eq!(
        store.get("gone").unwrap(),
        None,
        "the deleted value came back after a restart"
    );
    assert_eq!(store.get("a").unwrap().unwrap().value, b"3");
    assert_eq!(store.get("untouched").unwrap().unwrap().value, b"1");
}

/// The keys a reopen's rollback brought back are hidden in memory; a clean close soon after
/// (before the background purge's next turn, a minute away by default) must not leave their
/// older values in the file for the next open to restore: a lost delete stays deleted.
#[test]
fn a_delete_lost_to_a_full_disk_stays_deleted_across_a_clean_close_and_reopen() {
    let fs = Mount::tmpfs(4 * 1024);
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    // No durable commit by the clock, so the delete is lost when the disk fills.
    let options = || {
        RedbOptions::default()
            .max_size_mb(64)
            .durability(Durability::Periodic(std::time::Duration::from_secs(3600)))
    };
    let store = RedbStore::open(&path, options()).unwrap();
    store.set("gone", b"old", None).unwrap();
    store.flush().unwrap();
    for i in 0..8 {
        store.set(&format!("k{i}"), &value(i, 64 * KIB), None).unwrap();
    }
    assert!(store.delete("gone").unwrap());
    let ballast = fs.fill("ballast");
    let full = store.flush().unwrap_err();
    assert!(matches!(full, Error::DiskFull { .. }), "{full:?}");

    fs.remove(&ballast);
    // Writes are refused for a second after one found the disk full.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = store.set("after", b"x", None) {
        assert!(std::time::Instant::now() < deadline, "writes never resumed: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(store.get("gone").unwrap(), None, "hidden in this process");
    let lost = store.flush().unwrap_err();
    assert!(lost.to_string().contains("lost"), "{lost}");
    store.flush().unwrap();
    drop(store);

    let store = RedbStore::open(&path, options()).unwrap();
    assert_eq!(
        store.get_checked("gone").unwrap(),
        None,
        "the acknowledged delete came back after a clean close and reopen"
    );
    assert_eq!(store.get("after").unwrap().unwrap().value, b"x");
}

/// A write that finds the disk full latches redb, whose every transaction then fails until the
/// database is reopened. Reads must go on being answered from what was durable meanwhile, not
/// fail until the next reopen falls due (at most one a second): on a disk that stays full a
/// steady stream of fills would otherwise keep the whole level unreadable.
#[test]
fn reads_are_served_while_the_disk_stays_full_and_writes_are_refused() {
    reads_are_served_while_full(&Mount::tmpfs(4 * 1024));
}

/// The same on ext4, whose delayed allocation and journal make "full" less sharp than tmpfs's.
#[test]
fn reads_are_served_while_an_ext4_disk_stays_full() {
    reads_are_served_while_full(&Mount::ext4(16));
}

fn reads_are_served_while_full(fs: &Mount) {
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    let store = open_every_write(&path);
    store.set("kept", b"durable", None).unwrap();
    let ballast = fs.fill("ballast");

    // Two failed writes in a row: the second meets the database the first one latched.
    for i in 0..2 {
        let err = store
            .set(&format!("w{i}"), &value(i, 64 * KIB), None)
            .unwrap_err();
        assert!(matches!(err, Error::DiskFull { .. }), "write {i}: {err:?}");
    }
    let read = store.get("kept");
    assert_eq!(
        read.as_ref()
            .ok()
            .and_then(|e| e.as_ref())
            .map(|e| e.value.as_slice()),
        Some(&b"durable"[..]),
        "a durable entry is served while the disk is full: {read:?}"
    );
    let many = store.get_many(&["kept", "w0"]).unwrap();
    assert_eq!(
        many.iter().map(Option::is_some).collect::<Vec<_>>(),
        [true, false]
    );
    let (_, freshness) = store.get_checked("kept").unwrap().unwrap();
    assert_eq!(
        freshness,
        Freshness::Suspect,
        "restored by the reopen, as at open"
    );
    assert_eq!(
        store.keys_with_prefix("ke").unwrap(),
        Some(vec!["kept".to_owned()])
    );
    let err = store.set("w2", b"x", None).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "still full: {err:?}");

    fs.remove(&ballast);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = store.set("after", b"space is back", None) {
        assert!(matches!(e, Error::DiskFull { .. }), "{e:?}");
        assert!(std::time::Instant::now() < deadline, "writes never resumed: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(store.get("after").unwrap().unwrap().value, b"space is back");
    assert_eq!(store.get("kept").unwrap().unwrap().value, b"durable");
}

/// An I/O error of redb's is no bare OS message: it names the file and says what to do, as the
/// file store's do. Here, a database on a file system mounted read-only since it was written.
#[test]
fn a_database_on_a_read_only_file_system_is_refused_naming_it_and_saying_what_to_do() {
    let fs = Mount::tmpfs(1024);
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    open_every_write(&path).set("k", b"v", None).unwrap();
    fs.remount_read_only();
    let err = RedbStore::open(&path, RedbOptions::default()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains(&path.display().to_string()),
        "names the file: {text}"
    );
    assert!(text.contains("remount it read-write"), "says what to do: {text}");
}

/// A delete lost to a full disk leaves the older value in the file, hidden from every read; a
/// later delete of the key removes that value, but it was no live entry: `delete` says false
/// and `delete_many` does not count it, as a read found nothing to delete.
#[test]
fn a_delete_of_a_key_whose_lost_delete_a_reopen_hid_counts_no_live_entry_removed() {
    let fs = Mount::tmpfs(4 * 1024);
    let path = fs.path().join("cache").join(REDB_FILE_NAME);
    let store = RedbStore::open(
        &path,
        RedbOptions::default()
            .max_size_mb(64)
            .durability(Durability::Periodic(std::time::Duration::from_secs(3600))),
    )
    .unwrap();
    store
        .set_many(&[("gone", b"old"), ("also gone", b"old"), ("kept", b"1")], None)
        .unwrap();
    store.flush().unwrap();
    for i in 0..8 {
        store.set(&format!("k{i}"), &value(i, 64 * KIB), None).unwrap();
    }
    assert_eq!(store.delete_many(&["gone", "also gone"]).unwrap(), 2);
    let ballast = fs.fill("ballast");
    let full = store.flush().unwrap_err();
    assert!(matches!(full, Error::DiskFull { .. }), "{full:?}");
    fs.remove(&ballast);
    // Writes are refused for a second after one found the disk full.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while let Err(e) = store.set("after", b"x", None) {
        assert!(std::time::Instant::now() < deadline, "writes never resumed: {e}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(store.get("gone").unwrap(), None, "hidden");
    assert!(!store.delete("gone").unwrap(), "a hidden entry is no live entry");
    assert_eq!(
        store.delete_many(&["also gone", "kept"]).unwrap(),
        1,
        "only kept was live"
    );
}
