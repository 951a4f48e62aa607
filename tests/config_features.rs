//! What a configuration asks for against what the build was compiled with. With the feature, the
//! configuration is accepted; without it, it is refused with [`Error::FeatureDisabled`] naming
//! the field and the Cargo feature: never a silent L1-only run. Every test asserts one side or
//! the other, so each passes in CI (`--all-features`) and in the `--no-default-features` step of
//! `scripts/test.sh`, and checks something in both.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use uno_cache::{CacheConfig, CacheManager, Error, Result};

fn local(dir: &Path) -> String {
    format!(
        "[local]\ntype = \"file\"\npath = {:?}\nttl = 60\n",
        dir.display().to_string()
    )
}

/// `result` is accepted when `compiled_in`, else refused naming `field` and `feature`.
fn check<T: std::fmt::Debug>(result: Result<T>, compiled_in: bool, field: &str, feature: &str) {
    if compiled_in {
        assert!(result.is_ok(), "{feature} is compiled in: {result:?}");
        return;
    }
    let err = result.expect_err("a feature compiled out must be refused");
    let text = err.to_string();
    match err {
        Error::FeatureDisabled {
            field: got_field,
            feature: got_feature,
            ..
        } => assert_eq!((got_field.as_str(), got_feature), (field, feature)),
        other => panic!("{feature} is compiled out, but: {other:?}"),
    }
    assert!(text.contains(&format!("`{feature}` feature")), "{text}");
    assert!(text.contains(field), "{text}");
}

#[test]
fn a_redis_l2_needs_the_redis_feature() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[distributed]\nenabled = true\ntype = \"redis\"\nhosts = [\"127.0.0.1:1\"]\n",
        local(dir.path())
    );
    check(
        CacheConfig::from_toml_str(&text),
        cfg!(feature = "redis"),
        "distributed.type",
        "redis",
    );
}

#[test]
fn a_memcached_l2_needs_the_memcached_feature() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"127.0.0.1:1\"]\n",
        local(dir.path())
    );
    check(
        CacheConfig::from_toml_str(&text),
        cfg!(feature = "memcached"),
        "distributed.type",
        "memcached",
    );
}

#[test]
fn a_disabled_l2_section_needs_no_feature() {
    let dir = tempfile::tempdir().unwrap();
    for kind in ["redis", "memcached"] {
        let text = format!(
            "{}[distributed]\nenabled = false\ntype = \"{kind}\"\nhosts = [\"127.0.0.1:1\"]\n",
            local(dir.path())
        );
        let config = CacheConfig::from_toml_str(&text).unwrap();
        assert!(!config.distributed.enabled, "{kind}");
    }
}

#[test]
fn the_backplane_needs_the_redis_feature() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[invalidation]\nenabled = true\nhosts = [\"127.0.0.1:1\"]\n",
        local(dir.path())
    );
    check(
        CacheConfig::from_toml_str(&text),
        cfg!(feature = "redis"),
        "invalidation.enabled",
        "redis",
    );
}

#[test]
fn a_redb_l1_needs_the_redb_feature_and_opens_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[local]\ntype = \"redb\"\npath = {:?}\nttl = 60\n",
        dir.path().display().to_string()
    );
    check(
        CacheConfig::from_toml_str(&text),
        cfg!(feature = "redb"),
        "local.type",
        "redb",
    );
    // A configuration built in code skips the parser: the manager refuses it the same way.
    let mut config = CacheConfig::from_toml_str(&local(dir.path())).unwrap();
    config.local.kind = uno_cache::LocalKind::Redb;
    let built = CacheManager::new(config);
    check(
        built.map(|cache| cache.set("k", &1u8, None)),
        cfg!(feature = "redb"),
        "local.type",
        "redb",
    );
}

#[test]
fn tags_without_a_redis_name_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = CacheManager::new(CacheConfig::from_toml_str(&local(dir.path())).unwrap()).unwrap();
    let err = cache.set_with_tags("k", &1u8, None, &["t"]).unwrap_err();
    if cfg!(feature = "redis") {
        // The feature is there, the configuration has no Redis for tags.
        assert!(
            matches!(err, Error::Config { ref field, .. } if field == "invalidation.enabled"),
            "{err:?}"
        );
    } else {
        assert!(
            matches!(err, Error::FeatureDisabled { feature: "redis", .. }),
            "{err:?}"
        );
    }
    // The value itself is not written when it cannot be tagged.
    assert_eq!(cache.get::<u8>("k").unwrap(), None);
}

/// Read from a file, the refusal also names the file: a service may read several.
#[test]
fn a_feature_refused_in_a_config_file_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app-cache.toml");
    std::fs::write(
        &path,
        format!(
            "{}[distributed]\nenabled = true\ntype = \"redis\"\nhosts = [\"127.0.0.1:1\"]\n",
            local(dir.path())
        ),
    )
    .unwrap();
    let read = CacheConfig::from_toml_file(&path);
    if cfg!(feature = "redis") {
        assert!(read.is_ok(), "{read:?}");
    } else {
        let text = read.unwrap_err().to_string();
        assert!(text.contains("app-cache.toml"), "{text}");
        assert!(text.contains("--features cli,redis"), "{text}");
    }
}
