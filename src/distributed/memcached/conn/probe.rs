//! The probe of a connection given up on while a `set` was unanswered on it: whether the
//! request ran, for the store's writes in doubt (`super::super::doubt`).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Fault, Handed, Unanswered};
use crate::distributed::memcached::protocol::{self, opcode};

/// The `opaque` of the `noop` that probes a connection given up on (see [`answered`]): apart from
/// key indices (below `MAX_BATCH`) and the batches' closing `noop` (`u32::MAX`).
const PROBE_OPAQUE: u32 = u32::MAX - 0x100;

/// How a probe of a connection given up on ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::distributed::memcached) enum Probed {
    /// The `noop` sent after the request was answered: the request ran before it.
    Answered,
    /// The connection failed (closed, reset): whatever had not run will not.
    Failed,
    /// Its replies could not be read (damaged, or not memcached's): nothing can be told from
    /// it. (A reply the call's deadline cut is read on from where it stopped:
    /// [`Partial`](super::Partial).)
    Unreadable,
}

/// Sends the rest of the request and a `noop` on `unanswered`'s connection and reads its replies
/// until the `noop`'s. Runs on the I/O thread's runtime (a blocking connection is moved to it)
/// with no deadline: it ends with the answer, the connection's failure, or the runtime (the
/// store's drop).
pub(in crate::distributed::memcached) async fn answered(unanswered: Unanswered) -> Probed {
    let Unanswered { conn: handed, rest } = unanswered;
    // The packet the call was reading when it gave up, its bytes read so far, and the bytes it
    // had read past them: the replies go on from there, in step.
    let (mut partial, leftover, stream) = match handed {
        Handed::Blocking(conn) => {
            let leftover = conn.buf.get(conn.start..conn.end).unwrap_or_default().to_vec();
            let stream = conn
                .stream
                .set_nonblocking(true)
                .and_then(|()| tokio::net::TcpStream::from_std(conn.stream));
            match stream {
                Ok(stream) => (conn.partial, leftover, stream),
                Err(_) => return Probed::Unreadable,
            }
        }
        Handed::Async(conn) => (
            conn.partial,
            conn.stream.buffer().to_vec(),
            conn.stream.into_inner(),
        ),
    };
    let (read, mut write) = stream.into_split();
    let mut read = tokio::io::BufReader::new(AsyncReadExt::chain(std::io::Cursor::new(leftover), read));
    let mut noop = rest;
    if protocol::request(&mut noop, opcode::NOOP, PROBE_OPAQUE, &[], &[], &[]).is_err() {
        return Probed::Unreadable;
    }
    if write.write_all(&noop).await.is_err() {
        return Probed::Failed;
    }
    loop {
        match partial.read_from(&mut read).await {
            Ok(packet) if packet.header.opcode == opcode::NOOP && packet.header.opaque == PROBE_OPAQUE => {
                return Probed::Answered
            }
            Ok(_) => {}
            Err(Fault::Io(_)) => return Probed::Failed,
            Err(_) => return Probed::Unreadable,
        }
    }
}
