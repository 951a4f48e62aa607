//! Every key call of the level as data: a [`Command`] is what to send (a [`Request`]) and how
//! to read the reply (a [`Reply`]). [`Commands`] is the one place that builds them, so a change
//! to `GET` (or any other call) is made here once and every executor runs it: the blocking pool
//! (`super::pool`), and the async connection (`super::connection::Conn::send`) that serves the
//! async API and the blocking API on a cluster or over TLS.

use std::time::Duration;

use redis::{Cmd, Pipeline, RedisError, Value};

use super::errors::{backend, LEVEL};
use crate::distributed::{ceil_ms, check_key, effective_ttl, envelope, open_envelope};
use crate::error::{key_for_error, Error, KeyProblem, Result};
use crate::storage::Entry;

/// The longest bulk string Redis reads by default (`proto-max-bulk-len`), and the most a string
/// value may hold whatever that setting says.
pub(crate) const MAX_REDIS_VALUE: usize = 512 * 1024 * 1024;
/// Longest TTL sent as `PX`; Redis refuses expiries that overflow its millisecond clock.
pub(crate) const MAX_PX_MS: u64 = 1 << 52;

/// Where the manager's tag sets live, after the key prefix (`{prefix}uno-cache:tag:{tag}`, see
/// `storage-format.md`). Cache keys there are refused: a `SET` of one would replace a tag's set
/// (and an invalidation of the tag would then miss its members), and a write of a tag would fail
/// on the value.
pub(crate) const TAG_NAMESPACE: &str = "uno-cache:tag:";

/// Refuses the empty key and the keys of the tag sets' namespace ([`TAG_NAMESPACE`]).
fn check_redis_key(key: &str) -> Result<()> {
    check_key(key)?;
    if key.starts_with(TAG_NAMESPACE) {
        return Err(Error::InvalidKey {
            key: key_for_error(key),
            problem: KeyProblem::Reserved {
                namespace: TAG_NAMESPACE,
            },
        });
    }
    Ok(())
}

/// The longest value a `SET` may carry, and where that limit comes from (for the error).
///
/// A value over the server's `proto-max-bulk-len` is not refused as a command: Redis answers
/// `invalid bulk length` and closes the connection, a failure the breaker would hold against a
/// server that is up. So the limit the server reports at connect is checked before sending, as
/// every level checks its own limit.
#[derive(Debug, Clone)]
pub(crate) struct ValueLimit {
    /// The bulk length the server reads (the value's envelope included).
    bulk: usize,
    /// Where the limit comes from, for [`Error::ValueTooLarge`]'s `store`.
    source: String,
}

impl ValueLimit {
    /// Redis's own limit, for a server that did not say its `proto-max-bulk-len`.
    pub(crate) fn default_for(hosts: &str) -> Self {
        ValueLimit {
            bulk: MAX_REDIS_VALUE,
            source: format!("Redis at {hosts} (512 MiB per string value)"),
        }
    }

    /// The limit of a server whose `proto-max-bulk-len` is `bulk`: values above 512 MiB stay
    /// refused, as Redis refuses such strings whatever the setting.
    pub(crate) fn reported(hosts: &str, bulk: usize) -> Self {
        if bulk >= MAX_REDIS_VALUE {
            return Self::default_for(hosts);
        }
        ValueLimit {
            bulk,
            source: format!(
                "Redis at {hosts}, whose proto-max-bulk-len is {bulk} bytes; raise it there \
                 (CONFIG SET proto-max-bulk-len) or store such values elsewhere"
            ),
        }
    }

    /// The longest value, the envelope taken off.
    fn max_value(&self) -> usize {
        self.bulk.saturating_sub(envelope::HEADER_LEN)
    }

    /// Refuses a key [`check_redis_key`] refuses, or a value over the limit.
    pub(crate) fn check(&self, key: &str, len: usize) -> Result<()> {
        check_redis_key(key)?;
        if len > self.max_value() {
            return Err(Error::ValueTooLarge {
                key: key_for_error(key),
                len,
                max: self.max_value(),
                store: self.source.clone(),
            });
        }
        Ok(())
    }
}

/// What goes to the server.
pub(crate) enum Request {
    /// Nothing (an empty batch): the reply is `Nil`, with no round trip.
    Nothing,
    /// One command. On a cluster a multi-key `MGET` / `UNLINK` is split per slot by the client.
    Single(Cmd),
    /// Independent commands whose replies only say "done" (the `SET`s of a batch): one pipeline
    /// on a standalone server, one command each on a cluster.
    Batch(Pipeline),
}

/// How a reply reads as the call's result; `now_ms` judges envelope expiries.
pub(crate) trait Reply {
    /// The call's result.
    type Out;
    /// Reads the reply of `op`.
    fn read(self, op: &'static str, reply: Value, now_ms: u64) -> Result<Self::Out>;
}

/// One call: its name (for errors), what to send, how to read the reply.
pub(crate) struct Command<R> {
    pub(crate) op: &'static str,
    pub(crate) request: Request,
    pub(crate) reply: R,
}

/// A `GET` reply: the entry of one key, `None` if missing or expired.
pub(crate) struct OneEntry<'k>(&'k str);

/// An `MGET` reply: one entry slot per key, in key order. A value without a valid envelope is
/// that key's [`Error::InvalidEnvelope`], not the call's: the other keys' values stand.
pub(crate) struct Entries<'k>(&'k [&'k str]);

/// One key's slot of an `MGET`: its entry (`None` if missing or expired), or why it cannot be read.
pub(crate) type Read = Result<Option<Entry>>;

/// An `UNLINK` reply of one key: whether it existed.
pub(crate) struct Removed;

/// An `UNLINK` reply of many keys: how many existed, of the `.0` keys sent.
pub(crate) struct RemovedCount(usize);

/// A reply that only says the write was taken.
pub(crate) struct Written;

impl Reply for OneEntry<'_> {
    type Out = Option<Entry>;
    fn read(self, op: &'static str, reply: Value, now_ms: u64) -> Result<Self::Out> {
        entry(op, self.0, reply, now_ms)
    }
}

impl Reply for Entries<'_> {
    type Out = Vec<Read>;
    fn read(self, op: &'static str, reply: Value, now_ms: u64) -> Result<Self::Out> {
        let keys = self.0;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values = match reply {
            Value::Array(values) => values,
            other => redis::from_redis_value::<Vec<Value>>(other)
                .map_err(|err| backend(op, &RedisError::from(err)))?,
        };
        if values.len() != keys.len() {
            return Err(Error::Backend {
                level: LEVEL,
                op,
                reason: format!("MGET of {} keys returned {} values", keys.len(), values.len()),
            });
        }
        let mut reads = Vec::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            match entry(op, key, value, now_ms) {
                Err(e @ Error::InvalidEnvelope { .. }) => reads.push(Err(e)),
                other => reads.push(Ok(other?)),
            }
        }
        Ok(reads)
    }
}

impl Reply for Removed {
    type Out = bool;
    fn read(self, op: &'static str, reply: Value, _now_ms: u64) -> Result<bool> {
        Ok(int(op, reply)? > 0)
    }
}

impl Reply for RemovedCount {
    type Out = u64;
    fn read(self, op: &'static str, reply: Value, _now_ms: u64) -> Result<u64> {
        if matches!(reply, Value::Nil) {
            return Ok(0); // nothing was sent
        }
        Ok(unlinked(self.0, u64::try_from(int(op, reply)?).unwrap_or(0)))
    }
}

impl Reply for Written {
    type Out = ();
    fn read(self, _op: &'static str, _reply: Value, _now_ms: u64) -> Result<()> {
        Ok(())
    }
}

/// How many of `sent` keys an `UNLINK` removed, by the server's `count`: capped at `sent`, since
/// a count beyond the keys sent is no count, and summed over calls or a cluster's nodes it
/// overflowed.
pub(crate) fn unlinked(sent: usize, count: u64) -> u64 {
    count.min(u64::try_from(sent).unwrap_or(u64::MAX))
}

/// A `GET`-style value as the entry of `key`.
fn entry(op: &'static str, key: &str, value: Value, now_ms: u64) -> Result<Option<Entry>> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(bytes) => open_envelope(LEVEL, key, bytes, now_ms),
        other => match redis::from_redis_value::<Option<Vec<u8>>>(other) {
            Ok(Some(bytes)) => open_envelope(LEVEL, key, bytes, now_ms),
            Ok(None) => Ok(None),
            Err(err) => Err(backend(op, &RedisError::from(err))),
        },
    }
}

fn int(op: &'static str, value: Value) -> Result<i64> {
    redis::from_redis_value::<i64>(value).map_err(|err| backend(op, &RedisError::from(err)))
}

/// Builds the level's commands: the key prefix, the default TTL and the envelope.
#[derive(Debug, Clone)]
pub(crate) struct Commands {
    prefix: String,
    default_ttl: Option<Duration>,
    limit: ValueLimit,
}

impl Commands {
    pub(crate) fn new(prefix: String, default_ttl: Option<Duration>, limit: ValueLimit) -> Self {
        Commands {
            prefix,
            default_ttl,
            limit,
        }
    }

    /// Refuses a key the level refuses, or a value over the server's limit ([`ValueLimit`]).
    pub(crate) fn check_value(&self, key: &str, len: usize) -> Result<()> {
        self.limit.check(key, len)
    }

    /// The key prefix.
    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `GET prefix+key`.
    pub(crate) fn get<'k>(&self, key: &'k str) -> Result<Command<OneEntry<'k>>> {
        Ok(Command {
            op: "get",
            request: Request::Single(self.keyed("GET", &[key])?),
            reply: OneEntry(key),
        })
    }

    /// `SET prefix+key envelope [PX ms]`.
    pub(crate) fn set(
        &self,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<Command<Written>> {
        Ok(Command {
            op: "set",
            request: Request::Single(self.set_cmd(key, value, ttl, now_ms)?),
            reply: Written,
        })
    }

    /// `UNLINK prefix+key`.
    pub(crate) fn delete(&self, key: &str) -> Result<Command<Removed>> {
        Ok(Command {
            op: "delete",
            request: Request::Single(self.keyed("UNLINK", &[key])?),
            reply: Removed,
        })
    }

    /// One `MGET` of every key (nothing sent for none).
    pub(crate) fn get_many<'k>(&self, keys: &'k [&'k str]) -> Result<Command<Entries<'k>>> {
        self.every_key("get_many", "MGET", keys, Entries(keys))
    }

    /// One `UNLINK` of every key (nothing sent for none).
    pub(crate) fn delete_many(&self, keys: &[&str]) -> Result<Command<RemovedCount>> {
        self.every_key("delete_many", "UNLINK", keys, RemovedCount(keys.len()))
    }

    /// One command `name` of every key, read as `reply`; nothing is sent for none (the keys are
    /// checked all the same).
    fn every_key<R>(&self, op: &'static str, name: &str, keys: &[&str], reply: R) -> Result<Command<R>> {
        let cmd = self.keyed(name, keys)?;
        Ok(Command {
            op,
            request: if keys.is_empty() {
                Request::Nothing
            } else {
                Request::Single(cmd)
            },
            reply,
        })
    }

    /// A `SET` per item, all with `ttl`.
    pub(crate) fn set_many(
        &self,
        items: &[(&str, &[u8])],
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<Command<Written>> {
        self.sets(
            "set_many",
            items.len(),
            items.iter().map(|(key, value)| (*key, *value, ttl)),
            now_ms,
        )
    }

    /// A `SET` per item, each with its own TTL.
    pub(crate) fn set_each(
        &self,
        items: &[(&str, &[u8], Option<Duration>)],
        now_ms: u64,
    ) -> Result<Command<Written>> {
        self.sets(
            "set_each",
            items.len(),
            items.iter().map(|(key, value, ttl)| (*key, *value, *ttl)),
            now_ms,
        )
    }

    /// Checks every item as [`set_each`](Self::set_each) does, without building anything: a
    /// batch split per primary is checked whole before any part is sent, as a part refused for
    /// bad input after another part was written would leave the batch half applied.
    pub(crate) fn check_sets(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        for &(key, value, ttl) in items {
            self.check_value(key, value.len())?;
            effective_ttl(key, ttl, self.default_ttl)?;
        }
        Ok(())
    }

    /// Checks every key as [`delete_many`](Self::delete_many) does (see
    /// [`check_sets`](Self::check_sets)).
    pub(crate) fn check_keys(keys: &[&str]) -> Result<()> {
        keys.iter().try_for_each(|key| check_redis_key(key))
    }

    /// A `SET` per key: where a key repeats in the batch only its last item is sent (every item
    /// is still checked). The last item of a key wins, as on every other level; sending each
    /// would leave that to the order the server runs them in, which on a cluster (one command per
    /// `SET`, a `MOVED` or `ASK` retry sends one again later) need not be the batch's order.
    fn sets<'i>(
        &self,
        op: &'static str,
        len: usize,
        items: impl Iterator<Item = (&'i str, &'i [u8], Option<Duration>)>,
        now_ms: u64,
    ) -> Result<Command<Written>> {
        let items: Vec<(&str, &[u8], Option<Duration>)> = items.collect();
        // aHash: this runs for every batch write, most of which repeat no key.
        let mut last: ahash::AHashMap<&str, usize> = ahash::AHashMap::with_capacity(items.len());
        for (i, (key, _, _)) in items.iter().enumerate() {
            last.insert(*key, i);
        }
        let mut pipe = Pipeline::with_capacity(last.len());
        for (i, &(key, value, ttl)) in items.iter().enumerate() {
            if last.get(key) == Some(&i) {
                pipe.add_command(self.set_cmd(key, value, ttl, now_ms)?).ignore();
            } else {
                // Replaced later in the batch: checked as if sent, so a batch is refused the same
                // whether or not a key repeats.
                self.check_value(key, value.len())?;
                effective_ttl(key, ttl, self.default_ttl)?;
            }
        }
        Ok(Command {
            op,
            request: if len == 0 {
                Request::Nothing
            } else {
                Request::Batch(pipe)
            },
            reply: Written,
        })
    }

    fn set_cmd(&self, key: &str, value: &[u8], ttl: Option<Duration>, now_ms: u64) -> Result<Cmd> {
        self.check_value(key, value.len())?;
        let ttl_ms = effective_ttl(key, ttl, self.default_ttl)?.map(|ttl| ceil_ms(ttl).min(MAX_PX_MS));
        let bytes = envelope::encode(value, ttl_ms.map(|ms| now_ms.saturating_add(ms)));
        let mut cmd = redis::cmd("SET");
        cmd.arg(FullKey {
            prefix: &self.prefix,
            key,
        })
        .arg(bytes);
        if let Some(ms) = ttl_ms {
            cmd.arg("PX").arg(ms);
        }
        Ok(cmd)
    }

    /// `name prefix+key…` with every key checked.
    fn keyed(&self, name: &str, keys: &[&str]) -> Result<Cmd> {
        let mut cmd = redis::cmd(name);
        for key in keys {
            check_redis_key(key)?;
            cmd.arg(FullKey {
                prefix: &self.prefix,
                key,
            });
        }
        Ok(cmd)
    }
}

/// `prefix + key` as one command argument, written straight into the command's buffer (no
/// `String` per key).
struct FullKey<'a> {
    prefix: &'a str,
    key: &'a str,
}

impl redis::ToRedisArgs for FullKey<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write as _;
        let mut arg = out.writer_for_next_arg();
        // Writing into the command's in-memory buffer cannot fail.
        let _ = arg.write_all(self.prefix.as_bytes());
        let _ = arg.write_all(self.key.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cmd: &Cmd) -> Vec<Vec<u8>> {
        cmd.args_iter()
            .map(|arg| match arg {
                redis::Arg::Simple(bytes) => bytes.to_vec(),
                redis::Arg::Cursor => b"<cursor>".to_vec(),
                _ => b"<other>".to_vec(),
            })
            .collect()
    }

    fn single<R>(command: &Command<R>) -> &Cmd {
        match &command.request {
            Request::Single(cmd) => cmd,
            _ => panic!("not a single command"),
        }
    }

    #[test]
    fn get_is_one_prefixed_get_whose_reply_opens_the_envelope() {
        let commands = Commands::new("app:".to_owned(), None, ValueLimit::default_for("h:1"));
        let get = commands.get("k").unwrap();
        assert_eq!(args(single(&get)), [b"GET".to_vec(), b"app:k".to_vec()]);
        let reply = Value::BulkString(envelope::encode(b"v", Some(2_000)));
        let entry = get.reply.read("get", reply, 1_000).unwrap().unwrap();
        assert_eq!(entry.value, b"v");
        let get = commands.get("k").unwrap();
        let expired = Value::BulkString(envelope::encode(b"v", Some(2_000)));
        assert_eq!(get.reply.read("get", expired, 2_000).unwrap(), None);
        assert_eq!(
            commands
                .get("k")
                .unwrap()
                .reply
                .read("get", Value::Nil, 0)
                .unwrap(),
            None
        );
    }

    #[test]
    fn set_sends_the_ttl_as_px_and_in_the_envelope() {
        let commands = Commands::new(
            "p:".to_owned(),
            Some(Duration::from_secs(5)),
            ValueLimit::default_for("h:1"),
        );
        let set = commands
            .set("k", b"v", Some(Duration::from_micros(1_500)), 10)
            .unwrap();
        let a = args(single(&set));
        assert_eq!(a[..2], [b"SET".to_vec(), b"p:k".to_vec()]);
        assert_eq!(a[3..], [b"PX".to_vec(), b"2".to_vec()]);
        assert_eq!(envelope::decode_owned(a[2].clone()).unwrap().1, Some(12));
        let default = commands.set("k", b"v", None, 0).unwrap();
        assert_eq!(args(single(&default))[4], b"5000".to_vec());
        assert!(matches!(
            commands.set("k", b"v", Some(Duration::ZERO), 0),
            Err(Error::ZeroTtl { .. })
        ));
    }

    #[test]
    fn empty_batches_send_nothing_and_bad_keys_are_refused_before_sending() {
        let commands = Commands::new(String::new(), None, ValueLimit::default_for("h:1"));
        assert!(matches!(
            commands.get_many(&[]).unwrap().request,
            Request::Nothing
        ));
        assert!(matches!(
            commands.delete_many(&[]).unwrap().request,
            Request::Nothing
        ));
        assert!(matches!(
            commands.set_many(&[], None, 0).unwrap().request,
            Request::Nothing
        ));
        assert!(matches!(
            commands.get_many(&["a", ""]),
            Err(Error::InvalidKey { .. })
        ));
        assert_eq!(RemovedCount(0).read("delete_many", Value::Nil, 0).unwrap(), 0);
    }

    /// A count of deleted keys is the server's word: one beyond the keys sent is capped, so
    /// that the counts of a cluster's nodes cannot overflow their sum.
    #[test]
    fn a_deleted_count_beyond_the_keys_sent_is_capped_at_them() {
        let count = |sent: usize, reply: Value| RemovedCount(sent).read("delete_many", reply, 0).unwrap();
        assert_eq!(count(3, Value::Int(i64::MAX)), 3);
        assert_eq!(count(3, Value::Int(2)), 2);
        assert_eq!(count(3, Value::Int(-1)), 0);
        assert!(Removed.read("delete", Value::Int(i64::MAX), 0).unwrap());
    }

    #[test]
    fn a_key_repeated_in_a_batch_is_sent_once_with_its_last_item() {
        let commands = Commands::new("p:".to_owned(), None, ValueLimit::default_for("h:1"));
        let ttl = Some(Duration::from_secs(9));
        let set = commands
            .set_each(
                &[("k", &b"old"[..], None), ("j", b"x", None), ("k", b"new", ttl)],
                0,
            )
            .unwrap();
        let Request::Batch(pipe) = &set.request else {
            panic!("not a batch")
        };
        let sent: Vec<Vec<Vec<u8>>> = pipe.cmd_iter().map(args).collect();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0][1], b"p:j".to_vec());
        assert_eq!(sent[1][1], b"p:k".to_vec());
        assert_eq!(envelope::decode_owned(sent[1][2].clone()).unwrap().0, b"new");
        assert_eq!(sent[1][4], b"9000".to_vec());
        // A replaced item is still checked.
        assert!(matches!(
            commands.set_each(&[("k", &b"v"[..], Some(Duration::ZERO)), ("k", b"v", None)], 0),
            Err(Error::ZeroTtl { .. })
        ));
    }

    #[test]
    fn an_mget_reply_of_the_wrong_length_is_a_backend_error() {
        let keys = ["a", "b"];
        let err = Entries(&keys)
            .read("get_many", Value::Array(vec![Value::Nil]), 0)
            .unwrap_err();
        assert!(matches!(err, Error::Backend { op: "get_many", .. }), "{err}");
    }
}
