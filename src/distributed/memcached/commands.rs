//! Commands as data. Each command is a value that knows the bytes of its request and how to
//! read its reply, packet by packet; the executors in [`conn`](super::conn) (blocking on the
//! caller's thread, async on the I/O thread) run the same description and never build a
//! request or decode a reply themselves.
//!
//! Batches are pipelined: one request per key with the *quiet* opcodes (no reply on success for
//! sets and deletes, none on a miss for gets), then a `noop` whose reply marks the end. A batch
//! of any size on one host is one round trip.

use super::super::envelope;
use super::options::value_limit;
use super::protocol::{self, opcode, status, Packet};
use crate::error::{key_for_error, Error, Result};
use crate::storage::StorageSize;

const LEVEL: &str = "memcached";
/// The `opaque` of the closing `noop` (key indices stay below it).
const NOOP_OPAQUE: u32 = u32::MAX;
/// The `opaque` of `version`, which only the start-up check sends: four line ends. A binary
/// server echoes it; a memcached that speaks only the text protocol (`-B ascii`) reads them as
/// ends of lines and answers each with `ERROR` at once, so the check sees a reply that is not
/// binary instead of waiting out its deadline for a line end that never comes.
const VERSION_OPAQUE: u32 = u32::from_be_bytes(*b"\n\n\n\n");
/// Keys per command: a longer batch is split into several commands, each one round trip, so
/// that neither side's socket buffers fill while the other is still writing.
pub(super) const MAX_BATCH: usize = 1024;

/// Whether a reply is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// More packets belong to this reply.
    More,
    /// The reply is complete.
    Done,
}

/// Where a command runs, for messages.
#[derive(Debug, Clone, Copy)]
pub(super) struct Site<'a> {
    pub(super) op: &'static str,
    /// `host:port`.
    pub(super) host: &'a str,
    /// The host's item limit (`item_size_max`, its `-I`) as it reported it at connect, or when
    /// it rejoined.
    pub(super) item_size_max: Option<usize>,
}

impl Site<'_> {
    pub(super) fn refused(&self, what: &str, code: u16, text: &str) -> Error {
        Error::Backend {
            level: LEVEL,
            op: self.op,
            reason: format!(
                "{}: {what} refused: {} (status {code:#06x}){}",
                self.host,
                protocol::status_text(code),
                if text.is_empty() {
                    String::new()
                } else {
                    format!(", {text}")
                }
            ),
        }
    }
}

/// One command on one host: its request, and how to read its reply.
pub(super) trait Command: Send + Sync + 'static {
    /// What the reader keeps between packets.
    type State: Default + Send;
    /// The command's result.
    type Output: Send + 'static;

    /// Appends the request bytes; a message if a part cannot be framed (a bug, not bad input).
    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String>;

    /// Takes one reply packet. An error means the stream is out of step: the connection must
    /// be dropped. Refusals by the server are kept in the state and reported by `finish`.
    fn accept(&self, state: &mut Self::State, packet: Packet) -> std::result::Result<Step, String>;

    /// The result once the reply is complete.
    fn finish(&self, state: Self::State, site: Site<'_>) -> Result<Self::Output>;

    /// Each item the command stores: what is in doubt if its reply does not come (see
    /// `super::doubt`). None for a command that stores nothing.
    fn written(&self) -> Vec<Written<'_>> {
        Vec::new()
    }
}

/// An item a command stores, as its doubt keeps it.
pub(super) struct Written<'a> {
    /// The server key, where the correction goes.
    pub(super) key: &'a str,
    /// The caller's key, told to the late-write hook: a hashed server key cannot be turned back
    /// into it.
    pub(super) name: &'a str,
    /// The value sent, envelope included.
    pub(super) value: &'a [u8],
}

fn index(opaque: u32, len: usize) -> std::result::Result<usize, String> {
    usize::try_from(opaque)
        .ok()
        .filter(|&i| i < len)
        .ok_or_else(|| format!("reply for request #{opaque}, of {len} sent"))
}

fn opaque_of(i: usize) -> u32 {
    // Batches hold at most MAX_BATCH keys.
    u32::try_from(i).unwrap_or(NOOP_OPAQUE - 1)
}

fn end(packet: &Packet) -> std::result::Result<Step, String> {
    if packet.header.opaque == NOOP_OPAQUE {
        Ok(Step::Done)
    } else {
        Err(format!("noop reply #{} out of place", packet.header.opaque))
    }
}

fn unexpected(packet: &Packet, what: &str) -> String {
    format!(
        "reply with opcode {:#04x} while reading a {what}",
        packet.header.opcode
    )
}

/// The first refusal in a batch: (index, status, message).
type Refusal = Option<(usize, u16, String)>;

/// The request of [`Get`] and [`Delete`]: a `quiet` request per key, by index, then a `noop`.
fn encode_keys(out: &mut Vec<u8>, quiet: u8, keys: &[String]) -> std::result::Result<(), String> {
    for (i, key) in keys.iter().enumerate() {
        protocol::request(out, quiet, opaque_of(i), &[], key.as_bytes(), &[])?;
    }
    protocol::request(out, opcode::NOOP, NOOP_OPAQUE, &[], &[], &[])
}

/// The error of [`Get`]'s and [`Delete`]'s first refusal, naming the caller's key, not the server's.
fn refused_key(
    site: Site<'_>,
    what: &str,
    originals: &[String],
    (i, code, text): (usize, u16, String),
) -> Error {
    let key = key_for_error(originals.get(i).map_or("", String::as_str));
    site.refused(&format!("{what} of {key:?}"), code, &text)
}

/// `get` of keys on one host (already mapped); one slot per key, `None` for a miss.
#[derive(Debug)]
pub(super) struct Get {
    /// The server keys.
    pub(super) keys: Vec<String>,
    /// The caller's keys, for errors (the server key of a long or odd key is a hash or an
    /// escape the caller cannot match to it).
    pub(super) originals: Vec<String>,
}

/// What a [`Get`] has read so far.
#[derive(Debug, Default)]
pub(super) struct GetState {
    found: Vec<Option<Vec<u8>>>,
    refused: Refusal,
}

impl Command for Get {
    type State = GetState;
    type Output = Vec<Option<Vec<u8>>>;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        encode_keys(out, opcode::GETKQ, &self.keys)
    }

    fn accept(&self, state: &mut GetState, packet: Packet) -> std::result::Result<Step, String> {
        match packet.header.opcode {
            opcode::NOOP => end(&packet),
            opcode::GETKQ => {
                let i = index(packet.header.opaque, self.keys.len())?;
                match packet.header.status {
                    status::OK => {
                        if self.keys.get(i).map(String::as_bytes) != Some(packet.key()) {
                            return Err(format!("reply for request #{i} names another key"));
                        }
                        if state.found.len() < self.keys.len() {
                            state.found.resize(self.keys.len(), None);
                        }
                        if let Some(slot) = state.found.get_mut(i) {
                            *slot = Some(packet.into_value());
                        }
                    }
                    status::KEY_NOT_FOUND => {}
                    code => {
                        state.refused.get_or_insert((i, code, packet.value_text()));
                    }
                }
                Ok(Step::More)
            }
            _ => Err(unexpected(&packet, "get")),
        }
    }

    fn finish(&self, mut state: GetState, site: Site<'_>) -> Result<Self::Output> {
        if let Some(refusal) = state.refused {
            return Err(refused_key(site, "get", &self.originals, refusal));
        }
        state.found.resize(self.keys.len(), None);
        Ok(state.found)
    }
}

/// One value to store.
#[derive(Debug)]
pub(super) struct SetItem {
    /// The caller's key, for errors.
    pub(super) original: String,
    /// The server key.
    pub(super) key: String,
    /// The enveloped value.
    pub(super) bytes: Vec<u8>,
    pub(super) exptime: u32,
}

/// `set` of items on one host, each with its own expiry. Its output lists the items the host
/// refused (index in the command): as too large ([`Error::ValueTooLarge`]) or for want of memory
/// ([`Error::ItemRefused`]); the others were stored. Any other refusal fails the command.
///
/// Both refusals are the item's, not the host's: a server that is up and refuses some values
/// must not open its breaker, which would stop the reads and writes of every other key. And
/// memcached drops the key's previous value on a failed `set` (so as not to keep stale data), so
/// the key reads as a miss there, never as an older value.
#[derive(Debug)]
pub(super) struct Set {
    pub(super) items: Vec<SetItem>,
}

/// What a [`Set`] has read so far.
#[derive(Debug, Default)]
pub(super) struct SetState {
    /// Items the server refused as too large or for want of memory: (index, status, message).
    items_refused: Vec<(usize, u16, String)>,
    /// The first other refusal.
    refused: Refusal,
}

impl Set {
    /// The error of item `i`, refused by the server as too large.
    fn too_large(&self, i: usize, text: &str, site: Site<'_>) -> Option<Error> {
        let item = self.items.get(i)?;
        let len = item.bytes.len().saturating_sub(envelope::HEADER_LEN);
        // Our own check passed, so the server's -I is below `max_item_size`. Its limit is the
        // `item_size_max` it reported at connect (or rejoining), unless this value fits that
        // (the server was restarted since with a smaller -I, unseen): then it is unknown, and `max` says 0 rather than
        // a figure of our own making.
        let max = site
            .item_size_max
            .map(|size| value_limit(size, item.key.len()))
            .filter(|&max| max < len);
        let limit = match (max, site.item_size_max) {
            (Some(_), Some(size)) => format!("item_size_max {size} bytes"),
            _ => "item limit unknown".to_owned(),
        };
        Some(Error::ValueTooLarge {
            key: key_for_error(&item.original),
            len,
            max: max.unwrap_or(0),
            store: format!(
                "memcached at {} ({limit}; its -I is below max_item_size), which refused it \
                 (\"{text}\") and dropped the key's previous value there; start memcached with \
                 a larger -I, or set max_item_size to its -I to have such values refused before \
                 they are sent",
                site.host
            ),
        })
    }
}

impl Set {
    /// The error of item `i`, refused by the server for want of memory.
    fn out_of_memory(&self, i: usize, text: &str, site: Site<'_>) -> Option<Error> {
        let item = self.items.get(i)?;
        Some(Error::ItemRefused {
            level: LEVEL,
            key: key_for_error(&item.original),
            reason: format!(
                "memcached at {} is out of memory (\"{text}\") and dropped the key's previous \
                 value there; it refuses values rather than evicting when run with -M: give it \
                 more memory (-m) or let it evict (start it without -M)",
                site.host
            ),
        })
    }
}

impl Command for Set {
    type State = SetState;
    type Output = Vec<(usize, Error)>;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        for (i, item) in self.items.iter().enumerate() {
            let mut extras = [0u8; 8]; // flags (0), then the expiry
            extras[4..].copy_from_slice(&item.exptime.to_be_bytes());
            protocol::request(
                out,
                opcode::SETQ,
                opaque_of(i),
                &extras,
                item.key.as_bytes(),
                &item.bytes,
            )?;
        }
        protocol::request(out, opcode::NOOP, NOOP_OPAQUE, &[], &[], &[])
    }

    fn accept(&self, state: &mut SetState, packet: Packet) -> std::result::Result<Step, String> {
        match packet.header.opcode {
            opcode::NOOP => end(&packet),
            opcode::SETQ => {
                let i = index(packet.header.opaque, self.items.len())?;
                match packet.header.status {
                    status::OK => {}
                    // An item a server answers twice is still one refusal: listed twice, a
                    // batch's error named it twice and counted it as two failed items.
                    code @ (status::TOO_LARGE | status::OUT_OF_MEMORY)
                        if !state.items_refused.iter().any(|&(j, ..)| j == i) =>
                    {
                        state.items_refused.push((i, code, packet.value_text()));
                    }
                    status::TOO_LARGE | status::OUT_OF_MEMORY => {}
                    code => {
                        state.refused.get_or_insert((i, code, packet.value_text()));
                    }
                }
                Ok(Step::More)
            }
            _ => Err(unexpected(&packet, "set")),
        }
    }

    fn finish(&self, state: SetState, site: Site<'_>) -> Result<Self::Output> {
        if let Some((i, code, text)) = state.refused {
            return Err(match self.items.get(i) {
                Some(item) => site.refused(
                    &format!("set of {:?}", key_for_error(&item.original)),
                    code,
                    &text,
                ),
                None => site.refused("set", code, &text),
            });
        }
        Ok(state
            .items_refused
            .into_iter()
            .filter_map(|(i, code, text)| {
                let error = match code {
                    status::TOO_LARGE => self.too_large(i, &text, site)?,
                    _ => self.out_of_memory(i, &text, site)?,
                };
                Some((i, error))
            })
            .collect())
    }

    fn written(&self) -> Vec<Written<'_>> {
        self.items
            .iter()
            .map(|item| Written {
                key: &item.key,
                name: &item.original,
                value: &item.bytes,
            })
            .collect()
    }
}

/// `delete` of keys on one host; the output is how many existed.
#[derive(Debug)]
pub(super) struct Delete {
    /// The server keys.
    pub(super) keys: Vec<String>,
    /// The caller's keys, for errors.
    pub(super) originals: Vec<String>,
}

/// What a [`Delete`] has read so far.
#[derive(Debug, Default)]
pub(super) struct DeleteState {
    missing: u64,
    refused: Refusal,
}

impl Command for Delete {
    type State = DeleteState;
    type Output = u64;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        encode_keys(out, opcode::DELETEQ, &self.keys)
    }

    fn accept(&self, state: &mut DeleteState, packet: Packet) -> std::result::Result<Step, String> {
        match packet.header.opcode {
            opcode::NOOP => end(&packet),
            opcode::DELETEQ => {
                let i = index(packet.header.opaque, self.keys.len())?;
                match packet.header.status {
                    status::OK => {}
                    status::KEY_NOT_FOUND => state.missing += 1,
                    code => {
                        state.refused.get_or_insert((i, code, packet.value_text()));
                    }
                }
                Ok(Step::More)
            }
            _ => Err(unexpected(&packet, "delete")),
        }
    }

    fn finish(&self, state: DeleteState, site: Site<'_>) -> Result<u64> {
        if let Some(refusal) = state.refused {
            return Err(refused_key(site, "delete", &self.originals, refusal));
        }
        let sent = u64::try_from(self.keys.len()).unwrap_or(u64::MAX);
        Ok(sent.saturating_sub(state.missing))
    }
}

/// A command with one request and one reply packet, and no key.
#[derive(Debug, Clone, Copy)]
pub(super) enum Admin {
    /// `version`: proves the host answers the binary protocol (see [`VERSION_OPAQUE`]).
    Version,
    /// `flush_all`.
    Flush,
}

impl Command for Admin {
    type State = Option<(u16, String)>;
    type Output = String;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        let (code, opaque) = match self {
            Admin::Version => (opcode::VERSION, VERSION_OPAQUE),
            Admin::Flush => (opcode::FLUSH, 0),
        };
        protocol::request(out, code, opaque, &[], &[], &[])
    }

    fn accept(&self, state: &mut Self::State, packet: Packet) -> std::result::Result<Step, String> {
        let wanted = match self {
            Admin::Version => opcode::VERSION,
            Admin::Flush => opcode::FLUSH,
        };
        if packet.header.opcode != wanted {
            return Err(unexpected(&packet, "version or flush"));
        }
        *state = Some((packet.header.status, packet.value_text()));
        Ok(Step::Done)
    }

    fn finish(&self, state: Self::State, site: Site<'_>) -> Result<String> {
        match state {
            Some((status::OK, text)) => Ok(text),
            // memcached run with -F (flush_all disabled) says so with an authentication error,
            // which read as "authentication required" sent the reader after a password.
            Some((code @ (status::AUTH_REQUIRED | status::AUTH_ERROR), text))
                if matches!(self, Admin::Flush) =>
            {
                Err(Error::Misconfigured {
                    level: LEVEL,
                    hosts: site.host.to_owned(),
                    reason: format!(
                        "flush_all refused with an authentication error ({text:?}, status \
                         {code:#06x}): memcached answers so when run with -F, which disables \
                         flush_all (or with SASL, -S); clear() needs flush_all: run it without \
                         -F, or delete known keys with delete_many"
                    ),
                    // clear() alone: the other calls are served, so no breaker counts it.
                    call_only: true,
                })
            }
            Some((code, text)) => Err(site.refused(site.op, code, &text)),
            None => Err(site.refused(site.op, 0xffff, "no reply")),
        }
    }
}

/// `stats settings`: the host's item limit (`item_size_max`, its `-I`), if it reports one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings;

impl Command for Settings {
    type State = (Option<usize>, Option<(u16, String)>);
    type Output = Option<usize>;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        protocol::request(out, opcode::STAT, 0, &[], b"settings", &[])
    }

    fn accept(&self, state: &mut Self::State, packet: Packet) -> std::result::Result<Step, String> {
        if packet.header.opcode != opcode::STAT {
            return Err(unexpected(&packet, "stats settings"));
        }
        if packet.header.status != status::OK {
            state.1 = Some((packet.header.status, packet.value_text()));
            return Ok(Step::Done);
        }
        match packet.key() {
            b"" => return Ok(Step::Done),
            // A figure that does not parse is no figure: the limit stays unknown.
            b"item_size_max" => state.0 = packet.value_text().trim().parse().ok(),
            _ => {}
        }
        Ok(Step::More)
    }

    fn finish(&self, state: Self::State, site: Site<'_>) -> Result<Option<usize>> {
        match state.1 {
            Some((code, text)) => Err(site.refused("stats settings", code, &text)),
            None => Ok(state.0),
        }
    }
}

/// `stats`: items and bytes held by one host.
#[derive(Debug, Clone, Copy)]
pub(super) struct Stats;

impl Command for Stats {
    type State = (StorageSize, Option<(u16, String)>);
    type Output = StorageSize;

    fn encode(&self, out: &mut Vec<u8>) -> std::result::Result<(), String> {
        protocol::request(out, opcode::STAT, 0, &[], &[], &[])
    }

    fn accept(&self, state: &mut Self::State, packet: Packet) -> std::result::Result<Step, String> {
        if packet.header.opcode != opcode::STAT {
            return Err(unexpected(&packet, "stats"));
        }
        if packet.header.status != status::OK {
            state.1 = Some((packet.header.status, packet.value_text()));
            return Ok(Step::Done);
        }
        if packet.key().is_empty() {
            return Ok(Step::Done);
        }
        let read = || packet.value_text().trim().parse::<u64>().unwrap_or(0);
        match packet.key() {
            // A server's figures are summed saturating: a reply that lies cannot overflow them.
            b"curr_items" => state.0.items = state.0.items.saturating_add(read()),
            b"bytes" => state.0.bytes = state.0.bytes.saturating_add(read()),
            _ => {}
        }
        Ok(Step::More)
    }

    fn finish(&self, state: Self::State, site: Site<'_>) -> Result<StorageSize> {
        match state.1 {
            Some((code, text)) => Err(site.refused("stats", code, &text)),
            None => Ok(state.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::{parse_header, HEADER_LEN};
    use super::*;

    fn reply(opcode: u8, status: u16, opaque: u32, key: &[u8], value: &[u8]) -> Packet {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = 0x81;
        bytes[1] = opcode;
        bytes[2..4].copy_from_slice(&u16::try_from(key.len()).unwrap().to_be_bytes());
        bytes[6..8].copy_from_slice(&status.to_be_bytes());
        let body = u32::try_from(key.len() + value.len()).unwrap();
        bytes[8..12].copy_from_slice(&body.to_be_bytes());
        bytes[12..16].copy_from_slice(&opaque.to_be_bytes());
        Packet {
            header: parse_header(&bytes).unwrap(),
            body: [key, value].concat(),
        }
    }

    const SITE: Site<'static> = Site {
        op: "get_many",
        host: "h:1",
        item_size_max: None,
    };

    #[test]
    fn a_batch_is_quiet_requests_then_one_noop() {
        let get = Get {
            keys: vec!["a".into(), "b".into()],
            originals: vec!["a".into(), "b".into()],
        };
        let mut out = Vec::new();
        get.encode(&mut out).unwrap();
        assert_eq!(out.len(), 3 * HEADER_LEN + 2);
        assert_eq!(out[1], opcode::GETKQ);
        assert_eq!(out[HEADER_LEN + 1 + 1], opcode::GETKQ);
        assert_eq!(out[2 * HEADER_LEN + 2 + 1], opcode::NOOP);
    }

    #[test]
    fn get_reads_hits_by_index_and_ends_at_the_noop() {
        let get = Get {
            keys: vec!["a".into(), "b".into(), "c".into()],
            originals: vec!["a".into(), "b".into(), "c".into()],
        };
        let mut state = GetState::default();
        let step = get
            .accept(&mut state, reply(opcode::GETKQ, 0, 2, b"c", b"vc"))
            .unwrap();
        assert_eq!(step, Step::More);
        let step = get
            .accept(&mut state, reply(opcode::NOOP, 0, NOOP_OPAQUE, b"", b""))
            .unwrap();
        assert_eq!(step, Step::Done);
        assert_eq!(
            get.finish(state, SITE).unwrap(),
            vec![None, None, Some(b"vc".to_vec())]
        );
        // A reply naming a key we did not ask for at that index means the stream is out of step.
        let mut state = GetState::default();
        assert!(get
            .accept(&mut state, reply(opcode::GETKQ, 0, 1, b"x", b"v"))
            .is_err());
        assert!(get
            .accept(&mut state, reply(opcode::GETKQ, 0, 9, b"a", b"v"))
            .is_err());
    }

    #[test]
    fn set_refusals_name_the_key_and_too_large_and_out_of_memory_are_typed() {
        let set = Set {
            items: vec![SetItem {
                original: "photo".into(),
                key: "p:photo".into(),
                bytes: vec![0; envelope::HEADER_LEN + 10],
                exptime: 0,
            }],
        };
        let mut state = SetState::default();
        set.accept(
            &mut state,
            reply(opcode::SETQ, status::TOO_LARGE, 0, b"", b"Too large."),
        )
        .unwrap();
        set.accept(&mut state, reply(opcode::NOOP, 0, NOOP_OPAQUE, b"", b""))
            .unwrap();
        let mut refused = set.finish(state, SITE).unwrap();
        let (i, err) = refused.pop().unwrap();
        // The server's limit was not learned: no figure is made up.
        assert!(
            i == 0 && matches!(err, Error::ValueTooLarge { ref key, len: 10, max: 0, .. } if key == "photo"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            !text.contains("limit of") && text.contains("-I") && text.contains("previous value"),
            "{text}"
        );
        // Out of memory is the item's refusal too, typed apart.
        let mut state = SetState::default();
        set.accept(&mut state, reply(opcode::SETQ, 0x82, 0, b"", b"Out of memory"))
            .unwrap();
        let mut refused = set.finish(state, SITE).unwrap();
        let (i, err) = refused.pop().unwrap();
        assert!(
            i == 0 && matches!(err, Error::ItemRefused { ref key, .. } if key == "photo"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("out of memory") && text.contains("h:1") && text.contains("-M"),
            "{text}"
        );
        // Any other refusal fails the command, naming the key.
        let mut state = SetState::default();
        set.accept(&mut state, reply(opcode::SETQ, 0x84, 0, b"", b"Internal error"))
            .unwrap();
        let err = set.finish(state, SITE).unwrap_err().to_string();
        assert!(
            err.contains("photo") && err.contains("internal error") && err.contains("h:1"),
            "{err}"
        );
        // A long key is shortened in the message, as everywhere else.
        let long = "x".repeat(1000);
        let set = Set {
            items: vec![SetItem {
                original: long.clone(),
                key: "p:hashed".into(),
                bytes: vec![0; envelope::HEADER_LEN + 10],
                exptime: 0,
            }],
        };
        let mut state = SetState::default();
        set.accept(&mut state, reply(opcode::SETQ, 0x84, 0, b"", b"Internal error"))
            .unwrap();
        let err = set.finish(state, SITE).unwrap_err().to_string();
        assert!(err.contains(&long[..60]) && !err.contains(&long[..100]), "{err}");
    }

    /// A value the server refuses is over the limit it reported at connect, less the item
    /// header, the envelope and the server key; a reported limit the value fits is out of date
    /// (the server was restarted with a smaller one) and no limit is given.
    #[test]
    fn a_server_refusal_gives_the_limit_the_server_reported() {
        let set = Set {
            items: vec![SetItem {
                original: "photo".into(),
                key: "p:photo".into(),
                bytes: vec![0; envelope::HEADER_LEN + 10],
                exptime: 0,
            }],
        };
        let refuse = |item_size_max| {
            let mut state = SetState::default();
            set.accept(
                &mut state,
                reply(opcode::SETQ, status::TOO_LARGE, 0, b"", b"Too large."),
            )
            .unwrap();
            let site = Site {
                item_size_max,
                ..SITE
            };
            set.finish(state, site).unwrap().pop().unwrap().1
        };
        let size = super::super::options::ITEM_OVERHEAD + envelope::HEADER_LEN + "p:photo".len() + 4;
        let err = refuse(Some(size));
        assert!(matches!(err, Error::ValueTooLarge { max: 4, .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("limit of 4 bytes") && text.contains(&format!("item_size_max {size}")),
            "{text}"
        );
        let err = refuse(Some(size + 100));
        assert!(matches!(err, Error::ValueTooLarge { max: 0, .. }), "{err}");
    }

    /// A server out of step may answer an item twice, with a body of any length: the item is
    /// still one refusal, and the server's text in its error stays short.
    #[test]
    fn a_repeated_refusal_with_a_huge_text_is_one_refusal_with_a_short_message() {
        let item = |key: &str| SetItem {
            original: key.into(),
            key: key.into(),
            bytes: vec![0; envelope::HEADER_LEN + 10],
            exptime: 0,
        };
        let set = Set {
            items: vec![item("a"), item("b")],
        };
        let mut state = SetState::default();
        let huge = vec![b'x'; 1 << 20];
        for _ in 0..2 {
            set.accept(&mut state, reply(opcode::SETQ, status::TOO_LARGE, 1, b"", &huge))
                .unwrap();
        }
        set.accept(&mut state, reply(opcode::NOOP, 0, NOOP_OPAQUE, b"", b""))
            .unwrap();
        let refused = set.finish(state, SITE).unwrap();
        assert_eq!(refused.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
        let text = refused[0].1.to_string();
        assert!(
            text.len() < 2_000 && text.contains("1048576 bytes in all"),
            "{} bytes: {}",
            text.len(),
            &text[..200]
        );
    }

    #[test]
    fn settings_read_the_item_limit() {
        let mut state = <Settings as Command>::State::default();
        for (k, v) in [
            (&b"maxbytes"[..], &b"67108864"[..]),
            (b"item_size_max", b"1048576"),
        ] {
            assert_eq!(
                Settings
                    .accept(&mut state, reply(opcode::STAT, 0, 0, k, v))
                    .unwrap(),
                Step::More
            );
        }
        Settings
            .accept(&mut state, reply(opcode::STAT, 0, 0, b"", b""))
            .unwrap();
        assert_eq!(Settings.finish(state, SITE).unwrap(), Some(1_048_576));
    }

    /// A refusal names the caller's key: the server key of a long or odd key is a hash or an
    /// escape the caller cannot match to it.
    #[test]
    fn a_refused_get_or_delete_names_the_callers_key_not_the_server_key() {
        let get = Get {
            keys: vec!["%#0a1b2c".into()],
            originals: vec!["café:menu".into()],
        };
        let mut state = GetState::default();
        get.accept(&mut state, reply(opcode::GETKQ, 0x84, 0, b"", b"Too large"))
            .unwrap();
        let err = get.finish(state, SITE).unwrap_err().to_string();
        assert!(err.contains("café:menu") && !err.contains("%#0a1b2c"), "{err}");

        let delete = Delete {
            keys: vec!["%#0a1b2c".into()],
            originals: vec!["café:menu".into()],
        };
        let mut state = DeleteState::default();
        delete
            .accept(&mut state, reply(opcode::DELETEQ, 0x84, 0, b"", b"Too large"))
            .unwrap();
        let err = delete.finish(state, SITE).unwrap_err().to_string();
        assert!(err.contains("café:menu") && !err.contains("%#0a1b2c"), "{err}");
    }

    #[test]
    fn delete_counts_what_existed() {
        let delete = Delete {
            keys: vec!["a".into(), "b".into(), "c".into()],
            originals: vec!["a".into(), "b".into(), "c".into()],
        };
        let mut state = DeleteState::default();
        delete
            .accept(
                &mut state,
                reply(opcode::DELETEQ, status::KEY_NOT_FOUND, 1, b"", b""),
            )
            .unwrap();
        assert_eq!(delete.finish(state, SITE).unwrap(), 2);
    }

    #[test]
    fn stats_sum_items_and_bytes_until_the_empty_key() {
        let mut state = <Stats as Command>::State::default();
        for (k, v) in [
            (&b"pid"[..], &b"1"[..]),
            (b"curr_items", b"3"),
            (b"bytes", b"120"),
        ] {
            assert_eq!(
                Stats.accept(&mut state, reply(opcode::STAT, 0, 0, k, v)).unwrap(),
                Step::More
            );
        }
        assert_eq!(
            Stats
                .accept(&mut state, reply(opcode::STAT, 0, 0, b"", b""))
                .unwrap(),
            Step::Done
        );
        assert_eq!(
            Stats.finish(state, SITE).unwrap(),
            StorageSize { items: 3, bytes: 120 }
        );
    }

    #[test]
    fn stats_that_overflow_saturate_instead_of_panicking() {
        let mut state = <Stats as Command>::State::default();
        let max = u64::MAX.to_string();
        for _ in 0..2 {
            Stats
                .accept(&mut state, reply(opcode::STAT, 0, 0, b"bytes", max.as_bytes()))
                .unwrap();
        }
        Stats
            .accept(&mut state, reply(opcode::STAT, 0, 0, b"", b""))
            .unwrap();
        assert_eq!(Stats.finish(state, SITE).unwrap().bytes, u64::MAX);
        let sizes = vec![
            StorageSize {
                items: u64::MAX,
                bytes: 1,
            },
            StorageSize { items: 1, bytes: 2 },
        ];
        assert_eq!(
            super::super::store::sum_sizes(sizes),
            StorageSize {
                items: u64::MAX,
                bytes: 3
            }
        );
    }
}
