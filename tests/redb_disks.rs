//! The redb store on a real small file system (a tmpfs, mounted as root) that fills up: a commit
//! that fails for lack of space changes no counter, is reported as `DiskFull`, and once space is
//! back the store reopens its database by itself and writes again, having lost nothing it had
//! acknowledged as durable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

use mount::Mount;
use uno_cache::{Durability, RedbOptions, RedbStore, Storage, REDB_FILE_NAME};

const KIB: usize = 1024;

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
