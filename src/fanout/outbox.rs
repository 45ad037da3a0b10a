//! The ordered queue between fanout and the broker. A sender delivers to local recipients
//! at once and queues the envelope here instead of waiting for the broker: a session handles
//! its events one at a time, so a Redis round trip awaited per publication spaced a
//! publisher's publications one round trip apart, and every local receiver's writer then woke
//! and wrote once per publication instead of once per burst (about 2.8× the `sendto` calls
//! per delivery in the 1,000-receiver fanout benchmark, twice the CPU per delivery).
//!
//! One task drains the queue in order and hands each burst to the broker as one
//! `publish_all` (one pipeline on Redis), so the order of an instance's publications is
//! kept and a burst costs one round trip. Pub/sub is at-most-once already: a failed burst is
//! lost to other instances (and the guard marks Redis down when it is an outage), exactly as
//! an unanswered `PUBLISH` was.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{
    mpsc::{self, error::TrySendError},
    oneshot,
};

use crate::state::{
    StateError,
    broker::{Broker, Channel},
    guard::Health,
};

/// Envelopes waiting for the broker; a sender past it gets `StateError::Busy`. Reached only
/// when the broker stalls (a burst waits at most `STATE_TIMEOUT` before it fails and later
/// ones fail at once), so about two seconds of this instance's publications, a few MB.
const QUEUE: usize = 16_384;

/// Most envelopes in one `publish_all`: bounds one pipeline's size.
const BURST: usize = 256;

pub(super) struct Outbox {
    tx: mpsc::Sender<Item>,
    /// Shared state's health: while it is known down, a post is refused at once, as an
    /// awaited `PUBLISH` was, so a sender hears that other instances will not get it.
    health: Arc<Health>,
}

enum Item {
    Post(Channel, Bytes),
    /// Answered once everything queued before it went to the broker (or failed).
    Flushed(oneshot::Sender<()>),
}

impl Outbox {
    /// Starts the task that drains the queue into `broker`; it ends with the last `Outbox`.
    pub(super) fn spawn(broker: Arc<dyn Broker>, health: Arc<Health>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(drain(broker, rx));
        Self { tx, health }
    }

    /// Queues `payload` for `channel`, after everything queued before it.
    pub(super) fn post(&self, channel: Channel, payload: Bytes) -> Result<(), StateError> {
        if self.health.is_down() {
            return Err(StateError::Down);
        }
        self.tx.try_send(Item::Post(channel, payload)).map_err(|e| match e {
            TrySendError::Full(_) | TrySendError::Closed(_) => StateError::Busy,
        })
    }

    /// Waits until everything queued so far went to the broker (or failed): a graceful exit
    /// lets its last presence updates out before the process ends. Unbounded; callers bound it.
    pub(super) async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Item::Flushed(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

async fn drain(broker: Arc<dyn Broker>, mut rx: mpsc::Receiver<Item>) {
    let mut items = Vec::with_capacity(BURST);
    let mut burst = Vec::with_capacity(BURST);
    while rx.recv_many(&mut items, BURST).await > 0 {
        for item in items.drain(..) {
            match item {
                Item::Post(channel, payload) => burst.push((channel, payload)),
                Item::Flushed(done) => {
                    publish(&*broker, &mut burst).await;
                    let _ = done.send(());
                }
            }
        }
        publish(&*broker, &mut burst).await;
    }
}

async fn publish(broker: &dyn Broker, burst: &mut Vec<(Channel, Bytes)>) {
    if burst.is_empty() {
        return;
    }
    if let Err(e) = broker.publish_all(burst).await {
        // During an outage every burst fails at once with `Down`; the guard has logged the
        // outage.
        if matches!(e, StateError::Down) {
            tracing::debug!(messages = burst.len(), "fanout: broker down; burst dropped");
        } else {
            tracing::warn!(messages = burst.len(), error = %e, "fanout: publishing a burst failed");
        }
    }
    burst.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::broker::memory::MemoryBroker;

    #[tokio::test]
    async fn posts_go_out_in_order_and_flush_waits_for_them() {
        let broker = Arc::new(MemoryBroker::new());
        let mut rx = broker.take_receiver().unwrap();
        let (one, two) = (Channel::Chan("a".into()), Channel::Cluster);
        broker.subscribe(&one).await.unwrap();
        broker.subscribe(&two).await.unwrap();
        let outbox = Outbox::spawn(broker.clone(), Arc::default());
        for i in 0..1000u32 {
            let channel = if i % 2 == 0 { &one } else { &two };
            outbox.post(channel.clone(), Bytes::copy_from_slice(&i.to_be_bytes())).unwrap();
        }
        outbox.flush().await;
        // Everything was published before `flush` returned.
        for i in 0..1000u32 {
            let message = rx.try_recv().expect("published before the flush returned");
            assert_eq!(message.payload.as_ref(), i.to_be_bytes());
        }
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_instead_of_growing() {
        // No runtime turn between the posts: the task takes nothing meanwhile.
        let outbox = Outbox::spawn(Arc::new(MemoryBroker::new()), Arc::default());
        for _ in 0..QUEUE {
            outbox.post(Channel::Cluster, Bytes::new()).unwrap();
        }
        assert!(matches!(outbox.post(Channel::Cluster, Bytes::new()), Err(StateError::Busy)));
    }

    #[tokio::test]
    async fn a_post_is_refused_while_shared_state_is_down() {
        let health = Arc::new(Health::default());
        let outbox = Outbox::spawn(Arc::new(MemoryBroker::new()), health.clone());
        health.mark_down("test", &StateError::Down);
        assert!(matches!(outbox.post(Channel::Cluster, Bytes::new()), Err(StateError::Down)));
        health.mark_up();
        assert!(outbox.post(Channel::Cluster, Bytes::new()).is_ok());
    }
}
