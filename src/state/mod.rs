//! Shared state: what instances must agree on. Each concern is a trait with two backends,
//! in memory (the embedded single-node default, when `REDIS_URL` is unset) and Redis (a
//! cluster of instances sharing one Redis or one Redis Cluster). One test suite, in
//! `tests/state/`, runs against memory, a Redis and a Redis Cluster.
//!
//! - `presence`: the socket registry and multi-device presence, plus instance liveness and
//!   the reaping of crashed instances.
//! - `ratelimit`: GCRA rate limiters keyed by socket or user.
//! - `broker`: publish/subscribe of already-encoded bytes between instances.
//! - `history`: channel history, entries at gapless offsets within an epoch.
//! - `channel_presence`: who is subscribed to a channel, entries that expire unless refreshed.
//! - `revocation`: tokens the backend revoked (a user's, issued before a time; one by `jti`).
//! - `idempotency`: the server API's idempotency keys, claimed before a publish.
//! - `occupancy`: subscribers per channel and instance: active channels, occupied/vacated.
//! - `redis_conn`: the connection every Redis backend holds, to one Redis or to a Redis Cluster
//!   (`redis+cluster://` seed nodes), and the URL syntax of both.
//! - `guard`: the decorator around every Redis backend: bounds each call by `STATE_TIMEOUT`,
//!   times it for the metrics, and fails at once while Redis is known to be down.
//!
//! Redis keys all live under one configurable prefix; every key has a TTL or is removed on
//! teardown (or by the reaper when its instance died). No script, pipeline or multi-key
//! command spans two hash slots, so the same code runs on Redis Cluster.

pub mod broker;
pub mod channel_presence;
pub mod guard;
pub mod history;
pub mod idempotency;
pub mod occupancy;
pub mod presence;
pub mod ratelimit;
pub mod redis_conn;
pub mod revocation;

/// Upper bound on one shared-state call (`guard::Guarded` applies it to every Redis call;
/// `cluster::bounded` to calls that make several).
pub const STATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Upper bound on reaping one instance (a dead one, or this one leaving): its sockets go a
/// chunk per call (500), so 100,000 of them are 200 calls, more than one call's time.
pub const REAP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Failure of a shared-state backend. Only Redis backends fail; callers decide per use
/// whether to fail open (sessions keep working locally) or closed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StateError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    #[error("shared state did not answer within {0:?}")]
    Timeout(std::time::Duration),
    /// Not attempted: the backend is known to be unreachable until the liveness probe sees it
    /// answer again.
    #[error("shared state is unreachable (not attempted until it answers again)")]
    Down,
    /// A durable channel history's database failed or did not answer. Not a shared-state
    /// outage: it never marks shared state degraded.
    #[error("channel history database: {0}")]
    Database(String),
    /// Cross-instance fanout is this far behind (its queue to the broker is full): the
    /// message was delivered here but not to other instances.
    #[error("cross-instance fanout queue is full")]
    Busy,
}

impl StateError {
    /// Whether the failure says the backend is unreachable (as opposed to a bad reply from a
    /// backend that answered).
    pub fn is_outage(&self) -> bool {
        match self {
            StateError::Timeout(_) | StateError::Down => true,
            StateError::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_unrecoverable_error()
            }
            StateError::Protocol(_) | StateError::Database(_) | StateError::Busy => false,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
