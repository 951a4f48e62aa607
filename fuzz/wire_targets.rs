// The targets for bytes an L2 server hands back, which uno-cache did not necessarily write: a
// value's envelope, a backplane message, Memcached's binary replies, Redis's RESP replies.
// `include!`d by `fuzz/fuzz_targets/{wire_decode,memcached_replies,redis_replies}.rs` and by
// `tests/fuzz_seeds.rs`, which runs them over the seeds in `fuzz/seeds/<target>/` on stable.
//
// No target may panic on any input. What can be checked against the bytes is: a decoded value
// or message encodes back to exactly the bytes it came from, a reply's results stay within what
// was sent and what the bytes hold, and an error's message stays short whatever the server sent.

use uno_cache::distributed::envelope;
use uno_cache::invalidation::InvalidationMessage;
use uno_cache::Error;

/// The longest error message a reply may produce: a server's text in it is cut (see
/// `Packet::value_text`), so a huge body cannot make a huge message.
pub const MAX_ERROR_TEXT: usize = 4096;

// ---- target: wire_decode ----------------------------------------------------------------------

/// Input of `wire_decode`: byte 0 picks the decoder (even: the L2 value envelope, odd: a
/// backplane message), the rest is the bytes a server returned.
pub fn wire_decode_target(data: &[u8]) {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    if which % 2 == 0 {
        if let Ok(decoded) = envelope::decode(bytes) {
            assert_eq!(decoded.value, &bytes[envelope::HEADER_LEN..]);
            assert_ne!(decoded.expires_at_ms, Some(0), "0 means never, never an expiry");
            assert_eq!(
                envelope::encode(decoded.value, decoded.expires_at_ms),
                bytes,
                "an accepted envelope is the only encoding of its value and expiry"
            );
        }
    } else {
        match InvalidationMessage::decode(bytes) {
            Ok(message) => {
                assert_eq!(message.encoded_len(), bytes.len());
                assert_eq!(
                    message.encode(),
                    bytes,
                    "an accepted message encodes back to its bytes"
                );
            }
            Err(Error::InvalidMessage { .. }) => {}
            Err(other) => panic!("a message refused with another error: {other:?}"),
        }
    }
}

// ---- target: memcached_replies ----------------------------------------------------------------

/// Input of `memcached_replies`: byte 0 picks the command (its low 7 bits, modulo the count of
/// `COMMANDS`; bit 7 set: the host reported an item limit of 1 MiB at connect), the rest is what
/// the server sent in reply, read packet by packet as a connection reads it.
#[cfg(feature = "memcached")]
pub fn memcached_replies_target(data: &[u8]) {
    use uno_cache::__fuzz::memcached::{read_replies, Outcome, KEYS};

    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let limit = (which & 0x80 != 0).then_some(1 << 20);
    let short = |e: &Error| {
        let text = e.to_string();
        assert!(text.len() <= MAX_ERROR_TEXT, "an error of {} bytes", text.len());
    };
    match read_replies(which & 0x7f, limit, bytes) {
        Outcome::Unread(why) => assert!(!why.is_empty() && why.len() <= MAX_ERROR_TEXT),
        Outcome::Get(Ok(found)) => {
            assert_eq!(found.len(), KEYS.len(), "one slot per key");
            for value in found.iter().flatten() {
                assert!(value.len() <= bytes.len());
                // What a store does with it next: an envelope, or the key's typed error.
                let _ = envelope::decode(value);
            }
        }
        Outcome::Set(Ok(refused)) => {
            let mut sorted = refused.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), refused.len(), "an item refused twice: {refused:?}");
            assert!(refused.iter().all(|&i| i < KEYS.len()), "{refused:?}");
        }
        Outcome::Delete(Ok(existed)) => assert!(existed <= KEYS.len() as u64),
        Outcome::Get(Err(e)) | Outcome::Set(Err(e)) | Outcome::Delete(Err(e)) => short(&e),
        Outcome::Admin(Err(e)) | Outcome::Settings(Err(e)) | Outcome::Stats(Err(e)) => short(&e),
        Outcome::Admin(Ok(text)) => assert!(text.len() <= MAX_ERROR_TEXT),
        Outcome::Settings(Ok(_)) | Outcome::Stats(Ok(_)) => {}
    }
}

// ---- target: redis_replies --------------------------------------------------------------------

/// The clock `redis_replies` reads envelopes at.
pub const REDIS_NOW_MS: u64 = 1_700_000_000_000;

/// Input of `redis_replies`: byte 0 picks the reply (its low 7 bits, modulo the count of
/// `REPLIES`; for `CLUSTER SLOTS`, bit 7 set: a seed answered by its own address), the rest is
/// the RESP bytes the server sent.
#[cfg(feature = "redis")]
pub fn redis_replies_target(data: &[u8]) {
    use uno_cache::__fuzz::redis::{read_reply, Outcome, KEYS};
    use uno_cache::Entry;

    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let live = |entry: &Entry| {
        assert!(entry.value.len() <= bytes.len());
        if let Some(at) = entry.expires_at {
            let at = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
            assert!(at > u128::from(REDIS_NOW_MS), "an expired entry returned");
        }
    };
    match read_reply(which, REDIS_NOW_MS, bytes) {
        Outcome::Get(Ok(Some(entry))) => live(&entry),
        Outcome::GetMany(Ok(slots)) => {
            assert_eq!(slots.len(), KEYS.len(), "one slot per key");
            for entry in slots.iter().flatten().flatten() {
                live(entry);
            }
        }
        Outcome::DeleteMany(Ok(existed)) => assert!(existed <= KEYS.len() as u64),
        Outcome::Slots(Ok((ranges, _))) => assert!(ranges <= 16_384),
        _ => {}
    }
}
