//! Token revocation: which tokens the application's backend revoked, as the server API
//! records them and the handshake, `sys:refresh` and every instance's sessions check them.
//!
//! Two kinds: all of a user's tokens issued at or before a time (`iat`, seconds), and one token
//! by its `jti`. Each is kept until the revoked tokens would have expired anyway (`until`, Unix
//! ms, the caller's bound on their `exp`): after that no revoked token can be valid, so the
//! mark may go.

pub mod memory;
pub mod redis;

use super::StateError;

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

#[async_trait::async_trait]
pub trait Revocations: Send + Sync + 'static {
    /// Revokes `user`'s tokens issued at or before `before` (seconds), until `until_ms`. A
    /// later call with an earlier `before` never narrows an earlier revocation.
    async fn revoke_user(&self, user: &str, before: u64, until_ms: u64) -> Result<(), StateError>;

    /// Revokes the token with this `jti` until `until_ms`.
    async fn revoke_token(&self, jti: &str, until_ms: u64) -> Result<(), StateError>;

    /// Whether `token` is revoked.
    async fn is_revoked(&self, token: TokenRef<'_>) -> Result<bool, StateError>;
}
