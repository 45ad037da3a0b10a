//! In-memory rate limiter (single node): one `governor` keyed GCRA limiter per quota, its
//! per-key state in a `DashMap` this module shares with the limiter so that `forget` can
//! drop a key (governor itself offers no per-key removal).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::state::keyed::{DashMapStateStore, ShrinkableKeyedStateStore};

use super::{Decision, Quota, RateLimiter};
use crate::state::StateError;

type Governor =
    governor::RateLimiter<String, SharedStore, DefaultClock, StateInformationMiddleware>;

/// Keyed GCRA in process memory. Instances do not share budgets; share one instance (in an
/// `Arc`) between the sessions that must.
#[derive(Debug)]
pub struct MemoryRateLimiter {
    quota: Quota,
    /// The emission interval `window / limit` as governor rounds it.
    interval: Duration,
    /// `limit` after the zero guard; the arithmetic of `reset_at_ms` needs it.
    burst: u32,
    store: SharedStore,
    limiter: Governor,
}

impl MemoryRateLimiter {
    /// A limit of 0 or a zero window cannot be expressed as GCRA; they are raised to one
    /// event and one nanosecond (configuration is expected to reject them earlier).
    pub fn new(quota: Quota) -> Self {
        let burst = NonZeroU32::new(quota.limit).unwrap_or(NonZeroU32::MIN);
        let interval = (quota.window / burst.get()).max(Duration::from_nanos(1));
        let gov_quota = governor::Quota::with_period(interval)
            .unwrap_or_else(|| governor::Quota::per_second(burst))
            .allow_burst(burst);
        let store = SharedStore::default();
        let limiter: Governor =
            governor::RateLimiter::new(gov_quota, store.clone(), DefaultClock::default());
        Self { quota, interval, burst: burst.get(), store, limiter }
    }

    /// Drops the keys whose state is indistinguishable from a fresh one (budget fully
    /// restored) and releases the freed capacity. Keys of sockets that vanished without a
    /// `forget` would otherwise stay forever; the cleanup job calls this periodically.
    pub fn retain_recent(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    fn check_now(&self, key: &str) -> Decision {
        let key = key.to_owned();
        let outcome = self.limiter.check_key(&key);
        // Governor's clock is monotonic and has no epoch: pair one reading of it with one of
        // the wall clock, right after the decision, and express the result as an offset.
        let mono_now = self.limiter.clock().now();
        let wall_now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        match outcome {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                // The snapshot hides the theoretical arrival time, but `remaining` pins it to
                // within one interval: the budget is whole again after the `burst - remaining`
                // cells in use have each drained. This errs late by less than one interval
                // when part of a cell had already drained, never early.
                let used = self.burst.saturating_sub(remaining);
                Decision {
                    allowed: true,
                    remaining,
                    reset_at_ms: ceil_ms(wall_now + self.interval * used),
                }
            }
            Err(not_until) => Decision {
                allowed: false,
                remaining: 0,
                reset_at_ms: ceil_ms(wall_now + not_until.wait_time_from(mono_now)),
            },
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.limiter.len()
    }
}

#[async_trait::async_trait]
impl RateLimiter for MemoryRateLimiter {
    fn quota(&self) -> Quota {
        self.quota
    }

    async fn check(&self, key: &str) -> Result<Decision, StateError> {
        Ok(self.check_now(key))
    }

    async fn forget(&self, key: &str) -> Result<(), StateError> {
        self.store.0.remove(key);
        Ok(())
    }
}

/// Rounded up, so that a client retrying at `reset_at_ms` is not a hair too early.
fn ceil_ms(since_epoch: Duration) -> u64 {
    u64::try_from(since_epoch.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

/// Governor's dashmap store behind an `Arc`: the limiter owns its store by value and never
/// lends it out, so this handle is how `forget` reaches the keys.
#[derive(Debug, Default, Clone)]
struct SharedStore(Arc<DashMapStateStore<String>>);

impl StateStore for SharedStore {
    type Key = String;

    fn measure_and_replace<T, F, E>(&self, key: &Self::Key, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        self.0.measure_and_replace(key, f)
    }
}

impl ShrinkableKeyedStateStore<String> for SharedStore {
    fn retain_recent(&self, drop_below: Nanos) {
        ShrinkableKeyedStateStore::retain_recent(&*self.0, drop_below);
    }

    fn shrink_to_fit(&self) {
        ShrinkableKeyedStateStore::shrink_to_fit(&*self.0);
    }

    fn len(&self) -> usize {
        ShrinkableKeyedStateStore::len(&*self.0)
    }

    fn is_empty(&self) -> bool {
        ShrinkableKeyedStateStore::is_empty(&*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retain_recent_drops_keys_whose_budget_is_restored() {
        let limiter =
            MemoryRateLimiter::new(Quota { limit: 2, window: Duration::from_millis(100) });
        limiter.check("a").await.unwrap();
        limiter.check("b").await.unwrap();
        limiter.retain_recent();
        assert_eq!(limiter.len(), 2, "keys still in use must stay");

        // Governor drops a key once its TAT is one interval in the past: "a" (TAT = t0 +
        // 50 ms) goes after 100 ms; "b", checked again, stays.
        tokio::time::sleep(Duration::from_millis(150)).await;
        limiter.check("b").await.unwrap();
        limiter.retain_recent();
        assert_eq!(limiter.len(), 1, "only the idle key goes");
    }

    #[tokio::test]
    async fn zero_limit_is_raised_to_one() {
        let limiter = MemoryRateLimiter::new(Quota { limit: 0, window: Duration::from_secs(10) });
        assert!(limiter.check("k").await.unwrap().allowed);
        assert!(!limiter.check("k").await.unwrap().allowed);
    }
}
