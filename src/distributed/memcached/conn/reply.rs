//! The reply packet being read on a connection, kept with the connection so that a read cut
//! short loses none of its bytes.
//!
//! Why: a call's deadline (or an async caller that stops waiting) can end a read in the middle
//! of a packet. A connection given up so while it carried a `set` is probed (`super::answered`):
//! its replies are read on until the probe's own `noop` answers. Had the bytes of the cut packet
//! been read into a buffer of the call's, and lost with it, the probe would have read the
//! packet's rest as a header: out of step, at best unreadable (the doubt ending only after the
//! unprobed grace), at worst a header claiming a body that never comes, read until the store is
//! dropped. Kept here, the probe reads on from the byte the call stopped at.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::{read_header, Fault, BODY_STEP};
use crate::distributed::memcached::protocol::{Header, Packet, HEADER_LEN};

/// The bytes of one reply packet read so far.
pub(super) struct Partial {
    head: [u8; HEADER_LEN],
    head_filled: usize,
    /// The header, once `head` is whole and was read as one.
    header: Option<Header>,
    /// The body; grows by at most [`BODY_STEP`] ahead of the bytes read, so that a header
    /// claiming a large body (a server that is not memcached) costs memory only as bytes come.
    body: Vec<u8>,
    body_filled: usize,
}

impl Partial {
    pub(super) fn new() -> Self {
        Partial {
            head: [0; HEADER_LEN],
            head_filled: 0,
            header: None,
            body: Vec::new(),
            body_filled: 0,
        }
    }

    /// Where the packet's next bytes go; `None` once it is whole. A header that cannot be read
    /// as one is the connection's fault (it is dropped).
    pub(super) fn room(&mut self) -> std::result::Result<Option<&mut [u8]>, Fault> {
        if self.head_filled < HEADER_LEN {
            return Ok(self.head.get_mut(self.head_filled..));
        }
        let header = match self.header {
            Some(header) => header,
            None => *self.header.insert(read_header(&self.head)?),
        };
        if self.body_filled >= header.body_len {
            return Ok(None);
        }
        let upto = header.body_len.min(self.body_filled.saturating_add(BODY_STEP));
        if self.body.len() < upto {
            self.body.resize(upto, 0);
        }
        Ok(self.body.get_mut(self.body_filled..upto))
    }

    /// `n` bytes were read into the last [`room`](Self::room).
    pub(super) fn filled(&mut self, n: usize) {
        if self.head_filled < HEADER_LEN {
            self.head_filled += n;
        } else {
            self.body_filled += n;
        }
    }

    /// The packet, if [`room`](Self::room) said it is whole; the next one starts empty.
    pub(super) fn take(&mut self) -> Option<Packet> {
        let header = self.header.filter(|h| self.body_filled >= h.body_len)?;
        let mut body = std::mem::take(&mut self.body);
        body.truncate(self.body_filled);
        *self = Partial::new();
        Some(Packet { header, body })
    }

    /// One packet from `stream`, from where an earlier read stopped. Each read of `stream` is
    /// one `read` call, which takes nothing from it when dropped: a dropped future leaves every
    /// byte it took here.
    pub(super) async fn read_from(
        &mut self,
        stream: &mut (impl AsyncRead + Unpin),
    ) -> std::result::Result<Packet, Fault> {
        loop {
            let Some(room) = self.room()? else {
                return self
                    .take()
                    .ok_or_else(|| Fault::Protocol("no whole packet".to_owned()));
            };
            match stream.read(room).await? {
                0 => return Err(Fault::Io(std::io::ErrorKind::UnexpectedEof.into())),
                n => self.filled(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distributed::memcached::protocol::opcode;

    fn noop_reply(opaque: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x81, opcode::NOOP, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&u32::try_from(body.len()).unwrap_or(0).to_be_bytes());
        bytes.extend_from_slice(&opaque.to_be_bytes());
        bytes.extend_from_slice(&[0; 8]);
        bytes.extend_from_slice(body);
        bytes
    }

    /// Feeds `bytes` to `partial` in pieces of `step`, as reads cut short would.
    fn feed(partial: &mut Partial, mut bytes: &[u8], step: usize) -> Vec<Packet> {
        let mut packets = Vec::new();
        loop {
            match partial.room() {
                Ok(Some(room)) if !bytes.is_empty() => {
                    let n = room.len().min(step).min(bytes.len());
                    let (now, later) = bytes.split_at(n);
                    room.get_mut(..n).unwrap_or_default().copy_from_slice(now);
                    partial.filled(n);
                    bytes = later;
                }
                Ok(Some(_)) => return packets,
                Ok(None) => packets.extend(partial.take()),
                Err(fault) => panic!("{fault:?}"),
            }
        }
    }

    #[test]
    fn packets_read_in_any_pieces_come_out_whole_and_in_step() {
        let mut stream = noop_reply(1, b"");
        stream.extend(noop_reply(2, b"a body"));
        stream.extend(noop_reply(3, b""));
        for step in 1..=stream.len() {
            let mut partial = Partial::new();
            let packets = feed(&mut partial, &stream, step);
            let seen: Vec<_> = packets
                .iter()
                .map(|p| (p.header.opaque, p.body.clone()))
                .collect();
            assert_eq!(
                seen,
                [(1, b"".to_vec()), (2, b"a body".to_vec()), (3, b"".to_vec())],
                "read {step} bytes at a time"
            );
        }
    }

    #[test]
    fn a_packet_cut_short_is_read_on_from_where_it_stopped() {
        let stream = noop_reply(7, b"0123456789");
        for cut in 1..stream.len() {
            let mut partial = Partial::new();
            assert!(feed(&mut partial, stream.get(..cut).unwrap_or_default(), 5).is_empty());
            let packets = feed(&mut partial, stream.get(cut..).unwrap_or_default(), 64);
            assert_eq!(packets.len(), 1, "cut at {cut}");
            assert_eq!(packets.first().map(|p| p.header.opaque), Some(7), "cut at {cut}");
        }
    }

    #[test]
    fn a_header_claiming_a_large_body_takes_memory_only_as_its_bytes_come() {
        let mut head = noop_reply(1, b"");
        head.splice(8..12, (64u32 << 20).to_be_bytes());
        let mut partial = Partial::new();
        assert!(feed(&mut partial, &head, 24).is_empty());
        assert!(matches!(partial.room(), Ok(Some(room)) if room.len() == BODY_STEP));
        assert!(partial.body.capacity() <= 2 * BODY_STEP);
    }
}
