//! Publish/subscribe between instances: the transport of cross-instance fanout. The broker
//! moves opaque, already-encoded bytes; what they mean (target, excluded socket, frame) is
//! the `fanout` layer's business, so a message is serialized once per publish, never per
//! recipient.
//!
//! Memory backend: delivers to this process only (one node). Redis backend: Redis pub/sub on
//! a dedicated RESP3 connection that resubscribes by itself after a reconnect.

pub mod memory;
pub mod redis;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::StateError;

/// Where a message goes. Instances subscribe to the channels they have local interest in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Channel {
    /// One instance: messages for specific users or sockets routed there via the registry.
    Instance(String),
    /// Cluster commands (the server API's disconnects, revocations), which every instance
    /// receives.
    Cluster,
    /// One user's presence transitions; an instance subscribes while one of its sessions
    /// watches that user, so a transition nobody watches reaches no instance.
    Watch(String),
    /// A chat conversation's messages, removals and typing; an instance subscribes while it
    /// has a local member.
    Conversation(String),
    /// A channel's publications and join/leave notices; an instance subscribes while it has a
    /// local subscriber.
    Chan(String),
}

/// One message received from a subscribed channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub channel: Channel,
    pub payload: Bytes,
}

#[async_trait::async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Publishes `payload` to every instance subscribed to `channel` (this one included).
    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), StateError>;

    /// Publishes each message in order, in as few round trips as the backend allows (one
    /// pipeline on a single Redis), so a burst of publications costs one wait, not one each.
    /// Messages to one channel arrive in the order given; on an error, some may have gone.
    async fn publish_all(&self, messages: &[(Channel, Bytes)]) -> Result<(), StateError> {
        for (channel, payload) in messages {
            self.publish(channel, payload.clone()).await?;
        }
        Ok(())
    }

    /// Starts receiving `channel` on this instance. Idempotent.
    async fn subscribe(&self, channel: &Channel) -> Result<(), StateError>;

    /// Stops receiving `channel`. Idempotent.
    async fn unsubscribe(&self, channel: &Channel) -> Result<(), StateError>;

    /// Takes the receiver of incoming messages. Called once, by the fanout task; later calls
    /// return `None`.
    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Message>>;

    /// Checks the connection (and, for Redis, triggers reconnection and resubscription).
    async fn ping(&self) -> Result<(), StateError>;
}
