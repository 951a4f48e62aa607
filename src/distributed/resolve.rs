//! Host name lookups for blocking connects, bounded by the call's deadline.
//!
//! A blocking call that must open a connection looks its host's name up first, and the system's
//! resolver (`getaddrinfo`) cannot be given a deadline: with the network or the name server
//! gone it blocks for its own timeouts times its attempts, five seconds and more, while the
//! caller was promised its L2 timeout. So the lookup runs on a thread of its own
//! (`uno-cache-dns`, one per host at a time) and the caller waits for it until its deadline at
//! most: a lookup still running then makes the call a timeout, and goes on for the next one.
//! The addresses found are kept, and a lookup older than [`RECHECK`] is done again in the
//! background while callers connect to the kept ones (a host that moved is found within that
//! time; one that did not costs no lookup per connection). An IP address is never looked up.
//! Used by the blocking connects of Memcached and of a standalone Redis, and by Memcached's async
//! connects ([`Resolver::addrs_async`]): tokio's own lookup runs `getaddrinfo` on its blocking
//! pool, one thread per connect, which the call's deadline abandons but cannot stop, so a name
//! server gone silent left a thread blocked per call for its timeouts (and starved the
//! application's own blocking tasks once the pool was full). The async Redis connections look up
//! through the `redis` crate, on reconnects only.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long the addresses found are used before they are looked up again.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);
/// How long a failed lookup is the answer before another is started: a name that does not
/// resolve must not cost a thread per call.
const RETRY_FAILED: Duration = Duration::from_secs(1);

/// Why no address could be had by the deadline.
#[derive(Debug)]
pub(crate) enum Unresolved {
    /// The lookup was still running at the deadline.
    Timeout,
    /// The lookup failed, or found no address: why.
    Failed(String),
}

#[derive(Debug, Default)]
struct State {
    /// The addresses of the last lookup that found any, and when it ended.
    found: Option<(Arc<[SocketAddr]>, Instant)>,
    /// A lookup thread is running.
    running: bool,
    /// How many lookups have ended: a waiter's lookup has when this moves.
    ended: u64,
    /// Why the last lookup failed, and when, if it did.
    failed: Option<(String, Instant)>,
}

/// What a caller of [`Resolver`] does next.
enum Step {
    /// The answer.
    Done(Result<Arc<[SocketAddr]>, Unresolved>),
    /// Wait for the lookup under way to end: until `State::ended` moves from this.
    Wait(u64),
}

/// The lookup state and the two ways its end is told: to blocking waiters and to async ones.
#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    ended: Condvar,
    ended_async: tokio::sync::Notify,
}

/// The addresses of one `host:port`, looked up off the callers' threads.
#[derive(Debug)]
pub(crate) struct Resolver {
    host: String,
    port: u16,
    /// The host is an IP address: nothing to look up.
    literal: Option<SocketAddr>,
    shared: Arc<Shared>,
}

impl Resolver {
    pub(crate) fn new(host: &str, port: u16) -> Resolver {
        // `[::1]` as written in a URL is an address too.
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        Resolver {
            host: host.to_owned(),
            port,
            literal: bare.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, port)),
            shared: Arc::new(Shared::default()),
        }
    }

    /// The host's addresses, by `deadline` at the latest.
    pub(crate) fn addrs(&self, deadline: Instant) -> Result<Arc<[SocketAddr]>, Unresolved> {
        if let Some(addr) = self.literal {
            return Ok(Arc::from([addr]));
        }
        let mut state = self.shared.state.lock();
        let mine = match self.begin(&mut state) {
            Step::Done(answer) => return answer,
            Step::Wait(mine) => mine,
        };
        while state.ended == mine && state.running {
            if self.shared.ended.wait_until(&mut state, deadline).timed_out() {
                return Err(Unresolved::Timeout);
            }
        }
        outcome(&state)
    }

    /// [`addrs`](Self::addrs) for an async caller: the same lookups, awaited. The caller's
    /// deadline drops the future; the lookup goes on for the next call.
    #[cfg(feature = "memcached")]
    pub(crate) async fn addrs_async(&self) -> Result<Arc<[SocketAddr]>, Unresolved> {
        if let Some(addr) = self.literal {
            return Ok(Arc::from([addr]));
        }
        let mine = match self.begin(&mut self.shared.state.lock()) {
            Step::Done(answer) => return answer,
            Step::Wait(mine) => mine,
        };
        loop {
            // Registered before the state is read, so an end between the two still wakes it.
            let ended = self.shared.ended_async.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            {
                let state = self.shared.state.lock();
                if state.ended != mine || !state.running {
                    return outcome(&state);
                }
            }
            ended.await;
        }
    }

    /// The answer at hand (kept addresses, a recent failure), or the lookup to wait for, started
    /// if none is running; `state` is locked by the caller.
    fn begin(&self, state: &mut State) -> Step {
        let failed_lately = state
            .failed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() < RETRY_FAILED);
        if let Some((addrs, at)) = &state.found {
            let addrs = Arc::clone(addrs);
            if at.elapsed() >= RECHECK && !state.running && !failed_lately {
                self.start_lookup(state);
            }
            return Step::Done(Ok(addrs));
        }
        if let (Some((why, _)), true) = (&state.failed, failed_lately && !state.running) {
            return Step::Done(Err(Unresolved::Failed(why.clone())));
        }
        if !state.running {
            self.start_lookup(state);
        }
        Step::Wait(state.ended)
    }

    /// Starts a lookup on a thread of its own; `state` is locked by the caller.
    fn start_lookup(&self, state: &mut State) {
        let shared = Arc::clone(&self.shared);
        let (host, port) = (self.host.clone(), self.port);
        state.running = true;
        let spawned = std::thread::Builder::new()
            .name("uno-cache-dns".into())
            .spawn(move || {
                let result = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(Iterator::collect::<Vec<_>>);
                let mut state = shared.state.lock();
                match result {
                    Ok(addrs) if !addrs.is_empty() => {
                        state.found = Some((Arc::from(addrs), Instant::now()));
                        state.failed = None;
                    }
                    Ok(_) => {
                        state.failed =
                            Some(("the host name resolves to no address".to_owned(), Instant::now()));
                    }
                    Err(e) => state.failed = Some((format!("looking the host name up: {e}"), Instant::now())),
                }
                state.running = false;
                state.ended = state.ended.wrapping_add(1);
                drop(state);
                shared.ended.notify_all();
                shared.ended_async.notify_waiters();
            });
        if let Err(e) = spawned {
            state.running = false;
            state.failed = Some((
                format!("could not start a thread to look the host name up: {e}"),
                Instant::now(),
            ));
            state.ended = state.ended.wrapping_add(1);
        }
    }
}

/// The answer once the lookup a caller waited for has ended.
fn outcome(state: &State) -> Result<Arc<[SocketAddr]>, Unresolved> {
    match (&state.found, &state.failed) {
        (Some((addrs, _)), _) => Ok(Arc::clone(addrs)),
        (None, Some((why, _))) => Err(Unresolved::Failed(why.clone())),
        (None, None) => Err(Unresolved::Failed(
            "the lookup ended without an answer".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ip_address_is_not_looked_up_and_a_name_is_looked_up_once() {
        let far = Instant::now() + Duration::from_secs(30);
        let v4 = Resolver::new("127.0.0.1", 11211);
        assert_eq!(&*v4.addrs(far).unwrap(), &["127.0.0.1:11211".parse().unwrap()]);
        let v6 = Resolver::new("[::1]", 11211);
        assert_eq!(&*v6.addrs(far).unwrap(), &["[::1]:11211".parse().unwrap()]);
        let name = Resolver::new("localhost", 11211);
        let first = name.addrs(far).unwrap();
        assert!(
            first.iter().all(|a| a.ip().is_loopback() && a.port() == 11211),
            "{first:?}"
        );
        let again = name.addrs(far).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the addresses found are kept");
    }

    /// Async callers wait for the one lookup under way, woken when it ends, and share its
    /// answer with the blocking ones.
    #[cfg(feature = "memcached")]
    #[test]
    fn async_callers_share_the_lookup_under_way_and_its_answer() {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = Resolver::new("localhost", 11211);
        let (a, b) = rt.block_on(async { tokio::join!(r.addrs_async(), r.addrs_async()) });
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(Arc::ptr_eq(&a, &b), "one lookup for both");
        let far = Instant::now() + Duration::from_secs(30);
        assert!(Arc::ptr_eq(&r.addrs(far).unwrap(), &a));
        let v4 = Resolver::new("127.0.0.1", 11211);
        let got = rt.block_on(v4.addrs_async()).unwrap();
        assert_eq!(&*got, &["127.0.0.1:11211".parse().unwrap()]);
        assert_eq!(v4.shared.state.lock().ended, 0, "an address is not looked up");
    }

    #[test]
    fn a_failed_lookup_is_the_answer_for_a_moment_without_a_new_lookup() {
        let r = Resolver::new("localhost", 11211);
        r.shared.state.lock().failed = Some(("no".to_owned(), Instant::now()));
        let got = r.addrs(Instant::now() + Duration::from_secs(30));
        assert!(matches!(got, Err(Unresolved::Failed(why)) if why == "no"));
        assert!(!r.shared.state.lock().running, "no lookup was started");
        r.shared.state.lock().failed = Some(("no".to_owned(), Instant::now() - RETRY_FAILED));
        assert!(
            r.addrs(Instant::now() + Duration::from_secs(30)).is_ok(),
            "then it looks again"
        );
    }

    /// A recheck of old addresses that failed started a lookup at every call after it.
    #[test]
    fn a_failed_recheck_is_not_retried_at_every_call() {
        let r = Resolver::new("localhost", 11211);
        let old: Arc<[SocketAddr]> = Arc::from(["127.0.0.1:11211".parse::<SocketAddr>().unwrap()]);
        {
            let mut state = r.shared.state.lock();
            state.found = Some((Arc::clone(&old), Instant::now() - RECHECK));
            state.failed = Some(("no".to_owned(), Instant::now()));
        }
        let far = Instant::now() + Duration::from_secs(30);
        for _ in 0..3 {
            assert!(
                Arc::ptr_eq(&r.addrs(far).unwrap(), &old),
                "the old addresses serve meanwhile"
            );
        }
        let state = r.shared.state.lock();
        assert!(!state.running && state.ended == 0, "no lookup was started");
    }
}
