//! The `tls_*` keys of `[distributed]` are checked when the configuration is read, each error
//! naming its key: Redis only, refused without the `tls` feature, a client certificate only with
//! its key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use uno_cache::{CacheConfig, Error};

fn field_of(text: &str) -> String {
    match CacheConfig::from_toml_str(text).unwrap_err() {
        Error::Config { field, .. } => field,
        other => panic!("not a config error: {other:?}"),
    }
}

#[test]
fn tls_keys_are_checked_and_name_the_field() {
    let redis = "[distributed]\nenabled = true\nhosts = [\"rediss://h:1\"]\n";
    let memcached = "[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"h:1\"]\n";
    assert_eq!(
        field_of(&format!("{memcached}tls_ca_file = \"ca.pem\"\n")),
        "distributed.tls_ca_file"
    );
    if cfg!(feature = "tls") {
        assert_eq!(
            field_of(&format!("{redis}tls_cert_file = \"c.pem\"\n")),
            "distributed.tls_key_file"
        );
        assert_eq!(
            field_of(&format!("{redis}tls_key_file = \"k.pem\"\n")),
            "distributed.tls_cert_file"
        );
        let c = CacheConfig::from_toml_str(&format!(
            "{redis}tls_ca_file = \"ca.pem\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"\ntls_install_crypto_provider = false\n"
        ))
        .unwrap();
        assert!(!c.distributed.tls_install_crypto_provider);
        assert_eq!(c.distributed.tls_ca_file.as_deref(), Some(Path::new("ca.pem")));
    } else {
        assert_eq!(
            field_of(&format!("{redis}tls_system_roots = true\n")),
            "distributed.tls_system_roots"
        );
    }
}

/// The backplane on the L2's hosts takes the L2's TLS settings; without an L2 to fail on a file
/// that cannot be read, the backplane's start-up names it instead of connecting without it.
#[test]
fn a_backplane_on_the_l2_hosts_refuses_a_tls_file_it_cannot_read_even_without_an_l2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let config = CacheConfig::from_toml_str(&format!(
        "use_multi_level = false\n[local]\ntype = \"memory\"\n[distributed]\nenabled = true\nhosts = [\"rediss://127.0.0.1:1\"]\ntls_ca_file = {:?}\n[invalidation]\nenabled = true\n",
        missing.display().to_string()
    ))
    .unwrap();
    match uno_cache::CacheManager::new(config) {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "distributed.tls_ca_file");
            assert!(reason.contains("missing-ca.pem"), "{reason}");
        }
        Err(other) => panic!("not the file's error: {other}"),
        Ok(_) => panic!("started without the CA file"),
    }
}

/// TLS keys with no `rediss://` host would be ignored, and the connection, password included,
/// would go in plain text: refused, naming the first key set.
#[cfg(feature = "tls")]
#[test]
fn tls_keys_without_a_tls_host_are_refused() {
    let plain = "[distributed]\nenabled = true\nhosts = [\"h:1\", \"redis://g:2\"]\n";
    for (key, value) in [
        ("tls_ca_file", "\"ca.pem\""),
        ("tls_system_roots", "true"),
        ("tls_cert_file", "\"c.pem\"\ntls_key_file = \"k.pem\""),
    ] {
        let text = format!("{plain}{key} = {value}\n");
        match CacheConfig::from_toml_str(&text).unwrap_err() {
            Error::Config { field, reason } => {
                assert_eq!(field, format!("distributed.{key}"));
                assert!(reason.contains("rediss://"), "{reason}");
            }
            other => panic!("not a config error: {other:?}"),
        }
    }
    // A bare host whose name begins with "rediss" is plain Redis all the same.
    let named =
        "[distributed]\nenabled = true\nhosts = [\"rediss-01.internal:6379\"]\ntls_system_roots = true\n";
    assert_eq!(field_of(named), "distributed.tls_system_roots");
    // A Memcached L2 with a backplane on TLS: the keys are for the backplane.
    let memcached_bus = "[distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"m:11211\"]\ntls_system_roots = true\n\
                         [invalidation]\nenabled = true\nhosts = [\"rediss://bus:6380\"]\n";
    CacheConfig::from_toml_str(memcached_bus).unwrap();
    // A TLS host among them, in any case, or a backplane on TLS, is what the keys are for.
    let mixed =
        "[distributed]\nenabled = true\nhosts = [\"h:1\", \"RedisS://g:2\"]\ntls_system_roots = true\n";
    CacheConfig::from_toml_str(mixed).unwrap();
    let tls_bus = format!(
        "{plain}tls_system_roots = true\n[invalidation]\nenabled = true\nhosts = [\"rediss://bus:6380\"]\n"
    );
    CacheConfig::from_toml_str(&tls_bus).unwrap();
}

/// With the L2 off, the TLS keys apply to a backplane on hosts of its own, and are checked as
/// for an L2. They were not checked at all: on plain hosts they were ignored (the password going
/// in clear), and two root sources were taken together.
#[test]
fn tls_keys_are_checked_for_a_backplane_of_its_own_when_the_l2_is_off() {
    let bus = |hosts: &str, keys: &str| {
        format!("[distributed]\nenabled = false\n{keys}\n[invalidation]\nenabled = true\nhosts = [{hosts}]\n")
    };
    let plain = bus("\"bus:6379\"", "tls_ca_file = \"ca.pem\"");
    assert_eq!(field_of(&plain), "distributed.tls_ca_file");
    let both_roots = bus(
        "\"rediss://bus:6380\"",
        "tls_ca_file = \"ca.pem\"\ntls_system_roots = true",
    );
    assert_eq!(field_of(&both_roots), "distributed.tls_system_roots");
    // No backplane either: nothing connects, and an L2 switched off keeps its settings.
    let unused = "[distributed]\nenabled = false\ntls_ca_file = \"ca.pem\"\ntls_system_roots = true\n";
    CacheConfig::from_toml_str(unused).unwrap();
    // The L2's hosts do not count while it is off.
    let l2_off = "[distributed]\nenabled = false\nhosts = [\"rediss://h:1\"]\ntls_system_roots = true\n\
                  [invalidation]\nenabled = true\nhosts = [\"bus:6379\"]\n";
    assert_eq!(field_of(l2_off), "distributed.tls_system_roots");
    CacheConfig::from_toml_str(&bus("\"rediss://bus:6380\"", "tls_system_roots = true")).unwrap();
}

/// A cluster whose hosts mix `rediss://` and `redis://` is refused at start-up naming the first
/// host that differs: the client refused it only as "invalid settings" when connecting, which
/// was taken for an outage, so the manager started and retried it in the background for good
/// (found by review).
#[cfg(all(feature = "tls", feature = "redis"))]
#[test]
fn a_cluster_mixing_tls_and_plain_hosts_is_refused_naming_the_host() {
    let config = CacheConfig::from_toml_str(
        "[local]\ntype = \"memory\"\n[distributed]\nenabled = true\ncluster = true\nhosts = [\"rediss://127.0.0.1:1\", \"rediss://127.0.0.1:2\", \"redis://127.0.0.1:3\"]\n",
    )
    .unwrap();
    match uno_cache::CacheManager::new(config) {
        Err(Error::Config { field, reason }) => {
            assert_eq!(field, "distributed.hosts[2]");
            assert!(
                reason.contains("rediss://") && reason.contains("one scheme"),
                "{reason}"
            );
        }
        Err(other) => panic!("not a configuration error: {other}"),
        Ok(_) => panic!("started with hosts it can never connect"),
    }
}
