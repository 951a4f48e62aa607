//! What survives a killed process with the redb store. redb keeps a commit made without fsync in
//! process memory only, so with `Periodic(d)` a write is safe from SIGKILL only once a durable
//! commit follows it; the store's flusher thread makes one every `d`, also after writes stop.
//! The crash is real: a child process (this test binary, run again with one ignored test
//! selected) writes, waits until the store says nothing is pending, and is killed with SIGKILL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

#[path = "manager_support/threads.rs"]
mod threads;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use uno_cache::{Durability, Freshness, LocalStorage, RedbOptions, RedbStore, Storage, REDB_FILE_NAME};

/// Puts the test binary in child mode; its value is the database file.
const CHILD_ENV: &str = "UNO_REDB_DURABILITY_CHILD";
const CHILD_TEST: &str = "child_writes_until_a_commit_is_pending_then_waits_for_the_flusher";
const INTERVAL: Duration = Duration::from_millis(50);

/// The tests count this process's cache threads: one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn open(path: &Path, durability: Durability) -> RedbStore {
    RedbStore::open(path, RedbOptions::default().durability(durability)).unwrap()
}

/// Kills the child on drop, so a failing test leaves no process behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "the child side of a_periodic_write_survives_sigkill_once_the_flusher_made_it_durable"]
fn child_writes_until_a_commit_is_pending_then_waits_for_the_flusher() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = open(Path::new(&path), Durability::Periodic(INTERVAL));
    // A write is durable by itself when the last durable commit is older than the interval;
    // the one that matters is one that was not.
    let pending = (0..100_000)
        .find_map(|i| {
            let value = format!("v{i}");
            store.set("k", value.as_bytes(), None).unwrap();
            store.has_non_durable_commits().then_some(value)
        })
        .expect("no write stayed in memory only");
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.has_non_durable_commits() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let state = if store.has_non_durable_commits() {
        "still-pending"
    } else {
        "durable"
    };
    let mut out = std::io::stdout();
    writeln!(out, "@{state} {pending}").unwrap();
    out.flush().unwrap();
    // Never closed: a close would commit durably itself. The parent kills us here.
    loop {
        std::thread::park();
    }
}

#[test]
fn a_periodic_write_survives_sigkill_once_the_flusher_made_it_durable() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    let child = support::dies_with_us(std::env::current_exe().unwrap().to_str().unwrap())
        .args([
            "--exact",
            CHILD_TEST,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    // The harness's own "test … " output precedes the report on its line where the child
    // runs one test thread (always here; by default on a machine with one CPU for it).
    let line = BufReader::new(stdout)
        .lines()
        .map(Result::unwrap)
        .find_map(|line| line.split_once('@').map(|(_, report)| report.to_owned()))
        .expect("the child ended without reporting");
    let (state, value) = line.split_once(' ').unwrap();
    assert_eq!(
        state, "durable",
        "the write of {value} was still held only in memory 10 s after writes stopped"
    );
    child.0.kill().unwrap();
    let status = child.0.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "{status:?}");

    let store = open(&path, Durability::None);
    let (entry, freshness) = store.get_checked("k").unwrap().expect("the write was lost");
    assert_eq!(entry.value, value.as_bytes());
    assert_eq!(freshness, Freshness::Suspect, "restored at open");
}

#[test]
fn a_dropped_store_stops_its_flusher_thread_at_once() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(threads::cache_threads(), Vec::<String>::new());
    // An interval far longer than the test: a thread that only noticed the drop at its next
    // turn would still be there.
    let store = open(
        &dir.path().join(REDB_FILE_NAME),
        Durability::Periodic(Duration::from_secs(3600)),
    );
    store.set("k", b"v", None).unwrap();
    // The thread names itself once it runs.
    let deadline = Instant::now() + Duration::from_secs(5);
    while threads::cache_threads().is_empty() && Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(threads::cache_threads(), vec!["uno-cache-redb".to_owned()]);
    drop(store);
    let left = threads::cache_threads_once_gone(Instant::now() + Duration::from_secs(5));
    assert_eq!(left, Vec::<String>::new());
}

/// The flusher thread also runs the purge of expired entries, which reads every entry; while
/// it scanned a large store no durable commit was made, so a write stayed at risk for the whole
/// scan, however short `d`. The purge now stops between rounds when a durable commit is due:
/// the window is `d` plus at most about a round. The scan is timed on this machine, so that a
/// slow one moves the bound with it; the median of the writes is compared, not the worst, so
/// that one stall of a loaded machine does not fail the test.
#[test]
fn with_periodic_durability_a_write_is_at_risk_for_about_d_even_while_the_purge_scans() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    let scan = {
        let options = RedbOptions::default()
            .durability(Durability::None)
            .purge_every(Duration::ZERO);
        let store = RedbStore::open(&path, options).unwrap();
        let value = [1u8; 16];
        for chunk in 0..10 {
            // In key order: a tenth of the time of random keys to write.
            let keys: Vec<String> = (0..10_000).map(|i| format!("key-{chunk:02}-{i:05}")).collect();
            let items: Vec<(&str, &[u8])> = keys.iter().map(|k| (k.as_str(), &value[..])).collect();
            store.set_many(&items, None).unwrap();
        }
        let started = Instant::now();
        assert_eq!(store.purge_expired().unwrap(), 0);
        started.elapsed()
    };
    let d = Duration::from_millis(20);
    // The flusher purges back to back (every 1 ms): a write always meets a scan under way.
    let options = RedbOptions::default()
        .durability(Durability::Periodic(d))
        .purge_every(Duration::from_millis(1));
    let store = RedbStore::open(&path, options).unwrap();
    let mut at_risk = Vec::new();
    for i in 0..15 {
        // Right after a durable commit, so that the write is not made durable by itself and
        // waits for the flusher's next one. No event says a commit became durable: polled,
        // for 10 s at most.
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.has_non_durable_commits() {
            assert!(
                Instant::now() < deadline,
                "write {i}: an earlier commit never became durable"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        store.set(&format!("tail-{i}"), b"v", None).unwrap();
        let written = Instant::now();
        while store.has_non_durable_commits() {
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "write {i} was never made durable by the flusher: {at_risk:?} before it"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        at_risk.push(written.elapsed());
    }
    at_risk.sort();
    let median = at_risk[at_risk.len() / 2];
    assert!(
        median < d + scan / 2,
        "writes stayed at risk for {at_risk:?} with Periodic({d:?}); a whole purge scan takes {scan:?}"
    );
}

/// With `Durability::None` no commit is durable until a flush or close; overwriting the same
/// few keys meanwhile must still keep the file near the size bound (which bounds the entries,
/// not the file), not grow it with every write until the disk fills.
#[test]
fn with_no_durability_overwrites_keep_the_file_near_the_size_bound() {
    let _serial = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(REDB_FILE_NAME);
    let options = RedbOptions::default().max_size_mb(1).durability(Durability::None);
    let store = RedbStore::open(&path, options).unwrap();
    let value = vec![7u8; 100 * 1024];
    // 40 MB written, over 5 keys.
    for i in 0..400 {
        store.set(&format!("k{}", i % 5), &value, None).unwrap();
    }
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(
        len < 16 * 1024 * 1024,
        "the file grew to {len} bytes for a 1 MiB bound"
    );
}
