//! The three tables of the database, the layout of an `entries` record, and the bookkeeping of
//! one write transaction.

use redb::{ReadableTable, TableDefinition};

use super::inner::Inner;
use crate::error::Result;

pub(super) const ENTRIES: TableDefinition<&str, &[u8]> = TableDefinition::new(OURS[0]);
pub(super) const ORDER: TableDefinition<u64, &str> = TableDefinition::new(OURS[1]);
pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new(OURS[2]);
pub(super) const META_BYTES: &str = "bytes";
pub(super) const META_NEXT_SEQ: &str = "next_seq";

/// The names of the tables a database of this store holds: all three, or none (a new file).
const OURS: [&str; 3] = ["entries", "order", "meta"];

/// Why `db` is another program's database, if it is: it holds tables, and they are not exactly
/// this store's three, names and types (storage-format.md, "redb L1 file"). Opened as a store,
/// it got this store's tables beside its own, and a table of one of our names but other types
/// failed every call with redb's type mismatch.
pub(super) fn foreign(db: &redb::Database) -> std::result::Result<Option<String>, redb::Error> {
    use redb::{MultimapTableHandle, ReadableDatabase, TableHandle};
    let txn = db.begin_read()?;
    let mut names: Vec<String> = txn.list_tables()?.map(|t| t.name().to_owned()).collect();
    names.extend(
        txn.list_multimap_tables()?
            .map(|t| format!("{} (multimap)", t.name())),
    );
    names.sort();
    let mut ours = OURS.map(str::to_owned);
    ours.sort();
    if names.is_empty() {
        return Ok(None);
    }
    if names != ours {
        return Ok(Some(format!(
            "it holds the tables {names:?}, where an uno-cache store holds exactly {ours:?}: it is another program's database; give the store another path (local.path)"
        )));
    }
    // Our names, but maybe not our types: redb refuses to open such a table as ours.
    let opened = [
        txn.open_table(ENTRIES).map(drop),
        txn.open_table(ORDER).map(drop),
        txn.open_table(META).map(drop),
    ];
    for table in opened {
        match table {
            Ok(()) => {}
            Err(redb::TableError::Storage(e)) => return Err(e.into()),
            Err(other) => {
                return Ok(Some(format!(
                    "its tables bear an uno-cache store's names but not its types ({other}): it is another program's database, or one of another uno-cache layout; give the store another path (local.path), or move the file away to start an empty cache if it only held a cache"
                )))
            }
        }
    }
    Ok(None)
}

/// Bytes of the header in front of each stored value: expiry (u64 LE) then sequence (u64 LE).
pub(super) const HEADER_LEN: usize = 16;

/// A decoded `entries` record.
pub(super) struct Record<'a> {
    pub(super) expires_at_ms: u64,
    pub(super) seq: u64,
    pub(super) value: &'a [u8],
}

impl Record<'_> {
    pub(super) fn decode(bytes: &[u8]) -> Option<Record<'_>> {
        let (expires, rest) = bytes.split_first_chunk::<8>()?;
        let (seq, value) = rest.split_first_chunk::<8>()?;
        Some(Record {
            expires_at_ms: u64::from_le_bytes(*expires),
            seq: u64::from_le_bytes(*seq),
            value,
        })
    }

    pub(super) fn encode(expires_at_ms: u64, seq: u64, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + value.len());
        out.extend_from_slice(&expires_at_ms.to_le_bytes());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    pub(super) fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms <= now_ms
    }
}

pub(super) fn weight(key: &str, value_len: usize) -> u64 {
    (key.len() + HEADER_LEN + value_len) as u64
}

/// The three tables of one write transaction, with the meta counts in hand.
pub(super) struct Tables<'t> {
    pub(super) entries: redb::Table<'t, &'static str, &'static [u8]>,
    pub(super) order: redb::Table<'t, u64, &'static str>,
    meta: redb::Table<'t, &'static str, u64>,
    pub(super) bytes: u64,
    pub(super) next_seq: u64,
    /// Evictions and expirations of this transaction: added to the store's counters only once
    /// it commits, since a transaction that fails undoes them.
    counts: Counts,
}

/// What one write transaction evicted and found expired.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Counts {
    pub(super) evictions: u64,
    pub(super) expirations: u64,
}

impl<'t> Tables<'t> {
    pub(super) fn open(store: &Inner, txn: &'t redb::WriteTransaction) -> Result<Tables<'t>> {
        let entries = txn.open_table(ENTRIES).map_err(|e| store.err("open table", e))?;
        let order = txn.open_table(ORDER).map_err(|e| store.err("open table", e))?;
        let meta = txn.open_table(META).map_err(|e| store.err("open table", e))?;
        let read = |name: &str| -> Result<u64> {
            Ok(meta
                .get(name)
                .map_err(|e| store.err("read meta", e))?
                .map_or(0, |g| g.value()))
        };
        let bytes = read(META_BYTES)?;
        let next_seq = read(META_NEXT_SEQ)?;
        Ok(Tables {
            entries,
            order,
            meta,
            bytes,
            next_seq,
            counts: Counts::default(),
        })
    }

    /// Removes a key; `Some(was_live)` if it was present. Live: neither expired nor an older
    /// version a reopen brought back (see `lost`), which every read hides.
    pub(super) fn remove(&mut self, store: &Inner, key: &str, now: u64) -> Result<Option<bool>> {
        let Some(old) = self.entries.remove(key).map_err(|e| store.err("remove", e))? else {
            return Ok(None);
        };
        let bytes = old.value();
        let live = match Record::decode(bytes) {
            Some(record) => {
                self.order
                    .remove(record.seq)
                    .map_err(|e| store.err("remove", e))?;
                let expired = record.is_expired(now);
                if expired {
                    self.counts.expirations += 1;
                }
                !expired && !store.lost.hides(key, record.seq)
            }
            None => false,
        };
        self.bytes = self
            .bytes
            .saturating_sub(weight(key, bytes.len().saturating_sub(HEADER_LEN)));
        Ok(Some(live))
    }

    /// Drops the oldest entries until the size bound holds.
    pub(super) fn evict(&mut self, store: &Inner, now: u64) -> Result<()> {
        while self.bytes > store.max_bytes {
            let Some((_, key)) = self.order.pop_first().map_err(|e| store.err("evict", e))? else {
                break;
            };
            let key = key.value().to_owned();
            let Some(old) = self
                .entries
                .remove(key.as_str())
                .map_err(|e| store.err("evict", e))?
            else {
                continue;
            };
            let bytes = old.value();
            if Record::decode(bytes).is_some_and(|r| r.is_expired(now)) {
                self.counts.expirations += 1;
            } else {
                self.counts.evictions += 1;
            }
            self.bytes = self
                .bytes
                .saturating_sub(weight(&key, bytes.len().saturating_sub(HEADER_LEN)));
        }
        Ok(())
    }

    /// Writes the meta counts, and hands this transaction's counts to `counts`, which the store
    /// adds to its counters once the transaction commits.
    pub(super) fn save(mut self, store: &Inner, counts: &mut Counts) -> Result<()> {
        self.meta
            .insert(META_BYTES, self.bytes)
            .map_err(|e| store.err("write meta", e))?;
        self.meta
            .insert(META_NEXT_SEQ, self.next_seq)
            .map_err(|e| store.err("write meta", e))?;
        counts.evictions += self.counts.evictions;
        counts.expirations += self.counts.expirations;
        Ok(())
    }
}
