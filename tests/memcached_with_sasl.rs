//! A memcached run with SASL authentication (`-S`) against a store, which speaks to memcached
//! without authentication: memcached answers `version` before authentication, so the start-up
//! check passed, and every later call failed with an "unexpected end of file" (memcached closes
//! the connection after its authentication error). Both now say what is wrong and what to do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::TcpStream;
use std::process::{Child, Stdio};

use support::MemcachedServer;
use uno_cache::{DistributedStorage, Error, MemcachedOptions, MemcachedStore, Storage};

/// A memcached process, killed and reaped when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A memcached with SASL on `port`, its user list and SASL configuration in `dir`. (The harness's
/// server waits for a text `version`, which a SASL memcached does not speak.)
fn sasl_memcached(dir: &std::path::Path, port: u16) -> Server {
    std::fs::write(dir.join("memcached.conf"), "mech_list: plain\n").unwrap();
    std::fs::write(dir.join("users"), "user:secret\n").unwrap();
    let server = Server(
        support::dies_with_us("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "0",
                "-S",
                "-u",
                "root",
            ])
            .env("SASL_CONF_PATH", dir)
            .env("MEMCACHED_SASL_PWDB", dir.join("users"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    support::wait_until(&format!("memcached -S on {port}"), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    server
}

fn says_sasl(err: &Error, host: &str) {
    let text = err.to_string();
    assert!(
        err.is_misconfiguration() && text.contains(host) && text.contains("-S"),
        "{text}"
    );
}

#[test]
fn a_memcached_that_wants_sasl_fails_the_start_up_check_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let _server = sasl_memcached(dir.path(), port);
    let host = format!("127.0.0.1:{port}");
    let err = MemcachedStore::connect(MemcachedOptions::new(host.clone())).unwrap_err();
    assert!(
        matches!(err, Error::Misconfigured { ref hosts, .. } if *hosts == host),
        "{err}"
    );
    says_sasl(&err, &host);
}

/// A server restarted with `-S` under a store that is already connected.
#[test]
fn calls_to_a_memcached_restarted_with_sasl_are_a_misconfiguration_naming_it() {
    let mut plain = MemcachedServer::start();
    let host = plain.addr();
    let mc = MemcachedStore::connect(MemcachedOptions::new(host.clone())).unwrap();
    mc.set("k", b"v", None).unwrap();
    plain.kill();
    let dir = tempfile::tempdir().unwrap();
    let _server = sasl_memcached(dir.path(), plain.port);

    says_sasl(&mc.get("k").unwrap_err(), &host);
    says_sasl(&mc.set("k", b"v", None).unwrap_err(), &host);
    says_sasl(&mc.delete_many(&["a", "b"]).unwrap_err(), &host);
    says_sasl(&support::block_on(mc.get_async("k")).unwrap_err(), &host);
    says_sasl(
        &support::block_on(mc.set_many_async(&[("a", b"1")], None)).unwrap_err(),
        &host,
    );
}
