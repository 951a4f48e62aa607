//! The `uno-cache` binary through `--config` with a real Redis as L2: the local store is a cache
//! of L2 there, so a host that has none yet still reads and deletes through L2; and what the
//! CLI says of a write or delete L2 did not take.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::RedisServer;

fn with_config(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_uno-cache"))
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// A file L1 at `data` in front of `redis`.
fn config(dir: &Path, name: &str, data: &Path, redis: &RedisServer) -> PathBuf {
    let path = dir.join(name);
    let body = format!(
        "use_multi_level = true\n[local]\ntype = \"file\"\npath = {:?}\nmax_size = 16\n\
         [distributed]\nenabled = true\nhosts = [{:?}]\ntimeout_ms = 2000\n",
        data.display().to_string(),
        redis.addr()
    );
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn a_host_without_a_local_store_yet_reads_and_deletes_through_l2() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let writer = config(dir.path(), "writer.toml", &dir.path().join("writer"), &redis);
    let out = with_config(&writer, &["set", "k", "v"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let fresh = dir.path().join("new-host");
    let reader = config(dir.path(), "reader.toml", &fresh, &redis);
    let out = with_config(&reader, &["get", "k"]);
    assert_eq!(
        (out.status.code(), out.stdout.as_slice()),
        (Some(0), &b"v"[..]),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh = dir.path().join("another-new-host");
    let deleter = config(dir.path(), "deleter.toml", &fresh, &redis);
    let out = with_config(&deleter, &["del", "k"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checker = config(dir.path(), "checker.toml", &dir.path().join("third"), &redis);
    let out = with_config(&checker, &["get", "k"]);
    assert_eq!(out.status.code(), Some(1), "the delete did not reach L2");
}

/// A `del` on a host whose L1 does not hold the key, while L2 (which does) is down: the delete
/// is queued for replay, and L1's "not there" is all that is known. It exited 1, "it was not
/// there", of a key L2 held; it exits 4, "not known", and says why.
#[test]
fn a_queued_del_of_a_key_l1_did_not_hold_exits_4_not_1() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let writer = config(dir.path(), "writer.toml", &dir.path().join("writer"), &redis);
    let out = with_config(&writer, &["set", "k", "v"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleter = config(dir.path(), "deleter.toml", &dir.path().join("deleter"), &redis);
    redis.kill();
    let out = with_config(&deleter, &["del", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("queued for replay") && stderr.contains("not known"),
        "{stderr}"
    );
    // L1 held it on the writer's host: that `del` knows the key was there.
    let out = with_config(&writer, &["del", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("queued for replay"), "{stderr}");
}

/// A set the replay queue cannot hold (over `offline.replay_max_bytes`) is queued as a delete of
/// its key: the CLI must not say the write waits for L2, since L2 will only lose the key.
#[test]
fn a_set_the_full_replay_queue_takes_as_a_delete_is_reported_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = support::free_port();
    let path = dir.path().join("small-queue.toml");
    std::fs::write(
        &path,
        format!(
            "use_multi_level = true\n[local]\ntype = \"file\"\npath = {:?}\nmax_size = 16\n\
             [distributed]\nenabled = true\nhosts = [\"127.0.0.1:{port}\"]\n\
             [offline]\nreplay_max_bytes = 4124\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let small = with_config(&path, &["set", "small", "v"]);
    let stderr = String::from_utf8_lossy(&small.stderr);
    assert_eq!(small.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("queued for replay"), "{stderr}");

    let big = "x".repeat(8_000);
    let out = with_config(&path, &["set", "big", &big]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "L1 holds the value: {stderr}");
    assert!(
        stderr.contains("took a delete of the key instead of the value")
            && stderr.contains(&data.display().to_string())
            && !stderr.contains("queued for replay"),
        "{stderr}"
    );
}

/// A file L1 with `offline.replay = false`: a set L2 did not take is told to turn the queue on,
/// not to use the file L1 it already has.
#[test]
fn a_set_l2_failed_with_replay_off_behind_a_file_l1_advises_offline_replay() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = dir.path().join("cache.toml");
    std::fs::write(
        &config,
        format!(
            "use_multi_level = true\n[local]\ntype = \"file\"\npath = {:?}\n\
             [distributed]\nenabled = true\nhosts = [\"127.0.0.1:{port}\"]\n\
             [offline]\nreplay = false\n",
            dir.path().join("data").display().to_string()
        ),
    )
    .unwrap();
    let out = with_config(&config, &["set", "k", "v"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("offline.replay = true") && !stderr.contains("local.type"),
        "{stderr}"
    );
}

/// A write queued while L2 was down, then the same key written again once L2 is back: the
/// second write is queued behind the first (it must not overtake it), and the CLI said "L2 was
/// not asked, and gets both from the next run" while this very run sent them. It now replays
/// the queue before it answers: no note, L2 holds the newer value when the command returns, and
/// nothing is left queued for the next run (found by following the README as a new user).
#[test]
fn a_write_queued_behind_an_earlier_op_is_sent_by_the_run_that_finds_l2_back() {
    let mut redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "app.toml", &dir.path().join("data"), &redis);
    redis.kill();
    let out = with_config(&path, &["set", "k", "one"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("queued for replay"), "{stderr}");

    redis.restart();
    let out = with_config(&path, &["set", "k", "two"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        !stderr.contains("not asked") && !stderr.contains("queued"),
        "{stderr}"
    );
    let held: Vec<u8> = redis::cmd("GET").arg("k").query(&mut redis.raw()).unwrap();
    assert!(held.ends_with(b"two"), "L2 holds {held:?}");
    let out = with_config(&path, &["set", "k", "three"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.is_empty(), "nothing was left queued: {stderr}");

    // A delete behind a queued op, of a key this host's L1 does not hold: sent by this run, but
    // the replay does not say whether L2 held the key.
    redis.kill();
    let other = config(dir.path(), "other.toml", &dir.path().join("other"), &redis);
    let out = with_config(&other, &["del", "k"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    redis.restart();
    let out = with_config(&other, &["del", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("reached L2") && !stderr.contains("not asked"),
        "{stderr}"
    );
    let held: Option<Vec<u8>> = redis::cmd("GET").arg("k").query(&mut redis.raw()).unwrap();
    assert_eq!(held, None);
}
