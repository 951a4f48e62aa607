//! memcached's binary protocol framing: every request and response is a 24-byte header and a
//! body of extras, key and value. The framing knows nothing of commands; see
//! [`commands`](super::commands) for what is sent and how a reply is read.
//!
//! ```text
//! 0      1       2     4       5         6            8          12       16     24
//! magic  opcode  keylen extras  datatype  vbucket/     body len   opaque   cas
//!                        len               status
//! ```
//! All integers big-endian. `opaque` comes back unchanged in the response; the commands use it
//! as the index of the key a reply belongs to.

/// Length of every header.
pub(super) const HEADER_LEN: usize = 24;
const REQUEST_MAGIC: u8 = 0x80;
const RESPONSE_MAGIC: u8 = 0x81;
/// The largest body we read: a larger length means a damaged stream, not a value (item limits
/// are capped at 1 GiB, see the options).
const MAX_BODY: usize = (1 << 30) + 4096;

/// The opcodes we use.
pub(super) mod opcode {
    /// Get, with a reply on a miss too (the correction of a write in doubt: value and CAS).
    pub(in super::super) const GET: u8 = 0x00;
    /// Delete, with a reply; with a CAS, only if the item is unchanged since it was read.
    pub(in super::super) const DELETE: u8 = 0x04;
    pub(in super::super) const FLUSH: u8 = 0x08;
    pub(in super::super) const NOOP: u8 = 0x0a;
    pub(in super::super) const VERSION: u8 = 0x0b;
    /// Get, quiet (no reply on a miss), key in the reply.
    pub(in super::super) const GETKQ: u8 = 0x0d;
    pub(in super::super) const STAT: u8 = 0x10;
    /// Set, quiet (a reply only on failure).
    pub(in super::super) const SETQ: u8 = 0x11;
    /// Delete, quiet (a reply only on failure, "not found" included).
    pub(in super::super) const DELETEQ: u8 = 0x14;
}

/// The response statuses we tell apart.
pub(super) mod status {
    pub(in super::super) const OK: u16 = 0x0000;
    pub(in super::super) const KEY_NOT_FOUND: u16 = 0x0001;
    /// A CAS that no longer matches: the item changed since it was read.
    pub(in super::super) const KEY_EXISTS: u16 = 0x0002;
    pub(in super::super) const TOO_LARGE: u16 = 0x0003;
    /// A `set` memcached could not find room for (no room and `-M`, or none to evict).
    pub(in super::super) const OUT_OF_MEMORY: u16 = 0x0082;
    /// Authentication failed.
    pub(in super::super) const AUTH_ERROR: u16 = 0x0008;
    /// The command needs an authenticated connection (memcached run with SASL, `-S`).
    pub(in super::super) const AUTH_REQUIRED: u16 = 0x0020;
}

/// What memcached's status codes mean, for messages.
pub(super) fn status_text(status: u16) -> &'static str {
    match status {
        0x0001 => "key not found",
        0x0002 => "key exists",
        0x0003 => "value too large",
        0x0004 => "invalid arguments",
        0x0005 => "item not stored",
        0x0006 => "non-numeric value",
        0x0007 => "vbucket belongs to another server",
        0x0008 => "authentication error",
        0x0009 => "authentication continue",
        0x0020 => "authentication required",
        0x0081 => "unknown command",
        0x0082 => "out of memory",
        0x0083 => "not supported",
        0x0084 => "internal error",
        0x0085 => "busy",
        0x0086 => "temporary failure",
        _ => "unknown status",
    }
}

/// Appends one request.
///
/// # Errors
/// A message if a part is too long for the header's length fields (the store checks lengths
/// before it gets here, so this means a bug, not bad input).
pub(super) fn request(
    out: &mut Vec<u8>,
    opcode: u8,
    opaque: u32,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> std::result::Result<(), String> {
    request_cas(out, opcode, opaque, 0, extras, key, value)
}

/// [`request`] with a CAS (0: none), for a delete that must not remove a newer value.
///
/// # Errors
/// As [`request`].
pub(super) fn request_cas(
    out: &mut Vec<u8>,
    opcode: u8,
    opaque: u32,
    cas: u64,
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> std::result::Result<(), String> {
    let key_len = u16::try_from(key.len()).map_err(|_| format!("key of {} bytes", key.len()))?;
    let extras_len = u8::try_from(extras.len()).map_err(|_| format!("extras of {} bytes", extras.len()))?;
    let body = extras.len() + key.len() + value.len();
    let body_len = u32::try_from(body).map_err(|_| format!("request body of {body} bytes"))?;
    out.reserve(HEADER_LEN + body);
    out.push(REQUEST_MAGIC);
    out.push(opcode);
    out.extend_from_slice(&key_len.to_be_bytes());
    out.push(extras_len);
    out.push(0); // data type: raw bytes
    out.extend_from_slice(&0u16.to_be_bytes()); // vbucket
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&opaque.to_be_bytes());
    out.extend_from_slice(&cas.to_be_bytes());
    out.extend_from_slice(extras);
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    Ok(())
}

/// A response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) opcode: u8,
    key_len: usize,
    extras_len: usize,
    pub(super) status: u16,
    /// Bytes of body that follow the header.
    pub(super) body_len: usize,
    pub(super) opaque: u32,
    /// The item's CAS, on a `get`'s reply.
    pub(super) cas: u64,
}

/// Reads a response header; a message if the bytes cannot be one (the stream is out of step).
pub(super) fn parse_header(bytes: &[u8; HEADER_LEN]) -> std::result::Result<Header, String> {
    let [magic, opcode, k0, k1, extras_len, _datatype, s0, s1, b0, b1, b2, b3, o0, o1, o2, o3, c0, c1, c2, c3, c4, c5, c6, c7] =
        *bytes;
    if magic != RESPONSE_MAGIC {
        return Err(not_a_header(bytes));
    }
    let key_len = usize::from(u16::from_be_bytes([k0, k1]));
    let extras_len = usize::from(extras_len);
    let body_len = usize::try_from(u32::from_be_bytes([b0, b1, b2, b3])).unwrap_or(usize::MAX);
    if key_len + extras_len > body_len || body_len > MAX_BODY {
        return Err(format!(
            "reply header claims a body of {body_len} bytes with {key_len} of key and {extras_len} of extras"
        ));
    }
    Ok(Header {
        opcode,
        key_len,
        extras_len,
        status: u16::from_be_bytes([s0, s1]),
        body_len,
        opaque: u32::from_be_bytes([o0, o1, o2, o3]),
        cas: u64::from_be_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
    })
}

/// The line memcached writes on a new connection it will not serve, before closing it, when it
/// is at its connection limit (`-c`); the 24 bytes read as a header are its start.
const TOO_MANY_CONNECTIONS: &[u8] = b"ERROR Too many open connections";

/// The line memcached run with an auth file (`-Y`) answers every request of a connection that
/// has not authenticated with, binary ones included.
pub(super) const UNAUTHENTICATED: &str = "CLIENT_ERROR unauthenticated";

/// Whether `bytes`, read where a header belongs, are the start of [`UNAUTHENTICATED`].
pub(super) fn is_unauthenticated(bytes: &[u8; HEADER_LEN]) -> bool {
    UNAUTHENTICATED.as_bytes().starts_with(bytes)
}

/// Why `bytes` are not a response header, saying what they are when that helps: a memcached at
/// its connection limit answers a new connection with a line of text, which read as a header
/// was "byte 0x45", and said neither that the host is full nor what to do.
fn not_a_header(bytes: &[u8; HEADER_LEN]) -> String {
    if TOO_MANY_CONNECTIONS.starts_with(bytes) {
        return "memcached refused the connection (\"ERROR Too many open connections\"): it is at \
                its connection limit; start it with a larger -c, or have its clients keep fewer \
                connections (each store keeps `workers` for async calls and one per thread that \
                makes blocking calls, up to 64 idle)"
            .to_owned();
    }
    let line = bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    if !line.is_empty() && line.iter().all(|&b| b == b' ' || b.is_ascii_graphic()) {
        return format!(
            "reply is text ({:?}), not a binary response header: the server is not memcached, or \
             it speaks only memcached's text protocol",
            String::from_utf8_lossy(line)
        );
    }
    let [magic, ..] = *bytes;
    format!("reply starts with byte {magic:#04x}, not a response header")
}

/// A response: its header and body.
#[derive(Debug)]
pub(super) struct Packet {
    pub(super) header: Header,
    pub(super) body: Vec<u8>,
}

impl Packet {
    /// The key part of the body.
    pub(super) fn key(&self) -> &[u8] {
        let start = self.header.extras_len;
        self.body
            .get(start..start + self.header.key_len)
            .unwrap_or_default()
    }

    /// The value part of the body (taken, the packet keeps the rest).
    pub(super) fn into_value(mut self) -> Vec<u8> {
        let start = (self.header.extras_len + self.header.key_len).min(self.body.len());
        self.body.drain(..start);
        self.body
    }

    /// The value as text, for versions, stats and error messages: a long one cut (see
    /// [`server_text`](crate::distributed::server_text)); a body of up to [`MAX_BODY`] from a
    /// server out of step must not be copied into an error message, or once per refused item
    /// into a batch's state.
    pub(super) fn value_text(&self) -> String {
        let start = self.header.extras_len + self.header.key_len;
        crate::distributed::server_text(self.body.get(start..).unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_has_the_documented_layout() {
        let mut out = Vec::new();
        request(
            &mut out,
            opcode::SETQ,
            7,
            &[1, 2, 3, 4, 0, 0, 0, 9],
            b"key",
            b"value",
        )
        .unwrap();
        assert_eq!(out.len(), HEADER_LEN + 8 + 3 + 5);
        assert_eq!(&out[..8], &[0x80, 0x11, 0, 3, 8, 0, 0, 0]);
        assert_eq!(&out[8..12], &16u32.to_be_bytes());
        assert_eq!(&out[12..16], &7u32.to_be_bytes());
        assert_eq!(&out[24..32], &[1, 2, 3, 4, 0, 0, 0, 9]);
        assert_eq!(&out[32..], b"keyvalue");
    }

    /// The correction of a write in doubt (`doubt.rs`) deletes with the CAS a `get` read: the
    /// CAS is bytes 16..24 of both headers, as storage-format.md says.
    #[test]
    fn a_delete_carries_the_cas_a_get_reply_gave() {
        let mut reply = [0u8; HEADER_LEN];
        reply[0] = 0x81;
        reply[16..24].copy_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        let cas = parse_header(&reply).unwrap().cas;
        let mut out = Vec::new();
        request_cas(&mut out, opcode::DELETE, 0, cas, &[], b"k", &[]).unwrap();
        assert_eq!(&out[..2], &[0x80, 0x04]);
        assert_eq!(&out[16..24], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut plain = Vec::new();
        request(&mut plain, opcode::GET, 0, &[], b"k", &[]).unwrap();
        assert_eq!(&plain[..2], &[0x80, 0x00]);
        assert_eq!(&plain[16..24], &[0; 8], "no CAS unless given");
    }

    #[test]
    fn a_response_header_parses_and_damaged_ones_are_refused() {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = 0x81;
        bytes[1] = opcode::GETKQ;
        bytes[3] = 2; // key length
        bytes[4] = 4; // extras length
        bytes[11] = 9; // body: 4 extras + 2 key + 3 value
        bytes[15] = 5; // opaque
        let header = parse_header(&bytes).unwrap();
        assert_eq!(
            (header.opcode, header.body_len, header.opaque),
            (opcode::GETKQ, 9, 5)
        );
        let packet = Packet {
            header,
            body: b"\0\0\0\0k1abc".to_vec(),
        };
        assert_eq!(packet.key(), b"k1");
        assert_eq!(packet.into_value(), b"abc");

        let mut wrong_magic = bytes;
        wrong_magic[0] = b'V';
        assert!(parse_header(&wrong_magic).is_err());
        let mut short_body = bytes;
        short_body[11] = 5;
        assert!(parse_header(&short_body).is_err());
        let mut huge = bytes;
        huge[8] = 0xff;
        assert!(parse_header(&huge).is_err());
    }

    /// Text where a header belongs is shown as text, and memcached's line for a connection over
    /// its limit says what to do.
    #[test]
    fn a_text_reply_is_shown_and_the_connection_limit_is_named() {
        let head = |text: &[u8]| -> [u8; HEADER_LEN] { text[..HEADER_LEN].try_into().unwrap() };
        let full = parse_header(&head(b"ERROR Too many open connections\r\n")).unwrap_err();
        assert!(full.contains("connection limit") && full.contains("-c"), "{full}");
        let text = parse_header(&head(b"ERROR\r\nERROR\r\nERROR\r\nERROR\r\n")).unwrap_err();
        assert!(
            text.contains("\"ERROR\"") && text.contains("text protocol"),
            "{text}"
        );
        let mut binary = [0u8; HEADER_LEN];
        binary[0] = 0x7f;
        assert_eq!(
            parse_header(&binary).unwrap_err(),
            "reply starts with byte 0x7f, not a response header"
        );
    }
}
