//! The level's reading of Redis replies driven from RESP bytes instead of a connection, so that
//! the fuzz target `redis_replies` can feed it whatever a broken or foreign server might send:
//! the bytes are parsed by the redis crate's own parser, then read by the same [`Reply`]
//! impls, slot map parser and limit reader as on a connection. Not a stable API: reached only
//! through the hidden `uno_cache::__fuzz`.

use super::commands::{Commands, Reply, ValueLimit};
use super::connection::bulk_limit_of;
use super::slots::parse_slots;
use crate::error::Result;
use crate::storage::Entry;

/// The keys of every keyed call [`read_reply`] reads a reply of, in request order.
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];

/// The replies [`read_reply`] reads, by the number it is given (modulo their count).
pub const REPLIES: [&str; 6] = [
    "GET",
    "MGET",
    "UNLINK (one key)",
    "UNLINK (many keys)",
    "CLUSTER SLOTS",
    "CONFIG GET proto-max-bulk-len",
];

/// What the level made of a reply.
#[derive(Debug)]
pub enum Outcome {
    /// The bytes are not one RESP value: the redis crate's parser refused them.
    Unparsed,
    /// `GET` of `k0`: its entry.
    Get(Result<Option<Entry>>),
    /// `MGET` of [`KEYS`]: one slot per key.
    GetMany(Result<Vec<Result<Option<Entry>>>>),
    /// `UNLINK` of `k0`: whether it existed.
    Delete(Result<bool>),
    /// `UNLINK` of [`KEYS`]: how many existed.
    DeleteMany(Result<u64>),
    /// `CLUSTER SLOTS`: how many ranges, and the last slot any of them names; or why not.
    Slots(std::result::Result<(usize, usize), String>),
    /// `CONFIG GET proto-max-bulk-len`: the limit.
    BulkLimit(Option<usize>),
}

/// Reads `bytes` as the reply `which` (see [`REPLIES`]) at `now_ms`.
#[must_use]
pub fn read_reply(which: u8, now_ms: u64, bytes: &[u8]) -> Outcome {
    let Ok(reply) = redis::parse_redis_value(bytes) else {
        return Outcome::Unparsed;
    };
    let commands = Commands::new(String::new(), None, ValueLimit::default_for("fuzz:6379"));
    match usize::from(which & 0x7f) % REPLIES.len() {
        0 => Outcome::Get(commands.get("k0").and_then(|c| c.reply.read(c.op, reply, now_ms))),
        1 => Outcome::GetMany(
            commands
                .get_many(&KEYS)
                .and_then(|c| c.reply.read(c.op, reply, now_ms)),
        ),
        2 => Outcome::Delete(
            commands
                .delete("k0")
                .and_then(|c| c.reply.read(c.op, reply, now_ms)),
        ),
        3 => Outcome::DeleteMany(
            commands
                .delete_many(&KEYS)
                .and_then(|c| c.reply.read(c.op, reply, now_ms)),
        ),
        4 => {
            let answering = (which & 0x80 != 0).then_some("seed");
            Outcome::Slots(parse_slots(reply, answering).map(|ranges| {
                let last = ranges.iter().map(|r| r.start.max(r.end)).max().unwrap_or(0);
                (ranges.len(), last)
            }))
        }
        _ => Outcome::BulkLimit(bulk_limit_of(reply)),
    }
}
