//! Which Cluster primary owns a key, for its per-node circuit breaker: the key's hash slot
//! (CRC16 of the key or its `{hash tag}`, mod 16384, as Redis and the `redis` crate compute it)
//! and the slot map read with `CLUSTER SLOTS` when the level connects.
//!
//! The `redis` crate still routes every command itself (and follows `MOVED` after a failover or
//! a resharding); this map only says which breaker a key's call answers to. A map gone stale
//! after a failover heals through the probe: the old owner's breaker lets one call through
//! after its cool-down, the crate routes it to the new owner, and its success closes the breaker.

use std::sync::Arc;

use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::Value;

use super::errors::backend;
use crate::distributed::{Node, NodeBreakers};
use crate::error::{Error, Result};

/// Hash slots in a Redis Cluster.
const SLOTS: usize = 16_384;
/// No owner known (a slot the map did not cover).
const UNKNOWN: u16 = u16::MAX;

/// CRC16-CCITT (XMODEM) table, the checksum Redis Cluster hashes keys with.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        #[allow(clippy::cast_possible_truncation)]
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        #[allow(clippy::indexing_slicing)] // i < 256, in a constant: checked at compile time
        {
            table[i] = crc;
        }
        i += 1;
    }
    table
};

fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        let i = usize::from(((crc >> 8) as u8) ^ b);
        (crc << 8) ^ CRC16_TABLE.get(i).copied().unwrap_or(0)
    })
}

/// The hash slot of `key`: of its `{tag}` if it has a non-empty one.
pub(crate) fn slot_of(key: &[u8]) -> usize {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = key.get(open + 1..)?;
            let close = rest.iter().position(|&b| b == b'}')?;
            rest.get(..close).filter(|tag| !tag.is_empty())
        })
        .unwrap_or(key);
    usize::from(crc16(hashed)) % SLOTS
}

/// The owner of every slot, and the owners' breakers.
pub(crate) struct SlotMap {
    breakers: Arc<NodeBreakers>,
    /// Slot → index into `nodes` ([`UNKNOWN`] if not covered).
    owner: Vec<u16>,
    nodes: Vec<Arc<Node>>,
}

impl SlotMap {
    /// Reads `CLUSTER SLOTS` over `conn` (any node answers for the whole cluster).
    pub(crate) async fn read(conn: &mut ClusterConnection, breakers: Arc<NodeBreakers>) -> Result<SlotMap> {
        let reply = conn
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
            .map_err(|err| backend("connect", &err))?;
        let mut map = SlotMap {
            breakers,
            owner: vec![UNKNOWN; SLOTS],
            nodes: Vec::new(),
        };
        let Value::Array(ranges) = reply else {
            return Err(bad_reply("not an array"));
        };
        for range in ranges {
            let (start, end, name) = parse_range(range)?;
            let index = map.index_of(&name);
            for slot in start..=end.min(SLOTS - 1) {
                if let Some(owner) = map.owner.get_mut(slot) {
                    *owner = index;
                }
            }
        }
        Ok(map)
    }

    fn index_of(&mut self, name: &str) -> u16 {
        if let Some(i) = self.nodes.iter().position(|n| n.name() == name) {
            return u16::try_from(i).unwrap_or(UNKNOWN);
        }
        self.nodes.push(self.breakers.node(name));
        u16::try_from(self.nodes.len() - 1).unwrap_or(UNKNOWN)
    }

    /// The primary that owns `key` (the full server key, prefix included), if the map knows.
    pub(crate) fn node_of(&self, key: &[u8]) -> Option<&Arc<Node>> {
        let owner = *self.owner.get(slot_of(key))?;
        self.nodes.get(usize::from(owner))
    }
}

fn bad_reply(what: &str) -> Error {
    Error::Backend {
        level: super::errors::LEVEL,
        op: "connect",
        reason: format!("unexpected CLUSTER SLOTS reply ({what})"),
    }
}

/// One `CLUSTER SLOTS` entry: first slot, last slot, the primary as `host:port`.
fn parse_range(range: Value) -> Result<(usize, usize, String)> {
    let Value::Array(fields) = range else {
        return Err(bad_reply("a range is not an array"));
    };
    let mut fields = fields.into_iter();
    let (Some(start), Some(end), Some(Value::Array(primary))) = (fields.next(), fields.next(), fields.next())
    else {
        return Err(bad_reply("a range lacks its slots or primary"));
    };
    let int = |v: Value| redis::from_redis_value::<usize>(v).map_err(|_| bad_reply("a slot is not a number"));
    let mut primary = primary.into_iter();
    let (Some(host), Some(port)) = (primary.next(), primary.next()) else {
        return Err(bad_reply("a primary lacks its address"));
    };
    let host: String = redis::from_redis_value(host).map_err(|_| bad_reply("a host is not text"))?;
    let port: u16 = redis::from_redis_value(port).map_err(|_| bad_reply("a port is not a number"))?;
    Ok((int(start)?, int(end)?, format!("{host}:{port}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::cluster_routing::{Route, SlotAddr};

    #[test]
    fn slots_match_the_redis_crate_and_redis() {
        // CLUSTER KEYSLOT values from Redis.
        assert_eq!(slot_of(b"foo"), 12_182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of(b"foo{}{bar}"));
        assert_eq!(slot_of(b"123456789"), 0x31C3 % SLOTS);
        for key in ["", "a", "outage:{t7}x", "foo{}{bar}", "{a}b", "x{", "é∂"] {
            let slot = u16::try_from(slot_of(key.as_bytes())).unwrap();
            assert_eq!(
                Route::new(slot, SlotAddr::Master),
                Route::with_key(key, SlotAddr::Master),
                "{key:?}"
            );
        }
    }
}
