//! Token revocation: which tokens the application's backend revoked. The server API records
//! them in a `Revocations` store (Redis, or memory); every instance keeps a copy of the live
//! marks in memory (`Known`), which the handshake and `sys:refresh` check without a round
//! trip.
//!
//! Two kinds of mark: all of a user's tokens issued at or before a time (`iat`, seconds), and
//! one token by its `jti`. Each is kept until the revoked tokens would have expired anyway
//! (`until`, Unix ms, the caller's bound on their `exp`): after that no revoked token can be
//! valid, so the mark may go. Marks are only ever added or widened, never withdrawn, so an
//! instance's copy is brought up to date by merging (the cluster command that announces a new
//! mark, or a reload of the store) and can never be made wrong by a merge arriving late.

pub mod known;
pub mod memory;
pub mod redis;

pub use known::Known;

use std::time::Duration;

use super::{StateError, now_ms};

/// How long a revocation is kept when the call does not say: the revoked tokens should have
/// expired by then.
pub const DEFAULT_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

/// `until` (Unix ms) of a revocation kept for `DEFAULT_KEEP` from now.
pub fn default_until() -> u64 {
    now_ms() + DEFAULT_KEEP.as_millis() as u64
}

/// What a token is checked by.
#[derive(Debug, Clone, Copy)]
pub struct TokenRef<'a> {
    pub user: &'a str,
    /// `iat`, seconds. A token without one counts as issued at 0 (so any user revocation
    /// covers it).
    pub issued_at: Option<u64>,
    pub jti: Option<&'a str>,
}

/// Whether a user revocation (`before`, seconds) covers a token issued at `issued_at`.
pub fn covers(before: u64, issued_at: Option<u64>) -> bool {
    issued_at.unwrap_or(0) <= before
}

/// One revocation, as stored and as announced to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// `user`'s tokens issued at or before `before` (seconds), until `until_ms`.
    User { user: String, before: u64, until_ms: u64 },
    /// The token with this `jti`, until `until_ms`.
    Token { jti: String, until_ms: u64 },
}

#[async_trait::async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// Stores `mark`. A later mark for the same user with an earlier `before`, or for the
    /// same token with an earlier `until`, never narrows an earlier one.
    async fn revoke(&self, mark: &Mark) -> Result<(), StateError>;

    /// Every stored mark whose `until` has not passed (a user may appear more than once; the
    /// widest counts).
    async fn marks(&self) -> Result<Vec<Mark>, StateError>;
}
