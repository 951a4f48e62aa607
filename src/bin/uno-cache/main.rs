//! `uno-cache`: inspect and edit a cache from the shell.
//!
//! A thin client of the public API. It works on a store directory (`--dir`), or on the cache a
//! configuration file describes (`--config`): then `get`, `set`, `del` and `stats` go through the
//! multi-level [`CacheManager`](uno_cache::CacheManager) (L1 and L2), and `verify`, `compact`,
//! `dump` and `import` work on the configuration's file-store directory. It takes the store's
//! lock, so run it while the application that owns the directory is stopped.
//!
//! The store's size bound and file mode are the ones its directory recorded (its application's
//! settings), unless `--max-size-mb` (or, with `--config`, `local.max_size`, which the flag
//! overrides) says otherwise; a bound given that way is recorded in turn. Arguments are checked
//! before anything is opened: a refused call leaves the directory as it was. Only `set` and
//! `import` create a store; the other commands refuse a path that holds none (exit 2), but for
//! `get`, `del` and `stats` with a `--config` that has an L2, of which the local store is only a
//! cache.
//!
//! Exit codes: 0 success (for `get`: a hit), 1 a miss (`get`, `del` of an absent key), 2 an error
//! (reason on stderr), also for bad arguments. `verify` exits 3 when it finds damage, in the
//! records, in the metadata file (missing or without its magic bytes too, where the store's
//! segment files are there), or removed or skipped by the open it does first; `compact`
//! exits 3 when it dropped damaged records with the oldest segment; `dump` exits 3 when damage
//! may have taken entries from it (a damaged record it left out, named, or counted where its key
//! is damaged too; or damage its open removed or skipped), the dump whole otherwise, end line included; `get` exits 3
//! on a record it finds damaged (L1's, with `--config`, unless L2 had the value), once: the read
//! leaves a tombstone of the key in the store, where the next `get` misses. With
//! `--config`, an L2 that says the configuration is wrong (a refused password, say) is an error
//! (exit 2, the reason on stderr) even where `fallback_on_error` let L1 serve the call; so is an
//! L2 that failed during `set` or `del` (unreachable, say) unless the replay queue took the
//! write (then the usual exit code, and a note on stderr naming the host), and a `get` miss that
//! L2 failed to confirm. A `del` whose L2 delete was queued that way, of a key L1 did not hold,
//! exits 4: whether L2 held the key is not known (1 would say it was not there).

mod escape;

/// `println!` that returns the error (`writing stdout: …`) instead of panicking: stdout may be a
/// closed pipe (`uno-cache dump | head`) or a file on a full disk.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(io::stdout(), $($arg)*).map_err(|e| format!("writing stdout: {e}"))
    };
}

/// `eprint!` that never panics: with stderr gone there is nowhere left to report to, and the
/// exit code still tells.
macro_rules! err {
    ($($arg:tt)*) => {{
        let _ = write!(io::stderr(), $($arg)*);
    }};
}

mod args;
mod dump;
mod panics;
mod store_dir;

use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use args::{command_name, key_arg, parse, parse_failed, ttl_arg, Cli, Command};
use store_dir::{metadata_lost, require_store, require_store_of};
use uno_cache::{
    CacheConfig, CacheManager, Clock, Durability, FileStore, FileStoreOptions, LocalCacheConfig, LocalKind,
    ManualClock, SystemClock,
};

fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => return parse_failed(&e),
    };
    panics::run_caught(|| match run(cli) {
        Ok(code) => code,
        Err(message) => {
            err!("uno-cache: {message}\n");
            ExitCode::from(2)
        }
    })
}

fn run(mut cli: Cli) -> Result<ExitCode, String> {
    let mut ttl = match &cli.command {
        Command::Set { ttl, .. } | Command::Import { ttl, .. } => ttl_arg(*ttl)?,
        _ => None,
    };
    if let Command::Get { key } | Command::Set { key, .. } | Command::Del { key } = &cli.command {
        key_arg(key)?;
    }
    if cli.max_size_mb == Some(0) {
        return Err("--max-size-mb 0: must be at least 1 (MiB)".to_owned());
    }
    let mut size_from = cli.max_size_mb.map(SizeFrom::Flag);
    let mut file_mode = None;
    let mut keep_expired = cli.keep_expired_secs.map(Duration::from_secs);
    let by_dir = cli.config.is_none();
    if let Some(path) = cli.config.take() {
        let mut config = CacheConfig::from_toml_file(&path).map_err(|e| e.to_string())?;
        if size_from.is_none() && config.local.max_size.is_some() {
            size_from = Some(SizeFrom::Config(path.clone()));
        }
        if matches!(
            cli.command,
            Command::Get { .. } | Command::Set { .. } | Command::Del { .. } | Command::Stats { .. }
        ) {
            if cli.keep_expired_secs.is_some() {
                // These commands run through the manager, which keeps expired copies for the
                // configuration's fail-safe window: the flag would change nothing.
                return Err(format!(
                    "--keep-expired-secs: with --config, `{}` keeps expired copies for {}'s loader.fail_safe_max_duration; set it there",
                    command_name(&cli.command),
                    path.display()
                ));
            }
            if let Some(mb) = cli.max_size_mb {
                if config.local.kind == LocalKind::Memory {
                    return Err(format!(
                        "--max-size-mb: {} has a memory L1 (local.type = \"memory\"), bounded in items by local.max_size",
                        path.display()
                    ));
                }
                config.local.max_size = Some(mb);
            }
            let has_l2 = config.use_multi_level && config.distributed.enabled;
            if config.local.kind == LocalKind::Memory
                && !has_l2
                && !matches!(cli.command, Command::Stats { .. })
            {
                return Err(format!(
                    "`{}`: the only level of {} is in memory (local.type = \"memory\", no L2), which holds nothing before or after this command; use a file or redb L1, or an L2",
                    command_name(&cli.command),
                    path.display()
                ));
            }
            // With an L2 the local store is only a cache of it, and an empty or missing one is
            // what a new host has: the command still reaches L2 (a `del` must).
            if !has_l2 && !matches!(cli.command, Command::Set { .. }) {
                require_store_of(&config)?;
            }
            return run_manager(config, cli.command, ttl, size_from.as_ref());
        }
        if config.local.kind != LocalKind::File {
            return Err(format!(
                "{}: `{}` needs a file-store L1 (local.type = \"file\")",
                path.display(),
                command_name(&cli.command)
            ));
        }
        cli.dir = config.local.effective_path().to_owned();
        cli.max_size_mb = cli.max_size_mb.or(config.local.max_size);
        file_mode = config.local.file_mode;
        // The application's fail-safe window: a compaction without it removed the stale copies
        // its next failed load would have served. Whole, not cut to seconds.
        keep_expired = keep_expired.or(Some(config.loader.fail_safe_max_duration));
        if matches!(cli.command, Command::Import { .. }) {
            // As the manager's `set` does: an entry the application's L1 holds lives at most
            // local.ttl, and its reads do not cap what they find, so one imported without an
            // expiry was served for ever.
            ttl = Some(ttl.map_or(config.local.ttl, |t| t.min(config.local.ttl)));
        }
    }
    if !matches!(cli.command, Command::Set { .. } | Command::Import { .. }) {
        require_store(&cli.dir, uno_cache::files::META_FILE)?;
    }
    let durable_import = matches!(cli.command, Command::Import { durable: true, .. });
    // Read and checked before the store is opened: an import refused at its first line makes no
    // store in a new --dir.
    let mut first_line = None;
    if matches!(cli.command, Command::Import { .. }) {
        first_line = Some(dump::first_line(durable_import)?);
    }
    // Import pins the store's clock to the moment of each write, so that an entry's remaining
    // TTL, computed against that moment, lands on exactly the dumped expiry.
    let clock = ManualClock::new(SystemClock.now_ms());
    let mut options = FileStoreOptions::default()
        .background_threads(false)
        .durability(if durable_import {
            Durability::EveryWrite
        } else {
            Durability::None
        });
    if matches!(cli.command, Command::Import { .. }) {
        options = options.clock(Arc::new(clock.clone()));
    }
    if let Some(mb) = cli.max_size_mb {
        options = options.max_size_mb(mb);
    }
    if let Some(mode) = file_mode {
        options = options.file_mode(mode);
    }
    if let Some(window) = keep_expired {
        options = options.keep_expired(window);
    }
    let store = match FileStore::open(&cli.dir, options) {
        Ok(store) => store,
        // Damage `verify` is asked to find, though it stops the open: exit 3, like any other.
        Err(e @ uno_cache::Error::CorruptMetadata { .. }) if matches!(cli.command, Command::Verify) => {
            outln!("damaged: {e}")?;
            return Ok(ExitCode::from(3));
        }
        Err(uno_cache::Error::NotOurDirectory { path, meta }) => {
            let Some(lost) = metadata_lost(&path, meta) else {
                return Err(uno_cache::Error::NotOurDirectory { path, meta }.to_string());
            };
            // Damage to the store, as a metadata file that fails its CRC is.
            if matches!(cli.command, Command::Verify) {
                outln!("damaged: {lost}")?;
                return Ok(ExitCode::from(3));
            }
            return Err(lost);
        }
        Err(e) => return Err(size_error(e, size_from.as_ref())),
    };
    if !matches!(cli.command, Command::Verify) {
        // This open removed the damaged segment: a later `verify` cannot see it any more, so
        // the command that found it says so (`verify` reports it in its own output).
        for damage in damage_at_open(store.recovery_report()) {
            err!("uno-cache: note: {damage}\n");
        }
    }
    // Closed on every path: an error of the command must not hide one of the close (the
    // fsync that makes what the command wrote durable), which a drop would only log.
    let store_error = |e: uno_cache::Error| {
        if by_dir {
            dir_store_error(e, &store)
        } else {
            e.to_string()
        }
    };
    let outcome = (|| -> Result<ExitCode, String> {
        Ok(match cli.command {
            Command::Get { key } => {
                let corrupt = store.corrupt_reads();
                let found = store.get(&key).map_err(|e| e.to_string())?;
                if store.corrupt_reads() > corrupt {
                    // Not a miss: the record was there and could not be read.
                    err!("uno-cache: {}\n", damaged_record(&key));
                    ExitCode::from(3)
                } else {
                    print_value(found)?
                }
            }
            Command::Set { key, value, .. } => {
                store.set(&key, value.as_bytes(), ttl).map_err(store_error)?;
                ExitCode::SUCCESS
            }
            Command::Del { key } => {
                if store.delete(&key).map_err(store_error)? {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                }
            }
            Command::Stats { json } => {
                print_stats(&store, json)?;
                ExitCode::SUCCESS
            }
            Command::Verify => verify(&store)?,
            Command::Compact => {
                let report = store.compact().map_err(store_error)?;
                // The open before the compaction already dropped what had expired (beyond the
                // kept window), so the compaction's own count alone said "0" of a store that
                // had just lost expired entries.
                let at_open = store.recovery_report().expired;
                let expired = if at_open > 0 {
                    format!(
                        "expired {} ({at_open} dropped by the store's open, {} by the compaction)",
                        count(at_open.saturating_add(report.expired), "entry", "entries"),
                        report.expired
                    )
                } else {
                    format!("expired {}", count(report.expired, "entry", "entries"))
                };
                outln!(
                    "{expired}, rewrote {} ({} moved), reclaimed {} bytes",
                    count(report.segments_rewritten, "segment", "segments"),
                    count(report.records_moved, "record", "records"),
                    report.bytes_reclaimed
                )?;
                if report.damaged_ranges_dropped > 0 {
                    // The last chance to tell: the damage went with the segment, so neither a
                    // later `verify` nor a `get` of its keys can see it.
                    outln!(
                        "damaged: dropped {} with the oldest segment; the records in them were lost",
                        count(report.damaged_ranges_dropped, "damaged range", "damaged ranges")
                    )?;
                    ExitCode::from(3)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Command::Dump => {
                let left_out = dump::dump(&store)?;
                // Noted above, but a note alone let a dump missing what the open's damage took
                // exit 0, as a whole backup does; `verify` exits 3 on the same damage.
                let damaged_at_open = !damage_at_open(store.recovery_report()).is_empty();
                if damaged_at_open {
                    err!("uno-cache: damaged: the dump may be missing entries that the damage noted above destroyed (or, where a *.lost file was removed, hold an older version of a key); the rest of the dump is complete\n");
                }
                if left_out || damaged_at_open {
                    ExitCode::from(3)
                } else {
                    ExitCode::SUCCESS
                }
            }
            Command::Import { durable, .. } => {
                dump::import(
                    &store,
                    &clock,
                    durable,
                    ttl,
                    first_line.unwrap_or_default(),
                    &store_error,
                )?;
                ExitCode::SUCCESS
            }
        })
    })();
    match (outcome, store.close()) {
        (Ok(code), Ok(())) => Ok(code),
        (Ok(_), Err(closed)) => Err(closed.to_string()),
        (Err(e), Ok(())) => Err(e),
        (Err(e), Err(closed)) => Err(format!("{e}; closing the store failed too: {closed}")),
    }
}

/// What gave the store its size bound, to name it in a refusal as the user gave it: the store
/// calls the bound `max_size_mb` (its option's name) and the manager `local.max_size`, whichever
/// of the two supplied it.
enum SizeFrom {
    /// `--max-size-mb`, with its value.
    Flag(u64),
    /// `local.max_size` of this configuration file.
    Config(PathBuf),
}

/// `err` as the CLI reports it, a refused size bound named after its [`SizeFrom`].
fn size_error(err: uno_cache::Error, from: Option<&SizeFrom>) -> String {
    match (err, from) {
        (uno_cache::Error::Config { field, reason }, Some(from))
            if field == "max_size_mb" || field == "local.max_size" =>
        {
            match from {
                SizeFrom::Flag(mb) => {
                    let reason = reason
                        .replace("local.max_size", "--max-size-mb")
                        .replace("max_size_mb", "--max-size-mb");
                    format!("--max-size-mb {mb}: {reason}")
                }
                SizeFrom::Config(path) => uno_cache::Error::Config {
                    field: "local.max_size".to_owned(),
                    reason: format!(
                        "{} (in {})",
                        reason.replace("max_size_mb", "local.max_size"),
                        path.display()
                    ),
                }
                .to_string(),
            }
        }
        (err, _) => err.to_string(),
    }
}

/// `err` of a store opened with `--dir`, as its user can act on it: `DiskFull` names the bound by
/// a configuration's field (`local.max_size`), and `--dir` has no configuration. Where not even
/// one segment fits (a new store on a small device: its segments are an eighth of its bound,
/// 64 MiB under the default one), a lower bound cannot help this store, whose segment size was
/// fixed when it was created and whose bound cannot go below four segments: it holds nothing, and
/// the way out is to create it again.
fn dir_store_error(err: uno_cache::Error, store: &FileStore) -> String {
    let uno_cache::Error::DiskFull { path, op, needed } = &err else {
        return err.to_string();
    };
    let needed = if *needed == 0 {
        String::new()
    } else {
        format!(" ({needed} bytes)")
    };
    let stats = store.stats();
    if stats.segments == 0 && stats.live_items == 0 {
        return format!(
            "no space left in {} to {op}{needed}: not one of this store's {} segments fits (their size was fixed when the store was created, an eighth of its bound then), and it holds nothing; free space on that device, or remove {} and run again with a --max-size-mb whose eighth fits in the free space",
            path.display(),
            size_in_mib(store.segment_size()),
            path.display()
        );
    }
    format!(
        "no space left in {} to {op}{needed}; free space on that device, or lower the store's bound with --max-size-mb",
        path.display()
    )
}

/// What `get` says of a record it found damaged: a miss would pass lost data for an absent key.
fn damaged_record(key: &str) -> String {
    format!(
        "damaged: the record of {} could not be read (its bytes do not match their checksum); `verify` reports the rest",
        escape::escape(key.as_bytes())
    )
}

/// `get`'s output: the raw value and exit 0 on a hit, nothing and exit 1 on a miss.
fn print_value(value: Option<Vec<u8>>) -> Result<ExitCode, String> {
    let Some(value) = value else {
        return Ok(ExitCode::from(1));
    };
    // Flushed here: a value without a newline would otherwise wait in stdout's buffer for the
    // flush at exit, whose error nobody sees (exit 0 with the value lost).
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(&value)
        .and_then(|()| stdout.flush())
        .map_err(|e| format!("writing stdout: {e}"))?;
    Ok(ExitCode::SUCCESS)
}

/// `get`, `set`, `del` and `stats` through the multi-level manager a configuration describes.
fn run_manager(
    config: CacheConfig,
    command: Command,
    ttl: Option<Duration>,
    size_from: Option<&SizeFrom>,
) -> Result<ExitCode, String> {
    // Where a failed L2 write is queued (the manager's default: the L1 directory).
    let queue_dir = config.offline.replay_dir.clone().or_else(|| {
        (config.local.kind != LocalKind::Memory).then(|| config.local.effective_path().to_owned())
    });
    let (memory_l1, replay) = (config.local.kind == LocalKind::Memory, config.offline.replay);
    let local = config.local.clone();
    let cache = CacheManager::new(config).map_err(|e| match e {
        uno_cache::Error::NotOurDirectory { path, meta } => metadata_lost(&path, meta)
            .unwrap_or_else(|| uno_cache::Error::NotOurDirectory { path, meta }.to_string()),
        e => size_error(e, size_from),
    })?;
    // As with --dir: what this open removed, no later open can see.
    for damage in cache
        .monitor()
        .local_recovery()
        .map(damage_at_open)
        .unwrap_or_default()
    {
        err!("uno-cache: note: {damage}\n");
    }
    let name = command_name(&command);
    let key = match &command {
        Command::Set { key, .. } | Command::Del { key } => Some(key.clone()),
        _ => None,
    };
    // The manager hides an L2 failure from the call when `fallback_on_error` is on (and logs it
    // where this binary installs no logger): the counters before and after tell.
    let before = cache.monitor().l2_failures();
    let code = match command {
        Command::Get { key } => {
            let corrupt = cache.monitor().local_corrupt_reads();
            let found = cache.get_raw(&key).map_err(|e| e.to_string())?;
            let damaged = cache.monitor().local_corrupt_reads() > corrupt;
            if damaged && found.is_none() {
                // Not a miss, as with --dir: the record was there and could not be read.
                err!("uno-cache: {}\n", damaged_record(&key));
                ExitCode::from(3)
            } else {
                if damaged {
                    err!("uno-cache: note: L1 {}; L2 had the value\n", damaged_record(&key));
                }
                print_value(found)?
            }
        }
        Command::Set { key, value, .. } => {
            cache
                .set_raw(&key, value.as_bytes(), ttl)
                .map_err(|e| e.to_string())?;
            ExitCode::SUCCESS
        }
        Command::Del { key } => {
            if cache.delete(&key).map_err(|e| e.to_string())? {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Command::Stats { json } => {
            let stats = cache.stats();
            let bound = local_bound(&cache, &local);
            if json {
                let mut value = serde_json::to_value(&stats).map_err(|e| e.to_string())?;
                // The bound in use, as `--dir` gives it (`max_size_bytes`), under the level it
                // bounds: the counters do not carry it.
                if let (Some(level), Some((items, bytes))) =
                    (value.get_mut("local").and_then(|l| l.as_object_mut()), bound)
                {
                    level.insert("max_size_bytes".to_owned(), bytes.into());
                    if let Some(items) = items {
                        level.insert("max_items".to_owned(), items.into());
                    }
                }
                if let (Some(tier), Some((items, bytes))) = (
                    value.get_mut("memory").and_then(|l| l.as_object_mut()),
                    memory_tier_bound(&local),
                ) {
                    tier.insert("max_items".to_owned(), items.into());
                    tier.insert("max_size_bytes".to_owned(), bytes.into());
                }
                let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
                outln!("{text}")?;
            } else {
                // No hit rates: they are this process's, which has read nothing, so they were
                // always 0.000 and read as the application's cache missing every time. The
                // errors are this process's too: its connection to each level.
                outln!("{:<12}{:>14}{:>12}{:>10}", "level", "items", "bytes", "errors")?;
                for (name, level, size) in [
                    ("local", &stats.local, stats.size.local),
                    ("distributed", &stats.distributed, stats.size.distributed),
                ] {
                    outln!(
                        "{name:<12}{:>14}{:>12}{:>10}",
                        size.items,
                        size.bytes,
                        level.errors
                    )?;
                }
                match bound {
                    Some((Some(items), bytes)) => outln!(
                        "local max size: {}, {}",
                        count(items, "item", "items"),
                        size_in_mib(bytes)
                    )?,
                    Some((None, bytes)) => outln!("local max size: {}", size_in_mib(bytes))?,
                    None => {}
                }
                if let Some((items, bytes)) = memory_tier_bound(&local) {
                    outln!(
                        "memory tier max size: {}, {}",
                        count(items, "item", "items"),
                        size_in_mib(bytes)
                    )?;
                }
                let d = &stats.distributed;
                if let Some(breaker) = &d.breaker {
                    outln!(
                        "distributed breaker: {:?} ({})",
                        breaker.state,
                        count(breaker.trips, "trip", "trips")
                    )?;
                }
                if d.config_errors > 0 {
                    outln!("distributed config errors: {}", d.config_errors)?;
                }
                if let Some(error) = &d.last_error {
                    outln!("distributed last error: {error}")?;
                }
                if let Some(error) = &d.size_error {
                    outln!("distributed size unknown: {error}")?;
                }
            }
            ExitCode::SUCCESS
        }
        other => {
            return Err(format!(
                "`{}` is not available through the manager",
                command_name(&other)
            ))
        }
    };
    cache.flush().map_err(|e| e.to_string())?;
    // Hidden from the call by fallback_on_error (L1 served it), but the user must know: a
    // wrong setting does not go away by itself.
    if let Some(error) = cache.monitor().config_error() {
        return Err(error);
    }
    let after = cache.monitor().l2_failures();
    // `stats` reports L2's errors itself, in its table.
    if name == "stats" {
        return Ok(code);
    }
    let what = if name == "set" { "write" } else { "delete" };
    let queue = queue_dir
        .as_ref()
        .map_or_else(String::new, |dir| format!(" in {}", dir.display()));
    if after.errors == before.errors {
        if after.queued_as_deletes > before.queued_as_deletes {
            err!(
                "uno-cache: note: an earlier op of the key waits for L2, so L2 was not asked; {}\n",
                queued_as_delete(&queue)
            );
        } else if after.queued > before.queued {
            // A key with an op still queued from an earlier failure is not sent to L2 (it would
            // overtake that op): the new op is queued behind it. If L2 answers now, both are
            // sent by this run: the note said they waited for the next one while this run's
            // replay (or its shutdown) was already sending them.
            if key.as_deref().is_some_and(|key| replayed_now(&cache, key)) {
                if name == "del" && code == ExitCode::from(1) {
                    err!("uno-cache: note: L1 did not hold the key; its delete reached L2 behind an earlier queued op of the key, through the replay queue{queue}, which does not say whether L2 held it, so whether the key was there is not known (exit 4)\n");
                    return Ok(ExitCode::from(4));
                }
                return Ok(code);
            }
            err!("uno-cache: note: the {what} is queued for replay{queue} behind an earlier op of the key that L2 has not taken yet; L2 was not asked, and gets both from the next run with this configuration that reaches it\n");
        } else {
            return Ok(code);
        }
        return Ok(unasked_del(name, code));
    }
    let why = after
        .last_error
        .unwrap_or_else(|| "skipped by its open circuit breaker".to_owned());
    if name == "get" {
        if code != ExitCode::from(1) {
            // L1 answered, or its record was damaged (exit 3, said above); L2 failed on the
            // side (a backfill, say), which changes neither.
            err!("uno-cache: note: L2 failed during `get` ({why})\n");
            return Ok(code);
        }
        return Err(format!(
            "`get`: L1 has no such key and L2 could not be asked ({why}), so this is no confirmed miss; start L2 or fix distributed.hosts, then retry"
        ));
    }
    if after.queued_as_deletes > before.queued_as_deletes {
        err!(
            "uno-cache: note: L2 failed during `{name}` ({why}); {}\n",
            queued_as_delete(&queue)
        );
        return Ok(unasked_del(name, code));
    }
    if after.queued > before.queued {
        err!("uno-cache: note: L2 failed during `{name}` ({why}); the {what} is queued for replay{queue} and is sent to L2 by the next run with this configuration that reaches it\n");
        return Ok(unasked_del(name, code));
    }
    // The advice names what is missing: a place for the queue, the queue itself, or (both
    // there) the reason it refused, which only its counters tell.
    let or_else = match (&queue_dir, replay) {
        (None, _) => {
            "use a file or redb L1 (local.type), whose directory keeps a replay queue (offline.replay)"
                .to_owned()
        }
        (Some(_), false) => {
            format!("set offline.replay = true, so that the replay queue{queue} takes such writes")
        }
        (Some(_), true) => format!(
            "see why the replay queue{queue} did not take it (consistency.queue_failures in `stats --json`)"
        ),
    };
    let fate = match name {
        "set" if memory_l1 => "L2 does not have the value (and the L1 in memory dies with this process)",
        "set" => "L2 does not have the value",
        _ => "L2 may still hold the key, and a later read can bring it back",
    };
    Err(format!(
        "`{name}`: L2 failed ({why}) and no replay queue took the {what}, so {fate}; start L2 or fix distributed.hosts and retry, or {or_else}"
    ))
}

/// Whether a replay pass run now sent every queued op of `key` to L2 (none is left for it in the
/// queue): `false` where L2 still does not answer, or the queue holds the key for another reason.
fn replayed_now(cache: &CacheManager, key: &str) -> bool {
    cache.replay_now().is_ok() && cache.replay_queue().is_some_and(|queue| !queue.is_pending(key))
}

/// A mebibyte: the unit of every size bound the configuration and `stats` give.
const MIB: u64 = 1 << 20;

/// The bound of the local level `local` configures, as `stats` gives it: for a memory L1 its
/// items (`local.max_size`) and the bytes of its values (`local.memory_max_mb`), for a file or
/// redb L1 its bytes (`local.max_size`, which a file store without it takes from its directory's
/// record, read by the manager's open). `None` where the manager opened no file store for a
/// file L1 (not the case of a manager built from a configuration).
fn local_bound(cache: &CacheManager, local: &LocalCacheConfig) -> Option<(Option<u64>, u64)> {
    match local.kind {
        LocalKind::Memory => Some((
            Some(local.effective_max_size()),
            local.memory_max_mb.saturating_mul(MIB),
        )),
        LocalKind::File => cache.monitor().local_file_max_size().map(|bytes| (None, bytes)),
        LocalKind::Redb => Some((None, local.effective_max_size().saturating_mul(MIB))),
    }
}

/// The bound of the memory tier in front of a file or redb L1 (`local.memory_items` and the
/// bytes of `local.memory_max_mb`), `None` where there is none: off (`memory_items = 0`), or the
/// L1 is the memory level itself, whose bound `local_bound` gives. This process's tier is empty;
/// the bound is the one every process with this configuration runs with.
fn memory_tier_bound(local: &LocalCacheConfig) -> Option<(u64, u64)> {
    (local.kind != LocalKind::Memory && local.memory_items > 0)
        .then(|| (local.memory_items, local.memory_max_mb.saturating_mul(MIB)))
}

/// The exit of a command whose L2 step was queued for replay, L2 not asked: `del`'s 1 ("it was
/// not there") is only L1's answer then, and L2 may have held the key, so it exits 4, "not
/// known". A `del` L1 answered 0 to did find the key, and the other commands' codes stand.
fn unasked_del(name: &str, code: ExitCode) -> ExitCode {
    if name != "del" || code != ExitCode::from(1) {
        return code;
    }
    err!("uno-cache: note: L1 did not hold the key and L2 could not be asked, so whether the key was there is not known (exit 4); the queued delete takes it out of L2 if L2 holds it\n");
    ExitCode::from(4)
}

/// What a set the replay queue (in `queue`) took as a delete of its key came to: the queue's
/// rule when a set does not fit or had expired (L2 may lose a key, never keep a stale value).
/// The "queued" note would have called it queued.
fn queued_as_delete(queue: &str) -> String {
    format!("the replay queue{queue} took a delete of the key instead of the value (it is full, see offline.replay_max_bytes / replay_max_entries, or the value's TTL had run out): the next run with this configuration that reaches L2 takes the key out of L2, so no instance reads its older value, but L2 never gets the new one")
}

fn print_stats(store: &FileStore, json: bool) -> Result<(), String> {
    let stats = store.stats();
    if json {
        // The store's counters, and what its open found (`recovery`): damage the open skipped or
        // removed is gone from the counters' view otherwise.
        let mut value = serde_json::to_value(&stats).map_err(|e| e.to_string())?;
        if let Some(object) = value.as_object_mut() {
            let recovery = serde_json::to_value(store.recovery_report()).map_err(|e| e.to_string())?;
            object.insert("recovery".to_owned(), recovery);
            // The bound in use, which the counters do not carry: the recorded one, or the
            // flag's.
            object.insert("max_size_bytes".to_owned(), store.max_size().into());
            // The largest value a store takes is a segment less its headers, and the segment
            // size is fixed at creation, not by the bound in use: say it where a refusal sends.
            object.insert("segment_size_bytes".to_owned(), store.segment_size().into());
        }
        let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
        outln!("{text}")?;
        return Ok(());
    }
    let rows = [
        ("live items", stats.live_items),
        ("live bytes", stats.live_bytes),
        ("disk bytes", stats.disk_bytes),
        ("dead bytes", stats.dead_bytes),
        ("segments", stats.segments),
        ("skipped at recovery", stats.recovery_skipped_records),
        (
            "segments removed at recovery",
            store.recovery_report().damaged_segments,
        ),
    ];
    outln!("store {}", store.path().display())?;
    for (name, value) in rows {
        outln!("  {name:<30}{value:>16}")?;
    }
    outln!("  {:<30}{:>16}", "max size", size_in_mib(store.max_size()))?;
    outln!(
        "  {:<30}{:>16}",
        "segment size",
        size_in_mib(store.segment_size())
    )?;
    outln!("  {:<30}{:>16}", "file mode", format!("{:#o}", store.file_mode()))?;
    Ok(())
}

/// A size bound as `--max-size-mb` gives it, in MiB, with the exact bytes: a bare byte count
/// next to a flag that takes MiB read as a bound a million times too large.
fn size_in_mib(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB ({bytes} bytes)", bytes / MIB)
    } else {
        // A bound the store took from its size on disk, not from a flag.
        #[allow(clippy::cast_precision_loss)]
        let mib = bytes as f64 / MIB as f64;
        format!("{mib:.2} MiB ({bytes} bytes)")
    }
}

fn verify(store: &FileStore) -> Result<ExitCode, String> {
    let show = io::stderr().is_terminal();
    let report = store
        .verify(|done, total| {
            if show && total > 0 {
                let pct = done.saturating_mul(100) / total;
                let bar = "#".repeat(usize::try_from(pct / 4).unwrap_or(0));
                err!("\rverifying [{bar:<25}] {pct:>3}%");
            }
        })
        .map_err(|e| e.to_string())?;
    if show {
        err!("\n");
    }
    outln!(
        "{}, {} checked, {} ({} bytes)",
        count(report.segments, "segment", "segments"),
        count(report.records, "record", "records"),
        count(report.damaged_ranges, "damaged range", "damaged ranges"),
        report.damaged_bytes
    )?;
    for problem in &report.problems {
        outln!("damaged: {problem}")?;
    }
    // The open before the check already dealt with some damage, which the check cannot see
    // any more: a segment whose header was unreadable is removed, and a damaged range it
    // skipped may have been cut with a torn tail.
    let opened = store.recovery_report();
    for damage in damage_at_open(opened) {
        outln!("damaged: {damage}")?;
    }
    if opened.torn_tail_bytes > 0 {
        // What a crash mid-write leaves: not damage, the write it cut was never completed.
        outln!(
            "note: opening the store cut {} bytes of a write that a crash interrupted at the end of the last segment",
            opened.torn_tail_bytes
        )?;
    }
    let damaged_at_open = !damage_at_open(opened).is_empty();
    Ok(if report.is_clean() && !damaged_at_open {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// The damage the open of the store removed or skipped, one sentence each.
fn damage_at_open(opened: &uno_cache::RecoveryReport) -> Vec<String> {
    let mut found = Vec::new();
    if opened.damaged_segments > 0 {
        found.push(format!(
            "opening the store removed {} whose header was unreadable (moved aside as *.damaged, which can be deleted); the records in them are lost, and where a segment's hint was intact its keys are read as deleted from then on (kept as *.lost, which must not be deleted), so no older version of them is served",
            count(opened.damaged_segments, "segment file", "segment files")
        ));
    }
    if opened.damaged_segments_left > 0 {
        found.push(format!(
            "opening the store left {} whose header was unreadable in place, unloaded: their hint could not be kept as *.lost (the log says why; fix that and reopen); the records in them are lost, and their keys are read as deleted",
            count(opened.damaged_segments_left, "segment file", "segment files")
        ));
    }
    if opened.damaged_ranges > 0 {
        found.push(format!(
            "opening the store skipped {} ({} bytes); the records in them are lost",
            count(opened.damaged_ranges, "damaged range", "damaged ranges"),
            opened.damaged_bytes
        ));
    }
    if opened.damaged_lost_files > 0 {
        found.push(format!(
            "opening the store removed {}: the keys of the lost segment(s) they named are no longer read as deleted, so an older (overwritten or deleted) version of them can be served again; delete or overwrite such keys if that matters",
            count(opened.damaged_lost_files, "damaged *.lost file", "damaged *.lost files")
        ));
    }
    found
}

/// `n` and the noun that goes with it: "1 entry", "2 entries".
fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::size_in_mib;

    /// A bound of no whole number of MiB, which a store written before bounds were recorded
    /// takes from its bytes on disk (when they exceed the default), is given to two decimals
    /// beside its exact bytes; a whole one, as every flag and `local.max_size` gives it, with
    /// none. A test through the binary would need a store of more than 1 GiB.
    #[test]
    fn a_bound_of_no_whole_mib_is_given_to_two_decimals_beside_its_bytes() {
        let mib = 1u64 << 20;
        assert_eq!(
            size_in_mib(1024 * mib + mib / 2),
            "1024.50 MiB (1074266112 bytes)"
        );
        assert_eq!(size_in_mib(1536 * mib + 1), "1536.00 MiB (1610612737 bytes)");
        assert_eq!(size_in_mib(mib - 1), "1.00 MiB (1048575 bytes)");
        assert_eq!(size_in_mib(64 * mib), "64 MiB (67108864 bytes)");
    }
}
