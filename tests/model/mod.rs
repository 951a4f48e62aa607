//! The model the model tests share (`local_tiers_model.rs`, `levels_model.rs`,
//! `levels_outage_model.rs`): what each key holds, the keys a run picks from, and a runner that
//! makes seeded random calls on a manager and checks each answer against the model (a cache may
//! forget, never lie).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use uno_cache::{CacheManager, ManualClock};

/// Seconds every entry's TTL is capped at, in L1 and in L2 alike (and the TTL of a set without
/// one): with the same cap, a value backfilled from L2 can live no longer than the model says.
pub const LOCAL_TTL_S: u64 = 600;
pub const MEMORY_ITEMS: u64 = 16;

/// The configuration the models over Redis share: a small file store with the memory tier in
/// front of a Redis L2 at `redis`, L2 failures hidden, TTLs capped at [`LOCAL_TTL_S`] in both
/// levels. `distributed` adds lines to `[distributed]`; `sections` adds whole sections.
pub fn over_redis_toml(
    dir: &std::path::Path,
    redis: &str,
    key_prefix: &str,
    distributed: &str,
    sections: &str,
) -> String {
    format!(
        r#"
        fallback_on_error = true
        [local]
        type = "file"
        path = "{}"
        max_size = 1
        ttl = {LOCAL_TTL_S}
        memory_items = {MEMORY_ITEMS}
        memory_max_mb = 1
        durability = "none"
        [distributed]
        enabled = true
        type = "redis"
        hosts = ["{redis}"]
        ttl = {LOCAL_TTL_S}
        key_prefix = "{key_prefix}"
        {distributed}
        {sections}
        "#,
        dir.display(),
    )
}

/// The typed value: it names its key and the write that made it, so a wrong answer says whose
/// value it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub write: u64,
    pub key: String,
    pub blob: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Typed(Item),
    Raw(Vec<u8>),
}

impl Val {
    /// The write that made the value (raw values start with it in decimal).
    pub fn origin(&self) -> String {
        match self {
            Val::Typed(item) => format!("write {} of {:?}", item.write, item.key),
            Val::Raw(bytes) => {
                let head: Vec<u8> = bytes.iter().take(40).copied().collect();
                format!("raw {:?}", String::from_utf8_lossy(&head))
            }
        }
    }
}

/// What the cache may answer for each key.
#[derive(Default)]
pub struct Model {
    /// key → (value, expiry in Unix ms). An expired entry stays until it is deleted, so that the
    /// counts of deletes can be bounded.
    pub map: BTreeMap<String, (Val, u64)>,
    /// Keys whose L2 copy a `FLUSHALL` (or a restart of a Redis without persistence) dropped,
    /// not written since.
    pub flushed: HashSet<String>,
    /// Flushed keys a restart came after: L1's copy was restored suspect, and revalidation finds
    /// nothing in L2, so the product promises a miss until the key is written again.
    pub gone: HashSet<String>,
}

impl Model {
    pub fn live(&self, key: &str, now: u64) -> Option<&Val> {
        match self.map.get(key) {
            Some((v, exp)) if now < *exp => Some(v),
            _ => None,
        }
    }

    /// A write of `key` (to both levels): L2 holds it again.
    pub fn wrote(&mut self, key: &str) {
        self.flushed.remove(key);
        self.gone.remove(key);
    }

    pub fn check(&self, key: &str, now: u64, got: Option<&Val>) -> Result<(), String> {
        let Some(got) = got else { return Ok(()) };
        if self.gone.contains(key) {
            return Err(format!(
                "{key:?} answered {}: L1's copy came back from a restart, but L2 lost it (a \
                 FLUSHALL, or a restart of Redis without persistence) before the restart \
                 (revalidation must drop it)",
                got.origin()
            ));
        }
        match self.live(key, now) {
            Some(want) if want == got => Ok(()),
            Some(want) => Err(format!(
                "{key:?} answered {}, but holds {}",
                got.origin(),
                want.origin()
            )),
            None => Err(match self.map.get(key) {
                Some((v, exp)) if v == got => {
                    format!("{key:?} answered its value expired at {exp} (now {now})")
                }
                _ => format!("{key:?} answered {}, but holds nothing", got.origin()),
            }),
        }
    }
}

/// The TTL a set asks for: none (the cap), sub-millisecond and fractional ones, a few seconds,
/// minutes, or more than the cap.
pub fn random_ttl(rng: &mut StdRng) -> Option<Duration> {
    match rng.random_range(0..20) {
        0..=7 => None,
        8 => Some(Duration::from_micros(rng.random_range(1..5000))),
        9..=13 => Some(Duration::from_millis(rng.random_range(1..4000))),
        14..=17 => Some(Duration::from_secs(rng.random_range(5..120))),
        _ => Some(Duration::from_secs(rng.random_range(500..2000))),
    }
}

/// The moment from which a value written at `now` must no longer be read: its TTL capped at the
/// local one, in whole milliseconds rounded up (a cache may drop a value earlier, never later).
pub fn expiry(now: u64, ttl: Option<Duration>) -> u64 {
    let cap = LOCAL_TTL_S * 1000;
    let ms = ttl.map_or(cap, |t| {
        u64::try_from(t.as_nanos().div_ceil(1_000_000))
            .unwrap()
            .clamp(1, cap)
    });
    now + ms
}

/// Random bytes of a random length (most values small, some of a few KiB, a tenth tens of KiB),
/// `scale` times over.
pub fn blob(rng: &mut StdRng, scale: usize) -> Vec<u8> {
    let len = match rng.random_range(0..10) {
        0..=4 => rng.random_range(0..512),
        5..=8 => rng.random_range(1024..8192),
        _ => rng.random_range(16 * 1024..40 * 1024),
    };
    let mut out = vec![0u8; len];
    rng.fill(&mut out[..]);
    // Repeated rather than drawn: random bytes cost most of a debug run's time.
    out.repeat(scale)
}

/// Keys `{prefix}{group}/t{n}` hold typed values, `{prefix}{group}/r{n}` raw ones.
pub struct Keys {
    pub prefix: String,
    pub groups: u32,
    pub per_kind: u32,
}

impl Keys {
    pub fn pick(&self, rng: &mut StdRng, typed: bool) -> String {
        let g = rng.random_range(0..self.groups);
        let n = rng.random_range(0..self.per_kind);
        let kind = if typed { 't' } else { 'r' };
        format!("{}g{g}/{kind}{n:02}", self.prefix)
    }

    pub fn all(&self) -> Vec<(String, bool)> {
        let mut out = Vec::new();
        for g in 0..self.groups {
            for n in 0..self.per_kind {
                out.push((format!("{}g{g}/t{n:02}", self.prefix), true));
                out.push((format!("{}g{g}/r{n:02}", self.prefix), false));
            }
        }
        out
    }

    pub fn random_prefix(&self, rng: &mut StdRng) -> String {
        let g = rng.random_range(0..self.groups);
        match rng.random_range(0..8) {
            0 => format!("{}g{g}/", self.prefix),
            1 => format!("{}g{g}/t", self.prefix),
            2 => format!("{}g{g}/r{}", self.prefix, rng.random_range(0..3)),
            3..=6 => format!(
                "{}g{g}/r{}{}",
                self.prefix,
                rng.random_range(0..4),
                rng.random_range(0..10)
            ),
            _ => format!("{}g{g}/t0", self.prefix),
        }
    }
}

/// One thread's operations against a manager, checked against its own model; it moves the clock
/// only when `advances`.
pub struct Runner<'a> {
    pub rng: StdRng,
    pub seed: u64,
    pub keys: Keys,
    pub model: Model,
    pub writes: u64,
    pub clock: &'a ManualClock,
    pub advances: bool,
    pub history: VecDeque<String>,
    pub index: usize,
    /// A level below the local ones (see [`Runner::over_l2`]).
    pub with_l2: bool,
    /// How many times larger the values it writes are than the usual mix (1).
    pub value_scale: usize,
    /// That level is down: no prefix invalidation is made (its L2 scan fails, and the call with
    /// it, so the model could not say what L2 still holds), a read instead.
    pub l2_down: bool,
    /// Called before the clock moves, for a manager whose threads read the clock twice for one
    /// write (a write-behind batch, a replay: expiry to TTL, then TTL to L2's expiry), which a
    /// jump between the two reads would extend.
    pub before_clock_moves: Option<fn(&CacheManager)>,
}

impl<'a> Runner<'a> {
    /// A runner seeded with `rng_seed` (`seed` is the one a failure prints) on `keys`.
    pub fn new(seed: u64, rng_seed: u64, keys: Keys, clock: &'a ManualClock, advances: bool) -> Self {
        Runner {
            rng: StdRng::seed_from_u64(rng_seed),
            seed,
            keys,
            model: Model::default(),
            writes: 0,
            clock,
            advances,
            history: VecDeque::new(),
            index: 0,
            with_l2: false,
            value_scale: 1,
            l2_down: false,
            before_clock_moves: None,
        }
    }

    /// For a manager with an L2: `invalidate_local` leaves the value there (a read may bring it
    /// back).
    pub fn over_l2(mut self) -> Self {
        self.with_l2 = true;
        self
    }

    pub fn fail(&self, what: String) -> ! {
        let recent: Vec<&String> = self.history.iter().collect();
        panic!(
            "UNO_MODEL_SEED={} op {}: {what}\nlast operations (oldest first):\n{recent:#?}",
            self.seed, self.index
        )
    }

    pub fn log(&mut self, op: String) {
        if self.history.len() == 40 {
            self.history.pop_front();
        }
        self.history
            .push_back(format!("#{} t={} {op}", self.index, self.clock_now()));
    }

    pub fn clock_now(&self) -> u64 {
        use uno_cache::Clock;
        self.clock.now_ms()
    }

    pub fn new_val(&mut self, key: &str, typed: bool) -> Val {
        self.writes += 1;
        let write = self.writes;
        let blob = blob(&mut self.rng, self.value_scale);
        if typed {
            Val::Typed(Item {
                write,
                key: key.to_owned(),
                blob,
            })
        } else {
            let mut bytes = format!("{write}|{key}|").into_bytes();
            bytes.extend_from_slice(&blob);
            Val::Raw(bytes)
        }
    }

    /// Checks a read that began at `began` (the cache's clock read no earlier).
    pub fn check(&self, key: &str, began: u64, got: Option<&Val>) {
        if let Err(e) = self.model.check(key, began, got) {
            self.fail(e)
        }
    }

    /// The entries a delete of `keys` may count: those the model still has, expired or not.
    pub fn held(&self, keys: &[String]) -> u64 {
        let mut seen: Vec<&String> = keys.iter().filter(|k| self.model.map.contains_key(*k)).collect();
        seen.sort();
        seen.dedup();
        seen.len() as u64
    }

    pub fn batch(&mut self, typed: bool) -> Vec<String> {
        let n = self.rng.random_range(1..8);
        (0..n).map(|_| self.keys.pick(&mut self.rng, typed)).collect()
    }

    /// Invalidates a random prefix of this runner's keys.
    pub fn invalidate_prefix(&mut self, cache: &CacheManager) {
        let prefix = self.keys.random_prefix(&mut self.rng);
        self.log(format!("invalidate_prefix {prefix}"));
        let n = cache
            .invalidate_prefix(&prefix)
            .unwrap_or_else(|e| self.fail(format!("invalidate_prefix {prefix}: {e}")));
        let under: Vec<String> = self
            .model
            .map
            .keys()
            .filter(|k| k.starts_with(&prefix))
            .cloned()
            .collect();
        // A key in both levels counts once.
        if n > under.len() as u64 {
            self.fail(format!(
                "invalidate_prefix {prefix:?} counted {n} keys, the model held {}",
                under.len()
            ));
        }
        for k in under {
            self.model.map.remove(&k);
        }
    }

    /// Moves the clock to the last millisecond of a live entry that expires within ten seconds,
    /// or to its expiry, and reads it: the edges a random clock seldom lands on.
    pub fn read_at_an_expiry(&mut self, cache: &CacheManager) {
        let now = self.clock_now();
        let soon: Vec<(String, u64)> = self
            .model
            .map
            .iter()
            .filter(|(_, (_, exp))| *exp > now && *exp - now < 10_000)
            .map(|(k, (_, exp))| (k.clone(), *exp))
            .collect();
        if soon.is_empty() {
            return;
        }
        let (key, exp) = soon[self.rng.random_range(0..soon.len())].clone();
        let at = exp - u64::from(self.rng.random_bool(0.5));
        self.log(format!("clock to {at} (expiry of {key} at {exp}), then read it"));
        if let Some(quiesce) = self.before_clock_moves {
            quiesce(cache);
        }
        self.clock.set(at);
        let got = if key.contains("/t") {
            cache.get::<Item>(&key).map(|v| v.map(Val::Typed))
        } else {
            cache.get_raw(&key).map(|v| v.map(Val::Raw))
        };
        let got = got.unwrap_or_else(|e| self.fail(format!("get {key}: {e}")));
        self.check(&key, at, got.as_ref());
    }

    /// One random operation.
    ///
    /// Where another thread moves the clock, a read is checked at the time it began (a value
    /// expired by then must be gone), and a write's expiry counts from the time it returned (its
    /// value may live until then).
    pub fn step(&mut self, cache: &CacheManager) {
        let typed = self.rng.random_bool(0.5);
        let began = self.clock_now();
        let mut roll = self.rng.random_range(0..100);
        // The clock's share of the operations are writes when this runner does not move it.
        if (88..=98).contains(&roll) && (!self.advances || roll > 93) {
            roll = 25;
        }
        if (79..=80).contains(&roll) && self.l2_down {
            roll = 0;
        }
        match roll {
            0..=24 => {
                let key = self.keys.pick(&mut self.rng, typed);
                let got = if typed {
                    let how = self.rng.random_range(0..2);
                    self.log(format!("get{} {key}", if how == 0 { "" } else { "_arc" }));
                    let r = if how == 0 {
                        cache.get::<Item>(&key)
                    } else {
                        cache.get_arc::<Item>(&key).map(|a| a.map(|a| (*a).clone()))
                    };
                    r.unwrap_or_else(|e| self.fail(format!("get {key}: {e}")))
                        .map(Val::Typed)
                } else {
                    self.log(format!("get_raw {key}"));
                    cache
                        .get_raw(&key)
                        .unwrap_or_else(|e| self.fail(format!("get_raw {key}: {e}")))
                        .map(Val::Raw)
                };
                self.check(&key, began, got.as_ref());
            }
            25..=49 => {
                let key = self.keys.pick(&mut self.rng, typed);
                let ttl = random_ttl(&mut self.rng);
                let val = self.new_val(&key, typed);
                self.log(format!("set {key} ttl {ttl:?} = {}", val.origin()));
                let r = match &val {
                    Val::Typed(item) => cache.set(&key, item, ttl),
                    Val::Raw(bytes) => cache.set_raw(&key, bytes, ttl),
                };
                r.unwrap_or_else(|e| self.fail(format!("set {key}: {e}")));
                self.model.wrote(&key);
                self.model.map.insert(key, (val, expiry(self.clock_now(), ttl)));
            }
            50..=57 => {
                let key = self.keys.pick(&mut self.rng, typed);
                let local = self.rng.random_bool(0.3);
                self.log(format!(
                    "{} {key}",
                    if local { "invalidate_local" } else { "delete" }
                ));
                let r = if local {
                    cache.invalidate_local(&key)
                } else {
                    cache.delete(&key)
                };
                let removed = r.unwrap_or_else(|e| self.fail(format!("delete {key}: {e}")));
                if removed && !self.model.map.contains_key(&key) {
                    self.fail(format!("delete of {key:?} removed a value, but it held none"));
                }
                // L2 keeps the value `invalidate_local` leaves: a read may bring it back.
                if !(local && self.with_l2) {
                    self.model.map.remove(&key);
                }
            }
            58..=65 => {
                let keys = self.batch(typed);
                self.log(format!("multi_get{} {keys:?}", if typed { "" } else { "_raw" }));
                let got: HashMap<String, Val> = if typed {
                    let r = cache.multi_get::<Item>(&keys);
                    let r = r.unwrap_or_else(|e| self.fail(format!("multi_get: {e}")));
                    r.into_iter().map(|(k, v)| (k, Val::Typed(v))).collect()
                } else {
                    let r = cache.multi_get_raw(&keys);
                    let r = r.unwrap_or_else(|e| self.fail(format!("multi_get_raw: {e}")));
                    r.into_iter().map(|(k, v)| (k, Val::Raw(v))).collect()
                };
                for (k, v) in &got {
                    if !keys.contains(k) {
                        self.fail(format!("multi_get answered {k:?}, which it was not asked"));
                    }
                    self.check(k, began, Some(v));
                }
            }
            66..=73 => {
                let keys = self.batch(typed);
                let ttl = random_ttl(&mut self.rng);
                let vals: Vec<(String, Val)> =
                    keys.iter().map(|k| (k.clone(), self.new_val(k, typed))).collect();
                let names: Vec<String> = vals.iter().map(|(k, v)| format!("{k}={}", v.origin())).collect();
                self.log(format!("multi_set ttl {ttl:?} {names:?}"));
                let r = if typed {
                    let items: Vec<(&str, &Item)> = vals
                        .iter()
                        .map(|(k, v)| match v {
                            Val::Typed(item) => (k.as_str(), item),
                            Val::Raw(_) => unreachable!(),
                        })
                        .collect();
                    cache.multi_set(items, ttl)
                } else {
                    let items: Vec<(&str, &[u8])> = vals
                        .iter()
                        .map(|(k, v)| match v {
                            Val::Raw(bytes) => (k.as_str(), bytes.as_slice()),
                            Val::Typed(_) => unreachable!(),
                        })
                        .collect();
                    cache.multi_set_raw(&items, ttl)
                };
                r.unwrap_or_else(|e| self.fail(format!("multi_set: {e}")));
                // A key listed twice keeps its last value.
                for (k, v) in vals {
                    self.model.wrote(&k);
                    self.model.map.insert(k, (v, expiry(self.clock_now(), ttl)));
                }
            }
            74..=78 => {
                let keys = self.batch(typed);
                self.log(format!("multi_delete {keys:?}"));
                let n = cache
                    .multi_delete(&keys)
                    .unwrap_or_else(|e| self.fail(format!("multi_delete: {e}")));
                let held = self.held(&keys);
                if n > held {
                    self.fail(format!(
                        "multi_delete counted {n} keys removed, the model held {held}"
                    ));
                }
                for k in &keys {
                    self.model.map.remove(k);
                }
            }
            79..=80 => self.invalidate_prefix(cache),
            81..=87 => {
                let key = self.keys.pick(&mut self.rng, true);
                let ttl = random_ttl(&mut self.rng);
                let fresh = self.new_val(&key, true);
                let Val::Typed(item) = fresh else { unreachable!() };
                self.log(format!(
                    "get_or_set_with {key} ttl {ttl:?} (loader: write {})",
                    item.write
                ));
                let mut loaded = false;
                let got = cache
                    .get_or_set_with::<Item, uno_cache::Error, _>(&key, ttl, || {
                        loaded = true;
                        Ok(item.clone())
                    })
                    .unwrap_or_else(|e| self.fail(format!("get_or_set_with {key}: {e}")));
                if loaded {
                    if got != item {
                        self.fail(format!(
                            "get_or_set_with {key:?} ran its loader and answered another value"
                        ));
                    }
                    self.model.wrote(&key);
                    self.model
                        .map
                        .insert(key, (Val::Typed(item), expiry(self.clock_now(), ttl)));
                } else if self.model.live(&key, began) != Some(&Val::Typed(got.clone()))
                    || self.model.gone.contains(&key)
                {
                    self.check(&key, began, Some(&Val::Typed(got)));
                    self.fail(format!(
                        "get_or_set_with {key:?} answered a cached value without a live one"
                    ));
                }
            }
            88..=90 => self.read_at_an_expiry(cache),
            91..=98 => {
                let by = match self.rng.random_range(0..100) {
                    0..=79 => self.rng.random_range(0..1500),
                    80..=98 => self.rng.random_range(1000..10_000),
                    _ => self.rng.random_range(60_000..700_000),
                };
                self.log(format!("advance clock {by} ms"));
                if let Some(quiesce) = self.before_clock_moves {
                    quiesce(cache);
                }
                self.clock.advance(Duration::from_millis(by));
            }
            _ => {
                // A read of every key: what the random reads may have missed.
                self.log("read every key".to_owned());
                for (key, typed) in self.keys.all() {
                    let got = if typed {
                        cache.get::<Item>(&key).map(|v| v.map(Val::Typed))
                    } else {
                        cache.get_raw(&key).map(|v| v.map(Val::Raw))
                    };
                    let got = got.unwrap_or_else(|e| self.fail(format!("get {key}: {e}")));
                    self.check(&key, began, got.as_ref());
                }
            }
        }
    }
}

pub fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v:?} is no number")))
}

/// Fixed seeds, or `UNO_MODEL_SEED` alone.
pub fn seeds(fixed: &[u64]) -> Vec<u64> {
    match env_u64("UNO_MODEL_SEED") {
        Some(seed) => vec![seed],
        None => fixed.to_vec(),
    }
}
