//! The steps of `get_or_set_with` that its sync and async shells share: the end of a wait for
//! another caller's load, the leader's second read of the key, and the end of a loader that
//! failed. (`get_or_load`'s are in `load`.)

use std::sync::Arc;

use serde::de::DeserializeOwned;

use super::guard::Watch;
use super::loader::{Flight, Waited};
use super::CacheManager;
use crate::codec::ABSENT;
use crate::error::{Error, Result};

impl CacheManager {
    /// What a `get_or_set_with` waiter takes from its wait for `flight` (waited until the hard
    /// timeout, if any): the leader's bytes, or `None` to look again (and load if nobody does).
    ///
    /// Past the hard timeout the waiter gives the load up, as a `get_or_load` caller does, and
    /// goes on to run its own loader: a hung `get_or_load` loader whose own callers had all
    /// left with their stale copies at the soft timeout held it for good, with nobody left to
    /// give the load up.
    pub(super) fn waited_for_load(
        &self,
        key: &str,
        flight: &Arc<Flight>,
        waited: Waited,
    ) -> Option<Arc<[u8]>> {
        match waited {
            Waited::Done(bytes) if *bytes != *ABSENT => Some(bytes),
            // Another call's "absent" is no value, and a failed load no answer: look again.
            Waited::Done(_) | Waited::Abandoned => None,
            Waited::TimedOut => {
                self.shared.metrics.loader.hard_timeouts.incr();
                self.shared.flights.give_up(key, flight);
                None
            }
        }
    }

    /// `get_or_set_with`'s leader's second read of the key (`read`, taken after `watch`): the
    /// bytes and value a flight that just ended stored, if any. The watch ends here unless the
    /// leader goes on to load.
    pub(super) fn found_by_leader<T: DeserializeOwned>(
        &self,
        key: &str,
        watch: Watch,
        read: Result<Option<Vec<u8>>>,
    ) -> Result<Option<(Vec<u8>, T)>> {
        let codec = &self.shared.codec;
        // A cached "absent" is no value for a call that wants one: the leader loads.
        let read = read.map(|read| read.filter(|b| b.as_slice() != ABSENT));
        let found =
            match read.and_then(|read| read.map(|b| codec.decode(key, &b).map(|v| (b, v))).transpose()) {
                Err(e) if super::typed::reloads_unreadable(&self.shared, key, &e) => Ok(None),
                found => found,
            };
        if !matches!(found, Ok(None)) {
            self.shared.guard.unwatch(watch);
        }
        found
    }

    /// What `get_or_set_with`'s loader gave (`None`: it panicked, see `caught`): `Ok` the value
    /// to store, or `Err` the call's answer when it failed: the watch ends, and fail-safe's
    /// stale copy if any, else the loader's error (or, after a panic, one naming the key).
    pub(super) fn leader_loaded<T: DeserializeOwned, E: From<Error>>(
        &self,
        key: &str,
        watch: Watch,
        loaded: Option<std::result::Result<T, E>>,
    ) -> std::result::Result<T, std::result::Result<T, E>> {
        let error = match loaded {
            Some(Ok(value)) => return Ok(value),
            Some(Err(e)) => e,
            None => E::from(super::caught::no_answer(key)),
        };
        self.shared.guard.unwatch(watch);
        // Set to be throttled before the flight ends.
        Err(self.shared.stale_after_failure(key).ok_or(error))
    }
}
