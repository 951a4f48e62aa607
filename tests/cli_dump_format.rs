//! The dump format as storage-format.md ("Dump format") documents it, read by `uno-cache import`:
//! a version-3 dump built by hand from the document, the end line that tells a whole dump from
//! one cut at a line break, the older versions that still import, a `dump` whose reader goes
//! away, and one that damage may have taken entries from.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "cli_common/mod.rs"]
mod cli_common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Output, Stdio};

use cli_common::*;

fn import(dir: &Path, input: &[u8]) -> Output {
    run_with_stdin(dir, &["import"], input)
}

/// Unix milliseconds an hour from now.
fn in_an_hour_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    u64::try_from(now.as_millis()).unwrap() + 3_600_000
}

/// A version-3 dump of three entries, as `dump` writes it.
fn dump_of_three(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    for (key, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
        assert!(run(&src, &["set", key, value]).status.success());
    }
    let dump = run(&src, &["dump"]);
    assert_eq!(dump.status.code(), Some(0));
    assert_eq!(
        dump.stdout, b"# uno-cache dump 3\na\t1\nb\t2\nc\t3\n# end 3\n",
        "the documented layout"
    );
    dump.stdout
}

#[test]
fn a_hand_built_version_3_dump_in_the_documented_layout_imports() {
    let dir = tempfile::tempdir().unwrap();
    let far = in_an_hour_ms();
    // Header; entries with and without an expiry, escapes, a key that starts with `#`, a
    // comment, an empty line and an expired entry (an entry line all the same); the end line
    // counts the four entry lines.
    let dump = format!(
        "# uno-cache dump 3\nplain\tvalue\nta\\tb\tline\\nbreak\\x00\t{far}\n# a comment\n\n\
         #hash\tkey\nstale\tgone\t1000\n# end 4\n"
    );
    let out = import(dir.path(), dump.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("imported 3 entries, skipped 1 already expired"),
        "{stderr}"
    );
    assert!(!stderr.contains("note"), "a checked end needs no note: {stderr}");
    assert_eq!(run(dir.path(), &["get", "plain"]).stdout, b"value");
    assert_eq!(run(dir.path(), &["get", "ta\tb"]).stdout, b"line\nbreak\x00");
    assert_eq!(run(dir.path(), &["get", "#hash"]).stdout, b"key");
    assert_eq!(run(dir.path(), &["get", "stale"]).status.code(), Some(1));
}

/// A dump cut exactly at a line break is whole lines, and imported as a complete (smaller) dump
/// without a word. Every such cut of a version-3 dump is refused: its end line is missing.
/// The lines before the cut are stored, and the error says how many.
#[test]
fn a_version_3_dump_cut_at_any_line_break_is_refused_saying_what_it_stored() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dump_of_three(dir.path());
    let breaks: Vec<usize> = (0..whole.len()).filter(|&i| whole[i] == b'\n').collect();
    // Every cut but the one after the end line: after the header, after each entry line.
    for (lines, &at) in breaks[..breaks.len() - 1].iter().enumerate() {
        let store = dir.path().join(format!("cut-{lines}"));
        let out = import(&store, &whole[..=at]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "cut after line {}: {stderr}",
            lines + 1
        );
        assert!(
            stderr.contains(&format!("ends after line {} without", lines + 1))
                && stderr.contains("cut short")
                && stderr.contains(&format!(
                    "after importing {lines} {}",
                    if lines == 1 { "entry" } else { "entries" }
                )),
            "{stderr}"
        );
        let dumped = String::from_utf8(run(&store, &["dump"]).stdout).unwrap();
        assert_eq!(
            dumped.lines().count(),
            lines + 2,
            "the lines before the cut are stored: {dumped}"
        );
    }
}

/// With `--durable`, the lines before the cut were acknowledged one by one as they were stored;
/// the refusal comes at the end, and says they are on disk.
#[test]
fn a_durable_import_of_a_cut_version_3_dump_acknowledges_the_lines_before_the_cut_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dump_of_three(dir.path());
    let cut = b"# uno-cache dump 3\na\t1\nb\t2\n";
    assert!(whole.starts_with(cut));
    let dst = dir.path().join("dst");
    let out = run_with_stdin(&dst, &["import", "--durable"], cut);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(out.stdout, b"ok\ta\nok\tb\n");
    assert!(
        stderr.contains("after importing 2 entries (each on disk before its `ok` line)"),
        "{stderr}"
    );
}

/// An end line whose count is not the number of entry lines before it: a line was lost from
/// the middle (or added by an edit that did not correct the count), or it is no end line.
#[test]
fn a_version_3_dump_whose_end_line_does_not_count_its_entries_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let whole = String::from_utf8(dump_of_three(dir.path())).unwrap();
    for (input, says) in [
        (
            whole.replace("b\t2\n", ""),
            "says it has 3 entries, but 2 entry lines came before it",
        ),
        (
            whole.replace("# end 3", "# end 2"),
            "says it has 2 entries, but 3 entry lines",
        ),
        (whole.replace("# end 3", "# end three"), "is no end line"),
        (whole.replace("# end 3", "# end +3"), "is no end line"),
        (whole.replace("# end 3", "# end"), "is no end line"),
    ] {
        let store = tempfile::tempdir().unwrap();
        let out = import(store.path(), input.as_bytes());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{input:?}: {stderr}");
        assert!(stderr.contains(says), "{input:?}: {stderr}");
    }
}

/// The end line ends the dump: what follows is refused, a second dump joined to it (whose own
/// cut could not be seen), or a blank line, which is named as one, with what to do.
#[test]
fn input_after_a_version_3_dumps_end_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dump_of_three(dir.path());
    let joined = "line 6: input after the dump's end line (line 5)";
    let blank = "line 6: an empty line after the dump's end line (line 5); a dump ends there, so delete the lines after it";
    for (tail, says) in [
        (&whole[..], joined),
        (b"\n", blank),
        (b"\r\n", blank),
        (b"d\t4\n", joined),
        (b"# end 3\n", joined),
    ] {
        let store = tempfile::tempdir().unwrap();
        let mut input = whole.clone();
        input.extend_from_slice(tail);
        let out = import(store.path(), &input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{stderr}");
        assert_eq!(run(store.path(), &["get", "d"]).status.code(), Some(1));
    }
    // A second header before the end line: the first dump was cut short, then another joined.
    let store = tempfile::tempdir().unwrap();
    let mut input = whole[..whole.len() - b"# end 3\n".len()].to_vec();
    input.extend_from_slice(&whole);
    let out = import(store.path(), &input);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("line 5: a second dump header"), "{stderr}");
}

/// A version-3 header that is not the first line (a blank line an editor put before it, a
/// version-2 dump in front of it), and a dump an editor saved with a byte-order mark, are
/// refused with what is wrong: they were called "a second dump header" and "a bad entry line".
#[test]
fn a_version_3_header_not_on_line_1_and_a_byte_order_mark_are_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let whole = dump_of_three(dir.path());
    let mut blank_first = b"\n".to_vec();
    blank_first.extend_from_slice(&whole);
    let mut v2_first = b"# uno-cache dump 2\nz\t9\n".to_vec();
    v2_first.extend_from_slice(&whole);
    let mut marked = "\u{feff}".as_bytes().to_vec();
    marked.extend_from_slice(&whole);
    for (input, says) in [
        (blank_first, "line 2: a version-3 dump header, not on line 1"),
        (v2_first, "line 3: a version-3 dump header, not on line 1"),
        (marked, "line 1 starts with a byte-order mark"),
    ] {
        let store = tempfile::tempdir().unwrap();
        let out = import(store.path(), &input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(says), "{says}: {stderr}");
        assert!(!stderr.contains("second dump header"), "{stderr}");
    }
}

/// Version-2 dumps (no end line) and older ones (no header) import as before, and say that a
/// cut at a line break cannot be found in them.
#[test]
fn version_2_and_headerless_dumps_still_import_with_a_note_that_their_end_is_unchecked() {
    let far = in_an_hour_ms();
    for input in [
        format!("# uno-cache dump 2\na\t1\nb\t2\t{far}\n"),
        // Two version-2 dumps joined import as one, as they did.
        format!("# uno-cache dump 2\na\t1\n# uno-cache dump 2\nb\t2\t{far}\n"),
        "a\t1\nb\t2\n".to_owned(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = import(dir.path(), input.as_bytes());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{input:?}: {stderr}");
        assert!(
            stderr.contains("imported 2 entries")
                && stderr.contains("no end line")
                && stderr.contains("cannot be checked"),
            "{input:?}: {stderr}"
        );
        assert_eq!(run(dir.path(), &["get", "b"]).stdout, b"2");
    }
}

/// `uno-cache dump | head`: the reader goes away mid-dump. The dump stops with exit 2 saying so
/// (no panic, no SIGPIPE death), and what it wrote has no end line.
#[test]
fn a_dump_whose_reader_closes_the_pipe_early_exits_2_saying_the_dump_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    // Far more than a pipe holds (64 KiB), so writes go on after the reader is gone.
    let mut input = b"# uno-cache dump 3\n".to_vec();
    for i in 0..2000 {
        input.extend_from_slice(format!("key-{i:04}\t{}\n", "v".repeat(200)).as_bytes());
    }
    input.extend_from_slice(b"# end 2000\n");
    assert!(import(dir.path(), &input).status.success());
    let mut child = bin()
        .arg("--dir")
        .arg(dir.path())
        .arg("dump")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "# uno-cache dump 3\n");
    // The reader is dropped here, as `head -1` exits after its line.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("writing stdout") && stderr.contains("the dump is incomplete"),
        "{stderr}"
    );
}

/// The open before the dump removed a segment whose header was damaged: the dump lacks its
/// entries. That was only a note on stderr, and the dump exited 0 as a whole backup does; it
/// exits 3 (as `verify` does on the same damage), its end line written.
#[test]
fn a_dump_whose_open_removed_a_damaged_segment_exits_3() {
    let dir = store_whose_only_segment_header_is_damaged();
    let out = run(dir.path(), &["dump"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("removed 1 segment file") && stderr.contains("may be missing entries"),
        "{stderr}"
    );
    assert_eq!(out.stdout, b"# uno-cache dump 3\n# end 0\n");
    // The next open finds the store clean, and so does its dump.
    assert_eq!(run(dir.path(), &["dump"]).status.code(), Some(0));
}

/// `import --durable` answers every entry line, in order: `ok` once it is on disk, `expired` for
/// one skipped as already expired. The expired line had no answer, so a feeder that waits for
/// each line's answer before sending the next hung there, and the answers no longer lined up
/// with the lines.
#[test]
fn a_durable_import_answers_every_entry_line_including_an_expired_one() {
    let dir = tempfile::tempdir().unwrap();
    let far = in_an_hour_ms();
    let input =
        format!("# uno-cache dump 3\na\t1\nstale\\tkey\tgone\t1000\n# comment\n\nb\t2\t{far}\n# end 3\n");
    let out = run_with_stdin(dir.path(), &["import", "--durable"], input.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\ta\nexpired\tstale\\tkey\nok\tb\n"
    );
    assert_eq!(run(dir.path(), &["get", "stale\tkey"]).status.code(), Some(1));
}

/// `import --help` said that any dump without its end line was cut short and refused, where a
/// version-2 or headerless dump imports with a note (found by walking the README).
#[test]
fn import_help_says_only_a_version_3_dump_is_refused_without_its_end_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["import", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{help}");
    assert!(
        help.contains("A version-3 dump without its `# end N` line")
            && help.contains("Older dumps have no end line: they import, with a note"),
        "{help}"
    );
}

/// An empty input (`dump > backup.tsv` that failed before its header: a mistyped `--dir`) was
/// imported as an empty dump of the headerless kind, exit 0; every dump of version 3 has its
/// header and end line, so it is refused (found by walking the README).
#[test]
fn an_empty_input_is_refused_as_no_dump_and_makes_no_store() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_stdin(dir.path(), &["import"], b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the input is empty") && stderr.contains("take the dump again"),
        "{stderr}"
    );
    // Refused before the store was opened: no store was made in the new directory.
    let stats = run(dir.path(), &["stats"]);
    assert_eq!(
        stats.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&stats.stdout)
    );
    // A dump of an empty store is not empty: it imports.
    let empty_store = tempfile::tempdir().unwrap();
    assert!(run(empty_store.path(), &["set", "k", "v"]).status.success());
    assert!(run(empty_store.path(), &["del", "k"]).status.success());
    let dump = run(empty_store.path(), &["dump"]);
    assert_eq!(dump.status.code(), Some(0));
    assert_eq!(dump.stdout, b"# uno-cache dump 3\n# end 0\n");
    let out = run_with_stdin(dir.path(), &["import"], &dump.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An import refused at its first line (a dump of another version, a line that is no dump
/// line, an input that ends inside it) had already created the store in a new `--dir`: a
/// refused call left a new, empty store behind (found by review). Line 1 is read and checked
/// before the store is opened, as an empty input is; a first line the import takes still
/// imports, one longer than that check reads included.
#[test]
fn an_import_refused_at_its_first_line_makes_no_store_in_a_new_dir() {
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("new");
    for (input, says) in [
        (
            &b"# uno-cache dump 4\n# end 0\n"[..],
            "line 1: a dump of version 4",
        ),
        (b"a line with no tab\n", "line 1: expected key<TAB>value"),
        (b"k\tv", "stdin line 1 has no end of line"),
        (
            "\u{feff}# uno-cache dump 3\n".as_bytes(),
            "line 1 starts with a byte-order mark",
        ),
        (b"k\t\\q\n", "line 1: value:"),
        (b"\xff\tv\n", "stdin line 1: not UTF-8"),
        (b"\tv\n", "line 1: invalid key \"\": the key is empty"),
    ] {
        for durable in [false, true] {
            let args: &[&str] = if durable {
                &["import", "--durable"]
            } else {
                &["import"]
            };
            let out = run_with_stdin(&new, args, input);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{says}: {stderr}");
            assert!(
                stderr.contains(says) && stderr.contains("after importing 0 entries"),
                "{says}: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{says}: nothing was acknowledged");
            assert!(
                !new.exists(),
                "{says}: the refused import created {}",
                new.display()
            );
        }
    }
    // A headerless dump whose first line is longer than the check before the open reads: the
    // import reads it whole, from the bytes read before the open on.
    let value = "v".repeat(100 * 1024);
    let out = run_with_stdin(&new, &["import"], format!("big\t{value}\nk\tv\n").as_bytes());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(run(&new, &["get", "big"]).stdout, value.as_bytes());
    assert_eq!(run(&new, &["get", "k"]).stdout, b"v");
}
