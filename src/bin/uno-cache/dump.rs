//! `dump` and `import`: a store's live entries as text lines, and back (storage-format.md,
//! "Dump format").

use std::io::{self, BufRead, Write};
use std::time::{Duration, UNIX_EPOCH};

use uno_cache::{Clock, FileStore, ManualClock, SystemClock};

use crate::escape;

/// Writes the dump of `store` to stdout; `true` if it left out damaged records (said on stderr).
pub fn dump(store: &FileStore) -> Result<bool, String> {
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    let mut keys = store.keys();
    keys.sort_unstable();
    // Counted before the reads below, which take the damaged records they find out of the index.
    let unnamed = store.unlisted_damaged_entries();
    let mut written = 0u64;
    // A dump that stops here has no end line, so `import` refuses it as cut short.
    let failed = |e: io::Error| {
        format!("writing stdout: {e}; the dump is incomplete (it has no end line, so `import` refuses it)")
    };
    writeln!(out, "{DUMP_HEADER}").map_err(failed)?;
    let mut damaged = Vec::new();
    for key in keys {
        let corrupt = store.corrupt_reads();
        // A key can expire or be evicted between listing and reading: skip it.
        let found = store.get_entry(&key).map_err(|e| e.to_string())?;
        if store.corrupt_reads() > corrupt {
            damaged.push(key);
            continue;
        }
        let Some(entry) = found else {
            continue;
        };
        let line = escape::dump_line(key.as_bytes(), &entry.value, expires_at_ms(entry.expires_at));
        writeln!(out, "{line}").map_err(failed)?;
        written = written.saturating_add(1);
    }
    writeln!(out, "{DUMP_END_PREFIX}{written}")
        .and_then(|()| out.flush())
        .map_err(failed)?;
    if damaged.is_empty() && unnamed == 0 {
        return Ok(false);
    }
    // Counted as misses, they left the dump without a word, and a backup was taken as whole.
    if !damaged.is_empty() {
        err!(
            "uno-cache: damaged: {} could not be read and {} not in the dump: {}; the rest of the dump is complete\n",
            crate::count(damaged.len() as u64, "record", "records"),
            if damaged.len() == 1 { "is" } else { "are" },
            damaged
                .iter()
                .map(|k| escape::escape(k.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    // Never listed at all: their keys are damaged too.
    if unnamed > 0 {
        err!(
            "uno-cache: damaged: {} could not be read either, so {} not in the dump and cannot be named; `verify` says which segments hold damage; the rest of the dump is complete\n",
            crate::count(unnamed, "record whose key", "records whose keys"),
            if unnamed == 1 { "it is" } else { "they are" },
        );
    }
    Ok(true)
}

/// The longest line a dump of `store` can have: every byte of the key and of the value (no
/// larger than a segment) escaped as `\xHH`, two TABs, an expiry of up to 20 digits, a CR.
fn max_dump_line(store: &FileStore) -> u64 {
    let key = u64::try_from(uno_cache::MAX_KEY_LEN).unwrap_or(u64::MAX);
    key.saturating_add(store.segment_size())
        .saturating_mul(4)
        .saturating_add(2 + 20 + 1)
}

/// The first line of a dump. It has no TAB, so an importer that predates expiries refuses the
/// dump at line 1 instead of reading `value<TAB>expiry` as a value.
const DUMP_HEADER: &str = "# uno-cache dump 3";
/// [`DUMP_HEADER`] up to its version, which an import checks.
const DUMP_HEADER_PREFIX: &str = "# uno-cache dump ";
/// The last line of a version-3 dump, up to its count of entry lines. Like the header it has no
/// TAB, so it is never an entry; a dump cut at a line break lacks it, and `import` refuses that.
const DUMP_END_PREFIX: &str = "# end ";

/// What the first line of a dump says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Version {
    /// No header (written before expiries were dumped) or `# uno-cache dump 2`: no end line, so
    /// a dump cut at a line break cannot be told from a whole one.
    Unchecked,
    /// `# uno-cache dump 3`: ends with `# end N`, N its entry lines.
    Three,
}

/// Unix milliseconds of an expiry, `None` for "never".
fn expires_at_ms(at: Option<std::time::SystemTime>) -> Option<u64> {
    at.map(|t| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .max(1)
    })
}

/// How much of line 1 [`first_line`] reads and checks before the store is opened: less than the
/// limit of any store's lines ([`max_dump_line`] of the smallest segments, 64 KiB, is over
/// 256 KiB), so a line it finds too short to be whole is one every store would refuse too. A
/// longer line 1 is checked by the import, against the store's own limit.
const FIRST_LINE_CHECKED: u64 = 64 * 1024;

/// What [`first_line`] read of stdin, which the import reads first.
#[derive(Debug, Default)]
pub struct FirstLine(Vec<u8>);

/// Reads line 1 of stdin and refuses it, before the store is opened (which would create one in a
/// new `--dir`), where the import would stop at it: an empty input, a dump of another version, a
/// line that is no dump line or holds an invalid key, one that is not UTF-8 or starts with a
/// byte-order mark, an input that ends inside it. An empty input is no dump: it has no header
/// either, and is the output of a `dump >` that failed before it wrote anything (a mistyped
/// --dir, a full disk), which a version-2 reading took for an empty dump.
pub fn first_line(durable: bool) -> Result<FirstLine, String> {
    let mut bytes = Vec::new();
    io::Read::take(io::stdin().lock(), FIRST_LINE_CHECKED)
        .read_until(b'\n', &mut bytes)
        .map_err(|e| stopped(0, durable, format!("reading stdin line 1: {e}")))?;
    if bytes.is_empty() {
        return Err(format!("the input is empty, and a dump has at least its header (`{DUMP_HEADER}`) and end line; nothing was imported: take the dump again (a `dump` that exits 0 wrote both)"));
    }
    let line = match bytes.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None if u64::try_from(bytes.len()).unwrap_or(u64::MAX) >= FIRST_LINE_CHECKED => {
            return Ok(FirstLine(bytes));
        }
        None => return Err(stopped(0, durable, no_end_of_line(1))),
    };
    check_first_line(line).map_err(|why| stopped(0, durable, why))?;
    Ok(FirstLine(bytes))
}

/// The checks of the import's loop that line 1 (`bytes`, without its line break) must pass and
/// that need no store.
fn check_first_line(bytes: &[u8]) -> Result<(), String> {
    let line = text_of(bytes, 1)?;
    if escape::is_comment(line) {
        if let Some(found) = line.strip_prefix(DUMP_HEADER_PREFIX) {
            header(found, 1, Version::Unchecked)?;
        }
        return Ok(());
    }
    if !line.is_empty() {
        let (key, _) = entry_of(line, 1)?;
        // The rule the store's `set` refuses a key by, which it would apply after the open.
        crate::args::key_arg(&key).map_err(|e| format!("line 1: {e}"))?;
    }
    Ok(())
}

/// Line `line_no` (`bytes`, without its line break) as text: a dump is ASCII, with no
/// byte-order mark before its first line.
fn text_of(bytes: &[u8], line_no: u64) -> Result<&str, String> {
    let line = std::str::from_utf8(bytes)
        .map_err(|_| format!("stdin line {line_no}: not UTF-8 (a dump is ASCII)"))?;
    if line_no == 1 && line.starts_with('\u{feff}') {
        return Err("line 1 starts with a byte-order mark (U+FEFF, which some editors add); a dump is ASCII: remove the mark and import again".to_owned());
    }
    Ok(line)
}

/// The key and the rest of the entry line `line`, read at `line_no`.
fn entry_of(line: &str, line_no: u64) -> Result<(String, escape::DumpLine), String> {
    let mut parsed = escape::parse_dump_line(line).map_err(|e| format!("line {line_no}: {e}"))?;
    let key = String::from_utf8(std::mem::take(&mut parsed.key))
        .map_err(|_| format!("line {line_no}: key is not UTF-8"))?;
    Ok((key, parsed))
}

/// Why an input that ended inside line `line_no` is refused.
fn no_end_of_line(line_no: u64) -> String {
    format!("stdin line {line_no} has no end of line: the dump was cut short (every line of a dump ends with one); take the dump again")
}

/// The error of an import stopped after storing `n` entries, for `why`.
fn stopped(n: u64, durable: bool, why: String) -> String {
    // Streamed (a dump may not fit in RAM, and `--durable` acknowledges line by line): a bad
    // line stops the import, and the error says how much of the dump was stored before it.
    let stored = if durable {
        " (each on disk before its `ok` line)"
    } else {
        ""
    };
    format!(
        "{why}; stopped there, after importing {}{stored}",
        crate::count(n, "entry", "entries")
    )
}

/// Imports a dump from stdin into `store`: `first`, which [`first_line`] read and checked before
/// the store was opened, then the rest.
pub fn import(
    store: &FileStore,
    clock: &ManualClock,
    durable: bool,
    ttl: Option<Duration>,
    first: FirstLine,
    store_error: &dyn Fn(uno_cache::Error) -> String,
) -> Result<(), String> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    let (mut count, mut expired) = (0u64, 0u64);
    let stopped = |n: u64, why: String| stopped(n, durable, why);
    let limit = max_dump_line(store);
    let mut input = io::Read::chain(io::Cursor::new(first.0), io::stdin().lock());
    let mut bytes = Vec::new();
    let mut version = Version::Unchecked;
    // The line of a version-3 dump's end line, once read.
    let mut ended_at = None;
    let mut last_line = 0u64;
    for line_no in 1u64.. {
        bytes.clear();
        // At most one byte past the limit: a longer line (`import < /dev/zero`) stops here
        // instead of growing the buffer until the process runs out of memory.
        let read = io::Read::take(&mut input, limit.saturating_add(1))
            .read_until(b'\n', &mut bytes)
            .map_err(|e| stopped(count, format!("reading stdin line {line_no}: {e}")))?;
        if read == 0 {
            break;
        }
        last_line = line_no;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        } else if u64::try_from(bytes.len()).unwrap_or(u64::MAX) <= limit {
            // The input ended inside a line: a dump cut short (a full disk under `dump >`, a
            // broken pipe), whose last value would be stored shortened.
            return Err(stopped(count, no_end_of_line(line_no)));
        }
        if u64::try_from(bytes.len()).unwrap_or(u64::MAX) > limit {
            return Err(stopped(
                count,
                format!(
                    "stdin line {line_no} is longer than {limit} bytes, more than any dump line of a store with {}-byte segments can be; is this a dump?",
                    store.segment_size()
                ),
            ));
        }
        let line = text_of(&bytes, line_no).map_err(|why| stopped(count, why))?;
        if let Some(end) = ended_at {
            // Whatever follows the end line is no part of the dump it ends: two dumps joined,
            // say, the first of which may itself have been cut short before its end line.
            // A blank line (an editor's, or `echo >> dump`) is no second dump: say what to do.
            let what = if line.is_empty() {
                format!("line {line_no}: an empty line after the dump's end line (line {end}); a dump ends there, so delete the lines after it")
            } else {
                format!("line {line_no}: input after the dump's end line (line {end}); a dump ends there, so import each dump on its own")
            };
            return Err(stopped(count, what));
        }
        // The header and the end line are comments: a line with a TAB is an entry, whatever its
        // key starts with.
        if escape::is_comment(line) {
            if let Some(found) = line.strip_prefix(DUMP_HEADER_PREFIX) {
                version = header(found, line_no, version).map_err(|why| stopped(count, why))?;
            } else if version == Version::Three && line.starts_with(DUMP_END_PREFIX.trim_end()) {
                let entries = count.saturating_add(expired);
                end_line(line, line_no, entries).map_err(|why| stopped(count, why))?;
                ended_at = Some(line_no);
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (key, parsed) = entry_of(line, line_no).map_err(|why| stopped(count, why))?;
        clock.set(SystemClock.now_ms());
        let now = clock.now_ms();
        let remaining = match parsed.expires_at_ms {
            Some(at) if at <= now => {
                expired += 1;
                if durable {
                    // One answer per entry line: a feeder that waits for each line's answer
                    // before the next hung on an expired one, which had none.
                    acknowledge(&mut out, "expired", &key).map_err(|e| stopped(count, e))?;
                }
                continue;
            }
            Some(at) => Some(Duration::from_millis(at - now)),
            None => None,
        };
        let ttl = match (remaining, ttl) {
            (Some(left), Some(cap)) => Some(left.min(cap)),
            (left, cap) => left.or(cap),
        };
        let evicted = uno_cache::Storage::counters(store).evictions;
        store
            .set(&key, &parsed.value, ttl)
            .map_err(|e| stopped(count, format!("line {line_no}: {}", store_error(e))))?;
        count += 1;
        if uno_cache::Storage::counters(store).evictions > evicted {
            // The size bound (or a full device) made room by evicting entries this import
            // stored before: going on would report them imported.
            return Err(stopped(
                count,
                format!("line {line_no}: the store evicted entries to make room, so earlier lines of the dump are no longer in it; raise --max-size-mb (the store holds at most {}) or free space on the device, and import again", crate::size_in_mib(store.max_size())),
            ));
        }
        if durable {
            // The store was opened with EveryWrite: `set` returned after fdatasync.
            acknowledge(&mut out, "ok", &key).map_err(|e| stopped(count, e))?;
        }
    }
    if version == Version::Three && ended_at.is_none() {
        // Every line so far was whole: the dump was cut at a line break (a full disk under
        // `dump >`, a `dump` that was killed), which only the missing end line tells.
        return Err(stopped(
            count,
            format!("the input ends after line {last_line} without the dump's end line (`{DUMP_END_PREFIX}N`, the last line of a version-3 dump): the dump was cut short there, and what followed is missing; take the dump again (a `dump` that exits 0 wrote its end line) and import it, which overwrites the entries this import stored"),
        ));
    }
    store.flush().map_err(|e| e.to_string())?;
    err!(
        "imported {}, skipped {expired} already expired\n",
        crate::count(count, "entry", "entries")
    );
    if version == Version::Unchecked {
        err!("uno-cache: note: this dump has no end line (a version-2 dump, or one without a header: written by an older uno-cache), so whether it was cut short at a line break cannot be checked; compare the entries above with those of the store it came from\n");
    }
    Ok(())
}

/// `import --durable`'s answer to an entry line, `{what}<TAB>key`, flushed at once. One that
/// cannot be written stops the import as a bad line does.
fn acknowledge(out: &mut impl Write, what: &str, key: &str) -> Result<(), String> {
    writeln!(out, "{what}\t{}", escape::escape(key.as_bytes()))
        .and_then(|()| out.flush())
        .map_err(|e| format!("writing stdout: {e}"))
}

/// The version a header line (`found`: its text after [`DUMP_HEADER_PREFIX`]) at `line_no`
/// gives the dump, which was read as `so_far`.
fn header(found: &str, line_no: u64, so_far: Version) -> Result<Version, String> {
    match (found, line_no, so_far) {
        ("3", 1, _) => Ok(Version::Three),
        ("2", _, Version::Unchecked) => Ok(Version::Unchecked),
        ("3", _, Version::Unchecked) => Err(format!(
            "line {line_no}: a version-3 dump header, not on line 1: a version-3 dump starts with its header, so delete the lines before it (if they are another dump, import each dump on its own)"
        )),
        ("3", _, _) | ("2", _, Version::Three) => Err(format!(
            "line {line_no}: a second dump header, inside the dump that began at line 1: two dumps were joined (the first of which may have been cut short); import each dump on its own"
        )),
        (other, _, _) => Err(format!(
            "line {line_no}: a dump of version {other}, written by another uno-cache; this one reads versions 2 and 3 (and dumps without a header)"
        )),
    }
}

/// Checks a version-3 dump's end line, read at `line_no` after `entries` entry lines.
fn end_line(line: &str, line_no: u64, entries: u64) -> Result<(), String> {
    let said = line
        .strip_prefix(DUMP_END_PREFIX)
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| {
            format!("line {line_no}: {line:?} is no end line (`{DUMP_END_PREFIX}N`, N the dump's entry lines), and a version-3 dump keeps comments starting `# end` for it")
        })?;
    if said == entries {
        return Ok(());
    }
    Err(format!(
        "line {line_no}: the dump's end line says it has {}, but {} came before it: lines were lost from the dump (or added to it); take the dump again (after editing a dump, correct its end line's count)",
        crate::count(said, "entry", "entries"),
        crate::count(entries, "entry line", "entry lines")
    ))
}
