//! The process-wide rustls `CryptoProvider` is the application's choice: with
//! `tls_install_crypto_provider = false` uno-cache never installs one (a missing one is a
//! configuration error, not a panic inside rustls), and by default it installs *ring* only when
//! none is installed. Its own test binary: the provider is process state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use rustls::crypto::CryptoProvider;
use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, Error};

fn config(dir: &std::path::Path, server: &RedisServer, ca: &std::path::Path, install: bool) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = {path:?}
        max_size = 16
        [distributed]
        enabled = true
        hosts = ["rediss://127.0.0.1:{port}"]
        timeout_ms = 1000
        tls_ca_file = {ca:?}
        tls_install_crypto_provider = {install}
        "#,
        path = dir.join("l1").display().to_string(),
        port = server.port,
        ca = ca.display().to_string(),
    ))
    .unwrap()
}

#[test]
fn the_crypto_provider_is_installed_only_when_allowed_and_none_is_there() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let ca = certs.path().join("ca.crt");
    let dir = tempfile::tempdir().unwrap();
    assert!(CryptoProvider::get_default().is_none());

    let err = CacheManager::new(config(dir.path(), &server, &ca, false)).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "distributed.tls_install_crypto_provider"),
        "{err}"
    );
    assert!(
        CryptoProvider::get_default().is_none(),
        "uno-cache installed a provider although told not to"
    );

    // The application installs its own: uno-cache uses it and leaves it in place.
    CryptoProvider::install_default(rustls::crypto::ring::default_provider()).unwrap();
    let installed = CryptoProvider::get_default().unwrap();
    let cache = CacheManager::new(config(dir.path(), &server, &ca, false)).unwrap();
    cache.set_raw("k", b"v", None).unwrap();
    assert_eq!(
        cache.distributed().unwrap().get("k").unwrap().unwrap().value,
        b"v"
    );
    assert!(std::sync::Arc::ptr_eq(
        installed,
        CryptoProvider::get_default().unwrap()
    ));
}
