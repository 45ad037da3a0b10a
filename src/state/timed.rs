//! `Timed`: wraps a shared-state backend and records how long each call took, and whether it
//! failed, as `rtgate_redis_command_duration_seconds{op}` / `rtgate_redis_errors_total{op}`.
//! `Node` wraps the Redis backends in it, so the backends themselves stay free of metrics and
//! the in-memory ones are not timed at all.
//!
//! One call is one script or command round trip (plus our encoding), which is what a session
//! waits for.

use std::{future::Future, time::Duration, time::Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{
    StateError,
    broker::{Broker, Channel, Message},
    presence::{PresenceStore, Reaped, SocketRecord, Transition, UserPresence},
    ratelimit::{Decision, Quota, RateLimiter},
};
use crate::telemetry::metrics::{RedisOp, redis_call};

/// A backend whose every call is timed.
pub struct Timed<T>(pub T);

async fn timed<R>(
    op: RedisOp,
    call: impl Future<Output = Result<R, StateError>>,
) -> Result<R, StateError> {
    let started = Instant::now();
    let result = call.await;
    redis_call(op, started, result.is_ok());
    result
}

#[async_trait::async_trait]
impl<T: PresenceStore> PresenceStore for Timed<T> {
    async fn register(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        timed(RedisOp::PresenceRegister, self.0.register(socket)).await
    }

    async fn unregister(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        timed(RedisOp::PresenceUnregister, self.0.unregister(socket)).await
    }

    async fn query(&self, user_ids: &[String]) -> Result<Vec<UserPresence>, StateError> {
        timed(RedisOp::PresenceQuery, self.0.query(user_ids)).await
    }

    async fn socket(&self, socket_id: &str) -> Result<Option<SocketRecord>, StateError> {
        timed(RedisOp::PresenceSocket, self.0.socket(socket_id)).await
    }

    async fn sockets_of_user(&self, user_id: &str) -> Result<Vec<SocketRecord>, StateError> {
        timed(RedisOp::PresenceSocketsOfUser, self.0.sockets_of_user(user_id)).await
    }

    async fn sockets_of_instance(&self, instance_id: &str) -> Result<Vec<String>, StateError> {
        timed(RedisOp::PresenceSocketsOfInstance, self.0.sockets_of_instance(instance_id)).await
    }

    async fn heartbeat(&self, instance_id: &str, ttl: Duration) -> Result<(), StateError> {
        timed(RedisOp::PresenceHeartbeat, self.0.heartbeat(instance_id, ttl)).await
    }

    async fn reap_dead_instances(&self) -> Result<Vec<Reaped>, StateError> {
        timed(RedisOp::PresenceReap, self.0.reap_dead_instances()).await
    }
}

#[async_trait::async_trait]
impl<T: RateLimiter> RateLimiter for Timed<T> {
    fn quota(&self) -> Quota {
        self.0.quota()
    }

    async fn check(&self, key: &str) -> Result<Decision, StateError> {
        timed(RedisOp::LimiterCheck, self.0.check(key)).await
    }

    async fn forget(&self, key: &str) -> Result<(), StateError> {
        timed(RedisOp::LimiterForget, self.0.forget(key)).await
    }
}

#[async_trait::async_trait]
impl<T: Broker> Broker for Timed<T> {
    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), StateError> {
        timed(RedisOp::BrokerPublish, self.0.publish(channel, payload)).await
    }

    async fn subscribe(&self, channel: &Channel) -> Result<(), StateError> {
        timed(RedisOp::BrokerSubscribe, self.0.subscribe(channel)).await
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<(), StateError> {
        timed(RedisOp::BrokerUnsubscribe, self.0.unsubscribe(channel)).await
    }

    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Message>> {
        self.0.take_receiver()
    }

    async fn ping(&self) -> Result<(), StateError> {
        timed(RedisOp::BrokerPing, self.0.ping()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        state::broker::memory::MemoryBroker,
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
        let broker = Timed(MemoryBroker::new());
        broker.subscribe(&Channel::Presence).await.expect("memory never fails");
        broker.subscribe(&Channel::Presence).await.expect("memory never fails");
        let after = count(&metrics::render().expect("rendered"), "broker_subscribe");
        assert!(after >= before + 2.0, "{before} → {after}");
    }
}
