//! The file store on a machine with little RAM: a child process runs a store eight times larger
//! than its memory limit, in a real memory cgroup. What is pinned: the store's data live on disk
//! and in the page cache, which the kernel reclaims, not in the process's own memory; so a
//! store far larger than the RAM it may use fills, evicts, reads, closes and reopens without
//! the kernel's OOM killer. A store that read a whole segment (32 MiB here) into RAM at an
//! eviction, as an early build did, would be killed. (The limit was 16 MiB, for a 128 MiB store,
//! until a run on a cgroup v1 machine whose disk was busy with other writes was killed holding
//! 4 MiB of its own and 12 MiB of clean, unmapped page cache that the kernel did not reclaim:
//! twice both leaves the kernel room, and the store still eight times the limit.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/cgroup.rs"]
mod cgroup;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use cgroup::MemoryCgroup;
use uno_cache::{FileStore, FileStoreOptions};

const LIMIT: u64 = 32 << 20;
const BOUND_MB: u64 = 256;
const VALUE_LEN: usize = 4096;
/// Twice the bound of 4 KiB values: the store evicts half of what it is given.
const WRITES: u64 = 2 * BOUND_MB * 1024 * 1024 / VALUE_LEN as u64;
/// Written last, and so still held after the reopen: 40 MiB, well within the bound.
const NEWEST: u64 = 10_000;
const CHILD: &str = "child_fills_a_256_mib_store_twice_over_then_reopens_and_reads_its_newest";

fn key(i: u64) -> String {
    format!("key-{i:08}")
}

fn value(i: u64) -> Vec<u8> {
    let mut v = vec![i as u8; VALUE_LEN];
    v[..8].copy_from_slice(&i.to_le_bytes());
    v
}

#[test]
fn a_store_eight_times_its_memory_limit_fills_evicts_reopens_and_reads_in_a_32_mib_cgroup() {
    let group = MemoryCgroup::new(LIMIT);
    // On a real disk: a store on a tmpfs would be RAM itself, charged to the cgroup.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let status = group
        .command(
            &std::env::current_exe().unwrap(),
            &["--exact", CHILD, "--ignored", "--nocapture"],
        )
        .env("UNO_TEST_CHILD_DIR", dir.path())
        .env("UNO_TEST_CGROUP", group.name())
        .status()
        .unwrap();
    let kills = group.oom_kills();
    assert_eq!(
        kills,
        0,
        "the kernel's OOM killer killed the store's process under a {} MiB limit ({status}): the \
         store holds in its own memory what belongs on disk",
        LIMIT >> 20
    );
    assert_eq!(
        status.signal(),
        None,
        "the store's process was killed by a signal: {status}"
    );
    assert!(status.success(), "{status}");
    // The limit was really in force: 256 MiB went through the page cache, charged to the group.
    if let Some(peak) = group.peak() {
        assert!(
            peak > LIMIT / 2,
            "the group used at most {peak} bytes: was the child in it?"
        );
    }
}

/// Not a test of its own: the process that runs in the cgroup of
/// `a_store_eight_times_its_memory_limit_fills_evicts_reopens_and_reads_in_a_32_mib_cgroup`.
#[test]
#[ignore = "child process of a_store_eight_times_its_memory_limit_fills_evicts_reopens_and_reads_in_a_32_mib_cgroup; does nothing alone"]
fn child_fills_a_256_mib_store_twice_over_then_reopens_and_reads_its_newest() {
    let dir = std::env::var_os("UNO_TEST_CHILD_DIR").expect("UNO_TEST_CHILD_DIR: started by its parent test");
    let group = std::env::var("UNO_TEST_CGROUP").expect("UNO_TEST_CGROUP: started by its parent test");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(own.contains(&group), "not in the cgroup {group}: {own}");
    let dir = Path::new(&dir);
    let options = || FileStoreOptions::default().max_size_mb(BOUND_MB);
    let store = FileStore::open(dir, options()).unwrap();
    for i in 0..WRITES {
        store.set(&key(i), &value(i), None).unwrap();
        // Reads of recent keys: pages of the map faulted back in under pressure, and entries
        // read since they were written, which an eviction copies rather than drops.
        if i % 16 == 0 && i >= 1_000 {
            let back = i - 1_000;
            assert_eq!(store.get(&key(back)).unwrap(), Some(value(back)), "{}", key(back));
        }
    }
    let stats = store.stats();
    assert!(stats.evictions > WRITES / 2, "{stats:?}");
    store.close().unwrap();
    let store = FileStore::open(dir, options()).unwrap();
    for i in WRITES - NEWEST..WRITES {
        assert_eq!(
            store.get(&key(i)).unwrap(),
            Some(value(i)),
            "{} after the reopen",
            key(i)
        );
    }
    store.close().unwrap();
}
