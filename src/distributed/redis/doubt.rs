//! Writes that may still land late, and their correction: a `SET` whose call ran out of its
//! deadline (or was dropped unanswered) is *in doubt* until the connection it went out on can no
//! longer run it; then, if Redis holds a value that such a write left, the key is deleted.
//!
//! Why: Redis runs the commands of one connection in order, but not those of two. A `SET` that
//! timed out on a server that stalled (stopped, swapping, a long fork) or behind a link that went
//! silent still waits in that connection's socket; the level gives the connection up (the pool
//! drops it, [`Link`](super::connection::Link) replaces it), and the next write of the key goes
//! out on another one. When the server reads again it runs both, in either order (a server thawed
//! after a stop was seen to run a connection accepted during the stop first), so the older value
//! could be the one left, for good: nothing told anyone it had landed.
//!
//! How a doubt ends: a command sent after the write on the same connection is answered (the
//! connection's commands run in order, so the write ran before it), or the connection fails
//! with an error that is not a timeout (the socket is gone, and with it whatever had not run).
//! The async connections are asked a `PING` (on a cluster, each primary a `SET` went to: another
//! node's silence says nothing of it). A pooled blocking connection whose request was sent whole
//! is asked an `ECHO`, read back by a thread of its own until it is answered, a refusal included;
//! one thread for all would wait behind a connection that went silent for good (a flow a NAT
//! dropped) for the minutes the kernel takes to give up on it, and every later doubt with it.
//! Each [`PING_WAIT`] without a reply, the thread asks again, or lets the connection go if the
//! store was dropped.
//! A pooled request whose *sending* timed out (the server stopped reading with megabytes
//! queued) cannot be probed (a command sent after a half-sent one would be read as part of it):
//! its doubt ends [`UNPROBED_GRACE`] after the timeout.
//!
//! The correction: one `EVAL` that deletes the key if it holds exactly one of the values written
//! in doubt (compared byte for byte, envelope included), else leaves it. A later value of this
//! instance or another's, or a delete, stands; the key's last write here, when it is one of those
//! in doubt, is deleted too, which costs a miss and never serves a wrong value. With the values'
//! bytes over `doubt_ledger::KEEP_BYTES` kept for the whole store, the rest are corrected with an
//! unconditional `UNLINK`. A correction that fails, or that a server which can run nothing
//! now refuses (`LOADING`, `BUSY`, `READONLY`, …), is retried, with growing pauses, until it is
//! answered or the store is dropped; one refused to the user is sent as `UNLINK`, and given up
//! (with a warning) if that is refused too.
//!
//! From the late write's landing to its correction (about a round trip after the connection's
//! answer), another instance may take the older value into its L1: each key a correction deleted
//! is told to the hook the manager gives (`DistributedStorage::on_late_write_deleted`), which
//! publishes it on the backplane.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::join_all;
use redis::{Arg, Value};

use super::commands::Request;
use super::connection::{Conn, Link};
use super::errors::error_text;
use crate::distributed::doubt_ledger::{Late, Ledger};
use crate::error::key_for_error;
use crate::storage::{LateWriteHook, StorageCounters};

/// How long a pooled write whose sending timed out stays in doubt (see the module docs).
pub(crate) const UNPROBED_GRACE: Duration = Duration::from_secs(30);

/// How long the caller's thread waits to send a pooled connection's `ECHO`.
const ECHO_SEND_WAIT: Duration = Duration::from_millis(10);

/// How long a `PING` of the async connection, or the `ECHO` of a pooled one, waits before it
/// asks again (a cluster connection gives up on its own at its reply timeout; each wait also
/// checks that the store still exists).
const PING_WAIT: Duration = Duration::from_secs(1);

/// The first and the longest pause before a failed correction is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Deletes `KEYS[1]` if it holds exactly one of `ARGV`.
const CORRECT: &str = "local v = redis.call('GET', KEYS[1]) \
if v then for i = 1, #ARGV do if v == ARGV[i] then return redis.call('DEL', KEYS[1]) end end end \
return 0";

/// A connection given up on while a write on it was unanswered.
pub(crate) enum Unanswered {
    /// A blocking connection whose request went out whole, and how many of its replies had not
    /// been read.
    Pooled { conn: redis::Connection, waiting: usize },
    /// A blocking connection whose request's sending timed out: not probed.
    HalfSent,
    /// The async connection (standalone or cluster) the call ran on.
    Linked(Conn),
}

/// Threads reading pooled connections at most; a probe beyond them ends as a half-sent
/// request's does (a server stalled under many callers would otherwise get a thread for each).
const MAX_READERS: usize = 64;

/// A reading thread's stack: it parses replies to `SET`s and `ECHO`s, and hands the keys to the
/// I/O thread; a quarter of the default, with room for a tracing subscriber's formatting (an
/// overflow aborts the process). Reserved, not committed, until used.
const READER_STACK: usize = 512 << 10;

/// The store's writes in doubt (see the module docs). Clones share them.
#[derive(Clone)]
pub(crate) struct Doubts(Arc<Shared>);

struct Shared {
    /// The keys in doubt, by their full key.
    ledger: Ledger<Vec<u8>, ()>,
    /// Where corrections go, and what runs the probes.
    link: Link,
    timeout: Duration,
    /// The length of the store's key prefix, taken off a key told to the ledger's hook.
    prefix_len: usize,
    /// Threads reading pooled connections now (see [`MAX_READERS`]).
    readers: AtomicUsize,
}

impl Doubts {
    pub(crate) fn new(link: Link, timeout: Duration, prefix_len: usize) -> Self {
        Doubts(Arc::new(Shared {
            ledger: Ledger::new(),
            link,
            timeout,
            prefix_len,
            readers: AtomicUsize::new(0),
        }))
    }

    /// Keys whose write may still land late, or whose correction has not been answered yet.
    pub(crate) fn open(&self) -> usize {
        self.0.ledger.open()
    }

    /// Tells `hook` each key a correction deletes from now on.
    pub(crate) fn on_deleted(&self, hook: LateWriteHook) {
        self.0.ledger.on_deleted(hook);
    }

    /// The level's counters: its writes in doubt and the late values deleted (see
    /// [`Ledger::counters`](crate::distributed::doubt_ledger::Ledger::counters)).
    pub(crate) fn counters(&self) -> StorageCounters {
        self.0.ledger.counters()
    }

    /// The `SET`s of `request` went out on `conn` and were not answered: they are in doubt until
    /// `conn` answers a later command or fails. A request without a `SET` leaves nothing.
    pub(crate) fn begin(&self, request: &Request, conn: Unanswered) {
        let sets = sets_of(request);
        if sets.is_empty() {
            return;
        }
        let owners = match &conn {
            Unanswered::Linked(conn) => conn.owners(sets.iter().map(|(key, _)| *key)),
            Unanswered::Pooled { .. } | Unanswered::HalfSent => Vec::new(),
        };
        let id = self
            .0
            .ledger
            .begin(sets.into_iter().map(|(key, value)| (key.to_vec(), value)), || ());
        tracing::debug!(
            id,
            "Redis writes in doubt: the call timed out or was dropped unanswered"
        );
        let weak = Arc::downgrade(&self.0);
        match conn {
            Unanswered::Linked(conn) => {
                drop(self.0.link.runtime().spawn(async move {
                    if answered(conn, owners, &weak).await {
                        settle(&weak, id);
                    }
                }));
            }
            Unanswered::Pooled { conn, waiting } => self.probe_pooled(conn, waiting, id),
            Unanswered::HalfSent => {
                drop(self.0.link.runtime().spawn(async move {
                    tokio::time::sleep(UNPROBED_GRACE).await;
                    settle(&weak, id);
                }));
            }
        }
    }

    /// Sends the `ECHO` of a token on `conn` and has a thread of its own read it back; a
    /// connection that cannot take it, or a thread that cannot start, ends as a half-sent
    /// request does.
    fn probe_pooled(&self, mut conn: redis::Connection, waiting: usize, id: u64) {
        let token = format!("uno-cache:doubt:{id}").into_bytes();
        // Sent on the caller's thread, whose call already ran out of its deadline: a socket
        // with no room for a few bytes (the server stopped reading) does not hold it longer.
        let sent = conn
            .set_write_timeout(Some(ECHO_SEND_WAIT))
            .and_then(|()| conn.send_packed_command(&echo(&token)))
            .and_then(|()| conn.set_read_timeout(Some(PING_WAIT)));
        if sent.is_err() || !self.read_back(conn, waiting, token, id) {
            let weak = Arc::downgrade(&self.0);
            drop(self.0.link.runtime().spawn(async move {
                tokio::time::sleep(UNPROBED_GRACE).await;
                settle(&weak, id);
            }));
        }
    }

    /// Starts a thread that reads `conn`'s replies until the last one (see [`answered_whole`])
    /// and then settles `id`; `false` if none may or can start.
    fn read_back(&self, mut conn: redis::Connection, waiting: usize, token: Vec<u8>, id: u64) -> bool {
        if self.0.readers.fetch_add(1, Ordering::AcqRel) >= MAX_READERS {
            self.0.readers.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        let store = Arc::downgrade(&self.0);
        let started = std::thread::Builder::new()
            .name("uno-cache-redis-doubt".to_owned())
            .stack_size(READER_STACK)
            .spawn(move || {
                let answer = answered_whole(&mut conn, waiting, &token, &store);
                drop(conn);
                if let Some(shared) = store.upgrade() {
                    shared.readers.fetch_sub(1, Ordering::AcqRel);
                }
                match answer {
                    Answer::Whole => settle(&store, id),
                    Answer::Unknown => {
                        std::thread::sleep(UNPROBED_GRACE);
                        settle(&store, id);
                    }
                    Answer::StoreGone => {}
                }
            });
        match started {
            Ok(_) => true,
            Err(err) => {
                self.0.readers.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(%err, "could not start a thread that probes a Redis connection given up on");
                false
            }
        }
    }
}

/// The `SET`s of an async call, put in doubt unless the call was answered: it timed out, or
/// its caller dropped it before its end.
pub(crate) struct Unsettled<'a> {
    doubts: &'a Doubts,
    request: &'a Request,
    /// The connection the call went out on; taken once it is answered.
    pub(crate) probe: Option<Conn>,
}

impl<'a> Unsettled<'a> {
    pub(crate) fn new(doubts: &'a Doubts, request: &'a Request, probe: Option<Conn>) -> Self {
        Unsettled {
            doubts,
            request,
            probe,
        }
    }
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.probe.take() {
            self.doubts.begin(self.request, Unanswered::Linked(conn));
        }
    }
}

/// Whether `request` has a `SET`, which may be put in doubt.
pub(crate) fn sets_in(request: &Request) -> bool {
    match request {
        Request::Nothing => false,
        Request::Single(cmd) => matches!(cmd.args_iter().next(), Some(Arg::Simple(b"SET"))),
        Request::Batch(_) => true,
    }
}

/// The `(key, value)` of every `SET` in `request`.
fn sets_of(request: &Request) -> Vec<(&[u8], &[u8])> {
    fn set(cmd: &redis::Cmd) -> Option<(&[u8], &[u8])> {
        let mut args = cmd.args_iter();
        match (args.next(), args.next(), args.next()) {
            (Some(Arg::Simple(b"SET")), Some(Arg::Simple(key)), Some(Arg::Simple(value))) => {
                Some((key, value))
            }
            _ => None,
        }
    }
    match request {
        Request::Nothing => Vec::new(),
        Request::Single(cmd) => set(cmd).into_iter().collect(),
        Request::Batch(pipe) => pipe.cmd_iter().filter_map(set).collect(),
    }
}

/// Waits until `conn` answers a `PING` to the server of each of `owners` (see
/// [`Conn::owners`]), or fails there with an error that is not a timeout; `false` if the store
/// was dropped meanwhile.
///
/// Each is asked once; while some are unanswered, only the first of them is asked again, until
/// it answers, and then all of them: a batch's keys are many slots of few nodes, and a round of
/// one `PING` per slot each [`PING_WAIT`] would pile up in a stalled server's socket.
async fn answered(conn: Conn, mut owners: Vec<Vec<u8>>, store: &Weak<Shared>) -> bool {
    while !owners.is_empty() {
        if store.strong_count() == 0 {
            return false;
        }
        let pings = owners
            .iter()
            .map(|key| tokio::time::timeout(PING_WAIT, conn.clone().ping_owner(key)));
        let mut answers = join_all(pings).await.into_iter();
        owners.retain(|_| answers.next().is_some_and(|answer| silent(&answer)));
        // Asked again on the same connection: the answer to either says as much.
        while let Some(first) = owners.first() {
            if store.strong_count() == 0 {
                return false;
            }
            let answer = tokio::time::timeout(PING_WAIT, conn.clone().ping_owner(first)).await;
            if !silent(&answer) {
                owners.remove(0);
                break;
            }
        }
    }
    true
}

/// Whether a `PING` was left unanswered: it timed out, ours or the crate's.
fn silent(answer: &Result<redis::RedisResult<()>, tokio::time::error::Elapsed>) -> bool {
    match answer {
        Ok(Ok(())) => false,
        Ok(Err(err)) => err.is_timeout(),
        Err(_elapsed) => true,
    }
}

/// The packed `ECHO` of `token`.
fn echo(token: &[u8]) -> Vec<u8> {
    redis::cmd("ECHO").arg(token).get_packed_command()
}

/// How reading a pooled connection in doubt ended.
enum Answer {
    /// The server answered the request, or the connection failed.
    Whole,
    /// Another `ECHO` could not be sent whole: as a half-sent request.
    Unknown,
    /// The store was dropped first.
    StoreGone,
}

/// Reads `conn`'s replies until the server has answered the `waiting` replies of the request
/// that timed out and the `ECHO` of `token` sent after it, or the connection fails; each
/// [`PING_WAIT`] without a reply, it checks that the store still exists and sends another
/// `ECHO`.
///
/// The reply to an `ECHO` may be an error (a user refused `ECHO` is answered `NOPERM`), so it
/// is told by its place: last. The crate skips one reply after each read that timed out (the
/// one that read waited for): one after the request's, answered by the first `ECHO`, and one
/// after each of ours, answered by the `ECHO` sent then. So `waiting` replies are read, an
/// `ECHO`'s being the last of them; were none skipped, the `waiting`th would be the request's
/// last, which says as much. The request's replies are `SET`s' (simple strings or errors), so a
/// bulk string equal to `token` can only be an `ECHO`'s.
fn answered_whole(
    conn: &mut redis::Connection,
    waiting: usize,
    token: &[u8],
    store: &Weak<Shared>,
) -> Answer {
    let mut read = 0;
    while read < waiting {
        match conn.recv_response() {
            Ok(Value::BulkString(said)) if said == token => return Answer::Whole,
            Ok(Value::Push { .. }) => {}
            Ok(_) => read += 1,
            Err(err) if err.is_timeout() => {
                if store.strong_count() == 0 {
                    return Answer::StoreGone;
                }
                if conn.send_packed_command(&echo(token)).is_err() {
                    return Answer::Unknown;
                }
            }
            Err(_) => return Answer::Whole,
        }
    }
    Answer::Whole
}

/// Probe `id` ended: each key that waits for nothing else is corrected.
fn settle(store: &Weak<Shared>, id: u64) {
    let Some(shared) = store.upgrade() else {
        return;
    };
    let done = shared.ledger.settle(id);
    for (key, (), late) in done {
        let weak = Arc::downgrade(&shared);
        drop(shared.link.runtime().spawn(correct(weak, key, late)));
    }
}

/// Deletes `key` if it holds one of `late` (every value, for `None`), retrying until answered.
async fn correct(store: Weak<Shared>, key: Vec<u8>, late: Late) {
    let mut pause = RETRY_FIRST;
    let mut unconditional = late.is_none();
    loop {
        let Some(shared) = store.upgrade() else {
            return;
        };
        let mut cmd = if unconditional {
            redis::cmd("UNLINK")
        } else {
            redis::cmd("EVAL")
        };
        if unconditional {
            cmd.arg(&key[..]);
        } else {
            cmd.arg(CORRECT).arg(1).arg(&key[..]);
            for value in late.iter().flatten() {
                cmd.arg(&value[..]);
            }
        }
        let (mut conn, ticket) = shared.link.current();
        let answer = tokio::time::timeout(shared.timeout, cmd.query_async::<Value>(&mut conn)).await;
        match answer {
            Ok(Ok(answer)) => {
                // Both commands answer how many keys they deleted.
                let deleted = matches!(answer, Value::Int(n) if n > 0);
                let named = || {
                    let named = key.get(shared.prefix_len..)?;
                    Some(String::from_utf8_lossy(named).into_owned())
                };
                shared.ledger.corrected(deleted, named);
                return;
            }
            // A server that can run nothing now is asked again; a standalone one demoted by a
            // failover has its connection replaced, as after any call.
            Ok(Err(err)) if for_now(&err) => {
                shared.link.after_error(ticket, &err);
                tracing::debug!(err = %error_text(&err), "could not correct a Redis key written in doubt yet; trying again");
            }
            // The server refused the command (scripts not allowed to this user, say): the key
            // goes whatever it holds; refused that too, it is left, and said.
            Ok(Err(err)) if err.code().is_some() && !unconditional => unconditional = true,
            Ok(Err(err)) if err.code().is_some() => {
                // Named as every line and error names a key: the caller's key, shortened.
                let named = String::from_utf8_lossy(key.get(shared.prefix_len..).unwrap_or(&key));
                tracing::warn!(err = %error_text(&err), key = %key_for_error(&named), "could not delete a Redis key whose older value may have landed after a newer one");
                shared.ledger.corrected(false, || None);
                return;
            }
            Ok(Err(err)) if !err.is_timeout() => {
                tracing::debug!(err = %error_text(&err), "could not correct a Redis key written in doubt; trying again");
            }
            // A silent connection is replaced, as after any call that timed out.
            Ok(Err(_)) | Err(_) => shared.link.gave_up(ticket),
        }
        drop(shared);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Whether the server's refusal `err` says that it can run no command now (loading its data,
/// busy with a script, a cluster or replica not ready, no longer the primary), rather than that
/// it will never run this one.
fn for_now(err: &redis::RedisError) -> bool {
    matches!(
        err.code(),
        Some("LOADING" | "BUSY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "READONLY")
    )
}
