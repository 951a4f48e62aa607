//! The command line: its flags and commands, the checks of their values made before anything
//! is opened, and what a refused command line (or one that came from the environment) prints.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "uno-cache",
    version,
    about = "Inspect and edit an uno-cache store directory, or with --config the cache (L1 and L2) a configuration describes"
)]
// The store's flags are global: `get greeting --dir ./store` is how many type it, and was
// refused as an unexpected argument, with clap's tip to pass `--dir` as a value (the key).
pub(crate) struct Cli {
    /// The store directory (`set` and `import` create it if missing; the other commands refuse
    /// a path with no store).
    #[arg(
        long,
        short = 'd',
        env = "UNO_CACHE_DIR",
        default_value = "./uno-cache-data",
        global = true
    )]
    pub(crate) dir: PathBuf,
    /// A TOML configuration file (the `CacheConfig` format); its `local.path` is the store
    /// directory, so `--dir` (or `UNO_CACHE_DIR`) with it is refused rather than ignored.
    #[arg(
        long,
        short = 'c',
        env = "UNO_CACHE_CONFIG",
        conflicts_with = "dir",
        global = true
    )]
    pub(crate) config: Option<PathBuf>,
    /// Size bound in MiB. Without it, the bound the store recorded (its application's) is kept;
    /// with it, this bound is used and recorded in the store.
    #[arg(long, global = true)]
    pub(crate) max_size_mb: Option<u64>,
    /// Keeps expired entries younger than this many seconds as stale copies, as the
    /// application's fail-safe window (`loader.fail_safe_max_duration`) does: `compact` leaves
    /// them for its fail-safe reads. Without it, and without `--config` (whose window is used),
    /// the store keeps none, and `compact` removes them. The store does not record the window.
    /// Refused with `--config` for `get`, `set`, `del` and `stats`, which run through the manager
    /// and its configured window.
    #[arg(long, value_name = "SECS", global = true)]
    pub(crate) keep_expired_secs: Option<u64>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Print a value to stdout (raw bytes). Exit 1 and print nothing on a miss, 3 if the
    /// record is damaged (once: the read deletes the key from the store).
    ///
    /// The bytes are the stored ones: a value the application wrote through its typed API
    /// starts with its codec's tag byte, 0x4A followed by JSON, or 0xB2 followed by bincode
    /// (storage-format.md, "Conventions").
    Get { key: String },
    /// Store a value (the argument's UTF-8 bytes).
    ///
    /// The bytes are stored as they are, with no codec tag, as the application's `set_raw`
    /// stores them: its `get_raw` reads them, and its typed `get` refuses them
    /// (`Error::CodecMismatch`).
    Set {
        key: String,
        value: String,
        /// Time to live in seconds (fractions allowed, at least 0.001). With --config, each
        /// level keeps it at most its own ttl (local.ttl, distributed.ttl).
        #[arg(long)]
        ttl: Option<f64>,
    },
    /// Delete a key. Exit 1 if it was not there; with --config, 4 if L1 did not hold it and the
    /// delete was queued for an L2 that could not be asked (whether L2 held it is not known).
    Del { key: String },
    /// Show sizes and counters. With --config the manager's counters are this run's own, which
    /// reads nothing: the table leaves hit rates out (`--json` has every counter, of this run).
    Stats {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksum. Exit 3 if anything is damaged.
    Verify,
    /// Sweep expired entries and rewrite sparse segments now.
    Compact,
    /// Print every live entry as `key<TAB>value[<TAB>expires_at_ms]`, escaped (`\\`, `\t`,
    /// `\n`, `\r`, `\xHH`), after a `# uno-cache dump 3` line and before a `# end N` line (N the
    /// entries). The third field, present when the entry expires, is its absolute expiry in Unix
    /// milliseconds.
    /// Exit 3 if damage may have taken entries from the dump (named on stderr).
    Dump,
    /// Read dump lines from stdin and store them, each with the expiry it was dumped with.
    /// Entries that have expired since are skipped. Lines without an expiry (and dumps from
    /// before expiries were dumped) never expire unless `--ttl` (or, with --config, local.ttl)
    /// bounds them. A version-3 dump
    /// without its `# end N` line, or with another count, was cut short: exit 2 (the lines
    /// before stay stored). Older dumps have no end line: they import, with a note.
    Import {
        /// Answer each entry line on stdout: `ok<TAB>key` once it is durable on disk (fsync per
        /// line), `expired<TAB>key` for one skipped as already expired (nothing stored).
        #[arg(long)]
        durable: bool,
        /// Time to live in seconds for entries without an expiry, and the longest any imported
        /// entry lives. With --config, local.ttl is that longest too (and the TTL of entries
        /// without an expiry, without this flag), as for the application's own writes.
        #[arg(long)]
        ttl: Option<f64>,
    },
}

/// The command line, parsed. `--dir` and `--config` are global, and clap checks a conflict of
/// global flags only when both are on one side of the command (clap issues 1204, 5899):
/// `--config c.toml get k --dir d` was taken, `--dir` ignored. That conflict is checked here,
/// as clap would report it.
pub(crate) fn parse() -> Result<Cli, clap::Error> {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(std::env::args_os())?;
    let given = |id: &str| {
        matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        )
    };
    if given("dir") && given("config") {
        return Err(command.error(
            clap::error::ErrorKind::ArgumentConflict,
            "the argument '--config <CONFIG>' cannot be used with '--dir <DIR>'",
        ));
    }
    Cli::from_arg_matches(&matches)
}

/// What a refused command line, `--help` or `--version` exits with. Printed here rather than by
/// clap's own exit, which ignores a failed write: `--version > /dev/full` exited 0 with nothing
/// written.
pub(crate) fn parse_failed(e: &clap::Error) -> ExitCode {
    let code = if e.use_stderr() {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    };
    match e.print() {
        Ok(()) => {
            if let Some(var) = empty_env_var(e) {
                // clap blames the flag, which the user did not type.
                err!("uno-cache: {var} is set and empty, and stands for the flag on a command line without it; unset it or set it to a path\n");
            }
            for (var, flag) in env_vars_in_conflict(e) {
                // clap names `--dir` or `--config` as given, though it came from the environment.
                err!("uno-cache: {flag} came from {var}, which is set: `--dir` and `--config` each name the store, so unset {var} to use the other\n");
            }
            code
        }
        Err(write) => {
            let to = if e.use_stderr() { "stderr" } else { "stdout" };
            err!("uno-cache: writing {to}: {write}\n");
            ExitCode::from(2)
        }
    }
}

/// The environment variable behind an empty `--dir` or `--config` that clap refused, if it is
/// set and empty and the command line did not give the empty value itself (`--dir ""`): `export
/// UNO_CACHE_DIR=` in a profile was reported as an empty `--dir` given on a command line that
/// had none.
fn empty_env_var(e: &clap::Error) -> Option<&'static str> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    use clap::CommandFactory;
    let empty = matches!(e.get(ContextKind::InvalidValue), Some(ContextValue::String(v)) if v.is_empty());
    if e.kind() != ErrorKind::InvalidValue || !empty {
        return None;
    }
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(arg)) => arg.as_str(),
        _ => return None,
    };
    let (id, var) = [("dir", "UNO_CACHE_DIR"), ("config", "UNO_CACHE_CONFIG")]
        .into_iter()
        .find(|(id, var)| {
            arg.starts_with(&format!("--{id}")) && std::env::var_os(var).is_some_and(|value| value.is_empty())
        })?;
    // Parsed again without the variable: a command line that gave the empty value is refused
    // the same way, and the variable, set and empty too, is not to blame.
    let again = Cli::command()
        .mut_arg(id, |a| a.env(clap::builder::Resettable::Reset))
        .try_get_matches();
    let typed = again.err().is_some_and(|again| {
        again.kind() == ErrorKind::InvalidValue
            && matches!(again.get(ContextKind::InvalidArg), Some(ContextValue::String(a)) if a == arg)
    });
    (!typed).then_some(var)
}

/// The variables behind a `--dir` / `--config` conflict that the command line did not give as
/// flags: `UNO_CACHE_DIR` exported in a profile refused every `--config` call with an error about
/// a `--dir` the user never typed. Where each came from is asked of clap, which parses the same
/// command line again without the conflict: a look at argv for `-d` took a value such as the key
/// of `set -- -dx …` for the flag.
fn env_vars_in_conflict(e: &clap::Error) -> Vec<(&'static str, &'static str)> {
    use clap::parser::ValueSource;
    use clap::CommandFactory;
    if e.kind() != clap::error::ErrorKind::ArgumentConflict {
        return Vec::new();
    }
    // Without the conflict the parse succeeds (clap checked the subcommand's arguments before
    // it); where it does not, nothing is said of the variables rather than a guess.
    let Ok(matches) = Cli::command()
        .mut_arg("config", |arg| {
            arg.conflicts_with(clap::builder::Resettable::Reset)
        })
        .try_get_matches()
    else {
        return Vec::new();
    };
    [
        ("UNO_CACHE_DIR", "--dir", "dir"),
        ("UNO_CACHE_CONFIG", "--config", "config"),
    ]
    .into_iter()
    .filter(|(.., id)| matches.value_source(id) == Some(ValueSource::EnvVariable))
    .map(|(var, long, _)| (var, long))
    .collect()
}

/// `--ttl`, checked before anything is opened: a refused call changes nothing.
pub(crate) fn ttl_arg(ttl: Option<f64>) -> Result<Option<Duration>, String> {
    match ttl {
        None => Ok(None),
        // Expiries are kept in milliseconds: less would be a TTL of zero, which stores refuse.
        Some(secs) if secs.is_finite() && secs >= 0.001 => {
            // "Less than": the bound, as an f64, rounds up past `Duration::MAX` and is refused.
            Duration::try_from_secs_f64(secs).map(Some).map_err(|_| {
                format!(
                    "--ttl {secs:e}: too long; give less than {:e} seconds",
                    Duration::MAX.as_secs_f64()
                )
            })
        }
        Some(secs) => Err(format!(
            "--ttl {secs}: must be a number of seconds, at least 0.001"
        )),
    }
}

/// The key of `get`, `set` or `del`, checked before anything is opened as `--ttl` is, by the rule
/// every store holds keys to. `set` and `del` refused such a key anyway, but `get` read it as a
/// miss (exit 1): `get "$KEY"` with `KEY` unset said "absent" where it should fail.
pub(crate) fn key_arg(key: &str) -> Result<(), String> {
    let problem = if key.is_empty() {
        uno_cache::KeyProblem::Empty
    } else if key.len() > uno_cache::MAX_KEY_LEN {
        uno_cache::KeyProblem::TooLong {
            len: key.len(),
            max: uno_cache::MAX_KEY_LEN,
        }
    } else {
        return Ok(());
    };
    // Shortened as the stores shorten a key in their errors.
    let mut shown: String = key.chars().take(64).collect();
    if shown.len() < key.len() {
        shown.push('…');
    }
    Err(uno_cache::Error::InvalidKey { key: shown, problem }.to_string())
}

/// The command's name as typed, for messages.
pub(crate) fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Get { .. } => "get",
        Command::Set { .. } => "set",
        Command::Del { .. } => "del",
        Command::Stats { .. } => "stats",
        Command::Verify => "verify",
        Command::Compact => "compact",
        Command::Dump => "dump",
        Command::Import { .. } => "import",
    }
}
