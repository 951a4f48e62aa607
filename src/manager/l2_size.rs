//! [`L2Size`]: the last reading of L2's size, reused for a while and taken by one caller at a time.
//!
//! Counting a Redis or Memcached level walks every key, so the stats reuse a reading for
//! `distributed.size_max_age_secs` (default [`L2_SIZE_MAX_AGE`](super::L2_SIZE_MAX_AGE)), a
//! failed one too (stats polled through an outage neither walk the level on every call nor feed
//! its breaker each time); with a max age of zero, never read. And one caller walks at
//! a time: stats read by several threads at once (a scrape and a health check) each walked the
//! level when the reading was stale. A caller that finds a walk under way waits for its reading,
//! blocking or, in async code, awaiting; a walker whose future is dropped lets the next one walk.
//! A blocking caller does not wait for an async walk, which makes progress only when its task is
//! polled: on a current-thread runtime the blocked caller would be the thread that must poll it.
//! It takes the last reading, however old, or walks itself if there is none.

use std::future::Future;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::L2_SIZE_MAX_AGE;
use crate::error::Result;
use crate::storage::StorageSize;

/// A reading of L2's size, or the text of the error that stopped it.
pub(crate) type Reading = std::result::Result<StorageSize, String>;

#[derive(Debug, Default)]
struct State {
    last: Option<(Instant, Reading)>,
    walking: Option<Walker>,
}

/// Who is walking: a blocking caller (it runs to the end on its thread) or an async one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Walker {
    Blocking,
    Async,
}

impl State {
    fn fresh(&self, max_age: Duration) -> Option<Reading> {
        self.last
            .as_ref()
            .filter(|(at, _)| at.elapsed() < max_age)
            .map(|(_, reading)| reading.clone())
    }
}

/// What the stats report for L2's size when `size_max_age_secs = 0` turned its reading off.
pub(crate) const SIZE_NOT_READ: &str =
    "not read: distributed.size_max_age_secs = 0 turns the count of L2's keys off";

/// See the [module docs](self).
#[derive(Debug)]
pub(crate) struct L2Size {
    /// How long a reading is reused; zero: L2 is never walked.
    max_age: Duration,
    state: Mutex<State>,
    /// Blocking callers waiting for a walk.
    walked: Condvar,
    /// Async callers waiting for a walk.
    walked_async: tokio::sync::Notify,
}

/// The right to walk, held by one caller; given back on drop, also when an async walker's
/// future is dropped mid-walk.
struct Walk<'a>(&'a L2Size);

impl Drop for Walk<'_> {
    fn drop(&mut self) {
        self.0.state.lock().walking = None;
        self.0.walked.notify_all();
        self.0.walked_async.notify_waiters();
    }
}

impl Default for L2Size {
    fn default() -> Self {
        L2Size::new(L2_SIZE_MAX_AGE)
    }
}

impl L2Size {
    /// Readings reused for `max_age`; zero: none is ever taken.
    pub(crate) fn new(max_age: Duration) -> Self {
        L2Size {
            max_age,
            state: Mutex::default(),
            walked: Condvar::new(),
            walked_async: tokio::sync::Notify::new(),
        }
    }

    /// A fresh reading, or the one `walk` takes (once for all the callers waiting meanwhile).
    pub(crate) fn read(&self, walk: impl FnOnce() -> Result<StorageSize>) -> Reading {
        if self.max_age.is_zero() {
            return Err(SIZE_NOT_READ.to_owned());
        }
        let _walk = {
            let mut state = self.state.lock();
            loop {
                if let Some(reading) = state.fresh(self.max_age) {
                    return reading;
                }
                match state.walking {
                    None => {
                        state.walking = Some(Walker::Blocking);
                        break Some(Walk(self));
                    }
                    Some(Walker::Blocking) => self.walked.wait(&mut state),
                    // Not waited for (see the module docs).
                    Some(Walker::Async) => match &state.last {
                        Some((_, reading)) => return reading.clone(),
                        None => break None,
                    },
                }
            }
        };
        self.remember(walk())
    }

    /// [`read`](Self::read) for async code: waits for another walk without blocking.
    pub(crate) async fn read_async<F>(&self, walk: impl FnOnce() -> F) -> Reading
    where
        F: Future<Output = Result<StorageSize>>,
    {
        if self.max_age.is_zero() {
            return Err(SIZE_NOT_READ.to_owned());
        }
        let _walk = loop {
            let walked = self.walked_async.notified();
            let mut walked = std::pin::pin!(walked);
            {
                let mut state = self.state.lock();
                if let Some(reading) = state.fresh(self.max_age) {
                    return reading;
                }
                if state.walking.is_none() {
                    state.walking = Some(Walker::Async);
                    break Walk(self);
                }
                // Registered under the lock: the walker's drop, which takes it, cannot notify
                // before this waiter is listed.
                walked.as_mut().enable();
            }
            walked.await;
        };
        self.remember(walk().await)
    }

    fn remember(&self, size: Result<StorageSize>) -> Reading {
        let reading = size.map_err(|e| e.to_string());
        self.state.lock().last = Some((Instant::now(), reading.clone()));
        reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn size(items: u64) -> Result<StorageSize> {
        Ok(StorageSize { items, bytes: 0 })
    }

    #[test]
    fn a_fresh_reading_is_reused_and_a_failed_one_too() {
        let l2 = L2Size::default();
        assert_eq!(l2.read(|| size(3)), Ok(StorageSize { items: 3, bytes: 0 }));
        assert_eq!(l2.read(|| size(4)), Ok(StorageSize { items: 3, bytes: 0 }));
        let failed = L2Size::default();
        let down = || {
            Err(Error::Backend {
                level: "redis",
                op: "size",
                reason: "down".into(),
            })
        };
        let first = failed.read(down);
        assert!(first.is_err());
        assert_eq!(failed.read(|| size(1)), first);
    }

    #[test]
    fn a_max_age_of_zero_never_walks_and_says_why() {
        let off = L2Size::new(Duration::ZERO);
        let walked = std::cell::Cell::new(false);
        let reading = off.read(|| {
            walked.set(true);
            size(1)
        });
        assert_eq!(reading, Err(SIZE_NOT_READ.to_owned()));
        assert!(!walked.get());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let reading = runtime.block_on(off.read_async(|| async {
            walked.set(true);
            size(1)
        }));
        assert_eq!(reading, Err(SIZE_NOT_READ.to_owned()));
        assert!(!walked.get());
    }

    #[test]
    fn a_reading_older_than_the_max_age_is_taken_again() {
        let l2 = L2Size::new(Duration::from_millis(1));
        assert_eq!(l2.read(|| size(3)), Ok(StorageSize { items: 3, bytes: 0 }));
        let taken = Instant::now();
        while taken.elapsed() <= Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        assert_eq!(l2.read(|| size(4)), Ok(StorageSize { items: 4, bytes: 0 }));
    }

    #[test]
    fn a_blocking_caller_does_not_wait_for_an_async_walk() {
        let l2 = L2Size::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            let walking = l2.read_async(std::future::pending);
            let mut walking = std::pin::pin!(walking);
            let waker = std::task::Waker::noop();
            assert!(walking
                .as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_pending());
            // On this thread, which alone could poll the walk: no reading yet, so it walks.
            assert_eq!(l2.read(|| size(6)), Ok(StorageSize { items: 6, bytes: 0 }));
        });
    }

    #[test]
    fn an_async_walker_dropped_mid_walk_lets_the_next_caller_walk() {
        let l2 = L2Size::default();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        runtime.block_on(async {
            {
                let never = l2.read_async(std::future::pending);
                let mut never = std::pin::pin!(never);
                let waker = std::task::Waker::noop();
                let polled = never.as_mut().poll(&mut std::task::Context::from_waker(waker));
                assert!(polled.is_pending());
            }
            let next = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                l2.read_async(|| async { size(5) }),
            );
            let next = next
                .await
                .unwrap_or_else(|_| panic!("still waiting for the dropped walk"));
            assert_eq!(next, Ok(StorageSize { items: 5, bytes: 0 }));
        });
    }
}
