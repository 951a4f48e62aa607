//! Every async write, read, load (both kinds) and invalidation of the manager dropped after
//! each of its polls in turn (a caller's `timeout` or `select!` can drop it at any await), with
//! L2 and the backplane behind a proxy that answers late, so that each await is one poll: after
//! each drop, this instance's reads never serve a value older than the last completed write,
//! this instance, a second one sharing Redis and L2 agree within moments, a following write of
//! the key completes (no ordering guard left held) and wins everywhere, and nothing lands late
//! over it. Write-through without a replay queue (a cancelled write leaves L1 and L2 is given
//! time) and write-behind, each on one Redis.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[path = "support/mod.rs"]
mod support;

#[path = "support/proxy.rs"]
mod proxy;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use support::RedisServer;
use uno_cache::{CacheConfig, CacheManager, Codec, Error};

/// The L2 deadline: a cancelled write's command may land for four of them.
const TIMEOUT_MS: u64 = 100;

/// How long the instances may take to agree after a drop: past the backplane's repeat of a
/// cancelled write's message, on a loaded machine.
const AGREE_WITHIN: Duration = Duration::from_secs(5);

/// Polls the inner future at most `polls` times, then drops it: `None` if it had not ended.
struct Polled<F: Future> {
    inner: Option<Pin<Box<F>>>,
    left: usize,
}

impl<F: Future> Future for Polled<F> {
    type Output = Option<F::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.left -= 1;
        let inner = self.inner.as_mut().unwrap();
        match inner.as_mut().poll(cx) {
            Poll::Ready(out) => Poll::Ready(Some(out)),
            Poll::Pending if self.left == 0 => {
                self.inner = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn polled<F: Future>(future: F, polls: usize) -> Polled<F> {
    Polled {
        inner: Some(Box::pin(future)),
        left: polls,
    }
}

fn config(dir: &Path, l2: &str, extra: &str) -> CacheConfig {
    CacheConfig::from_toml_str(&format!(
        r#"
        [local]
        type = "file"
        path = "{}"
        [distributed]
        enabled = true
        hosts = ["{l2}"]
        key_prefix = "sweep:"
        timeout_ms = {TIMEOUT_MS}
        {extra}
        [invalidation]
        enabled = true
        publish_timeout_ms = {TIMEOUT_MS}
        "#,
        dir.display()
    ))
    .unwrap()
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Set,
    SetWithTags,
    Delete,
    MultiSet,
    MultiDelete,
    Get,
    GetOrLoad,
    GetOrSetWith,
    InvalidateTag,
    InvalidatePrefix,
}

const OPS: [Op; 10] = [
    Op::Set,
    Op::SetWithTags,
    Op::Delete,
    Op::MultiSet,
    Op::MultiDelete,
    Op::Get,
    Op::GetOrLoad,
    Op::GetOrSetWith,
    Op::InvalidateTag,
    Op::InvalidatePrefix,
];

struct Instances {
    /// Its L2 and backplane through the slow proxy; the one whose calls are dropped.
    a: CacheManager,
    /// L2 and backplane straight on Redis.
    b: CacheManager,
    rt: tokio::runtime::Runtime,
}

fn some(v: &str) -> Option<String> {
    Some(v.to_owned())
}

impl Instances {
    fn in_l2(&self, key: &str) -> Option<String> {
        let entry = self.b.distributed().unwrap().get(key).unwrap();
        entry.map(|e| Codec::bincode().decode(key, &e.value).unwrap())
    }

    /// What A answers, both APIs; never the value the last completed write replaced.
    fn a_reads(&self, key: &str) -> [Option<String>; 2] {
        let sync: Option<String> = self.a.get(key).unwrap();
        let not_sync: Option<String> = self.rt.block_on(self.a.get_async(key)).unwrap();
        for read in [&sync, &not_sync] {
            assert_ne!(
                read.as_deref(),
                Some("old"),
                "{key}: A served an overwritten value"
            );
        }
        [sync, not_sync]
    }

    /// Waits until A, B and L2 agree on one of `allowed`; returns it.
    fn agreed(&self, key: &str, allowed: &[Option<String>]) -> Option<String> {
        let started = Instant::now();
        loop {
            let l2 = self.in_l2(key);
            let [a, a_async] = self.a_reads(key);
            let b: Option<String> = self.b.get(key).unwrap();
            assert_ne!(b.as_deref(), Some("old"), "{key}: B served an overwritten value");
            if a == l2 && a_async == l2 && b == l2 && allowed.contains(&l2) {
                return l2;
            }
            assert!(
                started.elapsed() < AGREE_WITHIN,
                "{key}: no agreement on one of {allowed:?}: L2 {l2:?}, A {a:?} (async {a_async:?}), B {b:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `op` of `key` (or of its tag, its prefix) polled `polls` times: whether it ended, then
    /// checked as the module docs say.
    fn drop_after(&self, op: Op, polls: usize) -> (bool, String) {
        let (a, b) = (&self.a, &self.b);
        let prefix = format!("{op:?}{polls}:");
        let key = format!("{prefix}k");
        let other = format!("{prefix}other");
        let tag = format!("tag-{op:?}-{polls}");
        a.set(&key, "old", None).unwrap();
        if matches!(op, Op::InvalidateTag) {
            a.set_with_tags(&key, "v0", None, &[&tag]).unwrap();
        } else {
            a.set(&key, "v0", None).unwrap();
        }
        a.set(&other, "v0", None).unwrap();
        a.flush().unwrap();
        let loads = matches!(op, Op::GetOrLoad | Op::GetOrSetWith);
        let before = if loads {
            a.delete(&key).unwrap();
            None
        } else {
            some("v0")
        };
        // B holds the value in its L1; a read of A's must go to L2 and backfill.
        assert_eq!(self.agreed(&key, std::slice::from_ref(&before)), before);
        a.invalidate_local(&key).unwrap();

        let v1 = "v1".to_owned();
        let ended = self.rt.block_on(async {
            let ended = match op {
                Op::Set => polled(a.set_async(&key, &v1, None), polls).await.map(drop),
                Op::SetWithTags => polled(a.set_with_tags_async(&key, &v1, None, &[&tag]), polls)
                    .await
                    .map(drop),
                Op::Delete => polled(a.delete_async(&key), polls).await.map(drop),
                Op::MultiSet => polled(a.multi_set_async([(&key, &v1), (&other, &v1)], None), polls)
                    .await
                    .map(drop),
                Op::MultiDelete => polled(a.multi_delete_async(&[&key, &other]), polls)
                    .await
                    .map(drop),
                Op::Get => polled(a.get_async::<String>(&key), polls).await.map(drop),
                Op::GetOrLoad => polled(
                    a.get_or_load_async::<String, Error, _, _>(&key, None, || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok("v1".to_owned())
                    }),
                    polls,
                )
                .await
                .map(drop),
                Op::GetOrSetWith => polled(
                    a.get_or_set_with_async::<String, Error, _, _>(&key, None, || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok("v1".to_owned())
                    }),
                    polls,
                )
                .await
                .map(drop),
                Op::InvalidateTag => polled(a.invalidate_tag_async(&tag), polls).await.map(drop),
                Op::InvalidatePrefix => polled(a.invalidate_prefix_async(&prefix), polls).await.map(drop),
            };
            ended.is_some()
        });

        // A completed op leaves its outcome; a dropped one, that or the state before. A set
        // whose caller stopped waiting is in doubt in L2, which may delete it (a miss).
        let after_op = match op {
            Op::Set | Op::SetWithTags | Op::MultiSet | Op::GetOrLoad | Op::GetOrSetWith => some("v1"),
            Op::Delete | Op::MultiDelete | Op::InvalidateTag | Op::InvalidatePrefix => None,
            Op::Get => some("v0"),
        };
        let allowed = if ended {
            vec![after_op]
        } else {
            vec![before, after_op, None]
        };
        for read in self.a_reads(&key) {
            assert!(
                allowed.contains(&read),
                "{key}: A read {read:?} after the op, not one of {allowed:?}"
            );
        }
        self.agreed(&key, &allowed);
        // Its value is found by its tag (a dropped one is tagged again only once its write can
        // no longer land: `manager_async_servers` has that case); a dropped invalidation can be
        // retried.
        if matches!((op, ended), (Op::SetWithTags, true) | (Op::InvalidateTag, false)) {
            let heard = || a.stats().consistency.invalidations_received;
            let before = heard();
            // Heard by A before its next write, which the message would withdraw if queued. (A
            // tag a dropped invalidation forgot has nothing left: no message.)
            if b.invalidate_tag(&tag).unwrap() > 0 {
                support::wait_until("A hears B's invalidation", || heard() > before);
            }
            self.agreed(&key, &[None]);
        }
        let next = self.rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), a.set_async(&key, "after", None)).await
        });
        next.unwrap_or_else(|_| panic!("{key}: a set after the dropped {op:?} hung"))
            .unwrap();
        self.agreed(&key, &[some("after")]);
        if loads {
            a.delete(&key).unwrap();
            let load = self.rt.block_on(async {
                let load = a.get_or_load_async::<String, Error, _, _>(&key, None, || async {
                    Ok("after".to_owned())
                });
                tokio::time::timeout(Duration::from_secs(5), load).await
            });
            load.unwrap_or_else(|_| panic!("{key}: a load after the dropped one hung"))
                .unwrap();
            self.agreed(&key, &[some("after")]);
        }
        (ended, key)
    }
}

fn sweep(extra: &str) {
    let redis = RedisServer::start();
    let slow = proxy::TcpProxy::start(&redis.addr());
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let instances = Instances {
        a: CacheManager::new(config(dir_a.path(), &slow.addr(), extra)).unwrap(),
        b: CacheManager::new(config(dir_b.path(), &redis.addr(), extra)).unwrap(),
        rt: tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap(),
    };
    // Each L2 round trip, publish and tagging of A is one await, answered after the drop.
    slow.delay(Duration::from_millis(5));
    let mut keys = Vec::new();
    for op in OPS {
        let ended = (1..20).any(|polls| {
            let (ended, key) = instances.drop_after(op, polls);
            keys.push(key);
            ended
        });
        assert!(ended, "{op:?} did not end within 19 polls");
    }
    // Past the window in which a dropped call's command may still land: none landed over the
    // writes that followed.
    std::thread::sleep(Duration::from_millis(TIMEOUT_MS * 4));
    for key in &keys {
        instances.agreed(key, &[some("after")]);
    }
}

#[test]
fn async_calls_dropped_at_each_poll_leave_both_instances_agreeing_with_l2_write_through() {
    sweep("[offline]\nreplay = false");
}

#[test]
fn async_calls_dropped_at_each_poll_leave_both_instances_agreeing_with_l2_write_behind() {
    sweep("write_mode = \"behind\"");
}
