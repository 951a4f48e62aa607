//! TLS settings of `rediss://` hosts (the `tls` feature): which roots to trust (the built-in web
//! PKI roots, the system's store, or a private CA), an optional client certificate for mutual
//! TLS, and the process-wide rustls crypto provider.
//!
//! # The crypto provider
//! The `redis` crate builds its rustls `ClientConfig` with `ClientConfig::builder()`, which takes
//! the process-wide `CryptoProvider`; it offers no way to hand it a provider of ours. So, when a
//! `rediss://` host is about to be connected and the program has installed no provider, we
//! install *ring* (the one our `tls` feature compiles), which is what rustls itself does when
//! exactly one provider is compiled in. A program that wants another provider (aws-lc-rs, a
//! FIPS one) installs it before it builds the cache; ours is then never installed. A program
//! that wants uno-cache never to touch process state sets `install_provider(false)`
//! (`distributed.tls_install_crypto_provider = false`): connecting then fails with a
//! configuration error, instead of a panic inside rustls, if no provider is installed.

use redis::{ClientTlsConfig, ErrorKind, RedisError, RedisResult, TlsCertificates};
use rustls::crypto::CryptoProvider;

/// How `rediss://` connections are made; see the module docs.
#[derive(Clone)]
pub(crate) struct TlsOptions {
    /// PEM of the CA certificate(s) to trust instead of the web PKI roots.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Trust the operating system's root store instead of the web PKI roots.
    pub(crate) system_roots: bool,
    /// PEM of the client certificate chain and of its private key, for mutual TLS.
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
    /// Install *ring* as the process-wide provider if none is installed.
    pub(crate) install_provider: bool,
}

impl Default for TlsOptions {
    fn default() -> Self {
        TlsOptions {
            ca_pem: None,
            system_roots: false,
            client: None,
            install_provider: true,
        }
    }
}

impl TlsOptions {
    /// The certificates to build a client with; `None`: the crate's defaults (web PKI roots,
    /// no client certificate).
    pub(crate) fn certificates(&self) -> RedisResult<Option<TlsCertificates>> {
        let root_cert = match (&self.ca_pem, self.system_roots) {
            (Some(pem), _) => Some(pem.clone()),
            (None, true) => Some(system_roots_pem()?),
            (None, false) => None,
        };
        let client_tls = self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
            client_cert: cert.clone(),
            client_key: key.clone(),
        });
        if root_cert.is_none() && client_tls.is_none() {
            return Ok(None);
        }
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }

    /// Makes sure a process-wide rustls provider exists before a TLS client is built (see the
    /// module docs).
    pub(crate) fn ensure_provider(&self) -> RedisResult<()> {
        if CryptoProvider::get_default().is_some() {
            return Ok(());
        }
        if !self.install_provider {
            return Err(RedisError::from((
                ErrorKind::InvalidClientConfig,
                "no rustls CryptoProvider is installed",
                "install one (CryptoProvider::install_default) before building the cache, or let uno-cache install ring (tls_install_crypto_provider = true)".to_owned(),
            )));
        }
        // Err only if another thread installed one since the check: that one serves.
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(())
    }
}

/// The operating system's root certificates (rustls-native-certs) as PEM, the form the `redis`
/// crate takes. Certificates that rustls cannot use as trust anchors are left out, as the crate
/// itself does with the system store: one odd certificate must not refuse them all.
fn system_roots_pem() -> RedisResult<Vec<u8>> {
    let found = rustls_native_certs::load_native_certs();
    let mut pem = Vec::new();
    for cert in found.certs {
        let mut probe = rustls::RootCertStore::empty();
        if probe.add(cert.clone()).is_ok() {
            pem.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
            for line in base64(cert.as_ref()).as_bytes().chunks(64) {
                pem.extend_from_slice(line);
                pem.push(b'\n');
            }
            pem.extend_from_slice(b"-----END CERTIFICATE-----\n");
        }
    }
    if pem.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "the store is empty".to_owned(), ToString::to_string);
        return Err(RedisError::from((
            ErrorKind::InvalidClientConfig,
            "tls_system_roots: no usable root certificate in the system's store",
            format!("{why}; install the CA certificates package or use tls_ca_file"),
        )));
    }
    Ok(pem)
}

/// Standard base64 with padding (PEM bodies).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(ALPHABET.get((i & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_the_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
    }

    #[test]
    fn without_installing_a_provider_a_missing_one_is_a_config_error_not_a_panic() {
        // Only meaningful while no test in this binary has installed one yet; once one has,
        // the check passes, which is also what it must do.
        let options = TlsOptions {
            install_provider: false,
            ..TlsOptions::default()
        };
        match CryptoProvider::get_default() {
            Some(_) => assert!(options.ensure_provider().is_ok()),
            None => {
                let err = options.ensure_provider().unwrap_err();
                assert_eq!(err.kind(), ErrorKind::InvalidClientConfig);
                assert!(CryptoProvider::get_default().is_none(), "it installed one anyway");
            }
        }
    }
}
