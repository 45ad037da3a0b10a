//! `Guarded`: the decorator `Node` puts around every Redis backend. It owns what every
//! shared-state call needs and no backend should repeat:
//!
//! - a bound: each call gets at most `STATE_TIMEOUT`, whatever the connection does;
//! - the circuit: once a call finds Redis unreachable, `Health` says so, and every later call
//!   fails at once with `StateError::Down` instead of waiting out its own timeout. Only the
//!   liveness probes (`heartbeat`, the broker's `ping`) still go to Redis; when one answers,
//!   the liveness loop marks the backend up and resynchronizes (`cluster::liveness_loop`);
//! - timing: `rtgate_redis_command_duration_seconds{op}` / `rtgate_redis_errors_total{op}`.
//!
//! The in-memory backends are not wrapped: they neither fail nor wait.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use super::{
    STATE_TIMEOUT, StateError,
    broker::{Broker, Channel, Message},
    channel_presence::{self, ChannelPresence},
    history::{History, HistoryOptions, HistoryPage, Position, Range},
    idempotency::{Claim, Idempotency},
    occupancy::{self, Occupancy},
    presence::{PresenceStore, Reaped, Registered, SocketRecord, Transition, UserPresence},
    ratelimit::{Decision, Quota, RateLimiter},
    revocation::{Mark, Revocations},
};
use crate::telemetry::metrics::{RedisOp, redis_call, redis_skipped};

/// Whether the shared-state backend is known to be unreachable. One per node, shared by its
/// guarded backends and read by `/health/ready`.
#[derive(Debug, Default)]
pub struct Health {
    down: AtomicBool,
    /// Signalled when the backend goes down, so the liveness loop starts probing at once
    /// instead of after the rest of its normal wait (a third of the liveness TTL).
    went_down: Notify,
}

impl Health {
    /// Records that a call found the backend unreachable. Logs once per outage.
    pub fn mark_down(&self, during: &str, err: &StateError) {
        if !self.down.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %err, during, "shared state unreachable; sessions continue locally");
            self.went_down.notify_one();
        }
    }

    /// Completes once the backend has gone down since the last wait (a down that nobody was
    /// waiting for is kept for the next one).
    pub async fn went_down(&self) {
        self.went_down.notified().await;
    }

    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Marks the backend reachable again; true when it was down (the caller resynchronizes).
    pub fn mark_up(&self) -> bool {
        self.down.swap(false, Ordering::AcqRel)
    }
}

/// A Redis backend behind the bound, the circuit and the timer.
pub struct Guarded<T> {
    inner: T,
    health: Arc<Health>,
    timeout: Duration,
}

impl<T> Guarded<T> {
    pub fn new(inner: T, health: Arc<Health>) -> Self {
        Self { inner, health, timeout: STATE_TIMEOUT }
    }

    /// As `new`, with another bound (tests).
    pub fn with_timeout(inner: T, health: Arc<Health>, timeout: Duration) -> Self {
        Self { inner, health, timeout }
    }

    /// Runs one call: refused at once while the backend is down unless it is a `probe`.
    async fn call<R>(
        &self,
        op: RedisOp,
        probe: bool,
        call: impl Future<Output = Result<R, StateError>>,
    ) -> Result<R, StateError> {
        self.call_within(op, probe, self.timeout, call).await
    }

    async fn call_within<R>(
        &self,
        op: RedisOp,
        probe: bool,
        timeout: Duration,
        call: impl Future<Output = Result<R, StateError>>,
    ) -> Result<R, StateError> {
        if !probe && self.health.is_down() {
            redis_skipped(op);
            return Err(StateError::Down);
        }
        let started = Instant::now();
        let result =
            tokio::time::timeout(timeout, call).await.unwrap_or(Err(StateError::Timeout(timeout)));
        redis_call(op, started, result.is_ok());
        if let Err(e) = &result
            && e.is_outage()
        {
            self.health.mark_down(op.as_str(), e);
        }
        result
    }
}

#[async_trait::async_trait]
impl<T: PresenceStore> PresenceStore for Guarded<T> {
    async fn register_capped(
        &self,
        socket: &SocketRecord,
        max: usize,
    ) -> Result<Registered, StateError> {
        self.call(RedisOp::PresenceRegister, false, self.inner.register_capped(socket, max)).await
    }

    async fn unregister(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        self.call(RedisOp::PresenceUnregister, false, self.inner.unregister(socket)).await
    }

    async fn reaped(&self, socket: &SocketRecord) -> Result<bool, StateError> {
        self.call(RedisOp::PresenceReaped, false, self.inner.reaped(socket)).await
    }

    async fn query(&self, user_ids: &[String]) -> Result<Vec<UserPresence>, StateError> {
        self.call(RedisOp::PresenceQuery, false, self.inner.query(user_ids)).await
    }

    async fn socket(
        &self,
        user_id: &str,
        socket_id: &str,
    ) -> Result<Option<SocketRecord>, StateError> {
        self.call(RedisOp::PresenceSocket, false, self.inner.socket(user_id, socket_id)).await
    }

    async fn sockets_of_user(&self, user_id: &str) -> Result<Vec<SocketRecord>, StateError> {
        self.call(RedisOp::PresenceSocketsOfUser, false, self.inner.sockets_of_user(user_id)).await
    }

    async fn sockets_of_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<(String, String)>, StateError> {
        let call = self.inner.sockets_of_instance(instance_id);
        self.call(RedisOp::PresenceSocketsOfInstance, false, call).await
    }

    async fn instances(&self) -> Result<Vec<(String, usize)>, StateError> {
        self.call(RedisOp::PresenceInstances, false, self.inner.instances()).await
    }

    async fn heartbeat(&self, instance_id: &str, ttl: Duration) -> Result<(), StateError> {
        self.call(RedisOp::PresenceHeartbeat, true, self.inner.heartbeat(instance_id, ttl)).await
    }

    async fn reap_dead_instances(&self) -> Result<Vec<Reaped>, StateError> {
        let reap = self.inner.reap_dead_instances();
        self.call_within(RedisOp::PresenceReap, false, super::REAP_TIMEOUT, reap).await
    }

    async fn leave(&self, instance_id: &str) -> Result<Option<Reaped>, StateError> {
        // Tried even while marked down: it is the last call of a graceful exit, and a stale
        // mark must not leave this instance's entries behind when Redis is back. It removes
        // every socket of the instance, a chunk per round trip: a large instance needs more
        // than one call's time (`REAP_TIMEOUT`; the caller bounds it by the shutdown grace).
        let leave = self.inner.leave(instance_id);
        self.call_within(RedisOp::PresenceLeave, true, super::REAP_TIMEOUT, leave).await
    }
}

#[async_trait::async_trait]
impl<T: History> History for Guarded<T> {
    async fn append(
        &self,
        channel: &str,
        entry: Bytes,
        opts: &HistoryOptions,
    ) -> Result<Position, StateError> {
        self.call(RedisOp::HistoryAppend, false, self.inner.append(channel, entry, opts)).await
    }

    async fn read(
        &self,
        channel: &str,
        range: Range,
        limit: usize,
        opts: &HistoryOptions,
    ) -> Result<HistoryPage, StateError> {
        self.call(RedisOp::HistoryRead, false, self.inner.read(channel, range, limit, opts)).await
    }

    async fn remove(&self, channel: &str) -> Result<(), StateError> {
        self.call(RedisOp::HistoryRemove, false, self.inner.remove(channel)).await
    }
}

#[async_trait::async_trait]
impl<T: ChannelPresence> ChannelPresence for Guarded<T> {
    async fn add(
        &self,
        channel: &str,
        client_id: &str,
        user_id: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let call = self.inner.add(channel, client_id, user_id, info, ttl);
        self.call(RedisOp::ChannelPresenceAdd, false, call).await
    }

    async fn remove(&self, channel: &str, client_id: &str) -> Result<(), StateError> {
        let call = self.inner.remove(channel, client_id);
        self.call(RedisOp::ChannelPresenceRemove, false, call).await
    }

    async fn list(&self, channel: &str, limit: usize) -> Result<Vec<Bytes>, StateError> {
        self.call(RedisOp::ChannelPresenceList, false, self.inner.list(channel, limit)).await
    }

    async fn stats(&self, channel: &str) -> Result<channel_presence::Stats, StateError> {
        self.call(RedisOp::ChannelPresenceStats, false, self.inner.stats(channel)).await
    }

    async fn refresh(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), StateError> {
        let call = self.inner.refresh(entries, ttl);
        self.call(RedisOp::ChannelPresenceRefresh, false, call).await
    }
}

#[async_trait::async_trait]
impl<T: Revocations> Revocations for Guarded<T> {
    async fn revoke(&self, mark: &Mark) -> Result<(), StateError> {
        self.call(RedisOp::Revoke, false, self.inner.revoke(mark)).await
    }

    async fn marks(&self) -> Result<Vec<Mark>, StateError> {
        self.call(RedisOp::RevocationsLoad, false, self.inner.marks()).await
    }
}

#[async_trait::async_trait]
impl<T: Occupancy> Occupancy for Guarded<T> {
    async fn add(
        &self,
        channel: &str,
        instance: &str,
        delta: i64,
    ) -> Result<occupancy::Change, StateError> {
        self.call(RedisOp::OccupancyAdd, false, self.inner.add(channel, instance, delta)).await
    }

    async fn list(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<occupancy::Page, StateError> {
        self.call(RedisOp::OccupancyList, false, self.inner.list(pattern, cursor, limit)).await
    }

    async fn forget_instance(&self, instance: &str) -> Result<Vec<String>, StateError> {
        self.call(RedisOp::OccupancyForget, false, self.inner.forget_instance(instance)).await
    }
}

#[async_trait::async_trait]
impl<T: Idempotency> Idempotency for Guarded<T> {
    async fn claim(&self, key: &str, window: Duration) -> Result<Claim, StateError> {
        self.call(RedisOp::IdempotencyClaim, false, self.inner.claim(key, window)).await
    }

    async fn complete(&self, key: &str, result: &str, window: Duration) -> Result<(), StateError> {
        let call = self.inner.complete(key, result, window);
        self.call(RedisOp::IdempotencyComplete, false, call).await
    }

    async fn release(&self, key: &str) -> Result<(), StateError> {
        self.call(RedisOp::IdempotencyRelease, false, self.inner.release(key)).await
    }
}

#[async_trait::async_trait]
impl<T: RateLimiter> RateLimiter for Guarded<T> {
    fn quota(&self) -> Quota {
        self.inner.quota()
    }

    async fn check(&self, key: &str) -> Result<Decision, StateError> {
        self.call(RedisOp::LimiterCheck, false, self.inner.check(key)).await
    }

    async fn forget(&self, key: &str) -> Result<(), StateError> {
        self.call(RedisOp::LimiterForget, false, self.inner.forget(key)).await
    }
}

#[async_trait::async_trait]
impl<T: Broker> Broker for Guarded<T> {
    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), StateError> {
        self.call(RedisOp::BrokerPublish, false, self.inner.publish(channel, payload)).await
    }

    async fn publish_all(&self, messages: &[(Channel, Bytes)]) -> Result<(), StateError> {
        self.call(RedisOp::BrokerPublish, false, self.inner.publish_all(messages)).await
    }

    async fn subscribe(&self, channel: &Channel) -> Result<(), StateError> {
        self.call(RedisOp::BrokerSubscribe, false, self.inner.subscribe(channel)).await
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<(), StateError> {
        self.call(RedisOp::BrokerUnsubscribe, false, self.inner.unsubscribe(channel)).await
    }

    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Message>> {
        self.inner.take_receiver()
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.call(RedisOp::BrokerPing, true, self.inner.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        state::{broker::memory::MemoryBroker, ratelimit::memory::MemoryRateLimiter},
        telemetry::metrics::{self, names},
    };

    fn count(text: &str, op: &str) -> f64 {
        let prefix = format!("{}_count{{op=\"{op}\"}} ", names::REDIS_DURATION);
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// The decorator is backend-agnostic, so the memory broker stands in for Redis here.
    #[tokio::test]
    async fn each_call_is_timed_under_its_op() {
        metrics::init();
        let before = count(&metrics::render().expect("rendered"), "broker_subscribe");
        let broker = Guarded::new(MemoryBroker::new(), Arc::default());
        broker.subscribe(&Channel::Cluster).await.expect("memory never fails");
        broker.subscribe(&Channel::Cluster).await.expect("memory never fails");
        let after = count(&metrics::render().expect("rendered"), "broker_subscribe");
        assert!(after >= before + 2.0, "{before} → {after}");
    }

    /// A limiter that never answers: what a black-holed Redis looks like to a caller.
    struct Hanging;

    #[async_trait::async_trait]
    impl RateLimiter for Hanging {
        fn quota(&self) -> Quota {
            Quota { limit: 1, window: Duration::from_secs(1) }
        }
        async fn check(&self, _: &str) -> Result<Decision, StateError> {
            std::future::pending().await
        }
        async fn forget(&self, _: &str) -> Result<(), StateError> {
            std::future::pending().await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_is_bounded_then_the_circuit_answers_at_once() {
        let health = Arc::new(Health::default());
        let limiter = Guarded::new(Hanging, health.clone());
        let started = tokio::time::Instant::now();
        assert!(matches!(limiter.check("u").await, Err(StateError::Timeout(_))));
        assert_eq!(started.elapsed(), STATE_TIMEOUT);
        assert!(health.is_down());
        let started = tokio::time::Instant::now();
        assert!(matches!(limiter.check("u").await, Err(StateError::Down)));
        assert_eq!(started.elapsed(), Duration::ZERO);
        // Back up: calls go through again.
        assert!(health.mark_up());
        let ok = Guarded::new(MemoryRateLimiter::new(limiter.quota()), health.clone());
        assert!(ok.check("u").await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn probes_go_through_while_down() {
        let health = Arc::new(Health::default());
        health.mark_down("test", &StateError::Down);
        let broker = Guarded::new(MemoryBroker::new(), health.clone());
        assert!(matches!(
            broker.publish(&Channel::Cluster, Bytes::new()).await,
            Err(StateError::Down)
        ));
        assert!(broker.ping().await.is_ok());
    }
}
