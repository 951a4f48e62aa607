//! [`MemcachedStore`]: the [`Storage`] impl. It builds one [call](Call) per operation from the
//! [commands](super::commands) and hands it to either executor in [`conn`](super::conn).

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use super::super::nodes::{entries_or_partial, part_grace, Node};
use super::super::runtime::{deadline_after, IoRuntime};
use super::super::{ceil_ms, check_key, effective_ttl, envelope, open_envelope};
use super::commands::{Admin, Command, Delete, Get, Set, SetItem, Stats, Written, MAX_BATCH};
use super::conn::{self, Host, Ran};
use super::doubt::Doubts;
use super::options::{exptime, parse_host, value_limit, MemcachedOptions};
use super::routing::Router;
use super::{spread, startup};

mod outcomes;
mod rejoin;
use crate::clock::{Clock, SystemClock};
use crate::error::{key_for_error, Error, Result};
use crate::storage::{BoxFuture, DistributedStorage, Entry, Storage, StorageCounters, StorageSize};
pub(super) use outcomes::sum_sizes;
use outcomes::{cleared, everywhere_result, removed, written};
use rejoin::{ask_item_limit, ask_item_limit_async, judged, rejoined};

const LEVEL: &str = "memcached";

/// Memcached (one or more hosts) as a cache level.
///
/// - **Sharding** is ours: rendezvous hashing of the mapped key's FNV-1a 64 over the hosts'
///   names (`host:port`; fixed and documented in `storage-format.md`), so every process and
///   every build that names the same hosts agrees on where a key lives, in whatever order it
///   lists them, and adding or removing a host moves only ~1/n of the keys.
/// - **Keys** memcached cannot take (spaces, control characters, non-ASCII, over 250 bytes) are
///   mapped without collisions; see [`map_key`](super::map_key).
/// - **TTLs** are whole seconds for memcached, which reads `0` as "never" and anything over 30
///   days as an absolute Unix time. We send `ceil(ttl) + 1` seconds (never 0; the extra second
///   covers memcached's clock, which ticks in whole seconds and may otherwise drop an item up to
///   a second early), and an absolute time (by the system clock, as memcached reads it on its
///   own) for TTLs over 30 days. The exact expiry, to the
///   millisecond, is in the [envelope](super::super::envelope), and `get` honours it.
/// - **Values** larger than the item limit (`max_item_size`, memcached's `-I`, 1 MiB by default,
///   less the key, the envelope and memcached's per-item header) are refused with
///   [`Error::ValueTooLarge`] before anything is sent. An item a server refuses itself, as too
///   large (its `-I` is below `max_item_size`) or for want of memory ([`Error::ItemRefused`]: a
///   server run with `-M` refuses values rather than evicting), fails alone: a batch's other
///   items are stored, and the call fails with [`Error::PartialBatch`] naming the refused ones
///   (in `refused`, apart from the items of a host that was not reached), all of them if it
///   refused them all. A refusal is never held against the server's circuit breaker: it
///   answered. Memcached drops the key's previous value when it refuses a set, so a refused key
///   reads as a miss on its server, never as an older value; a too-large error gives that
///   server's limit from the `item_size_max` it reported at connect or, a host down then or
///   since, when its breaker's probe found it back (see `store::rejoin`).
/// - **Batches** (`get_many`, `set_many`, `set_each`, `delete_many`) are pipelined with the binary
///   protocol's quiet commands: one round trip per host per 1 024 keys, the hosts' round trips
///   at the same time (a batch costs the round trips of its busiest host, not their sum).
/// - **`size`** sums `curr_items` and `bytes` from `stats` across hosts. Memcached has no way to
///   count by prefix, so this counts every item on the servers, whatever its prefix, and it
///   still counts items that expired or were flushed until memcached reclaims them lazily.
/// - **`clear`** runs `flush_all` on every host only when the store has no prefix (the servers
///   then belong to it). With a prefix it is refused with [`Error::Config`]: memcached cannot
///   find keys by prefix, and flushing would wipe other prefixes' entries. A host that does not
///   flush (down, or run with `-F`) fails the call, whose error names the hosts flushed and
///   those not, each with why, and says to run `clear` again once they take it.
///
/// Blocking calls run on the caller's thread (a batch that spans several hosts sends to each
/// before it reads from any, then reads their replies together, so that each host has the whole
/// timeout and a host that does not answer holds up no other's reply; one with over 1 024 keys
/// on some host, or with a host that has no idle connection, runs each host on a thread of its
/// own, so that the hosts' later round trips and connects overlap too: a connect to a host gone
/// whose address drops packets hangs for the whole deadline); async calls run on the store's one I/O thread (`uno-cache-memcached`) and
/// never block the caller's executor. Either way a host's breaker counts only its own failures.
/// Both speak memcached's binary protocol on connections of their own, kept per host and never
/// shared while a call is on them. A connection on which a `set` ran out of the deadline (or
/// whose async caller stopped waiting) is never reused, and the set may still run after a newer
/// write of its key: it is in doubt until that connection answers a later command or fails, and
/// then the key is deleted if it holds a value written in doubt (see
/// [`writes_in_doubt`](Self::writes_in_doubt)).
///
/// ```no_run
/// use std::time::Duration;
/// use uno_cache::Storage;
/// use uno_cache::distributed::{MemcachedOptions, MemcachedStore};
///
/// let mc = MemcachedStore::connect(MemcachedOptions::new("127.0.0.1:11211").prefix("app:"))?;
/// mc.set("a key with spaces", b"fine", Some(Duration::from_secs(30)))?;
/// assert_eq!(mc.get("a key with spaces")?.map(|e| e.value), Some(b"fine".to_vec()));
/// # Ok::<(), uno_cache::Error>(())
/// ```
pub struct MemcachedStore {
    // Field order is drop order: connections before the runtime their async streams belong to.
    hosts: Vec<Arc<Host>>,
    /// One breaker per host (same order), with [`MemcachedOptions::node_breakers`].
    nodes: Option<Vec<Arc<Node>>>,
    router: Router,
    timeout: Duration,
    admin_timeout: Duration,
    default_ttl: Option<Duration>,
    max_item_size: usize,
    clock: Arc<dyn Clock>,
    /// `set`s that may still land late, and their correction.
    doubts: Doubts,
    rt: IoRuntime,
}

impl std::fmt::Debug for MemcachedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemcachedStore")
            .field("hosts", &self.hosts())
            .field("prefix", &self.router.prefix())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The commands of one operation for one host, and which of the caller's items they carry.
struct Part<C> {
    host: Arc<Host>,
    /// The host's breaker, when the store keeps one per host.
    node: Option<Arc<Node>>,
    commands: Vec<C>,
    /// The caller's indices, in the order the commands carry them (empty for `everywhere`).
    members: Vec<usize>,
}

/// One operation: the commands for each host it touches, the same for both executors.
struct Call<C> {
    op: &'static str,
    timeout: Duration,
    /// Where a `set` given up unanswered goes.
    doubts: Doubts,
    /// Items in the caller's batch.
    total: usize,
    parts: Vec<Part<C>>,
}

/// What each host of a call answered: (the caller's indices it carried, what its commands gave).
struct Answers<O> {
    op: &'static str,
    total: usize,
    parts: Vec<(Vec<usize>, Ran<O>)>,
}

impl<C: Command> Call<C> {
    /// Runs on the caller's thread within one deadline: the first command of every host is
    /// sent before any reply is read, so the hosts work at once and each has the whole
    /// timeout, as on the async path. Asked one after another, a slow host that answered late
    /// left the next only what was left, whose timeout then failed its keys and was held
    /// against its breaker. The replies are read together ([`conn::read_first_replies`]): read
    /// one after another, a reply larger than the sockets hold waited behind a hung host until
    /// the deadline, and failed too. A host that could not even be sent its command before the
    /// deadline (the time went to the others) is not held to account.
    ///
    /// Each host's breaker is asked first (a host it skips is sent nothing). A call with more
    /// than one command for some host (over [`MAX_BATCH`] of its keys), or with a host that has
    /// no idle connection, runs each host on a thread of its own ([`run_spread`](Self::run_spread)):
    /// a connect to a host gone whose address drops packets takes the whole deadline, and the
    /// hosts asked after it from this thread found the deadline gone and failed their keys too.
    fn run(self) -> Answers<C::Output> {
        let admitted: Vec<Result<bool>> = self
            .parts
            .iter()
            .map(|part| part.node.as_ref().map_or(Ok(false), |node| node.admit()))
            .collect();
        let asked: Vec<(&Part<C>, bool)> = self
            .parts
            .iter()
            .zip(&admitted)
            .filter_map(|(part, admitted)| admitted.as_ref().ok().map(|&probe| (part, probe)))
            .collect();
        let spread = asked.len() > 1
            && asked
                .iter()
                .any(|(part, _)| part.commands.len() > 1 || !part.host.has_idle());
        let ran = if spread {
            self.run_spread(&asked)
        } else {
            self.run_here(&asked)
        };
        drop(asked);
        let (op, mut ran) = (self.op, ran.into_iter());
        let parts = self
            .parts
            .into_iter()
            .zip(admitted)
            .map(|(part, admitted)| {
                let ran = match admitted {
                    Err(skipped) => Ran::failed(skipped),
                    // Never `None` (one answer per host asked, in order); failed if it were.
                    Ok(_) => ran.next().unwrap_or_else(|| {
                        Ran::failed(Error::Backend {
                            level: LEVEL,
                            op,
                            reason: format!("{}: its part of the call was not run", part.host.spec.display),
                        })
                    }),
                };
                (part.members, ran)
            })
            .collect();
        Answers {
            op,
            total: self.total,
            parts,
        }
    }

    /// [`run`](Self::run)'s hosts `asked` (each with whether it is its breaker's probe) from
    /// the caller's thread: each sent its first command, then each read.
    fn run_here(&self, asked: &[(&Part<C>, bool)]) -> Vec<Ran<C::Output>> {
        let deadline = deadline_after(self.timeout);
        let mut started: Vec<_> = asked
            .iter()
            .map(|&(part, probe)| {
                let late = Instant::now() >= deadline;
                (probe, late, self.start_here(part, deadline))
            })
            .collect();
        let firsts = asked.iter().map(|(part, _)| part.commands.first());
        let sent = firsts
            .zip(&mut started)
            .filter_map(|(c, (_, _, s))| Some((c?, s.as_mut().ok()?)));
        conn::read_first_replies(sent, deadline);
        asked
            .iter()
            .zip(started)
            .map(|(&(part, _), (probe, late, started))| {
                self.finish_here(part, (probe, late), started, deadline)
            })
            .collect()
    }

    /// [`run`](Self::run)'s hosts `asked` each on a thread of its own (see [`spread`]), within
    /// one deadline: a host's connect, and its later commands, each sent once the one before it
    /// was answered, run alongside the other hosts' rather than before or after them, and a
    /// host that does not answer fails only its own keys, as on the async path.
    fn run_spread(&self, asked: &[(&Part<C>, bool)]) -> Vec<Ran<C::Output>> {
        let deadline = deadline_after(self.timeout);
        spread::each_at_once(asked, |&(part, probe)| {
            let late = Instant::now() >= deadline;
            let started = self.start_here(part, deadline);
            self.finish_here(part, (probe, late), started, deadline)
        })
    }

    /// A host's part on the caller's thread: a connection taken (or made) and its first command
    /// sent, its reply not read yet.
    fn start_here(&self, part: &Part<C>, deadline: Instant) -> Result<conn::Started<C::State>> {
        let hand_over = |w: &[Written<'_>], u| self.doubts.begin(&part.host, w, u);
        part.host
            .start(self.op, self.timeout, deadline, part.commands.first(), &hand_over)
    }

    /// The rest of a host's part on the caller's thread, once its first command is `started`:
    /// its replies read (and its later commands sent), what they gave judged by its breaker
    /// (`probe`: whether the part is the probe; `late`: whether the deadline had passed before
    /// the host was asked, see [`judged`]), and the item limit asked again of a host its probe
    /// found back.
    fn finish_here(
        &self,
        part: &Part<C>,
        (probe, late): (bool, bool),
        started: Result<conn::Started<C::State>>,
        deadline: Instant,
    ) -> Ran<C::Output> {
        let hand_over = |w: &[Written<'_>], u| self.doubts.begin(&part.host, w, u);
        let ran = part.host.finish(
            self.op,
            self.timeout,
            deadline,
            &part.commands,
            started,
            &hand_over,
        );
        let ran = judged(part.node.as_deref(), probe, ran, late);
        if rejoined(probe, &ran) {
            ask_item_limit(&part.host, deadline);
        }
        ran
    }

    /// Runs on the I/O thread, hosts in parallel, each within the deadline (a hung host times
    /// out alone; the others' answers stand). A call that runs out of time waiting for a free
    /// connection slot of its host (more than `workers` at once) times out for the caller but is
    /// not held against the host's breaker.
    fn run_async(self, rt: &IoRuntime) -> BoxFuture<'static, Result<Answers<C::Output>>> {
        let Call {
            op,
            timeout,
            doubts,
            total,
            parts,
        } = self;
        Box::pin(
            rt.run(op, timeout.saturating_add(part_grace(timeout)), async move {
                // From the first poll, as `run`'s own.
                let deadline = deadline_after(timeout);
                let doubts = &doubts;
                let results = join_all(parts.iter().map(|part| async move {
                    let probe = match part.node.as_ref().map(|node| node.admit()) {
                        Some(Err(e)) => return Ran::failed(e),
                        Some(Ok(probe)) => probe,
                        None => false,
                    };
                    let timed_out = || Error::Timeout {
                        level: LEVEL,
                        op,
                        server: part.host.spec.display.clone(),
                        after: timeout,
                    };
                    // The wait for one of the store's own `workers` slots is not the host's:
                    // held against it, a burst of calls opened a healthy host's breaker.
                    let slot = tokio::time::timeout_at(deadline.into(), part.host.async_slot(op))
                        .await
                        .unwrap_or_else(|_| Err(timed_out()));
                    let slot = match (slot, &part.node) {
                        (Ok(slot), _) => slot,
                        (Err(e), Some(node)) => return Ran::failed(node.not_sent(probe, e)),
                        (Err(e), None) => return Ran::failed(e),
                    };
                    let hand_over = |w: &[Written<'_>], u| doubts.begin(&part.host, w, u);
                    let ran = part
                        .host
                        .run_on_slot(op, timeout, deadline, &slot, (&part.commands, &hand_over))
                        .await;
                    let ran = judged(part.node.as_deref(), probe, ran, false);
                    if rejoined(probe, &ran) {
                        ask_item_limit_async(&part.host, deadline, &slot).await;
                    }
                    ran
                }))
                .await;
                let parts = parts
                    .into_iter()
                    .zip(results)
                    .map(|(part, result)| (part.members, result))
                    .collect();
                Ok(Answers { op, total, parts })
            }),
        )
    }
}

impl MemcachedStore {
    /// Checks the options and that the hosts answer (`version`) within `connect_timeout`, and
    /// asks each for its item limit (`stats settings`: `item_size_max`), which the error of a
    /// value it refuses reports. Works from any thread, inside a tokio runtime or not.
    ///
    /// With [`node_breakers`](MemcachedOptions::node_breakers), hosts that do not answer start
    /// with their breaker open (their keys fail fast until a probe reaches them) as long as one
    /// host answers; without, every host must answer. A host that fails the check is asked
    /// `version` in memcached's text protocol too (within half a second at most, so a host that
    /// is down fails a little after `connect_timeout`), to tell a memcached that speaks only that
    /// protocol from one that is down.
    ///
    /// # Errors
    /// [`Error::Config`] for a bad host or option, or a server listed twice;
    /// [`Error::Misconfigured`] naming a host that answers only memcached's text protocol
    /// (started with `-B ascii`) or wants authentication (SASL, `-S`, or an auth file, `-Y`),
    /// with or without breakers; [`Error::Backend`] (op `"connect"`)
    /// naming the host that cannot be reached or refuses the connection.
    pub fn connect(options: MemcachedOptions) -> Result<Self> {
        let (store, connect_timeout) = Self::prepare(options)?;
        let check = startup::check_hosts(store.hosts.clone(), connect_timeout);
        let answers = store
            .rt
            .block_on("connect", startup::deadline(connect_timeout), check)?;
        startup::admit_hosts(store.nodes.as_deref(), answers)?;
        Ok(store)
    }

    /// [`connect`](Self::connect) without blocking the caller's executor.
    ///
    /// # Errors
    /// As [`connect`](Self::connect).
    pub async fn connect_async(options: MemcachedOptions) -> Result<Self> {
        let (store, connect_timeout) = Self::prepare(options)?;
        let check = startup::check_hosts(store.hosts.clone(), connect_timeout);
        let answers = store
            .rt
            .run("connect", startup::deadline(connect_timeout), check)
            .await?;
        startup::admit_hosts(store.nodes.as_deref(), answers)?;
        Ok(store)
    }

    fn prepare(options: MemcachedOptions) -> Result<(Self, Duration)> {
        options.check()?;
        let hosts = options
            .hosts
            .iter()
            .enumerate()
            .map(|(i, raw)| Ok(Arc::new(Host::new(parse_host(i, raw)?, options.workers))))
            .collect::<Result<Vec<_>>>()?;
        // A server listed twice was two hosts to the stats (its items and bytes counted twice)
        // while the keys all went to one of them.
        for (i, host) in hosts.iter().enumerate() {
            if let Some(first) = hosts.iter().position(|h| h.spec.display == host.spec.display) {
                if first < i {
                    return Err(Error::Config {
                        field: format!("memcached.hosts[{i}]"),
                        reason: format!(
                            "{} is listed twice (also hosts[{first}]); list each server once",
                            host.spec.display
                        ),
                    });
                }
            }
        }
        let nodes = options.node_breakers.as_ref().map(|breakers| {
            hosts
                .iter()
                .map(|host| breakers.node(&host.spec.display))
                .collect()
        });
        let shown: Vec<&str> = hosts.iter().map(|h| h.spec.display.as_str()).collect();
        let rt = IoRuntime::start(LEVEL, &shown.join(", "))?;
        Ok((
            MemcachedStore {
                router: Router::new(
                    options.prefix.clone(),
                    hosts.iter().map(|h| h.spec.display.as_str()),
                ),
                hosts,
                nodes,
                timeout: options.timeout,
                admin_timeout: options.admin_timeout,
                default_ttl: options.default_ttl,
                max_item_size: options.max_item_size,
                clock: options.clock,
                doubts: Doubts::new(rt.handle(), options.timeout),
                rt,
            },
            options.connect_timeout,
        ))
    }

    /// The hosts, as `host:port`, comma-separated.
    #[must_use]
    pub fn hosts(&self) -> String {
        self.hosts
            .iter()
            .map(|h| h.spec.display.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        self.router.prefix()
    }

    /// Keys whose `set` went unanswered (it timed out, or its async caller stopped waiting) on
    /// a connection that may still run it, or whose correction has not been answered yet; 0 in
    /// steady operation. Once the connection can no longer run the write, a key that holds the
    /// value it wrote is deleted, so that an older value landing after a newer one is not left
    /// in memcached (a cache's miss, never a wrong value).
    pub fn writes_in_doubt(&self) -> usize {
        self.doubts.open()
    }

    /// The per-call deadline.
    #[must_use]
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The key memcached sees for `key` (prefix added, then [mapped](super::map_key)), and its
    /// host index.
    #[must_use]
    pub fn server_key(&self, key: &str) -> (String, usize) {
        self.router.server_key(key)
    }

    fn part<C>(&self, index: usize, commands: Vec<C>, members: Vec<usize>) -> Result<Part<C>> {
        let host = self.hosts.get(index).cloned().ok_or_else(|| Error::Backend {
            level: LEVEL,
            op: "route",
            reason: format!("no host #{index}"),
        })?;
        let node = self.nodes.as_ref().and_then(|nodes| nodes.get(index).cloned());
        Ok(Part {
            host,
            node,
            commands,
            members,
        })
    }

    /// Splits `items` by host (`key_of` gives each item's server key), then into commands of
    /// at most [`MAX_BATCH`] items each.
    fn by_host<T, C>(
        &self,
        op: &'static str,
        items: Vec<T>,
        key_of: impl Fn(&T) -> &str,
        command: impl Fn(Vec<T>) -> C,
    ) -> Result<Call<C>> {
        let total = items.len();
        let mapped: Vec<String> = items.iter().map(|item| key_of(item).to_owned()).collect();
        let mut slots: Vec<Option<T>> = items.into_iter().map(Some).collect();
        let mut parts = Vec::new();
        for (host, members) in self.router.plan(&mapped) {
            let mut commands = Vec::new();
            for chunk in members.chunks(MAX_BATCH) {
                let batch: Vec<T> = chunk
                    .iter()
                    .filter_map(|&i| slots.get_mut(i).and_then(Option::take))
                    .collect();
                commands.push(command(batch));
            }
            parts.push(self.part(host, commands, members)?);
        }
        Ok(Call {
            op,
            timeout: self.timeout,
            doubts: self.doubts.clone(),
            total,
            parts,
        })
    }

    fn get_call(&self, op: &'static str, keys: &[&str]) -> Result<Call<Get>> {
        self.keyed_call(op, keys, |keys, originals| Get { keys, originals })
    }

    /// A call of one command per batch of keys and host, built from the batch's server keys and
    /// the caller's keys (for errors); every key checked first.
    fn keyed_call<C: Command>(
        &self,
        op: &'static str,
        keys: &[&str],
        command: impl Fn(Vec<String>, Vec<String>) -> C,
    ) -> Result<Call<C>> {
        let mapped = keys
            .iter()
            .map(|key| {
                check_key(key)?;
                Ok((self.router.server_key(key).0, (*key).to_owned()))
            })
            .collect::<Result<Vec<_>>>()?;
        self.by_host(
            op,
            mapped,
            |(key, _)| key.as_str(),
            |batch| {
                let (keys, originals) = batch.into_iter().unzip();
                command(keys, originals)
            },
        )
    }

    /// Opens the envelopes of what a `get` call found, in the caller's order. Keys on hosts
    /// that were not reached, and keys whose value has no valid envelope, make an
    /// [`Error::PartialBatch`] that carries the others (or, if no key was read, the first
    /// failure itself).
    fn entries(&self, keys: &[&str], answers: Answers<Vec<Option<Vec<u8>>>>) -> Result<Vec<Option<Entry>>> {
        let op = answers.op;
        let split = answers.split()?;
        let now = self.clock.now_ms();
        let mut out: Vec<Option<Entry>> = vec![None; keys.len()];
        let (mut failed, mut cause) = (split.failed, split.cause);
        for (members, chunks) in split.served {
            for (&i, raw) in members.iter().zip(chunks.into_iter().flatten()) {
                let (Some(bytes), Some(slot)) = (raw, out.get_mut(i)) else {
                    continue;
                };
                let key = keys.get(i).copied().unwrap_or_default();
                match open_envelope(LEVEL, key, bytes, now) {
                    Ok(entry) => *slot = entry,
                    Err(e) => {
                        failed.push(i);
                        cause.get_or_insert(e);
                    }
                }
            }
        }
        entries_or_partial(LEVEL, op, out, failed, cause)
    }

    /// The server key of `key`, if a value of `len` bytes fits the item limit under it.
    fn checked_key(&self, key: &str, len: usize) -> Result<String> {
        check_key(key)?;
        let (mapped, _) = self.router.server_key(key);
        fits_item(self.max_item_size, key, &mapped, len)?;
        Ok(mapped)
    }

    /// Every item is checked before anything is sent, so a batch with one bad item sends none.
    fn set_call<'i>(
        &self,
        op: &'static str,
        items: impl Iterator<Item = (&'i str, &'i [u8], Option<Duration>)>,
    ) -> Result<Call<Set>> {
        let now = self.clock.now_ms();
        // memcached reads an expiry past 30 days as a Unix time on its own clock: the system's
        // is the one to count it from, not the store's (a clock behind it sent a time in 1970,
        // and memcached dropped the item at once). The envelope keeps the store's clock.
        let server_now = SystemClock.now_ms();
        let mut encoded = Vec::new();
        for (key, value, ttl) in items {
            let mapped = self.checked_key(key, value.len())?;
            let ttl_ms = effective_ttl(key, ttl, self.default_ttl)?.map(ceil_ms);
            encoded.push(SetItem {
                original: key.to_owned(),
                key: mapped,
                bytes: envelope::encode(value, ttl_ms.map(|ms| now.saturating_add(ms))),
                exptime: exptime(server_now, ttl_ms),
            });
        }
        self.by_host(op, encoded, |item| item.key.as_str(), |items| Set { items })
    }

    fn delete_call(&self, op: &'static str, keys: &[&str]) -> Result<Call<Delete>> {
        self.keyed_call(op, keys, |keys, originals| Delete { keys, originals })
    }

    /// One command on every host.
    fn everywhere<C: Command + Clone>(&self, op: &'static str, command: C) -> Result<Call<C>> {
        let parts = (0..self.hosts.len())
            .map(|i| self.part(i, vec![command.clone()], Vec::new()))
            .collect::<Result<Vec<_>>>()?;
        Ok(Call {
            op,
            timeout: self.admin_timeout,
            doubts: self.doubts.clone(),
            total: 0,
            parts,
        })
    }

    fn clear_call(&self) -> Result<Call<Admin>> {
        if !self.router.prefix().is_empty() {
            return Err(Error::Config {
                field: "memcached.prefix".to_owned(),
                reason: format!(
                    "clear() is refused with prefix {:?}: memcached cannot find keys by prefix, and flush_all would wipe every prefix; delete known keys with delete_many, or give these servers to one store without a prefix",
                    self.router.prefix()
                ),
            });
        }
        self.everywhere("clear", Admin::Flush)
    }

    fn later<C: Command>(&self, call: Result<Call<C>>) -> BoxFuture<'static, Result<Answers<C::Output>>> {
        match call {
            Ok(call) => call.run_async(&self.rt),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }
}

/// Refuses a value of `len` bytes for `key` (whose server form is `mapped`) that does not fit
/// an item limit of `max_item_size` bytes once the key, the envelope and the item header are
/// counted.
pub(super) fn fits_item(max_item_size: usize, key: &str, mapped: &str, len: usize) -> Result<()> {
    let max = value_limit(max_item_size, mapped.len());
    if len > max {
        return Err(Error::ValueTooLarge {
            key: key_for_error(key),
            len,
            max,
            store: format!(
                "memcached (item limit {max_item_size} bytes, less key, envelope and item header)"
            ),
        });
    }
    Ok(())
}

impl Storage for MemcachedStore {
    fn name(&self) -> &str {
        LEVEL
    }

    fn check_value(&self, key: &str, value_len: usize) -> Result<()> {
        self.checked_key(key, value_len).map(drop)
    }

    fn get(&self, key: &str) -> Result<Option<Entry>> {
        let keys = [key];
        let answers = self.get_call("get", &keys)?.run();
        Ok(self.entries(&keys, answers)?.pop().flatten())
    }

    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        written(self.set_call("set", std::iter::once((key, value, ttl)))?.run())
    }

    fn delete(&self, key: &str) -> Result<bool> {
        Ok(removed(self.delete_call("delete", &[key])?.run())? > 0)
    }

    /// An empty batch (here and in the other batch calls) asks no server and no node's breaker.
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let answers = self.get_call("get_many", keys)?.run();
        self.entries(keys, answers)
    }

    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let items = items.iter().map(|&(k, v)| (k, v, ttl));
        written(self.set_call("set_many", items)?.run())
    }

    /// One pipelined batch per host (quiet sets and a closing `noop`), each item with its own
    /// expiry: a write-behind flush is one round trip per host per 1 024 keys.
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        written(self.set_call("set_each", items.iter().copied())?.run())
    }

    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        if keys.is_empty() {
            return Ok(0);
        }
        removed(self.delete_call("delete_many", keys)?.run())
    }

    /// Items and bytes on every host (`stats`: `curr_items`, `bytes`), whatever their prefix.
    fn size(&self) -> Result<StorageSize> {
        let sizes = everywhere_result(self.everywhere("size", Stats)?.run())?;
        Ok(sum_sizes(sizes))
    }

    /// `flush_all` on every host if the store has no prefix; refused with [`Error::Config`]
    /// otherwise (see the type's docs).
    fn clear(&self) -> Result<()> {
        cleared(self.clear_call()?.run(), &self.hosts)
    }

    /// Nothing to make durable from here: the server's persistence is its own configuration.
    fn flush(&self) -> Result<()> {
        Ok(())
    }

    /// The server counts evictions and expirations for every client together: none per store.
    /// What the store counts is its writes in doubt.
    fn counters(&self) -> StorageCounters {
        self.doubts.counters()
    }
}

impl DistributedStorage for MemcachedStore {
    /// See [`writes_in_doubt`](Self::writes_in_doubt).
    fn on_late_write_deleted(&self, hook: crate::storage::LateWriteHook) {
        self.doubts.on_deleted(hook);
    }

    fn size_async(&self) -> BoxFuture<'_, Result<StorageSize>> {
        let fut = self.later(self.everywhere("size", Stats));
        Box::pin(async move {
            let sizes = everywhere_result(fut.await?)?;
            Ok(sum_sizes(sizes))
        })
    }

    fn get_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<Entry>>> {
        Box::pin(async move {
            let keys = [key];
            let answers = self.get_call("get", &keys)?.run_async(&self.rt).await?;
            Ok(self.entries(&keys, answers)?.pop().flatten())
        })
    }

    fn set_async<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        let fut = self.later(self.set_call("set", std::iter::once((key, value, ttl))));
        Box::pin(async move { written(fut.await?) })
    }

    fn delete_async<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool>> {
        let fut = self.later(self.delete_call("delete", &[key]));
        Box::pin(async move { Ok(removed(fut.await?)? > 0) })
    }

    fn get_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<Vec<Option<Entry>>>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        Box::pin(async move {
            let answers = self.get_call("get_many", keys)?.run_async(&self.rt).await?;
            self.entries(keys, answers)
        })
    }

    fn set_many_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8])],
        ttl: Option<Duration>,
    ) -> BoxFuture<'a, Result<()>> {
        if items.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let fut = self.later(self.set_call("set_many", items.iter().map(|&(k, v)| (k, v, ttl))));
        Box::pin(async move { written(fut.await?) })
    }

    fn set_each_async<'a>(
        &'a self,
        items: &'a [(&'a str, &'a [u8], Option<Duration>)],
    ) -> BoxFuture<'a, Result<()>> {
        if items.is_empty() {
            return Box::pin(std::future::ready(Ok(())));
        }
        let fut = self.later(self.set_call("set_each", items.iter().copied()));
        Box::pin(async move { written(fut.await?) })
    }

    fn delete_many_async<'a>(&'a self, keys: &'a [&'a str]) -> BoxFuture<'a, Result<u64>> {
        if keys.is_empty() {
            return Box::pin(std::future::ready(Ok(0)));
        }
        let fut = self.later(self.delete_call("delete_many", keys));
        Box::pin(async move { removed(fut.await?) })
    }
}
