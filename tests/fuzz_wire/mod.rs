//! Seeds of the wire targets (`fuzz/wire_targets.rs`), built by hand from the documented bytes
//! rather than by the crate: the L2 value envelope and the backplane messages as
//! storage-format.md lays them out, Memcached's replies as its binary protocol frames them,
//! Redis's as RESP frames them.

use std::collections::BTreeMap;

type Seeds = BTreeMap<(&'static str, &'static str), Vec<u8>>;

/// An envelope (storage-format.md, "L2 value envelope"): magic, version, flags, expiry, value.
fn envelope(version: u8, flags: u8, expires_at_ms: u64, value: &[u8]) -> Vec<u8> {
    let mut out = vec![0xF5, 0x75, version, flags];
    out.extend_from_slice(&expires_at_ms.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// A backplane message (storage-format.md, "Invalidation backplane messages") with `count`
/// as given, whatever the strings, and a valid CRC.
fn message(kind: u8, seq: u64, count: u32, strings: &[&[u8]]) -> Vec<u8> {
    let mut out = b"UNOI".to_vec();
    out.push(1);
    out.push(kind);
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10u128.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    for s in strings {
        out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        out.extend_from_slice(s);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Memcached's binary opcodes and statuses the commands use.
mod mc {
    pub const FLUSH: u8 = 0x08;
    pub const NOOP: u8 = 0x0a;
    pub const VERSION: u8 = 0x0b;
    pub const GETKQ: u8 = 0x0d;
    pub const STAT: u8 = 0x10;
    pub const SETQ: u8 = 0x11;
    pub const DELETEQ: u8 = 0x14;
    pub const NOT_FOUND: u16 = 0x0001;
    pub const TOO_LARGE: u16 = 0x0003;
    pub const INTERNAL: u16 = 0x0084;
    pub const OUT_OF_MEMORY: u16 = 0x0082;
    /// The opaque of the `noop` closing a batch, and of `version` (four line ends).
    pub const NOOP_OPAQUE: u32 = u32::MAX;
    pub const VERSION_OPAQUE: u32 = u32::from_be_bytes(*b"\n\n\n\n");
}

/// One binary-protocol response: the 24-byte header (big-endian), extras, key, value.
fn reply(opcode: u8, status: u16, opaque: u32, extras: &[u8], key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = vec![0x81, opcode];
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.push(extras.len() as u8);
    out.push(0);
    out.extend_from_slice(&status.to_be_bytes());
    out.extend_from_slice(&((extras.len() + key.len() + value.len()) as u32).to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

/// Every seed of `wire_decode` and `memcached_replies`, by target and name.
pub fn seeds() -> Seeds {
    let mut out = Seeds::new();
    let mut wire = |name, selector: u8, bytes: Vec<u8>| {
        out.insert(("wire_decode", name), [vec![selector], bytes].concat());
    };
    let expiry = 1_700_000_060_000u64;
    wire("envelope_never.bin", 0, envelope(1, 0, 0, b"value"));
    wire(
        "envelope_expiry.bin",
        0,
        envelope(1, 1, expiry, b"\x01{\"json\":1}"),
    );
    wire("envelope_empty_value.bin", 0, envelope(1, 1, expiry, b""));
    wire("envelope_version_2.bin", 0, envelope(2, 0, 0, b"v"));
    wire("envelope_flag_disagrees.bin", 0, envelope(1, 0, expiry, b"v"));
    wire(
        "envelope_foreign_text.bin",
        0,
        b"text another program wrote".to_vec(),
    );
    wire(
        "message_keys.bin",
        1,
        message(1, 7, 2, &[b"user:42", "ключ".as_bytes()]),
    );
    wire("message_tags.bin", 1, message(2, 8, 1, &[b"tag:a"]));
    wire("message_prefix.bin", 1, message(3, 9, 1, &[b"session:"]));
    wire("message_all.bin", 1, message(4, u64::MAX, 0, &[]));
    wire("message_empty_keys.bin", 1, message(1, 1, 0, &[]));
    wire("message_lying_count.bin", 1, message(1, 2, u32::MAX, &[b"k"]));
    wire(
        "message_foreign.bin",
        1,
        b"{\"invalidate\":[\"user:42\"]}".to_vec(),
    );

    let mut mc = |name, selector: u8, replies: &[Vec<u8>]| {
        out.insert(
            ("memcached_replies", name),
            [vec![selector], replies.concat()].concat(),
        );
    };
    let noop = reply(mc::NOOP, 0, mc::NOOP_OPAQUE, b"", b"", b"");
    let value = envelope(1, 1, expiry, b"cached value");
    let flags = [0u8; 4];
    mc(
        "get_hits.bin",
        0,
        &[
            reply(mc::GETKQ, 0, 0, &flags, b"k0", &value),
            reply(mc::GETKQ, 0, 2, &flags, b"k2", b"not an envelope"),
            noop.clone(),
        ],
    );
    mc(
        "get_refused.bin",
        0,
        &[
            reply(mc::GETKQ, mc::INTERNAL, 1, b"", b"", b"Internal error"),
            noop.clone(),
        ],
    );
    mc(
        "get_out_of_step.bin",
        0,
        &[reply(mc::GETKQ, 0, 9, &flags, b"k9", &value), noop.clone()],
    );
    mc(
        "set_refusals.bin",
        0x81,
        &[
            reply(mc::SETQ, mc::TOO_LARGE, 0, b"", b"", b"Too large."),
            reply(mc::SETQ, mc::OUT_OF_MEMORY, 2, b"", b"", b"Out of memory"),
            reply(mc::SETQ, mc::TOO_LARGE, 0, b"", b"", b"Too large."),
            noop.clone(),
        ],
    );
    mc(
        "delete_missing.bin",
        2,
        &[
            reply(mc::DELETEQ, mc::NOT_FOUND, 1, b"", b"", b"Not found"),
            noop.clone(),
        ],
    );
    mc(
        "version.bin",
        3,
        &[reply(mc::VERSION, 0, mc::VERSION_OPAQUE, b"", b"", b"1.6.21")],
    );
    mc(
        "text_protocol.bin",
        3,
        &[b"ERROR\r\nERROR\r\nERROR\r\nERROR\r\n".to_vec()],
    );
    mc("flush.bin", 4, &[reply(mc::FLUSH, 0, 0, b"", b"", b"")]);
    mc(
        "settings.bin",
        5,
        &[
            reply(mc::STAT, 0, 0, b"", b"maxbytes", b"67108864"),
            reply(mc::STAT, 0, 0, b"", b"item_size_max", b"1048576"),
            reply(mc::STAT, 0, 0, b"", b"", b""),
        ],
    );
    mc(
        "stats.bin",
        6,
        &[
            reply(mc::STAT, 0, 0, b"", b"pid", b"1"),
            reply(mc::STAT, 0, 0, b"", b"curr_items", b"3"),
            reply(mc::STAT, 0, 0, b"", b"bytes", b"18446744073709551615"),
            reply(mc::STAT, 0, 0, b"", b"bytes", b"120"),
            reply(mc::STAT, 0, 0, b"", b"", b""),
        ],
    );

    let mut redis = |name, selector: u8, resp: &[&[u8]]| {
        out.insert(("redis_replies", name), [vec![selector], resp.concat()].concat());
    };
    let bulk = |bytes: &[u8]| [format!("${}\r\n", bytes.len()).as_bytes(), bytes, b"\r\n"].concat();
    let live = bulk(&envelope(1, 1, expiry, b"cached value"));
    let expired = bulk(&envelope(1, 1, 1_600_000_000_000, b"old value"));
    let never = bulk(&envelope(1, 0, 0, b"kept"));
    redis("get_hit.bin", 0, &[&live]);
    redis("get_nil.bin", 0, &[b"$-1\r\n"]);
    redis("get_expired.bin", 0, &[&expired]);
    redis("get_foreign.bin", 0, &[&bulk(b"hello")]);
    redis(
        "get_error.bin",
        0,
        &[b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"],
    );
    redis("mget.bin", 1, &[b"*3\r\n", &live, b"$-1\r\n", &never]);
    redis(
        "mget_mixed.bin",
        1,
        &[b"*3\r\n", &expired, &bulk(b"xyz"), b"$-1\r\n"],
    );
    redis("mget_integer.bin", 1, &[b"*3\r\n", &live, b":7\r\n", &never]);
    redis("mget_too_short.bin", 1, &[b"*2\r\n", &live, &never]);
    redis("unlink_one.bin", 2, &[b":1\r\n"]);
    redis("unlink_many.bin", 3, &[b":2\r\n"]);
    redis("unlink_many_lying.bin", 3, &[b":9223372036854775807\r\n"]);
    let node = |host: &[u8], port: u16| -> Vec<u8> {
        [
            b"*3\r\n",
            &bulk(host)[..],
            format!(":{port}\r\n").as_bytes(),
            &bulk(b"07c37dfeb235213a872192d90877d0cd55635b91")[..],
        ]
        .concat()
    };
    let range = |start: u16, end: u16, primary: &[u8]| -> Vec<u8> {
        [format!("*3\r\n:{start}\r\n:{end}\r\n").as_bytes(), primary].concat()
    };
    redis(
        "cluster_slots.bin",
        4,
        &[
            b"*3\r\n",
            &range(0, 5460, &node(b"10.0.0.1", 7000)),
            &range(5461, 10922, &node(b"10.0.0.2", 7001)),
            &range(10923, 16383, &node(b"?", 7002)),
        ],
    );
    let null_host = [b"*3\r\n$-1\r\n:7000\r\n".as_slice(), &bulk(b"id")].concat();
    redis(
        "cluster_slots_null_host.bin",
        0x84,
        &[b"*1\r\n", &range(0, 16383, &null_host)],
    );
    redis(
        "config_get.bin",
        5,
        &[b"*2\r\n", &bulk(b"proto-max-bulk-len"), &bulk(b"536870912")],
    );
    redis(
        "config_get_resp3.bin",
        5,
        &[b"%1\r\n", &bulk(b"proto-max-bulk-len"), &bulk(b"1048576")],
    );
    out
}
