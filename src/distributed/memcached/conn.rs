//! Connections to one host and the two executors that run [commands](super::commands) on them.
//!
//! - **Blocking** calls run on the caller's thread, on a plain `TcpStream` whose read and write
//!   timeouts are set to what is left of the call's deadline before each system call. A call
//!   over several hosts sends each its first command before it reads any reply, so the hosts
//!   work at once, then reads the replies together as their bytes arrive (`together`): a host
//!   that does not answer holds up no other's reply, however large; what arrived by the
//!   deadline is taken even if it passed meanwhile. (A call with several commands for some host, or with a host
//!   that has no idle connection to start on, runs each host's [`start`](Host::start) and
//!   [`finish`](Host::finish) on a thread of its own instead.)
//! - **Async** calls run on the store's I/O thread (a current-thread tokio runtime, so callers
//!   need no runtime of their own, nor one with timers) on tokio streams; the deadline bounds
//!   each connect and command there, so the commands that completed before it stand.
//!
//! Each host runs at most `workers` async calls at once, on as many connections kept open; a
//! blocking call runs on an idle connection if one is free, else on a new one, and up to
//! `max(workers, 64)` of them are kept for reuse (blocking calls are bounded by the callers'
//! threads). A connection is taken for
//! one call and only returned after a reply was read in full; any failure (I/O error, a reply
//! out of step) drops it. A missed deadline (or an async caller that stopped waiting) leaves a
//! late reply in the socket, and the command may still run: a connection given up so while it
//! carried a `set`, sent whole or in part, is handed over ([`HandOver`]) with the part not sent
//! to the store's writes in doubt (`super::doubt`), which probe it ([`answered`]); any other is
//! dropped. A call
//! whose reused connection turns out to be closed by the server (it restarted) tries once more
//! on a fresh one: every command we send is idempotent.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::commands::{Command, Site, Step, Written};
use super::options::HostSpec;
use super::protocol::{
    is_unauthenticated, opcode, parse_header, status, Header, Packet, HEADER_LEN, UNAUTHENTICATED,
};
use crate::distributed::resolve::{Resolver, Unresolved};
use crate::distributed::runtime::deadline_after;
use crate::error::{Error, Result};

mod probe;
mod reply;
mod together;

pub(super) use probe::{answered, Probed};
use reply::Partial;
pub(super) use together::read_first_replies;

const LEVEL: &str = "memcached";
/// Read buffer per connection: a typical reply is one read.
const READ_BUFFER: usize = 16 * 1024;
/// A reply body grows by at most this much ahead of the bytes read (its capacity by doubling),
/// so a header that claims a large body (a stream out of step, a server that is not memcached)
/// costs memory only as its bytes arrive, never up to a gibibyte at once on a small machine.
const BODY_STEP: usize = 1 << 20;
/// Idle blocking connections kept per host, at least: as many caller threads as call at once
/// up to this many reuse their connections instead of opening and closing one per call (which
/// would fill the machine's ephemeral ports with TIME_WAIT sockets under load).
const MIN_IDLE_BLOCKING: usize = 64;
/// The longest text-protocol line the start-up probe reads (memcached's `VERSION 1.6.18`).
const TEXT_LINE_MAX: u64 = 256;

/// Why a call on a connection failed; the connection is dropped in every case.
#[derive(Debug)]
enum Fault {
    /// The deadline passed.
    Timeout,
    Io(std::io::Error),
    /// The reply cannot be read (out of step, damaged); the message says how.
    Protocol(String),
    /// The server wants an authenticated connection (it runs with SASL or an auth file); its
    /// text.
    Unauthenticated(String),
}

impl From<std::io::Error> for Fault {
    fn from(err: std::io::Error) -> Self {
        match err.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Fault::Timeout,
            _ => Fault::Io(err),
        }
    }
}

impl Fault {
    /// Whether the server closed the connection before we used it (it restarted, or dropped an
    /// idle client): worth one more try on a fresh connection.
    fn stale(&self) -> bool {
        matches!(self, Fault::Io(io) if matches!(
            io.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::UnexpectedEof
        ))
    }
}

/// A connection given up on while a command that stores values was unanswered on it (it timed
/// out, or its async caller stopped waiting), its request sent whole or in part. Handed to the
/// store's writes in doubt.
pub(super) struct Unanswered {
    pub(super) conn: Handed,
    /// What had not been sent of the request (empty if it went out whole). The probe sends it
    /// before its `noop`: closed instead, the connection would still have its sent part run,
    /// complete items of a batch included, whenever the server read again, with nothing left to
    /// tell when; and a `noop` sent after a half-sent request would be read as part of it.
    pub(super) rest: Vec<u8>,
}

/// The connection of [`Unanswered`].
pub(super) enum Handed {
    Blocking(SyncConn),
    Async(AsyncConn),
}

/// Where a call's connections go when given up on as [`Unanswered`]: with the items the command
/// in flight stores (see [`Command::written`]).
pub(super) type HandOver<'a> = &'a (dyn Fn(&[Written<'_>], Unanswered) + Sync);

/// Hands `conn` over if `command` stores values and its request went out, whole or in part
/// (`rest`: what had not); drops it otherwise. A request of which nothing went out cannot run.
fn give_up<C: Command>(hand_over: HandOver<'_>, command: &C, conn: Handed, rest: Option<&[u8]>) {
    let Some(rest) = rest else {
        return;
    };
    let written = command.written();
    if !written.is_empty() {
        let rest = rest.to_vec();
        hand_over(&written, Unanswered { conn, rest });
    }
}

/// What had not been sent of `request`, of which `sent` bytes went out: `None` if nothing did.
fn unsent(request: &[u8], sent: usize) -> Option<&[u8]> {
    (sent > 0).then(|| request.get(sent..).unwrap_or_default())
}

/// What is left of `deadline`, or a timeout.
fn left(deadline: Instant) -> std::result::Result<Duration, Fault> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(Fault::Timeout)
    } else {
        Ok(left)
    }
}

/// A blocking connection.
pub(super) struct SyncConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` read but not yet consumed: `buf[start..end]`.
    start: usize,
    end: usize,
    /// The reply packet being read (see [`Partial`]).
    partial: Partial,
}

impl SyncConn {
    /// Sends `bytes` from `sent` on, counting in `sent` what went out (for a timeout).
    fn write_all(
        &mut self,
        bytes: &[u8],
        sent: &mut usize,
        deadline: Instant,
    ) -> std::result::Result<(), Fault> {
        while let Some(rest) = bytes.get(*sent..).filter(|rest| !rest.is_empty()) {
            self.stream.set_write_timeout(Some(left(deadline)?))?;
            match self.stream.write(rest) {
                Ok(0) => return Err(Fault::Io(std::io::ErrorKind::WriteZero.into())),
                Ok(n) => *sent += n,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// The next reply packet: from the buffer, then from the socket, each read bounded by the
    /// deadline (`None`: only what has arrived, see [`together`]). A read cut short keeps
    /// what it took in `partial`.
    fn read_packet(&mut self, deadline: Option<Instant>) -> std::result::Result<Packet, Fault> {
        loop {
            let Some(room) = self.partial.room()? else {
                return self
                    .partial
                    .take()
                    .ok_or_else(|| Fault::Protocol("no whole packet".to_owned()));
            };
            if self.start == self.end {
                if room.len() >= self.buf.len() {
                    // A large value: read straight into it.
                    let n = read_by(&mut self.stream, room, deadline)?;
                    self.partial.filled(n);
                    continue;
                }
                self.end = read_by(&mut self.stream, &mut self.buf, deadline)?;
                self.start = 0;
            }
            let n = (self.end - self.start).min(room.len());
            let (Some(dest), Some(src)) = (room.get_mut(..n), self.buf.get(self.start..self.start + n))
            else {
                return Err(Fault::Protocol("read buffer out of bounds".to_owned()));
            };
            dest.copy_from_slice(src);
            self.start += n;
            self.partial.filled(n);
        }
    }

    /// Reads the reply of `command`, sent already.
    fn receive<C: Command>(
        &mut self,
        command: &C,
        deadline: Instant,
    ) -> std::result::Result<C::State, Fault> {
        let mut state = C::State::default();
        self.receive_into(command, &mut state, Some(deadline))?;
        Ok(state)
    }

    /// Reads the rest of `command`'s reply into `state`, its packets read so far; with no
    /// `deadline`, until nothing more has arrived
    /// ([`Fault::Timeout`], `state` and `partial` keeping what was read).
    fn receive_into<C: Command>(
        &mut self,
        command: &C,
        state: &mut C::State,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), Fault> {
        loop {
            let packet = self.read_packet(deadline)?;
            refuse_unauthenticated(&packet)?;
            if command.accept(state, packet).map_err(Fault::Protocol)? == Step::Done {
                return Ok(());
            }
        }
    }
}

/// The header in `head`; memcached's line for a connection that has not authenticated, read
/// there, is [`Fault::Unauthenticated`].
fn read_header(head: &[u8; HEADER_LEN]) -> std::result::Result<Header, Fault> {
    parse_header(head).map_err(|why| match is_unauthenticated(head) {
        true => Fault::Unauthenticated(UNAUTHENTICATED.to_owned()),
        false => Fault::Protocol(why),
    })
}

/// memcached run with SASL (`-S`) answers `version` on any connection, and every other command
/// of a connection that has not authenticated with an authentication error, then closes it. Read
/// as a refusal of the key, the close that followed made the error an "unexpected end of file"
/// that said nothing of authentication, from a store that had connected without complaint.
/// (A `flush_all` refused so is left to its command: memcached run with `-F` refuses it with the
/// same status, on a connection that serves everything else.)
fn refuse_unauthenticated(packet: &Packet) -> std::result::Result<(), Fault> {
    match packet.header.status {
        status::AUTH_REQUIRED | status::AUTH_ERROR if packet.header.opcode != opcode::FLUSH => {
            Err(Fault::Unauthenticated(packet.value_text()))
        }
        _ => Ok(()),
    }
}

/// Reads what arrives by `deadline`; once it passed, only what has arrived already: a reply that
/// came in while another host was read is the answering host's success, not its timeout.
/// `None`: only what has arrived already ([`together`] waits for the bytes itself).
fn read_by(
    stream: &mut TcpStream,
    out: &mut [u8],
    deadline: Option<Instant>,
) -> std::result::Result<usize, Fault> {
    if let Some(left) = deadline.and_then(|deadline| left(deadline).ok()) {
        stream.set_read_timeout(Some(left))?;
        return read_some(stream, out);
    }
    read_arrived(stream, out)
}

/// One read of what has arrived, without waiting ([`Fault::Timeout`] if nothing has): a
/// `recv` with `MSG_DONTWAIT`, where switching the socket to non-blocking and back cost two
/// more system calls per host of every call that reads its hosts together.
fn read_arrived(stream: &TcpStream, out: &mut [u8]) -> std::result::Result<usize, Fault> {
    loop {
        // The second count is the datagram's whole length, for `MSG_TRUNC`: a stream has none.
        match rustix::net::recv(stream, &mut *out, rustix::net::RecvFlags::DONTWAIT) {
            Ok((0, _)) if !out.is_empty() => return Err(Fault::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok((n, _)) => return Ok(n),
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(std::io::Error::from(e).into()),
        }
    }
}

fn read_some(stream: &mut TcpStream, out: &mut [u8]) -> std::result::Result<usize, Fault> {
    loop {
        match stream.read(out) {
            Ok(0) => return Err(Fault::Io(std::io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => return Ok(n),
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err.into()),
        }
    }
}

/// An async connection; lives on the I/O thread's runtime.
pub(super) struct AsyncConn {
    stream: tokio::io::BufReader<tokio::net::TcpStream>,
    /// The reply packet being read (see [`Partial`]).
    partial: Partial,
}

impl AsyncConn {
    /// Sends `request`, counting in `sent` what went out: a future dropped part way leaves the
    /// count exact (a write that did not complete sent nothing).
    async fn send(&mut self, request: &[u8], sent: &AtomicUsize) -> std::result::Result<(), Fault> {
        let stream = self.stream.get_mut();
        while let Some(rest) = request
            .get(sent.load(Ordering::Relaxed)..)
            .filter(|rest| !rest.is_empty())
        {
            match stream.write(rest).await? {
                0 => return Err(Fault::Io(std::io::ErrorKind::WriteZero.into())),
                n => sent.fetch_add(n, Ordering::Relaxed),
            };
        }
        Ok(())
    }

    async fn receive<C: Command>(&mut self, command: &C) -> std::result::Result<C::State, Fault> {
        let mut state = C::State::default();
        loop {
            let packet = self.partial.read_from(&mut self.stream).await?;
            refuse_unauthenticated(&packet)?;
            if command.accept(&mut state, packet).map_err(Fault::Protocol)? == Step::Done {
                return Ok(state);
            }
        }
    }
}

/// One host: its address and its idle connections.
pub(super) struct Host {
    pub(super) spec: HostSpec,
    /// The host's addresses for blocking connects, looked up within their deadlines.
    resolver: Resolver,
    idle: Mutex<Vec<SyncConn>>,
    idle_async: Mutex<Vec<AsyncConn>>,
    /// Async calls in flight on this host at once: at most `keep`, so that a burst of tasks
    /// waits for a connection instead of opening (and closing) one each.
    async_slots: tokio::sync::Semaphore,
    keep: usize,
    /// The item limit (`item_size_max`, its `-I`) the host reported at connect or rejoining
    /// (`store::rejoin`), 0 if unknown;
    /// only for the error of a value the host refuses.
    item_size_max: AtomicUsize,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("host", &self.spec.display)
            .finish_non_exhaustive()
    }
}

impl Host {
    pub(super) fn new(spec: HostSpec, keep: usize) -> Self {
        // A semaphore counts at most `MAX_PERMITS` (more is a panic), as good as no bound.
        let keep = keep.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Host {
            resolver: Resolver::new(&spec.host, spec.port),
            spec,
            idle: Mutex::new(Vec::new()),
            idle_async: Mutex::new(Vec::new()),
            async_slots: tokio::sync::Semaphore::new(keep),
            keep,
            item_size_max: AtomicUsize::new(0),
        }
    }

    /// Whether a blocking call would find an idle connection to start on, rather than connect
    /// first (see `Call::run` in the store).
    pub(super) fn has_idle(&self) -> bool {
        !self.idle.lock().is_empty()
    }

    /// Keeps the item limit the host reported (`stats settings`), for its refusals' errors.
    pub(super) fn learn_item_size_max(&self, bytes: usize) {
        self.item_size_max.store(bytes, Ordering::Relaxed);
    }

    fn site(&self, op: &'static str) -> Site<'_> {
        Site {
            op,
            host: &self.spec.display,
            item_size_max: Some(self.item_size_max.load(Ordering::Relaxed)).filter(|&n| n > 0),
        }
    }

    fn error(&self, op: &'static str, timeout: Duration, fault: Fault) -> Error {
        let reason = match fault {
            Fault::Timeout => {
                return Error::Timeout {
                    level: LEVEL,
                    op,
                    server: self.spec.display.clone(),
                    after: timeout,
                }
            }
            Fault::Io(err) => format!("{}: {err}", self.spec.display),
            Fault::Protocol(what) => format!("{}: unreadable reply ({what})", self.spec.display),
            Fault::Unauthenticated(text) => {
                return Error::Misconfigured {
                    level: LEVEL,
                    hosts: self.spec.display.clone(),
                    reason: format!(
                        "memcached there requires authentication (it answered {text:?}): it runs \
                         with SASL (-S) or an auth file (-Y), and uno-cache speaks to memcached \
                         without authentication; run it without them, on a network only its \
                         clients reach"
                    ),
                    call_only: false,
                }
            }
        };
        Error::Backend {
            level: LEVEL,
            op,
            reason,
        }
    }

    fn connect(&self, deadline: Instant) -> std::result::Result<SyncConn, Fault> {
        let addrs = self.resolver.addrs(deadline).map_err(|e| match e {
            Unresolved::Timeout => Fault::Timeout,
            Unresolved::Failed(why) => Fault::Io(std::io::Error::other(why)),
        })?;
        let mut last = None;
        for addr in addrs.iter() {
            match TcpStream::connect_timeout(addr, left(deadline)?) {
                Ok(stream) => {
                    stream.set_nodelay(self.spec.nodelay)?;
                    return Ok(SyncConn {
                        stream,
                        buf: vec![0; READ_BUFFER],
                        start: 0,
                        end: 0,
                        partial: Partial::new(),
                    });
                }
                Err(err) => last = Some(Fault::from(err)),
            }
        }
        Err(last.unwrap_or_else(|| Fault::Protocol("the host name resolves to no address".to_owned())))
    }

    /// A new connection for an async call; the caller's deadline drops it. The name is looked
    /// up as for a blocking connect (see [`Resolver`]): tokio's own lookup took a thread of its
    /// blocking pool per call while the name server was silent.
    async fn connect_async(&self) -> std::result::Result<AsyncConn, Fault> {
        let addrs = self.resolver.addrs_async().await.map_err(|e| match e {
            Unresolved::Timeout => Fault::Timeout,
            Unresolved::Failed(why) => Fault::Io(std::io::Error::other(why)),
        })?;
        let mut last = None;
        for addr in addrs.iter() {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(stream) => {
                    stream.set_nodelay(self.spec.nodelay)?;
                    return Ok(AsyncConn {
                        stream: tokio::io::BufReader::with_capacity(READ_BUFFER, stream),
                        partial: Partial::new(),
                    });
                }
                Err(err) => last = Some(Fault::from(err)),
            }
        }
        Err(last.unwrap_or_else(|| Fault::Protocol("the host name resolves to no address".to_owned())))
    }

    /// The line the host answers to memcached's text `version` on a fresh connection within
    /// `within`, if it answers one. For the start-up check, to tell a memcached started with
    /// `-B ascii`, or a server of another protocol on the port, from a host that is down.
    pub(super) async fn text_line(&self, within: Duration) -> Option<String> {
        let probe = async {
            let mut conn = self.connect_async().await.ok()?;
            conn.stream.get_mut().write_all(b"version\r\n").await.ok()?;
            let mut line = Vec::new();
            // One line; a peer that sends more without a line end is not memcached.
            (&mut conn.stream)
                .take(TEXT_LINE_MAX)
                .read_until(b'\n', &mut line)
                .await
                .ok()?;
            Some(String::from_utf8_lossy(&line).trim_end().to_owned())
        };
        tokio::time::timeout(within, probe).await.ok().flatten()
    }

    /// Runs `commands` in order on one connection, on the caller's thread, by `deadline`, in
    /// two halves. This one takes a connection and sends the first command, without waiting
    /// for its reply. A call over several hosts starts each before it reads
    /// any, so the hosts work at once and a slow one does not spend the others' time. A `set`
    /// whose sending ran out of the deadline goes to `hand_over`.
    pub(super) fn start<C: Command>(
        &self,
        op: &'static str,
        timeout: Duration,
        deadline: Instant,
        first: Option<&C>,
        hand_over: HandOver<'_>,
    ) -> Result<Started<C::State>> {
        // The time went to other hosts of the call: a pooled connection taken now would fail
        // its first write at once and be closed, so a healthy host lost one connection per such
        // call, and the calls after it connected anew.
        left(deadline).map_err(|f| self.error(op, timeout, f))?;
        let taken = self.idle.lock().pop();
        let (conn, reused) = match taken {
            Some(conn) => (conn, true),
            None => (
                self.connect(deadline).map_err(|f| self.error(op, timeout, f))?,
                false,
            ),
        };
        let mut started = Started {
            conn,
            reused,
            sent: false,
            reply: None,
        };
        let Some(command) = first else {
            return Ok(started);
        };
        let mut request = Vec::new();
        command
            .encode(&mut request)
            .map_err(|what| self.error(op, timeout, Fault::Protocol(what)))?;
        let mut sent = 0;
        match started.conn.write_all(&request, &mut sent, deadline) {
            Ok(()) => started.sent = true,
            // Closed by the server while idle: `finish` sends it again on a fresh connection.
            Err(fault) if reused && fault.stale() => {}
            Err(Fault::Timeout) => {
                let rest = unsent(&request, sent);
                give_up(hand_over, command, Handed::Blocking(started.conn), rest);
                return Err(self.error(op, timeout, Fault::Timeout));
            }
            Err(fault) => return Err(self.error(op, timeout, fault)),
        }
        Ok(started)
    }

    /// The second half of [`start`](Self::start): reads the first command's reply and runs the
    /// others. Every command runs even if an earlier one was refused; the outputs up to the
    /// first refusal or failure are kept (a host's part of a large batch is several commands,
    /// and what the earlier ones settled stands when a later one fails). A `set` that ran out
    /// of the deadline goes to `hand_over` with its connection.
    pub(super) fn finish<C: Command>(
        &self,
        op: &'static str,
        timeout: Duration,
        deadline: Instant,
        commands: &[C],
        started: Result<Started<C::State>>,
        hand_over: HandOver<'_>,
    ) -> Ran<C::Output> {
        let mut outputs = Vec::with_capacity(commands.len());
        let stopped = started
            .and_then(|started| {
                self.finish_into(
                    op,
                    timeout,
                    deadline,
                    (commands, hand_over),
                    started,
                    &mut outputs,
                )
            })
            .err();
        Ran::settle(outputs, stopped)
    }

    fn finish_into<C: Command>(
        &self,
        op: &'static str,
        timeout: Duration,
        deadline: Instant,
        (commands, hand_over): (&[C], HandOver<'_>),
        started: Started<C::State>,
        outputs: &mut Vec<Result<C::Output>>,
    ) -> Result<()> {
        let site = self.site(op);
        let Started {
            mut conn,
            mut reused,
            mut sent,
            reply: mut first,
        } = started;
        let mut request = Vec::new();
        let mut queue = commands.iter().peekable();
        while let Some(&command) = queue.peek() {
            // Bytes of `request` sent, for a timeout; `None`: it went out whole in `start`.
            let mut progress = None;
            let reply = if std::mem::take(&mut sent) {
                // Read already if the call's hosts were read together.
                first.take().unwrap_or_else(|| conn.receive(command, deadline))
            } else {
                request.clear();
                command
                    .encode(&mut request)
                    .map_err(|what| self.error(op, timeout, Fault::Protocol(what)))?;
                conn.write_all(&request, progress.insert(0), deadline)
                    .and_then(|()| conn.receive(command, deadline))
            };
            match reply {
                Ok(state) => {
                    outputs.push(command.finish(state, site));
                    reused = false;
                    queue.next();
                }
                Err(fault) if reused && fault.stale() && left(deadline).is_ok() => {
                    reused = false;
                    conn = self.connect(deadline).map_err(|f| self.error(op, timeout, f))?;
                }
                Err(Fault::Timeout) => {
                    let rest = match progress {
                        None => Some(&[][..]),
                        Some(sent) => unsent(&request, sent),
                    };
                    give_up(hand_over, command, Handed::Blocking(conn), rest);
                    return Err(self.error(op, timeout, Fault::Timeout));
                }
                Err(fault) => return Err(self.error(op, timeout, fault)),
            }
        }
        let mut idle = self.idle.lock();
        if idle.len() < self.keep.max(MIN_IDLE_BLOCKING) {
            idle.push(conn);
        }
        drop(idle);
        Ok(())
    }

    /// One of the host's `workers` slots for an async call, once one is free. The wait is the
    /// store's own, not the host's: the caller keeps it apart from [`run_async`](Self::run_async)
    /// so that a burst of calls that runs out of time here is not held against the host.
    pub(super) async fn async_slot(&self, op: &'static str) -> Result<tokio::sync::SemaphorePermit<'_>> {
        // Never closed, so acquiring fails only if that changes; say so rather than hang.
        self.async_slots.acquire().await.map_err(|_| Error::Backend {
            level: LEVEL,
            op,
            reason: format!("{}: the store is shutting down", self.spec.display),
        })
    }

    /// [`start`](Self::start) and [`finish`](Self::finish) for the I/O thread, a slot waited
    /// for first (startup's checks, corrections of writes in doubt): commands that store nothing.
    pub(super) async fn run_async<C: Command>(
        &self,
        op: &'static str,
        timeout: Duration,
        commands: &[C],
    ) -> Result<Vec<C::Output>> {
        let slot = self.async_slot(op).await?;
        let deadline = deadline_after(timeout);
        self.run_on_slot(op, timeout, deadline, &slot, (commands, &|_, _| {}))
            .await
            .into_result()
    }

    /// [`start`](Self::start) and [`finish`](Self::finish) for the I/O thread, on the `slot` the caller got from
    /// [`async_slot`](Self::async_slot), by `deadline` (a missed deadline drops the connection,
    /// or hands it to `hand_over` while a `set` is unanswered on it, as does a drop of the call).
    pub(super) async fn run_on_slot<C: Command>(
        &self,
        op: &'static str,
        timeout: Duration,
        deadline: Instant,
        _slot: &tokio::sync::SemaphorePermit<'_>,
        commands: (&[C], HandOver<'_>),
    ) -> Ran<C::Output> {
        let mut outputs = Vec::with_capacity(commands.0.len());
        let stopped = self
            .run_async_into(op, timeout, deadline, commands, &mut outputs)
            .await
            .err();
        Ran::settle(outputs, stopped)
    }

    async fn run_async_into<C: Command>(
        &self,
        op: &'static str,
        timeout: Duration,
        deadline: Instant,
        (commands, hand_over): (&[C], HandOver<'_>),
        outputs: &mut Vec<Result<C::Output>>,
    ) -> Result<()> {
        let site = self.site(op);
        let taken = self.idle_async.lock().pop();
        let (mut conn, mut reused) = match taken {
            Some(conn) => (Some(conn), true),
            None => (
                Some(
                    by(deadline, self.connect_async())
                        .await
                        .map_err(|f| self.error(op, timeout, f))?,
                ),
                false,
            ),
        };
        let mut request = Vec::new();
        let mut queue = commands.iter().peekable();
        while let Some(&command) = queue.peek() {
            request.clear();
            command
                .encode(&mut request)
                .map_err(|what| self.error(op, timeout, Fault::Protocol(what)))?;
            let sent = AtomicUsize::new(0);
            let mut flight = InFlight {
                conn: conn.take(),
                request: &request,
                sent: &sent,
                command,
                hand_over,
            };
            let reply = match flight.conn.as_mut() {
                Some(on) => match by(deadline, on.send(&request, &sent)).await {
                    Ok(()) => by(deadline, on.receive(command)).await,
                    Err(fault) => Err(fault),
                },
                // Never: each turn starts with the connection the last one gave back.
                None => Err(Fault::Protocol("no connection".to_owned())),
            };
            match reply {
                Ok(state) => {
                    conn = flight.conn.take();
                    outputs.push(command.finish(state, site));
                    reused = false;
                    queue.next();
                }
                // Dropped with the connection in it: handed over if it carried a `set`.
                Err(Fault::Timeout) => {
                    drop(flight);
                    return Err(self.error(op, timeout, Fault::Timeout));
                }
                Err(fault) => {
                    flight.conn = None;
                    if !(reused && fault.stale()) {
                        return Err(self.error(op, timeout, fault));
                    }
                    reused = false;
                    conn = Some(
                        by(deadline, self.connect_async())
                            .await
                            .map_err(|f| self.error(op, timeout, f))?,
                    );
                }
            }
        }
        let mut idle = self.idle_async.lock();
        if idle.len() < self.keep {
            idle.extend(conn);
        }
        drop(idle);
        Ok(())
    }
}

/// An async command on its connection: dropped with the connection still in it (the call ran
/// out of its deadline, or was dropped by its caller), it hands the connection over if the
/// command stores values.
struct InFlight<'a, C: Command> {
    conn: Option<AsyncConn>,
    request: &'a [u8],
    /// Bytes of `request` sent.
    sent: &'a AtomicUsize,
    command: &'a C,
    hand_over: HandOver<'a>,
}

impl<C: Command> Drop for InFlight<'_, C> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let rest = unsent(self.request, self.sent.load(Ordering::Relaxed));
            give_up(self.hand_over, self.command, Handed::Async(conn), rest);
        }
    }
}

/// A blocking connection taken for a call, its first command sent (`sent`) unless the
/// connection turned out closed by the server (`reused`: it was idle in the pool), and the
/// command's reply (its state `S`) once [`read_first_replies`] read it, or what stopped it.
pub(super) struct Started<S> {
    conn: SyncConn,
    reused: bool,
    sent: bool,
    reply: Option<std::result::Result<S, Fault>>,
}

/// `fut`, or [`Fault::Timeout`] once `deadline` passes (the future is dropped, and with it the
/// connection it was on).
async fn by<T>(
    deadline: Instant,
    fut: impl std::future::Future<Output = std::result::Result<T, Fault>>,
) -> std::result::Result<T, Fault> {
    tokio::time::timeout_at(deadline.into(), fut)
        .await
        .unwrap_or(Err(Fault::Timeout))
}

/// What a host's commands gave: the outputs of the leading commands that completed, and what
/// stopped the rest (the first refusal or failure), if anything did.
pub(super) struct Ran<O> {
    pub(super) outputs: Vec<O>,
    pub(super) failure: Option<Error>,
}

impl<O> Ran<O> {
    /// Nothing ran: `failure` stopped the host's part before its first command.
    pub(super) fn failed(failure: Error) -> Self {
        Ran {
            outputs: Vec::new(),
            failure: Some(failure),
        }
    }

    /// The leading outputs of `results` up to the first refusal, which is the failure, else
    /// `stopped` (what ended the run early), if any.
    fn settle(results: Vec<Result<O>>, stopped: Option<Error>) -> Self {
        let mut outputs = Vec::with_capacity(results.len());
        for result in results {
            match result {
                Ok(output) => outputs.push(output),
                Err(refusal) => {
                    return Ran {
                        outputs,
                        failure: Some(refusal),
                    }
                }
            }
        }
        Ran {
            outputs,
            failure: stopped,
        }
    }

    /// Every output, or the failure.
    pub(super) fn into_result(self) -> Result<Vec<O>> {
        match self.failure {
            None => Ok(self.outputs),
            Some(failure) => Err(failure),
        }
    }
}
