//! Heartbeat bookkeeping, free of I/O so it can be tested with plain instants: when to send
//! the next ping, and when a missing pong means the peer is gone. Runs the same on every
//! transport, and catches peers that vanish without closing (TCP half-open, QUIC peer gone)
//! long before the QUIC idle timeout, which is only a backstop.

use std::{sync::OnceLock, time::Duration};

use tokio::time::Instant;

/// The grid session timers are rounded up to: 1 % of the ping interval, between 1 ms and
/// 10 ms. Heartbeats of idle sessions spread evenly over time would each wake a worker thread
/// (and on few cores, switch to it) for one frame; on a shared grid the sessions due in one
/// step are served by one wake-up. The cap keeps a step's burst small: a step holds
/// `sessions × step / interval` pings, and at 250 ms steps 19,000 sessions put 190 pings in
/// each, which doubled the p99 of live traffic beside them (BENCHMARKS.md).
pub fn grid(interval: Duration) -> Duration {
    (interval / 100).clamp(Duration::from_millis(1), Duration::from_millis(10))
}

/// `at` rounded up to the next point of `grid`, counted from one origin for the whole
/// process so that every session lands on the same points.
pub fn on_grid(at: Instant, grid: Duration) -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    let step = grid.as_nanos().max(1);
    let since = at.saturating_duration_since(origin).as_nanos();
    let steps = since.div_ceil(step);
    // u64 nanoseconds last 584 years; past that, the instant as it is.
    match u64::try_from(steps * step) {
        Ok(ns) => (origin + Duration::from_nanos(ns)).max(at),
        Err(_) => at,
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Beat {
    /// Nothing due yet.
    Idle,
    /// Send a ping now.
    Ping,
    /// A ping went unanswered for the whole timeout.
    TimedOut,
}

#[derive(Debug)]
pub struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    next_ping: Instant,
    /// Set when a ping is outstanding: the pong must arrive before this.
    deadline: Option<Instant>,
}

impl Heartbeat {
    pub fn new(now: Instant, interval: Duration, timeout: Duration) -> Self {
        Self { interval, timeout, next_ping: now + interval, deadline: None }
    }

    /// The next instant at which `poll` has something to do.
    pub fn next_wakeup(&self) -> Instant {
        match self.deadline {
            Some(d) => d.min(self.next_ping),
            None => self.next_ping,
        }
    }

    pub fn poll(&mut self, now: Instant) -> Beat {
        if self.deadline.is_some_and(|d| d <= now) {
            return Beat::TimedOut;
        }
        if self.next_ping <= now {
            self.next_ping = now + self.interval;
            // An earlier unanswered ping keeps its deadline; a late pong does not reset it.
            self.deadline.get_or_insert(now + self.timeout);
            return Beat::Ping;
        }
        Beat::Idle
    }

    pub fn pong(&mut self) {
        self.deadline = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn pings_on_interval_and_times_out_without_pong() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 25 * S, 20 * S);
        assert_eq!(hb.poll(t0 + 24 * S), Beat::Idle);
        assert_eq!(hb.next_wakeup(), t0 + 25 * S);
        assert_eq!(hb.poll(t0 + 25 * S), Beat::Ping);
        assert_eq!(hb.next_wakeup(), t0 + 45 * S);
        assert_eq!(hb.poll(t0 + 44 * S), Beat::Idle);
        assert_eq!(hb.poll(t0 + 45 * S), Beat::TimedOut);
    }

    #[test]
    fn pong_clears_the_deadline() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 25 * S, 20 * S);
        assert_eq!(hb.poll(t0 + 25 * S), Beat::Ping);
        hb.pong();
        assert_eq!(hb.next_wakeup(), t0 + 50 * S);
        assert_eq!(hb.poll(t0 + 50 * S), Beat::Ping);
        assert_eq!(hb.poll(t0 + 69 * S), Beat::Idle);
        assert_eq!(hb.poll(t0 + 70 * S), Beat::TimedOut);
    }

    #[test]
    fn grid_rounds_up_onto_shared_points() {
        assert_eq!(grid(25 * S), Duration::from_millis(10));
        assert_eq!(grid(Duration::from_millis(500)), Duration::from_millis(5));
        assert_eq!(grid(Duration::from_millis(10)), Duration::from_millis(1));
        let g = Duration::from_millis(250);
        let a = on_grid(Instant::now() + 3 * S, g);
        assert_eq!(on_grid(a, g), a, "a point of the grid stays where it is");
        // Never early, less than one step late, and every instant of a step on one point.
        for off in [1, 100, 249] {
            assert_eq!(on_grid(a + Duration::from_millis(off), g), a + g, "{off} ms");
        }
        assert_eq!(on_grid(a + g + Duration::from_millis(1), g), a + 2 * g);
    }

    #[test]
    fn timeout_longer_than_interval_keeps_first_deadline() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(t0, 10 * S, 25 * S);
        assert_eq!(hb.poll(t0 + 10 * S), Beat::Ping);
        assert_eq!(hb.poll(t0 + 20 * S), Beat::Ping);
        assert_eq!(hb.poll(t0 + 30 * S), Beat::Ping);
        assert_eq!(hb.poll(t0 + 35 * S), Beat::TimedOut);
    }
}
