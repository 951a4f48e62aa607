//! Typed reads through the memory tier ([`HotTier`](crate::local::hot::HotTier)): a hit hands
//! out the decoded value; a miss reads as any read does (L1, then L2) and keeps the decoded
//! value in the tier, with the expiry of the L1 entry it came from, under the backfill guard.
//! A read that finds no value anywhere is noted by the tier, so that the write that usually
//! follows (a loader's, or the caller's own) leaves its value there, as a cache filled on
//! misses would have it after the miss.
//!
//! A hit here is not seen by the level below; its eviction asks the tier which keys it holds
//! instead (`LocalStorage::watch_tier_above`), so the hit path stays a lookup and a clone.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::de::DeserializeOwned;

use super::guard::Ticket;
use super::policy::Shared;
use crate::clock;
use crate::codec::Codec;
use crate::error::{key_for_error, Error, Result};
use crate::local::hot::{Decoder, HotTier};
use crate::storage::Freshness;

/// What a typed read found.
#[derive(Debug)]
pub(crate) enum Lookup<V> {
    Hit(V),
    /// The cached answer "absent" ([`ABSENT`](crate::codec::ABSENT)), stored by
    /// `get_or_load_optional`.
    Absent,
    Miss,
}

impl<V> Lookup<V> {
    /// The value; `None` for a miss and for a cached "absent" alike.
    pub(crate) fn into_option(self) -> Option<V> {
        match self {
            Lookup::Hit(v) => Some(v),
            Lookup::Absent | Lookup::Miss => None,
        }
    }
}

/// What a typed read takes before it reads behind the memory tier; see
/// [`Shared::decode_and_keep`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HotMiss {
    ticket: Ticket,
    mark: u64,
    /// Whether an L2 hit of the read is copied into L1 after the read returns (a batch read's
    /// hits, by the backfill thread): then the tier is told to keep the value that copy writes
    /// (see [`Shared::decode_and_keep`]).
    filled_later: bool,
}

/// How the memory tier's cache of `V` decodes what a write of one of its keys wrote: as the
/// reads that keep values there do (`wrap` of the decoded `T`); a cached "absent" is no value.
///
/// The write runs the `Deserialize` of every type that holds the key, which need not be the
/// writer's (a `set_raw`, a `set` of another type): a panic there is caught and taken as bytes
/// that do not decode, so the tier drops the key and the level below keeps the written bytes.
/// Unwound, it failed a write whose bytes were already stored.
fn decoder<T, V>(codec: Codec, wrap: fn(T) -> V) -> impl FnOnce() -> Decoder<V>
where
    T: DeserializeOwned + 'static,
    V: 'static,
{
    move || -> Decoder<V> {
        Box::new(move |key: &str, bytes: &[u8]| {
            if bytes == crate::codec::ABSENT {
                return None;
            }
            let decoded =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec.decode::<T>(key, bytes)));
            match decoded {
                Ok(decoded) => decoded.ok().map(wrap),
                Err(_) => {
                    tracing::error!(key = %key_for_error(key), type_name = std::any::type_name::<T>(),
                        "decoding a written value for the memory tier panicked; the tier drops the key");
                    None
                }
            }
        })
    }
}

impl Shared {
    /// Decodes bytes a counted read of `key` found as a `T`, counting those that do not decode
    /// (`overall.decode_errors`): the level's hit is counted already, and without this count a
    /// change of codec would look like a perfect hit rate while every read failed. A loading
    /// call's second read, a load's bytes and a stale copy are decoded uncounted, as they are
    /// not counted as reads either.
    pub(crate) fn decode_cached<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T> {
        let decoded = self.codec.decode::<T>(key, bytes);
        if decoded.is_err() {
            self.metrics.decode_errors.incr();
        }
        decoded
    }

    /// The memory tier, unless L1 is distrusted (the backplane's subscription is down: every L1
    /// answer is checked against L2, the memory tier's too).
    #[inline]
    fn hot_if_trusted(&self) -> Option<&HotTier> {
        if self.distrust_l1.is_on() {
            return None;
        }
        self.hot.as_deref()
    }

    /// The memory tier's answer (`V` is the type asked for, or `Arc` of it), counted: a hit
    /// there is an L1 hit too.
    /// `timed`: the sampled start of the caller's read, if this one is timed.
    #[inline]
    pub(crate) fn read_hot<V: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        timed: Option<Instant>,
    ) -> Option<V> {
        let found = self.hot_hit::<V>(key, timed);
        if found.is_none() {
            self.count_hot_miss(timed);
        }
        found
    }

    /// [`read_hot`](Self::read_hot) counting only a hit: a single read's miss is counted by
    /// [`count_hot_miss`](Self::count_hot_miss) once its key has passed the check a hit does
    /// without. A hit needs no check: only a key that passed it can be in the tier (only
    /// reads, batch reads and loads fill it, each after checking its key), and the check cost
    /// a hit about 20 of its 930 instructions.
    #[inline]
    pub(crate) fn hot_hit<V: Clone + Send + Sync + 'static>(
        &self,
        key: &str,
        timed: Option<Instant>,
    ) -> Option<V> {
        let found = self.hot_if_trusted()?.get::<V>(key);
        // Counted once; the local level's hits include the memory tier's when read. The value
        // is left where it is (not matched out and back in), which spares a hit a copy of it.
        if found.is_some() {
            self.metrics.memory.get_latency.record_since(timed);
            self.metrics.memory.hits.incr();
        }
        found
    }

    /// Counts a miss of the memory tier, if it was asked (on, and L1 trusted).
    pub(crate) fn count_hot_miss(&self, timed: Option<Instant>) {
        if self.hot_if_trusted().is_some() {
            self.metrics.memory.get_latency.record_since(timed);
            self.metrics.memory.misses.incr();
        }
    }

    /// The memory tier's value of `key`, not counted: a loading call's look again (see
    /// `CacheManager::relook`).
    pub(crate) fn hot_uncounted<V: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<V> {
        self.hot_if_trusted()?.get::<V>(key)
    }

    /// Taken by a typed read the memory tier missed, before it reads L1: the backfill ticket of
    /// the key and the tier's clear mark (`None` without a memory tier).
    pub(crate) fn hot_miss(&self, key: &str) -> Option<HotMiss> {
        let hot = self.hot.as_ref()?;
        Some(HotMiss {
            ticket: self.guard.ticket(key),
            mark: hot.clear_mark(),
            filled_later: false,
        })
    }

    /// Decodes what a read behind the memory tier answered (`wrap` makes the kept form: the
    /// value itself or an `Arc` of it; later writes of the key decode the same way) and keeps
    /// it in the tier, if L1 holds those very bytes,
    /// as a trusted entry, and neither a write of the key nor a clear of the tier began since
    /// `miss` was taken. Where L1 holds no value yet and the L2 hit is copied in later (a batch
    /// read's, by the backfill thread), the key is noted as a miss instead, so that the copy,
    /// which changes L1 as a write does, leaves the value it wrote in the tier
    /// ([`HotTier::end_change`]): an L2 hit reaches both tiers, as a single read's does.
    pub(crate) fn decode_and_keep<T, V>(
        &self,
        key: &str,
        miss: Option<HotMiss>,
        raw: Option<Vec<u8>>,
        wrap: fn(T) -> V,
    ) -> Result<Lookup<V>>
    where
        T: DeserializeOwned + 'static,
        V: Clone + Send + Sync + 'static,
    {
        let Some(bytes) = raw else {
            if let (Some(hot), Some(_)) = (self.hot_if_trusted(), miss) {
                hot.note_miss(key, decoder::<T, V>(self.codec, wrap));
            }
            return Ok(Lookup::Miss);
        };
        if bytes == crate::codec::ABSENT {
            return Ok(Lookup::Absent);
        }
        let value = wrap(self.decode_cached::<T>(key, &bytes)?);
        if let (Some(hot), Some(miss)) = (self.hot_if_trusted(), miss) {
            self.guard.backfill_if_current(miss.ticket, || {
                // The expiry of the L1 entry, and only if L1 holds what was decoded, as a trusted
                // entry: an L2 value that was not backfilled, one replaced meanwhile, or a
                // restored entry served unverified (L2 unreachable) is not kept.
                let current = if self.check_freshness.load(Ordering::Acquire) {
                    self.l1
                        .get_checked(key)
                        .ok()
                        .flatten()
                        .and_then(|(entry, freshness)| (freshness == Freshness::Trusted).then_some(entry))
                } else {
                    self.l1.get(key).ok().flatten()
                };
                let Some(entry) = current else {
                    if miss.filled_later {
                        hot.note_miss(key, decoder::<T, V>(self.codec, wrap));
                    }
                    return;
                };
                if entry.value == bytes {
                    let expires_at_ms = entry.expires_at.map_or(0, clock::system_time_to_ms);
                    let decoder = decoder::<T, V>(self.codec, wrap);
                    let size = bytes.len();
                    if hot.insert_unless_cleared(key, value.clone(), expires_at_ms, size, miss.mark, decoder)
                    {
                        self.metrics.memory.sets.incr();
                    }
                }
            });
        }
        Ok(Lookup::Hit(value))
    }

    /// The memory tier's part of a batch read: the values it had, and the keys it did not, each
    /// with its [`HotMiss`] taken before the read behind the tier.
    pub(crate) fn read_hot_batch<'k, V: Clone + Send + Sync + 'static>(
        &self,
        keys: &[&'k str],
    ) -> (HashMap<String, V>, Vec<&'k str>, Vec<Option<HotMiss>>) {
        let mut found = HashMap::with_capacity(keys.len());
        let mut missed = Vec::new();
        let mut misses = Vec::new();
        for &key in keys {
            match self.read_hot::<V>(key, None) {
                Some(value) => {
                    found.insert(key.to_owned(), value);
                }
                None => {
                    missed.push(key);
                    misses.push(self.hot_miss(key).map(|miss| HotMiss {
                        filled_later: self.fills.is_some(),
                        ..miss
                    }));
                }
            }
        }
        (found, missed, misses)
    }

    /// Decodes what the read behind the memory tier found for `missed` into `found`, keeping
    /// each value in the tier as a single read does. A cached "absent" is left out.
    pub(crate) fn decode_batch_and_keep<T>(
        &self,
        found: &mut HashMap<String, T>,
        missed: &[&str],
        misses: Vec<Option<HotMiss>>,
        mut raw: HashMap<String, Vec<u8>>,
    ) -> Result<()>
    where
        T: DeserializeOwned + Clone + Send + Sync + 'static,
    {
        for (&key, miss) in missed.iter().zip(misses) {
            if let Lookup::Hit(value) = self.decode_and_keep::<T, T>(key, miss, raw.remove(key), |v| v)? {
                found.insert(key.to_owned(), value);
            }
        }
        Ok(())
    }
}

/// Whether a loading call's read of `key` failed only because the bytes there do not decode as
/// the type asked for (another codec wrote them: the configured codec changed between runs; or
/// another type, or damage): then the call loads, and the loaded value replaces them. A cache
/// that keeps its values across restarts would otherwise fail every loading call of every key
/// it holds until their TTL, after a change of codec. Logged, since two code paths storing
/// different types under one key would now take turns replacing each other's value. A value
/// bincode cannot read for its type ([`Error::TypeNotDecodable`]: the bytes led it to a field
/// that needs a self-describing format) is loaded anew too, since whether a read reaches such a
/// field depends on the bytes (an older version of the type); a loaded value that would not read
/// back is not stored, and its error reaches the caller (see `Loading::encode_loaded`).
/// After a change of codec every key held is read so once: a line a second at most.
pub(super) fn reloads_unreadable(shared: &Shared, key: &str, error: &Error) -> bool {
    let unreadable = matches!(
        error,
        Error::CodecMismatch { .. } | Error::Decode { .. } | Error::TypeNotDecodable { .. }
    );
    if let Some(unlogged) = unreadable
        .then(|| shared.metrics.loader.unreadable_lines.pass())
        .flatten()
    {
        tracing::warn!(key = %key_for_error(key), error = %error, unlogged, "a cached value does not decode as the type loaded; loading it anew (unlogged: keys since the last line)");
    }
    unreadable
}
