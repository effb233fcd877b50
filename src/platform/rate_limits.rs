//! Rate limits on attempts (failed log-ins, sign-ups): attempts per key in a sliding window,
//! counted in this process's memory when it is alone on its database, or in the database when
//! several kubefn processes share it, so that a client spreading its attempts over them gets no
//! more than from one.

use super::store::{Store, StoreError};
use chrono::Utc;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A limit on attempts: where they are counted, and for how long each counts.
#[derive(Debug)]
pub enum AttemptLimit {
    /// In this process's memory.
    Local(AttemptCounter),
    /// In the shared database, under `scope` (which limit it is).
    Shared {
        /// The database.
        store: Store,
        /// The limit's name among those the database counts.
        scope: &'static str,
        /// How long an attempt counts.
        window: Duration,
    },
}

impl AttemptLimit {
    /// A limit named `scope` whose attempts count for `window`: in the database when several
    /// processes may share `store`, in memory otherwise.
    pub fn for_store(store: &Store, scope: &'static str, window: Duration) -> AttemptLimit {
        if store.is_shared() {
            AttemptLimit::Shared { store: store.clone(), scope, window }
        } else {
            AttemptLimit::Local(AttemptCounter::new(window))
        }
    }

    /// How long until an attempt on these keys (each with its limit) is accepted, or `None`
    /// when it is now.
    pub async fn blocked_for(&self, keys: &[(String, usize)]) -> Result<Option<Duration>, StoreError> {
        let (store, scope, window) = match self {
            AttemptLimit::Local(counter) => return Ok(counter.blocked_for(keys, Instant::now())),
            AttemptLimit::Shared { store, scope, window } => (store, *scope, *window),
        };
        let now = Utc::now();
        let since = now - chrono::Duration::from_std(window).unwrap_or(chrono::TimeDelta::MAX);
        let mut longest = None;
        for (key, limit) in keys {
            // Blocked until the limit-th newest attempt leaves the window.
            if let Some(at) = store.nth_newest_attempt(scope, key, since, *limit).await? {
                let wait = window.saturating_sub((now - at).to_std().unwrap_or_default());
                longest = longest.max(Some(wait));
            }
        }
        Ok(longest)
    }

    /// Counts an attempt against every key.
    pub async fn record(&self, keys: &[(String, usize)]) -> Result<(), StoreError> {
        match self {
            AttemptLimit::Local(counter) => {
                counter.record(keys, Instant::now());
                Ok(())
            }
            AttemptLimit::Shared { store, scope, window } => {
                let now = Utc::now();
                let expired = now - chrono::Duration::from_std(*window).unwrap_or(chrono::TimeDelta::MAX);
                let keys: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
                store.record_attempts(scope, &keys, now, expired).await
            }
        }
    }

    /// Clears the attempts of these keys (a successful log-in).
    pub async fn forget(&self, keys: &[(String, usize)]) -> Result<(), StoreError> {
        match self {
            AttemptLimit::Local(counter) => {
                counter.forget(keys);
                Ok(())
            }
            AttemptLimit::Shared { store, scope, .. } => {
                let keys: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
                store.forget_attempts(scope, &keys).await
            }
        }
    }
}

/// Counts attempts per key in a sliding window; a key is blocked once its limit of attempts is
/// inside the window.
#[derive(Debug)]
pub struct AttemptCounter {
    window: Duration,
    attempts: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl AttemptCounter {
    /// A counter whose attempts count for `window`.
    pub fn new(window: Duration) -> AttemptCounter {
        AttemptCounter { window, attempts: Mutex::default() }
    }

    /// How long until an attempt on these keys (each with its limit) is accepted, or `None`
    /// when it is now.
    pub fn blocked_for(&self, keys: &[(String, usize)], now: Instant) -> Option<Duration> {
        let mut attempts = self.attempts.lock();
        keys.iter()
            .filter_map(|(key, limit)| {
                let times = attempts.get_mut(key)?;
                while times.front().is_some_and(|t| now.duration_since(*t) >= self.window) {
                    times.pop_front();
                }
                let excess = times.len().checked_sub(*limit)?;
                // Blocked until enough of the oldest attempts leave the window.
                times.get(excess).map(|t| self.window.saturating_sub(now.duration_since(*t)))
            })
            .max()
    }

    /// Counts an attempt against every key.
    pub fn record(&self, keys: &[(String, usize)], now: Instant) {
        let mut attempts = self.attempts.lock();
        // Bound memory under a flood of distinct keys: drop entries whose window has passed.
        if attempts.len() > 10_000 {
            attempts.retain(|_, times| times.back().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        for (key, _) in keys {
            attempts.entry(key.clone()).or_default().push_back(now);
        }
    }

    /// Clears the attempts of these keys (a successful log-in).
    pub fn forget(&self, keys: &[(String, usize)]) {
        let mut attempts = self.attempts.lock();
        for (key, _) in keys {
            attempts.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn processes_on_one_database_share_a_limit() {
        for super::super::store::test_databases::TestStore { store, .. } in
            super::super::store::test_databases::test_stores().await
        {
            if !store.is_shared() {
                continue;
            }
            let window = Duration::from_secs(300);
            // Two kubefn processes, each with its own view of the same database.
            let (one, other) = (
                AttemptLimit::for_store(&store, "failed-log-in", window),
                AttemptLimit::for_store(&store, "failed-log-in", window),
            );
            let signups = AttemptLimit::for_store(&store, "sign-up", window);
            let keys = [("client:10.0.0.66".to_string(), 4)];
            for attempt in 0..4 {
                let counting = if attempt % 2 == 0 { &one } else { &other };
                assert_eq!(counting.blocked_for(&keys).await.expect("read"), None, "attempt {attempt}");
                counting.record(&keys).await.expect("count");
            }
            let wait = other.blocked_for(&keys).await.expect("read").expect("the fifth is refused wherever it lands");
            assert!(wait > Duration::from_secs(290) && wait <= window, "{wait:?}");
            assert_eq!(signups.blocked_for(&keys).await.expect("read"), None, "each limit counts on its own");
            one.forget(&keys).await.expect("forget");
            assert_eq!(other.blocked_for(&keys).await.expect("read"), None, "forgotten for every process");
        }
    }
}
