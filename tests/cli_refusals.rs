//! What the `uno-cache` binary refuses or reports instead of passing for a success: a `dump` or
//! `import` of input that is not a whole, good dump (cut short, of another version, taken from a
//! store with a damaged record), and arguments that contradict each other. Each says so and
//! exits 2 (3 for damage).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "cli_common/mod.rs"]
mod cli_common;

use std::path::Path;
use std::process::Output;

use cli_common::*;

fn import(dir: &Path, input: &[u8]) -> Output {
    run_with_stdin(dir, &["import"], input)
}

/// A dump cut short (a full disk under `dump >`, a broken pipe) ends inside its last line; its
/// value was stored shortened, and the import passed for whole.
#[test]
fn an_import_of_a_dump_cut_short_stores_nothing_of_its_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), b"# uno-cache dump 2\nk1\tv1\nk2\t{\"name\":\"Al");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cut short"), "{stderr}");
    assert_eq!(run(dir.path(), &["get", "k1"]).stdout, b"v1");
    assert_eq!(run(dir.path(), &["get", "k2"]).status.code(), Some(1));
}

/// A dump of another version was read as a comment and then with this version's rules.
#[test]
fn an_import_of_a_dump_of_another_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = import(dir.path(), b"# uno-cache dump 4\nk\tv\n# end 1\n");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("version 4"), "{stderr}");
    // Nothing stored: refused at line 1, before the store was opened, so there is none to read.
    let get = run(dir.path(), &["get", "k"]);
    let stderr = String::from_utf8_lossy(&get.stderr);
    assert_eq!(get.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no store at"), "{stderr}");
}

/// A damaged record was read as a miss and left out of the dump, which exited 0: a backup taken
/// as whole. It exits 3, the CLI's code for damage, with the rest of the dump whole.
#[test]
fn a_dump_of_a_store_with_a_damaged_record_names_it_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["set", "first", &"x".repeat(100)]);
    run(dir.path(), &["set", "second", &"y".repeat(100)]);
    let seg = dir.path().join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 28 + 10] ^= 0xff; // inside the value of the first record of segment 1
    std::fs::write(&seg, bytes).unwrap();
    let out = run(dir.path(), &["dump"]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("damaged") && stderr.contains("first"), "{stderr}");
    assert!(
        stdout.contains(&format!("second\t{}\n# end 1\n", "y".repeat(100))),
        "{stdout}"
    );
    assert!(!stdout.contains("first"), "{stdout}");
}

/// A record damaged in its key (or in the header fields that say it is a live value) hashes to
/// no entry when the dump lists the keys from the records, so it was left out without a word and
/// the dump exited 0, as a whole backup does, while `get` of its key exits 3 and `verify` finds
/// it (found by review). The dump cannot name such a record, but counts it and exits 3.
#[test]
fn a_dump_of_a_store_with_a_record_damaged_in_its_key_says_so_and_exits_3() {
    for (what, offset) in [("key", 28), ("expiry", 20), ("kind", 4)] {
        let dir = tempfile::tempdir().unwrap();
        run(dir.path(), &["set", "first", &"x".repeat(100)]);
        run(dir.path(), &["set", "second", &"y".repeat(100)]);
        let seg = dir.path().join(format!("{:020}.seg", 1));
        let mut bytes = std::fs::read(&seg).unwrap();
        // In the first record of segment 1 (after the 32-byte segment header).
        bytes[32 + offset] ^= 0x01;
        std::fs::write(&seg, bytes).unwrap();
        let out = run(dir.path(), &["dump"]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(3), "{what}: {stderr}");
        assert!(
            stderr.contains("damaged") && stderr.contains("1 record whose key"),
            "{what}: {stderr}"
        );
        assert!(
            stdout.contains(&format!("second\t{}\n# end 1\n", "y".repeat(100))),
            "{what}: {stdout}"
        );
        // Told, not repaired: `verify` still finds the record.
        assert_eq!(run(dir.path(), &["verify"]).status.code(), Some(3), "{what}");
    }
}

/// A configuration file in `dir` whose file-store L1 is `dir/configured` (not created); returns
/// both paths.
fn file_store_config(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = dir.join("cache.toml");
    let configured = dir.join("configured");
    std::fs::write(
        &config,
        format!("[local]\ntype = \"file\"\npath = {:?}\n", configured),
    )
    .unwrap();
    (config, configured)
}

/// `--config` names the store through its `local.path`; a `--dir` (or `UNO_CACHE_DIR`) given with
/// it was ignored without a word, and an import went into the configured store.
#[test]
fn a_dir_given_with_a_config_is_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let (config, configured) = file_store_config(dir.path());
    let named = dir.path().join("named");
    let out = bin()
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(&named)
        .args(["set", "k", "v"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !configured.exists() && !named.exists(),
        "a refused call created a store"
    );
}

/// `get`, `set`, `del` and `stats` with `--config` run through the manager, which keeps expired
/// copies for the configuration's fail-safe window: `--keep-expired-secs` was accepted there and
/// changed nothing. It is refused, naming the field to set instead.
#[test]
fn keep_expired_secs_with_a_config_for_a_manager_command_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let (config, configured) = file_store_config(dir.path());
    for args in [&["set", "k", "v"][..], &["get", "k"], &["del", "k"], &["stats"]] {
        let out = bin()
            .arg("--config")
            .arg(&config)
            .args(["--keep-expired-secs", "60"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("loader.fail_safe_max_duration"),
            "{args:?}: {stderr}"
        );
    }
    assert!(!configured.exists(), "a refused call created a store");
}

/// A size bound the store refuses is named as the user gave it: `--max-size-mb` (the store and
/// the manager called it `max_size_mb` and `local.max_size`), or a configuration's
/// `local.max_size` (which `compact` and the other directory commands called `max_size_mb`).
#[test]
fn a_refused_size_bound_is_named_as_the_flag_or_the_field_that_gave_it() {
    let dir = tempfile::tempdir().unwrap();
    let (config, configured) = file_store_config(dir.path());
    let refusal = |out: Output| {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        stderr
    };
    let with_config =
        |args: &[&str]| refusal(bin().arg("--config").arg(&config).args(args).output().unwrap());
    let told = with_config(&["--max-size-mb", "0", "set", "k", "v"]);
    assert!(told.contains("--max-size-mb 0:"), "{told}");
    assert!(!configured.exists(), "a refused call created a store");

    assert!(run(&configured, &["set", "k", "v"]).status.success());
    // 1 MiB is less than four of the store's segments, which the bound must hold.
    for told in [
        with_config(&["--max-size-mb", "1", "set", "k", "v"]),
        with_config(&["--max-size-mb", "1", "compact"]),
        refusal(run(&configured, &["--max-size-mb", "1", "compact"])),
    ] {
        assert!(
            told.contains("--max-size-mb 1:") && !told.contains("max_size"),
            "{told}"
        );
    }

    std::fs::write(
        &config,
        format!("[local]\ntype = \"file\"\npath = {configured:?}\nmax_size = 1\n"),
    )
    .unwrap();
    let told = with_config(&["compact"]);
    assert!(
        told.contains("local.max_size") && !told.contains("max_size_mb"),
        "{told}"
    );
}

/// A key no store can hold (empty, or over `MAX_KEY_LEN` bytes) fails `get` with exit 2, as it
/// fails `set` and `del`: `get` read it as a miss (exit 1), so `get "$KEY"` with `KEY` unset
/// told a script the value was absent (found by review).
#[test]
fn a_get_of_an_empty_or_too_long_key_is_an_error_exit_2_not_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert!(run(&store, &["set", "k", "v"]).status.success());
    let config = write_file_config(dir.path(), &store);
    let too_long = "k".repeat(uno_cache::MAX_KEY_LEN + 1);
    for (key, says) in [("", "empty"), (too_long.as_str(), "over the limit")] {
        for out in [run(&store, &["get", key]), run_config(&config, &["get", key])] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(
                stderr.contains("invalid key") && stderr.contains(says),
                "{stderr}"
            );
            assert_eq!(stderr.lines().count(), 1, "{stderr}");
        }
    }
    // A key at the limit is a key like any other.
    let longest = "k".repeat(uno_cache::MAX_KEY_LEN);
    assert_eq!(run(&store, &["get", &longest]).status.code(), Some(1));
}

/// An empty `UNO_CACHE_DIR` (`export UNO_CACHE_DIR=` in a profile) stands for an empty `--dir`:
/// clap's refusal blamed a `--dir` the command line did not have, without naming the variable
/// (found by review).
#[test]
fn an_empty_dir_or_config_variable_is_named_in_the_refusal() {
    for (var, flag) in [("UNO_CACHE_DIR", "--dir"), ("UNO_CACHE_CONFIG", "--config")] {
        let out = bin()
            .env_remove("UNO_CACHE_DIR")
            .env_remove("UNO_CACHE_CONFIG")
            .env(var, "")
            .args(["get", "k"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(&format!("{var} is set and empty")),
            "{stderr}"
        );
    }
}

/// An empty `--dir ""` typed while `UNO_CACHE_DIR` is set and empty too was blamed on the
/// variable, which the command line overrides (found by review): only an empty value that came
/// from the variable names it.
#[test]
fn an_empty_dir_or_config_typed_on_the_command_line_is_not_blamed_on_its_variable() {
    for (var, flag) in [("UNO_CACHE_DIR", "--dir"), ("UNO_CACHE_CONFIG", "--config")] {
        for typed in [vec![flag, ""], vec![&format!("{flag}=")]] {
            let out = bin()
                .env_remove("UNO_CACHE_DIR")
                .env_remove("UNO_CACHE_CONFIG")
                .env(var, "")
                .args(&typed)
                .args(["get", "k"])
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{typed:?}: {stderr}");
            assert!(stderr.contains(flag), "{typed:?}: {stderr}");
            assert!(!stderr.contains(var), "{typed:?}: {stderr}");
        }
    }
}

/// `UNO_CACHE_DIR` exported in a profile stands for `--dir`, so every `--config` call is refused;
/// clap's refusal named a `--dir` the command line did not have, without the variable (found by
/// walking the README).
#[test]
fn a_dir_or_config_variable_in_conflict_with_the_other_flag_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _) = file_store_config(dir.path());
    let runs = [
        (
            "UNO_CACHE_DIR",
            dir.path().join("named"),
            "--config",
            config.clone(),
        ),
        (
            "UNO_CACHE_CONFIG",
            config.clone(),
            "--dir",
            dir.path().join("named"),
        ),
    ];
    for (var, value, flag, flag_value) in runs {
        let out = bin()
            .env_remove("UNO_CACHE_DIR")
            .env_remove("UNO_CACHE_CONFIG")
            .env(var, &value)
            .arg(flag)
            .arg(&flag_value)
            .args(["get", "k"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(&format!("came from {var}, which is set"))
                && stderr.contains(&format!("unset {var}")),
            "{stderr}"
        );
    }
    // Both flags typed: the variables are not to blame, and are not named.
    let out = bin()
        .env("UNO_CACHE_DIR", dir.path().join("other"))
        .env_remove("UNO_CACHE_CONFIG")
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(dir.path().join("named"))
        .args(["get", "k"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("UNO_CACHE_DIR"), "{stderr}");
}

/// Whether `--dir` or `--config` was typed was told from argv by prefix, so a value starting
/// with `-d` or `-c` (a key after `--`) passed for a typed `-d` / `-c`, and the variable behind
/// the conflict went unnamed (found by review). clap now says where each value came from: a
/// typed `-d` (joined to its value too) still is one, and names no variable.
#[test]
fn a_value_that_starts_like_a_short_flag_does_not_hide_the_variable_in_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (config, configured) = file_store_config(dir.path());
    let named = dir.path().join("named");
    let runs: [(&str, &Path, &str, &Path, &[&str]); 3] = [
        (
            "UNO_CACHE_DIR",
            &named,
            "--config",
            &config,
            &["set", "--", "-dx", "v"],
        ),
        ("UNO_CACHE_DIR", &named, "-c", &config, &["get", "--", "-d"]),
        (
            "UNO_CACHE_CONFIG",
            &config,
            "--dir",
            &named,
            &["get", "--", "-cx"],
        ),
    ];
    for (var, value, flag, flag_value, args) in runs {
        let out = bin()
            .env_remove("UNO_CACHE_DIR")
            .env_remove("UNO_CACHE_CONFIG")
            .env(var, value)
            .arg(flag)
            .arg(flag_value)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("came from {var}, which is set")),
            "{args:?}: {stderr}"
        );
    }
    // `-d` typed, joined to its value: the command line's, so the variable is not to blame.
    let out = bin()
        .env("UNO_CACHE_DIR", dir.path().join("other"))
        .env_remove("UNO_CACHE_CONFIG")
        .arg(format!("-d{}", named.display()))
        .arg("--config")
        .arg(&config)
        .args(["get", "k"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(!stderr.contains("UNO_CACHE_DIR"), "{stderr}");
    assert!(
        !configured.exists() && !named.exists(),
        "a refused call created a store"
    );
}

/// `--dir` naming a file was "no store at …" alone, as if the path were mistyped.
#[test]
fn a_dir_that_is_a_file_is_refused_saying_it_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache");
    std::fs::write(&file, b"not a store").unwrap();
    let out = run(&file, &["get", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no store at") && stderr.contains("it is a file"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store");
}

/// `--dir` under a file (`cache/store`, where `cache` is a file) was "create directory
/// cache/store: Not a directory", which blames the path's last part, a directory that does not
/// exist, and says nothing of the file in the way (found by review).
#[test]
fn a_dir_under_a_file_is_refused_saying_a_file_is_in_the_way() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cache");
    std::fs::write(&file, b"not a store").unwrap();
    for args in [&["set", "k", "v"][..], &["get", "k"]] {
        let out = run(&file.join("store"), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("is a file"), "{args:?}: {stderr}");
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"not a store");
}

/// A store whose `uno-cache.meta` is gone, or damaged in its magic bytes, is "not an uno-cache
/// directory" to the open (storage-format.md), which the store's own segment files beside it
/// contradict: `verify` exited 2 where the README promises 3 for damaged metadata, and every
/// command told the user to "choose an empty or new directory" of their own store. Each now
/// names the metadata file as missing or damaged and says the directory can be moved away or
/// deleted to start empty; `verify` exits 3. Nothing in the directory changes.
#[test]
fn a_store_whose_metadata_file_is_gone_or_damaged_in_its_magic_says_so() {
    for damage in ["missing", "damaged"] {
        let dir = tempfile::tempdir().unwrap();
        assert!(run(dir.path(), &["set", "k", "v"]).status.success());
        let meta = dir.path().join("uno-cache.meta");
        if damage == "missing" {
            std::fs::remove_file(&meta).unwrap();
        } else {
            let mut bytes = std::fs::read(&meta).unwrap();
            bytes[0] ^= 0xff;
            std::fs::write(&meta, bytes).unwrap();
        }
        let listing = || {
            let mut names: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            names
        };
        let before = listing();
        let verify = run(dir.path(), &["verify"]);
        let told = String::from_utf8_lossy(&verify.stdout);
        assert_eq!(verify.status.code(), Some(3), "{damage}: {told}");
        assert!(
            told.contains("damaged:") && told.contains(&meta.display().to_string()) && told.contains(damage),
            "{damage}: {told}"
        );
        let config = write_file_config(dir.path(), dir.path());
        for out in [
            run(dir.path(), &["get", "k"]),
            run(dir.path(), &["set", "k", "w"]),
            run(dir.path(), &["stats"]),
            run_config(&config, &["get", "k"]),
        ] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{damage}: {stderr}");
            assert!(
                stderr.contains(&meta.display().to_string())
                    && stderr.contains(damage)
                    && stderr.contains("move the directory away or delete it")
                    && !stderr.contains("choose an empty or new directory"),
                "{damage}: {stderr}"
            );
        }
        std::fs::remove_file(dir.path().join("cache.toml")).unwrap();
        assert_eq!(listing(), before, "{damage}: the directory changed");
    }
}

/// The store's flags (`--dir`, `--config`, `--max-size-mb`, `--keep-expired-secs`) after the
/// command, as in `uno-cache get greeting --dir ./uno-cache-data`, where a flag of the command
/// goes (`stats --json`): they were refused as "unexpected argument '--dir'", with clap's tip to
/// pass `--dir` as a value (`-- --dir`), which would have read it as the key (found by walking
/// the README). They mean the same on either side of the command.
#[test]
fn the_store_flags_are_taken_after_the_command_as_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let after = |args: &[&str], store: &Path| {
        bin()
            .env_remove("UNO_CACHE_DIR")
            .env_remove("UNO_CACHE_CONFIG")
            .args(args)
            .arg("--dir")
            .arg(store)
            .output()
            .unwrap()
    };
    let set = after(&["set", "greeting", "hello", "--max-size-mb", "8"], &store);
    assert_eq!(
        set.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let got = after(&["get", "greeting"], &store);
    assert_eq!(
        (got.status.code(), got.stdout.as_slice()),
        (Some(0), &b"hello"[..]),
        "{}",
        String::from_utf8_lossy(&got.stderr)
    );
    // The bound given after `set` is the one recorded, as it would be given before.
    assert_eq!(max_size(&store), 8 << 20);
    let (config, configured) = file_store_config(dir.path());
    let through_config = bin()
        .env_remove("UNO_CACHE_DIR")
        .env_remove("UNO_CACHE_CONFIG")
        .args(["set", "k", "v", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(
        through_config.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&through_config.stderr)
    );
    assert!(configured.exists(), "--config after the command was not used");
    // Given twice, on both sides, `--dir` and `--config` still conflict.
    let both = bin()
        .env_remove("UNO_CACHE_DIR")
        .env_remove("UNO_CACHE_CONFIG")
        .arg("--config")
        .arg(&config)
        .args(["get", "k", "--dir"])
        .arg(&store)
        .output()
        .unwrap();
    assert_eq!(both.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
    // A key that looks like the flag is still a key after `--`.
    assert_eq!(run(&store, &["set", "--", "--dir", "v"]).status.code(), Some(0));
    assert_eq!(run(&store, &["get", "--", "--dir"]).stdout, b"v");
}
