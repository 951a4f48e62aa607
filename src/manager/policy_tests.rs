//! Tests of the rules in `policy.rs`.

use super::*;
use crate::clock::ManualClock;
use crate::local::memory::MemoryStore;
use crate::storage::Storage;

fn shared(local: u64, distributed: u64, clock: &ManualClock) -> Shared {
    Shared {
        l1: Arc::new(MemoryStore::new(10).unwrap()),
        l2: None,
        breaker: None,
        nodes: None,
        l2_size: Mutex::new(None),
        local_ttl: Duration::from_secs(local),
        distributed_ttl: Duration::from_secs(distributed),
        fallback_on_error: true,
        codec: Codec::default(),
        clock: Arc::new(clock.clone()),
        metrics: Metrics::default(),
        guard: KeyOrder::default(),
        flights: Arc::new(Flights::default()),
        fail_safe: crate::manager::failsafe::FailSafe::new(&crate::config::LoaderConfig::default()),
        replay: None,
        replayer: None,
        replay_lock: Mutex::new(()),
        tags: None,
        l2_prefix: String::new(),
        #[cfg(feature = "redis")]
        backplane: OnceLock::new(),
        hot: None,
        restart_policy: RestartPolicy::default(),
        check_freshness: AtomicBool::new(false),
        distrust_l1: AtomicBool::new(false),
        behind: None,
        fills: None,
    }
}

#[test]
fn set_ttls_are_capped_per_level_and_default_to_the_level_ttl() {
    let s = shared(60, 600, &ManualClock::new(0));
    assert_eq!(s.l1_ttl(None), Duration::from_secs(60));
    assert_eq!(s.l2_ttl(None), Duration::from_secs(600));
    assert_eq!(s.l1_ttl(Some(Duration::from_secs(300))), Duration::from_secs(60));
    assert_eq!(s.l2_ttl(Some(Duration::from_secs(300))), Duration::from_secs(300));
    assert_eq!(s.l1_ttl(Some(Duration::from_secs(5))), Duration::from_secs(5));
}

#[test]
fn backfill_ttl_never_outlives_l2_nor_local_ttl() {
    let clock = ManualClock::new(1_000_000);
    let s = shared(60, 600, &clock);
    let at = |ms: u64| Entry {
        value: vec![],
        expires_at: Some(clock::ms_to_system_time(ms)),
    };
    assert_eq!(s.backfill_ttl(&at(1_010_000)), Some(Duration::from_secs(10)));
    assert_eq!(s.backfill_ttl(&at(9_000_000)), Some(Duration::from_secs(60)));
    assert_eq!(s.backfill_ttl(&at(1_000_000)), None);
    assert_eq!(s.backfill_ttl(&at(5)), None);
    let forever = Entry {
        value: vec![],
        expires_at: None,
    };
    assert_eq!(s.backfill_ttl(&forever), Some(Duration::from_secs(60)));
}

/// An in-process L2 whose next call of a chosen kind is held until the test releases it.
struct HeldL2 {
    inner: MemoryStore,
    gates: std::sync::Mutex<Vec<(&'static str, Held)>>,
}

struct Held {
    entered: std::sync::mpsc::Sender<()>,
    release: std::sync::mpsc::Receiver<()>,
}

struct Gate {
    entered: std::sync::mpsc::Receiver<()>,
    release: std::sync::mpsc::Sender<()>,
}

impl Gate {
    fn wait_entered(&self) {
        self.entered
            .recv_timeout(Duration::from_secs(20))
            .expect("the held call never came");
    }
}

impl HeldL2 {
    fn new() -> Arc<HeldL2> {
        Arc::new(HeldL2 {
            inner: MemoryStore::new(1000).unwrap(),
            gates: std::sync::Mutex::new(Vec::new()),
        })
    }

    fn hold(&self, op: &'static str) -> Gate {
        let (entered_tx, entered_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel();
        let held = Held {
            entered: entered_tx,
            release: release_rx,
        };
        self.gates.lock().unwrap().push((op, held));
        Gate {
            entered: entered_rx,
            release: release_tx,
        }
    }

    fn enter(&self, op: &str) {
        let held = {
            let mut gates = self.gates.lock().unwrap();
            gates
                .iter()
                .position(|(o, _)| *o == op)
                .map(|i| gates.remove(i).1)
        };
        if let Some(held) = held {
            let _ = held.entered.send(());
            let _ = held.release.recv_timeout(Duration::from_secs(20));
        }
    }
}

impl Storage for HeldL2 {
    fn get(&self, key: &str) -> Result<Option<Entry>> {
        self.enter("get");
        self.inner.get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl: Option<Duration>) -> Result<()> {
        self.enter("set");
        self.inner.set(key, value, ttl)
    }
    fn set_each(&self, items: &[(&str, &[u8], Option<Duration>)]) -> Result<()> {
        self.enter("set_each");
        self.inner.set_each(items)
    }
    fn delete(&self, key: &str) -> Result<bool> {
        self.enter("delete");
        self.inner.delete(key)
    }
    fn name(&self) -> &str {
        "custom"
    }
    fn get_many(&self, keys: &[&str]) -> Result<Vec<Option<Entry>>> {
        crate::storage::get_each(self, keys)
    }
    fn set_many(&self, items: &[(&str, &[u8])], ttl: Option<Duration>) -> Result<()> {
        for (key, value) in items {
            self.set(key, value, ttl)?;
        }
        Ok(())
    }
    fn delete_many(&self, keys: &[&str]) -> Result<u64> {
        crate::storage::delete_each(self, keys)
    }
    fn check_value(&self, _: &str, _: usize) -> Result<()> {
        Ok(())
    }
    fn size(&self) -> Result<StorageSize> {
        self.inner.size()
    }
    fn clear(&self) -> Result<()> {
        self.inner.clear()
    }
    fn flush(&self) -> Result<()> {
        Ok(())
    }
    fn counters(&self) -> crate::StorageCounters {
        crate::StorageCounters::default()
    }
}

/// Write-behind, L2 holding `old`, `set(k, new)` returned but `new` still queued and no longer
/// in L1 (evicted). A read misses L1 and takes its ticket; a `delete(k)` starts, takes `new` out
/// of the queue and waits on L2; the read then finds the queue empty and asks L2, which still
/// answers `old`. The read stops between its ticket and its look into the queue, where only a
/// test can hold it; the rest runs through the manager as the shells run it.
struct OvertakenRead {
    cache: crate::CacheManager,
    l2: Arc<HeldL2>,
    sending: Gate,
    deleting: Gate,
    delete: std::thread::JoinHandle<Result<bool>>,
    ticket: Ticket,
}

fn read_overtaken_by_a_delete() -> OvertakenRead {
    let l2 = HeldL2::new();
    l2.inner.set("k", b"old", None).unwrap();
    let mut config = crate::CacheConfig::default();
    config.distributed.write_mode = crate::WriteMode::Behind;
    let cache = crate::CacheManager::builder()
        .config(config)
        .local(Arc::new(MemoryStore::new(100).unwrap()))
        .distributed(Arc::new(crate::InProcess::shared(l2.clone())))
        .build()
        .unwrap();
    // Keeps `new` in the queue: the writer is busy sending another key.
    let sending = l2.hold("set_each");
    cache.set_raw("other", b"x", None).unwrap();
    sending.wait_entered();
    cache.set_raw("k", b"new", None).unwrap();
    cache.shared.l1.delete("k").unwrap();
    let s = &cache.shared;
    assert!(matches!(s.plan_read("k").unwrap(), Plan::AskL2(None)));
    let ticket = s.ticket("k");
    let deleting = l2.hold("delete");
    let racing = cache.clone();
    let delete = std::thread::spawn(move || racing.delete("k"));
    deleting.wait_entered();
    OvertakenRead {
        cache,
        l2,
        sending,
        deleting,
        delete,
        ticket,
    }
}

impl OvertakenRead {
    fn finish(self) {
        let _ = self.deleting.release.send(());
        let _ = self.sending.release.send(());
        assert!(self.delete.join().unwrap().unwrap(), "the delete found the key");
        self.cache.flush().unwrap();
        assert_eq!(self.l2.inner.get("k").unwrap(), None, "the delete reached L2");
        assert_eq!(self.cache.get_raw("k").unwrap(), None);
        assert_eq!(self.cache.stats().consistency.overtaken_reads, 1);
    }
}

#[test]
fn a_read_overtaken_by_a_delete_never_answers_the_value_a_completed_set_replaced() {
    let race = read_overtaken_by_a_delete();
    let s = &race.cache.shared;
    let ticket = match s.before_l2_with("k", race.ticket) {
        Ok(ticket) => ticket,
        Err(answer) => panic!("answered {answer:?} before L2: the race did not happen"),
    };
    let l2 = s.l2.as_ref().unwrap();
    let answer = s.finish_read("k", ticket, (Instant::now(), l2.get("k"))).unwrap();
    assert_ne!(
        answer.as_deref(),
        Some(&b"old"[..]),
        "answered the replaced value"
    );
    assert_eq!(answer, None);
    race.finish();
}

#[test]
fn a_batch_read_overtaken_by_a_delete_never_answers_the_value_a_completed_set_replaced() {
    let race = read_overtaken_by_a_delete();
    let s = &race.cache.shared;
    let l2 = s.l2.as_ref().unwrap();
    let mut out = HashMap::new();
    let mut suspects = HashMap::new();
    let keys = ["k"];
    let result = (Instant::now(), l2.get_many(&keys));
    s.finish_read_many(&keys, &[race.ticket], result, &mut out, &mut suspects)
        .unwrap();
    assert_eq!(out.get("k"), None, "answered {:?}", out.get("k"));
    race.finish();
}
