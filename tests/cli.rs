//! The `uno-cache` binary as a user runs it on a store directory: exit codes, dump/import round
//! trips, bad arguments, `import --durable` acknowledging only what survives a SIGKILL, damage
//! that `verify` and the other commands must name, a run under valgrind, and a hostile memcached
//! reply under a small address-space limit. Through a configuration file: `tests/cli_config.rs`.
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

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use cli_common::*;

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
    // 1e300, and the bound the refusal names, which is itself refused: the refusal must not
    // offer a value that is refused.
    for ttl in ["1e300", "1.8446744073709552e19"] {
        let huge = run(dir.path(), &["set", "k", "v", "--ttl", ttl]);
        let told = String::from_utf8_lossy(&huge.stderr).into_owned();
        assert_eq!(huge.status.code(), Some(2), "{told}");
        assert!(
            told.contains("too long; give less than 1.8446744073709552e19 seconds") && told.len() < 200,
            "{told}"
        );
    }
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
        format!("# uno-cache dump 3\n{lines}# end 2\n"),
        "a header line, the entries sorted by key, escaped, and an end line (an old dump, without the header, imports)"
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

/// storage-format.md: an entry line always has a TAB, so a key that starts with the header's
/// text is an entry, not a header.
#[test]
fn a_key_that_starts_like_the_dump_header_round_trips_through_dump_and_import() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to) = (dir.path().join("from"), dir.path().join("to"));
    assert!(run(&from, &["set", "# uno-cache dump 2", "v"]).status.success());
    assert!(run(&from, &["set", "other", "w"]).status.success());
    let dump = run(&from, &["dump"]);
    assert!(dump.status.success(), "{}", String::from_utf8_lossy(&dump.stderr));
    let imported = run_with_stdin(&to, &["import"], &dump.stdout);
    assert!(
        imported.status.success(),
        "{}",
        String::from_utf8_lossy(&imported.stderr)
    );
    assert_eq!(run(&to, &["get", "# uno-cache dump 2"]).stdout, b"v");
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

/// The bound in the unit `--max-size-mb` takes, with its bytes; `--json` has it too. The table
/// printed a bare `1073741824` beside a flag in MiB, and the JSON had no bound at all. The
/// segment size, which bounds a value and which a later bound does not change, is shown too.
#[test]
fn stats_gives_the_size_bound_and_segment_size_in_mib_with_their_bytes_and_in_json() {
    let dir = tempfile::tempdir().unwrap();
    let set = run(dir.path(), &["--max-size-mb", "64", "set", "a", "1"]);
    assert!(set.status.success(), "{}", String::from_utf8_lossy(&set.stderr));
    let table = String::from_utf8(run(dir.path(), &["stats"]).stdout).unwrap();
    let line = table
        .lines()
        .find(|line| line.trim().starts_with("max size"))
        .unwrap_or_else(|| panic!("no max size in {table}"));
    assert!(line.ends_with("64 MiB (67108864 bytes)"), "{line:?}");
    let stats = run(dir.path(), &["stats", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&stats.stdout).unwrap();
    assert_eq!(json["max_size_bytes"], 64u64 << 20);
    assert_eq!(json["segment_size_bytes"], 8u64 << 20);
    let segment = run(dir.path(), &["--max-size-mb", "1024", "stats"]).stdout;
    let segment = String::from_utf8(segment).unwrap();
    let line = segment
        .lines()
        .find(|line| line.trim().starts_with("segment size"))
        .unwrap_or_else(|| panic!("no segment size in {segment}"));
    // An eighth of the 64 MiB it was created with, not of the 1024 MiB bound now in use.
    assert!(line.ends_with(" 8 MiB (8388608 bytes)"), "{line:?}");
}

/// A count of one takes the singular: `verify` said "1 segments, 1 records checked" and `import`
/// "imported 1 entries".
#[test]
fn counts_of_one_are_singular_in_the_output() {
    let dir = tempfile::tempdir().unwrap();
    run(dir.path(), &["set", "k", "v"]);
    let verified = String::from_utf8(run(dir.path(), &["verify"]).stdout).unwrap();
    assert!(
        verified.starts_with("1 segment, 1 record checked, 0 damaged ranges (0 bytes)"),
        "{verified}"
    );
    let dump = run(dir.path(), &["dump"]).stdout;
    let to = tempfile::tempdir().unwrap();
    let imported = run_with_stdin(to.path(), &["import"], &dump);
    let stderr = String::from_utf8_lossy(&imported.stderr);
    assert!(
        stderr.contains("imported 1 entry, skipped 0 already expired"),
        "{stderr}"
    );
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
    let damaged = run(dir.path(), &["get", "first"]);
    assert_eq!(damaged.status.code(), Some(3), "a damaged value is no miss");
    assert!(
        String::from_utf8_lossy(&damaged.stderr).contains("damaged"),
        "{}",
        String::from_utf8_lossy(&damaged.stderr)
    );
    assert_eq!(
        run(dir.path(), &["get", "first"]).status.code(),
        Some(1),
        "once found damaged, the record is forgotten"
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

/// Unix milliseconds now.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn expiry_ms(entry: &uno_cache::Entry) -> Option<u64> {
    entry
        .expires_at
        .map(|t| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64)
}

#[test]
fn the_cli_keeps_the_size_bound_the_store_recorded() {
    use uno_cache::{FileStore, FileStoreOptions};
    let dir = tempfile::tempdir().unwrap();
    // The application sized this store at 1 MiB (128 KiB segments).
    FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(1))
        .unwrap()
        .close()
        .unwrap();
    // 3 MiB through the CLI, which has no --max-size-mb: the store's own bound holds, and the
    // import stops once it would evict what it stored.
    let mut lines = String::new();
    for i in 0..300 {
        lines.push_str(&format!("k{i:03}\t{}\n", "x".repeat(10 * 1024)));
    }
    let out = run_with_stdin(dir.path(), &["import"], lines.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("evicted")
            && stderr.contains("--max-size-mb (the store holds at most 1 MiB (1048576 bytes))"),
        "the bound in the flag's unit: {stderr}"
    );
    assert_eq!(max_size(dir.path()), 1 << 20);
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    let disk = store.stats().disk_bytes;
    assert!(
        disk <= (1 << 20) + 128 * 1024,
        "{disk} bytes on disk: the CLI used its own bound, not the store's 1 MiB"
    );
    assert_eq!(store.max_size(), 1 << 20, "and left the recorded bound alone");
}

#[test]
fn a_cli_set_does_not_shrink_a_store_sized_above_the_default() {
    use uno_cache::{FileStore, FileStoreOptions};
    let dir = tempfile::tempdir().unwrap();
    FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4096))
        .unwrap()
        .close()
        .unwrap();
    assert!(run(dir.path(), &["set", "k", "v"]).status.success());
    let stats = String::from_utf8(run(dir.path(), &["stats"]).stdout).unwrap();
    assert!(stats.contains(&(4096u64 << 20).to_string()), "{stats}");
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 4096 << 20);
}

#[test]
fn max_size_mb_overrides_the_recorded_bound_and_is_recorded() {
    use uno_cache::{FileStore, FileStoreOptions};
    let dir = tempfile::tempdir().unwrap();
    FileStore::open(dir.path(), FileStoreOptions::default().max_size_mb(4096))
        .unwrap()
        .close()
        .unwrap();
    // At least four of the store's 64 MiB segments (the bound of 4096 MiB chose them).
    let out = run(dir.path(), &["--max-size-mb", "512", "set", "k", "v"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    assert_eq!(store.max_size(), 512 << 20);
}

#[test]
fn dump_and_import_carry_each_entrys_absolute_expiry() {
    use uno_cache::{FileStore, FileStoreOptions, ManualClock};
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let store = FileStore::open(&src, FileStoreOptions::default()).unwrap();
    store
        .set(
            "short",
            b"twenty seconds",
            Some(std::time::Duration::from_secs(20)),
        )
        .unwrap();
    store
        .set("long", b"an hour", Some(std::time::Duration::from_secs(3600)))
        .unwrap();
    store.set("forever", b"no ttl", None).unwrap();
    let short_at = expiry_ms(&store.get_entry("short").unwrap().unwrap()).unwrap();
    let long_at = expiry_ms(&store.get_entry("long").unwrap().unwrap()).unwrap();
    store.close().unwrap();

    let dump = run(&src, &["dump"]);
    assert!(dump.status.success());
    let text = String::from_utf8(dump.stdout.clone()).unwrap();
    assert_eq!(
        text,
        format!(
            "# uno-cache dump 3\nforever\tno ttl\nlong\tan hour\t{long_at}\nshort\ttwenty seconds\t{short_at}\n# end 3\n"
        )
    );

    // Plus a line that expired long ago: skipped, and said so (an entry line of the dump all
    // the same, counted by its end line).
    let input = text.replace("# end 3\n", "stale\tgone\t1000\n# end 4\n");
    let dst = dir.path().join("dst");
    let out = run_with_stdin(&dst, &["import"], input.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("imported 3 entries, skipped 1 already expired"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The imported entries expire at the same absolute times: check on a clock set just before
    // and at the short entry's expiry.
    let clock = ManualClock::new(short_at - 1);
    let store = FileStore::open(
        &dst,
        FileStoreOptions::default().clock(std::sync::Arc::new(clock.clone())),
    )
    .unwrap();
    let short = store.get_entry("short").unwrap().expect("imported");
    assert_eq!(expiry_ms(&short), Some(short_at));
    assert_eq!(
        expiry_ms(&store.get_entry("long").unwrap().unwrap()),
        Some(long_at)
    );
    assert_eq!(store.get_entry("forever").unwrap().unwrap().expires_at, None);
    assert_eq!(store.get("stale").unwrap(), None);
    clock.set(short_at);
    assert_eq!(
        store.get("short").unwrap(),
        None,
        "expired on time, not permanent"
    );
    assert!(store.get("long").unwrap().is_some());
    store.close().unwrap();
}

#[test]
fn import_ttl_caps_dumped_expiries_and_applies_to_lines_without_one() {
    use uno_cache::{FileStore, FileStoreOptions};
    let dir = tempfile::tempdir().unwrap();
    let far = now_ms() + 86_400_000;
    // An old dump (no header, two fields) and a new line with a far expiry.
    let input = format!("old\tline\nfar\tvalue\t{far}\n");
    let before = now_ms();
    let out = run_with_stdin(dir.path(), &["import", "--ttl", "60"], input.as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let after = now_ms();
    let store = FileStore::open(dir.path(), FileStoreOptions::default()).unwrap();
    for key in ["old", "far"] {
        let at = expiry_ms(&store.get_entry(key).unwrap().unwrap()).unwrap();
        assert!(
            (before + 60_000..=after + 60_000).contains(&at),
            "{key}: expiry {at} is not 60 s after the import"
        );
    }
}

#[test]
fn a_dump_line_with_a_bad_expiry_is_refused_with_its_line_number() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_stdin(dir.path(), &["import"], b"# uno-cache dump 2\na\t1\nb\t2\tsoon\n");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 3") && stderr.contains("expiry"), "{stderr}");
    assert!(
        stderr.contains("after importing 1 entry"),
        "how much was stored: {stderr}"
    );
}

/// Users run their programs under valgrind; the store must not die there. rustix's own vDSO
/// parser, which reading the coarse clock went through, faults under valgrind (rustix issue
/// 1559), so rustix is built on libc, whose clock valgrind knows.
#[test]
fn the_cli_reads_an_expiring_entry_under_valgrind_without_a_signal() {
    support::require("valgrind", "valgrind");
    let dir = tempfile::tempdir().unwrap();
    let under_valgrind = |args: &[&str]| {
        Command::new("valgrind")
            .args(["--tool=none", "-q", "--error-exitcode=99"])
            .arg(env!("CARGO_BIN_EXE_uno-cache"))
            .arg("--dir")
            .arg(dir.path())
            .args(args)
            .output()
            .unwrap()
    };
    let set = under_valgrind(&["set", "k", "hello", "--ttl", "3600"]);
    assert!(set.status.success(), "{set:?}");
    // A hit on an entry with an expiry reads the clock.
    let hit = under_valgrind(&["get", "k"]);
    assert_eq!(
        (hit.status.code(), hit.stdout.as_slice()),
        (Some(0), &b"hello"[..]),
        "{}",
        String::from_utf8_lossy(&hit.stderr)
    );
}

/// Runs the binary with its stdout on `/dev/full`: every write to it fails (ENOSPC), as it does
/// on a full disk or, with EPIPE, a closed pipe (`uno-cache stats | head -1`).
fn run_to_full_stdout(dir: &Path, args: &[&str]) -> Output {
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    bin()
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

#[test]
fn a_stdout_that_cannot_be_written_is_an_error_exit_2_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["set", "a", "1"]).status.success());
    for args in [
        &["stats"][..],
        &["stats", "--json"],
        &["verify"],
        &["compact"],
        &["get", "a"],
        &["dump"],
    ] {
        let out = run_to_full_stdout(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("writing stdout"), "{args:?}: {stderr}");
    }
    // Nothing was lost on the way.
    assert_eq!(run(dir.path(), &["get", "a"]).stdout, b"1");
}

/// `import --durable`'s acknowledgements go to stdout: when one cannot be written the import
/// stops, and like every other stop it says how much of the dump it stored (the entry whose
/// acknowledgement failed is stored and durable, but no `ok` line says so).
#[test]
fn a_durable_import_whose_acknowledgement_cannot_be_written_says_how_many_entries_it_stored() {
    use std::io::Write as _;
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
    let mut child = bin()
        .arg("--dir")
        .arg(dir.path())
        .args(["import", "--durable"])
        .stdin(Stdio::piped())
        .stdout(Stdio::from(full))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"a\t1\nb\t2\n").unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("writing stdout"), "{stderr}");
    assert!(
        stderr.contains("after importing 1 entry"),
        "the stop does not say what was stored: {stderr}"
    );
    assert_eq!(run(dir.path(), &["get", "a"]).stdout, b"1");
}

/// `--version` and `--help` print to stdout too: clap's own exit ignored a failed write and
/// exited 0 with nothing printed. Written where they can be, they still exit 0.
#[test]
fn version_and_help_that_cannot_be_written_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["--version"][..], &["--help"], &["get", "--help"]] {
        let out = run_to_full_stdout(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("writing stdout"), "{args:?}: {stderr}");
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty(), "{args:?}");
    }
    // A refused command line still exits 2, its usage on stderr.
    let out = run(dir.path(), &["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-command"));
}

/// A reply header that claims a body of a gibibyte (a stream out of step, or a port that is not
/// memcached) must cost memory only as the body's bytes arrive: the client used to allocate the
/// whole body first, which under a 600 MiB address-space limit (a small machine, a container)
/// aborted the process instead of failing the call. (One malloc arena per thread reserves
/// 64 MiB of address space: two arenas keep the binary's own needs well under the limit.)
#[cfg(feature = "memcached")]
#[test]
fn a_reply_claiming_a_gibibyte_body_is_an_error_not_an_abort_on_a_small_machine() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = server.local_addr().unwrap();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = std::sync::Arc::clone(&answered);
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { continue };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut request = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut request);
            let mut reply = [0u8; 24];
            reply[0] = 0x81; // response magic
            reply[8..12].copy_from_slice(&(1u32 << 30).to_be_bytes());
            let _ = conn.write_all(&reply);
            let _ = conn.write_all(&[0u8; 64]);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cache.toml");
    std::fs::write(
        &config,
        format!(
            "use_multi_level = true\n[local]\ntype = \"file\"\npath = {:?}\nmax_size = 16\n\
             [distributed]\nenabled = true\ntype = \"memcached\"\nhosts = [\"{addr}\"]\n\
             start_degraded_on_config_error = true\n",
            dir.path().join("data").display().to_string(),
        ),
    )
    .unwrap();
    // The store must exist: `get` refuses a path with no store before it asks any level.
    let data = dir.path().join("data");
    assert!(run(&data, &["--max-size-mb", "16", "set", "other", "v"])
        .status
        .success());
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 614400 && exec \"$0\" --config \"$1\" get k")
        .env("MALLOC_ARENA_MAX", "2")
        .arg(env!("CARGO_BIN_EXE_uno-cache"))
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(1 | 2)),
        "a miss or an error, not {:?}: {stderr}",
        out.status
    );
    assert!(
        answered.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the call reached the server"
    );
}

#[test]
fn a_bad_ttl_is_refused_before_the_store_is_opened_or_changed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert!(run(&store, &["--max-size-mb", "64", "set", "k", "v"])
        .status
        .success());
    let meta_before = std::fs::read(store.join("uno-cache.meta")).unwrap();
    for ttl in ["0", "-1", "1e-10", "nan"] {
        let ttl = format!("--ttl={ttl}");
        for args in [
            &["--max-size-mb", "1", "set", "k", "v", &ttl][..],
            &["--max-size-mb", "1", "import", &ttl],
        ] {
            let out = run_with_stdin(&store, args, b"a\tb\n");
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("--ttl"),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert_eq!(max_size(&store), 64 << 20, "a refused call recorded its bound");
    assert_eq!(std::fs::read(store.join("uno-cache.meta")).unwrap(), meta_before);
    // A mistyped directory is not created by a call refused for its arguments.
    let typo = dir.path().join("typo");
    assert_eq!(
        run(&typo, &["set", "k", "v", "--ttl", "0"]).status.code(),
        Some(2)
    );
    assert!(!typo.exists());
}

/// `verify`'s exit code, and all it printed (stdout, then stderr).
fn verify(dir: &Path) -> (Option<i32>, String) {
    let out = run(dir, &["verify"]);
    let told = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), told)
}

/// A segment whose header no longer checks is removed by the open that `verify` itself does:
/// its records are gone, and `verify` must say so and exit 3, not report a clean store.
#[test]
fn verify_exits_3_and_names_a_segment_its_own_open_removed() {
    let dir = store_whose_only_segment_header_is_damaged();
    let (code, told) = verify(dir.path());
    assert_eq!(code, Some(3), "{told}");
    assert!(
        told.contains("1 segment file") && told.contains("removed"),
        "{told}"
    );
    let aside = dir.path().join(format!("{:020}.damaged", 1));
    assert!(aside.exists(), "the open destroyed the file it found damaged");
    // `stats` on the same open shows it too (the file is gone, so the next open is clean).
    let stats = String::from_utf8(run(dir.path(), &["stats"]).stdout).unwrap();
    assert!(stats.contains("segments removed"), "{stats}");
}

/// The same segment, whose hint cannot be kept as `.lost` (a directory stands in the way): the
/// open leaves it in place, unloaded, and `verify` must still say its records are lost.
#[test]
fn verify_exits_3_and_names_a_damaged_segment_its_own_open_left_in_place() {
    let dir = store_whose_only_segment_header_is_damaged();
    std::fs::create_dir(dir.path().join(format!("{:020}.lost", 1))).unwrap();
    let (code, told) = verify(dir.path());
    assert_eq!(code, Some(3), "{told}");
    assert!(told.contains("left 1 segment file"), "{told}");
    assert!(dir.path().join(format!("{:020}.seg", 1)).exists());
}

/// A `.lost` file names the keys of a segment lost to damage, held as deleted so that their
/// overwritten versions stay gone. The open that finds it damaged removes it, and an overwritten
/// value is served again: `verify`, on that very open, must say so and exit 3, not report a
/// clean store.
#[test]
fn verify_exits_3_and_names_a_damaged_lost_file_its_own_open_removed() {
    let dir = tempfile::tempdir().unwrap();
    // Each run writes to a segment of its own: `k`'s old value in 1, its new one in 3.
    for (key, value) in [("k", "old"), ("other", "x"), ("k", "new")] {
        assert!(run(dir.path(), &["set", key, value]).status.success());
    }
    let newest = dir.path().join(format!("{:020}.seg", 3));
    let mut bytes = std::fs::read(&newest).unwrap();
    bytes[16] ^= 0xff; // the segment id in the header: its CRC no longer matches
    std::fs::write(&newest, bytes).unwrap();
    // This open keeps segment 3's hint as `.lost`, which holds `k` as deleted.
    assert_eq!(run(dir.path(), &["get", "k"]).status.code(), Some(1));
    let lost = dir.path().join(format!("{:020}.lost", 3));
    let mut bytes = std::fs::read(&lost).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&lost, bytes).unwrap();

    let (code, told) = verify(dir.path());
    assert_eq!(code, Some(3), "{told}");
    assert!(told.contains("1 damaged *.lost file"), "{told}");
    assert!(
        !lost.exists(),
        "the layout this test needs: the open removed the file"
    );
}

/// Any command's open removes a segment whose header no longer checks, and the next `verify`
/// cannot see it any more: the command that opened the store says so on stderr, or the loss
/// goes unnoticed (a `stats` with fewer entries, a `get` answering absent). `dump` also exits 3
/// then (`cli_dump_format`).
#[test]
fn a_command_whose_open_removed_a_damaged_segment_says_so_on_stderr() {
    let dir = store_whose_only_segment_header_is_damaged();
    let out = run(dir.path(), &["stats"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("removed 1 segment file") && stderr.contains("lost"),
        "{stderr}"
    );
}

/// A directory where a segment file should be (a restore gone wrong, a user's `mkdir`): every
/// command exits 2 naming the path and saying what to do, and nothing else is touched.
#[test]
fn a_directory_in_place_of_a_segment_is_an_error_naming_it_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["set", "a", "1"]).status.success());
    let seg = dir.path().join(format!("{:020}.seg", 1));
    std::fs::remove_file(&seg).unwrap();
    std::fs::create_dir(&seg).unwrap();
    for args in [&["verify"][..], &["get", "a"], &["set", "b", "2"]] {
        let out = run(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&seg.display().to_string()) && stderr.contains("move it out"),
            "{args:?}: {stderr}"
        );
    }
    assert!(seg.is_dir(), "the directory is left for the user to move");
}

/// `compact` rewrites the oldest segment even if damaged, and the damage goes with it: a later
/// `verify` passes and a `get` of the lost key exits 1. So `compact` is where it must be said.
#[test]
fn compact_that_drops_damaged_records_with_the_oldest_segment_says_so_and_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        uno_cache::FileStoreOptions::default()
            .segment_size(64 * 1024)
            .background_threads(false)
    };
    let store = uno_cache::FileStore::open(dir.path(), options()).unwrap();
    store.set("victim", b"a value that rots", None).unwrap();
    let mut i = 0;
    while store.stats().segments < 2 {
        store.set(&format!("filler-{i}"), &[7u8; 1000], None).unwrap();
        i += 1;
    }
    for j in 0..i - 1 {
        store.delete(&format!("filler-{j}")).unwrap();
    }
    store.close().unwrap();
    let seg = dir.path().join(format!("{:020}.seg", 1));
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(4).position(|w| w == b"rots").unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();

    let out = run(dir.path(), &["compact"]);
    let told = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{told}");
    assert!(told.contains("damaged") && told.contains("lost"), "{told}");
    // Gone for good, as the message said: the next compaction and `verify` find nothing.
    assert_eq!(run(dir.path(), &["compact"]).status.code(), Some(0));
    assert_eq!(verify(dir.path()).0, Some(0));
}

/// Damage to the metadata file is damage like any other: `verify` exits 3 and names the file.
#[test]
fn verify_exits_3_on_a_damaged_metadata_file() {
    let dir = tempfile::tempdir().unwrap();
    assert!(run(dir.path(), &["set", "k", "v"]).status.success());
    let meta = dir.path().join("uno-cache.meta");
    let mut bytes = std::fs::read(&meta).unwrap();
    bytes[32] ^= 0xff; // a byte of the base's CRC
    std::fs::write(&meta, bytes).unwrap();
    let (code, told) = verify(dir.path());
    assert_eq!(code, Some(3), "{told}");
    assert!(told.contains("uno-cache.meta"), "{told}");
}

/// A missing or mistyped `--dir` (or `local.path`) must not become a new, empty store that
/// `get` misses in and `verify` passes: the commands that only read (or delete) refuse it and
/// create nothing. Only `set` and `import` make a store.
#[test]
fn commands_that_read_refuse_a_path_with_no_store_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("typo");
    let config = write_file_config(dir.path(), &typo);
    for args in [
        &["get", "k"][..],
        &["del", "k"],
        &["stats"],
        &["verify"],
        &["compact"],
        &["dump"],
    ] {
        let by_dir = run(&typo, args);
        let by_config = run_config(&config, args);
        for (how, out) in [("--dir", by_dir), ("--config", by_config)] {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{how} {args:?}: {stderr}");
            assert!(
                stderr.contains("no store at") && stderr.contains(&typo.display().to_string()),
                "{how} {args:?}: {stderr}"
            );
            assert!(!typo.exists(), "{how} {args:?} created {}", typo.display());
        }
    }
    // An empty directory is no store either.
    std::fs::create_dir(&typo).unwrap();
    assert_eq!(run(&typo, &["verify"]).status.code(), Some(2));
    assert_eq!(std::fs::read_dir(&typo).unwrap().count(), 0, "left empty");
}

/// A directory that holds only a replay queue (the `offline.replay_dir` of a memory L1, or a
/// `--dir` pointed at it) has no store, though it is not empty: the store's open takes the
/// queue's files for an empty directory. `verify` created an empty store there and passed.
#[test]
fn commands_that_read_refuse_a_directory_that_holds_only_a_replay_queue() {
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("queue");
    let replay =
        uno_cache::replay::ReplayQueue::open(&queue, uno_cache::replay::ReplayOptions::default()).unwrap();
    drop(replay);
    let before: Vec<_> = std::fs::read_dir(&queue)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!before.is_empty());
    for args in [&["get", "k"][..], &["stats"], &["verify"], &["dump"]] {
        let out = run(&queue, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("no store at"), "{args:?}: {stderr}");
        assert!(!queue.join("uno-cache.meta").exists(), "{args:?} created a store");
    }
}

/// `import` reads a line at a time, and a line longer than any dump line the store could hold
/// (its segment size, escaped) stops it with an error instead of growing a buffer until the
/// process runs out of memory (`uno-cache import < /dev/zero`).
#[test]
fn import_refuses_a_line_longer_than_the_store_could_hold() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    uno_cache::FileStore::open(
        &store,
        uno_cache::FileStoreOptions::default().segment_size(64 * 1024),
    )
    .unwrap()
    .close()
    .unwrap();
    let mut input = b"before\tok\n".to_vec();
    input.extend(std::iter::repeat_n(b'a', 2 << 20)); // 2 MiB, no newline
    let out = run_with_stdin(&store, &["import"], &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("longer than") && stderr.contains("after importing 1"),
        "{stderr}"
    );
    assert_eq!(run(&store, &["get", "before"]).stdout, b"ok");
}
