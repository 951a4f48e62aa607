//! The parts of the README a test can hold to the code, beside its Rust blocks (doctests, as
//! `src/lib.rs` includes the README). Its TOML blocks are what users copy: each must load as
//! written, the keys it shows commented out must still be fields, and the settings it shows at
//! their defaults must still be the defaults; a renamed key or a changed default would have
//! left the README wrong unnoticed. The blocks ask for a Redis L2 and the backplane: without the
//! `redis` feature the same text must be refused naming it, so each test checks one side or the
//! other in every build.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::PathBuf;
use std::time::Duration;

use uno_cache::{
    CacheConfig, CacheManager, DistributedKind, DurabilityMode, Error, LocalKind, RestartPolicy, WriteMode,
};

const README: &str = include_str!("../README.md");

/// The fenced blocks of `markdown` tagged `toml`, with the line each starts on.
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match open.take() {
            None if line.trim_start() == "```toml" => open = Some((i + 1, String::new())),
            None => {}
            Some(block) if line.trim_start().starts_with("```") => blocks.push(block),
            Some((start, mut text)) => {
                text.push_str(line);
                text.push('\n');
                open = Some((start, text));
            }
        }
    }
    assert!(open.is_none(), "README: a ```toml block is never closed");
    blocks
}

/// The README's configuration: every TOML block but the Cargo dependency one, in order, as one
/// file (the blocks are sections of one file: no table appears in two of them).
fn readme_configuration() -> String {
    let blocks = toml_blocks(README);
    let (cargo, config): (Vec<_>, Vec<_>) = blocks
        .into_iter()
        .partition(|(_, text)| text.trim_start().starts_with("[dependencies]"));
    assert_eq!(cargo.len(), 1, "README: one Cargo.toml snippet expected");
    assert!(
        config.len() >= 3,
        "README: the configuration blocks went missing: {config:?}"
    );
    config.into_iter().map(|(_, text)| text).collect()
}

fn refused_for_want_of_redis(result: Result<CacheConfig, Error>) {
    match result {
        Err(Error::FeatureDisabled { feature, .. }) => assert_eq!(feature, "redis"),
        other => panic!("without the redis feature the README's L2 must be refused: {other:?}"),
    }
}

#[test]
fn the_cargo_snippet_of_the_readme_names_this_crate_and_a_feature_it_has() {
    let (_, text) = toml_blocks(README)
        .into_iter()
        .find(|(_, text)| text.trim_start().starts_with("[dependencies]"))
        .expect("README: the Cargo.toml snippet");
    let table: toml::Table = toml::from_str(&text).unwrap();
    let dep = &table["dependencies"]["uno-cache"];
    let version = dep["version"].as_str().unwrap();
    assert!(
        env!("CARGO_PKG_VERSION").starts_with(version),
        "README asks for {version}, the crate is {}",
        env!("CARGO_PKG_VERSION")
    );
    let manifest: toml::Table = toml::from_str(include_str!("../Cargo.toml")).unwrap();
    for feature in dep["features"].as_array().unwrap() {
        let feature = feature.as_str().unwrap();
        assert!(
            manifest["features"].get(feature).is_some(),
            "README names a feature Cargo.toml lacks: {feature}"
        );
    }
}

#[test]
fn every_readme_configuration_block_loads_as_one_file_with_its_features() {
    let text = readme_configuration();
    let result = CacheConfig::from_toml_str(&text);
    if !cfg!(feature = "redis") {
        refused_for_want_of_redis(result);
        return;
    }
    let config = result.unwrap_or_else(|e| panic!("README's configuration: {e}\n{text}"));
    assert_eq!(config.local.kind, LocalKind::File);
    assert_eq!(config.distributed.kind, DistributedKind::Redis);
    assert!(config.distributed.enabled && config.invalidation.enabled);
    assert_eq!(config.loader.refresh_ahead, 0.8);
    assert_eq!(config.loader.fail_safe_max_duration, Duration::from_secs(86_400));
}

/// Each block alone, as a reader who takes one section would: the `[loader]` block needs
/// nothing else; the backplane's needs the L2 (its default hosts are the Redis L2's), which the
/// README says.
#[test]
fn the_readme_loader_block_loads_alone_and_the_backplane_block_needs_the_l2_it_says() {
    let blocks: Vec<String> = toml_blocks(README).into_iter().map(|(_, t)| t).collect();
    let loader = blocks
        .iter()
        .find(|t| t.trim_start().starts_with("[loader]"))
        .expect("README: the [loader] block");
    CacheConfig::from_toml_str(loader).unwrap_or_else(|e| panic!("{e}\n{loader}"));
    let backplane = blocks
        .iter()
        .find(|t| t.trim_start().starts_with("[invalidation]"))
        .expect("README: the [invalidation] block");
    let alone = CacheConfig::from_toml_str(backplane);
    if !cfg!(feature = "redis") {
        refused_for_want_of_redis(alone);
        return;
    }
    match alone {
        Err(Error::Config { field, .. }) => assert_eq!(field, "invalidation.hosts"),
        other => panic!("the backplane block alone has no hosts: {other:?}"),
    }
}

/// The keys the README shows commented out (`# username = "app"`) are there to be uncommented:
/// each, uncommented alone, must still be a field. A value it then needs more for (a TLS file
/// without a `rediss://` host, a Memcached item size on a Redis L2) is refused by validation,
/// naming that very field, never as an unknown key.
#[test]
fn every_key_the_readme_shows_commented_out_is_still_a_field() {
    if !cfg!(feature = "redis") {
        return refused_for_want_of_redis(CacheConfig::from_toml_str(&readme_configuration()));
    }
    let text = readme_configuration();
    let mut table = String::new();
    let mut checked = 0;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix('[') {
            table = name.split(']').next().unwrap_or_default().to_owned();
            continue;
        }
        let Some(setting) = trimmed.strip_prefix("# ") else {
            continue;
        };
        let Some((key, _)) = setting.split_once(" = ") else {
            continue;
        };
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            continue;
        }
        let uncommented: String = text
            .lines()
            .enumerate()
            .map(|(j, l)| if j == i { setting } else { l })
            .collect::<Vec<_>>()
            .join("\n");
        let field = format!("{table}.{key}");
        match CacheConfig::from_toml_str(&uncommented) {
            Ok(_) => {}
            Err(Error::Config { field: at, reason }) => {
                assert!(!reason.contains("unknown field"), "{field}: {reason}");
                assert_eq!(at, field, "{reason}");
            }
            Err(other) => panic!("{field}: {other}"),
        }
        checked += 1;
    }
    // username, password, max_item_size, the four tls_* files; the backplane's hosts, cluster,
    // username and password; the replay queue's directory.
    assert!(checked >= 12, "only {checked} commented keys found");
}

/// Most of what the README's blocks set is the default, as their comments say ("default
/// false", "(0: off, the default)", "defaults 10 000 and 64"): a reader who copies them gets
/// the defaults. Everything the blocks set otherwise is listed here; the rest must equal
/// `CacheConfig::default()`, so a default changed in the code without the README fails.
#[test]
fn what_the_readme_blocks_set_beyond_the_defaults_is_exactly_what_they_say() {
    if !cfg!(feature = "redis") {
        return refused_for_want_of_redis(CacheConfig::from_toml_str(&readme_configuration()));
    }
    let config = CacheConfig::from_toml_str(&readme_configuration()).unwrap();
    let mut expected = CacheConfig::default();
    expected.local.max_size = Some(1024);
    expected.local.file_mode = Some(0o600);
    expected.local.path = Some(PathBuf::from("./uno-cache-data"));
    expected.distributed.enabled = true;
    expected.distributed.hosts = vec!["127.0.0.1:6379".to_owned()];
    expected.distributed.key_prefix = "myapp:".to_owned();
    expected.invalidation.enabled = true;
    expected.loader.fail_safe_max_duration = Duration::from_secs(86_400);
    expected.loader.soft_timeout_ms = 200;
    expected.loader.hard_timeout_ms = 2000;
    expected.loader.refresh_ahead = 0.8;
    assert_eq!(config, expected);
    // The documented defaults the blocks write out, named, so a failure says which.
    assert_eq!(config.local.ttl, Duration::from_secs(300));
    assert_eq!(config.local.durability, DurabilityMode::Periodic);
    assert_eq!(config.local.durability_interval_ms, 1000);
    assert_eq!(
        (config.local.memory_items, config.local.memory_max_mb),
        (10_000, 64)
    );
    assert_eq!(config.distributed.ttl, Duration::from_secs(3600));
    assert_eq!(config.distributed.timeout_ms, 100);
    assert_eq!(config.distributed.write_mode, WriteMode::Through);
    assert_eq!(config.consistency.restart_policy, RestartPolicy::Revalidate);
    assert_eq!(config.invalidation.channel, "uno-cache:invalidate");
}

/// The README's "Layout" table: the rows (one line each) between its heading and the next.
fn layout_table() -> Vec<&'static str> {
    let start = README.find("\n## Layout\n").expect("README: the Layout section");
    let section = &README[start + 1..];
    let end = section[3..].find("\n## ").map_or(section.len(), |i| i + 3);
    section[..end].lines().filter(|l| l.starts_with("| `")).collect()
}

/// The `src/…` paths a Layout row names in backticks.
fn named_paths(row: &str) -> Vec<&str> {
    row.split('`')
        .skip(1)
        .step_by(2)
        .filter(|t| t.starts_with("src/"))
        .collect()
}

/// The Layout table is where a reader finds a module: every top-level module of the crate
/// (`src/*.rs`, `src/*/`) must be in it, and every path it names must exist. Four modules and
/// the metrics export had gone unlisted as they were added.
#[test]
fn the_readme_layout_table_names_every_top_level_module_and_only_paths_that_exist() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rows = layout_table();
    assert!(rows.len() > 10, "README: the Layout table went missing");
    let named: Vec<&str> = rows.iter().flat_map(|row| named_paths(row)).collect();
    for path in &named {
        assert!(
            root.join(path).exists(),
            "README's Layout names {path}, which does not exist"
        );
    }
    for entry in std::fs::read_dir(root.join("src")).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let listed = if entry.file_type().unwrap().is_dir() {
            // A directory module is named by a path in it, or by its `src/name.rs`.
            let (dir, file) = (format!("src/{name}/"), format!("src/{name}.rs"));
            named.iter().any(|p| p.starts_with(&dir) || *p == file)
        } else {
            name == "lib.rs" || !name.ends_with(".rs") || named.contains(&format!("src/{name}").as_str())
        };
        assert!(listed, "src/{name} is not in the README's Layout table");
    }
}

/// Every source file, not only the top-level modules, must be findable in the Layout table: named
/// by its path, or by its name (`left_behind`, `store/routing`, `hot/key.rs`) in a row that names
/// its directory, a file beside it or its parent module. `mod.rs` is its directory; unit tests
/// (`*tests.rs`) are covered by a row of their own. Files added inside the modules had gone
/// unlisted for many sessions (found by review): `manager/left_behind.rs`, `local/hot/key.rs`,
/// the replay queue's, the backplane's, the configuration's and the CLI's files. A name that
/// also names a file elsewhere in the same row passes for both (Memcached's `routing` for Redis's
/// `store/routing`): the check is that nothing is left out, not which words describe it.
#[test]
fn the_readme_layout_table_names_every_source_file_within_its_directorys_row() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rows = layout_table();
    let mut files = Vec::new();
    let mut dirs = vec![root.join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let relative = path.strip_prefix(root).unwrap().to_str().unwrap().to_owned();
                files.push(relative);
            }
        }
    }
    // The directories a row covers: those it names, and for a file `src/a/b.rs` both `src/a/`
    // (its neighbours) and `src/a/b/` (its submodules).
    let covered = |row: &str| -> Vec<String> {
        named_paths(row)
            .into_iter()
            .flat_map(|p| match p.strip_suffix(".rs") {
                Some(module) => {
                    let parent = module.rsplit_once('/').map_or("", |(d, _)| d);
                    vec![format!("{parent}/"), format!("{module}/")]
                }
                None => vec![p.to_owned()],
            })
            .collect()
    };
    let mentions = |row: &str, stem: &str| {
        row.split('`').skip(1).step_by(2).any(|token| {
            let token = token.strip_suffix(".rs").unwrap_or(token);
            token == stem || token.ends_with(&format!("/{stem}"))
        })
    };
    let mut missing = Vec::new();
    for file in &files {
        let stem = file.rsplit('/').next().unwrap().trim_end_matches(".rs");
        if stem == "mod" || stem.ends_with("tests") {
            continue;
        }
        let listed = rows.iter().any(|row| {
            named_paths(row).contains(&file.as_str())
                || (covered(row).iter().any(|dir| file.starts_with(dir.as_str())) && mentions(row, stem))
        });
        if !listed {
            missing.push(file.clone());
        }
    }
    missing.sort();
    assert!(missing.is_empty(), "README's Layout table leaves out {missing:?}");
    assert!(
        rows.iter().any(|row| row.contains("*tests.rs")),
        "README's Layout table: the row of the unit-test files went missing"
    );
}

/// The README says a test that needs a feature is named with it in Cargo.toml
/// (`required-features`), so that `cargo test --test name` without the feature says which one to
/// enable. A test file gated whole by `#![cfg(feature = …)]` instead built without it and ran
/// nothing, silently: five did.
#[test]
fn no_test_file_is_gated_whole_by_a_feature_instead_of_naming_its_required_features() {
    let tests = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    for entry in std::fs::read_dir(tests).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text
                .lines()
                .any(|line| line.trim_start().starts_with("#![cfg(feature")),
            "{}: gated whole by a feature; name it in Cargo.toml's [[test]] required-features instead",
            path.display()
        );
    }
}

/// The README's first Rust block, its quickstart, as a reader runs it: on the embedded default
/// (`./uno-cache-data` in the working directory), then again after a restart, where its comment
/// says the delete still holds. Its doctest is `no_run` (it would make a store in the crate's
/// directory), so it was compiled and never run; this runs the same lines in a directory of its
/// own, and fails if the block changes without them.
#[test]
fn the_readme_quickstart_runs_as_written_and_its_delete_holds_after_a_restart() {
    const QUICKSTART: &str = r#"use std::time::Duration;
use uno_cache::{CacheConfig, CacheManager};

// The embedded default: L1 = a file store in ./uno-cache-data, no L2, no server.
let cache = CacheManager::new(CacheConfig::default())?;
cache.set("user:42", &("Ada".to_string(), 36u32), Some(Duration::from_secs(300)))?;
let user: Option<(String, u32)> = cache.get("user:42")?;
cache.delete("user:42")?;          // a tombstone: stays deleted after a restart
# Ok::<(), uno_cache::Error>(())
"#;
    let start = README.find("```rust").expect("README: a Rust block");
    let body = &README[start..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let block = &body[..body.find("```").unwrap()];
    assert_eq!(
        block, QUICKSTART,
        "README's quickstart changed: run the new lines here"
    );

    let dir = tempfile::tempdir().unwrap();
    std::env::set_current_dir(dir.path()).unwrap();
    let run = || -> Result<Option<(String, u32)>, Error> {
        let cache = CacheManager::new(CacheConfig::default())?;
        cache.set(
            "user:42",
            &("Ada".to_string(), 36u32),
            Some(Duration::from_secs(300)),
        )?;
        let user: Option<(String, u32)> = cache.get("user:42")?;
        cache.delete("user:42")?;
        Ok(user)
    };
    assert_eq!(run().unwrap(), Some(("Ada".to_owned(), 36)));
    assert!(
        dir.path().join("uno-cache-data").is_dir(),
        "no store in ./uno-cache-data"
    );
    let restarted = CacheManager::new(CacheConfig::default()).unwrap();
    let user: Option<(String, u32)> = restarted.get("user:42").unwrap();
    assert_eq!(user, None, "the deleted key came back after a restart");
}

/// The keys each table of the configuration takes, as its parser lists them when refusing an
/// unknown one (`expected one of `type`, `max_size`, …`).
fn accepted_keys(table: &str) -> Vec<String> {
    let text = if table.is_empty() {
        "zz_not_a_key = 1\n".to_owned()
    } else {
        format!("[{table}]\nzz_not_a_key = 1\n")
    };
    let reason = match CacheConfig::from_toml_str(&text) {
        Err(Error::Config { reason, .. }) => reason,
        other => panic!("{text:?}: an unknown key was not refused: {other:?}"),
    };
    let (_, listed) = reason
        .split_once("expected")
        .unwrap_or_else(|| panic!("{reason}"));
    listed.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// Every key the configuration takes is shown in the README's blocks, in its table, set or
/// commented out: `replay_dir`, `replay_interval_ms`, `refresh_ahead_max`, the backplane's own
/// `cluster`, `username`, `password` and `publish_timeout_ms` were accepted and shown nowhere
/// a reader of the README would look (found by review). The other way round, every key the
/// blocks show must still be a field: `every_readme_configuration_block_loads_as_one_file_…`.
#[test]
fn every_key_the_configuration_takes_is_shown_in_the_readme() {
    let text = readme_configuration();
    let mut shown: Vec<String> = Vec::new();
    let mut table = String::new();
    for line in text.lines() {
        let line = line.trim_start();
        if let Some(name) = line.strip_prefix('[') {
            table = name.split(']').next().unwrap_or_default().to_owned();
            continue;
        }
        let setting = line.strip_prefix("# ").unwrap_or(line);
        if let Some((key, _)) = setting.split_once(" = ") {
            let key = key.trim();
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                shown.push(if table.is_empty() {
                    key.to_owned()
                } else {
                    format!("{table}.{key}")
                });
            }
        }
    }
    let tables = [
        "local",
        "distributed",
        "offline",
        "consistency",
        "invalidation",
        "loader",
    ];
    let mut missing = Vec::new();
    for table in std::iter::once("").chain(tables) {
        for key in accepted_keys(table) {
            if table.is_empty() && tables.contains(&key.as_str()) {
                continue;
            }
            let field = if table.is_empty() {
                key
            } else {
                format!("{table}.{key}")
            };
            if !shown.contains(&field) {
                missing.push(field);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "keys the README's configuration does not show: {missing:?}"
    );
}

/// The README's CLI section says a file store's segment size is fixed at its creation, so a
/// later, smaller bound must still hold four segments: a store created at the default 1024 MiB
/// takes none below 256 MiB, and `CacheManager::new` is refused naming the smallest. An
/// application that lowers `local.max_size` in a new release meets this at start-up; the
/// README said only that a larger bound does not take larger values (found by walking it).
#[test]
fn a_store_made_at_the_default_bound_refuses_a_later_bound_below_256_mib_as_the_readme_says() {
    assert!(README.contains("a store created\nat the default 1024 MiB takes no bound below 256 MiB"));
    let dir = tempfile::tempdir().unwrap();
    let mut config = CacheConfig::default();
    config.local.path = Some(dir.path().join("store"));
    drop(CacheManager::new(config.clone()).unwrap());
    config.local.max_size = Some(255);
    match CacheManager::new(config.clone()) {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "local.max_size");
            assert!(reason.contains("at least 256"), "{reason}");
        }
        other => panic!("a bound below four segments was not refused: {other:?}"),
    }
    config.local.max_size = Some(256);
    CacheManager::new(config).unwrap();
}

/// `use_multi_level` was the one key of the README's blocks shown with no word of what it does:
/// its comment says `false` runs L1 alone, even with an L2 that `[distributed]` enables. Here
/// that L2 is a port nothing listens on, with `fallback_on_error = false`, where an L2 in use
/// that cannot be reached fails start-up: with `use_multi_level = false` it is never asked.
#[test]
fn use_multi_level_false_runs_l1_alone_even_with_an_enabled_l2_as_the_readme_says() {
    assert!(README
        .contains("use_multi_level = true       # false: no L2, even one [distributed] enables (L1 alone)"));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "use_multi_level = false\nfallback_on_error = false\n[local]\npath = {:?}\n[distributed]\nenabled = true\nhosts = [\"127.0.0.1:1\"]\n",
        dir.path().join("store").display().to_string()
    );
    let config = CacheConfig::from_toml_str(&text);
    if !cfg!(feature = "redis") {
        return refused_for_want_of_redis(config);
    }
    let cache = CacheManager::new(config.unwrap()).unwrap();
    cache.set("k", &1u32, None).unwrap();
    assert_eq!(cache.get::<u32>("k").unwrap(), Some(1));
    let stats = cache.monitor().get_stats();
    assert!(!stats.distributed.enabled, "{:?}", stats.distributed);
    assert_eq!(stats.distributed.errors, 0);
}
