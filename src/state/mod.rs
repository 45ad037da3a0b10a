//! Shared state: what instances must agree on. Each concern is a trait with two backends,
//! in memory (the embedded single-node default, when `REDIS_URL` is unset) and Redis (a
//! cluster of instances sharing one Redis). One test suite, in `tests/state/`, runs against
//! both.
//!
//! - `presence`: the socket registry and multi-device presence, plus instance liveness and
//!   the reaping of crashed instances.
//! - `ratelimit`: GCRA rate limiters keyed by socket or user.
//! - `broker`: publish/subscribe of already-encoded bytes between instances.
//! - `timed`: a decorator that times every call of a Redis backend for the metrics.
//!
//! Redis keys all live under one configurable prefix; every key has a TTL or is removed on
//! teardown (or by the reaper when its instance died).

pub mod broker;
pub mod presence;
pub mod ratelimit;
pub mod timed;

/// Failure of a shared-state backend. Only Redis backends fail; callers decide per use
/// whether to fail open (sessions keep working locally) or closed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    #[error("shared state did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
