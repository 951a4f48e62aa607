//! Writes that may still land late, and their correction: a `set` whose call ran out of its
//! deadline (or whose async caller stopped waiting for it) is *in doubt* until the connection
//! it went out on can no longer run it; then, if memcached holds a value that such a write
//! left, the key is deleted.
//!
//! Why: memcached runs the requests of one connection in order, but not those of two. A `set`
//! that timed out on a server that stalled (stopped, swapping) or behind a link that went silent
//! still waits in that connection's socket; the level gives the connection up (it is never
//! reused after a missed deadline), and the next write of the key goes out on another one. When
//! the server reads again it runs both, in either order, so the older value could be the one
//! left, for good: nothing told anyone it had landed.
//!
//! How a doubt ends: the connection, kept open, is sent a `noop` (an `opaque` of its own), read
//! on the store's I/O thread (a blocking connection is moved there: no thread of its own) until
//! the `noop`'s reply comes (the binary protocol answers a connection's requests in order, so
//! the write ran before it), or the connection fails (the socket is gone, and with it whatever
//! had not run). A request whose *sending* timed out part way (a batch larger than the socket's
//! buffers, to a server that stopped reading) is sent to its end first: a `noop` sent after a
//! half-sent request would be read as part of it, and closing the connection instead would not
//! stop the server from running the complete items it had been sent, whenever it read again.
//! (A request of which nothing went out is not in doubt.) A connection whose replies cannot be
//! read any more (the stream is out of step) cannot be probed: its doubt ends
//! [`UNPROBED_GRACE`] after the timeout, as on the Redis level; so does that of a connection
//! past the [`MAX_PROBED`] kept open to be probed (or with more of its request to send than
//! the store keeps, [`MAX_UNSENT`]), which is closed.
//!
//! The correction, on the key's host: a binary `get` (value and CAS); if the value is exactly
//! one of those written in doubt (compared byte for byte, envelope included), a binary `delete`
//! with that CAS, which deletes only if the item is unchanged since the `get`; else nothing. A
//! later value of this instance or another's, or a delete, stands; the key's last write here,
//! when it is one of those in doubt, is deleted too, which costs a miss and never serves a wrong
//! value. With the values' bytes over `doubt_ledger::KEEP_BYTES` kept for the whole store, the rest are
//! corrected with an unconditional `delete`; so is every key of a memcached run with CAS
//! disabled (`-C`: its CAS reads 0, which a `delete` takes as none). A correction that fails is
//! retried, with growing pauses, until it is answered or the store is dropped.
//!
//! What it leaves: from the late write's landing to its correction (about two round trips after
//! the connection's answer), a reader can take the older value into its own L1.

use std::sync::{Arc, Weak};
use std::time::Duration;

use super::commands::{Command, Site, Step, Written};
use super::conn::{answered, Host, Probed, Unanswered};
use super::protocol::{self, opcode, status, Packet};
use crate::distributed::doubt_ledger::{Late, Ledger};
use crate::error::Result;
use crate::storage::{LateWriteHook, StorageCounters};

/// How long a write that cannot be probed stays in doubt (see the module docs).
pub(super) const UNPROBED_GRACE: Duration = Duration::from_secs(30);

/// Connections kept open to be probed, at most, across a store's hosts; and the bytes of
/// half-sent requests kept with them to be sent to their end. Past either, a connection given
/// up on is closed and its doubt ends as an unprobed one's: a server stalled under many callers
/// (or a writer that flushes large batches) would otherwise have a socket, and megabytes, kept
/// for each call that timed out, for as long as it stalls.
const MAX_PROBED: usize = 64;
const MAX_UNSENT: usize = 32 << 20;

/// The first and the longest pause before a failed correction is tried again.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The store's writes in doubt (see the module docs). Clones share them.
#[derive(Clone)]
pub(super) struct Doubts(Arc<Shared>);

struct Shared {
    /// The keys in doubt, each with its host (where its correction goes).
    ledger: Ledger<Key, Arc<Host>>,
    /// The store's I/O thread, where probes and corrections run. A handle does not keep it
    /// alive: they end with the store.
    rt: tokio::runtime::Handle,
    timeout: Duration,
    /// Connections being probed, and the bytes of requests they have still to send (see
    /// [`MAX_PROBED`]).
    probed: parking_lot::Mutex<(usize, usize)>,
}

impl Doubts {
    pub(super) fn new(rt: tokio::runtime::Handle, timeout: Duration) -> Self {
        Doubts(Arc::new(Shared {
            ledger: Ledger::new(),
            rt,
            timeout,
            probed: parking_lot::Mutex::new((0, 0)),
        }))
    }

    /// Keys whose write may still land late, or whose correction has not been answered yet.
    pub(super) fn open(&self) -> usize {
        self.0.ledger.open()
    }

    /// The level's counters: its writes in doubt and the late values deleted (see
    /// [`Ledger::counters`](crate::distributed::doubt_ledger::Ledger::counters)).
    pub(super) fn counters(&self) -> StorageCounters {
        self.0.ledger.counters()
    }

    /// Tells `hook` each key a correction deletes from now on, by the caller's name for it.
    pub(super) fn on_deleted(&self, hook: LateWriteHook) {
        self.0.ledger.on_deleted(hook);
    }

    /// The `written` items went out to `host` on `conn` and were not answered: they are in
    /// doubt until `conn` answers a later command or fails.
    pub(super) fn begin(&self, host: &Arc<Host>, written: &[Written<'_>], conn: Unanswered) {
        let writes = written.iter().map(|w| {
            let key = Key {
                server: w.key.to_owned(),
                name: w.name.to_owned(),
            };
            (key, w.value)
        });
        let id = self.0.ledger.begin(writes, || Arc::clone(host));
        tracing::debug!(
            id,
            host = %host.spec.display,
            "memcached writes in doubt: the call timed out or was dropped unanswered"
        );
        let weak = Arc::downgrade(&self.0);
        let unsent = conn.rest.len();
        // Closed here if not kept.
        let kept = self.0.keep_probed(unsent).then_some(conn);
        // Not waited for: each task ends by itself, or with the runtime (the store's drop).
        drop(self.0.rt.spawn(async move {
            let probed = match kept {
                Some(conn) => {
                    let probed = answered(conn).await;
                    if let Some(shared) = weak.upgrade() {
                        let mut kept = shared.probed.lock();
                        *kept = (kept.0.saturating_sub(1), kept.1.saturating_sub(unsent));
                    }
                    probed
                }
                None => Probed::Unreadable,
            };
            if probed == Probed::Unreadable {
                tokio::time::sleep(UNPROBED_GRACE).await;
            }
            settle(&weak, id);
        }));
    }
}

impl Shared {
    /// Whether a connection with `unsent` bytes still to send may be kept to be probed (see
    /// [`MAX_PROBED`]); counted if so.
    fn keep_probed(&self, unsent: usize) -> bool {
        let mut probed = self.probed.lock();
        let bytes = probed.1.saturating_add(unsent);
        if probed.0 >= MAX_PROBED || bytes > MAX_UNSENT {
            tracing::debug!(
                connections = probed.0,
                "memcached writes in doubt: too many connections kept to be probed; this one is closed"
            );
            return false;
        }
        *probed = (probed.0 + 1, bytes);
        true
    }
}

/// Probe `id` ended: each key that waits for nothing else is corrected.
fn settle(store: &Weak<Shared>, id: u64) {
    let Some(shared) = store.upgrade() else {
        return;
    };
    let done = shared.ledger.settle(id);
    for (key, host, late) in done {
        let weak = Arc::downgrade(&shared);
        drop(shared.rt.spawn(correct(weak, host, key, late)));
    }
}

/// A key in doubt: the server key (where the correction goes) and the caller's (the name the
/// hook is told; a server key over memcached's length is a hash, which cannot be turned back).
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    server: String,
    name: String,
}

/// Deletes `key` on `host` if it holds one of `late` (whatever it holds, for `None`), retrying
/// until answered or the store is gone.
async fn correct(store: Weak<Shared>, host: Arc<Host>, key: Key, late: Late) {
    let mut pause = RETRY_FIRST;
    loop {
        let Some(timeout) = store.upgrade().map(|shared| shared.timeout) else {
            return;
        };
        match correct_once(&host, &key.server, late.as_deref(), timeout).await {
            Ok(deleted) => {
                if let Some(shared) = store.upgrade() {
                    shared.ledger.corrected(deleted, || Some(key.name));
                }
                return;
            }
            Err(err) => {
                tracing::debug!(%err, key = %key.server, "could not correct a memcached key written in doubt; trying again");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

/// Whether it deleted the key.
async fn correct_once(host: &Host, key: &str, late: Option<&[Vec<u8>]>, timeout: Duration) -> Result<bool> {
    let cas = match late {
        None => 0,
        Some(late) => {
            let found = host
                .run_async("correct", timeout, &[Peek { key: key.to_owned() }])
                .await?
                .pop()
                .flatten();
            match found {
                Some((value, cas)) if late.contains(&value) => cas,
                _ => return Ok(false),
            }
        }
    };
    host.run_async(
        "correct",
        timeout,
        &[DeleteIf {
            key: key.to_owned(),
            cas,
        }],
    )
    .await
    .map(|deleted| deleted.into_iter().any(|d| d))
}

/// A binary `get` of one server key: its value (envelope included) and CAS, `None` on a miss.
struct Peek {
    key: String,
}

impl Command for Peek {
    type State = Option<std::result::Result<Option<(Vec<u8>, u64)>, (u16, String)>>;
    type Output = Option<(Vec<u8>, u64)>;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        protocol::request(out, opcode::GET, 0, &[], self.key.as_bytes(), &[])
    }

    fn accept(&self, state: &mut Self::State, packet: Packet) -> std::result::Result<Step, String> {
        if packet.header.opcode != opcode::GET {
            return Err(format!(
                "reply with opcode {:#04x} while reading a get",
                packet.header.opcode
            ));
        }
        *state = Some(match packet.header.status {
            status::OK => {
                let cas = packet.header.cas;
                Ok(Some((packet.into_value(), cas)))
            }
            status::KEY_NOT_FOUND => Ok(None),
            code => Err((code, packet.value_text())),
        });
        Ok(Step::Done)
    }

    fn finish(&self, state: Self::State, site: Site<'_>) -> Result<Self::Output> {
        match state {
            Some(Ok(found)) => Ok(found),
            Some(Err((code, text))) => Err(site.refused("get", code, &text)),
            None => Err(site.refused("get", 0xffff, "no reply")),
        }
    }
}

/// A binary `delete` of one server key, only if its CAS is still `cas` (any, for 0).
struct DeleteIf {
    key: String,
    cas: u64,
}

impl Command for DeleteIf {
    type State = Option<(u16, String)>;
    /// Whether the key was deleted.
    type Output = bool;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        protocol::request_cas(out, opcode::DELETE, 0, self.cas, &[], self.key.as_bytes(), &[])
    }

    fn accept(&self, state: &mut Self::State, packet: Packet) -> std::result::Result<Step, String> {
        if packet.header.opcode != opcode::DELETE {
            return Err(format!(
                "reply with opcode {:#04x} while reading a delete",
                packet.header.opcode
            ));
        }
        *state = Some((packet.header.status, packet.value_text()));
        Ok(Step::Done)
    }

    fn finish(&self, state: Self::State, site: Site<'_>) -> Result<bool> {
        match state {
            Some((status::OK, _)) => Ok(true),
            // Gone already, or changed since the `get`: a newer value stands.
            Some((status::KEY_NOT_FOUND | status::KEY_EXISTS, _)) => Ok(false),
            Some((code, text)) => Err(site.refused("delete", code, &text)),
            None => Err(site.refused("delete", 0xffff, "no reply")),
        }
    }
}
