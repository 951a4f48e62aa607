//! The level's errors: a failed call, a failed connect, a connect deadline that passed. Shared
//! by every module of the level and by the backplane.

use std::time::Duration;

use redis::{ErrorKind, RedisError};

use crate::error::Error;

/// The level's name in errors.
pub(crate) const LEVEL: &str = "redis";

/// A failed call as [`Error::Backend`] of the level.
pub(crate) fn backend(op: &'static str, err: &RedisError) -> Error {
    Error::Backend {
        level: LEVEL,
        op,
        reason: err.to_string(),
    }
}

fn is_auth_error(err: &RedisError) -> bool {
    err.kind() == ErrorKind::AuthenticationFailed
        || matches!(err.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// A connection failure as [`Error::Backend`] (op `"connect"`) for `level`, naming the hosts and
/// what to check.
pub(crate) fn connect_error_for(level: &'static str, hosts: &str, err: &RedisError) -> Error {
    let advice = if is_auth_error(err) {
        "authentication failed; check the user name and password (requirepass or the ACL user)"
    } else if err.kind() == ErrorKind::Io || err.is_connection_refusal() || err.is_timeout() {
        "cannot reach the server; check the host and port and that redis-server is running and reachable"
    } else if err.kind() == ErrorKind::InvalidClientConfig {
        "the connection settings are invalid; check the URL"
    } else {
        "the server refused the connection; check the server and the options"
    };
    Error::Backend {
        level,
        op: "connect",
        reason: format!("{hosts}: {advice} ({err})"),
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
