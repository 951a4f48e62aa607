//! A manager built from TOML configuration: each `local.type` (file, memory, redb) serves
//! reads and writes, the persistent ones keep values across a restart, a second manager on the
//! same directory is refused, `use_multi_level = false` does not even connect to a configured
//! L2, invalid values are refused with the field named, every number at its largest value
//! still runs, and what the open of a file L1 removed is reported. (Real L2 levels built from configuration: `manager_distributed.rs`.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/delegate.rs"]
mod delegate;
#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;

use delegate::{Delegate, Wrap};
use uno_cache::{CacheConfig, CacheManager, Error};

fn toml_for(kind: &str, dir: &Path) -> String {
    format!(
        "use_multi_level = true\nfallback_on_error = true\n[local]\ntype = \"{kind}\"\nmax_size = 16\nttl = 120\npath = {:?}\ndurability = \"none\"\n",
        dir.display().to_string()
    )
}

#[test]
fn each_local_type_from_toml_serves_reads_and_writes() {
    for kind in ["file", "memory", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let cache =
            CacheManager::new(CacheConfig::from_toml_str(&toml_for(kind, dir.path())).unwrap()).unwrap();
        cache
            .set("k", &vec!["a".to_owned(), "b".to_owned()], None)
            .unwrap();
        assert_eq!(cache.get::<Vec<String>>("k").unwrap().unwrap(), ["a", "b"]);
        cache
            .multi_set([("x", 1i64), ("y", -1)], Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(cache.multi_get::<i64>(&["x", "y", "z"]).unwrap().len(), 2);
        assert_eq!(cache.multi_delete(&["x", "y"]).unwrap(), 2);
        assert!(cache.delete("k").unwrap());
        let stats = cache.stats();
        assert_eq!(stats.local.name, kind);
        assert_eq!(stats.size.local.items, 0, "{kind}");
        assert!(cache.distributed().is_none());
    }
}

#[test]
fn persistent_local_types_keep_values_across_a_restart() {
    for kind in ["file", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let config = CacheConfig::from_toml_str(&toml_for(kind, dir.path())).unwrap();
        {
            let cache = CacheManager::new(config.clone()).unwrap();
            cache.set("kept", &42u16, None).unwrap();
            cache.flush().unwrap();
        }
        let cache = CacheManager::new(config).unwrap();
        assert_eq!(cache.get::<u16>("kept").unwrap(), Some(42), "{kind}");
    }
}

#[test]
fn a_second_manager_on_the_same_directory_is_refused() {
    for kind in ["file", "redb"] {
        let dir = tempfile::tempdir().unwrap();
        let config = CacheConfig::from_toml_str(&toml_for(kind, dir.path())).unwrap();
        let _first = CacheManager::new(config.clone()).unwrap();
        let second = CacheManager::new(config);
        assert!(matches!(second, Err(Error::Locked { .. })), "{kind}: {second:?}");
    }
}

#[test]
fn without_multi_level_an_enabled_distributed_section_is_not_built() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[distributed]\nenabled = true\nhosts = [\"127.0.0.1:1\"]\n",
        toml_for("memory", dir.path()).replace("use_multi_level = true", "use_multi_level = false")
    );
    let cache = CacheManager::new(CacheConfig::from_toml_str(&text).unwrap()).unwrap();
    assert!(cache.distributed().is_none());
}

#[test]
fn invalid_values_are_refused_with_the_field_named() {
    let mut config = CacheConfig::default();
    config.local.ttl = Duration::ZERO;
    match CacheManager::new(config).unwrap_err() {
        Error::Config { field, .. } => assert_eq!(field, "local.ttl"),
        other => panic!("{other:?}"),
    }
    let err = CacheConfig::from_toml_str("[local]\ntype = \"sqlite\"\n").unwrap_err();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "local.type"),
        "{err}"
    );
    assert!(err.to_string().contains("local.type"));
}

/// A path that can name no directory, or only one called by blanks, is refused by the
/// configuration naming its field: a NUL byte (`"\u0000"` in TOML) failed `CacheManager::new`
/// as an I/O error on `create directory`, naming no field and printing the raw NUL byte into
/// the log line; `path = " "` made a directory called " " in the working directory (found by
/// review). Refused before anything is opened, so a `validate()` alone finds it too.
#[test]
fn a_path_with_a_nul_byte_or_only_blanks_is_refused_naming_the_field() {
    let l2 = "[distributed]\nenabled = true\nhosts = [\"127.0.0.1:6379\"]\n";
    let mut cases: Vec<(String, String, &str)> = [
        (
            "[local]\npath = \"data\\u0000\"\n".to_owned(),
            "local.path",
            "NUL",
        ),
        (
            "[local]\ntype = \"redb\"\npath = \"a\\u0000b\"\n".to_owned(),
            "local.path",
            "NUL",
        ),
        ("[local]\npath = \" \"\n".to_owned(), "local.path", "blank"),
        ("[local]\npath = \"\\t\"\n".to_owned(), "local.path", "blank"),
        (
            format!("[offline]\nreplay_dir = \"q\\u0000\"\n{l2}"),
            "offline.replay_dir",
            "NUL",
        ),
        (
            format!("[offline]\nreplay_dir = \"  \"\n{l2}"),
            "offline.replay_dir",
            "blank",
        ),
    ]
    .into_iter()
    .map(|(text, field, says)| (text, field.to_owned(), says))
    .collect();
    if cfg!(feature = "tls") {
        let tls = "[distributed]\nenabled = true\nhosts = [\"rediss://127.0.0.1:6379\"]\n";
        for key in ["tls_ca_file", "tls_cert_file", "tls_key_file"] {
            let pair = match key {
                "tls_cert_file" => "tls_key_file = \"k.pem\"\n",
                "tls_key_file" => "tls_cert_file = \"c.pem\"\n",
                _ => "",
            };
            for (value, says) in [("\"c\\u0000.pem\"", "NUL"), ("\"\"", "empty"), ("\" \"", "blank")] {
                cases.push((
                    format!("{tls}{pair}{key} = {value}\n"),
                    format!("distributed.{key}"),
                    says,
                ));
            }
        }
    }
    for (text, field, says) in &cases {
        match CacheConfig::from_toml_str(text) {
            Err(Error::Config { field: named, reason }) => {
                assert_eq!(named, *field, "{text:?}: {reason}");
                assert!(reason.contains(says), "{text:?}: {reason}");
                assert!(!reason.contains('\0'), "{text:?}: a raw NUL byte in {reason:?}");
            }
            other => panic!("{text:?}: not refused naming {field}: {other:?}"),
        }
    }
}

/// A configuration file is not read by a shell: `path = "~/.cache/myapp"` made a directory
/// called `~` in the working directory, and `"$HOME/.cache/myapp"` one called `$HOME`, with no
/// word, so a desktop app's cache was not where its user looked and moved with the working
/// directory (found by walking the README). Refused naming the field and what to give instead;
/// a `~` or `$` further in a path is a name like any other.
#[test]
fn a_path_that_starts_with_a_tilde_or_a_variable_is_refused_as_not_expanded() {
    let l2 = "[distributed]\nenabled = true\nhosts = [\"127.0.0.1:6379\"]\n";
    for (text, field, says) in [
        (
            "[local]\npath = \"~/.cache/myapp\"\n".to_owned(),
            "local.path",
            "~",
        ),
        ("[local]\npath = \"~\"\n".to_owned(), "local.path", "~"),
        (
            "[local]\npath = \"$HOME/.cache/myapp\"\n".to_owned(),
            "local.path",
            "$HOME",
        ),
        (
            "[local]\npath = \"${XDG_CACHE_HOME}/app\"\n".to_owned(),
            "local.path",
            "${XDG_CACHE_HOME}",
        ),
        (
            format!("[offline]\nreplay_dir = \"~/q\"\n{l2}"),
            "offline.replay_dir",
            "~",
        ),
    ] {
        match CacheConfig::from_toml_str(&text) {
            Err(Error::Config { field: named, reason }) => {
                assert_eq!(named, field, "{text:?}: {reason}");
                assert!(
                    reason.contains(says) && reason.contains("not expanded"),
                    "{text:?}: {reason}"
                );
            }
            other => panic!("{text:?}: not refused naming {field}: {other:?}"),
        }
    }
    for path in ["data/~backup", "/var/cache/$app", "./~"] {
        let text = format!("[local]\npath = {path:?}\n");
        CacheConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    }
}

/// Starting degraded on a misconfiguration is a kind of fallback: without `fallback_on_error`
/// the setting was accepted and then ignored, start-up failing with the very error it asked to
/// start through.
#[test]
fn start_degraded_on_config_error_without_fallback_on_error_is_refused_naming_the_field() {
    let err = CacheConfig::from_toml_str(
        "fallback_on_error = false\n[distributed]\nenabled = true\nhosts = [\"127.0.0.1:6379\"]\nstart_degraded_on_config_error = true\n",
    )
    .unwrap_err();
    match &err {
        Error::Config { field, reason } => {
            assert_eq!(field, "distributed.start_degraded_on_config_error");
            assert!(reason.contains("fallback_on_error = true"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// The durations of the configuration, in seconds, as `(section, key)`.
const DURATIONS: [(&str, &str); 5] = [
    ("local", "ttl"),
    ("distributed", "ttl"),
    ("loader", "fail_safe_max_duration"),
    ("loader", "fail_safe_throttle"),
    ("loader", "absent_ttl"),
];

/// A configuration that sets `key` of `section` to `secs` (with an L2, which `[distributed]`
/// needs to be checked).
fn with_duration(section: &str, key: &str, secs: &str) -> String {
    match section {
        "distributed" => {
            format!("[distributed]\nenabled = true\nhosts = [\"127.0.0.1:6379\"]\n{key} = {secs}\n")
        }
        _ => format!("[{section}]\n{key} = {secs}\n"),
    }
}

/// Expiries are kept in milliseconds: a TTL below one passed validation and acted as about a
/// millisecond. It is refused, as the CLI's `--ttl` is, naming the field.
#[test]
fn durations_in_seconds_below_a_millisecond_are_refused_naming_the_field() {
    for (section, key) in DURATIONS {
        let toml = |secs: &str| with_duration(section, key, secs);
        let err = CacheConfig::from_toml_str(&toml("0.0005")).unwrap_err();
        let field = format!("{section}.{key}");
        assert!(
            matches!(&err, Error::Config { field: f, reason } if *f == field && reason.contains("0.001")),
            "{field}: {err}"
        );
        CacheConfig::from_toml_str(&toml("0.001")).unwrap_or_else(|e| panic!("{field}: {e}"));
    }
}

/// A whole number of seconds past `u64::MAX` (which TOML's parser hands over as a 128-bit
/// integer) is refused naming the field and the largest accepted, as a float past it is; the
/// reason was serde's "invalid type: integer … as i128", which says nothing of what to write.
#[test]
fn durations_in_whole_seconds_past_u64_max_are_refused_naming_the_field_and_the_range() {
    for (section, key) in DURATIONS {
        let field = format!("{section}.{key}");
        let refused = |secs: &str| match CacheConfig::from_toml_str(&with_duration(section, key, secs)) {
            Err(Error::Config { field: f, reason }) if f == field => reason,
            other => panic!("{field} = {secs}: {other:?}"),
        };
        // One past u64::MAX; past i128::MAX (which comes as a u128).
        for secs in [
            "18446744073709551616",
            "99999999999999999999999",
            "170141183460469231731687303715884105728",
        ] {
            let reason = refused(secs);
            assert!(
                reason.contains("at most 18446744073709551615") && !reason.contains("i128"),
                "{field} = {secs}: {reason}"
            );
        }
        let reason = refused("-99999999999999999999999");
        assert!(reason.contains("negative"), "{field}: {reason}");
        CacheConfig::from_toml_str(&with_duration(section, key, "18446744073709551615"))
            .unwrap_or_else(|e| panic!("{field} = u64::MAX: {e}"));
    }
}

#[test]
fn a_memory_l1_holds_large_values_up_to_memory_max_mb() {
    let manager = || {
        CacheManager::new(
            CacheConfig::from_toml_str(
                r#"
                [local]
                type = "memory"
                max_size = 1000
                memory_max_mb = 1
                "#,
            )
            .unwrap(),
        )
        .unwrap()
    };
    // 1,000 places, but 1 MiB: about ten values of 100 KiB.
    let cache = manager();
    let value = vec![9u8; 100 << 10];
    for i in 0..100 {
        cache.set(&format!("blob-{i}"), &value, None).unwrap();
    }
    let size = cache.stats().size.local;
    assert!((1..=10).contains(&size.items), "{size:?}");
    assert!(size.bytes <= 1 << 20, "{size:?}");
    // Small values are bounded by their count, as without a bound in bytes.
    let cache = manager();
    for i in 0..2000 {
        cache.set(&format!("small-{i}"), b"v", None).unwrap();
    }
    let size = cache.stats().size.local;
    assert!((800..=1000).contains(&size.items), "{size:?}");
}

#[test]
fn an_invalid_field_in_a_config_file_names_the_field_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.toml");
    std::fs::write(&path, "[local]\ntype = \"memory\"\nttl = 0\n").unwrap();
    let err = CacheConfig::from_toml_file(&path).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(&err, Error::Config { field, .. } if field == "local.ttl")
            && text.contains(&path.display().to_string()),
        "{text}"
    );
}

/// A configuration file saved in another encoding than UTF-8 (Latin-1's `é`, byte 0xE9, in a
/// path) was refused as an I/O error, "stream did not contain valid UTF-8", naming neither the
/// field nor the line, though a TOML parse error names both (found by review). It is a
/// configuration error naming the field, the line and column and the byte, saying to save the
/// file as UTF-8.
#[test]
fn a_config_file_that_is_not_utf8_names_the_field_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.toml");
    std::fs::write(&path, b"[local]\nttl = 60\npath = \"/var/cache/caf\xe9\"\n").unwrap();
    match CacheConfig::from_toml_file(&path).unwrap_err() {
        Error::Config { field, reason } => {
            assert_eq!(field, "local.path", "{reason}");
            for says in ["0xE9", "line 3, column 23", "UTF-8", &path.display().to_string()] {
                assert!(reason.contains(says), "{reason:?} lacks {says}");
            }
        }
        other => panic!("not a configuration error: {other:?}"),
    }
}

/// A file over the 1 MiB bound is refused as such even where its bytes at the bound are part
/// of one UTF-8 character: the read cut at the bound was refused as not UTF-8 instead.
#[test]
fn a_config_file_over_a_mebibyte_is_refused_as_such_whatever_character_the_bound_cuts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.toml");
    // A comment of 'é's (two bytes each) from offset 2: the last byte read, at offset 1 MiB,
    // is the first half of one.
    let mut text = "##".to_owned();
    while text.len() <= 1 << 20 {
        text.push('é');
    }
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    match CacheConfig::from_toml_file(&path).unwrap_err() {
        Error::Config { field, reason } => {
            assert_eq!(field, "config");
            assert!(reason.contains("1048576 bytes"), "{reason}");
        }
        other => panic!("not refused for its size: {other:?}"),
    }
}

/// A configuration path that names a directory (`--config conf/` for `conf/cache.toml`) is told
/// to name the file: the advice for a directory in a store's place sent the user to look for
/// one inside a store (found by review).
#[test]
fn a_config_path_that_is_a_directory_says_to_give_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = CacheConfig::from_toml_file(dir.path()).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    assert!(
        text.contains("give the path of the TOML configuration file") && !text.contains("store"),
        "{text}"
    );
}

/// A configuration file is read up to 1 MiB: `--config /dev/zero` (or any path that is no
/// configuration) was read until the process ran out of memory (found by review). A file of
/// exactly that size is still read.
#[test]
fn a_config_file_over_a_mebibyte_is_refused_without_being_read_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.toml");
    let comment = |len: usize| format!("#{}\n", "x".repeat(len - 2));
    std::fs::write(&path, comment(1 << 20)).unwrap();
    assert_eq!(
        CacheConfig::from_toml_file(&path).unwrap(),
        CacheConfig::default()
    );
    std::fs::write(&path, comment((1 << 20) + 1)).unwrap();
    match CacheConfig::from_toml_file(&path).unwrap_err() {
        Error::Config { field, reason } => {
            assert_eq!(field, "config");
            assert!(
                reason.contains("1048576 bytes") && reason.contains(&path.display().to_string()),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// A bound an application's store cannot take is reported in the configuration's terms: the
/// file says `local.max_size`, not the option's name `max_size_mb`.
#[test]
fn a_file_store_bound_below_its_segments_names_local_max_size() {
    let dir = tempfile::tempdir().unwrap();
    // Created with the default segments (64 MiB: a bound of at least 256 MiB).
    uno_cache::FileStore::open(dir.path(), uno_cache::FileStoreOptions::default())
        .unwrap()
        .close()
        .unwrap();
    let text = format!(
        "use_multi_level = false\n[local]\ntype = \"file\"\npath = {:?}\nmax_size = 100\n",
        dir.path().display().to_string()
    );
    match CacheManager::new(CacheConfig::from_toml_str(&text).unwrap()).unwrap_err() {
        Error::Config { field, reason } => {
            assert_eq!(field, "local.max_size");
            assert!(!reason.contains("max_size_mb"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

/// A Memcached server listed twice, however written, is refused naming the second entry: it
/// was taken as two servers, whose items and bytes the stats counted twice while every key
/// went to one of them (found by review). Refused before anything connects.
#[cfg(feature = "memcached")]
#[test]
fn a_memcached_server_listed_twice_is_refused_naming_the_second_entry() {
    let text = "[local]\ntype = \"memory\"\n[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"127.0.0.1:1\", \"10.0.0.1:1\", \"memcache://127.0.0.1:1\"]\n";
    match CacheManager::new(CacheConfig::from_toml_str(text).unwrap()).unwrap_err() {
        Error::Config { field, reason } => {
            assert_eq!(field, "distributed.hosts[2]");
            assert!(
                reason.contains("127.0.0.1:1") && reason.contains("hosts[0]"),
                "{reason}"
            );
        }
        other => panic!("{other:?}"),
    }
}

/// The backplane's hosts are checked in the terms of `[invalidation]` when it has its own.
#[cfg(feature = "redis")]
#[test]
fn backplane_host_errors_name_the_invalidation_keys() {
    let text = "use_multi_level = false\n[local]\ntype = \"memory\"\n[invalidation]\nenabled = true\nhosts = [\"a:1\", \"b:2\"]\n";
    match CacheManager::new(CacheConfig::from_toml_str(text).unwrap()).unwrap_err() {
        Error::Config { field, reason } => {
            assert!(field.starts_with("invalidation."), "{field}: {reason}");
            assert!(!reason.contains("redis."), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_l1_opened_from_configuration_reports_the_segment_its_open_removed() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&toml_for("file", dir.path())).unwrap();
    {
        let cache = CacheManager::new(config.clone()).unwrap();
        cache.set("k", &1u8, None).unwrap();
        cache.flush().unwrap();
        let clean = cache.monitor().local_recovery().map(|r| r.damaged_segments);
        assert_eq!(clean, Some(0));
    }
    let seg = dir.path().join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[16] ^= 0xff; // the segment id in the header: its CRC no longer matches
    std::fs::write(&seg, bytes).unwrap();
    let cache = CacheManager::new(config.clone()).unwrap();
    let opened = cache.monitor().local_recovery().cloned().unwrap();
    assert_eq!(opened.damaged_segments, 1, "{opened:?}");
    assert_eq!(cache.get::<u8>("k").unwrap(), None, "its entry went with it");
    drop(cache);
    // The next open finds nothing: the report of the one that removed it is the only account.
    let cache = CacheManager::new(config).unwrap();
    assert_eq!(
        cache.monitor().local_recovery().map(|r| r.damaged_segments),
        Some(0)
    );
    // No file store, no report.
    let other = tempfile::tempdir().unwrap();
    for kind in ["memory", "redb"] {
        let cache =
            CacheManager::new(CacheConfig::from_toml_str(&toml_for(kind, other.path())).unwrap()).unwrap();
        assert!(cache.monitor().local_recovery().is_none(), "{kind}");
    }
}

#[test]
fn a_file_l1_opened_from_configuration_shows_its_own_counters_through_the_monitor() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&toml_for("file", dir.path())).unwrap();
    let cache = CacheManager::new(config).unwrap();
    for key in ["a", "b", "c"] {
        cache.set(key, &1u8, None).unwrap();
    }
    cache.delete("b").unwrap();
    let stats = cache.monitor().local_file_stats().unwrap();
    assert_eq!(stats.live_items, 2, "{stats:?}");
    assert!(stats.disk_bytes > 0, "{stats:?}");
    let other = tempfile::tempdir().unwrap();
    for kind in ["memory", "redb"] {
        let cache =
            CacheManager::new(CacheConfig::from_toml_str(&toml_for(kind, other.path())).unwrap()).unwrap();
        assert!(cache.monitor().local_file_stats().is_none(), "{kind}");
    }
}

/// The file-store L1's size bound through the monitor: `local.max_size`, and without it the
/// bound the directory recorded (the configuration's default, 1024 MiB, would be wrong there).
#[test]
fn the_monitor_gives_the_file_l1s_bound_the_recorded_one_where_the_configuration_sets_none() {
    let dir = tempfile::tempdir().unwrap();
    let cache =
        CacheManager::new(CacheConfig::from_toml_str(&toml_for("file", dir.path())).unwrap()).unwrap();
    assert_eq!(cache.monitor().local_file_max_size(), Some(16 << 20));
    drop(cache);
    let unset = toml_for("file", dir.path()).replace("max_size = 16\n", "");
    assert!(!unset.contains("max_size"), "{unset}");
    let cache = CacheManager::new(CacheConfig::from_toml_str(&unset).unwrap()).unwrap();
    assert_eq!(cache.monitor().local_file_max_size(), Some(16 << 20));
    let other = tempfile::tempdir().unwrap();
    for kind in ["memory", "redb"] {
        let cache =
            CacheManager::new(CacheConfig::from_toml_str(&toml_for(kind, other.path())).unwrap()).unwrap();
        assert!(cache.monitor().local_file_max_size().is_none(), "{kind}");
    }
}

/// An L2 that, as it is dropped, tries to open the file store in `dir`: whether the manager's
/// file L1 had closed (and let go of the directory's lock) by then.
struct OpensL1AsItGoes {
    level: uno_cache::MemoryStore,
    dir: std::path::PathBuf,
    l1_closed: std::sync::Arc<std::sync::Mutex<Option<bool>>>,
}

impl Drop for OpensL1AsItGoes {
    fn drop(&mut self) {
        let closed = match uno_cache::FileStore::open(&self.dir, uno_cache::FileStoreOptions::default()) {
            Ok(store) => store.close().is_ok(),
            Err(_) => false,
        };
        if let Ok(mut slot) = self.l1_closed.lock() {
            *slot = Some(closed);
        }
    }
}

impl Wrap for OpensL1AsItGoes {
    type Inner = uno_cache::MemoryStore;
    fn inner(&self) -> &uno_cache::MemoryStore {
        &self.level
    }
    fn name(&self) -> &str {
        "opens-l1-as-it-goes"
    }
}

/// The manager keeps its file L1 for the monitor, and that handle must not outlive the L1
/// itself: the store's last fsync and hint, and its directory lock, go before L2 is torn down
/// (an L2's drop can wait on its I/O thread), as they did before the monitor kept it.
#[test]
fn dropping_a_manager_closes_its_file_l1_before_its_l2_goes() {
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    let l1_closed = Arc::new(Mutex::new(None));
    let l2 = Delegate(OpensL1AsItGoes {
        level: uno_cache::MemoryStore::new(100).unwrap(),
        dir: dir.path().to_path_buf(),
        l1_closed: Arc::clone(&l1_closed),
    });
    let cache = CacheManager::builder()
        .config(CacheConfig::from_toml_str(&toml_for("file", dir.path())).unwrap())
        .distributed(Arc::new(uno_cache::InProcess::new(l2)))
        .build()
        .unwrap();
    cache.set("k", &1u8, None).unwrap();
    assert!(cache.monitor().local_file_stats().is_some());
    drop(cache);
    assert_eq!(
        *l1_closed.lock().unwrap(),
        Some(true),
        "L1 was still open when L2 went"
    );
}

/// A host on port 0, which nothing listens on, is refused at start-up naming the host: every
/// connect was refused, taken for an outage, and retried in the background for good (found by
/// review).
#[cfg(all(feature = "redis", feature = "memcached"))]
#[test]
fn a_host_on_port_0_is_refused_naming_the_host() {
    for (kind, host) in [
        ("redis", "127.0.0.1:0"),
        ("redis", "redis://[::1]:0/1"),
        ("memcached", "127.0.0.1:0"),
    ] {
        let text = format!(
            "[local]\ntype = \"memory\"\n[distributed]\nenabled = true\ntype = \"{kind}\"\nhosts = [\"h:1\", \"{host}\"]\ncluster = {}\n",
            kind == "redis"
        );
        match CacheManager::new(CacheConfig::from_toml_str(&text).unwrap()) {
            Err(Error::Config { field, reason }) => {
                assert_eq!(field, "distributed.hosts[1]", "{host}");
                assert!(reason.contains("port 0"), "{host}: {reason}");
            }
            Err(other) => panic!("{host}: not a configuration error: {other}"),
            Ok(_) => panic!("{host}: started on a port no server listens on"),
        }
    }
}

/// `local.map_reads` reaches the file store the manager opens (`random` or `around` whatever
/// the machine's memory; `auto` decides by it).
#[test]
fn a_manager_opens_its_file_l1_with_the_configured_map_reads() {
    let dir = tempfile::tempdir().unwrap();
    for (reads, random) in [("random", true), ("around", false)] {
        let config = CacheConfig::from_toml_str(&format!(
            "[local]\npath = {:?}\nmap_reads = \"{reads}\"\n",
            dir.path()
        ))
        .unwrap();
        let cache = CacheManager::builder().config(config).build().unwrap();
        let stats = cache.monitor().local_file_stats().unwrap();
        assert_eq!(stats.random_map_reads, random, "{reads}");
    }
}

/// A file L1 reads each segment through a memory map of its own: a bound whose segments would
/// take more than half of the maps the system lets a process hold (here the largest bound
/// taken, 1 PiB in 1 GiB segments) fails the manager's start with a configuration error that
/// names the setting and what to do, rather than failing writes once the store has grown.
#[test]
fn a_file_l1_bound_past_what_its_segments_can_map_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig::from_toml_str(&format!(
        "[local]\npath = {:?}\nmax_size = 1073741824\n",
        dir.path()
    ))
    .unwrap();
    let err = CacheManager::new(config)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("local.max_size")
            && err.contains("vm.max_map_count")
            && !err.contains("segment_size of at least"),
        "{err}"
    );
}

/// Every number of the configuration at the largest value it takes (for a file L1's bound, the
/// largest it maps), each alone: accepted, a
/// manager on a file L1 and a Redis L2 (with `fallback_on_error = false`, so an L2 error would
/// reach the call) starts, writes to both levels, reads, loads, counts and flushes. Durations
/// and sizes are added to clocks and turned into milliseconds, bytes and `PX` arguments: one
/// that overflowed would panic, or be refused by Redis (`invalid expire time`) on every write.
#[test]
fn every_setting_at_its_largest_value_starts_a_manager_that_writes_to_both_levels() {
    let server = support::RedisServer::start();
    let (secs, ms, count) = (u64::MAX.to_string(), u64::MAX.to_string(), usize::MAX.to_string());
    let settings: [(&str, &str, &str); 21] = [
        ("local", "ttl", &secs),
        // 16 TiB in MiB: the largest bound whose (1 GiB) segments a store can map under
        // Linux's default vm.max_map_count; 1 PiB, the largest taken, is refused at the open
        // for that (see `a_file_l1_bound_past_what_its_segments_can_map_is_refused_naming_it`).
        ("local", "max_size", "16777216"),
        ("local", "memory_items", &count),
        ("local", "memory_max_mb", "1073741824"),
        ("local", "durability_interval_ms", &ms),
        ("distributed", "ttl", &secs),
        ("distributed", "timeout_ms", &ms),
        ("distributed", "breaker_failures", "4294967295"),
        ("distributed", "breaker_cooldown_ms", &ms),
        ("distributed", "size_max_age_secs", &secs),
        ("distributed", "write_behind_max_keys", &count),
        ("offline", "replay_max_bytes", "4294967295"),
        ("offline", "replay_max_entries", &count),
        ("offline", "replay_interval_ms", &ms),
        ("loader", "fail_safe_max_duration", &secs),
        ("loader", "fail_safe_throttle", &secs),
        ("loader", "absent_ttl", &secs),
        ("loader", "hard_timeout_ms", &ms),
        ("loader", "refresh_ahead_max", &count),
        ("invalidation", "staleness_bound_ms", &ms),
        ("invalidation", "publish_timeout_ms", &ms),
    ];
    for (section, key, value) in settings {
        let dir = tempfile::tempdir().unwrap();
        let mut sections = std::collections::BTreeMap::from([
            (
                "local",
                format!("path = {:?}\n", dir.path().display().to_string()),
            ),
            (
                "distributed",
                format!(
                    "enabled = true\nhosts = [{:?}]\nkey_prefix = \"t:\"\n",
                    server.addr()
                ),
            ),
            ("invalidation", "enabled = true\n".to_owned()),
            ("loader", "refresh_ahead = 0.5\n".to_owned()),
        ]);
        if key == "write_behind_max_keys" {
            sections
                .get_mut("distributed")
                .unwrap()
                .push_str("write_mode = \"behind\"\n");
        }
        sections
            .entry(section)
            .or_default()
            .push_str(&format!("{key} = {value}\n"));
        let text: String = sections
            .iter()
            .map(|(name, body)| format!("[{name}]\n{body}"))
            .collect();
        let text = format!("fallback_on_error = false\n{text}");
        let setting = format!("{section}.{key} = {value}");
        let config = CacheConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{setting}: {e}"));
        let cache = CacheManager::new(config).unwrap_or_else(|e| panic!("{setting}: {e}"));
        let name = format!("k-{section}-{key}");
        cache
            .set(&name, &7u32, None)
            .unwrap_or_else(|e| panic!("{setting}: set: {e}"));
        cache.flush().unwrap_or_else(|e| panic!("{setting}: flush: {e}"));
        assert_eq!(cache.get::<u32>(&name).unwrap(), Some(7), "{setting}");
        let loaded = cache
            .get_or_load(&format!("{name}-loaded"), None, || Ok::<u32, Error>(8))
            .unwrap_or_else(|e| panic!("{setting}: load: {e}"));
        assert_eq!(loaded.into_value(), 8, "{setting}");
        let _ = cache.stats();
        let in_l2: u32 = redis::cmd("EXISTS")
            .arg(format!("t:{name}"))
            .query(&mut server.raw())
            .unwrap();
        assert_eq!(in_l2, 1, "{setting}: the value did not reach L2");
        drop(cache);
    }
}
