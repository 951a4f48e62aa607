//! A `CacheManager` in a real child process, for tests where "the process restarts" must mean
//! an OS process exits (cleanly, or killed with SIGKILL) and a new one opens the same L1
//! directory.
//!
//! The test binary runs itself again with one `#[ignore]`d test selected: the file's entry
//! point, which calls [`serve`]. The child opens a manager from the TOML config in
//! [`ENV_CONFIG`], prints `@ready`, then answers each command line on stdin with one
//! `@`-prefixed line on stdout:
//!
//! | command              | answer                                   |
//! |----------------------|------------------------------------------|
//! | `get KEY`            | `value V` / `none` (typed `String` read) |
//! | `set KEY V`          | `ok` (typed `String` write)              |
//! | `get_raw KEY`        | `value V` / `none`                       |
//! | `set_raw KEY V`      | `ok`                                     |
//! | `delete KEY`         | `deleted true` / `deleted false`         |
//! | `flush`              | `ok`                                     |
//! | `replay`             | `replayed N` (one `replay_now`)          |
//! | `stats`              | `stats JSON` (`CacheStats`)              |
//! | `load KEY`           | `fresh V` / `stale V` (`get_or_load` of a `String`, TTL 10 s) |
//!
//! `load`'s loader reads the file in [`ENV_SOURCE`]: its text is the value; while a file of the
//! same name plus `.hang` exists it hangs (a source that stopped answering); a missing file is
//! a failing source. With [`ENV_NOW_MS`] set, the child's manager runs on a
//! [`ManualClock`](uno_cache::ManualClock) stopped at that time (Unix ms), so tests move time
//! across processes without waiting for it.
//!
//! Any failed call answers `err MESSAGE` (the parent asserts on it); the child never panics on
//! a cache error. Closing stdin makes the child drop its manager and exit 0. The child is
//! started under `setpriv --pdeathsig KILL` ([`super::support::dies_with_us`]): a test process
//! killed while its child hangs (in a `load` of a hanging source, say) leaves no child behind,
//! where the end of its stdin alone reached the child only once it read again.
//!
//! Include it with `#[path = "support/cache_process.rs"] mod cache_process;` next to
//! `mod support;`.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use uno_cache::{CacheConfig, CacheManager, CacheStats};

/// The environment variable carrying the child's TOML config.
pub const ENV_CONFIG: &str = "UNO_CACHE_PROCESS_CONFIG";
/// The environment variable naming the source file of `load`.
pub const ENV_SOURCE: &str = "UNO_CACHE_PROCESS_SOURCE";
/// The environment variable with the child's clock (Unix ms), if it runs on a manual one.
pub const ENV_NOW_MS: &str = "UNO_CACHE_PROCESS_NOW_MS";
/// The TTL of values `load` stores.
pub const LOAD_TTL: Duration = Duration::from_secs(10);

/// How long the parent waits for one answer before calling the child hung.
const WAIT: Duration = Duration::from_secs(20);

/// The child's side: serve commands until stdin closes. Does nothing when not started by
/// [`CacheProcess::start`] (the entry point is `#[ignore]`d, but `--ignored` runs it too).
pub fn serve() {
    let Ok(toml) = std::env::var(ENV_CONFIG) else {
        return;
    };
    let config = CacheConfig::from_toml_str(&toml).unwrap();
    let mut builder = CacheManager::builder().config(config);
    if let Ok(ms) = std::env::var(ENV_NOW_MS) {
        builder = builder.clock(std::sync::Arc::new(uno_cache::ManualClock::new(
            ms.parse().unwrap(),
        )));
    }
    let cache = builder.build().unwrap();
    let mut out = std::io::stdout();
    writeln!(out, "@ready").unwrap();
    out.flush().unwrap();
    for line in std::io::stdin().lines() {
        let line = line.unwrap();
        let answer = answer(&cache, &line);
        writeln!(out, "@{answer}").unwrap();
        out.flush().unwrap();
    }
    drop(cache);
}

fn answer(cache: &CacheManager, line: &str) -> String {
    let words: Vec<&str> = line.split(' ').collect();
    let shown = |v: Option<String>| v.map_or_else(|| "none".to_owned(), |v| format!("value {v}"));
    let result = match words.as_slice() {
        ["get", key] => cache.get::<String>(key).map(shown),
        ["set", key, value] => cache.set(key, *value, None).map(|()| "ok".to_owned()),
        ["get_raw", key] => cache
            .get_raw(key)
            .map(|v| shown(v.map(|v| String::from_utf8(v).unwrap()))),
        ["set_raw", key, value] => cache
            .set_raw(key, value.as_bytes(), None)
            .map(|()| "ok".to_owned()),
        ["delete", key] => cache.delete(key).map(|d| format!("deleted {d}")),
        ["flush"] => cache.flush().map(|()| "ok".to_owned()),
        ["replay"] => cache.replay_now().map(|n| format!("replayed {n}")),
        ["load", key] => {
            let source = std::path::PathBuf::from(std::env::var(ENV_SOURCE).unwrap());
            cache
                .get_or_load(key, Some(LOAD_TTL), move || load_source(&source))
                .map(|fetched| match fetched {
                    uno_cache::Fetched::Fresh(v) => format!("fresh {v}"),
                    uno_cache::Fetched::Stale(v) => format!("stale {v}"),
                })
        }
        ["stats"] => Ok(format!(
            "stats {}",
            serde_json::to_string(&cache.stats()).unwrap()
        )),
        _ => panic!("unknown command {line:?}"),
    };
    result.unwrap_or_else(|e| format!("err {e}"))
}

/// The data source behind `load`: see the module docs.
fn load_source(path: &std::path::Path) -> uno_cache::Result<String> {
    let hang = path.with_extension("hang");
    while hang.exists() {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::read_to_string(path).map_err(|e| uno_cache::Error::Backend {
        level: "source",
        op: "load",
        reason: e.to_string(),
    })
}

/// The parent's handle on a child running [`serve`].
pub struct CacheProcess {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl CacheProcess {
    /// Runs the test `entry` (which must call [`serve`]) of this test binary as a child with
    /// `config_toml`, and waits for its `ready` line (its manager is open).
    pub fn start(entry: &str, config_toml: &str) -> Self {
        Self::start_with_env(entry, config_toml, &[])
    }

    /// As [`start`](Self::start), with more environment variables ([`ENV_SOURCE`],
    /// [`ENV_NOW_MS`]).
    pub fn start_with_env(entry: &str, config_toml: &str, env: &[(&str, String)]) -> Self {
        let exe = std::env::current_exe().unwrap();
        let mut child = super::support::dies_with_us(exe.to_str().unwrap())
            .args([entry, "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(ENV_CONFIG, config_toml)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for text in BufReader::new(stdout).lines() {
                let Ok(text) = text else { break };
                // The harness's own "test … " output may precede an answer on its line.
                if let Some((_, answer)) = text.split_once('@') {
                    if tx.send(answer.to_owned()).is_err() {
                        break;
                    }
                }
            }
        });
        let mut process = CacheProcess {
            child: Some(child),
            stdin,
            lines,
        };
        assert_eq!(process.next(), "ready", "the child did not open its cache");
        process
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    fn next(&mut self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .expect("the child went silent (or exited)")
    }

    /// Sends one command and returns its answer; fails the test on `err …`.
    pub fn request(&mut self, command: &str) -> String {
        let answer = self.try_request(command);
        assert!(!answer.starts_with("err "), "child: `{command}` failed: {answer}");
        answer
    }

    /// Sends one command and returns its answer, `err …` included.
    pub fn try_request(&mut self, command: &str) -> String {
        self.send(command);
        self.next()
    }

    /// Sends one command without waiting for its answer (which the next request then gets
    /// first).
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("the child was stopped");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
    }

    fn value(answer: &str) -> Option<String> {
        if answer == "none" {
            return None;
        }
        let value = answer
            .strip_prefix("value ")
            .unwrap_or_else(|| panic!("expected a value, got {answer:?}"));
        Some(value.to_owned())
    }

    /// `CacheManager::get::<String>` in the child.
    pub fn get(&mut self, key: &str) -> Option<String> {
        let answer = self.request(&format!("get {key}"));
        Self::value(&answer)
    }

    /// `CacheManager::set` of a `str` in the child, acknowledged.
    pub fn set(&mut self, key: &str, value: &str) {
        assert_eq!(self.request(&format!("set {key} {value}")), "ok");
    }

    /// `CacheManager::get_raw` in the child (UTF-8 values only).
    pub fn get_raw(&mut self, key: &str) -> Option<String> {
        let answer = self.request(&format!("get_raw {key}"));
        Self::value(&answer)
    }

    /// `CacheManager::set_raw` in the child, acknowledged.
    pub fn set_raw(&mut self, key: &str, value: &str) {
        assert_eq!(self.request(&format!("set_raw {key} {value}")), "ok");
    }

    /// `CacheManager::delete` in the child.
    pub fn delete(&mut self, key: &str) -> bool {
        match self.request(&format!("delete {key}")).as_str() {
            "deleted true" => true,
            "deleted false" => false,
            other => panic!("unexpected answer to delete: {other:?}"),
        }
    }

    /// `CacheManager::get_or_load` in the child: `fresh V`, `stale V` or `err …`.
    pub fn load(&mut self, key: &str) -> String {
        self.try_request(&format!("load {key}"))
    }

    /// `CacheManager::flush` in the child.
    pub fn flush(&mut self) {
        assert_eq!(self.request("flush"), "ok");
    }

    /// One `CacheManager::replay_now` in the child: the count, or the error's message.
    pub fn replay(&mut self) -> Result<u64, String> {
        let answer = self.try_request("replay");
        match answer.strip_prefix("replayed ") {
            Some(n) => Ok(n.parse().unwrap()),
            None => Err(answer),
        }
    }

    /// `CacheManager::stats` in the child.
    pub fn stats(&mut self) -> CacheStats {
        let answer = self.request("stats");
        let json = answer
            .strip_prefix("stats ")
            .unwrap_or_else(|| panic!("expected stats, got {answer:?}"));
        serde_json::from_str(json).unwrap()
    }

    /// Closes the child's stdin and waits for it to drop its manager and exit 0.
    pub fn stop(mut self) {
        drop(self.stdin.take());
        let status = self.child.take().unwrap().wait().unwrap();
        assert!(status.success(), "the child failed: {status}");
    }

    /// Kills the child with SIGKILL (no destructor runs, nothing is flushed or closed) and
    /// reaps it.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "not killed by SIGKILL: {status}");
    }
}

impl Drop for CacheProcess {
    fn drop(&mut self) {
        // A test that failed half-way must not leave its child behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
