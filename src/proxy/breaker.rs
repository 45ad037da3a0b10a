//! A circuit breaker per backend URL: after `TRIP_AFTER` failures in a row the backend is taken
//! for dead and calls fail at once for `OPEN_FOR`; then one trial call decides whether it is
//! back. A dead backend thus costs clients an instant `unavailable`, not a timeout each, and
//! cannot fill the proxy's in-flight slots.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// Failures in a row that open the circuit.
pub(super) const TRIP_AFTER: u32 = 5;
/// How long an open circuit refuses before it lets one trial call through.
pub(super) const OPEN_FOR: Duration = Duration::from_secs(5);

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One trial call is out; everything else is refused until it returns.
    Trial,
}

#[derive(Debug)]
pub(super) struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Self { state: Mutex::new(State::Closed { failures: 0 }) }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now (at `now`).
    pub(super) fn allow(&self, now: Instant) -> bool {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => true,
            State::Open { until } if now >= until => {
                *state = State::Trial;
                true
            }
            State::Open { .. } | State::Trial => false,
        }
    }

    /// Records how an allowed call went.
    pub(super) fn record(&self, ok: bool, now: Instant) {
        let mut state = self.lock();
        *state = match (&*state, ok) {
            (_, true) => State::Closed { failures: 0 },
            (State::Closed { failures }, false) if failures + 1 < TRIP_AFTER => {
                State::Closed { failures: failures + 1 }
            }
            (_, false) => State::Open { until: now + OPEN_FOR },
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_failures_in_a_row_then_one_trial_decides() {
        let b = Breaker::default();
        let t0 = Instant::now();
        for _ in 0..TRIP_AFTER - 1 {
            assert!(b.allow(t0));
            b.record(false, t0);
        }
        // A success in between resets the count.
        b.record(true, t0);
        for _ in 0..TRIP_AFTER {
            assert!(b.allow(t0));
            b.record(false, t0);
        }
        assert!(!b.allow(t0), "open");
        assert!(!b.allow(t0 + OPEN_FOR / 2));
        let later = t0 + OPEN_FOR;
        assert!(b.allow(later), "one trial");
        assert!(!b.allow(later), "only one");
        b.record(false, later);
        assert!(!b.allow(later + OPEN_FOR / 2), "the failed trial opens it again");
        let again = later + OPEN_FOR;
        assert!(b.allow(again));
        b.record(true, again);
        assert!(b.allow(again) && b.allow(again), "closed after a good trial");
    }
}
