//! `rediss://` configured from TOML, against a real TLS-only `redis-server` with certificates
//! made by `openssl` at test time: a private CA from `tls_ca_file`, the system's root store
//! (`tls_system_roots`, pointed at a bundle with `SSL_CERT_FILE`), mutual TLS with
//! `tls_cert_file` / `tls_key_file`, and an untrusted CA, a missing client certificate or a
//! certificate file that does not parse as a configuration error naming the host.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::path::Path;

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, Error};

/// A file L1 in `dir` and the TLS server as L2, with `extra` lines in `[distributed]`.
fn config(dir: &Path, server: &RedisServer, extra: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        use_multi_level = true
        [local]
        type = "file"
        path = {path:?}
        max_size = 16
        [distributed]
        enabled = true
        hosts = ["rediss://127.0.0.1:{port}"]
        timeout_ms = 1000
        {extra}
        "#,
        path = dir.join("l1").display().to_string(),
        port = server.port,
    ))
    .unwrap()
}

/// A round trip through L2: written by one manager, read by a second one with an empty L1.
fn round_trips(certs: &Path, server: &RedisServer, extra: &str) {
    let dir = tempfile::tempdir().unwrap();
    let writer = CacheManager::new(config(dir.path(), server, extra)).unwrap();
    writer.set_raw("k", b"over tls", None).unwrap();
    let l2 = writer.distributed().unwrap();
    assert_eq!(l2.get("k").unwrap().unwrap().value, b"over tls");
    drop(writer);
    let other = tempfile::tempdir().unwrap();
    let reader = CacheManager::new(config(other.path(), server, extra)).unwrap();
    assert_eq!(reader.get_raw("k").unwrap().as_deref(), Some(&b"over tls"[..]));
    assert_eq!(reader.stats().distributed.hits, 1, "{certs:?}");
}

fn toml_path(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

#[test]
fn a_ca_file_from_toml_is_trusted_and_a_wrong_one_is_a_config_error_naming_the_host() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let ca = format!("tls_ca_file = {}", toml_path(&certs.path().join("ca.crt")));
    round_trips(certs.path(), &server, &ca);

    // Another CA did not sign the server's certificate: not an outage, so even with
    // fallback_on_error the manager refuses to start, naming the host and the key to fix.
    let other = tempfile::tempdir().unwrap();
    support::make_tls_certs(other.path());
    let wrong = format!("tls_ca_file = {}", toml_path(&other.path().join("ca.crt")));
    let dir = tempfile::tempdir().unwrap();
    let err = CacheManager::new(config(dir.path(), &server, &wrong)).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, Error::Misconfigured { .. }), "{text}");
    assert!(
        text.contains(&format!("rediss://127.0.0.1:{}", server.port)),
        "{text}"
    );
    assert!(text.contains("tls_ca_file"), "{text}");

    // A CA file that cannot be read names its key.
    let missing = format!("tls_ca_file = {}", toml_path(&dir.path().join("nope.crt")));
    let err = CacheManager::new(config(dir.path(), &server, &missing)).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "distributed.tls_ca_file"),
        "{err}"
    );
}

#[test]
fn mutual_tls_presents_the_client_certificate_from_toml() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    support::make_client_cert(certs.path());
    let server = RedisServer::start_tls_with(certs.path(), &["--tls-auth-clients", "yes"]);
    let ca = format!("tls_ca_file = {}", toml_path(&certs.path().join("ca.crt")));
    let mutual = format!(
        "{ca}\ntls_cert_file = {}\ntls_key_file = {}",
        toml_path(&certs.path().join("client.crt")),
        toml_path(&certs.path().join("client.key")),
    );
    round_trips(certs.path(), &server, &mutual);

    // Without a client certificate the server ends the handshake: a configuration error.
    let dir = tempfile::tempdir().unwrap();
    let err = CacheManager::new(config(dir.path(), &server, &ca)).unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err}");
    assert!(err.to_string().contains("tls_cert_file"), "{err}");
}

#[test]
fn the_system_root_store_can_be_chosen_instead_of_the_webpki_roots() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    // rustls-native-certs reads the bundle SSL_CERT_FILE names: our CA plays the system store.
    // This is the only test of this binary that reads the system store.
    std::env::set_var("SSL_CERT_FILE", certs.path().join("ca.crt"));
    round_trips(certs.path(), &server, "tls_system_roots = true");
    // The webpki roots (the default) do not know our CA.
    let dir = tempfile::tempdir().unwrap();
    let err = CacheManager::new(config(dir.path(), &server, "")).unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err}");
    // Both root sources at once is refused before anything connects.
    let both = format!(
        "tls_system_roots = true\ntls_ca_file = {}",
        toml_path(&certs.path().join("ca.crt"))
    );
    let text = format!(
        r#"
        [distributed]
        enabled = true
        hosts = ["rediss://127.0.0.1:{}"]
        {both}
        "#,
        server.port
    );
    let err = CacheConfig::from_toml_str(&text).unwrap_err();
    assert!(
        matches!(err, Error::Config { ref field, .. } if field == "distributed.tls_system_roots"),
        "{err}"
    );
}

/// A backplane on hosts of its own takes the TLS settings of `[distributed]`: it trusts the
/// private CA too, where it had fallen back to the web PKI roots and been refused.
#[test]
fn a_backplane_on_its_own_tls_hosts_trusts_the_configured_ca() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let extra = format!(
        "tls_ca_file = {}\n[invalidation]\nenabled = true\nhosts = [\"rediss://127.0.0.1:{}\"]\n",
        toml_path(&certs.path().join("ca.crt")),
        server.port
    );
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = CacheManager::new(config(a_dir.path(), &server, &extra)).unwrap();
    let b = CacheManager::new(config(b_dir.path(), &server, &extra)).unwrap();
    a.set_raw("k", b"v", None).unwrap();
    support::wait_until("B to hear of A's set over the TLS backplane", || {
        b.stats().consistency.invalidations_received >= 1
    });
    assert_eq!(a.stats().consistency.publish_failures, 0);
}

/// A CA file, or a client key, that does not parse is refused by the client as it is built:
/// taken for an outage, a start-up with fallback went on without L2 and retried it in the
/// background for good. It fails start-up as a misconfiguration naming the host and the files.
#[test]
fn tls_files_that_do_not_parse_fail_start_up_as_a_misconfiguration_naming_them() {
    let certs = tempfile::tempdir().unwrap();
    support::make_tls_certs(certs.path());
    let server = RedisServer::start_tls(certs.path());
    let bad = certs.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let ca = toml_path(&certs.path().join("ca.crt"));
    for extra in [
        format!("tls_ca_file = {}", toml_path(&bad)),
        format!(
            "tls_ca_file = {ca}\ntls_cert_file = {cert}\ntls_key_file = {key}",
            cert = toml_path(&certs.path().join("ca.crt")),
            key = toml_path(&bad)
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let err = CacheManager::new(config(dir.path(), &server, &extra)).unwrap_err();
        let text = err.to_string();
        assert!(
            matches!(&err, Error::Misconfigured { hosts, .. } if hosts.contains(&server.port.to_string())),
            "{extra}: {err:?}"
        );
        assert!(
            text.contains("tls_ca_file") && text.contains("tls_key_file"),
            "{text}"
        );
    }
}
