//! Per-key ordering of one manager's writes and deletes, and the backfill guard that keeps an
//! L2 value read before a write or delete of its key from landing in L1 after it.
//!
//! Keys hash onto [`STRIPES`] stripes, each a small mutex over its state and a place to wait:
//! - a `set`, `delete` or batch of them takes an [`order`](KeyOrder::order) of its keys before
//!   it touches any level and holds it until both levels (or the write-behind queue, or the
//!   replay queue) have its result: **one owner per key** (a stripe lists, per guard, the
//!   64-bit hashes of the keys it owns there), so the writes of one key reach L1 and L2 in the
//!   same order. A batch takes its keys stripe by stripe, in index order, all of a stripe's at
//!   once, so two batches never deadlock and a large batch costs one claim per stripe. The
//!   async API waits without blocking the executor (a [`Notify`] per stripe); the blocking API
//!   parks its thread (a [`Condvar`] per stripe); dropping the guard (also when a future is
//!   cancelled) frees the keys;
//! - a local-only invalidation (another instance's message, dropping a suspect entry) only
//!   [`marks`](KeyOrder::write) a writer: it touches L1 alone, so it need not wait for an L2
//!   round trip of this manager; one of keys nobody listed (all of L1, a prefix, every entry
//!   made suspect) marks a writer on [every stripe](KeyOrder::write_all);
//! - every writer bumps `version` when it starts and ends; a read takes a [`Ticket`] (the
//!   version) before it reads L2, and backfills L1 only under the stripe's mutex, only if the
//!   version is unchanged and no writer is in progress (the ticket also carries L1's suspect
//!   epoch, for the marks of other holders of L1 that bump no stripe: see `Shared::fill_in`);
//! - a load [`watches`](KeyOrder::watch) its key from before its loader reads the source;
//!   every writer and invalidation of the key, and the store of a load of it that began later
//!   (and so read its source later), marks the watch, and the load stores what it read only if
//!   its watch is unmarked when it owns the key
//!   ([`order_watched`](KeyOrder::order_watched)), so a value read before a change never
//!   replaces it. Writers look at the watches only while a load is in progress (one atomic
//!   load otherwise);
//! - every writer and invalidation of a key also forgets its refresh-ahead due time
//!   (`refresh_due`), which belongs to the value a load stored (one atomic load when none is
//!   tracked);
//! - the owner of a delete records that it deletes its key, so that a read which missed L1
//!   while that delete is between its levels answers a miss instead of asking L2, which may
//!   still hold a value the delete (or a write that the delete dropped from the write-behind
//!   queue) replaced.
//!
//! Why striped locks rather than per-key sequence numbers that let a level refuse an older
//! write: a level cannot compare sequence numbers without a change to every backend's format
//! (and Memcached and a user's own `Storage` would have nowhere to keep them), the write-behind
//! and replay queues would need the same, and two managers' numbers would still not be ordered.
//! A stripe costs what the backfill guard already cost (one uncontended mutex on each side of a
//! write). A write waits only for an earlier write of **the same key**: two keys that share a
//! stripe share its mutex (held for a few instructions) and its version (a write of one may
//! skip a backfill of the other), never an L2 round trip. When a stripe had one owner flag,
//! a set waited for any write of its stripe; with a thousand keys being written that is most
//! of them, and in an L2 outage a set took two deadlines instead of one. More stripes were
//! measured to cost: with 4096 (400 KB of stripes, a cache miss per write of a new key) a set
//! through two in-process levels took 25% longer; with 1024 it is within 5% of the guard
//! before ordering (`set_distinct_memory_l2` in `benches/manager.rs`).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::Notify;

use super::refresh_due::RefreshDue;
use crate::clock::{Clock, MonotonicClock};
use crate::storage::SuspectEpoch;

/// Number of stripes (a power of two).
const STRIPES: usize = 1024;

/// A key a write or delete owns ([`KeyOrder::order`]): its 64-bit hash, and whether it is being
/// deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Owned {
    hash: u64,
    delete: bool,
}

/// The keys of one stripe that one guard owns, sorted by hash. A single key (a `set` or
/// `delete`) is held inline, so ordering one key allocates nothing.
#[derive(Debug)]
enum Claim {
    One(Owned),
    Many(Box<[Owned]>),
}

impl Claim {
    fn new(keys: &[Owned]) -> Claim {
        match keys {
            [one] => Claim::One(*one),
            many => Claim::Many(many.into()),
        }
    }

    fn keys(&self) -> &[Owned] {
        match self {
            Claim::One(key) => std::slice::from_ref(key),
            Claim::Many(keys) => keys,
        }
    }

    fn keys_mut(&mut self) -> &mut [Owned] {
        match self {
            Claim::One(key) => std::slice::from_mut(key),
            Claim::Many(keys) => keys,
        }
    }

    fn find(&self, hash: u64) -> Option<&Owned> {
        let keys = self.keys();
        let at = keys.binary_search_by_key(&hash, |k| k.hash).ok()?;
        keys.get(at)
    }
}

#[derive(Debug, Default)]
struct Stripe {
    version: u64,
    writers: u32,
    /// What the guards that own keys of this stripe own: one claim per guard, and no key in two
    /// claims. Usually none or one, so the first is kept in the stripe: a write of a key whose
    /// stripe nobody else writes touches no other cache line (a vector of claims cost one more
    /// miss per set of a new key, 10% of `set_distinct_memory_l2`).
    first: Option<Claim>,
    more: Vec<Claim>,
    /// Callers waiting for a key of the stripe (so a release wakes nobody when nobody waits).
    waiting: u32,
    /// Until when (ms of the guard's monotonic clock) an L2 command of a cancelled write or delete of
    /// a key here may still land ([`quiet`](KeyOrder::quiet)): no backfill until then, or L1
    /// would keep the value L2 had before it.
    quiet_until_ms: u64,
}

impl Stripe {
    fn claims(&self) -> impl Iterator<Item = &Claim> {
        self.first.iter().chain(&self.more)
    }

    fn owned(&self, hash: u64) -> Option<&Owned> {
        self.claims().find_map(|c| c.find(hash))
    }

    /// Whether another guard owns one of `keys`.
    fn blocks(&self, keys: &[Owned]) -> bool {
        self.first.is_some() && keys.iter().any(|k| self.owned(k.hash).is_some())
    }

    fn claim(&mut self, claim: Claim) {
        if self.first.is_none() {
            self.first = Some(claim);
        } else {
            self.more.push(claim);
        }
    }

    /// Marks the keys of the claim whose first key is `first` as being deleted.
    fn mark_deleting(&mut self, first: u64) {
        let named = |c: &&mut Claim| c.keys().first().map(|k| k.hash) == Some(first);
        if let Some(claim) = self.first.iter_mut().chain(self.more.iter_mut()).find(named) {
            for key in claim.keys_mut() {
                key.delete = true;
            }
        }
    }

    /// Drops the claim whose first key is `first` (no key is in two claims, so it names one).
    fn release(&mut self, first: u64) {
        let named = |c: &Claim| c.keys().first().map(|k| k.hash) == Some(first);
        if self.first.as_ref().is_some_and(named) {
            self.first = self.more.pop();
        } else if let Some(at) = self.more.iter().position(named) {
            self.more.swap_remove(at);
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    state: Mutex<Stripe>,
    free: Condvar,
    free_async: Notify,
}

/// The stripes of one manager: per-key ordering of writes, and the backfill guard.
#[derive(Debug)]
pub(crate) struct KeyOrder {
    slots: Box<[Slot]>,
    /// aHash: a ticket per key of every batch read, so SipHash's cost showed.
    hasher: ahash::RandomState,
    /// Loads in progress, by key hash (see [`watch`](KeyOrder::watch)); read by every writer
    /// only while `watching` is not zero.
    watches: Mutex<HashMap<u64, Vec<Watched>>>,
    watching: AtomicUsize,
    next_watch: AtomicU64,
    /// The clock of [`quiet`](KeyOrder::quiet) windows: a monotonic one (the default), since
    /// a window is a length of time, which a step of the wall clock must neither end early (a
    /// read would backfill the value the late command replaces) nor stretch.
    clock: Arc<dyn Clock>,
    /// Refresh-ahead's due times, here so that every writer of a key forgets its own (see
    /// [`overtake`](KeyOrder::overtake)).
    refresh: RefreshDue,
}

/// A load's watch of its key: whether a write, delete or invalidation of the key started since.
#[derive(Debug)]
struct Watched {
    id: u64,
    overtaken: bool,
    /// Set with `overtaken`, for the load's flight: a caller arriving after the change must not
    /// join the load and get what it read before (see `loader::Flights::join`).
    flight: Arc<AtomicBool>,
}

impl Watched {
    fn overtake(&mut self) {
        self.overtaken = true;
        self.flight.store(true, Ordering::SeqCst);
    }
}

/// A load in progress on a key ([`KeyOrder::watch`]); given back to
/// [`order_watched`](KeyOrder::order_watched) to store what it loaded, or to
/// [`unwatch`](KeyOrder::unwatch).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Watch {
    hash: u64,
    id: u64,
}

/// A [`Watch`] that ends when dropped, unless [handed on](Watching::hand_on) to the load that
/// ends it: a cancelled future or a panicking loader otherwise left it in place, and every write
/// from then on took the watches' lock (and their map kept its entry). Ending a watch twice is
/// harmless, so the usual paths end it as before and the drop then does nothing.
pub(crate) struct Watching<'a> {
    order: &'a KeyOrder,
    watch: Watch,
    armed: bool,
}

impl Watching<'_> {
    /// The watch, for the calls that end it.
    pub(crate) fn get(&self) -> Watch {
        self.watch
    }

    /// The watch, for a load that runs apart and ends it itself.
    pub(crate) fn hand_on(mut self) -> Watch {
        self.armed = false;
        self.watch
    }
}

impl Drop for Watching<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.order.unwatch(self.watch);
        }
    }
}

/// The state of a key's stripe when its L2 read began.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ticket {
    stripe: usize,
    version: u64,
    deleting: bool,
    /// The write-behind queue's settle epoch of the key, taken just before (see
    /// `WriteQueue::settle_epoch`); 0 without a queue.
    settled: u64,
    /// L1's suspect epoch, taken just before (see `Shared::ticket`); `None` for a ticket of
    /// the stripes alone, which no L2 read backfills under.
    l1_epoch: Option<SuspectEpoch>,
}

impl Ticket {
    /// A delete of this key was between its levels when the ticket was taken.
    pub(crate) fn deleting(&self) -> bool {
        self.deleting
    }

    /// The queue's settle epoch recorded with the ticket.
    pub(crate) fn settled(&self) -> u64 {
        self.settled
    }

    /// Records the queue's settle epoch, read before the ticket was taken.
    pub(crate) fn with_settled(self, settled: u64) -> Ticket {
        Ticket { settled, ..self }
    }

    /// L1's suspect epoch recorded with the ticket, if any.
    pub(crate) fn l1_epoch(&self) -> Option<SuspectEpoch> {
        self.l1_epoch
    }

    /// Records L1's suspect epoch, read before the L2 read the ticket guards.
    pub(crate) fn with_l1_epoch(self, epoch: SuspectEpoch) -> Ticket {
        Ticket {
            l1_epoch: Some(epoch),
            ..self
        }
    }
}

/// Writes of some keys in progress (owning their stripes if taken with
/// [`order`](KeyOrder::order)); see the module docs.
#[derive(Debug)]
pub(crate) struct WriteGuard<'a> {
    guard: &'a KeyOrder,
    /// The keys, in the order of [`plan`](KeyOrder::plan); the first `taken` are held (an async
    /// wait may stop half-way, between two stripes).
    keys: Vec<Owned>,
    taken: usize,
    owner: bool,
}

impl Default for KeyOrder {
    fn default() -> Self {
        KeyOrder::new(Arc::new(MonotonicClock))
    }
}

/// Counts a waiter for as long as it waits, also when an async wait is cancelled.
struct Waiting<'a>(&'a Slot);

impl<'a> Waiting<'a> {
    fn new(slot: &'a Slot, s: &mut Stripe) -> Waiting<'a> {
        s.waiting = s.waiting.saturating_add(1);
        Waiting(slot)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock();
        s.waiting = s.waiting.saturating_sub(1);
    }
}

impl KeyOrder {
    fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    fn stripe_of_hash(h: u64) -> usize {
        // Truncation is fine: only the low bits pick the stripe.
        #[allow(clippy::cast_possible_truncation)]
        let h = h as usize;
        h & (STRIPES - 1)
    }

    #[cfg(test)]
    fn stripe_of(&self, key: &str) -> usize {
        Self::stripe_of_hash(self.hash(key))
    }

    /// The stripes of a manager, with quiet windows timed by `clock`.
    pub(crate) fn new(clock: Arc<dyn Clock>) -> KeyOrder {
        KeyOrder {
            slots: (0..STRIPES).map(|_| Slot::default()).collect(),
            hasher: ahash::RandomState::new(),
            watches: Mutex::new(HashMap::new()),
            watching: AtomicUsize::new(0),
            next_watch: AtomicU64::new(0),
            clock,
            refresh: RefreshDue::default(),
        }
    }

    /// Refresh-ahead: the value a load stored for `key` is due for a reload at `at`. Called
    /// while the load owns the key for its store, so a write that follows forgets it.
    pub(crate) fn note_refresh(&self, key: &str, at: u64, now: u64) {
        self.refresh.note(self.hash(key), at, now);
    }

    /// Whether a hit on `key` should start its reload (then it is no longer due), with what
    /// `claim` gave it (see [`RefreshDue::take`]).
    pub(crate) fn take_refresh<S>(
        &self,
        key: &str,
        now: impl FnOnce() -> u64,
        claim: impl FnOnce() -> Option<S>,
    ) -> Option<S> {
        self.refresh.take(self.hash(key), now, claim)
    }

    /// Keeps backfills of `keys` (of their stripes) out of L1 for `window`: a write or delete
    /// of them was cancelled with its L2 command sent, or about to be, and nowhere to hand it
    /// to. Until the command lands, L2 answers a read with the value it had before; backfilled,
    /// that value would stay in L1 for its TTL after L2 moved on. A read in the window is
    /// answered from L2 and not kept.
    pub(crate) fn quiet<'k>(&self, keys: impl IntoIterator<Item = &'k str>, window: Duration) {
        let until = self
            .clock
            .now_ms()
            .saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        for key in keys {
            if let Some(slot) = self.slots.get(Self::stripe_of_hash(self.hash(key))) {
                let mut s = slot.state.lock();
                s.quiet_until_ms = s.quiet_until_ms.max(until);
            }
        }
    }

    /// [`quiet`](Self::quiet) for every key: a prefix invalidation was cancelled while its L2
    /// deletes, of keys nobody listed here, may still land.
    pub(crate) fn quiet_all(&self, window: Duration) {
        let until = self
            .clock
            .now_ms()
            .saturating_add(u64::try_from(window.as_millis()).unwrap_or(u64::MAX));
        for slot in &*self.slots {
            let mut s = slot.state.lock();
            s.quiet_until_ms = s.quiet_until_ms.max(until);
        }
    }

    /// Whether a backfill of a key of `s` taken at `ticket` may land: no writer began since, none
    /// is in progress, and no cancelled one's L2 command may still land.
    ///
    /// A window that is over is cleared, so the stripe's later backfills skip the clock.
    fn current(&self, s: &mut Stripe, ticket: &Ticket) -> bool {
        if s.quiet_until_ms != 0 {
            if self.clock.now_ms() < s.quiet_until_ms {
                return false;
            }
            s.quiet_until_ms = 0;
        }
        s.version == ticket.version && s.writers == 0
    }

    /// Taken before reading L2.
    pub(crate) fn ticket(&self, key: &str) -> Ticket {
        let h = self.hash(key);
        let stripe = Self::stripe_of_hash(h);
        let (version, deleting) = self.slots.get(stripe).map_or((0, false), |slot| {
            let s = slot.state.lock();
            let deleting = s.owned(h).is_some_and(|o| o.delete);
            (s.version, deleting)
        });
        Ticket {
            stripe,
            version,
            deleting,
            settled: 0,
            l1_epoch: None,
        }
    }

    /// Whether no writer of the ticket's stripe began since it was taken, and none is in
    /// progress: what the key held then, it holds now.
    pub(crate) fn unchanged(&self, ticket: &Ticket) -> bool {
        self.slots
            .get(ticket.stripe)
            .is_some_and(|slot| self.current(&mut slot.state.lock(), ticket))
    }

    /// Runs `backfill` (the L1 write) if nothing wrote the key's stripe since `ticket`; returns
    /// whether it ran.
    pub(crate) fn backfill_if_current(&self, ticket: Ticket, backfill: impl FnOnce()) -> bool {
        let Some(slot) = self.slots.get(ticket.stripe) else {
            return false;
        };
        let mut s = slot.state.lock();
        if self.current(&mut s, &ticket) {
            backfill();
            true
        } else {
            false
        }
    }

    /// Runs `put_back` (the L1 write of the older entry a failed refresh-ahead store keeps, see
    /// `reload_keep`) if no writer began on the ticket's stripe since the ticket, which the key's
    /// owner took: unlike a backfill's, its own write is in progress. Under the stripe's mutex,
    /// so a local invalidation of the key either came before (then nothing runs) or runs after.
    pub(crate) fn put_back_if_current(&self, ticket: &Ticket, put_back: impl FnOnce()) -> bool {
        let Some(slot) = self.slots.get(ticket.stripe) else {
            return false;
        };
        let s = slot.state.lock();
        let quiet = s.quiet_until_ms != 0 && self.clock.now_ms() < s.quiet_until_ms;
        if s.version != ticket.version || quiet {
            return false;
        }
        put_back();
        true
    }

    /// The batch form of [`backfill_if_current`](Self::backfill_if_current): holds the stripes of
    /// every ticket (in index order, so two batches never deadlock) and runs `backfill` once with
    /// one flag per ticket, `true` where nothing wrote the stripe since the ticket.
    pub(crate) fn backfill_many_if_current(&self, tickets: &[Ticket], backfill: impl FnOnce(&[bool])) {
        let mut stripes: Vec<usize> = tickets.iter().map(|t| t.stripe).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut held: BTreeMap<usize, MutexGuard<'_, Stripe>> = stripes
            .into_iter()
            .filter_map(|i| self.slots.get(i).map(|s| (i, s.state.lock())))
            .collect();
        let current: Vec<bool> = tickets
            .iter()
            .map(|t| held.get_mut(&t.stripe).is_some_and(|s| self.current(s, t)))
            .collect();
        backfill(&current);
    }

    /// The distinct keys of `keys` as hashes, sorted by stripe (the order guards take stripes
    /// in, so two batches never deadlock) and then by hash (a claim's order); `delete`: they are
    /// being deleted.
    fn plan<'k>(&self, keys: impl IntoIterator<Item = &'k str>, delete: bool) -> Vec<Owned> {
        let mut plan: Vec<Owned> = keys
            .into_iter()
            .map(|k| Owned {
                hash: self.hash(k),
                delete,
            })
            .collect();
        plan.sort_unstable_by_key(|o| (Self::stripe_of_hash(o.hash), o.hash));
        plan.dedup_by_key(|o| o.hash);
        plan
    }

    /// The keys of `plan` from `from` on that share the stripe of the first: the stripe, and the
    /// end of the run.
    fn run(plan: &[Owned], from: usize) -> Option<(usize, usize)> {
        let stripe = Self::stripe_of_hash(plan.get(from)?.hash);
        let len = plan.get(from..).map_or(0, |rest| {
            rest.iter()
                .take_while(|o| Self::stripe_of_hash(o.hash) == stripe)
                .count()
        });
        Some((stripe, from + len))
    }

    /// Marks the loads watching `keys` overtaken (every load, for `None`): a write, delete or
    /// invalidation of their key started, so what they loaded may be older. Called under the
    /// stripe's mutex (or after every stripe was marked, for `None`), so a load's store, which
    /// checks its watch under that mutex, either sees the mark or goes first.
    ///
    /// A load's store (`by`, its watch) overtakes only the loads watching since before it: a
    /// load that began later read its source later, and its value goes over this one.
    ///
    /// The keys' refresh-ahead due times are forgotten here too: they belong to the value a
    /// load stored, which this replaces or drops (a load's own store records its anew).
    fn overtake(&self, keys: Option<&[Owned]>, by: Option<Watch>) {
        match keys {
            Some(keys) => self.refresh.forget(keys.iter().map(|k| k.hash)),
            None => self.refresh.forget_all(),
        }
        if self.watching.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut watches = self.watches.lock();
        match keys {
            Some(keys) => {
                for key in keys {
                    for w in watches.get_mut(&key.hash).into_iter().flatten() {
                        if by.is_none_or(|by| w.id < by.id) {
                            w.overtake();
                        }
                    }
                }
            }
            None => {
                for w in watches.values_mut().flatten() {
                    w.overtake();
                }
            }
        }
    }

    /// Watches `key` for the length of a load: taken before the loader reads its source, so a
    /// write of the key from then on makes [`order_watched`](Self::order_watched) refuse to
    /// store the loaded value over it. `flight` is set when the watch is marked: the load's
    /// flight takes no new waiters from then on.
    pub(crate) fn watch(&self, key: &str, flight: Arc<AtomicBool>) -> Watch {
        let hash = self.hash(key);
        let id = self.next_watch.fetch_add(1, Ordering::Relaxed);
        let mut watches = self.watches.lock();
        watches.entry(hash).or_default().push(Watched {
            id,
            overtaken: false,
            flight,
        });
        self.watching.fetch_add(1, Ordering::SeqCst);
        Watch { hash, id }
    }

    /// Watches in progress.
    #[cfg(test)]
    pub(crate) fn watches(&self) -> usize {
        self.watching.load(Ordering::SeqCst)
    }

    /// [`watch`](Self::watch), ended when the returned guard is dropped unless handed on.
    pub(crate) fn watching(&self, key: &str, flight: Arc<AtomicBool>) -> Watching<'_> {
        Watching {
            order: self,
            watch: self.watch(key, flight),
            armed: true,
        }
    }

    /// Ends a watch; whether the key was overtaken meanwhile. Ending it again does nothing.
    pub(crate) fn unwatch(&self, watch: Watch) -> bool {
        let mut watches = self.watches.lock();
        let Some(list) = watches.get_mut(&watch.hash) else {
            return true;
        };
        let Some(at) = list.iter().position(|w| w.id == watch.id) else {
            return true;
        };
        let overtaken = list.swap_remove(at).overtaken;
        if list.is_empty() {
            watches.remove(&watch.hash);
        }
        self.watching.fetch_sub(1, Ordering::SeqCst);
        overtaken
    }

    /// Marks a writer on a stripe, owning `keys` in it if the caller ordered them (not for
    /// [`write`](Self::write), which only shares the stripe).
    fn start(s: &mut Stripe, owner: bool, keys: &[Owned]) {
        s.version = s.version.wrapping_add(1);
        s.writers = s.writers.saturating_add(1);
        if owner {
            s.claim(Claim::new(keys));
        }
    }

    /// Marks writes of `keys` in progress until the guard is dropped, without ordering them:
    /// for L1-only deletes (invalidations), which must not wait for another write's L2 step.
    pub(crate) fn write<'k>(&self, keys: impl IntoIterator<Item = &'k str>) -> WriteGuard<'_> {
        let plan = self.plan(keys, false);
        let mut from = 0;
        while let Some((i, end)) = Self::run(&plan, from) {
            if let (Some(slot), Some(run)) = (self.slots.get(i), plan.get(from..end)) {
                let mut s = slot.state.lock();
                self.overtake(Some(run), None);
                Self::start(&mut s, false, run);
            }
            from = end;
        }
        WriteGuard {
            guard: self,
            taken: plan.len(),
            keys: plan,
            owner: false,
        }
    }

    /// Marks a write of every key in progress until the guard is dropped: for an invalidation
    /// of keys nobody listed (all of L1, a prefix, every entry made suspect). An L2 read whose
    /// ticket was taken before the guard is dropped then backfills nothing, as after a write
    /// of its key; without it, a value read from L2 before the invalidation came back into L1
    /// after it. Takes each stripe's mutex twice: for rare, whole-cache events only.
    pub(crate) fn write_all(&self) -> AllGuard<'_> {
        // Loads first: a load whose store checks its watch from now on does not store. One that
        // checked before stores as a write begun before this (its L1 write may land after
        // what the caller then clears: a window of one write, not of the whole load).
        self.overtake(None, None);
        for slot in &*self.slots {
            Self::start(&mut slot.state.lock(), false, &[]);
        }
        AllGuard { guard: self }
    }

    /// Owns `keys` (waiting, on this thread, for earlier writes of them to finish) until the
    /// guard is dropped; `delete`: they are being deleted. See the module docs.
    pub(crate) fn order<'k>(&self, keys: impl IntoIterator<Item = &'k str>, delete: bool) -> WriteGuard<'_> {
        let plan = self.plan(keys, delete);
        let mut guard = WriteGuard {
            guard: self,
            keys: plan,
            taken: 0,
            owner: true,
        };
        while let Some((i, end)) = Self::run(&guard.keys, guard.taken) {
            if let (Some(slot), Some(run)) = (self.slots.get(i), guard.keys.get(guard.taken..end)) {
                self.take(slot, run, None);
            }
            guard.taken = end;
        }
        guard
    }

    /// Waits (parking the thread) until no other guard owns a key of `run`, then owns them,
    /// unless `watch` was overtaken meanwhile (then nothing is taken): whether it took them.
    fn take(&self, slot: &Slot, run: &[Owned], watch: Option<Watch>) -> bool {
        let mut s = slot.state.lock();
        if s.blocks(run) {
            s.waiting = s.waiting.saturating_add(1);
            while s.blocks(run) {
                slot.free.wait(&mut s);
            }
            s.waiting = s.waiting.saturating_sub(1);
        }
        self.take_free(&mut s, run, watch)
    }

    /// [`take`](Self::take) for the async API: waits without blocking the executor.
    async fn take_async(&self, slot: &Slot, run: &[Owned], watch: Option<Watch>) -> bool {
        loop {
            let notified = slot.free_async.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let waiting = {
                let mut s = slot.state.lock();
                if !s.blocks(run) {
                    return self.take_free(&mut s, run, watch);
                }
                Waiting::new(slot, &mut s)
            };
            notified.await;
            drop(waiting);
        }
    }

    /// Owns `run` in a stripe where nobody else owns a key of it, unless `watch` was
    /// overtaken (see [`order_watched`](Self::order_watched)).
    fn take_free(&self, s: &mut Stripe, run: &[Owned], watch: Option<Watch>) -> bool {
        if watch.is_some_and(|watch| self.unwatch(watch)) {
            return false;
        }
        self.overtake(Some(run), watch);
        Self::start(s, true, run);
        true
    }

    /// [`order`](Self::order) of `key` for storing what a load read: `None` (nothing taken,
    /// the watch ended) if a write, delete or invalidation of the key started since `watch`,
    /// whose value the load's would replace. Waits, as `order` does, for a write of the key in
    /// progress, which then counts as one.
    pub(crate) fn order_watched(&self, key: &str, watch: Watch) -> Option<WriteGuard<'_>> {
        self.order_watched_as(key, watch, false)
    }

    /// [`order_watched`](Self::order_watched) for deleting what a load found gone (a loader's
    /// "absent" that is not cached): the key is owned as a delete's is, so a read that misses
    /// L1 meanwhile answers a miss rather than ask L2 between the levels' deletes.
    pub(crate) fn order_watched_delete(&self, key: &str, watch: Watch) -> Option<WriteGuard<'_>> {
        self.order_watched_as(key, watch, true)
    }

    fn order_watched_as(&self, key: &str, watch: Watch, delete: bool) -> Option<WriteGuard<'_>> {
        let plan = self.plan([key], delete);
        let (i, end) = Self::run(&plan, 0)?;
        let taken = self.take(self.slots.get(i)?, plan.get(..end)?, Some(watch));
        taken.then(|| self.taken(plan))
    }

    /// The guard of a plan of one stripe, taken.
    fn taken(&self, plan: Vec<Owned>) -> WriteGuard<'_> {
        WriteGuard {
            guard: self,
            taken: plan.len(),
            keys: plan,
            owner: true,
        }
    }

    /// [`order_watched`](Self::order_watched) for the async API.
    pub(crate) async fn order_watched_async(&self, key: &str, watch: Watch) -> Option<WriteGuard<'_>> {
        let plan = self.plan([key], false);
        let (i, end) = Self::run(&plan, 0)?;
        let taken = self
            .take_async(self.slots.get(i)?, plan.get(..end)?, Some(watch))
            .await;
        taken.then(|| self.taken(plan))
    }

    /// [`order`](Self::order) for the async API: waits without blocking the executor. Dropping
    /// the future releases the keys it took.
    pub(crate) fn order_async<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
        delete: bool,
    ) -> impl Future<Output = WriteGuard<'_>> + Send + '_ {
        let plan = self.plan(keys, delete);
        async move {
            let mut guard = WriteGuard {
                guard: self,
                keys: plan,
                taken: 0,
                owner: true,
            };
            while let Some((i, end)) = Self::run(&guard.keys, guard.taken) {
                if let (Some(slot), Some(run)) = (self.slots.get(i), guard.keys.get(guard.taken..end)) {
                    self.take_async(slot, run, None).await;
                }
                guard.taken = end;
            }
            guard
        }
    }
}

/// A write of every key in progress ([`KeyOrder::write_all`]).
#[derive(Debug)]
pub(crate) struct AllGuard<'a> {
    guard: &'a KeyOrder,
}

impl Drop for AllGuard<'_> {
    fn drop(&mut self) {
        for slot in &*self.guard.slots {
            let mut s = slot.state.lock();
            s.writers = s.writers.saturating_sub(1);
            s.version = s.version.wrapping_add(1);
        }
    }
}

impl WriteGuard<'_> {
    /// From now until the guard is dropped, a read of its keys that L1 does not answer is a
    /// miss, as during a delete ([`Ticket::deleting`]): for a write-through that settles the
    /// write-behind queue first (a full queue, a key pending for replay). The settle takes the
    /// keys' newer queued writes out, and until this write reaches L2, L2 may hold an older
    /// value than one a completed write left, which a read must not serve.
    pub(crate) fn reads_miss(&self) {
        if !self.owner {
            return;
        }
        let held = self.keys.get(..self.taken).unwrap_or_default();
        let mut from = 0;
        while let Some((i, end)) = KeyOrder::run(held, from) {
            let first = held.get(from).map(|k| k.hash);
            from = end;
            if let (Some(slot), Some(first)) = (self.guard.slots.get(i), first) {
                slot.state.lock().mark_deleting(first);
            }
        }
    }
}

impl Drop for WriteGuard<'_> {
    fn drop(&mut self) {
        let held = self.keys.get(..self.taken).unwrap_or_default();
        let mut from = 0;
        while let Some((i, end)) = KeyOrder::run(held, from) {
            let first = held.get(from).map(|k| k.hash);
            from = end;
            if let Some(slot) = self.guard.slots.get(i) {
                let mut s = slot.state.lock();
                s.writers = s.writers.saturating_sub(1);
                s.version = s.version.wrapping_add(1);
                if self.owner {
                    if let Some(first) = first {
                        s.release(first);
                    }
                    if s.waiting > 0 {
                        drop(s);
                        slot.free.notify_all();
                        slot.free_async.notify_waiters();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "guard_tests.rs"]
mod tests;
