//! Rate limiting with GCRA (the generic cell rate algorithm), the same algorithm in both
//! backends: memory (the `governor` crate) and Redis (one Lua script per check, using the
//! Redis server's clock so every instance agrees).
//!
//! Why GCRA rather than a sliding window: one small value per key (the theoretical arrival
//! time) instead of a log of timestamps, O(1) per check, exact (no window-boundary bursts of
//! 2× the limit as fixed windows allow), and the retry time falls out of the arithmetic. A
//! quota of `limit` per `window` allows a burst of `limit` and then one event every
//! `window / limit`.

pub mod memory;
pub mod redis;

use std::time::Duration;

use super::StateError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub limit: u32,
    pub window: Duration,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Events that could still be admitted right now after this one.
    pub remaining: u32,
    /// Unix ms. Denied: the earliest time a retry is admitted. Allowed: when the full
    /// budget is restored.
    pub reset_at_ms: u64,
}

#[async_trait::async_trait]
pub trait RateLimiter: Send + Sync + 'static {
    fn quota(&self) -> Quota;

    /// Counts one event for `key` if the quota admits it.
    async fn check(&self, key: &str) -> Result<Decision, StateError>;

    /// Forgets `key` (a socket that closed). Keys also expire on their own.
    async fn forget(&self, key: &str) -> Result<(), StateError>;
}
