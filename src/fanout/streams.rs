//! The ordered kinds of fanout: chat conversations and channels. Each travels on a broker
//! channel of its own that an instance subscribes to while it has a local member, and lands
//! in a `stream::Feed` that delivers it in position order.

use bytes::Bytes;

use super::{
    Fanout, Kind,
    envelope::{channel_body, prefixed},
};
use crate::{
    state::{StateError, broker::Channel},
    telemetry::metrics::{self, FanoutKind, Origin},
};

impl Fanout {
    /// Delivers chat message `seq` of `conversation` to its joined sessions cluster-wide, in
    /// seq order on every instance (the feed reorders and fills gaps).
    pub async fn to_conversation(
        &self,
        conversation: &str,
        seq: i64,
        frame: Bytes,
    ) -> Result<(), StateError> {
        let body = prefixed(seq.to_be_bytes(), &frame);
        self.feed.receive(conversation, "", crate::chat::feed::seq(seq), frame);
        let env = self.envelope(Kind::Chat, conversation, None, body);
        metrics::fanout_published(FanoutKind::Conversation);
        self.outbox.post(Channel::Conversation(conversation.to_owned()), env)
    }

    /// Removes `user`'s sessions from `conversation` everywhere, sending each `frame`.
    pub async fn kick_from_conversation(
        &self,
        conversation: &str,
        user: &str,
        frame: Bytes,
    ) -> Result<(), StateError> {
        if self.feed.kick(conversation, user, &frame) {
            self.release_conversation(conversation).await;
        }
        let env = self.envelope(Kind::ChatKick, conversation, Some(user), frame);
        metrics::fanout_published(FanoutKind::Conversation);
        self.outbox.post(Channel::Conversation(conversation.to_owned()), env)
    }

    /// A volatile event to `conversation`'s joined sessions except `socket_id`.
    pub async fn typing(
        &self,
        conversation: &str,
        socket_id: &str,
        frame: Bytes,
    ) -> Result<(), StateError> {
        self.feed.broadcast(conversation, Some(socket_id), &frame, true);
        let env = self.envelope(Kind::ChatVolatile, conversation, Some(socket_id), frame);
        metrics::fanout_published(FanoutKind::Conversation);
        self.outbox.post(Channel::Conversation(conversation.to_owned()), env)
    }

    /// Delivers a channel publication cluster-wide: in offset order through the channel feed
    /// when it is stored (`pos`: epoch and offset), straight to the live subscribers otherwise.
    pub async fn to_channel(
        &self,
        channel: &str,
        pos: Option<(&str, u64)>,
        frame: Bytes,
        volatile: bool,
    ) -> Result<(), StateError> {
        let (kind, body) = match pos {
            Some((epoch, offset)) => {
                let body = channel_body(offset, epoch, &frame);
                self.channels.receive(channel, epoch, offset, frame);
                (Kind::ChannelPub, body)
            }
            None => {
                let local = self.channels.broadcast(channel, None, &frame, volatile);
                metrics::fanout_delivered(Origin::Local, local);
                (if volatile { Kind::ChannelVolatile } else { Kind::ChannelPlain }, frame)
            }
        };
        let env = self.envelope(kind, channel, None, body);
        metrics::fanout_published(FanoutKind::Channel);
        self.outbox.post(Channel::Chan(channel.to_owned()), env)
    }

    /// A frame outside the channel's order (join, leave) to its live subscribers cluster-wide,
    /// except `exclude`.
    pub async fn channel_notice(
        &self,
        channel: &str,
        exclude: Option<&str>,
        frame: Bytes,
    ) -> Result<(), StateError> {
        let local = self.channels.broadcast(channel, exclude, &frame, false);
        metrics::fanout_delivered(Origin::Local, local);
        let env = self.envelope(Kind::ChannelPlain, channel, exclude, frame);
        metrics::fanout_published(FanoutKind::Channel);
        self.outbox.post(Channel::Chan(channel.to_owned()), env)
    }
}
