//! The session's current token: its expiry, `iat` and `jti`. `sys:refresh` replaces it while
//! the session runs; the session's timer reads it to push `sys:token-expiring` once per token
//! and to end the session at expiry; the hub reads it to find the sessions a revocation
//! covers. Shared by the session, its handlers and its hub entry.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;

use crate::{
    auth::Identity,
    node::Node,
    state::revocation::{TokenRef, covers},
};

/// Whether the backend revoked `identity`'s token, by this instance's copy of the
/// revocations: no round trip on a connect or refresh. A revocation made while shared state
/// was unreachable from here is known once the copy is reloaded (`cluster::reload_revocations`).
pub fn is_revoked(node: &Node, identity: &Identity) -> bool {
    node.revoked.is_revoked(TokenRef {
        user: &identity.user_id,
        issued_at: identity.issued_at,
        jti: identity.jti.as_deref(),
    })
}

struct Current {
    /// `exp`, seconds since the epoch.
    expires_at: u64,
    issued_at: Option<u64>,
    jti: Option<Arc<str>>,
    /// When the session ends (`exp` + leeway), on the session's clock.
    ends: Instant,
    /// When `sys:token-expiring` is due; `None` once sent for this token, or when disabled.
    notice: Option<Instant>,
}

/// What the session's timer should do about the token now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TokenBeat {
    /// The token has expired: end the session.
    Expired,
    /// Push `sys:token-expiring` for a token that expires at this time (ms since the epoch).
    Notify(u64),
    /// Nothing yet; look again at this instant.
    Wait(Instant),
}

#[derive(Clone)]
pub struct SessionToken(Arc<Mutex<Current>>);

impl SessionToken {
    /// The token of `identity`, verified now. `notice` before `exp` the session is told (zero
    /// turns the notice off).
    pub fn new(identity: &Identity, leeway: Duration, notice: Duration) -> Self {
        Self(Arc::new(Mutex::new(current(identity, leeway, notice))))
    }

    /// A token of a far-future expiry, without `iat` or `jti` (unit tests of other modules).
    #[cfg(test)]
    pub(crate) fn for_tests() -> Self {
        let now = Instant::now();
        let ends = now + Duration::from_secs(3600);
        Self(Arc::new(Mutex::new(Current {
            expires_at: u64::MAX / 2000,
            issued_at: None,
            jti: None,
            ends,
            notice: None,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Current> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a refreshed token (same user, verified by the caller).
    pub fn replace(&self, identity: &Identity, leeway: Duration, notice: Duration) {
        *self.lock() = current(identity, leeway, notice);
    }

    /// Moves the current token's expiry to `expires_at` (seconds since the epoch), keeping its
    /// `iat` and `jti`: what the refresh proxy grants a session it made.
    pub fn extend(&self, expires_at: u64, leeway: Duration, notice: Duration) {
        let mut cur = self.lock();
        let (ends, notice) = deadlines(expires_at, leeway, notice);
        (cur.expires_at, cur.ends, cur.notice) = (expires_at, ends, notice);
    }

    /// `exp` of the current token, seconds since the epoch.
    pub fn expires_at(&self) -> u64 {
        self.lock().expires_at
    }

    /// Whether a user revocation at `before` (seconds) covers the current token.
    pub fn issued_by(&self, before: u64) -> bool {
        covers(before, self.lock().issued_at)
    }

    /// Whether the current token's `jti` is `jti`.
    pub fn has_jti(&self, jti: &str) -> bool {
        self.lock().jti.as_deref() == Some(jti)
    }

    /// The next thing the session's timer must do about the token, at `now`.
    pub(crate) fn poll(&self, now: Instant) -> TokenBeat {
        let mut cur = self.lock();
        if now >= cur.ends {
            return TokenBeat::Expired;
        }
        match cur.notice {
            Some(at) if now >= at => {
                cur.notice = None;
                TokenBeat::Notify(cur.expires_at.saturating_mul(1000))
            }
            Some(at) => TokenBeat::Wait(at),
            None => TokenBeat::Wait(cur.ends),
        }
    }
}

/// The `sys:token-expiring` push for a token that expires at `expires_at` (ms).
/// The token is about to expire: a session the connect proxy made asks the refresh proxy (in
/// a task of its own; the session loop never awaits it), any other is told to refresh.
pub(super) fn notify(ctx: &std::sync::Arc<super::SessionCtx>, expires_at: u64) {
    let cfg = &ctx.node.config;
    if !ctx.proxied {
        ctx.outbound.send(expiring_frame(expires_at));
        return;
    }
    if cfg.proxy.refresh_url.is_none() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        match crate::proxy::events::refresh(&ctx).await {
            Ok(Some(exp)) => {
                let cfg = &ctx.node.config.jwt;
                ctx.token.extend(exp, cfg.leeway, cfg.refresh_notice);
            }
            // The backend lets it expire; so does a failed call (the session ends at expiry).
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "refresh proxy failed; the session ends at its expiry")
            }
        }
    });
}

fn expiring_frame(expires_at: u64) -> bytes::Bytes {
    let data = serde_json::value::to_raw_value(&serde_json::json!({ "expiresAt": expires_at }))
        .unwrap_or_default();
    crate::protocol::encode_event("sys:token-expiring", &data)
}

fn current(identity: &Identity, leeway: Duration, notice: Duration) -> Current {
    let (ends, notice) = deadlines(identity.expires_at, leeway, notice);
    Current {
        expires_at: identity.expires_at,
        issued_at: identity.issued_at,
        jti: identity.jti.as_deref().map(Arc::from),
        ends,
        notice,
    }
}

/// When a token of `exp` (seconds since the epoch) ends the session (`exp` + leeway) and when
/// its expiry notice is due (`notice` before `exp` itself; none when `notice` is zero).
fn deadlines(exp: u64, leeway: Duration, notice: Duration) -> (Instant, Option<Instant>) {
    let now = Instant::now();
    let ends = now + crate::auth::until(exp, leeway);
    let notice = (!notice.is_zero())
        .then(|| now + crate::auth::until(exp, Duration::ZERO).saturating_sub(notice));
    (ends, notice)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp_in: u64) -> Identity {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Identity {
            user_id: "u".into(),
            device_id: None,
            expires_at: now + exp_in,
            admin: false,
            issued_at: Some(now),
            jti: Some("j1".into()),
            proxied: false,
            channels: vec![],
        }
    }

    #[tokio::test(start_paused = true)]
    async fn notifies_once_then_expires_and_a_refresh_moves_both() {
        let leeway = Duration::from_secs(5);
        let token = SessionToken::new(&identity(100), leeway, Duration::from_secs(30));
        let start = Instant::now();
        // Due at exp − 30 s (±1 s: `exp` is whole seconds).
        let TokenBeat::Wait(at) = token.poll(start) else { panic!("not due yet") };
        let due = at - start;
        assert!(due > Duration::from_secs(68) && due <= Duration::from_secs(70), "{due:?}");
        assert!(matches!(token.poll(at), TokenBeat::Notify(_)));
        // Once per token: afterwards the timer waits for the end.
        let TokenBeat::Wait(end) = token.poll(at) else { panic!("waits for the end") };
        assert!(end - start > Duration::from_secs(103));
        assert_eq!(token.poll(end), TokenBeat::Expired);
        // A refreshed token starts over, with its own notice.
        token.replace(&identity(200), leeway, Duration::from_secs(30));
        assert!(matches!(token.poll(Instant::now()), TokenBeat::Wait(_)));
        assert!(token.has_jti("j1") && !token.has_jti("j2"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_extension_moves_the_deadlines_and_keeps_the_token() {
        let notice = Duration::from_secs(30);
        let token = SessionToken::new(&identity(100), Duration::ZERO, notice);
        let start = Instant::now();
        let later = identity(400).expires_at;
        token.extend(later, Duration::ZERO, notice);
        assert_eq!(token.expires_at(), later);
        // Notice at the new exp − 30 s, and the same `iat` and `jti` as before.
        let TokenBeat::Wait(at) = token.poll(start) else { panic!("not due yet") };
        let due = at - start;
        assert!(due > Duration::from_secs(368) && due <= Duration::from_secs(370), "{due:?}");
        assert!(token.has_jti("j1"));
        assert!(token.issued_by(identity(10).issued_at.unwrap_or_default()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_notice_never_notifies() {
        let token = SessionToken::new(&identity(10), Duration::ZERO, Duration::ZERO);
        let TokenBeat::Wait(end) = token.poll(Instant::now()) else { panic!() };
        assert_eq!(token.poll(end), TokenBeat::Expired);
    }

    #[test]
    fn revocation_covers_tokens_issued_up_to_its_time() {
        let token = SessionToken::new(&identity(10), Duration::ZERO, Duration::ZERO);
        let iat = identity(10).issued_at.unwrap_or_default();
        assert!(token.issued_by(iat));
        assert!(!token.issued_by(iat - 1));
    }
}
