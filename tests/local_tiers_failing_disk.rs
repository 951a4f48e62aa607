//! The two local tiers (the memory tier of decoded values in front of the file store) built by
//! the manager from its configuration, with no L2, on a real ext4 mount whose file tier stops
//! taking writes: a segment made immutable (`chattr +i`, EPERM through descriptors opened before
//! too, as a failing device's writes fail) latches the store read-only. No L2 means nothing can
//! revalidate what the file tier keeps across a restart, so a change the file tier did not take
//! must reach the caller as an error: answered `Ok`, the values it left are read back after the
//! next start (the memory tier refills from the file tier).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

use std::path::{Path, PathBuf};

use mount::Mount;
use uno_cache::{CacheConfig, CacheManager, Error};

/// A manager with a file L1 in `dir` (1 MiB, so 128 KiB segments), its memory tier on, no L2.
fn manager(dir: &Path) -> CacheManager {
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\ntype = \"file\"\npath = \"{}\"\nmax_size = 1\nmemory_items = 100\n",
        dir.display()
    ))
    .unwrap();
    CacheManager::new(config).unwrap()
}

/// The store's newest segment: where its next record goes.
fn active_segment(dir: &Path) -> PathBuf {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    segments.pop().expect("the store has a segment")
}

const USERS: [&str; 3] = ["user:1", "user:2", "user:3"];

/// `USERS` and `other` written and read (typed, so the memory tier holds them too).
fn written(cache: &CacheManager) {
    for (i, key) in USERS.iter().enumerate() {
        cache.set(key, &format!("old {i}"), None).unwrap();
        assert_eq!(cache.get::<String>(key).unwrap(), Some(format!("old {i}")));
    }
    cache.set("other", "kept", None).unwrap();
    assert_eq!(cache.get::<String>("other").unwrap().as_deref(), Some("kept"));
}

#[test]
fn a_prefix_invalidation_the_file_tier_refuses_fails_naming_the_store_rather_than_answer_ok() {
    let fs = Mount::ext4(16);
    let dir = fs.path().join("store");
    let cache = manager(&dir);
    written(&cache);
    let segment = active_segment(&dir);
    fs.set_immutable(&segment, true);

    let err = cache
        .invalidate_prefix("user:")
        .expect_err("the file tier kept every key under the prefix: no Ok may say otherwise");
    let text = err.to_string();
    let Error::PrefixKeptInL1 {
        prefix,
        dropped,
        cause,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((prefix.as_str(), *dropped), ("user:", 0), "{err:?}");
    assert!(
        matches!(**cause, Error::Io { .. }) && text.contains(&segment.display().to_string()),
        "the cause names the file that refused the write: {text}"
    );
    assert!(
        text.contains("call invalidate_prefix again"),
        "says what to do: {text}"
    );
    // Asked again, async this time: the store is latched now, and says so.
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let err = runtime
        .block_on(cache.invalidate_prefix_async("user:"))
        .expect_err("still kept");
    assert!(
        matches!(&err, Error::PrefixKeptInL1 { cause, .. } if matches!(**cause, Error::WritesDisabled { .. })),
        "{err:?}"
    );
    // Until the restart, no tier serves what the invalidation meant to drop (nor anything else:
    // the file tier could be neither changed nor cleared).
    for key in USERS {
        assert_eq!(cache.get::<String>(key).unwrap(), None, "{key}");
        assert_eq!(cache.get_raw(key).unwrap(), None, "{key}");
    }
    let stats = cache.stats();
    assert!(stats.local.errors >= 1, "{:?}", stats.local);
    drop(cache);

    // The device takes writes again; a new process reads what the file tier kept, as it was
    // told: the invalidation failed, and retried now it succeeds.
    fs.set_immutable(&segment, false);
    let cache = manager(&dir);
    assert_eq!(
        cache.get::<String>("user:1").unwrap().as_deref(),
        Some("old 0"),
        "the file tier keeps what it refused to drop"
    );
    assert_eq!(cache.invalidate_prefix("user:").unwrap(), 3);
    for key in USERS {
        assert_eq!(cache.get::<String>(key).unwrap(), None, "{key}");
    }
    assert_eq!(cache.get::<String>("other").unwrap().as_deref(), Some("kept"));
    drop(cache);
    let cache = manager(&dir);
    for key in USERS {
        assert_eq!(cache.get::<String>(key).unwrap(), None, "{key}");
    }
}
