//! A memcached that wants authentication (SASL, `-S`; an auth file, `-Y`) against a store, which
//! speaks to memcached without it. A SASL memcached answers `version` before authentication, so
//! the start-up check passed, and every later call failed with an "unexpected end of file" (it
//! closes the connection after its authentication error); one with an auth file answers a text
//! line, read as a header that "starts with byte 0x43", an outage. Each is now
//! [`Error::Misconfigured`] naming the host, saying what to do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::net::TcpStream;
use std::process::Child;

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

/// How a server wants its clients to authenticate.
#[derive(Clone, Copy)]
enum Auth {
    /// SASL (`-S`), binary protocol only.
    Sasl,
    /// An auth file (`-Y`), text protocol only.
    File,
}

/// A memcached with `auth` on `port`, its user list and SASL configuration in `dir`. (The
/// harness's server waits for an unauthenticated text `version`, which these do not answer.)
/// Fails if another process holds the port, as the harness's servers do.
fn memcached_with(auth: Auth, dir: &std::path::Path, port: u16) -> Server {
    try_memcached_with(auth, dir, port).unwrap_or_else(|taken| panic!("{taken}"))
}

/// [`memcached_with`] on a port of `free_port`'s, another while the one it got was taken
/// before the server bound it.
fn memcached_on_a_fresh_port(auth: Auth, dir: &std::path::Path) -> (Server, u16) {
    support::on_a_fresh_port(|port| Ok((try_memcached_with(auth, dir, port)?, port)))
}

/// [`memcached_with`], or [`support::PortTaken`].
fn try_memcached_with(auth: Auth, dir: &std::path::Path, port: u16) -> Result<Server, support::PortTaken> {
    std::fs::write(dir.join("memcached.conf"), "mech_list: plain\n").unwrap();
    std::fs::write(dir.join("users"), "user:secret\n").unwrap();
    let users = dir.join("users").to_str().unwrap().to_owned();
    let auth_args = match auth {
        Auth::Sasl => vec!["-S"],
        Auth::File => vec!["-Y", users.as_str()],
    };
    let output = dir.join("output.log");
    let log = std::fs::File::create(&output).unwrap();
    let mut child = support::dies_with_us("memcached")
        .args([
            "-l",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "0",
            "-u",
            "root",
        ])
        .args(auth_args)
        .env("SASL_CONF_PATH", dir)
        .env("MEMCACHED_SASL_PWDB", dir.join("users"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    // It answers nothing before authentication that the harness's wait would take: a
    // connection, from its own process, is the sign.
    support::try_wait_for_own_server(
        &format!("memcached (with authentication) on {port}"),
        &mut child,
        port,
        Some(&output),
        || TcpStream::connect(("127.0.0.1", port)).is_ok(),
    )?;
    Ok(Server(child))
}

fn says_authentication(err: &Error, host: &str) {
    let text = err.to_string();
    assert!(
        err.is_misconfiguration()
            && text.contains(host)
            && text.contains("authentication")
            && text.contains("-S")
            && text.contains("-Y"),
        "{text}"
    );
}

#[test]
fn a_memcached_that_wants_authentication_fails_the_start_up_check_naming_it() {
    for auth in [Auth::Sasl, Auth::File] {
        let dir = tempfile::tempdir().unwrap();
        let (_server, port) = memcached_on_a_fresh_port(auth, dir.path());
        let host = format!("127.0.0.1:{port}");
        let err = MemcachedStore::connect(MemcachedOptions::new(host.clone())).unwrap_err();
        assert!(
            matches!(err, Error::Misconfigured { ref hosts, .. } if *hosts == host),
            "{err}"
        );
        says_authentication(&err, &host);
    }
}

/// A server restarted with `-S` or `-Y` under a store that is already connected.
#[test]
fn calls_to_a_memcached_restarted_with_authentication_are_a_misconfiguration_naming_it() {
    for auth in [Auth::Sasl, Auth::File] {
        calls_fail_naming_the_host(auth);
    }
}

fn calls_fail_naming_the_host(auth: Auth) {
    let mut plain = MemcachedServer::start();
    let host = plain.addr();
    let mc = MemcachedStore::connect(MemcachedOptions::new(host.clone())).unwrap();
    mc.set("k", b"v", None).unwrap();
    plain.kill();
    let dir = tempfile::tempdir().unwrap();
    let _server = memcached_with(auth, dir.path(), plain.port);

    says_authentication(&mc.get("k").unwrap_err(), &host);
    says_authentication(&mc.set("k", b"v", None).unwrap_err(), &host);
    says_authentication(&mc.delete_many(&["a", "b"]).unwrap_err(), &host);
    says_authentication(&support::block_on(mc.get_async("k")).unwrap_err(), &host);
    says_authentication(
        &support::block_on(mc.set_many_async(&[("a", b"1")], None)).unwrap_err(),
        &host,
    );
}

/// The servers here are started by hand (the harness's wait for `version` does not suit them),
/// and must be the test's own as the harness's are: a port another process took between the
/// free-port check and the start answered the wait for a connection, and the test then talked
/// to that process, not to a memcached that wants authentication.
#[test]
fn a_memcached_with_authentication_whose_port_another_process_holds_fails_to_start() {
    let port = support::free_port();
    let impostor = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let started = std::panic::catch_unwind(|| drop(memcached_with(Auth::File, dir.path(), port)));
    let message = started
        .expect_err("the start passed with another process on the port")
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default();
    assert!(
        message.contains("exited") && message.contains(&port.to_string()),
        "{message}"
    );
    drop(impostor);
}
