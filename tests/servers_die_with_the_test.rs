//! The test harness's own promises: a server a test starts dies with the test process even when
//! that process is killed with SIGKILL, where no drop runs (a test process starts a Redis and a
//! memcached server and is killed; both servers must be gone soon after); and a test talks only
//! to the servers it started, never to another process that holds the port it was given; a
//! server whose fresh port another process takes before it binds it starts on another; a file
//! system a killed test mounted does not outlive the next test's mount; and a cache child
//! process (`support/cache_process.rs`) dies with its test process, also while it hangs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

#[path = "support/mount.rs"]
mod mount;

#[path = "support/cache_process.rs"]
mod cache_process;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};

/// Set in the child: start the servers, print their pids, and wait to be killed.
const ENV_OWNER: &str = "UNO_SERVER_OWNER";

/// Run only as the child of the test below.
#[test]
#[ignore = "the child process of servers_die_with_the_process_that_started_them"]
fn server_owner() {
    if std::env::var_os(ENV_OWNER).is_none() {
        return;
    }
    let redis = support::RedisServer::start();
    let memcached = support::MemcachedServer::start();
    println!("@{} {}", redis.pid().unwrap(), memcached.pid().unwrap());
    // Until the parent kills this process (its stdin stays open until then).
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn alive(pid: u32) -> bool {
    // A killed child of a killed parent is reaped by init: its /proc entry goes (a zombie
    // waiting for that counts as dead).
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')))
}

/// Runs this binary's ignored test `name` alone, as a child process with `env` set to `value`,
/// its stdin and stdout piped to the caller.
fn child_test(name: &str, env: &str, value: impl AsRef<std::ffi::OsStr>) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
        .env(env, value)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

#[test]
fn servers_die_with_the_process_that_started_them() {
    let mut child = child_test("server_owner", ENV_OWNER, "1");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let line = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.split_once('@').map(|(_, pids)| pids.to_owned()))
        .expect("the child printed its servers' pids");
    let pids: Vec<u32> = line.split(' ').map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{line}");
    assert!(pids.iter().all(|&pid| alive(pid)), "the servers run: {pids:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Not our children: nothing to wait on but their /proc entries, polled.
    support::wait_until("the servers' end after the test process was killed", || {
        !pids.iter().any(|&pid| alive(pid))
    });
}

/// Answers every connection on `listener` with `reply`, as a server of the same kind that some
/// other process started on the port would.
fn impostor(listener: std::net::TcpListener, reply: &'static [u8]) {
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            use std::io::Write;
            let _ = conn.write_all(reply);
        }
    });
}

/// The message of the panic `start` ends in.
fn start_failure(start: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(start).expect_err("the start succeeded against an impostor");
    err.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn a_server_whose_port_another_process_holds_fails_to_start_instead_of_passing_for_ours() {
    let port = support::free_port();
    impostor(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        b"+PONG\r\n",
    );
    let message = start_failure(|| {
        support::RedisServer::start_on(port, &[], None);
    });
    assert!(
        message.contains("exited") && message.contains(&port.to_string()),
        "{message}"
    );
}

#[test]
fn a_memcached_whose_port_another_process_holds_fails_to_start_instead_of_passing_for_ours() {
    let port = support::free_port();
    impostor(
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
        b"VERSION 1.6.0\r\n",
    );
    let message = start_failure(|| {
        support::MemcachedServer::start_on(port);
    });
    assert!(
        message.contains("exited") && message.contains(&port.to_string()),
        "{message}"
    );
}

/// Binds, as another process would, the port [`support::free_port`] hands out next on this
/// thread (plus `offset`: 10 000 for its cluster-bus port), right after its check that the
/// port is free and before the server binds it; returns the port taken.
fn take_the_next_free_port(offset: u16) -> std::rc::Rc<std::cell::Cell<u16>> {
    let taken = std::rc::Rc::new(std::cell::Cell::new(0));
    let told = std::rc::Rc::clone(&taken);
    support::after_the_next_free_port(move |port| {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port + offset)).unwrap();
        told.set(port);
        // Held until the test process ends, as the other process would hold it.
        std::mem::forget(listener);
    });
    taken
}

#[test]
fn a_redis_server_whose_fresh_port_is_taken_before_it_binds_it_starts_on_another() {
    let taken = take_the_next_free_port(0);
    let redis = support::RedisServer::start();
    assert_ne!(taken.get(), 0, "free_port handed out a port");
    assert_ne!(redis.port, taken.get());
    let pong: String = redis::cmd("PING").query(&mut redis.raw()).unwrap();
    assert_eq!(pong, "PONG");
}

#[test]
fn a_memcached_whose_fresh_port_is_taken_before_it_binds_it_starts_on_another() {
    let taken = take_the_next_free_port(0);
    let memcached = support::MemcachedServer::start();
    assert_ne!(taken.get(), 0, "free_port handed out a port");
    assert_ne!(memcached.port, taken.get());
    memcached.raw().set("k", "v", 0).unwrap();
    assert_eq!(memcached.raw().get::<String>("k").unwrap().as_deref(), Some("v"));
}

#[test]
fn a_cluster_node_whose_bus_port_is_taken_before_it_binds_it_starts_on_another() {
    let taken = take_the_next_free_port(10_000);
    let cluster = support::RedisCluster::start();
    assert_ne!(taken.get(), 0, "free_port handed out a port");
    assert!(cluster.nodes.iter().all(|node| node.port != taken.get()));
    let mut conn = cluster.nodes[0].raw();
    let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut conn).unwrap();
    assert!(info.contains("cluster_state:ok"), "{info}");
}

/// Set in the child: mount a tmpfs and an ext4 image, print their paths, and wait to be killed.
const ENV_MOUNTER: &str = "UNO_MOUNT_OWNER";

/// Run only as the child of the test below.
#[test]
#[ignore = "the child process of a_mount_of_a_killed_test_is_gone_once_the_next_mount_is_made"]
fn mount_owner() {
    if std::env::var_os(ENV_MOUNTER).is_none() {
        return;
    }
    let tmpfs = mount::Mount::tmpfs(1024);
    let ext4 = mount::Mount::ext4(8);
    for fs in [&tmpfs, &ext4] {
        std::fs::write(fs.path().join("ballast"), vec![1u8; 512 * 1024]).unwrap();
        println!("@{}", fs.path().display());
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

fn mounted(point: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(point.to_str().unwrap()))
}

#[test]
fn a_mount_of_a_killed_test_is_gone_once_the_next_mount_is_made() {
    let mut child = child_test("mount_owner", ENV_MOUNTER, "1");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let points: Vec<std::path::PathBuf> = stdout
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| line.split_once('@').map(|(_, path)| path.into()))
        .take(2)
        .collect();
    assert_eq!(points.len(), 2, "the child printed its mount points");
    child.kill().unwrap();
    child.wait().unwrap();
    for point in &points {
        assert!(
            mounted(point),
            "no drop ran in the killed child: {} is still mounted",
            point.display()
        );
    }

    let _next = mount::Mount::tmpfs(64);
    for point in &points {
        assert!(!mounted(point), "{} is still mounted", point.display());
        // The ext4 image was in the same directory.
        let root = point.parent().unwrap();
        assert!(!root.exists(), "{} is still there", root.display());
    }
}

/// Set in the owner child below: the directory of the source file its cache child loads from.
const ENV_CACHE_OWNER: &str = "UNO_CACHE_CHILD_OWNER";

/// The cache child's entry point (see `support/cache_process.rs`).
#[test]
#[ignore = "the cache child of cache_owner"]
fn cache_child() {
    cache_process::serve();
}

/// Run only as the child of the test below: starts a cache child, sends it a `load` whose
/// source hangs, prints its pid, and waits to be killed.
#[test]
#[ignore = "the child process of a_cache_child_dies_with_the_test_process_also_while_it_hangs"]
fn cache_owner() {
    let Some(dir) = std::env::var_os(ENV_CACHE_OWNER).map(std::path::PathBuf::from) else {
        return;
    };
    let config = format!(
        "[local]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("l1").display()
    );
    let source = (
        cache_process::ENV_SOURCE,
        dir.join("source.txt").display().to_string(),
    );
    let mut cache = cache_process::CacheProcess::start_with_env("cache_child", &config, &[source]);
    cache.send("load k");
    println!("@{}", cache.pid());
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
}

#[test]
fn a_cache_child_dies_with_the_test_process_also_while_it_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let hang = dir.path().join("source.hang");
    std::fs::write(&hang, b"").unwrap();
    let mut owner = child_test("cache_owner", ENV_CACHE_OWNER, dir.path());
    let stdout = BufReader::new(owner.stdout.take().unwrap());
    let pid: u32 = stdout
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.split_once('@').map(|(_, pid)| pid.parse().unwrap()))
        .expect("the owner printed its cache child's pid");
    owner.kill().unwrap();
    owner.wait().unwrap();
    let gone = std::panic::catch_unwind(|| {
        support::wait_until("the cache child's end after its test process was killed", || {
            !alive(pid)
        });
    });
    // Lets a child left behind finish its load and exit.
    std::fs::remove_file(&hang).unwrap();
    if let Err(panic) = gone {
        std::panic::resume_unwind(panic);
    }
}
