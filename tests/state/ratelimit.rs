//! Rate limiter suite: the same GCRA behaviour from the memory and the Redis backend.

use std::sync::Arc;
use std::time::Duration;

use rstest::rstest;
use rtgate::state::now_ms;
use rtgate::state::ratelimit::memory::MemoryRateLimiter;
use rtgate::state::ratelimit::redis::RedisRateLimiter;
use rtgate::state::ratelimit::{Quota, RateLimiter};

use crate::common::{self, Backend};

/// Room for rounding, scheduling and a Redis round trip in time bounds.
const SLACK_MS: u64 = 50;

/// A quota whose interval (2 s) is far longer than any test runs, so nothing drains by
/// accident.
const SLOW: Quota = Quota { limit: 5, window: Duration::from_secs(10) };
const SLOW_INTERVAL_MS: u64 = 2_000;

async fn limiter(backend: Backend, prefix: &str, quota: Quota) -> Box<dyn RateLimiter> {
    match backend {
        Backend::Memory => Box::new(MemoryRateLimiter::new(quota)),
        Backend::Redis | Backend::Cluster => {
            Box::new(RedisRateLimiter::new(backend.conn().await, prefix, "test", quota))
        }
    }
}

/// Two limiters that must share budgets: for Redis, two instances on two connections (two
/// server processes, as far as Redis can tell); in memory, one instance shared, as the
/// sessions of one process share it.
async fn two_instances(
    backend: Backend,
    prefix: &str,
    quota: Quota,
) -> (Arc<dyn RateLimiter>, Arc<dyn RateLimiter>) {
    let a: Arc<dyn RateLimiter> = Arc::from(limiter(backend, prefix, quota).await);
    let b = match backend {
        Backend::Memory => a.clone(),
        Backend::Redis | Backend::Cluster => Arc::from(limiter(backend, prefix, quota).await),
    };
    (a, b)
}

async fn finish(backend: Backend, prefix: &str) {
    common::cleanup(backend, prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn admits_a_burst_of_limit_then_denies_until_one_interval(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-burst");
    let rl = limiter(backend, &prefix, SLOW).await;
    assert_eq!(rl.quota(), SLOW);

    let before = now_ms();
    for i in 0..SLOW.limit {
        assert!(rl.check("k").await.unwrap().allowed, "check {i} of the burst");
    }
    let denied = rl.check("k").await.unwrap();
    let after = now_ms();

    assert!(!denied.allowed);
    assert_eq!(denied.remaining, 0);
    assert!(denied.reset_at_ms > after, "retry time must lie ahead");
    assert!(
        denied.reset_at_ms + SLACK_MS >= before + SLOW_INTERVAL_MS,
        "one interval must drain first: {} vs {before}",
        denied.reset_at_ms
    );
    assert!(
        denied.reset_at_ms <= after + SLOW_INTERVAL_MS + SLACK_MS,
        "one interval is enough: {} vs {after}",
        denied.reset_at_ms
    );
    assert!(!rl.check("k").await.unwrap().allowed, "still denied");

    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn remaining_counts_down_and_reset_tracks_the_full_budget(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-countdown");
    let rl = limiter(backend, &prefix, SLOW).await;

    let before = now_ms();
    let mut decisions = Vec::new();
    for _ in 0..SLOW.limit {
        decisions.push(rl.check("k").await.unwrap());
    }
    let after = now_ms();

    let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [4, 3, 2, 1, 0]);
    assert!(decisions.iter().all(|d| d.allowed));

    // Allowed: reset_at is when the budget is whole again, one interval per cell in use.
    for (used, d) in (1..).zip(&decisions) {
        let restored_in = SLOW_INTERVAL_MS * used;
        assert!(
            d.reset_at_ms + SLACK_MS >= before + restored_in
                && d.reset_at_ms <= after + restored_in + SLACK_MS,
            "{used} in use: reset_at {} not within [{before}, {after}] + {restored_in} ms",
            d.reset_at_ms
        );
    }

    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn keys_have_independent_budgets(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-keys");
    let rl = limiter(backend, &prefix, SLOW).await;

    for _ in 0..SLOW.limit {
        assert!(rl.check("a").await.unwrap().allowed);
    }
    assert!(!rl.check("a").await.unwrap().allowed);

    let b = rl.check("b").await.unwrap();
    assert!(b.allowed, "another key keeps its whole budget");
    assert_eq!(b.remaining, SLOW.limit - 1);
    assert!(!rl.check("a").await.unwrap().allowed, "b's check gave a nothing");

    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn one_more_is_admitted_at_reset_at(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-drain");
    // Interval 100 ms.
    let quota = Quota { limit: 5, window: Duration::from_millis(500) };
    let rl = limiter(backend, &prefix, quota).await;

    for _ in 0..quota.limit {
        assert!(rl.check("k").await.unwrap().allowed);
    }
    let denied = rl.check("k").await.unwrap();
    assert!(!denied.allowed);
    let wait = denied.reset_at_ms.saturating_sub(now_ms());
    assert!(wait <= 100 + SLACK_MS, "reset_at {wait} ms away");

    // A couple of ms past reset_at, as the wall clock and the limiter's clock differ in how
    // they round.
    tokio::time::sleep(Duration::from_millis(wait + 2)).await;
    let again = rl.check("k").await.unwrap();
    assert!(again.allowed, "one interval drained: one more event");
    assert_eq!(again.remaining, 0, "only one");
    assert!(!rl.check("k").await.unwrap().allowed);

    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn forget_restores_the_full_budget(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-forget");
    let rl = limiter(backend, &prefix, SLOW).await;

    for _ in 0..SLOW.limit {
        assert!(rl.check("k").await.unwrap().allowed);
    }
    assert!(!rl.check("k").await.unwrap().allowed);

    rl.forget("k").await.unwrap();
    rl.forget("never-seen").await.unwrap();

    let first = rl.check("k").await.unwrap();
    assert!(first.allowed);
    assert_eq!(first.remaining, SLOW.limit - 1);
    for _ in 1..SLOW.limit {
        assert!(rl.check("k").await.unwrap().allowed);
    }
    assert!(!rl.check("k").await.unwrap().allowed);

    finish(backend, &prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_share_one_budget_under_concurrency(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-shared");
    let (a, b) = two_instances(backend, &prefix, SLOW).await;

    let checks: Vec<_> = (0..50)
        .map(|i| {
            let rl = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { rl.check("user-1").await.unwrap() })
        })
        .collect();
    let mut admitted = 0;
    for check in checks {
        if check.await.unwrap().allowed {
            admitted += 1;
        }
    }
    assert_eq!(admitted, SLOW.limit, "exactly one budget across both instances");
    assert!(!a.check("user-1").await.unwrap().allowed);
    assert!(!b.check("user-1").await.unwrap().allowed);

    finish(backend, &prefix).await;
}

/// The key expires exactly when its budget is whole again, so idle keys leave nothing.
#[rstest]
#[case::redis(Backend::Redis)]
#[case::cluster(Backend::Cluster)]
#[tokio::test]
async fn redis_key_expires_when_the_budget_is_restored(#[case] backend: Backend) {
    let prefix = common::unique_prefix("rl-hygiene");
    // Interval 60 ms.
    let quota = Quota { limit: 5, window: Duration::from_millis(300) };
    let rl = limiter(backend, &prefix, quota).await;
    let mut con = backend.conn().await;
    let key = format!("{prefix}rl:test:k");

    assert!(rl.check("k").await.unwrap().allowed);
    let keys = common::keys(backend, &prefix).await;
    assert_eq!(keys.as_slice(), [key.as_str()]);
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
    assert!(0 < pttl && pttl <= 60, "one cell in use drains in 60 ms, pttl {pttl}");

    for _ in 1..quota.limit {
        assert!(rl.check("k").await.unwrap().allowed);
    }
    let pttl: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut con).await.unwrap();
    assert!(
        300 - SLACK_MS as i64 <= pttl && pttl <= 300,
        "a full burst drains in one window, pttl {pttl}"
    );

    tokio::time::sleep(Duration::from_millis(300 + 20)).await;
    let keys = common::keys(backend, &prefix).await;
    assert!(keys.is_empty(), "left behind: {keys:?}");
    // And the expired key reads as a fresh budget.
    assert_eq!(rl.check("k").await.unwrap().remaining, quota.limit - 1);

    common::cleanup(backend, &prefix).await;
}
