//! Batch reads (`multi_get`, through the levels' `get_many`): one L1 call for every key, one L2
//! call for the keys L1 did not answer (or held suspect), and the L2 hits backfilled by the
//! backfill thread after the call returns (see `fill`). The rules are those of a single read in
//! `policy`, applied per key.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::distinct;
use super::fill::FillBatch;
use super::guard::Ticket;
use super::policy::{
    partial_over, positions_of, taken_in, time_l2, unreached, with_found, Level, Plan, Shared, Suspect, Timed,
};
use crate::clock;
use crate::error::{Error, PartialBatch, Result, Served};
use crate::stats;
use crate::storage::{DistributedStorage, Entry, Freshness};

/// The keys of a batch read whose own L1 read failed with an error `fallback_on_error` does not
/// hide, and the first such error. A single read of one of them answers that error; the batch
/// answers its other keys and names these as not served (see [`Shared::answer_many`]).
#[derive(Default)]
struct L1Failed<'k> {
    keys: Vec<&'k str>,
    cause: Option<Error>,
}

/// What a batch read does after L1 and the write-behind queue: answered, or L2 to ask for the
/// keys they did not answer. The shells make that one call, blocking or awaited; the rest of
/// the read is here once.
pub(crate) enum ManyPlan<'k, 'a> {
    /// Answered without L2.
    Done(Result<HashMap<String, Vec<u8>>>),
    /// Ask `l2` for [`ManyRead::missed`], then hand its answer to [`Shared::end_read_many`].
    AskL2(&'a Arc<dyn DistributedStorage>, ManyRead<'k>),
}

/// A batch read waiting for L2's answer: what the local passes found and owe.
pub(crate) struct ManyRead<'k> {
    /// The caller's keys, as listed (repeats included: the answer names positions).
    keys: Vec<&'k str>,
    out: HashMap<String, Vec<u8>>,
    suspects: HashMap<&'k str, Suspect>,
    failed: L1Failed<'k>,
    missed: Vec<&'k str>,
    tickets: Vec<Ticket>,
}

impl<'k> ManyRead<'k> {
    /// The keys to ask L2 for, each once.
    pub(crate) fn missed(&self) -> &[&'k str] {
        &self.missed
    }
}

impl Shared {
    /// A batch read up to L2: the keys checked, the memory tier and L1 in one call, then what
    /// the write-behind queue holds; see [`ManyPlan`].
    pub(crate) fn begin_read_many<'k>(&self, keys: Vec<&'k str>) -> Result<ManyPlan<'k, '_>> {
        self.check_read_keys(&keys)?;
        let mut out = HashMap::with_capacity(keys.len());
        let mut suspects = HashMap::new();
        let mut failed = L1Failed::default();
        let missed = self.read_many_l1(&distinct(&keys), &mut out, &mut suspects, &mut failed)?;
        if missed.is_empty() {
            return Ok(ManyPlan::Done(self.answer_many(&keys, out, failed, None)));
        }
        let Some(l2) = &self.l2 else {
            self.miss(missed.len());
            return Ok(ManyPlan::Done(self.answer_many(&keys, out, failed, None)));
        };
        let (missed, tickets) = self.read_many_behind(missed, &mut out, &mut suspects);
        if missed.is_empty() {
            return Ok(ManyPlan::Done(self.answer_many(&keys, out, failed, None)));
        }
        Ok(ManyPlan::AskL2(
            l2,
            ManyRead {
                keys,
                out,
                suspects,
                failed,
                missed,
                tickets,
            },
        ))
    }

    /// The rest of a batch read once L2 answered [`ManyRead::missed`]: the hits kept, the
    /// suspect entries settled, the answer over the caller's keys.
    pub(crate) fn end_read_many(
        &self,
        read: ManyRead<'_>,
        answer: Timed<Vec<Option<Entry>>>,
    ) -> Result<HashMap<String, Vec<u8>>> {
        let ManyRead {
            keys,
            mut out,
            mut suspects,
            failed,
            missed,
            tickets,
        } = read;
        let l2 = self.finish_read_many(&missed, &tickets, answer, &mut out, &mut suspects);
        self.answer_many(&keys, out, failed, l2.err().map(|e| (e, &missed[..])))
    }

    /// The L1 pass of a batch read: fills `out` with hits, returns the keys to ask L2 (with
    /// the suspect L1 entries to revalidate in `suspects`); a key whose own L1 read failed goes
    /// to `failed`. An error: L1's batch call failed, for every key.
    fn read_many_l1<'k>(
        &self,
        keys: &[&'k str],
        out: &mut HashMap<String, Vec<u8>>,
        suspects: &mut HashMap<&'k str, Suspect>,
        failed: &mut L1Failed<'k>,
    ) -> Result<Vec<&'k str>> {
        if self.check_freshness.load(Ordering::Acquire) {
            self.retry_trust();
            return Ok(self.read_many_l1_checked(keys, out, suspects, failed));
        }
        let m = &self.metrics.local;
        let start = stats::sample_l1();
        let result = self.l1.get_many(keys);
        m.get_latency.record_since(start);
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                self.failed(Level::Local, "get_many", keys.first().copied().unwrap_or(""), e)?;
                return Ok(self.drop_pending(keys.to_vec()));
            }
        };
        let mut found = found.into_iter();
        let mut missed = Vec::new();
        for key in keys {
            match found.next().flatten() {
                Some(entry) => {
                    m.hits.incr();
                    out.insert((*key).to_owned(), entry.value);
                }
                None => {
                    m.misses.incr();
                    missed.push(*key);
                }
            }
        }
        Ok(self.drop_pending(missed))
    }

    /// [`read_many_l1`](Self::read_many_l1) while L1 entries may be suspect: freshness is per
    /// key, so one checked read each (L1 is local). Trusted hits and plain misses are counted
    /// once for the batch; a suspect entry or an error takes the single-read path.
    fn read_many_l1_checked<'k>(
        &self,
        keys: &[&'k str],
        out: &mut HashMap<String, Vec<u8>>,
        suspects: &mut HashMap<&'k str, Suspect>,
        failed: &mut L1Failed<'k>,
    ) -> Vec<&'k str> {
        let m = &self.metrics.local;
        let distrust = self.distrust_l1.is_on();
        let start = stats::sample_l1();
        let (mut hits, mut misses) = (0u64, 0u64);
        let mut missed = Vec::new();
        let mut other = Vec::new();
        for key in keys {
            match self.l1.get_checked(key) {
                Ok(Some((entry, Freshness::Trusted))) if !distrust => {
                    hits += 1;
                    out.insert((*key).to_owned(), entry.value);
                }
                Ok(None) => {
                    misses += 1;
                    missed.push(*key);
                }
                _ => other.push(*key),
            }
        }
        m.get_latency.record_since(start);
        m.hits.add(hits);
        m.misses.add(misses);
        let mut ask = self.drop_pending(missed);
        for key in other {
            match self.plan_read(key) {
                Ok(Plan::Done(Some(value))) => {
                    out.insert(key.to_owned(), value);
                }
                Ok(Plan::Done(None)) => {}
                Ok(Plan::AskL2(suspect)) => {
                    if let Some(entry) = suspect {
                        suspects.insert(key, entry);
                    }
                    ask.push(key);
                }
                // A single read of the key answers this error; the batch goes on with the rest.
                Err(e) => {
                    failed.keys.push(key);
                    failed.cause.get_or_insert(e);
                }
            }
        }
        ask
    }

    /// A batch read's answer over the caller's `keys`: what it found, `out`, unless some keys
    /// were not served: those whose L1 read failed (`l1`), or, `l2`, L2's error for the keys
    /// it was asked (a partial batch names the ones its reached nodes did not answer). Then a
    /// partial batch naming every key not served, carrying `out` ([`Served::Found`]), whose
    /// cause is L2's error if any, else the first L1 one; an L2 error for the whole call (not
    /// partial) is returned as it is, as before.
    fn answer_many(
        &self,
        keys: &[&str],
        out: HashMap<String, Vec<u8>>,
        l1: L1Failed<'_>,
        l2: Option<(Error, &[&str])>,
    ) -> Result<HashMap<String, Vec<u8>>> {
        let l2 = l2.map(|(error, asked)| partial_over(error, asked, keys));
        let mut partial = match (l2, l1.cause) {
            (None, None) => return Ok(out),
            (Some(Error::PartialBatch(partial)), _) => partial,
            (Some(whole), _) => return Err(whole),
            (None, Some(cause)) => Box::new(PartialBatch::new(
                Level::Local.name(),
                "get",
                keys.len(),
                Vec::new(),
                Vec::new(),
                cause,
                Served::Found(HashMap::new()),
            )),
        };
        if !l1.keys.is_empty() {
            let failed_in_l1: HashSet<&str> = l1.keys.into_iter().collect();
            partial.failed.extend(positions_of(keys, &failed_in_l1));
            partial.failed.sort_unstable();
            partial.failed.dedup();
        }
        Err(with_found(Error::PartialBatch(partial), out))
    }

    /// Removes the keys with a queued replay op (counted as misses): L2 must not answer them.
    fn drop_pending<'k>(&self, mut keys: Vec<&'k str>) -> Vec<&'k str> {
        if self.l2.is_none() || self.replay.as_ref().is_none_or(|q| q.is_empty()) {
            return keys;
        }
        let before = keys.len();
        keys.retain(|k| !self.is_pending(k));
        let dropped = before - keys.len();
        self.metrics.consistency.pending_misses.add(dropped as u64);
        self.miss(dropped);
        keys
    }

    /// What to do with L2's answer to the keys of a batch L1 did not answer (or held suspect).
    pub(crate) fn finish_read_many<'k>(
        &self,
        missed: &[&'k str],
        tickets: &[Ticket],
        (started, result): Timed<Vec<Option<Entry>>>,
        out: &mut HashMap<String, Vec<u8>>,
        suspects: &mut HashMap<&'k str, Suspect>,
    ) -> Result<()> {
        let m = &self.metrics.distributed;
        time_l2(&m.get_latency, started, &result);
        // Keys whose node could not be reached (a partial batch): each is a failed read.
        let mut not_reached = Vec::new();
        // A partial batch `fallback_on_error` does not hide: the caller gets it once the keys
        // the reached nodes answered are in `out` (see `Served::Found`).
        let mut unhidden = None;
        let result = match result.map_err(unreached) {
            Ok(found) => Ok(found),
            Err(Ok((failed, Served::Entries(found), error))) => {
                let first = failed.first().and_then(|&i| missed.get(i)).copied().unwrap_or("");
                if !self.hidden(Level::Distributed, "get_many", first, &error) {
                    unhidden = Some(error);
                }
                not_reached = vec![false; missed.len()];
                for i in failed {
                    if let Some(flag) = not_reached.get_mut(i) {
                        *flag = true;
                    }
                }
                Ok(found)
            }
            Err(Ok((_, _, error)) | Err(error)) => Err(error),
        };
        let found = match result {
            Ok(found) => found,
            Err(e) => {
                self.failed(
                    Level::Distributed,
                    "get_many",
                    missed.first().copied().unwrap_or(""),
                    e,
                )?;
                // Offline: suspect entries are served as they are.
                for key in missed {
                    self.offline_answer(key, out, suspects);
                }
                return Ok(());
            }
        };
        let mut found = found.into_iter();
        let mut hits = Vec::with_capacity(missed.len());
        let mut misses = 0;
        for (i, (key, ticket)) in missed.iter().zip(tickets).enumerate() {
            let answer = found.next().flatten();
            if not_reached.get(i).copied().unwrap_or(false) {
                // Offline for this key; a failed key of the error the caller gets is not served.
                if unhidden.is_none() {
                    self.offline_answer(key, out, suspects);
                }
                continue;
            }
            if !suspects.is_empty() {
                if let Some(entry) = suspects.remove(key) {
                    if let Some(value) = self.settled_by_l2(key, entry, *ticket, answer, true) {
                        out.insert((*key).to_owned(), value);
                    }
                    continue;
                }
            }
            match answer {
                Some(entry) => match self.overtaken(key, *ticket) {
                    None => hits.push((*key, *ticket, entry)),
                    Some(Some(value)) => {
                        out.insert((*key).to_owned(), value);
                    }
                    Some(None) => {}
                },
                None => misses += 1,
            }
        }
        m.hits.add(hits.len() as u64);
        m.misses.add(misses as u64);
        self.miss(misses);
        self.backfill_many(&hits);
        for (key, _, entry) in hits {
            out.insert(key.to_owned(), entry.value);
        }
        unhidden.map_or(Ok(()), Err)
    }

    /// The answer for a key of a batch whose L2 could not be reached: its suspect L1 entry, if
    /// it has one, served as it is (counted as unverified), else a miss.
    fn offline_answer<'k>(
        &self,
        key: &'k str,
        out: &mut HashMap<String, Vec<u8>>,
        suspects: &mut HashMap<&'k str, Suspect>,
    ) {
        match suspects.remove(key) {
            Some(suspect) if self.serves_unverified(key) => {
                self.metrics.local.hits.incr();
                out.insert(key.to_owned(), suspect.entry.value);
            }
            Some(_) => {
                self.metrics.local.misses.incr();
                self.miss(1);
            }
            None => self.miss(1),
        }
    }

    /// [`backfill`](Self::backfill) for the L2 hits of a batch: queued for the backfill thread
    /// (see `fill`), or written here when there is no thread. One hit is written inline.
    pub(super) fn backfill_many(&self, hits: &[(&str, Ticket, Entry)]) {
        if let [(key, ticket, entry)] = hits {
            self.backfill(key, *ticket, entry);
            return;
        }
        let now_ms = self.clock.now_ms();
        let now = clock::ms_to_system_time(now_ms);
        let bytes = hits.iter().map(|(k, _, e)| k.len() + e.value.len()).sum();
        let mut fills = FillBatch::with_capacity(hits.len(), bytes);
        for (key, ticket, entry) in hits {
            if let Some(ttl) = self.backfill_ttl_at(entry, now) {
                fills.push(key, &entry.value, clock::expiry_ms(now_ms, ttl), *ticket);
            }
        }
        if fills.is_empty() {
            return;
        }
        match &self.fills {
            Some(queue) => {
                let n = fills.len() as u64;
                if !queue.push(fills) {
                    self.metrics.backfills_skipped.add(n);
                }
            }
            None => self.apply_fills(&fills),
        }
    }

    /// Writes a batch of backfills into L1 with one guarded call (one `pwrite` for the file
    /// store), each entry with the time left until its expiry, skipping those a write overtook.
    /// An entry with no time left (its L2 copy expired while it was queued) is not written, and
    /// not counted as skipped, as a hit found with none left when it was queued was not queued.
    pub(crate) fn apply_fills(&self, fills: &FillBatch) {
        let now_ms = self.clock.now_ms();
        let tickets: Vec<Ticket> = fills.iter().map(|(_, _, _, ticket)| ticket).collect();
        let live = fills.iter().filter(|&(_, _, at, _)| at > now_ms).count() as u64;
        let mut written = 0;
        let mut result = Ok(());
        self.guard.backfill_many_if_current(&tickets, |current| {
            let epoch = self.l1.suspect_epoch();
            let items: Vec<(&str, &[u8], Option<Duration>)> = fills
                .iter()
                .zip(current)
                .filter(|&((_, _, at, ticket), current)| *current && at > now_ms && taken_in(&ticket, epoch))
                .map(|((key, value, at, _), _)| {
                    (key, value, Some(Duration::from_millis(at.saturating_sub(now_ms))))
                })
                .collect();
            if items.is_empty() {
                return;
            }
            // Fills: L1 may leave out those its admission policy refuses.
            result = self.fill_in(epoch, &items).map(|n| written = n as u64);
            if matches!(&result, Err(e) if e.is_bad_input()) {
                // One entry L1 cannot take (a value larger than a segment, say) must not keep
                // the others out: write them one by one.
                written = 0;
                for item in &items {
                    match self.fill_in(epoch, std::slice::from_ref(item)) {
                        Ok(n) => written += n as u64,
                        Err(e) => result = Err(e),
                    }
                }
            }
        });
        self.metrics.backfills_skipped.add(live.saturating_sub(written));
        if let Err(e) = result {
            self.metrics.local.errors.incr();
            if let Some(unlogged) = self.metrics.local.batch_backfill_lines.pass() {
                tracing::warn!(error = %e, unlogged, "backfilling L1 failed; the read went on (unlogged: batches since the last line)");
            }
        }
        // What L1 took one by one counts whichever fill failed last (0 if the batch failed).
        self.metrics.local.sets.add(written);
        self.metrics.backfills.add(written);
    }

    pub(crate) fn tickets(&self, keys: &[&str]) -> Vec<Ticket> {
        let l1_epoch = self.l1.suspect_epoch();
        keys.iter().map(|k| self.ticket_in(k, l1_epoch)).collect()
    }
}
