//! Which broker topics this instance listens to. A conversation, a channel and a watched user
//! each have a topic of their own; the instance subscribes when its first local member (or
//! watcher) appears and unsubscribes after the last one leaves, so a publication nobody on an
//! instance wants never reaches it. One lifecycle for all three, here.
//!
//! Subscribing is awaited (bounded), so a caller that subscribes before it reads a snapshot
//! (presence, a channel's position) sees every publication after that read. A failure is
//! logged, not returned: the resync after the outage subscribes again (`subscribe_base`) and
//! the ordered kinds catch up from their store.

use super::Fanout;
use crate::{cluster::bounded, state::broker::Channel};

impl Fanout {
    async fn listen(&self, topic: Channel) {
        if let Err(e) = bounded(self.broker.subscribe(&topic)).await {
            tracing::warn!(?topic, error = %e, "subscribing a topic failed");
        }
    }

    /// Unsubscribes `topic` (its last local member left) — and subscribes again if `wanted`
    /// says a member came back while the unsubscribe was in flight.
    async fn release(&self, topic: Channel, wanted: impl Fn() -> bool) {
        if wanted() {
            return; // Someone came back before the release ran.
        }
        if let Err(e) = bounded(self.broker.unsubscribe(&topic)).await {
            tracing::warn!(?topic, error = %e, "unsubscribing a topic failed");
        }
        if wanted() {
            self.listen(topic).await;
        }
    }

    /// Subscribes this instance to `conversation` (its first local member joined).
    pub async fn watch_conversation(&self, conversation: &str) {
        self.listen(Channel::Conversation(conversation.to_owned())).await;
    }

    /// Unsubscribes `conversation` (its last local member left).
    pub async fn release_conversation(&self, conversation: &str) {
        let topic = Channel::Conversation(conversation.to_owned());
        self.release(topic, || self.feed.has(conversation)).await;
    }

    /// Subscribes this instance to `channel` (its first local subscriber joined).
    pub async fn watch_channel(&self, channel: &str) {
        self.listen(Channel::Chan(channel.to_owned())).await;
    }

    /// Unsubscribes `channel` (its last local subscriber left).
    pub async fn release_channel(&self, channel: &str) {
        let topic = Channel::Chan(channel.to_owned());
        self.release(topic, || self.channels.has(channel)).await;
    }

    /// Subscribes this instance to `user`'s presence transitions. Called for every user a
    /// session starts watching, not only the first time: a subscription already made returns
    /// at once, and one still in flight is waited for, so the caller's snapshot that follows
    /// misses no transition.
    pub async fn watch_user(&self, user: &str) {
        self.listen(Channel::Watch(user.to_owned())).await;
    }

    /// Unsubscribes `user`'s presence transitions (their last local watcher left).
    pub async fn release_user(&self, user: &str) {
        let topic = Channel::Watch(user.to_owned());
        self.release(topic, || self.hub.is_watched(user)).await;
    }
}
