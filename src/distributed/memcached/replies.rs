//! The commands' reply reading driven from a byte slice instead of a socket, so that the fuzz
//! target `memcached_replies` can feed it whatever a broken or foreign server might send. The
//! packets are cut from the bytes as [`conn`](super::conn) cuts them from a stream (a header,
//! then the body length it claims) and go through the same `accept` and `finish` as there.
//! Not a stable API: reached only through the hidden `uno_cache::__fuzz`.

use super::commands::{Admin, Command, Delete, Get, Set, SetItem, Settings, Site, Stats, Step};
use super::protocol::{parse_header, Packet, HEADER_LEN};
use crate::distributed::envelope;
use crate::error::Result;
use crate::storage::StorageSize;

/// The keys of every keyed command [`read_replies`] runs, in request order (request `i` has
/// opaque `i`).
pub const KEYS: [&str; 3] = ["k0", "k1", "k2"];

/// The commands [`read_replies`] runs, by the number it is given (modulo their count).
pub const COMMANDS: [&str; 7] = ["get", "set", "delete", "version", "flush", "settings", "stats"];

/// What a command made of the bytes.
#[derive(Debug)]
pub enum Outcome {
    /// The bytes ended before the reply did, or are not a reply to the command (a connection
    /// would be dropped): why.
    Unread(String),
    /// `get` of [`KEYS`]: one slot per key.
    Get(Result<Vec<Option<Vec<u8>>>>),
    /// `set` of [`KEYS`]: the indices of the items the server refused.
    Set(Result<Vec<usize>>),
    /// `delete` of [`KEYS`]: how many existed.
    Delete(Result<u64>),
    /// `version` or `flush_all`: the server's text.
    Admin(Result<String>),
    /// `stats settings`: the item limit.
    Settings(Result<Option<usize>>),
    /// `stats`: items and bytes.
    Stats(Result<StorageSize>),
}

/// Runs command `which` (see [`COMMANDS`]) over `bytes` as its replies, packet by packet, until
/// the command says its reply is complete; `item_size_max` is the limit the host reported at
/// connect, for the messages of refused values.
#[must_use]
pub fn read_replies(which: u8, item_size_max: Option<usize>, bytes: &[u8]) -> Outcome {
    let site = Site {
        op: "fuzz",
        host: "fuzz:11211",
        item_size_max,
    };
    let keys = || KEYS.iter().map(|&k| k.to_owned()).collect::<Vec<_>>();
    let keyed = || (keys(), keys());
    let outcome = match usize::from(which) % COMMANDS.len() {
        0 => {
            let (keys, originals) = keyed();
            read(&Get { keys, originals }, bytes, site).map(Outcome::Get)
        }
        1 => {
            let items = KEYS
                .iter()
                .map(|&key| SetItem {
                    original: key.to_owned(),
                    key: key.to_owned(),
                    bytes: envelope::encode(b"value", None),
                    exptime: 0,
                })
                .collect();
            read(&Set { items }, bytes, site)
                .map(|refused| Outcome::Set(refused.map(|r| r.into_iter().map(|(i, _)| i).collect())))
        }
        2 => {
            let (keys, originals) = keyed();
            read(&Delete { keys, originals }, bytes, site).map(Outcome::Delete)
        }
        3 => read(&Admin::Version, bytes, site).map(Outcome::Admin),
        4 => read(&Admin::Flush, bytes, site).map(Outcome::Admin),
        5 => read(&Settings, bytes, site).map(Outcome::Settings),
        _ => read(&Stats, bytes, site).map(Outcome::Stats),
    };
    outcome.unwrap_or_else(Outcome::Unread)
}

/// `command`'s result from the packets in `bytes`, or why they are not its reply.
fn read<C: Command>(
    command: &C,
    mut bytes: &[u8],
    site: Site<'_>,
) -> std::result::Result<Result<C::Output>, String> {
    let mut state = C::State::default();
    loop {
        let (head, rest) = bytes
            .split_first_chunk::<HEADER_LEN>()
            .ok_or("the bytes end before the reply does")?;
        let header = parse_header(head)?;
        let body = rest
            .get(..header.body_len)
            .ok_or("the bytes end inside a body")?
            .to_vec();
        bytes = rest.get(header.body_len..).unwrap_or_default();
        if command.accept(&mut state, Packet { header, body })? == Step::Done {
            return Ok(command.finish(state, site));
        }
    }
}
