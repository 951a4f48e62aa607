//! The level's errors: a failed call, a failed connect, a connect deadline that passed. Shared
//! by every module of the level and by the backplane.
//!
//! A failure is either an outage (refused, reset, timed out: the breaker and the background
//! connector retry it) or a misconfiguration ([`Error::Misconfigured`]: the server answered and
//! the answer says the settings are wrong, which no retry fixes). [`misconfiguration`] tells them
//! apart.

use std::time::Duration;

use redis::{ErrorKind, RedisError, ServerErrorKind};

use crate::distributed::server_text;
use crate::error::Error;

/// The level's name in errors.
pub(crate) const LEVEL: &str = "redis";

/// `err` as text for an error message or a log line, cut as [`server_text`] cuts: its text is
/// the server's (an `-ERR …` line, a Lua script's `error_reply`), of any length.
pub(crate) fn error_text(err: &RedisError) -> String {
    server_text(err.to_string().as_bytes())
}

/// A failed call as [`Error::Backend`] of the level.
pub(crate) fn backend(op: &'static str, err: &RedisError) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: error_text(err),
    }
}

/// What a request that the cluster client's own response timeout ended means (see
/// [`call_error`]). Only a walk of every primary (`size`, `clear`) meets it before our
/// deadline: each of its requests has the client's timeout, the walk the longer
/// `admin_timeout`.
const CLIENT_TIMEOUT_ADVICE: &str = "a request got no reply within the cluster client's own \
    response timeout (the level's `timeout` and 50 ms): a node is slow or unreachable, or the \
    client's link to it stalled (seen after a slot moved); the connection is replaced by a new \
    one, so retry";

/// Whether `error` is a request that the cluster client's own response timeout ended: the
/// connection is replaced, as after our deadline (see `connection::Link::judge`). Without it,
/// a cluster client that stalled after a slot moved failed every `size` and `clear` for as long
/// as no key call timed out (more than 12 s in `tests/redis_cluster_slot_moves.rs`).
pub(crate) fn is_client_timeout(error: &Error) -> bool {
    matches!(error, Error::Backend { reason, .. } if reason.contains(CLIENT_TIMEOUT_ADVICE))
}

/// Whether a call failed for want of an answer, by our deadline ([`Error::Timeout`]) or by the
/// cluster client's own timeout ([`is_client_timeout`]): its connection is replaced, and a
/// `SET` it carried may still land (in doubt).
pub(crate) fn is_unanswered(error: &Error) -> bool {
    matches!(error, Error::Timeout { .. }) || is_client_timeout(error)
}

/// A failed call on `hosts`: [`Error::Misconfigured`] if the server's answer says the settings
/// are wrong (a password rotated under a running cache), else [`Error::Backend`]. On a cluster
/// client (`cluster`) a redirect that reaches us is one the client gave up following while
/// slots moved (a primary failing over or restarting): a node's outage, not a wrong setting.
pub(crate) fn call_error(op: &'static str, hosts: &str, err: &RedisError, cluster: bool) -> Error {
    if cluster && err.is_timeout() {
        return Error::Backend {
            level: LEVEL,
            op,
            reason: format!("{hosts}: {CLIENT_TIMEOUT_ADVICE} ({})", error_text(err)),
        };
    }
    if cluster && is_redirect(err) {
        // The crate's text alone ("Moved: 449 127.0.0.1:7001") said neither which key nor what
        // to do; a one-key call names its key and slot here (`keyed`), a batch its slots.
        return Error::Backend {
            level: LEVEL,
            op,
            reason: format!(
                "{hosts}: {} ({})",
                redirect_advice(THIS_KEYS_SLOT),
                error_text(err)
            ),
        };
    }
    let code = code_of(err);
    if code.as_deref() == Some("WRONGTYPE") {
        // The server answered: the key holds a hash, a list, … (another program's), as a
        // value without our envelope is. Not a failure of the server, so no breaker counts it
        // ([`Error::Backend`] would). The key is filled in by the caller that knows it.
        return Error::InvalidEnvelope {
            level: LEVEL,
            key: String::new(),
            reason: format!(
                "the key holds a Redis value of another type, not a string ({})",
                error_text(err)
            ),
        };
    }
    if code.as_deref() == Some("READONLY") {
        // A failover demoted the primary under a running level: an outage of writes, which
        // ends once the connection is replaced through a name moved to the new primary (see
        // `Link::after_error`) or, on a cluster, once the client has the new slot map. A host
        // that is a replica from the start is refused at connect (`Settings::connect`).
        return Error::Backend {
            level: LEVEL,
            op,
            reason: format!(
                "{hosts}: the server is a read-only replica now (a failover demoted it?); the \
                 level reconnects, and if it keeps answering so, point the cache at the primary \
                 ({})",
                error_text(err)
            ),
        };
    }
    if code.as_deref() == Some("CLUSTERDOWN") {
        // The node is up and the cluster does not serve the key's slot: an outage of that
        // slot's keys only (keys of served slots are still answered, unless the cluster requires
        // full coverage), which ends when a replica takes the slot over or an operator assigns
        // it. The crate's text alone ("cluster down") did not say which keys or what to look
        // at; a one-key call names its key and slot here (`keyed`), a batch its slots.
        return Error::Backend {
            level: LEVEL,
            op,
            reason: format!(
                "{hosts}: {} ({})",
                clusterdown_advice(THIS_KEYS_SLOT),
                error_text(err)
            ),
        };
    }
    if code.as_deref() == Some("TRYAGAIN") {
        // Up, and moving the slot of a multi-key request's keys to another node (a resharding):
        // the node answered, so no breaker counts it (see `is_slot_moving`). Counted, two such
        // reads during one slot's migration opened a healthy primary's breaker, and every key
        // of its other slots failed fast for the cool-down.
        return Error::Backend {
            level: LEVEL,
            op,
            reason: format!("{hosts}: {SLOT_MOVING_ADVICE} ({})", error_text(err)),
        };
    }
    if code.as_deref() == Some("MISCONF") {
        // Up, and refusing writes until a snapshot succeeds: an outage, not a setting of the
        // cache, since Redis retries the snapshot and serves again once its disk is fixed, so
        // a start-up with fallback goes on degraded and the connector retries.
        return Error::Backend {
            level: LEVEL,
            op,
            reason: format!("{hosts}: {MISCONF_ADVICE} ({})", error_text(err)),
        };
    }
    if code.as_deref() == Some("OOM") {
        // Up, and out of memory for writes: no failure of the server for the breaker to count,
        // or its reads would be skipped too.
        return Error::ServerFull {
            level: LEVEL,
            op,
            reason: error_text(err),
        };
    }
    failure(LEVEL, op, hosts, err)
}

/// A failed call of `level` (the L2, the backplane) on `hosts`: [`Error::Misconfigured`] if
/// the server's answer says the settings are wrong, else [`Error::Backend`] naming the hosts,
/// as Memcached's failures are (on a cluster, or behind a name that moved in a failover, the
/// configuration does not say which server failed).
pub(crate) fn failure(level: &'static str, op: &'static str, hosts: &str, err: &RedisError) -> Error {
    match misconfiguration(err) {
        Some(advice) => misconfigured(level, hosts, advice, err, true),
        None => Error::Backend {
            level,
            op,
            reason: format!("{hosts}: {}", error_text(err)),
        },
    }
}

/// The server's error code of `err` (`OOM`, `MISCONF`, …): of its first failed command for a
/// pipeline's failure, whose own `code()` is `None` for every code the crate has no kind for, so
/// a `set_many` refused for memory was taken for an outage where a `set` was not.
fn code_of(err: &RedisError) -> Option<String> {
    if let Some(code) = err.code() {
        return Some(code.to_owned());
    }
    let failed = err.clone().into_server_errors()?;
    failed.first().map(|(_, first)| first.code().to_owned())
}

fn is_redirect(err: &RedisError) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::Moved | ServerErrorKind::Ask)
    )
}

/// `err` as [`Error::Misconfigured`] with `advice` (from [`misconfiguration`]). `by_a_call`: a
/// call met it, not a connect.
///
/// A refusal of one command or key (NOPERM, a command renamed away) met by a call is that
/// call's only (`call_only`): a user refused UNLINK, or a server with UNLINK renamed away, still
/// serves GET and SET, and counted by the breaker every failed delete opened it and stopped the
/// reads too. Met by a connect it fails the connection itself, so every call. (A connection a
/// pool opens inside a call counts as the call's: were one of its commands refused, each call
/// fails fast and shows as a configuration error, but is not skipped by the breaker.)
pub(crate) fn misconfigured(
    level: &'static str,
    hosts: &str,
    advice: &'static str,
    err: &RedisError,
    by_a_call: bool,
) -> Error {
    Error::Misconfigured {
        level,
        hosts: hosts.to_owned(),
        reason: format!("{advice} ({})", error_text(err)),
        call_only: by_a_call && [NOPERM_ADVICE, UNKNOWN_COMMAND_ADVICE].contains(&advice),
    }
}

/// The error and every error under it, as text (the crate wraps rustls and DNS errors in I/O
/// errors, whose kinds do not say what happened).
fn chain_text(err: &RedisError) -> String {
    let mut text = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        text.push_str(" / ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// What to fix when the server refuses the credentials.
const AUTH_ADVICE: &str = "authentication failed: the server refused the user name or \
    password; check them (distributed.username / distributed.password, or the URL's \
    user:password@, ?user=&pass= for unix://) against the server's requirepass or ACL user";
/// What to fix when the credentials were accepted and the user's ACL refuses a command, a key
/// or a channel: the password is right, so the advice on credentials would mislead.
const NOPERM_ADVICE: &str = "the server's ACL refuses this user a command, key or channel \
    the cache uses (its password was accepted); grant the user the cache's keys (~<prefix>*) \
    and the commands GET, MGET, SET, UNLINK, SCAN, STRLEN and PING (tags: EVAL and the commands \
    storage-format.md lists; the backplane: PUBLISH and SUBSCRIBE on its channel, &<channel>; \
    a Redis Cluster: CLUSTER SLOTS, CLUSTER NODES and INFO, +cluster|slots +cluster|nodes \
    +info; a URL \
    naming a database other than 0: SELECT)";
/// What to fix when the ACL refuses the user SELECT, which the client sends on each connection
/// for a URL naming a database other than 0.
const SELECT_ADVICE: &str = "the server's ACL refuses this user SELECT, which the client sends \
    on each connection because the URL names a database other than 0; grant the user SELECT \
    (+select), or use database 0";
/// What to fix when the host is a replica, which refuses every write.
const READONLY_ADVICE: &str = "the server is a read-only replica and refuses every write; \
    point the cache at the primary";
/// What to fix when the server stopped taking writes because it cannot save (an outage: it
/// ends by itself once a snapshot succeeds).
const MISCONF_ADVICE: &str = "the server refuses writes (and PING) because its last RDB \
    snapshot failed (stop-writes-on-bgsave-error); fix the disk under its `dir` (space, \
    permissions; see its log), or, for a cache that needs no snapshots, set `save \"\"` or \
    `stop-writes-on-bgsave-error no`";
/// How a call's error says the slot in [`clusterdown_advice`]; a one-key call puts its key's
/// slot in its place (see `keyed`).
pub(crate) const THIS_KEYS_SLOT: &str = "this key's hash slot";

/// What a `TRYAGAIN` means: the keys' slot is being moved between nodes.
const SLOT_MOVING_ADVICE: &str = "the keys' hash slot is being moved to another node (a \
    resharding), and a request on several of its keys is refused until the move ends; the node \
    is up, so no breaker counts this; retry once the resharding is over";

/// Whether `error` is a refusal of a request on a slot being moved (`TRYAGAIN`): the node
/// answered, and its breaker must not count it.
pub(crate) fn is_slot_moving(error: &Error) -> bool {
    matches!(error, Error::Backend { reason, .. } if reason.contains(SLOT_MOVING_ADVICE))
}

/// What a redirect (MOVED, ASK) of a call on `slot` (a hash slot, said in words) that the
/// cluster client gave up following means, and what to do.
pub(crate) fn redirect_advice(slot: &str) -> String {
    format!(
        "the cluster redirected the call on {slot} to another node more times than the client \
         follows (the slot moved: a primary failed over or restarted, or a resharding); retry \
         once the move is over, when calls reach the slot's new owner; if it lasts, check \
         CLUSTER SLOTS on a node, and that the address each node announces (cluster-announce-ip, \
         -port) is reachable from this host"
    )
}

/// What a CLUSTERDOWN for `slot` (a hash slot, said in words) means, and what to check.
pub(crate) fn clusterdown_advice(slot: &str) -> String {
    format!(
        "the cluster does not serve {slot} (CLUSTERDOWN: its primary failed with no replica to \
         take over, or no node is assigned the slot; keys of other slots are still served unless \
         the cluster runs with cluster-require-full-coverage yes, which then refuses every key); \
         check CLUSTER INFO (cluster_state, cluster_slots_ok) and CLUSTER SLOTS on a node, and \
         fail the slot over to a replica or assign it to a node"
    )
}
/// What to fix when the server does not know a command the level sends.
const UNKNOWN_COMMAND_ADVICE: &str = "the server does not know a command the cache uses \
    (renamed or disabled with rename-command, or a proxy that does not pass it); the Redis level \
    needs GET, MGET, SET, UNLINK, SCAN, STRLEN and PING (tags: EVAL and the commands \
    storage-format.md lists; the backplane: PUBLISH and SUBSCRIBE; a Redis Cluster: CLUSTER; a \
    URL naming a database other than 0: SELECT) under their own names";

/// What to fix when the host answers in another protocol than Redis's.
const NOT_RESP_ADVICE: &str = "the host answers, but not in the Redis protocol: check the host \
    and port; a Memcached server there needs distributed.type = \"memcached\"";

/// What to fix, if `err` says the configuration is wrong; `None` for an outage (refused, reset,
/// timed out, loading, …) or any other failure.
pub(crate) fn misconfiguration(err: &RedisError) -> Option<&'static str> {
    let code = code_of(err);
    if code.as_deref() == Some("NOPERM") {
        return Some(NOPERM_ADVICE);
    }
    if err.kind() == ErrorKind::AuthenticationFailed
        || matches!(code.as_deref(), Some("NOAUTH" | "WRONGPASS"))
    {
        return Some(AUTH_ADVICE);
    }
    // Each answered by a server that is up and will not do what the cache asks until its
    // operator changes something: taken for outages they were retried for good, with no word
    // of what to change.
    if code.as_deref() == Some("READONLY") {
        return Some(READONLY_ADVICE);
    }
    // The client's own verdict on the settings (TLS modes mixed among a cluster's nodes, no
    // usable root in the system's store for tls_system_roots, …): no retry can change it,
    // and taken for an outage it was retried in the background for good.
    if err.kind() == ErrorKind::InvalidClientConfig {
        return Some("the connection settings are invalid; check the host URLs and the tls_* settings");
    }
    // Something answered on the port, but not in RESP: a Memcached there (the default `type`
    // is Redis), or another service on a mistyped port. It was taken for an outage ("the
    // server refused the connection") and retried in the background for good.
    if err.kind() == ErrorKind::Parse {
        return Some(NOT_RESP_ADVICE);
    }
    let text = chain_text(err);
    let has = |needle: &str| text.contains(needle);
    // The client's SELECT of a URL's database, sent before anything else, wraps the server's
    // NOAUTH in an error of its own whose code is gone; its text is what is left.
    if has("NOAUTH") || has("Authentication required") {
        return Some(AUTH_ADVICE);
    }
    // Its NOPERM too (the code is gone there as well).
    if has("no permissions to run the 'select' command") {
        return Some(SELECT_ADVICE);
    }
    if has("unknown command") {
        return Some(UNKNOWN_COMMAND_ADVICE);
    }
    if is_redirect(err) {
        // The cluster client follows redirects itself: one that reaches a standalone
        // connection means the server is a cluster node (`call_error` tells a cluster client's
        // apart).
        return Some("the server is a Redis Cluster node; set cluster = true (or use redis+cluster://)");
    }
    if has("DB index is out of range") || has("invalid DB index") {
        Some("the server has no such database; use a database number below its `databases` setting in the URL (/0, /1, …)")
    } else if has("cluster support disabled") {
        Some("the server is not a Redis Cluster node; set cluster = false and use redis://")
    } else if has("invalid peer certificate") || has("UnknownIssuer") || has("NotValidForName") {
        Some("the server's TLS certificate is not trusted for this host; set distributed.tls_ca_file to the CA that signed it, or check the host name")
    } else if has("Unable to parse") || has("Unable to extract private key") {
        // The client's parse of the PEM files, when it is built: an outage to the caller, a
        // start-up with fallback went on without L2 and retried it in the background for good.
        Some("a TLS certificate or key file does not parse (PEM with a certificate or key rustls takes); check distributed.tls_ca_file, tls_cert_file and tls_key_file")
    } else if has("received corrupt message") || has("InvalidContentType") {
        Some("the server does not speak TLS on this port; use redis:// or the server's tls-port")
    } else if has("received fatal alert") || has("CertificateRequired") {
        Some("the server refused the TLS handshake; if it asks for a client certificate, set distributed.tls_cert_file and distributed.tls_key_file")
    } else if has("Name or service not known")
        || has("No address associated with hostname")
        || has("nodename nor servname provided")
    {
        Some("the host name does not resolve; check the host")
    } else {
        None
    }
}

/// A connection failure for `level`, naming the hosts and what to check:
/// [`Error::Misconfigured`] if the server's answer says the settings are wrong, else
/// [`Error::Backend`] (op `"connect"`).
pub(crate) fn connect_error_for(level: &'static str, hosts: &str, err: &RedisError) -> Error {
    if let Some(advice) = misconfiguration(err) {
        return misconfigured(level, hosts, advice, err, false);
    }
    let advice = if err.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading) {
        "the server is loading its dataset into memory and serves once it is done; wait for it"
    } else if code_of(err).as_deref() == Some("MISCONF") {
        MISCONF_ADVICE
    } else if err.kind() == ErrorKind::Io || err.is_connection_refusal() || err.is_timeout() {
        "cannot reach the server; check the host and port and that redis-server is running and reachable"
    } else {
        "the server refused the connection; check the server and the options"
    };
    Error::Backend {
        level,
        op: "connect",
        reason: format!("{hosts}: {advice} ({})", error_text(err)),
    }
}

/// A connection the server refused with an error line it sent as it accepted (`said`, without
/// its `-`): [`Error::Misconfigured`] for protected mode, which only a change of the server's
/// settings ends, else [`Error::Backend`] (op `"connect"`) with the server's reason (`maxclients`
/// reached, an outage that ends as other clients leave).
pub(crate) fn greeting_error(hosts: &str, said: &str) -> Error {
    if said.starts_with("DENIED") {
        return Error::Misconfigured {
            level: LEVEL,
            hosts: hosts.to_owned(),
            reason: format!(
                "the server runs in protected mode (no password set) and takes clients only \
                 from its loopback interface; give it a password (requirepass, or an ACL user) \
                 and set it in the cache's settings, or, on a network only its clients reach, \
                 set protected-mode no ({said})"
            ),
            call_only: false,
        };
    }
    Error::Backend {
        level: LEVEL,
        op: "connect",
        reason: format!("{hosts}: the server hung up as it accepted the connection, saying: {said}"),
    }
}

/// A connect deadline that passed, said as what to check.
pub(crate) fn connect_timeout_error(
    level: &'static str,
    err: Error,
    hosts: &str,
    timeout: Duration,
) -> Error {
    match err {
        Error::Timeout { .. } => Error::Backend {
            level,
            op: "connect",
            reason: format!(
                "{hosts}: no answer within {timeout:?}; check the host and port and that redis-server is running and reachable (or raise connect_timeout)"
            ),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moved() -> RedisError {
        RedisError::from((
            ErrorKind::Server(ServerErrorKind::Moved),
            "Moved",
            "8627 127.0.0.1:7001".to_owned(),
        ))
    }

    /// A request that the cluster client's own response timeout ended says so, and is marked
    /// for the connection's replacement; a standalone connection's timeout (which has no such
    /// timeout: a connect's) and other failures are not.
    #[test]
    fn a_cluster_requests_client_timeout_is_marked_for_replacing_the_connection() {
        let timed_out = || RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
        let err = call_error("clear", "h:1", &timed_out(), true);
        assert!(is_client_timeout(&err), "{err}");
        assert!(
            err.to_string()
                .starts_with("redis clear failed: h:1: a request got no reply"),
            "{err}"
        );
        assert!(!is_client_timeout(&call_error(
            "clear",
            "h:1",
            &timed_out(),
            false
        )));
        assert!(!is_client_timeout(&call_error("clear", "h:1", &moved(), true)));
        assert!(!is_client_timeout(&backend("clear", &timed_out())));
    }

    /// A server error as the client reads it off the wire: `-{code} {text}`.
    fn server_error(code: &str, text: &str) -> RedisError {
        let wire = format!("-{code} {text}\r\n");
        redis::parse_redis_value(wire.as_bytes())
            .and_then(redis::Value::extract_error)
            .unwrap_err()
    }

    /// A server's error text of any length (a Lua script's `error_reply`, a cluster's) went into
    /// the error whole: a megabyte per failed call, in every error and log line.
    #[test]
    fn a_long_server_error_text_is_cut_in_every_error_of_the_level() {
        let long = "x".repeat(1 << 20);
        let errors = [
            backend("get", &server_error("ERR", &long)),
            call_error("get", "h:1", &server_error("ERR", &long), false),
            call_error("get", "h:1", &server_error("WRONGTYPE", &long), false),
            call_error("set", "h:1", &server_error("OOM", &long), false),
            call_error("get", "h:1", &server_error("NOPERM", &long), false),
            connect_error_for(LEVEL, "h:1", &server_error("ERR", &long)),
        ];
        for err in errors {
            let text = err.to_string();
            assert!(
                text.len() < 1_000 && text.contains("bytes in all"),
                "{} bytes: {}",
                text.len(),
                text.get(..300).unwrap_or(&text)
            );
        }
        let short = backend("get", &server_error("ERR", "unknown command"));
        assert!(short.to_string().contains("unknown command"), "{short}");
    }

    /// The client's refusal of its settings is a configuration error, which fails start-up,
    /// not an outage to retry in the background (found by review: tls_system_roots without a
    /// usable root was retried for good).
    #[test]
    fn an_invalid_client_config_at_connect_is_a_misconfiguration_not_an_outage() {
        let err = RedisError::from((ErrorKind::InvalidClientConfig, "no usable root"));
        match connect_error_for("redis", "h:1", &err) {
            Error::Misconfigured { hosts, reason, .. } => {
                assert_eq!(hosts, "h:1");
                assert!(
                    reason.contains("tls_*") && reason.contains("no usable root"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A call refused one command or key is that call's refusal only (no breaker counts it); a
    /// connect refused so, or any call refused its credentials, is the connection's.
    #[test]
    fn a_call_refused_one_command_is_call_only_a_refused_connection_is_not() {
        let call_only = |err: Error| match err {
            Error::Misconfigured { call_only, .. } => call_only,
            other => panic!("{other:?}"),
        };
        let noperm = || {
            server_error(
                "NOPERM",
                "User app has no permissions to run the 'unlink' command",
            )
        };
        let unknown = || server_error("ERR", "unknown command 'UNLINK', with args beginning with: 'k'");
        let wrongpass = || server_error("WRONGPASS", "invalid username-password pair");
        assert!(call_only(call_error("delete", "h:1", &noperm(), false)));
        assert!(call_only(call_error("delete", "h:1", &unknown(), false)));
        assert!(!call_only(call_error("get", "h:1", &wrongpass(), false)));
        assert!(!call_only(connect_error_for(LEVEL, "h:1", &noperm())));
        assert!(!call_only(connect_error_for(LEVEL, "h:1", &unknown())));
    }

    #[test]
    fn a_redirect_is_a_wrong_setting_on_a_standalone_client_and_an_outage_on_a_cluster_client() {
        assert!(
            matches!(
                call_error("get", "h:1", &moved(), false),
                Error::Misconfigured { .. }
            ),
            "a standalone connection to a cluster node: set cluster = true"
        );
        assert!(
            matches!(
                call_error("get", "h:1", &moved(), true),
                Error::Backend { op: "get", .. }
            ),
            "slots moving under a cluster client while a primary fails over"
        );
    }
}
