//! The two local tiers (the memory tier of decoded values in front of the file store) built by
//! the manager from its configuration, with no L2, on a real ext4 mount whose file tier stops
//! taking writes, or has no block free:
//! - a segment made immutable (`chattr +i`, EPERM through descriptors opened before too, as a
//!   failing device's writes fail) latches the store read-only. No L2 means nothing can
//!   revalidate what the file tier keeps across a restart, so a change the file tier did not
//!   take must reach the caller as an error: answered `Ok`, the values it left are read back
//!   after the next start (the memory tier refills from the file tier);
//! - on a device filled to the last block, writes, deletes and prefix invalidations go on by
//!   evicting, and no tier ever serves an overwritten or deleted value, before or after a
//!   restart, with the memory tier evicting all the while.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mount.rs"]
mod mount;

use std::path::Path;

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
    let segment = fs.freeze_active_segment(&dir);

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

/// What each key may read as: `None` (a miss) always, and the values of `allowed`.
#[derive(Default)]
struct Model {
    allowed: std::collections::HashMap<String, Vec<String>>,
}

impl Model {
    /// `key` now holds `value` alone.
    fn set(&mut self, key: &str, value: &str) {
        self.allowed.insert(key.to_owned(), vec![value.to_owned()]);
    }

    /// A write of `value` that failed: it may have landed, or not.
    fn maybe_set(&mut self, key: &str, value: &str) {
        self.allowed
            .entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }

    fn delete(&mut self, key: &str) {
        self.allowed.remove(key);
    }

    #[track_caller]
    fn check(&self, key: &str, read: Option<String>, when: &str) {
        if let Some(read) = read {
            assert!(
                self.allowed.get(key).is_some_and(|a| a.contains(&read)),
                "{when}: {key} read {:?}, an old or deleted value (allowed: {:?})",
                &read[..read.len().min(24)],
                self.allowed
                    .get(key)
                    .map(|a| a.iter().map(|v| &v[..v.len().min(24)]).collect::<Vec<_>>())
            );
        }
    }
}

/// A value of `len` bytes that names its key and version.
fn versioned(key: &str, version: u32, len: usize) -> String {
    let head = format!("{key}@{version}:");
    format!("{head}{}", "x".repeat(len.saturating_sub(head.len())))
}

/// A device with not one block free under the two tiers (the file tier at its bound of 4 MiB
/// would need more than the device has): writes, overwrites, deletes and prefix invalidations
/// go on by evicting, the memory tier (16 values) evicting all the time too. No read ever
/// answers an overwritten or deleted value: right away, once the memory tier has dropped the
/// key, and after a restart, when the memory tier is empty and refills from the file tier. A
/// call that fails says why (a typed error naming the store), and may have applied or not.
#[test]
fn on_a_full_device_no_tier_serves_an_overwritten_or_deleted_value_before_or_after_a_restart() {
    let fs = Mount::ext4(16);
    let dir = fs.path().join("store");
    let config = || {
        CacheConfig::from_toml_str(&format!(
            "[local]\ntype = \"file\"\npath = \"{}\"\nmax_size = 4\nmemory_items = 16\n",
            dir.display()
        ))
        .unwrap()
    };
    let mut model = Model::default();
    let keys: Vec<String> = (0..200).map(|i| format!("{}:{i}", ["a", "b"][i % 2])).collect();
    let cache = CacheManager::new(config()).unwrap();
    for key in &keys {
        let value = versioned(key, 0, 3000);
        cache.set(key, &value, None).unwrap();
        model.set(key, &value);
    }
    cache.flush().unwrap();
    let _ballast = fs.fill("ballast");
    // Less than a segment (an eighth of the bound): the next one takes the place of the oldest.
    assert!(fs.free_bytes() < 512 * 1024, "{} bytes free", fs.free_bytes());

    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut failures = 0;
    for version in 1..=1_500u32 {
        let key = &keys[next(keys.len())];
        match next(20) {
            0..=11 => {
                let value = versioned(key, version, 2000 + next(2000));
                match cache.set(key, &value, None) {
                    Ok(()) => model.set(key, &value),
                    Err(e) => {
                        failures += 1;
                        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
                        model.maybe_set(key, &value);
                    }
                }
            }
            12..=16 => match cache.delete(key) {
                Ok(_) => model.delete(key),
                Err(e) => {
                    failures += 1;
                    assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
                }
            },
            17 => {
                let prefix = if next(2) == 0 { "a:1" } else { "b:2" };
                cache.invalidate_prefix(prefix).unwrap();
                for key in keys.iter().filter(|k| k.starts_with(prefix)) {
                    model.delete(key);
                }
            }
            _ => {
                let read: Option<String> = cache.get(key).unwrap();
                model.check(key, read, "typed read");
            }
        }
        let probe = &keys[next(keys.len())];
        model.check(probe, cache.get(probe).unwrap(), "typed read");
        model.check(
            probe,
            cache
                .get_raw(probe)
                .unwrap()
                .map(|raw| cache.codec().decode(probe, &raw).unwrap()),
            "raw read",
        );
    }
    let stats = cache.stats();
    assert!(
        stats.local.evictions > 0 && stats.memory.evictions > 0,
        "the full device made the file tier evict, and the memory tier evicted too: {stats:?}"
    );
    assert_eq!(stats.local.errors, failures, "one error counted per failed call");
    for key in &keys {
        model.check(key, cache.get(key).unwrap(), "before the restart");
    }
    drop(cache);

    let cache = CacheManager::new(config()).unwrap();
    let mut found = 0;
    for key in &keys {
        let read: Option<String> = cache.get(key).unwrap();
        found += usize::from(read.is_some());
        model.check(key, read, "after the restart");
        // Again, from the memory tier the first read filled.
        model.check(key, cache.get(key).unwrap(), "after the restart, memory tier");
    }
    assert!(
        found > 0,
        "the file tier kept nothing: the restart proves nothing"
    );
}
