//! A TCP proxy on a free loopback port that copies each connection both ways to a real server,
//! and can go silent on the connections it has: [`TcpProxy::freeze`] stops copying on them but
//! keeps them open (no FIN, no RST), as a NAT or load balancer that dropped an idle flow, a host
//! powered off, or a failover to another address leave a client; connections made after it
//! are copied as before. [`TcpProxy::hold`] delays every byte until [`TcpProxy::release`], as a
//! slow link does, so a test can keep one client's call in the middle while others go on;
//! [`TcpProxy::hold_on`] delays only the connection that sends given bytes (one command), from
//! those bytes on, so the other connections go on meanwhile; [`TcpProxy::sever`] closes the
//! connections so held instead, their held bytes dropped, as a link that was reset does.
//! [`TcpProxy::delay`] copies every read late by a fixed time, as a distant or busy host answers: slow, but answering.
//! [`TcpProxy::cut_reply`] copies only the start of the next read a server answers with and
//! holds the rest until [`TcpProxy::release`], so that a client's deadline falls in the middle of
//! a reply packet.
//! [`TcpProxy::redirect`] sends the connections made after it to another server, as a Service or
//! DNS name that moved to a new primary does.
//!
//! Std threads only: one accepting, two per connection. They hold no server process; they end
//! with the test process at the latest, which is all a test needs of them.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often a copying thread that waits for bytes looks whether it was frozen.
const POLL: Duration = Duration::from_millis(10);

pub struct TcpProxy {
    port: u16,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: Mutex<String>,
    /// `freeze` calls so far; a connection accepted at a lower count is frozen.
    freezes: AtomicU64,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Set between `hold` and `release`: bytes read wait before they are copied.
    holding: AtomicBool,
    /// Reads whose bytes wait for `release` now.
    waiting: AtomicU64,
    /// Set by `hold_on`: a read that contains these bytes waits, with what follows it on its
    /// connection, until `release`.
    hold_on: Mutex<Option<Vec<u8>>>,
    /// Set by `sever` until `release`: a connection with held bytes is closed instead.
    severing: AtomicBool,
    /// The sockets of frozen connections, kept open until the proxy's threads are gone.
    held: Mutex<Vec<TcpStream>>,
    /// Milliseconds each read waits before it is copied (see `delay`).
    delay_ms: AtomicU64,
    /// Set by `cut_reply`: the next server read is copied up to this many bytes.
    cut_at: Mutex<Option<usize>>,
    /// Set while the rest of a cut read waits for `release`.
    cutting: AtomicBool,
}

impl TcpProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards every connection to `upstream`
    /// (`host:port`).
    pub fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            upstream: Mutex::new(upstream.to_owned()),
            freezes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            waiting: AtomicU64::new(0),
            hold_on: Mutex::new(None),
            severing: AtomicBool::new(false),
            held: Mutex::new(Vec::new()),
            delay_ms: AtomicU64::new(0),
            cut_at: Mutex::new(None),
            cutting: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                accepting.accepted.fetch_add(1, Ordering::SeqCst);
                let epoch = accepting.freezes.load(Ordering::SeqCst);
                let upstream = accepting.upstream.lock().unwrap().clone();
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                for (from, to, replies) in [(&client, &server, false), (&server, &client, true)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let shared = Arc::clone(&accepting);
                    std::thread::spawn(move || copy(&shared, epoch, from, to, replies));
                }
            }
        });
        TcpProxy { port, shared }
    }

    /// `127.0.0.1:port` of the proxy.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections accepted from now on go to `upstream`; those made before stay where they are.
    pub fn redirect(&self, upstream: &str) {
        *self.shared.upstream.lock().unwrap() = upstream.to_owned();
    }

    /// Bytes in either direction, on every connection, wait from now until [`release`](Self::release).
    pub fn hold(&self) {
        self.shared.holding.store(true, Ordering::SeqCst);
    }

    /// How many connections have bytes waiting for [`release`](Self::release): a call held
    /// on its way.
    pub fn waiting(&self) -> u64 {
        self.shared.waiting.load(Ordering::SeqCst)
    }

    /// From now until [`release`](Self::release), a read that contains `bytes` (a command's
    /// name, say) waits, and the rest of its connection behind it; other bytes are copied.
    pub fn hold_on(&self, bytes: &[u8]) {
        *self.shared.hold_on.lock().unwrap() = Some(bytes.to_vec());
    }

    /// Copies what [`hold`](Self::hold) or [`hold_on`](Self::hold_on) kept waiting, and
    /// everything after.
    pub fn release(&self) {
        *self.shared.hold_on.lock().unwrap() = None;
        *self.shared.cut_at.lock().unwrap() = None;
        self.shared.cutting.store(false, Ordering::SeqCst);
        self.shared.holding.store(false, Ordering::SeqCst);
        self.shared.severing.store(false, Ordering::SeqCst);
    }

    /// The next read a server answers with, on any connection, is copied up to its first `at`
    /// bytes; the rest waits, with what follows it on its connection, until
    /// [`release`](Self::release). (The servers here write a short reply whole: one read.)
    pub fn cut_reply(&self, at: usize) {
        *self.shared.cut_at.lock().unwrap() = Some(at);
    }

    /// Whether the start of a reply [`cut_reply`](Self::cut_reply) cut went to its client, the
    /// rest waiting.
    pub fn cut(&self) -> bool {
        self.shared.cutting.load(Ordering::SeqCst)
    }

    /// Closes, at both ends, every connection with bytes held now or from now until
    /// [`release`](Self::release), without copying them: what was held never reaches the server.
    pub fn sever(&self) {
        self.shared.severing.store(true, Ordering::SeqCst);
    }

    /// From now on, the bytes of every read, in either direction and on every connection, are
    /// copied `by` late: a round trip of one request and a reply of one read takes `2 * by` more.
    /// The wait models a link's latency; it synchronises nothing.
    pub fn delay(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap();
        self.shared.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Every connection accepted so far goes silent (bytes in either direction are dropped, the
    /// sockets stay open); later ones are copied.
    pub fn freeze(&self) {
        self.shared.freezes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until either end closes or the connection is frozen; `replies`: `from`
/// is the server.
fn copy(shared: &Shared, epoch: u64, mut from: TcpStream, mut to: TcpStream, replies: bool) {
    let frozen = || shared.freezes.load(Ordering::SeqCst) > epoch;
    from.set_read_timeout(Some(POLL)).unwrap();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                if !frozen() {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                let read = buf.get(..n).unwrap();
                let matched = || {
                    shared
                        .hold_on
                        .lock()
                        .unwrap()
                        .as_deref()
                        .is_some_and(|bytes| read.windows(bytes.len()).any(|w| w == bytes))
                };
                let held = || shared.holding.load(Ordering::SeqCst) || matched();
                if held() {
                    shared.waiting.fetch_add(1, Ordering::SeqCst);
                    let severing = || shared.severing.load(Ordering::SeqCst);
                    while held() && !frozen() && !severing() {
                        std::thread::sleep(POLL);
                    }
                    shared.waiting.fetch_sub(1, Ordering::SeqCst);
                    if held() && severing() {
                        let _ = from.shutdown(Shutdown::Both);
                        let _ = to.shutdown(Shutdown::Both);
                        return;
                    }
                }
                let mut from_byte = 0;
                let cut_at = replies.then(|| shared.cut_at.lock().unwrap().take()).flatten();
                if let Some(at) = cut_at.filter(|&at| at < n) {
                    if to.write_all(buf.get(..at).unwrap()).is_err() {
                        return;
                    }
                    shared.cutting.store(true, Ordering::SeqCst);
                    while shared.cutting.load(Ordering::SeqCst) && !frozen() {
                        std::thread::sleep(POLL);
                    }
                    from_byte = at;
                }
                let delay = shared.delay_ms.load(Ordering::SeqCst);
                if delay > 0 {
                    std::thread::sleep(Duration::from_millis(delay));
                }
                if frozen() {
                    break;
                }
                if to.write_all(buf.get(from_byte..n).unwrap()).is_err() {
                    return;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if frozen() {
                    break;
                }
            }
            Err(_) => return,
        }
    }
    // Silent, not closed: the peers see neither an end of stream nor a reset.
    shared.held.lock().unwrap().extend([from, to]);
}
