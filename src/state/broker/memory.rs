//! In-memory backend (single node): owns this process's subscription set and the one queue
//! that published messages land in. With one node there is nobody else to reach, so a publish
//! is delivered locally iff this broker subscribed to the channel.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::{Broker, Channel, Message};
use crate::state::StateError;

/// Broker for a single node: `publish` loops back to the local receiver.
#[derive(Debug)]
pub struct MemoryBroker {
    subscribed: Mutex<HashSet<Channel>>,
    tx: mpsc::UnboundedSender<Message>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
}

impl MemoryBroker {
    /// Creates a broker with no subscriptions; messages queue until the receiver is taken.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self { subscribed: Mutex::new(HashSet::new()), tx, rx: Mutex::new(Some(rx)) }
    }

    fn subscriptions(&self) -> std::sync::MutexGuard<'_, HashSet<Channel>> {
        // The set stays consistent even if a holder panicked (every update is one insert or
        // remove), so a poisoned lock is safe to reuse.
        self.subscribed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Default for MemoryBroker {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl Broker for MemoryBroker {
    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), StateError> {
        if !self.subscriptions().contains(channel) {
            return Ok(());
        }
        let message = Message { channel: channel.clone(), payload };
        // A dropped receiver means the fanout task is gone (shutdown); like pub/sub with no
        // listener, the message is simply not delivered.
        if self.tx.send(message).is_err() {
            tracing::debug!(?channel, "broker receiver dropped; message discarded");
        }
        Ok(())
    }

    async fn subscribe(&self, channel: &Channel) -> Result<(), StateError> {
        self.subscriptions().insert(channel.clone());
        Ok(())
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<(), StateError> {
        self.subscriptions().remove(channel);
        Ok(())
    }

    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Message>> {
        self.rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    async fn ping(&self) -> Result<(), StateError> {
        Ok(())
    }
}
