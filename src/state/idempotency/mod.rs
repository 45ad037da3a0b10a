//! Idempotency keys of the server API: a publish that carries a key the cluster has seen
//! within the window answers with the first call's result instead of publishing again.
//!
//! A key is claimed before the work (`claim`), then completed with the result
//! (`complete`), or released when the work failed (`release`) so a retry can do it.

pub mod memory;
pub mod redis;

use std::time::Duration;

use super::StateError;

/// What `claim` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is new and now this caller's: do the work.
    Fresh,
    /// Another call holds the key and has not finished.
    Pending,
    /// A call with this key finished with this result.
    Done(String),
}

#[async_trait::async_trait]
pub trait Idempotency: Send + Sync + 'static {
    /// Claims `key` for `window`, or reports who has it.
    async fn claim(&self, key: &str, window: Duration) -> Result<Claim, StateError>;

    /// Stores `result` under the claimed `key` for `window`.
    async fn complete(&self, key: &str, result: &str, window: Duration) -> Result<(), StateError>;

    /// Gives a claimed `key` up (the work failed and may be retried).
    async fn release(&self, key: &str) -> Result<(), StateError>;
}
