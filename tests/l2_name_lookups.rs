//! A blocking L2 call (Memcached, or a standalone Redis) that must open a connection keeps its
//! deadline while host name lookups hang, as they do when the name server went away with the
//! network: the system's resolver cannot be given a deadline, and such a call waited for the
//! resolver's own timeouts (five seconds here) instead of its L2 timeout.
//!
//! Real parts: the system resolver, a real memcached and Redis, and a name server that never answers (a UDP
//! socket on a loopback address). `/etc/hosts` and `/etc/resolv.conf` are replaced by bind mounts
//! in a mount namespace of the test's own (`unshare`, util-linux; needs root), so the machine's
//! files are never touched: the test runs itself again in that namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use uno_cache::{Error, MemcachedOptions, MemcachedStore, RedisOptions, RedisStore, Storage};

/// Set in the run inside the namespace.
const CHILD: &str = "UNO_DNS_TEST_CHILD";
const NAME: &str = "memcached.uno-dns-test";
/// Where the silent name server listens.
const SILENT_NS: &str = "127.83.0.1";
const TEST: &str = "a_blocking_call_that_must_connect_keeps_its_deadline_while_name_lookups_hang";
const TIMEOUT: Duration = Duration::from_millis(300);

#[test]
fn a_blocking_call_that_must_connect_keeps_its_deadline_while_name_lookups_hang() {
    if std::env::var_os(CHILD).is_some() {
        return in_the_namespace();
    }
    support::require("unshare", "util-linux");
    support::require("mount", "util-linux");
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 localhost\n127.0.0.1 {NAME}\n")).unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        format!("nameserver {SILENT_NS}\noptions timeout:5 attempts:1\n"),
    )
    .unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/resolv.conf && exec "$3" --exact "$4" --nocapture"#)
        .arg("sh")
        .arg(&hosts)
        .arg(&resolv)
        .arg(std::env::current_exe().unwrap())
        .arg(TEST)
        .env(CHILD, "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "the run in its own mount namespace failed (root is needed for unshare --mount):\n{stdout}\n{stderr}"
    );
}

fn in_the_namespace() {
    // The name server that never answers: bound, never read.
    let _silent = std::net::UdpSocket::bind((SILENT_NS, 53)).unwrap();
    let port = |addr: String| addr.rsplit(':').next().unwrap().to_owned();
    let memcached = support::MemcachedServer::start();
    let redis = support::RedisServer::start();
    // Opening checks the host on an async connection: the name is in /etc/hosts still.
    let stores: [(&str, Box<dyn Storage>); 2] = [
        (
            "memcached",
            Box::new(
                MemcachedStore::connect(
                    MemcachedOptions::new(format!("{NAME}:{}", port(memcached.addr())))
                        .timeout(TIMEOUT)
                        .connect_timeout(Duration::from_secs(2)),
                )
                .unwrap(),
            ),
        ),
        (
            "redis",
            Box::new(
                RedisStore::connect(
                    RedisOptions::new(format!("{NAME}:{}", port(redis.addr())))
                        .timeout(TIMEOUT)
                        .connect_timeout(Duration::from_secs(2)),
                )
                .unwrap(),
            ),
        ),
    ];
    // From now on the name is only in the DNS, which does not answer.
    let umount = Command::new("umount").arg("/etc/hosts").status().unwrap();
    assert!(umount.success());
    for (level, store) in &stores {
        // The first blocking call has no connection of its own: it must look the name up.
        let started = Instant::now();
        let got = store.get("k");
        let took = started.elapsed();
        assert!(matches!(got, Err(Error::Timeout { .. })), "{level}: {got:?}");
        assert!(
            took < TIMEOUT + Duration::from_secs(1),
            "{level}: the call took {took:?}, past its {TIMEOUT:?} timeout"
        );
    }
}
