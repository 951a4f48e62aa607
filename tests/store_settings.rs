//! A store records the settings that shape it, so that whoever opens it next (the CLI, another
//! tool, the application after an upgrade) keeps them: the size bound, and the permission bits of
//! its files. A new store is private to its user (directory 0700, files 0600), and so are the
//! replay queue's files, because cached values are often personal data. The hash seed is a
//! setting it does not record: no hash is on disk, so a store reopens under any seed. The segment
//! size is fixed at creation, and the refusal of a value over it says so.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[cfg(feature = "redis")]
use support::RedisServer;
use uno_cache::replay::{ReplayOptions, ReplayQueue};
#[cfg(feature = "redis")]
use uno_cache::CacheManager;
use uno_cache::{CacheConfig, Durability, Error, FileStore, FileStoreOptions};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Every regular file in `dir` with its permission bits.
fn file_modes(dir: &Path) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), mode(&p)))
        .collect();
    out.sort();
    out
}

#[test]
fn a_store_reopened_with_default_options_keeps_the_bound_its_application_set() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4096)).unwrap();
    store.set("k", b"v", None).unwrap();
    store.close().unwrap();

    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 4096 << 20, "not the 1 GiB default");
    store.close().unwrap();
}

#[test]
fn an_explicit_bound_is_obeyed_and_replaces_the_recorded_one() {
    let dir = tempfile::tempdir().unwrap();
    // Below half of Linux's default 65,530 maps per process in 64 KiB segments (a store maps
    // each segment): 4096 MiB of them is refused.
    let options = FileStoreOptions::default()
        .max_size_mb(1536)
        .segment_size(64 * 1024);
    FileStore::open(dir.path(), options).unwrap().close().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(2)).unwrap();
    assert_eq!(store.max_size(), 2 << 20);
    // The smaller bound holds at once: ~3 MiB of writes leave about 2 MiB on disk.
    let value = vec![7u8; 16 * 1024];
    for i in 0..192 {
        store.set(&format!("k{i}"), &value, None).unwrap();
    }
    let disk = store.stats().disk_bytes;
    assert!(
        disk <= (2 << 20) + 64 * 1024,
        "{disk} bytes on disk over a 2 MiB bound plus one segment"
    );
    store.close().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 2 << 20, "the new bound was recorded");
}

/// The segment size, which bounds a value, is not a setting a reopen changes: a larger bound
/// leaves it as the store was created, so the refusal says where the limit comes from, not
/// only "raise the limit" (which would send the user to `max_size`, in vain).
#[test]
fn a_value_over_the_segment_says_the_segment_size_was_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(1))
        .unwrap()
        .close()
        .unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(1024)).unwrap();
    let err = store.set("photo", &vec![1u8; 200 * 1024], None).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::ValueTooLarge { .. }), "{text}");
    assert!(text.contains("131072-byte file-store segment"), "{text}");
    assert!(text.contains("fixed when the directory was created"), "{text}");
    assert!(text.contains("local.max_size"), "{text}");
}

#[test]
fn a_lowered_bound_holds_from_the_open_not_from_the_first_write() {
    // Evicting only when a write needs room left a store that is only read at the old bound's
    // size (found by the local tiers' model test: a manager restarted with a smaller
    // `max_size`).
    let dir = tempfile::tempdir().unwrap();
    let options = FileStoreOptions::default()
        .max_size_mb(2)
        .segment_size(128 * 1024);
    let store = FileStore::open(dir.path(), options).unwrap();
    let value = vec![7u8; 8 * 1024];
    for i in 0..240 {
        store.set(&format!("k{i}"), &value, None).unwrap();
    }
    assert!(
        store.stats().disk_bytes > 1 << 20,
        "the test needs more than the lower bound on disk"
    );
    store.close().unwrap();
    let store = FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(1)).unwrap();
    let stats = store.stats();
    assert!(
        stats.disk_bytes <= 1 << 20,
        "{} bytes on disk over a 1 MiB bound",
        stats.disk_bytes
    );
    assert!(stats.allocated_bytes <= (1 << 20) + 128 * 1024, "{stats:?}");
    // The newest values are the ones kept.
    assert_eq!(store.get("k239").unwrap(), Some(value));
}

#[test]
fn a_new_store_is_private_to_its_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("parent").join("store");
    let store = FileStore::open(&path, FileStoreOptions::default().max_size_mb(1)).unwrap();
    // Enough to seal a segment (128 KiB each) and write its hint.
    for i in 0..40 {
        store.set(&format!("k{i}"), &[1u8; 4096], None).unwrap();
    }
    store.close().unwrap();
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&dir.path().join("parent")), 0o700, "a created parent too");
    let files = file_modes(&path);
    for ext in ["meta", "seg", "hint"] {
        assert!(
            files.iter().any(|(name, _)| name.ends_with(ext)),
            "no .{ext} file in {files:?}"
        );
    }
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
}

#[test]
fn a_changed_file_mode_applies_to_the_directory_and_every_file_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let store = FileStore::open(&path, FileStoreOptions::default()).unwrap();
    store.set("k", b"v", None).unwrap();
    store.close().unwrap();

    let store = FileStore::open(&path, FileStoreOptions::default().file_mode(0o640)).unwrap();
    assert_eq!(mode(&path), 0o750);
    let files = file_modes(&path);
    assert!(files.len() >= 3, "{files:?}");
    assert!(files.iter().all(|(_, m)| *m == 0o640), "{files:?}");
    store.close().unwrap();

    // Recorded: the next open without a mode keeps 0640 for the files it creates.
    let store = FileStore::open(&path, FileStoreOptions::default()).unwrap();
    assert_eq!(store.file_mode(), 0o640);
    store.set("k2", b"v", None).unwrap();
    store.close().unwrap();
    // The umask may remove bits from new files, never add any.
    assert!(
        file_modes(&path).iter().all(|(_, m)| m & !0o640 == 0),
        "{:?}",
        file_modes(&path)
    );
}

#[test]
fn a_file_mode_that_locks_the_owner_out_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    for bad in [0o400, 0o200, 0o1600] {
        match FileStore::open(dir.path(), FileStoreOptions::default().file_mode(bad)) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "file_mode"),
            other => panic!("{bad:o}: expected a config error, got {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing created"
    );
    match CacheConfig::from_toml_str("[local]\nfile_mode = 0o440\n") {
        Err(Error::Config { field, .. }) => assert_eq!(field, "local.file_mode"),
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn the_replay_queue_files_are_private_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replay");
    let queue = ReplayQueue::open(&path, ReplayOptions::default()).unwrap();
    queue.push_set("k", b"personal", u64::MAX).unwrap();
    queue.compact().unwrap();
    drop(queue);
    assert_eq!(mode(&path), 0o700);
    let files = file_modes(&path);
    assert!(files.iter().any(|(name, _)| name == "replay.log"), "{files:?}");
    assert!(files.iter().all(|(_, m)| *m == 0o600), "{files:?}");
}

#[test]
#[cfg(feature = "redis")]
fn the_managers_file_mode_covers_the_file_store_and_the_replay_queue_in_its_directory() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = {:?}\nfile_mode = 0o640\n[distributed]\nenabled = true\nhosts = [\"{}\"]\n",
        data.display().to_string(),
        redis.addr()
    ))
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    cache.set("k", "v", None).unwrap();
    cache.flush().unwrap();
    assert_eq!(mode(&data), 0o750);
    let files = file_modes(&data);
    for name in ["uno-cache.meta", "replay.log", "replay.lock"] {
        assert!(files.iter().any(|(n, _)| n == name), "no {name} in {files:?}");
    }
    assert!(files.iter().all(|(_, m)| m & !0o640 == 0), "{files:?}");
    assert_eq!(
        mode(&data.join("uno-cache.meta")),
        0o640,
        "the recorded mode, exact"
    );
}

/// Options for a 1 MiB store whose evictions depend only on its operations and `seed`.
fn seeded(seed: u64) -> FileStoreOptions {
    FileStoreOptions::default()
        .max_size_mb(1)
        .durability(Durability::None)
        .background_threads(false)
        .hash_seed(seed)
}

#[test]
fn a_store_reopens_under_any_hash_seed_with_every_key_it_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), seeded(7)).unwrap();
    // Three times what the store holds, so that evictions run and segments are sealed with
    // their hint files.
    for i in 0..3_000u32 {
        store.set(&format!("k{i}"), &[i as u8; 600], None).unwrap();
    }
    assert!(store.stats().evictions > 0, "the store evicted nothing");
    let mut kept = store.keys();
    kept.sort();
    store.close().unwrap();
    for options in [seeded(8), FileStoreOptions::default().background_threads(false)] {
        let store = FileStore::open(dir.path(), options).unwrap();
        let mut reopened = store.keys();
        reopened.sort();
        assert_eq!(reopened, kept, "a reopen under another seed lost keys");
        for key in &kept {
            let i: u32 = key[1..].parse().unwrap();
            assert_eq!(store.get(key).unwrap(), Some(vec![i as u8; 600]), "{key}");
        }
        store.close().unwrap();
    }
}
