//! Host strings and URLs: `host:port`, `host`, `redis://[user[:password]@]host[:port][/db]`,
//! `rediss://`, `redis+cluster://`, `rediss+cluster://` and `unix:///path[?db=N]`, checked and
//! normalised into a [`Target`]. Errors name the `redis.hosts[i]` field and never carry the password.

use crate::distributed::redact;
use crate::error::{Error, Result};

/// A host, checked and normalised.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The URL handed to the client (credentials included).
    pub(crate) url: String,
    /// `host:port` (or the socket path) for messages; never a password.
    pub(crate) display: String,
    /// The URL scheme asked for cluster mode.
    pub(crate) cluster_scheme: bool,
    /// The database number (`/db`); a cluster has only 0.
    pub(crate) db: i64,
}

impl Target {
    /// Whether this host is reached over TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.url.starts_with("rediss://")
    }

    /// The host and port as the `redis` crate's cluster client keys its node connections
    /// (an IPv6 address without brackets); `None` for a socket path.
    pub(crate) fn address(&self) -> Option<(String, u16)> {
        let url = url::Url::parse(&self.url).ok()?;
        let host = match url.host()? {
            url::Host::Domain(name) => name.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some((host, url.port().unwrap_or(6379)))
    }
}

pub(crate) fn config_error(field: String, reason: String) -> Error {
    Error::Config { field, reason }
}

/// Parses host number `index` of the options, filling in the user name and password where the
/// URL carries none.
pub(crate) fn parse_target(
    index: usize,
    raw: &str,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Target> {
    let field = format!("redis.hosts[{index}]");
    let raw = raw.trim();
    if raw.is_empty() {
        return Err(config_error(
            field,
            "empty host; use host:port or redis://[user:password@]host:port[/db]".to_owned(),
        ));
    }
    let with_scheme = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("redis://{raw}")
    };
    let mut url = url::Url::parse(&with_scheme).map_err(|err| {
        config_error(
            field.clone(),
            format!(
                "{:?} is not a valid host or URL ({err}); use host:port or redis://[user:password@]host:port[/db]",
                redact(raw)
            ),
        )
    })?;
    let (base, cluster_scheme) = match url.scheme() {
        "redis" => ("redis", false),
        "rediss" => ("rediss", false),
        "redis+cluster" => ("redis", true),
        "rediss+cluster" => ("rediss", true),
        "unix" | "redis+unix" => ("unix", false),
        other => {
            return Err(config_error(
                field,
                format!("unsupported scheme {other:?}; use redis://, rediss://, redis+cluster://, rediss+cluster:// or unix://"),
            ))
        }
    };
    if base == "rediss" && !cfg!(feature = "tls") {
        return Err(config_error(
            field,
            format!(
                "{:?} asks for TLS, but uno-cache was built without its `tls` feature; enable it or use redis://",
                redact(raw)
            ),
        ));
    }
    if base == "unix" {
        return unix_target(field, raw, url, username, password);
    }
    if url.scheme() != base && url.set_scheme(base).is_err() {
        return Err(config_error(
            field,
            format!("cannot use scheme {base:?} for {:?}", redact(raw)),
        ));
    }
    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host.to_owned(),
        _ => {
            return Err(config_error(
                field,
                format!("{:?} names no host; use host:port", redact(raw)),
            ))
        }
    };
    let port = url.port().unwrap_or(6379);
    if port == 0 {
        // Nothing listens on port 0: every connect was refused, and taken for an outage.
        return Err(config_error(
            field,
            format!(
                "{:?} names port 0, which no server listens on; give the server's port (6379 by default)",
                redact(raw)
            ),
        ));
    }
    let db = match url.path().trim_start_matches('/') {
        "" => 0,
        db => db.parse::<i64>().map_err(|_| {
            // Without `://` the string was read as host:port/db, so a mistyped scheme
            // (`redis//h:1`, `redis:/h:1`) would be blamed on a "database" that is its address.
            let reason = if raw.contains("://") {
                format!("database {db:?} in {:?} is not a number; use /0, /1, …", redact(raw))
            } else {
                format!(
                    "{:?} is neither host:port[/db] (read so, its database {db:?} is not a number) nor a URL, which starts with scheme:// (is the scheme mistyped?); use host:port or redis://[user:password@]host:port[/db]",
                    redact(raw)
                )
            };
            config_error(field.clone(), reason)
        })?,
    };
    if url.username().is_empty() {
        if let Some(user) = username {
            if url.set_username(user).is_err() {
                return Err(config_error(
                    field,
                    "cannot put the user name into the URL".to_owned(),
                ));
            }
        }
    }
    if url.password().is_none() {
        if let Some(pass) = password {
            if url.set_password(Some(pass)).is_err() {
                return Err(config_error(
                    field,
                    "cannot put the password into the URL".to_owned(),
                ));
            }
        }
    }
    // The client logs in only with a password: a user name alone is dropped, and the
    // connection made as the default user, as for a unix socket's `?user=` (see below).
    if !url.username().is_empty() && url.password().is_none() {
        return Err(config_error(
            field,
            format!(
                "{:?} names a user without a password, which the client does not log in with (the connection would be the default user's); write redis://user:password@host:port or set `password`",
                redact(raw)
            ),
        ));
    }
    Ok(Target {
        url: url.to_string(),
        display: if base == "rediss" {
            format!("rediss://{host}:{port}")
        } else {
            format!("{host}:{port}")
        },
        cluster_scheme,
        db,
    })
}

/// A `unix://` socket path: the client reads the database, user name and password of such a
/// URL from its query (`?db=1&user=app&pass=…`), not from the user info, so the configured
/// `username` and `password` go there. Before, they were dropped and the server answered
/// every command with NOAUTH; user info in the URL, which the client ignores, is refused.
fn unix_target(
    field: String,
    raw: &str,
    mut url: url::Url,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Target> {
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config_error(
            field,
            format!(
                "{:?}: a unix socket URL takes no user info; set `username` and `password`, or use unix:///path?user=…&pass=…",
                redact(raw)
            ),
        ));
    }
    if url.host_str().is_some_and(|h| !h.is_empty() && h != "localhost") {
        return Err(config_error(
            field,
            format!(
                "{:?} names a host, not a socket path; a unix socket URL has three slashes: unix:///path/to/redis.sock",
                redact(raw)
            ),
        ));
    }
    if url.path().is_empty() || url.path() == "/" {
        return Err(config_error(
            field,
            format!(
                "{:?} names no socket path; use unix:///path/to/redis.sock",
                redact(raw)
            ),
        ));
    }
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let given = |name: &str| query.iter().any(|(k, _)| k == name);
    // The client keeps the last of a repeated key, the checks here would see the first.
    if let Some(twice) = ["db", "user", "pass"]
        .into_iter()
        .find(|name| query.iter().filter(|(k, _)| k == name).count() > 1)
    {
        return Err(config_error(
            field,
            format!("{:?} gives `{twice}` more than once; give it once", redact(raw)),
        ));
    }
    let db = match query.iter().find(|(k, _)| k == "db") {
        None => 0,
        Some((_, db)) => db.parse::<i64>().map_err(|_| {
            config_error(
                field.clone(),
                format!("database {db:?} is not a number; use ?db=0, ?db=1, …"),
            )
        })?,
    };
    {
        let mut pairs = url.query_pairs_mut();
        if let Some(user) = username.filter(|_| !given("user")) {
            pairs.append_pair("user", user);
        }
        if let Some(pass) = password.filter(|_| !given("pass")) {
            pairs.append_pair("pass", pass);
        }
    }
    if url.query() == Some("") {
        url.set_query(None);
    }
    let has = |name: &str| url.query_pairs().any(|(k, _)| k == name);
    if has("user") && !has("pass") {
        return Err(config_error(
            field,
            format!(
                "{:?} names a user without a password, which the client does not log in with (the connection would be the default user's); add ?pass=… or set `password`",
                redact(raw)
            ),
        ));
    }
    Ok(Target {
        display: url.path().to_owned(),
        url: url.to_string(),
        cluster_scheme: false,
        db,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms_normalise_and_hide_passwords() {
        let t = parse_target(0, "127.0.0.1:7000", None, None).unwrap();
        assert_eq!(
            (t.url.as_str(), t.display.as_str()),
            ("redis://127.0.0.1:7000", "127.0.0.1:7000")
        );
        let t = parse_target(0, "cache.local", Some("app"), Some("p@ss word")).unwrap();
        assert_eq!(t.display, "cache.local:6379");
        assert!(
            t.url.starts_with("redis://app:p%40ss%20word@cache.local"),
            "{}",
            t.url
        );
        let t = parse_target(0, "redis+cluster://u:secret@h:1/", None, None).unwrap();
        assert!(t.cluster_scheme);
        assert!(t.url.starts_with("redis://u:secret@h:1"));
        assert_eq!(parse_target(0, "redis://h:1/3", None, None).unwrap().db, 3);
    }

    #[test]
    fn unix_sockets_take_the_configured_credentials_in_the_query() {
        let t = parse_target(0, "unix:///run/redis.sock?db=2", Some("app"), Some("p&ss")).unwrap();
        assert_eq!(t.display, "/run/redis.sock");
        assert_eq!(t.db, 2);
        assert_eq!(t.url, "unix:///run/redis.sock?db=2&user=app&pass=p%26ss");
        // What the URL names wins over the fields, as for redis:// URLs.
        let t = parse_target(0, "unix:///r.sock?pass=own", None, Some("field")).unwrap();
        assert_eq!(t.url, "unix:///r.sock?pass=own");
        assert_eq!(
            parse_target(0, "unix:///r.sock", None, None).unwrap().url,
            "unix:///r.sock"
        );
        let t = parse_target(0, "unix://localhost/r.sock", None, None).unwrap();
        assert_eq!(t.display, "/r.sock");
    }

    #[test]
    fn bad_hosts_are_config_errors_naming_the_field_without_the_password() {
        for bad in [
            "",
            "http://h:1",
            "redis://u:topsecret@h:1/notanumber",
            "redis://:topsecret@:1",
            "h:notaport",
            "unix://u:topsecret@/run/r.sock",
            "unix:///run/r.sock?db=x&pass=topsecret",
            "unix://",
            "unix://run/redis.sock",
            "unix://h:x/r.sock?pass=topsecret",
            "unix:///r.sock?db=1&db=2&pass=topsecret",
            "unix:///r.sock?user=app",
            "redis://app@h:1",
            "rediss+cluster://app@h:1",
        ] {
            let err = parse_target(2, bad, None, None).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(err, Error::Config { ref field, .. } if field == "redis.hosts[2]"),
                "{bad}: {text}"
            );
            assert!(!text.contains("topsecret"), "{text}");
        }
    }

    #[test]
    fn a_mistyped_scheme_is_named_as_such_not_as_a_database() {
        for raw in ["redis//127.0.0.1:6379", "redis:/127.0.0.1:6379", "rediss//h:1/0"] {
            let err = parse_target(0, raw, None, None).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("scheme://"), "{raw}: {text}");
            assert!(!text.contains("use /0, /1"), "{raw}: {text}");
        }
        // A URL's database is still what its message is about, and host:port/db still reads.
        let err = parse_target(0, "redis://h:1/x", None, None).unwrap_err();
        assert!(err.to_string().contains("use /0, /1"), "{err}");
        assert_eq!(parse_target(0, "h:1/2", None, None).unwrap().db, 2);
    }

    #[test]
    fn a_user_name_without_a_password_is_refused_not_dropped() {
        // The client sends no AUTH without a password: the user would be the default user.
        for (raw, user) in [
            ("h:1", Some("app")),
            ("redis://bob@h:1", None),
            ("redis://bob@h:1", Some("app")),
        ] {
            let err = parse_target(0, raw, user, None).unwrap_err();
            assert!(
                matches!(err, Error::Config { ref field, ref reason } if field == "redis.hosts[0]" && reason.contains("without a password")),
                "{raw}: {err}"
            );
        }
        // With a password from the field or the URL, it logs in.
        let t = parse_target(0, "redis://bob@h:1", None, Some("pw")).unwrap();
        assert!(t.url.starts_with("redis://bob:pw@h:1"), "{}", t.url);
        assert!(parse_target(0, "h:1", Some("app"), Some("pw")).is_ok());
    }
}
