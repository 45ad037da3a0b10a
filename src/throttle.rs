//! The throttling stage of the pipeline, between decoding and validation.
//!
//! Two budgets, both GCRA:
//! - **per socket** (default 100 events / 10 s): checked in the session loop before an event is
//!   queued, with an in-memory limiter owned by the session. A socket lives on exactly one
//!   instance, so sharing this state through Redis would add a network round trip to every
//!   event and buy nothing.
//! - **per user** (default 30 messages / 60 s, for the events listed in `message_events`):
//!   shared by all the user's sockets on every instance, so it lives in the `RateLimiter`
//!   backend (Redis in a cluster) and is checked in the event's pipeline future.
//!
//! Over a budget the event is refused with `rate_limit_exceeded` and dropped; the session
//! stays. A socket that keeps flooding — more than `flood_factor × limit` refusals within
//! `flood_window` — is disconnected with `rate_limit_flood`.

use std::{
    collections::HashSet,
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use governor::{
    DefaultDirectRateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::{
    config::{Config, FailMode},
    dispatch::EventError,
    state::{now_ms, ratelimit::RateLimiter},
};

/// Why the per-socket stage refused an event.
#[derive(Debug)]
pub enum Refused {
    /// Over budget: answer with this error, drop the event.
    Limited(EventError),
    /// Flooding far past the budget: end the session.
    Flood,
}

/// Per-session throttle state.
pub struct SocketThrottle {
    limiter: DefaultDirectRateLimiter,
    refused: u32,
    refused_since: Instant,
}

pub struct Throttle {
    socket_quota: governor::Quota,
    socket_limit: u32,
    socket_window: Duration,
    flood_threshold: u32,
    flood_window: Duration,
    message_events: HashSet<String>,
    user: Arc<dyn RateLimiter>,
    on_error: FailMode,
    /// One clock for every socket's limiter: creating a quanta clock probes the CPU (cpuid),
    /// which made a fresh one per connection the most expensive step of a connect.
    clock: DefaultClock,
}

fn gcra_quota(limit: u32, window: Duration) -> governor::Quota {
    let limit = NonZeroU32::new(limit).unwrap_or(NonZeroU32::MIN);
    let period = window / limit.get();
    governor::Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| governor::Quota::per_second(limit))
        .allow_burst(limit)
}

impl Throttle {
    pub fn new(cfg: &Config, user: Arc<dyn RateLimiter>) -> Self {
        Self {
            socket_quota: gcra_quota(cfg.event_rate_limit, cfg.event_rate_window),
            socket_limit: cfg.event_rate_limit,
            socket_window: cfg.event_rate_window,
            flood_threshold: cfg.rate_limit_flood_factor.saturating_mul(cfg.event_rate_limit),
            flood_window: cfg.rate_limit_flood_window,
            message_events: cfg.message_events.iter().map(|e| e.trim().to_owned()).collect(),
            user,
            on_error: cfg.rate_limit_on_redis_error,
            clock: DefaultClock::default(),
        }
    }

    pub fn socket(&self) -> SocketThrottle {
        SocketThrottle {
            limiter: governor::RateLimiter::direct_with_clock(
                self.socket_quota,
                self.clock.clone(),
            ),
            refused: 0,
            refused_since: Instant::now(),
        }
    }

    /// The per-socket stage. Synchronous: no I/O on the session loop.
    pub fn admit_event(&self, st: &mut SocketThrottle) -> Result<(), Refused> {
        let Err(not_until) = st.limiter.check() else {
            return Ok(());
        };
        let now = Instant::now();
        if now.duration_since(st.refused_since) > self.flood_window {
            st.refused = 0;
            st.refused_since = now;
        }
        st.refused += 1;
        if st.refused > self.flood_threshold {
            return Err(Refused::Flood);
        }
        let wait = not_until.wait_time_from(self.clock.now());
        Err(Refused::Limited(EventError::RateLimited {
            limit: self.socket_limit,
            window_ms: self.socket_window.as_millis() as u64,
            reset_at_ms: now_ms() + wait.as_millis() as u64,
        }))
    }

    pub fn counts_as_message(&self, event: &str) -> bool {
        self.message_events.contains(event)
    }

    /// The per-user stage, for message events. Runs inside the event's pipeline future.
    pub async fn admit_message(&self, user_id: &str) -> Result<(), EventError> {
        match self.user.check(user_id).await {
            Ok(d) if d.allowed => Ok(()),
            Ok(d) => {
                let q = self.user.quota();
                Err(EventError::RateLimited {
                    limit: q.limit,
                    window_ms: q.window.as_millis() as u64,
                    reset_at_ms: d.reset_at_ms,
                })
            }
            Err(e) => match self.on_error {
                FailMode::Open => {
                    tracing::warn!(error = %e, "per-user rate limit unavailable; admitting (fail-open)");
                    Ok(())
                }
                FailMode::Closed => Err(EventError::Unavailable("rate limiter unavailable".into())),
            },
        }
    }
}
