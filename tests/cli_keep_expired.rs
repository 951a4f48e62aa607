//! The `uno-cache` tool keeps the application's fail-safe window: a `compact` run on a store whose
//! application keeps expired entries to serve them stale (`loader.fail_safe_max_duration`) leaves
//! those copies, given the window by `--keep-expired-secs` or by the application's `--config`.
//! It opened every store with no window, and its compaction removed them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use uno_cache::{Clock, FileStore, FileStoreOptions, ManualClock, SystemClock};

const WINDOW: Duration = Duration::from_secs(3600);

fn options() -> FileStoreOptions {
    FileStoreOptions::default()
        .background_threads(false)
        .keep_expired(WINDOW)
}

/// A store holding `k`, written ten seconds ago with a five-second TTL: expired, and inside the
/// window.
fn store_with_a_stale_copy(dir: &Path) {
    let then = ManualClock::new(SystemClock.now_ms() - 10_000);
    let store = FileStore::open(dir, options().clock(Arc::new(then))).unwrap();
    store.set("k", b"stale", Some(Duration::from_secs(5))).unwrap();
    store.close().unwrap();
}

/// Runs `compact` with `args`, which must succeed; its stdout.
fn compact(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_uno-cache"))
        .args(args)
        .arg("compact")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn stale_copy(dir: &Path) -> Option<Vec<u8>> {
    let store = FileStore::open(dir, options()).unwrap();
    store.get_stale("k").unwrap().map(|e| e.value)
}

#[test]
fn compact_keeps_the_stale_copies_of_the_window_it_is_given() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    store_with_a_stale_copy(&dir);
    let dir_arg = dir.to_str().unwrap();
    compact(&["--dir", dir_arg, "--keep-expired-secs", "3600"]);
    assert_eq!(
        stale_copy(&dir).as_deref(),
        Some(&b"stale"[..]),
        "--keep-expired-secs"
    );

    let config = root.path().join("app.toml");
    std::fs::write(
        &config,
        format!("[local]\npath = {dir_arg:?}\n[loader]\nfail_safe_max_duration = 3600\n"),
    )
    .unwrap();
    compact(&["--config", config.to_str().unwrap()]);
    assert_eq!(stale_copy(&dir).as_deref(), Some(&b"stale"[..]), "--config");

    // Without a window there is nothing to keep them for.
    compact(&["--dir", dir_arg]);
    assert_eq!(stale_copy(&dir), None, "no window");
}

/// The open before the compaction drops what expired beyond the window, which the compaction's
/// own count leaves out: `compact` said "expired 0 entries" of a store it had just emptied.
#[test]
fn compact_counts_the_expired_entries_its_open_dropped() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("store");
    store_with_a_stale_copy(&dir);
    let said = compact(&["--dir", dir.to_str().unwrap()]);
    assert!(
        said.starts_with("expired 1 entry (1 dropped by the store's open, 0 by the compaction),"),
        "{said}"
    );
    assert_eq!(stale_copy(&dir), None);
    // Nothing left to drop: the next run says so, without the open's part.
    let said = compact(&["--dir", dir.to_str().unwrap()]);
    assert!(said.starts_with("expired 0 entries,"), "{said}");
}
