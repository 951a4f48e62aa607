//! The `uno-cache` binary as a user runs it: exit codes, dump/import round trips, bad arguments, and
//! `import --durable` acknowledging only what survives a SIGKILL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uno-cache"))
}

fn run(dir: &Path, args: &[&str]) -> Output {
    bin().arg("--dir").arg(dir).args(args).output().unwrap()
}

fn run_with_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = bin()
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn get_exits_0_on_a_hit_1_on_a_miss_and_2_on_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert!(run(&store, &["set", "k", "hello"]).status.success());
    let hit = run(&store, &["get", "k"]);
    assert_eq!(
        (hit.status.code(), hit.stdout.as_slice()),
        (Some(0), &b"hello"[..])
    );
    let miss = run(&store, &["get", "nope"]);
    assert_eq!((miss.status.code(), miss.stdout.len()), (Some(1), 0));

    // A directory that is not ours is an error with the reason on stderr.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("x"), b"y").unwrap();
    let err = run(&foreign, &["get", "k"]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("not an uno-cache directory"));
}

#[test]
fn del_and_ttl_behave_and_bad_arguments_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["set", "k", "v", "--ttl", "3600"])
        .status
        .success());
    assert_eq!(run(dir.path(), &["del", "k"]).status.code(), Some(0));
    assert_eq!(run(dir.path(), &["del", "k"]).status.code(), Some(1));
    for args in [
        &["set", "k", "v", "--ttl", "0"][..],
        &["set", "k", "v", "--ttl", "-1"],
        &["bogus"],
        &["get"],
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} printed no reason");
    }
    let empty_key = run(dir.path(), &["set", "", "v"]);
    assert_eq!(empty_key.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&empty_key.stderr).contains("key is empty"));
}

#[test]
fn dump_then_import_round_trips_any_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let lines = "plain\tvalue\nta\\tb\tline\\nbreak \\\\ back\\x00\\xff\n";
    let out = run_with_stdin(&src, &["import"], lines.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dump = run(&src, &["dump"]);
    assert!(dump.status.success());
    assert_eq!(
        String::from_utf8(dump.stdout.clone()).unwrap(),
        lines,
        "dump is sorted by key, escaped"
    );
    let got = run(&src, &["get", "ta\tb"]);
    assert_eq!(got.stdout, b"line\nbreak \\ back\x00\xff");

    let dst = dir.path().join("dst");
    assert!(run_with_stdin(&dst, &["import"], &dump.stdout).status.success());
    assert_eq!(run(&dst, &["dump"]).stdout, dump.stdout);

    let bad = run_with_stdin(&dst, &["import"], b"no tab here\n");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("line 1"));
}

#[test]
fn stats_json_verify_and_compact_work() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["set", "a", "1"]);
    run(dir.path(), &["set", "b", "2"]);
    let stats = run(dir.path(), &["stats", "--json"]);
    assert!(stats.status.success());
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(json["live_items"], 2);
    let table = String::from_utf8(run(dir.path(), &["stats"]).stdout).unwrap();
    assert!(table.contains("live items"));
    assert_eq!(run(dir.path(), &["verify"]).status.code(), Some(0));
    assert!(run(dir.path(), &["compact"]).status.success());
    assert_eq!(run(dir.path(), &["get", "b"]).stdout, b"2");
}

#[test]
fn verify_exits_3_on_a_damaged_record() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["set", "first", &"x".repeat(100)]);
    run(dir.path(), &["set", "second", &"y".repeat(100)]);
    let seg = dir.path().join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 28 + 10] ^= 0xff; // inside the value of the first record of segment 1
    std::fs::write(&seg, bytes).unwrap();
    let out = run(dir.path(), &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        run(dir.path(), &["get", "first"]).status.code(),
        Some(1),
        "a damaged value is a miss"
    );
    assert_eq!(
        run(dir.path(), &["get", "second"]).stdout,
        "y".repeat(100).as_bytes()
    );
}

#[test]
fn durable_import_acknowledges_only_lines_that_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = bin()
        .arg("--dir")
        .arg(dir.path())
        .args(["import", "--durable"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut acks = BufReader::new(child.stdout.take().unwrap());
    let mut acked = Vec::new();
    for i in 0..40 {
        writeln!(stdin, "key-{i}\tvalue-{i}").unwrap();
        stdin.flush().unwrap();
        if i < 30 {
            // Wait for the acknowledgement (an event, not a sleep).
            let mut line = String::new();
            acks.read_line(&mut line).unwrap();
            assert_eq!(line, format!("ok\tkey-{i}\n"));
            acked.push(i);
        }
    }
    child.kill().unwrap(); // SIGKILL, possibly mid-write of lines 30..40
    child.wait().unwrap();
    let dump = String::from_utf8(run(dir.path(), &["dump"]).stdout).unwrap();
    for i in acked {
        assert!(
            dump.contains(&format!("key-{i}\tvalue-{i}\n")),
            "acknowledged key-{i} lost:\n{dump}"
        );
    }
    assert_eq!(run(dir.path(), &["verify"]).status.code(), Some(0));
}

#[test]
fn a_config_file_drives_get_set_del_and_stats_through_the_manager_and_the_rest_on_its_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("cache.toml");
    std::fs::write(
        &config,
        format!(
            "[local]\ntype = \"file\"\npath = {:?}\nmax_size = 16\nttl = 60\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let with_config = |args: &[&str]| bin().arg("--config").arg(&config).args(args).output().unwrap();
    assert!(with_config(&["set", "k", "via manager"]).status.success());
    let got = with_config(&["get", "k"]);
    assert_eq!(
        (got.status.code(), got.stdout.as_slice()),
        (Some(0), &b"via manager"[..])
    );
    let stats = with_config(&["stats", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(json["size"]["local"]["items"], 1);
    // The file-store commands work on the configuration's directory.
    let dump = String::from_utf8(with_config(&["dump"]).stdout).unwrap();
    assert_eq!(dump, "k\tvia manager\n");
    assert_eq!(with_config(&["verify"]).status.code(), Some(0));
    assert_eq!(with_config(&["del", "k"]).status.code(), Some(0));
    assert_eq!(with_config(&["get", "k"]).status.code(), Some(1));

    std::fs::write(&config, "[local]\ntype = \"floppy\"\n").unwrap();
    let bad = with_config(&["get", "k"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("local"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
