//! The start-up check of [`MemcachedStore::connect`](super::MemcachedStore::connect): every host
//! must answer the binary protocol's `version`; one that does is asked for its item limit, and
//! one that does not is asked, in the text protocol, whether it speaks only that one (or is a
//! Redis).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::super::nodes::Node;
use super::commands::{Admin, Settings};
use super::conn::Host;
use crate::error::{Error, Result};

const LEVEL: &str = "memcached";
/// Extra wait for the whole check beyond each host's own `connect_timeout` and text probe, so
/// that the host that did not answer is the one named.
const CONNECT_GRACE: Duration = Duration::from_millis(100);
/// The most the text-protocol probe of a host that failed the check may take: a server that
/// answers at all answers `version` at once, and a host that is down must not cost much more
/// than `connect_timeout`.
const TEXT_PROBE: Duration = Duration::from_millis(500);

/// The text probe's deadline under `connect_timeout`.
fn text_probe(connect_timeout: Duration) -> Duration {
    connect_timeout.min(TEXT_PROBE)
}

/// The deadline of the whole check: a host's `connect_timeout`, then its text probe.
pub(super) fn deadline(connect_timeout: Duration) -> Duration {
    connect_timeout
        .saturating_add(text_probe(connect_timeout))
        .saturating_add(CONNECT_GRACE)
}

/// `version` on every host at once, each within `connect_timeout`: one answer per host, a
/// failure naming its host.
pub(super) async fn check_hosts(hosts: Vec<Arc<Host>>, connect_timeout: Duration) -> Result<Vec<Result<()>>> {
    let checks = hosts.iter().map(|host| check_host(host, connect_timeout));
    Ok(join_all(checks).await)
}

async fn check_host(host: &Host, connect_timeout: Duration) -> Result<()> {
    let started = Instant::now();
    let answer = tokio::time::timeout(
        connect_timeout,
        host.run_async("connect", connect_timeout, &[Admin::Version]),
    )
    .await;
    let timed_out = matches!(answer, Err(_) | Ok(Err(Error::Timeout { .. })));
    let mut reason = match answer {
        Ok(Ok(_)) => {
            return learn_item_size_max(host, connect_timeout.saturating_sub(started.elapsed())).await;
        }
        // It answers, and refuses to serve us (it wants authentication): no probe helps.
        Ok(Err(err)) if err.is_misconfiguration() => return Err(err),
        Ok(Err(Error::Backend { reason, .. })) => format!("{reason}; cannot connect"),
        Ok(Err(err)) => format!("{}: cannot connect ({err})", host.spec.display),
        Err(_) => format!(
            "{}: no answer within {connect_timeout:?} (raise connect_timeout if it is only slow)",
            host.spec.display
        ),
    };
    match host.text_line(text_probe(connect_timeout)).await {
        Some(version) if version.starts_with("VERSION ") => {
            // memcached started with `-B ascii` answers our `version` request at once with an
            // error line (its opaque holds line ends for that), never with a binary reply: a
            // reply that is not binary, from a host that answers the text protocol, is that. A
            // timeout alone cannot tell it from a slow server, so it only gets the hint.
            if !timed_out {
                return Err(text_only(host, &version));
            }
            reason.push_str(&format!(
                "; it answers memcached's text protocol ({version}) but not the binary one: if \
                 it runs with -B ascii, start it with -B auto (the default) or -B binary"
            ));
        }
        // A Redis (or a server of its protocol) on the port: it takes the binary `version`,
        // NUL bytes and all, for an empty inline command and never answers it, so the check
        // timed out; its text `version` is an unknown command. It was reported as a memcached
        // that is slow or down.
        Some(line) if line.starts_with("-ERR unknown command") => return Err(speaks_resp(host)),
        _ => {}
    }
    Err(Error::Backend {
        level: LEVEL,
        op: "connect",
        reason: format!("{reason}; check the host and port and that memcached runs there"),
    })
}

/// The error of a host that answers only memcached's text protocol.
fn text_only(host: &Host, version: &str) -> Error {
    Error::Misconfigured {
        level: LEVEL,
        hosts: host.spec.display.clone(),
        reason: format!(
            "memcached there answers only its text protocol ({version}; it was started with \
             -B ascii), and uno-cache speaks the binary protocol; start it with -B auto (the \
             default) or -B binary"
        ),
        call_only: false,
    }
}

/// The error of a host that answers the Redis protocol, where a memcached was configured.
fn speaks_resp(host: &Host) -> Error {
    Error::Misconfigured {
        level: LEVEL,
        hosts: host.spec.display.clone(),
        reason: "the host answers in the Redis protocol, not memcached's: check the host and \
                 port; a Redis server there needs distributed.type = \"redis\""
            .to_owned(),
        call_only: false,
    }
}

/// Asks `host` for its item limit (`stats settings`) within `left`, for the error of a value it
/// refuses. Best effort: a host that does not say leaves the limit unknown, and the store works
/// the same; but a host whose answer says it will serve no command of ours (it wants SASL
/// authentication, and answered `version` only because memcached answers that before it) fails
/// the check with [`Error::Misconfigured`].
async fn learn_item_size_max(host: &Host, left: Duration) -> Result<()> {
    let asked = tokio::time::timeout(left, host.run_async("connect", left, &[Settings])).await;
    match asked {
        Ok(Ok(sizes)) => {
            if let Some(Some(bytes)) = sizes.first() {
                host.learn_item_size_max(*bytes);
            }
            Ok(())
        }
        Ok(Err(e)) if e.is_misconfiguration() => Err(e),
        _ => Ok(()),
    }
}

/// Judges the start-up checks: with per-host breakers (`nodes`), one live host is enough (the
/// others' breakers open now); without, every host must answer. A host whose answer says the
/// configuration is wrong fails the start either way: no probe of its breaker could bring it
/// back.
pub(super) fn admit_hosts(nodes: Option<&[Arc<Node>]>, answers: Vec<Result<()>>) -> Result<()> {
    let misconfigured = |a: &Result<()>| a.as_ref().is_err_and(Error::is_misconfiguration);
    if answers.iter().any(misconfigured) {
        return answers.into_iter().find(misconfigured).unwrap_or(Ok(()));
    }
    let Some(nodes) = nodes else {
        return answers.into_iter().collect();
    };
    if !answers.iter().any(Result::is_ok) {
        return answers.into_iter().collect();
    }
    for (node, answer) in nodes.iter().zip(&answers) {
        if let Err(e) = answer {
            node.mark_down(e);
        }
    }
    Ok(())
}
