//! A store used by short runs of a program (here the `uno-cache` tool, as a script calling it
//! would) stays openable under the usual limit on open files. Each open starts a segment of its
//! own, and a run that ends before the compactor's interval left it small: 1,100 runs of `set`
//! left 1,100 segment files, one open file each, and with the default limit of 1,024 every
//! command then failed with "Too many open files", `compact` included.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::process::Command;

/// Runs the tool with the soft limit on open files at `limit`, as a desktop session often has.
fn run_limited(limit: u32, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_uno-cache"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn many_short_runs_that_each_write_a_little_keep_the_store_openable_under_a_low_file_limit() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // 64 open files: the lock, the standard streams and the tool's own leave about 55 for
    // segments; 120 runs passed that before an open merged the small segments.
    for run in 0..120 {
        let out = run_limited(64, &store, &["set", &format!("k{run}"), &format!("v{run}")]);
        assert!(
            out.status.success(),
            "run {run}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for run in [0, 59, 119] {
        let out = run_limited(64, &store, &["get", &format!("k{run}")]);
        assert_eq!(
            (out.status.code(), String::from_utf8_lossy(&out.stdout).trim()),
            (Some(0), format!("v{run}").as_str()),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let segments = std::fs::read_dir(&store)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "seg"))
        .count();
    assert!(segments <= 18, "{segments} segment files after 120 runs");
}
