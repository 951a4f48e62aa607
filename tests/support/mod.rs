//! Test harness: real `redis-server` / `memcached` processes on free loopback ports, each in its
//! own temp dir, killed (and reaped) on drop; and a three-node Redis Cluster.
//!
//! A server dies with the test that started it even when the test process is killed (SIGKILL, a
//! CI timeout), where no drop runs: it is started under `setpriv --pdeathsig KILL` (util-linux),
//! so the kernel kills it when the thread that started it ends, and it runs only if the test
//! process is still its parent once that is set (a kill just before would send no signal). An
//! orphaned server once skewed every bench that ran after it.
//!
//! A missing binary fails the test with the Debian package to install; nothing is skipped.
//! Waiting for a server is an event wait: we poll the server's own answer (`PING`, `version`,
//! `CLUSTER INFO`) with a bounded deadline.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

mod memcached;

// Not every test binary starts a memcached.
#[allow(unused_imports)]
pub use memcached::MemcachedServer;

const START_DEADLINE: Duration = Duration::from_secs(15);

/// Fails with the package to install when `binary` (a server, or a tool such as valgrind) is
/// not on PATH.
pub fn require(binary: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(binary).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{binary}` is not installed: these tests need the real program. Install it with \
         `apt-get install -y {package}` (Debian/Ubuntu) and run the tests again."
    );
}

/// A command that runs `program` so that it is killed when the calling thread ends, also when
/// the process is killed (see the module docs). Start a server from the thread that owns it.
pub fn dies_with_us(program: &str) -> Command {
    require("setpriv", "util-linux");
    let mut cmd = Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--", "sh", "-c", EXEC_IF_OUR_PARENT_LIVES])
        .arg(std::process::id().to_string())
        .arg(program);
    cmd
}

/// Runs this test binary's ignored test `child` alone, in a process that dies with this one,
/// with `var` set to `dir`, and fails unless it ran and passed. The child is where a test does
/// what its own process must not (lower a resource limit, say).
pub fn run_child_test(child: &str, var: &str, dir: &std::path::Path) {
    let exe = std::env::current_exe().unwrap();
    let out = dies_with_us(exe.to_str().unwrap())
        .args(["--exact", child, "--ignored", "--nocapture", "--test-threads=1"])
        .env(var, dir)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "the child failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // An `--exact` name that matched nothing passes too.
    assert!(
        stdout.contains("test result: ok. 1 passed"),
        "the child ran no test:\n{stdout}\n{stderr}"
    );
}

/// Run by `sh` once `setpriv` set the death signal, with the test process's pid as `$0`: execs
/// the program (`$@`) only if that process is still its parent. A test process killed between
/// the fork and `setpriv`'s prctl sends no signal (the child was orphaned before it asked for
/// one), and the server would have run on for good.
pub const EXEC_IF_OUR_PARENT_LIVES: &str = r#"[ "$PPID" = "$0" ] && exec "$@""#;

/// What [`after_the_next_free_port`] calls.
type TakePort = Box<dyn FnOnce(u16)>;

thread_local! {
    /// Set by [`after_the_next_free_port`].
    static AFTER_NEXT: std::cell::RefCell<Option<TakePort>> = const { std::cell::RefCell::new(None) };
}

/// Calls `take` with the next port [`free_port`] hands out on this thread, after its check that
/// the port is free: as another process that binds the port before the server does (the
/// harness's own tests of [`on_a_fresh_port`]).
pub fn after_the_next_free_port(take: impl FnOnce(u16) + 'static) {
    AFTER_NEXT.with(|next| *next.borrow_mut() = Some(Box::new(take)));
}

/// A loopback port that is free now, and whose `+10000` cluster-bus port is free too. Free now
/// only: start a server on it through [`on_a_fresh_port`], which tries another if it is taken
/// before the server binds it.
pub fn free_port() -> u16 {
    // Test binaries run at once: start each process at its own place in 12000..21000. The bus
    // ports (22000..31000) stay below Linux's range for outgoing connections (32768 on), from
    // which a client's connection could take one between this check and a node's start.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 300) as u16 * 30;
    for _ in 0..2_000 {
        let port = 12_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % 9_000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            if let Some(take) = AFTER_NEXT.with(|next| next.borrow_mut().take()) {
                take(port);
            }
            return port;
        }
    }
    panic!("no free loopback port found");
}

/// Sends one inline command and returns the first reply line (enough for PING/version/INFO
/// checks while a server starts).
fn probe(port: u16, command: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    stream.write_all(command.as_bytes()).ok()?;
    let mut buf = [0u8; 256];
    let n = stream.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Runs `future` to completion on a current-thread runtime of its own (time and I/O on): the
/// async form of a call in a test that is otherwise blocking.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

/// Waits until the server `child` started answers on `port` (`answers`), and checks that the
/// socket answering is the child's own: a free port can be taken by another process between
/// [`free_port`] and the server's start, and a foreign server's answer would otherwise pass for
/// ours (the tests would then run against a server they do not control, and stop it never).
/// Fails, naming the server, if the child exits first. A test that starts a server of its own
/// (with arguments the harness's servers do not take) waits for it here too.
pub fn wait_for_own_server(what: &str, child: &mut Child, port: u16, answers: impl FnMut() -> bool) {
    if let Err(taken) = try_wait_for_own_server(what, child, port, None, answers) {
        panic!("{taken}");
    }
}

/// A server that exited at start because a port it was to listen on was taken (its output says
/// `Address already in use`): another process bound it between [`free_port`] and the server's
/// own bind. A start on a port of [`free_port`]'s tries another ([`on_a_fresh_port`]).
#[derive(Debug)]
pub struct PortTaken {
    pub what: String,
    pub port: u16,
    pub status: std::process::ExitStatus,
    /// The server's output (stdout and stderr).
    pub output: String,
}

impl std::fmt::Display for PortTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} exited ({}) before it answered: port {} (or its cluster-bus port) is taken by \
             another process; a test starting servers must not share ports. Its output: {}",
            self.what,
            self.status,
            self.port,
            self.output.trim()
        )
    }
}

/// [`wait_for_own_server`], where the server's stdout and stderr go to the file `output`: a
/// server that exits because its port was taken is [`PortTaken`] (a start on a port of
/// [`free_port`]'s then tries another); one that exits for another reason fails the test with
/// its output.
pub fn try_wait_for_own_server(
    what: &str,
    child: &mut Child,
    port: u16,
    output: Option<&std::path::Path>,
    mut answers: impl FnMut() -> bool,
) -> Result<(), PortTaken> {
    let pid = child.id();
    let mut exited = None;
    wait_until(what, || {
        if let Ok(Some(status)) = child.try_wait() {
            exited = Some(status);
            return true;
        }
        listens_on(pid, port) && answers()
    });
    let Some(status) = exited else {
        return Ok(());
    };
    let Some(output) = output else {
        panic!(
            "{what} exited ({status}) before it answered: is port {port} taken by another \
             process (run the test again; a test starting servers must not share ports), or \
             does this build refuse its arguments (run it by hand with them to see)?"
        );
    };
    let output = std::fs::read_to_string(output).unwrap_or_default();
    assert!(
        output.contains("Address already in use"),
        "{what} exited ({status}) before it answered on port {port}; does this build refuse its \
         arguments? Its output: {}",
        output.trim()
    );
    Err(PortTaken {
        what: what.to_owned(),
        port,
        status,
        output,
    })
}

/// How many ports of [`free_port`]'s a server is started on, each after the last was taken.
const PORT_TRIES: usize = 5;

/// `start(port)` on a port from [`free_port`], again on another while it finds its port taken:
/// the port is free when [`free_port`] looks, but another process (test binaries run at once)
/// may bind it before the server does, and the server then exits at once (memcached with
/// status 71, redis-server with 1). Fails after [`PORT_TRIES`] taken ports.
pub fn on_a_fresh_port<S>(mut start: impl FnMut(u16) -> Result<S, PortTaken>) -> S {
    let mut taken = Vec::new();
    for _ in 0..PORT_TRIES {
        match start(free_port()) {
            Ok(server) => return server,
            Err(port_taken) => taken.push(port_taken.to_string()),
        }
    }
    panic!(
        "{PORT_TRIES} ports in a row were taken between the free-port check and the server's \
         start:\n{}",
        taken.join("\n")
    );
}

/// Whether process `pid` holds the socket listening on `127.0.0.1:port` (from `/proc`, so no
/// tool is needed: the listening socket's inode in `/proc/net/tcp`, among the process's fds).
fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return false;
    };
    // Fields: sl local_address rem_address st ... uid timeout inode; LISTEN is state 0A.
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.get(1) == Some(&local.as_str()) && fields.get(3) == Some(&"0A"))
                .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                .flatten()
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
    })
}

pub fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(
            started.elapsed() < START_DEADLINE,
            "{what} not ready after {START_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Calls `attempt` until it succeeds and returns what it gave; fails, saying `what`, with the
/// last error if it has not after 5 s.
pub fn until_ok<T, E: std::fmt::Display>(what: &str, mut attempt: impl FnMut() -> Result<T, E>) -> T {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(out) => return out,
            Err(err) => assert!(
                started.elapsed() < Duration::from_secs(5),
                "{what} after {:?}: {err}",
                started.elapsed()
            ),
        }
    }
}

/// Calls `get` until it answers with the value `v` (see [`until_ok`]).
pub fn until_k_answers_v(what: &str, get: impl FnMut() -> uno_cache::Result<Option<uno_cache::Entry>>) {
    let entry = until_ok(what, get);
    assert_eq!(entry.map(|e| e.value).as_deref(), Some(&b"v"[..]));
}

/// Gets through a caller whose own timeout (50 ms) is shorter than the level's, so that on a
/// silent connection it drops every call unanswered: the first attempt gives up; then `get` is
/// tried until it answers with the value `v` (see [`until_ok`]).
pub fn impatient_gets_until_k_answers_v<F>(what: &str, mut get: impl FnMut() -> F)
where
    F: std::future::Future<Output = uno_cache::Result<Option<uno_cache::Entry>>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut impatient = || {
        let call = async { tokio::time::timeout(Duration::from_millis(50), get()).await };
        rt.block_on(call)
            .map_err(|_| "the caller's own timeout".to_owned())
    };
    assert!(impatient().is_err(), "the caller gives up first");
    let entry = until_ok(what, || impatient()?.map_err(|err| err.to_string()));
    assert_eq!(entry.map(|e| e.value).as_deref(), Some(&b"v"[..]));
}

/// Asserts that every one of `results` is the Redis level's timeout of `op`.
pub fn each_timed_out_at_the_redis_deadline<T: std::fmt::Debug>(op: &str, results: &[uno_cache::Result<T>]) {
    for result in results {
        assert!(
            matches!(result, Err(uno_cache::Error::Timeout { level: "redis", op: o, .. }) if *o == op),
            "{result:?}"
        );
    }
}

/// Writes `k` through `redis`'s async API, lets `freeze` silence the connection it went over
/// (a proxy that stops forwarding without a reset), and checks that a burst of 16 async gets
/// times out at the level's deadline and that `k` is then read again, `what` naming the
/// connection it would still be stuck on. Returns how many connections `accepted` (the proxy's
/// count) saw opened from the write to the end. On a runtime without time or I/O, where the
/// level's deadlines must still hold.
#[cfg(feature = "redis")]
pub fn async_gets_leave_a_silent_connection(
    redis: &uno_cache::RedisStore,
    what: &str,
    accepted: impl Fn() -> u64,
    freeze: impl FnOnce(),
) -> u64 {
    use uno_cache::DistributedStorage;
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(redis.set_async("k", b"v", None)).unwrap();
    let connections = accepted();

    freeze();
    let burst = rt.block_on(futures_util::future::join_all(
        (0..16).map(|_| redis.get_async("k")),
    ));
    each_timed_out_at_the_redis_deadline("get", &burst);

    until_k_answers_v(what, || rt.block_on(redis.get_async("k")));
    accepted() - connections
}

/// A `redis-server` on 127.0.0.1.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    password: Option<String>,
    /// Serve TLS only, with the certificates in this directory (see [`make_tls_certs`]).
    tls: Option<std::path::PathBuf>,
}

/// A CA and a server certificate for 127.0.0.1 / localhost, made with the `openssl` CLI in
/// `dir`: `ca.crt`, `server.crt`, `server.key`.
pub fn make_tls_certs(dir: &std::path::Path) {
    require("openssl", "openssl");
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=uno-cache test CA",
        ],
    );
    signed_by_the_ca(dir, "server", "/CN=localhost", "ext.cnf");
}

/// A client certificate (`client.crt`, `client.key`) signed by the CA that [`make_tls_certs`]
/// made in `dir`, for servers started with `--tls-auth-clients yes`.
pub fn make_client_cert(dir: &std::path::Path) {
    std::fs::write(dir.join("client.cnf"), "extendedKeyUsage=clientAuth\n").unwrap();
    signed_by_the_ca(dir, "client", "/CN=uno-cache test client", "client.cnf");
}

/// `NAME.key` and `NAME.crt` for `subject` in `dir`, signed by the CA there, with the
/// extensions in the file `extensions`.
fn signed_by_the_ca(dir: &std::path::Path, name: &str, subject: &str, extensions: &str) {
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj", subject,
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            extensions,
        ],
    );
}

/// Runs the `openssl` CLI in `dir`; fails with its stderr if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RedisServer {
    /// A server with no persistence on a free port.
    pub fn start() -> Self {
        Self::start_with(&[], None)
    }

    /// A server that requires `password`.
    pub fn with_password(password: &str) -> Self {
        Self::start_with(&[], Some(password))
    }

    /// A server with extra `redis-server` arguments.
    pub fn start_with(extra: &[&str], password: Option<&str>) -> Self {
        on_a_fresh_port(|port| Self::try_start_on(port, extra, password))
    }

    /// [`start_with`](Self::start_with) on `port` (from [`free_port`]); fails if another
    /// process holds it.
    pub fn start_on(port: u16, extra: &[&str], password: Option<&str>) -> Self {
        Self::try_start_on(port, extra, password).unwrap_or_else(|taken| panic!("{taken}"))
    }

    /// [`start_on`](Self::start_on), or [`PortTaken`].
    pub fn try_start_on(port: u16, extra: &[&str], password: Option<&str>) -> Result<Self, PortTaken> {
        require("redis-server", "redis-server");
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            password: password.map(str::to_owned),
            tls: None,
        };
        server.try_spawn()?;
        Ok(server)
    }

    /// A server that speaks only TLS, with certificates from [`make_tls_certs`] in `certs`.
    pub fn start_tls(certs: &std::path::Path) -> Self {
        Self::start_tls_with(certs, &[])
    }

    /// [`start_tls`](Self::start_tls) with extra `redis-server` arguments (they come last, so
    /// `--tls-auth-clients yes` overrides the default `no`; the readiness check then presents
    /// the client certificate of [`make_client_cert`]).
    pub fn start_tls_with(certs: &std::path::Path, extra: &[&str]) -> Self {
        require("redis-server", "redis-server");
        require("redis-cli", "redis-tools");
        on_a_fresh_port(|port| {
            let mut server = RedisServer {
                child: None,
                port,
                dir: tempfile::tempdir().unwrap(),
                extra: extra.iter().map(|s| (*s).to_owned()).collect(),
                password: None,
                tls: Some(certs.to_owned()),
            };
            server.try_spawn()?;
            Ok(server)
        })
    }

    /// Where the server's stdout and stderr go (its log, which says why it exited).
    fn output(&self) -> std::path::PathBuf {
        self.dir.path().join("output.log")
    }

    fn try_spawn(&mut self) -> Result<(), PortTaken> {
        let mut cmd = dies_with_us("redis-server");
        match &self.tls {
            Some(certs) => {
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &self.port.to_string(),
                    "--tls-auth-clients",
                    "no",
                ])
                .arg("--tls-cert-file")
                .arg(certs.join("server.crt"))
                .arg("--tls-key-file")
                .arg(certs.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(certs.join("ca.crt"));
            }
            None => {
                cmd.args(["--port", &self.port.to_string()]);
            }
        }
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra);
        let output = self.output();
        let log = std::fs::File::create(&output).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log);
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let mut child = cmd.spawn().expect("start redis-server");
        let port = self.port;
        let output = Some(output.as_path());
        let started = if let Some(certs) = &self.tls {
            let what = format!("redis-server (TLS) on {port}");
            try_wait_for_own_server(&what, &mut child, port, output, || {
                let mut cli = Command::new("redis-cli");
                cli.args(["--tls", "-p", &port.to_string(), "--cacert"])
                    .arg(certs.join("ca.crt"));
                if certs.join("client.crt").is_file() {
                    cli.arg("--cert")
                        .arg(certs.join("client.crt"))
                        .arg("--key")
                        .arg(certs.join("client.key"));
                }
                cli.arg("PING")
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
            })
        } else {
            let what = format!("redis-server on {port}");
            try_wait_for_own_server(&what, &mut child, port, output, || {
                probe(port, "PING\r\n").is_some_and(|r| r.starts_with("+PONG") || r.contains("NOAUTH"))
            })
        };
        // A child that exited was reaped: no signal may go to its pid, which may be reused.
        started.map(|()| self.child = Some(child))
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `redis://[:password@]127.0.0.1:port/`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/", self.port),
            None => format!("redis://127.0.0.1:{}/", self.port),
        }
    }

    /// A plain synchronous client connection (to inspect the server directly).
    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url()).unwrap().get_connection().unwrap()
    }

    /// `calls` of `cmdstat_<command>` in `INFO commandstats` (0 if never called).
    pub fn command_calls(&self, command: &str) -> u64 {
        command_calls(&mut self.raw(), command)
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

    /// The server's process id while it runs (to pin it to a CPU in benches).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the process (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        signal(self.child.as_ref(), "-STOP");
    }

    /// Thaws it (SIGCONT).
    pub fn resume(&self) {
        signal(self.child.as_ref(), "-CONT");
    }
}

fn signal(child: Option<&Child>, sig: &str) {
    let pid = child.expect("server not running").id().to_string();
    let status = Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap_or_else(|e| panic!("could not run `kill`: {e}. Install it with `apt-get install -y procps`"));
    assert!(status.success(), "kill {sig} {pid} failed");
    if sig == "-STOP" {
        wait_until_stopped(&pid);
    }
}

/// Returns once every thread of `pid` is stopped. `kill -STOP` returns when the signal is
/// queued, not when the process has stopped: on a loaded machine a server thread may still
/// answer a request after it (CI once saw a `set` succeed on a "paused" memcached).
fn wait_until_stopped(pid: &str) {
    let started = Instant::now();
    loop {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("read /proc/<pid>/task of a server we started");
        let all_stopped = tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat"))
                // The state is the first field after the parenthesised command name.
                .map(|stat| stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('T')))
                .unwrap_or(false)
        });
        if all_stopped {
            return;
        }
        assert!(
            started.elapsed() < START_DEADLINE,
            "process {pid} did not stop within {START_DEADLINE:?} of SIGSTOP"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

impl Drop for RedisServer {
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

/// `calls` of `cmdstat_<command>` from `INFO commandstats` on a connection.
pub fn command_calls(conn: &mut redis::Connection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    let needle = format!("cmdstat_{}:calls=", command.to_lowercase());
    info.lines()
        .find_map(|line| line.strip_prefix(&needle))
        .map(|rest| rest.split(',').next().unwrap().parse().unwrap())
        .unwrap_or(0)
}

/// A three-primary Redis Cluster (no replicas) on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A cluster whose nodes get `extra` arguments too (for example
    /// `["--cluster-require-full-coverage", "no"]`, so that the live primaries keep serving
    /// their slots once they mark a killed one as failed).
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_each(|_| extra.iter().map(|arg| (*arg).to_owned()).collect())
    }

    /// A cluster whose node on port `p` gets the extra arguments `extra_for(p)` (for example a
    /// `--cluster-announce-port` of its own, so that clients reach it through a proxy).
    pub fn start_each(mut extra_for: impl FnMut(u16) -> Vec<String>) -> Self {
        require("redis-server", "redis-server");
        require("redis-cli", "redis-tools");
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                on_a_fresh_port(|port| {
                    let mut args = vec!["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"];
                    let extra = extra_for(port);
                    args.extend(extra.iter().map(String::as_str));
                    RedisServer::try_start_on(port, &args, None)
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(RedisServer::addr).collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for node in &nodes {
            let port = node.port;
            wait_until(&format!("cluster_state:ok on {port}"), || {
                let mut conn = node.raw();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                info.contains("cluster_state:ok")
            });
        }
        // Every node must also agree on all 16384 slots before clients fetch the map.
        for node in &nodes {
            wait_until("slot coverage", || {
                let mut conn = node.raw();
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query(&mut conn)
                    .unwrap_or_default();
                info.contains("cluster_slots_ok:16384")
            });
        }
        RedisCluster { nodes }
    }

    /// The seed addresses.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    /// A `RedisStore` on the cluster, its keys under `prefix`, with a 500 ms deadline.
    #[cfg(feature = "redis")]
    pub fn store(&self, prefix: &str) -> uno_cache::RedisStore {
        uno_cache::RedisStore::connect(
            uno_cache::RedisOptions::with_hosts(self.addrs())
                .cluster(true)
                .prefix(prefix)
                .timeout(Duration::from_millis(500)),
        )
        .unwrap()
    }

    /// The node serving `slot` (index into `nodes`).
    pub fn node_of_slot(&self, slot: u16) -> usize {
        let port = self.port_of_slot(slot);
        self.nodes.iter().position(|n| n.port == port).unwrap()
    }

    /// The port that `CLUSTER SLOTS` gives clients for the owner of `slot`: the node's own, or
    /// the one it announces (`--cluster-announce-port`).
    pub fn port_of_slot(&self, slot: u16) -> u16 {
        self.port_of_slot_asking(0, slot)
    }

    /// [`port_of_slot`](Self::port_of_slot) as the node `asked` (index into `nodes`) sees it.
    pub fn port_of_slot_asking(&self, asked: usize, slot: u16) -> u16 {
        let mut conn = self.nodes[asked].raw();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
        for entry in slots {
            let redis::Value::Array(fields) = entry else {
                panic!("bad CLUSTER SLOTS")
            };
            let start: i64 = redis::from_redis_value(fields[0].clone()).unwrap();
            let end: i64 = redis::from_redis_value(fields[1].clone()).unwrap();
            let redis::Value::Array(primary) = &fields[2] else {
                panic!("bad CLUSTER SLOTS")
            };
            let port: i64 = redis::from_redis_value(primary[1].clone()).unwrap();
            if (start..=end).contains(&i64::from(slot)) {
                return u16::try_from(port).unwrap();
            }
        }
        panic!("slot {slot} has no owner");
    }

    /// The first key `{stem}0`, `{stem}1`, … whose slot `node` owns. The stem is a hash tag, so
    /// any prefix before it keeps the key on that node.
    pub fn key_on(&self, node: usize, stem: &str) -> String {
        (0..)
            .map(|i| format!("{{{stem}{i}}}"))
            .find(|key| self.node_of_slot(self.keyslot(key)) == node)
            .unwrap()
    }

    /// `CLUSTER KEYSLOT key` as the server computes it.
    pub fn keyslot(&self, key: &str) -> u16 {
        let mut conn = self.nodes[0].raw();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut conn)
            .unwrap()
    }
}
