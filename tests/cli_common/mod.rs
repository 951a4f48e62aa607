//! Running the `uno-cache` binary as a user does, on a store directory (`--dir`) or a
//! configuration file (`--config`), and the stores and configurations the CLI tests share.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uno-cache"))
}

pub fn run(dir: &Path, args: &[&str]) -> Output {
    bin().arg("--dir").arg(dir).args(args).output().unwrap()
}

pub fn run_config(config: &Path, args: &[&str]) -> Output {
    bin().arg("--config").arg(config).args(args).output().unwrap()
}

pub fn run_with_stdin(dir: &Path, args: &[&str], input: &[u8]) -> Output {
    let mut child = bin()
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The child may exit without reading (refused arguments): its exit code tells.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

pub fn write_config(dir: &Path, body: &str) -> std::path::PathBuf {
    let config = dir.join("cache.toml");
    std::fs::write(&config, body).unwrap();
    config
}

/// A configuration of a file L1 in `store`, written in `dir`.
pub fn write_file_config(dir: &Path, store: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[local]\ntype = \"file\"\npath = {:?}\n",
            store.display().to_string()
        ),
    )
}

/// The size bound `stats` reports for a store directory, in bytes: the figure in its
/// `max size N MiB (B bytes)` line.
pub fn max_size(store: &Path) -> u64 {
    let out = String::from_utf8(run(store, &["stats"]).stdout).unwrap();
    let line = out
        .lines()
        .find_map(|line| line.trim().strip_prefix("max size"))
        .unwrap_or_else(|| panic!("no max size in {out}"));
    line.split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(" bytes)"))
        .unwrap_or_else(|| panic!("no bytes in the max size line {line:?}"))
        .parse()
        .unwrap()
}

/// A store of one entry, whose segment's header no longer checks (its id was flipped).
pub fn store_whose_only_segment_header_is_damaged() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["set", "first", "1"]).status.success());
    let seg = dir.path().join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[16] ^= 0xff; // the segment id in the header: its CRC no longer matches
    std::fs::write(&seg, bytes).unwrap();
    dir
}
