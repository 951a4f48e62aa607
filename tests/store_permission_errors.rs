//! A store the process may not read or write (another user's directory or file, a mode that
//! leaves it out): each command fails naming the path the permission is missing on and what to
//! do, and never reads as a missing store. The tests run the `uno-cache` binary as the `nobody`
//! user (uid 65534) through `setpriv` (util-linux), on stores made as root (CI runs as root).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "cli_common/mod.rs"]
mod cli_common;
#[path = "support/mod.rs"]
mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use cli_common::run;

const NOBODY: &str = "65534";

/// The `uno-cache` binary run as `nobody`, on `dir`.
fn run_as_nobody(dir: &Path, args: &[&str]) -> Output {
    support::require("setpriv", "util-linux");
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "these tests run the CLI as another user through setpriv: run them as root (CI does)"
    );
    Command::new("setpriv")
        .args(["--reuid", NOBODY, "--regid", NOBODY, "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_uno-cache"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .output()
        .unwrap()
}

/// A temp dir `nobody` may enter, holding a store made as root (private: mode 0700).
fn root_store() -> (tempfile::TempDir, std::path::PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = parent.path().join("store");
    let out = run(&dir, &["set", "k", "v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (parent, dir)
}

/// A store in a directory the user may not read (another user's, private as stores are by
/// default): `get`, `stats`, `verify`, `dump`, `del` and `compact` said "no store at DIR; check
/// --dir", sending the user to look for a typo in a path that was right (found by review). Each
/// names the directory, says permission was denied and what to check, and changes nothing.
#[test]
fn a_store_directory_the_user_may_not_read_is_named_as_unreadable_not_as_missing() {
    let (_parent, dir) = root_store();
    for args in [
        &["get", "k"][..],
        &["stats"],
        &["verify"],
        &["dump"],
        &["del", "k"],
        &["compact"],
    ] {
        let out = run_as_nobody(&dir, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("no store at"), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&dir.display().to_string())
                && stderr.contains("Permission denied")
                && stderr.contains("owner and mode"),
            "{args:?}: {stderr}"
        );
    }
    assert_eq!(run(&dir, &["get", "k"]).stdout, b"v");
}
