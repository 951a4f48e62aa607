//! The blocking executor on a standalone server without TLS: [`CallerPool`] runs a
//! [`Request`] on the caller's own thread over pooled blocking connections.
//!
//! Kept over the crate's async `ConnectionManager` for the blocking API because it was measured
//! faster when it was introduced: one round trip and no thread hand-off. Driving the async
//! connection from a blocking caller wakes the caller and the connection's driver on the I/O
//! thread; on a 2-vCPU machine that doubled a 100-key `MGET` (`cargo bench --bench redis`,
//! `redis_get_many_100`). Not re-measured against the new no-hop async path.

use std::time::{Duration, Instant};

use redis::{RedisError, RedisResult, Value};

use super::commands::Request;
use super::doubt::Unanswered;
use super::errors::{call_error as level_error, LEVEL};
use crate::distributed::resolve::{Resolver, Unresolved};
use crate::error::{Error, Result};

/// Blocking connections for the sync API on a standalone server without TLS.
///
/// A blocking call runs on the caller's own thread over an idle connection (or a new one), so it
/// costs one round trip and no thread hand-off: through the I/O thread a call woke three threads,
/// which on a 2-vCPU machine doubled a 100-key `MGET`. The async API keeps the I/O thread (it must
/// never block an executor), as do a cluster and TLS.
///
/// Deadline: a pooled connection has `timeout` as its socket read and write timeout; a new one
/// connects within `timeout` and gets what is left for its first call. A connection that saw any
/// error is dropped (its replies may be out of step), but one whose call ran out of the deadline
/// goes to the store's writes in doubt (`super::doubt`): its request may still run. One that the
/// server closed while it was idle (a restart) is replaced once within the same deadline.
pub(crate) struct CallerPool {
    client: redis::Client,
    /// The server's addresses, looked up within the calls' deadlines (see `resolve`); `None`
    /// for a Unix socket.
    resolver: Option<Resolver>,
    idle: parking_lot::Mutex<Vec<redis::Connection>>,
    /// `host:port` for errors.
    hosts: String,
}

/// Idle connections kept; a burst of threads beyond this closes its extra ones when done.
const MAX_IDLE: usize = 16;

impl CallerPool {
    /// `None` if the client's settings cannot be reused (the I/O-thread path then serves).
    pub(crate) fn new(client: redis::Client, hosts: String) -> Option<CallerPool> {
        // No `CLIENT SETINFO` round trips when connecting: on a hung server each one waited out
        // the deadline again, so a call that had to connect took twice its timeout.
        let info = client.get_connection_info().clone();
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        let info = info.set_redis_settings(settings);
        let resolver = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Some(Resolver::new(host, *port)),
            _ => None,
        };
        let client = redis::Client::open(info).ok()?;
        Some(CallerPool {
            client,
            resolver,
            idle: parking_lot::Mutex::new(Vec::new()),
            hosts,
        })
    }

    /// Runs `call` on a connection within `timeout`. A call that ran out of it hands its
    /// connection to `given_up` (see [`Unanswered`]) rather than closing it: its request may
    /// still run.
    fn run<T>(
        &self,
        op: &'static str,
        timeout: Duration,
        given_up: &mut Option<Unanswered>,
        mut call: impl FnMut(&mut redis::Connection) -> std::result::Result<T, Failed>,
    ) -> Result<T> {
        let started = Instant::now();
        let pooled = self.idle.lock().pop();
        let mut retried = pooled.is_none();
        let mut next = pooled;
        loop {
            let (mut conn, fresh) = match next.take() {
                Some(conn) => (conn, false),
                None => (self.connect(op, timeout, started)?, true),
            };
            match call(&mut conn) {
                Ok(value) => {
                    if fresh && set_timeouts(&conn, timeout).is_err() {
                        return Ok(value);
                    }
                    let mut idle = self.idle.lock();
                    if idle.len() < MAX_IDLE {
                        idle.push(conn);
                    }
                    return Ok(value);
                }
                // An idle connection the server closed (restarted, or timed it out): one more
                // try on a new connection, which fails fast if the server is really down.
                Err(Failed { err, .. })
                    if !retried && err.is_connection_dropped() && started.elapsed() < timeout =>
                {
                    retried = true;
                }
                Err(Failed { err, waiting }) => {
                    if err.is_timeout() {
                        *given_up = Some(match waiting {
                            Some(waiting) => Unanswered::Pooled { conn, waiting },
                            None => Unanswered::HalfSent,
                        });
                    }
                    return Err(call_error(op, timeout, &self.hosts, &err));
                }
            }
        }
    }

    /// Sends `request` (as `Conn::send` does on the async connection) within `timeout`; a
    /// request that ran out of it leaves its connection in `given_up`.
    pub(crate) fn send(
        &self,
        op: &'static str,
        timeout: Duration,
        request: &Request,
        given_up: &mut Option<Unanswered>,
    ) -> Result<Value> {
        match request {
            Request::Nothing => Ok(Value::Nil),
            Request::Single(cmd) => self.run(op, timeout, given_up, |c| {
                c.send_packed_command(&cmd.get_packed_command())
                    .map_err(Failed::unsent)?;
                reply(c, 1)?.extract_error().map_err(|err| Failed::sent(err, 0))
            }),
            Request::Batch(pipe) => self.run(op, timeout, given_up, |c| {
                c.send_packed_command(&pipe.get_packed_pipeline())
                    .map_err(Failed::unsent)?;
                // Every reply is read, as the crate's pipeline does: the first error is told.
                let mut refused = None;
                for waiting in (1..=pipe.len()).rev() {
                    if let Err(err) = reply(c, waiting)?.extract_error() {
                        refused.get_or_insert(err);
                    }
                }
                refused.map_or(Ok(Value::Okay), |err| Err(Failed::sent(err, 0)))
            }),
        }
    }

    /// A new connection, with what is left of the call's deadline as its socket timeouts; the
    /// name is looked up within the deadline too.
    fn connect(&self, op: &'static str, timeout: Duration, started: Instant) -> Result<redis::Connection> {
        let Some(resolver) = &self.resolver else {
            return self.connect_to(&self.client, op, timeout, started);
        };
        // Saturating: a timeout of `Duration::MAX` is too long to add to an instant.
        let deadline = crate::clock::instant_after(started, timeout);
        let addrs = resolver.addrs(deadline).map_err(|e| match e {
            Unresolved::Timeout => Error::Timeout {
                level: LEVEL,
                op,
                server: self.hosts.clone(),
                after: timeout,
            },
            Unresolved::Failed(why) => Error::Backend {
                level: LEVEL,
                op,
                reason: format!("{}: {why}", self.hosts),
            },
        })?;
        // The client connects to the addresses found, not to the name, which it would look up
        // again without a deadline.
        let mut last = None;
        for addr in addrs.iter() {
            // A link-local address keeps its scope (`fe80::1%2`), still a number to the client.
            let host = match addr {
                std::net::SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                    format!("{}%{}", v6.ip(), v6.scope_id())
                }
                _ => addr.ip().to_string(),
            };
            let at = redis::ConnectionAddr::Tcp(host, addr.port());
            let info = self.client.get_connection_info().clone().set_addr(at);
            let client =
                redis::Client::open(info).map_err(|err| call_error(op, timeout, &self.hosts, &err))?;
            match self.connect_to(&client, op, timeout, started) {
                Ok(conn) => return Ok(conn),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Backend {
            level: LEVEL,
            op,
            reason: format!("{}: the host name resolves to no address", self.hosts),
        }))
    }

    /// A new connection through `client`, within what is left of the deadline.
    fn connect_to(
        &self,
        client: &redis::Client,
        op: &'static str,
        timeout: Duration,
        started: Instant,
    ) -> Result<redis::Connection> {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Err(Error::Timeout {
                level: LEVEL,
                op,
                server: self.hosts.clone(),
                after: timeout,
            });
        }
        let conn = client
            .get_connection_with_timeout(left)
            .map_err(|err| call_error(op, timeout, &self.hosts, &err))?;
        set_timeouts(
            &conn,
            timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1)),
        )
        .map_err(|err| call_error(op, timeout, &self.hosts, &err))?;
        Ok(conn)
    }
}

/// A call that failed, and, if its request had gone out whole, how many of its replies it was
/// still waiting for: the server may still run the commands they answer.
struct Failed {
    err: RedisError,
    waiting: Option<usize>,
}

impl Failed {
    fn unsent(err: RedisError) -> Self {
        Failed { err, waiting: None }
    }

    fn sent(err: RedisError, waiting: usize) -> Self {
        Failed {
            err,
            waiting: Some(waiting),
        }
    }
}

/// The next reply on `conn`, past any push message (RESP3), as the crate's `query` reads it;
/// `waiting` replies are due, this one included.
fn reply(conn: &mut redis::Connection, waiting: usize) -> std::result::Result<Value, Failed> {
    loop {
        match conn.recv_response().map_err(|err| Failed::sent(err, waiting))? {
            Value::Push { .. } => {}
            value => return Ok(value),
        }
    }
}

fn set_timeouts(conn: &redis::Connection, timeout: Duration) -> RedisResult<()> {
    conn.set_read_timeout(Some(timeout))?;
    conn.set_write_timeout(Some(timeout))
}

/// A failed blocking call: a socket timeout is the call's [`Error::Timeout`]; a refusal that says
/// the settings are wrong is [`Error::Misconfigured`].
fn call_error(op: &'static str, timeout: Duration, hosts: &str, err: &RedisError) -> Error {
    if err.is_timeout() {
        Error::Timeout {
            level: LEVEL,
            op,
            server: hosts.to_owned(),
            after: timeout,
        }
    } else {
        level_error(op, hosts, err, false)
    }
}
