//! A real `memcached` on a free loopback port, killed (and reaped) on drop.

use std::process::{Child, Command};

use super::{dies_with_us, on_a_fresh_port, probe, require, signal, try_wait_for_own_server, PortTaken};

/// A `memcached` on 127.0.0.1.
pub struct MemcachedServer {
    child: Option<Child>,
    pub port: u16,
    extra: Vec<String>,
    /// Holds the server's output (see [`try_wait_for_own_server`]).
    dir: tempfile::TempDir,
}

impl MemcachedServer {
    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// A 64 MiB server on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A server with extra `memcached` arguments (for example `["-I", "2m"]`).
    pub fn start_with(extra: &[&str]) -> Self {
        on_a_fresh_port(|port| Self::try_start_on_with(port, extra))
    }

    /// [`start`](Self::start) on `port` (from [`free_port`]); fails if another process holds
    /// it.
    pub fn start_on(port: u16) -> Self {
        Self::try_start_on_with(port, &[]).unwrap_or_else(|taken| panic!("{taken}"))
    }

    fn try_start_on_with(port: u16, extra: &[&str]) -> Result<Self, PortTaken> {
        require("memcached", "memcached");
        let mut server = MemcachedServer {
            child: None,
            port,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            dir: tempfile::tempdir().unwrap(),
        };
        server.try_spawn()?;
        Ok(server)
    }

    fn try_spawn(&mut self) -> Result<(), PortTaken> {
        let output = self.dir.path().join("output.log");
        let log = std::fs::File::create(&output).unwrap();
        // `-u root` only matters when run as root (memcached refuses root without it).
        let mut child = dies_with_us("memcached")
            .args([
                "-l",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "0",
                "-m",
                "64",
                "-t",
                "2",
            ])
            .args(["-u", "root"])
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start memcached");
        let port = self.port;
        let what = format!("memcached on {port}");
        let started = try_wait_for_own_server(&what, &mut child, port, Some(&output), || {
            probe(port, "version\r\n").is_some_and(|r| r.starts_with("VERSION"))
        });
        // A child that exited was reaped: no signal may go to its pid, which may be reused.
        started.map(|()| self.child = Some(child))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A plain client (to inspect the server directly).
    pub fn raw(&self) -> memcache::Client {
        memcache::Client::connect(format!("memcache://127.0.0.1:{}", self.port)).unwrap()
    }

    /// One `stats` value as a number.
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.raw().stats().unwrap();
        stats[0].1.get(name).unwrap().parse().unwrap()
    }

    /// Kills the server at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port (after [`kill`](Self::kill)); fails if another
    /// process took the port meanwhile (tests rely on the port staying).
    pub fn restart(&mut self) {
        self.kill();
        if let Err(taken) = self.try_spawn() {
            panic!("{taken}");
        }
    }
}

impl MemcachedServer {
    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.child.as_ref(), "-STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.as_ref(), "-CONT");
    }
}

impl Drop for MemcachedServer {
    fn drop(&mut self) {
        // A frozen process does not die of SIGKILL until thawed on some systems; thaw first.
        if self.child.is_some() {
            let _ = self
                .child
                .as_ref()
                .map(|c| Command::new("kill").args(["-CONT", &c.id().to_string()]).status());
        }
        self.kill();
    }
}
