//! The `uno-cache` binary run through a configuration file (`--config`): `get`, `set`, `del` and
//! `stats` go through the manager (L1 and L2), and an L2 that is misconfigured or unreachable must
//! make a command exit 2 naming the host, unless something durable took the write.
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

use cli_common::*;

/// README: a `get` of a damaged record exits 3, through a configuration as with `--dir`.
#[test]
fn a_get_of_a_damaged_record_through_a_config_exits_3_not_1() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    run(&store, &["set", "first", &"x".repeat(100)]);
    run(&store, &["set", "second", &"y".repeat(100)]);
    let seg = store.join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[32 + 28 + 10] ^= 0xff; // inside the value of the first record of segment 1
    std::fs::write(&seg, bytes).unwrap();
    let config = write_file_config(dir.path(), &store);
    let damaged = run_config(&config, &["get", "first"]);
    let told = String::from_utf8_lossy(&damaged.stderr);
    assert_eq!(
        damaged.status.code(),
        Some(3),
        "a damaged value is no miss: {told}"
    );
    assert!(told.contains("damaged") && told.contains("first"), "{told}");
    assert_eq!(run_config(&config, &["get", "second"]).stdout, b"y".repeat(100));
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
    let with_config = |args: &[&str]| run_config(&config, args);
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
    // The manager wrote it with local.ttl = 60: the dump carries that absolute expiry.
    let expiry: u64 = dump
        .strip_prefix("# uno-cache dump 3\nk\tvia manager\t")
        .and_then(|rest| rest.strip_suffix("\n# end 1\n"))
        .unwrap_or_else(|| panic!("unexpected dump {dump:?}"))
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        (now..=now + 60_000).contains(&expiry),
        "expiry {expiry} is not within 60 s after {now}"
    );
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

/// `stats` through a configuration runs in a process of its own that reads nothing: its hit
/// rates were always 0.000, and the table read as the application's cache missing every time
/// (found by review). The sizes, which are the levels', are still shown.
#[test]
fn a_config_stats_table_shows_the_sizes_but_no_hit_rate_of_a_run_that_read_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_file_config(dir.path(), &dir.path().join("store"));
    for key in ["a", "b"] {
        assert!(run_config(&config, &["set", key, "v"]).status.success());
        assert!(run_config(&config, &["get", key]).status.success());
    }
    let out = run_config(&config, &["stats"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(!table.contains("hit rate") && !table.contains("0.000"), "{table}");
    let local = table
        .lines()
        .find_map(|line| line.strip_prefix("local"))
        .unwrap_or_else(|| panic!("no local row in {table}"));
    assert_eq!(local.split_whitespace().next(), Some("2"), "{table}");
}

/// The `local max size` line of `stats` through `config`, and `local` of its `--json`.
fn local_bound_of(config: &std::path::Path) -> (String, serde_json::Value) {
    let out = run_config(config, &["stats"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{table}");
    let line = table
        .lines()
        .find_map(|line| line.strip_prefix("local max size: "))
        .unwrap_or_else(|| panic!("no local max size in {table}"))
        .to_owned();
    let out = run_config(config, &["stats", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (line, json["local"].clone())
}

/// The `memory tier max size:` line of `stats --config` (if any) and `--json`'s `memory`.
fn memory_tier_bound_of(config: &std::path::Path) -> (Option<String>, serde_json::Value) {
    let out = run_config(config, &["stats"]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{table}");
    let line = table
        .lines()
        .find_map(|line| line.strip_prefix("memory tier max size: "))
        .map(str::to_owned);
    let out = run_config(config, &["stats", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (line, json["memory"].clone())
}

/// `stats --dir` gives the store's size bound, `stats --config` gave none (found by review). It
/// gives the local level's: `local.max_size`, or for a file store without it the bound its
/// directory recorded (not the default the configuration implies), and for a memory L1 its
/// items and the bytes of `local.memory_max_mb`; in the table and in `--json`. The memory tier in
/// front of a file L1 gives its own.
#[test]
fn a_config_stats_shows_the_local_levels_size_bound_in_the_table_and_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let path = format!("{:?}", data.display().to_string());
    let config = write_config(
        dir.path(),
        &format!("[local]\ntype = \"file\"\npath = {path}\nmax_size = 48\n"),
    );
    assert!(run_config(&config, &["set", "k", "v"]).status.success());
    let (line, local) = local_bound_of(&config);
    assert_eq!(line, "48 MiB (50331648 bytes)");
    assert_eq!(local["max_size_bytes"], 48u64 << 20, "{local}");
    assert!(local.get("max_items").is_none(), "{local}");
    // The memory tier in front of it, on by default, has a bound of its own.
    let (line, memory) = memory_tier_bound_of(&config);
    assert_eq!(line.as_deref(), Some("10000 items, 64 MiB (67108864 bytes)"));
    assert_eq!(memory["max_items"], 10_000, "{memory}");
    assert_eq!(memory["max_size_bytes"], 64u64 << 20, "{memory}");
    let config = write_config(
        dir.path(),
        &format!("[local]\ntype = \"file\"\npath = {path}\nmemory_items = 0\n"),
    );
    let (line, memory) = memory_tier_bound_of(&config);
    assert_eq!(line, None, "a memory tier turned off has no bound");
    assert!(memory.get("max_items").is_none(), "{memory}");

    // No local.max_size: the store keeps the bound it recorded, 48 MiB, not the default 1024.
    let config = write_file_config(dir.path(), &data);
    let (line, local) = local_bound_of(&config);
    assert_eq!(line, "48 MiB (50331648 bytes)");
    assert_eq!(local["max_size_bytes"], 48u64 << 20, "{local}");

    let config = write_config(
        dir.path(),
        "[local]\ntype = \"memory\"\nmax_size = 500\nmemory_max_mb = 8\n",
    );
    let (line, local) = local_bound_of(&config);
    assert_eq!(line, "500 items, 8 MiB (8388608 bytes)");
    assert_eq!(local["max_items"], 500, "{local}");
    assert_eq!(local["max_size_bytes"], 8u64 << 20, "{local}");

    #[cfg(feature = "redb")]
    {
        let config = write_config(
            dir.path(),
            &format!(
                "[local]\ntype = \"redb\"\npath = {:?}\nmax_size = 32\n",
                dir.path().join("redb").display().to_string()
            ),
        );
        assert!(run_config(&config, &["set", "k", "v"]).status.success());
        let (line, local) = local_bound_of(&config);
        assert_eq!(line, "32 MiB (33554432 bytes)");
        assert_eq!(local["max_size_bytes"], 32u64 << 20, "{local}");
    }
}

/// A new user's mistake: a wrong Redis password in `hosts`. It used to pass silently (exit 0, L1
/// only, 0 errors in stats); now every manager command says what to fix on stderr and exits 2.
#[cfg(feature = "redis")]
#[test]
fn a_wrong_redis_password_makes_set_get_and_stats_exit_2_naming_the_host() {
    let server = support::RedisServer::with_password("right");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cache.toml");
    std::fs::write(
        &config,
        format!(
            "use_multi_level = true\n[local]\ntype = \"file\"\npath = {:?}\nmax_size = 16\n\
             [distributed]\nenabled = true\nhosts = [\"redis://:wrong@{}\"]\n",
            dir.path().join("data").display().to_string(),
            server.addr()
        ),
    )
    .unwrap();
    for args in [&["set", "k", "v"][..], &["get", "k"], &["stats"]] {
        let out = run_config(&config, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: one line: {stderr}");
        assert!(
            stderr.contains(&server.addr()) && stderr.contains("password"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("wrong@"), "{args:?}: {stderr}");
    }
    // Started degraded on purpose: L1 takes the write, and the refusal still fails the command.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("start_degraded_on_config_error = true\n");
    std::fs::write(&config, text).unwrap();
    let out = run_config(&config, &["set", "k", "v"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&server.addr()) && stderr.contains("password"),
        "{stderr}"
    );
    let stats = run_config(&config, &["stats"]);
    let stdout = String::from_utf8_lossy(&stats.stdout);
    assert!(stdout.contains("password"), "stats shows the refusal: {stdout}");
}

/// A duration past what the configuration takes fails the command with exit 2, naming the
/// field and the largest value accepted; serde's own words ("invalid type: integer … as i128")
/// said neither what was wrong nor what to write.
#[test]
fn a_config_duration_past_u64_max_seconds_exits_2_naming_the_field_and_the_range() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[local]\ntype = \"file\"\npath = {:?}\nttl = 99999999999999999999999\n",
            dir.path().join("data").display().to_string()
        ),
    );
    for args in [&["set", "k", "v"][..], &["get", "k"]] {
        let out = run_config(&config, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("local.ttl")
                && stderr.contains("at most 18446744073709551615")
                && !stderr.contains("i128"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn max_size_mb_with_a_config_is_used_and_recorded_by_the_manager_commands() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_file_config(dir.path(), &data);
    let out = run_config(&config, &["--max-size-mb", "3", "set", "k", "v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(max_size(&data), 3 << 20);
}

#[test]
fn a_config_whose_only_level_is_in_memory_is_refused_for_get_set_and_del() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[local]\ntype = \"memory\"\n");
    for args in [&["set", "k", "v"][..], &["get", "k"], &["del", "k"]] {
        let out = run_config(&config, args);
        let told = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {told}");
        assert!(
            told.contains("memory") && told.contains("nothing"),
            "{args:?}: {told}"
        );
    }
}

/// An L2 nobody listens on, behind a memory L1 and no replay queue: `fallback_on_error` hides
/// the failure from the call, but nothing durable took the write (the memory L1 dies with the
/// process), a delete left the key in L2, and a miss was never asked of L2. Each exits 2 naming
/// the host; none may pass as a success or a plain miss.
#[cfg(feature = "redis")]
#[test]
fn an_unreachable_l2_without_a_replay_queue_fails_set_del_and_get_naming_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "use_multi_level = true\n[local]\ntype = \"memory\"\n\
             [distributed]\nenabled = true\nhosts = [\"127.0.0.1:{port}\"]\n"
        ),
    );
    for args in [&["set", "k", "v"][..], &["del", "k"], &["get", "k"]] {
        let out = run_config(&config, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("127.0.0.1:{port}")),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

/// The same unreachable L2 behind a file L1: the write is durable in L1 and queued for replay,
/// so `set` succeeds, but says on stderr that L2 did not take it yet.
#[cfg(feature = "redis")]
#[test]
fn an_unreachable_l2_behind_a_file_l1_queues_the_set_for_replay_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = support::free_port();
    let config = write_config(
        dir.path(),
        &format!(
            "use_multi_level = true\n[local]\ntype = \"file\"\npath = {:?}\nmax_size = 16\n\
             [distributed]\nenabled = true\nhosts = [\"127.0.0.1:{port}\"]\n",
            data.display().to_string()
        ),
    );
    let out = run_config(&config, &["set", "k", "v"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("queued for replay"),
        "{stderr}"
    );
    assert!(data.join("replay.log").exists(), "the queue is on disk");
    assert_eq!(run(&data, &["get", "k"]).stdout, b"v", "L1 has the value");
    // A delete of that key waits behind the queued write without asking L2: queued too, and
    // said as well.
    let out = run_config(&config, &["del", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("queued for replay"), "{stderr}");
}

/// Through `--config` the manager opens the store: its open's removal is said on stderr too.
#[test]
fn a_config_command_whose_open_removed_a_damaged_segment_says_so_on_stderr() {
    let dir = store_whose_only_segment_header_is_damaged();
    let elsewhere = tempfile::tempdir().unwrap();
    let config = write_file_config(elsewhere.path(), dir.path());
    let out = run_config(&config, &["get", "first"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the entry went with the segment: {stderr}"
    );
    assert!(
        stderr.contains("removed 1 segment file") && stderr.contains("lost"),
        "{stderr}"
    );
}

/// `tls_system_roots` on a host whose system store has no usable root (a container without the
/// CA certificates package) is a setting to fix, not an outage: the command exits 2 saying so.
/// It was taken for an unreachable L2, and `set` exited 0 with the write queued for a replay no
/// run could ever make (found by review).
#[cfg(all(feature = "tls", feature = "redis"))]
#[test]
fn tls_system_roots_without_a_usable_root_fails_the_command_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[local]\npath = {:?}\n[distributed]\nenabled = true\nhosts = [\"rediss://127.0.0.1:1\"]\ntls_system_roots = true\n",
            dir.path().join("store").display().to_string()
        ),
    );
    let missing = dir.path().join("no-such-roots.pem");
    let out = bin()
        .env("SSL_CERT_FILE", &missing)
        .env("SSL_CERT_DIR", &missing)
        .arg("--config")
        .arg(&config)
        .args(["set", "k", "v"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("refuses this configuration") && stderr.contains("tls_system_roots"),
        "{stderr}"
    );
    assert!(!stderr.contains("queued"), "{stderr}");
}

/// `local.ttl` is the longest an entry lives in L1, and the manager's reads do not cap what they
/// find: `import` through a configuration stored a line without an expiry for ever, and one
/// dumped from a store with a longer TTL past it. Now each is held to local.ttl, as the
/// manager's `set` holds it (found by review).
#[test]
fn an_import_through_a_config_holds_every_entry_to_local_ttl() {
    use std::io::Write as _;
    use std::time::{SystemTime, UNIX_EPOCH};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let config = write_config(
        dir.path(),
        &format!("[local]\npath = {:?}\nttl = 60\n", store.display().to_string()),
    );
    let now_ms = || u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap();
    let a_day_on = now_ms() + 86_400_000;
    let dump = format!("# uno-cache dump 3\nforever\tv\nlong\tv\t{a_day_on}\n# end 2\n");
    let mut child = bin()
        .arg("--config")
        .arg(&config)
        .arg("import")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(dump.as_bytes()).unwrap();
    let imported = child.wait_with_output().unwrap();
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    let latest = now_ms() + 60_000;
    let dumped = run(&store, &["dump"]);
    let text = String::from_utf8(dumped.stdout).unwrap();
    for key in ["forever", "long"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{key}\t")))
            .unwrap_or_else(|| panic!("{key} not imported: {text}"));
        let expires: u64 = line
            .rsplit('\t')
            .next()
            .and_then(|f| f.parse().ok())
            .unwrap_or_else(|| panic!("{key} was stored without an expiry: {line:?}"));
        assert!(expires <= latest, "{key} lives past local.ttl: {line:?}");
    }
}

/// redb panics on a page it cannot parse; the store catches the panic and fails the call with an
/// error naming the file and what to do. The default panic hook printed the panic first
/// (`thread 'main' panicked at …/redb-…`), which a user reads as the tool crashing. The tool says
/// the error alone, and its exit code is the usual 2.
#[cfg(feature = "redb")]
#[test]
fn a_damaged_redb_page_is_an_error_without_a_panic_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("redb");
    let config = write_config(
        dir.path(),
        &format!(
            "[local]\ntype = \"redb\"\npath = {:?}\n",
            store.display().to_string()
        ),
    );
    assert!(run_config(&config, &["set", "k", "v"]).status.success());
    let file = store.join(uno_cache::REDB_FILE_NAME);
    let mut bytes = std::fs::read(&file).unwrap();
    // The first page after redb's header: the table tree's root, which the open reads.
    bytes[4096..8192].fill(0xA5);
    std::fs::write(&file, bytes).unwrap();
    let out = run_config(&config, &["get", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("damaged database file") && stderr.contains(&file.display().to_string()),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
