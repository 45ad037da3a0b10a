//! Redis backend: owns this instance's two Redis connections for cross-instance fanout, its set
//! of subscribed channels, and the task that turns Redis pushes into [`Message`]s.
//!
//! # Channel names
//! - `{prefix}ch:inst:{id}`: [`Channel::Instance`]
//! - `{prefix}ch:presence`: [`Channel::Presence`]
//! - `{prefix}ch:conv:{id}`: [`Channel::Conversation`]
//! - `{prefix}ch:chan:{name}`: [`Channel::Chan`]
//!
//! # Why a dedicated RESP3 subscriber connection
//! Publishing runs on an ordinary connection manager. Subscriptions live on a second one,
//! opened on RESP3: there, published messages arrive as out-of-band pushes, so they never wait
//! behind command replies (nor commands behind them), and the connection still answers
//! commands such as PING while subscribed, which is how [`Broker::ping`] notices a dead
//! connection. The manager records the subscriptions Redis confirmed and replays them on every
//! reconnect (automatic resubscription), so after a Redis restart the instance receives again
//! without the fanout layer having to notice, provided something keeps using the connection
//! (see [`Broker::ping`] on [`RedisBroker`]).
//!
//! # Delivery is at-most-once
//! Redis pub/sub keeps nothing: whatever is published while an instance is disconnected (or
//! before its resubscription completes) is lost for that instance. The chat layer's recovery
//! by sequence number covers such gaps; this layer does not retry or buffer.

use std::collections::HashSet;
use std::sync::Mutex;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::{Broker, Channel, Message};
use crate::state::StateError;

const INSTANCE: &str = "ch:inst:";
const PRESENCE: &str = "ch:presence";
const CONVERSATION: &str = "ch:conv:";
const CHAN: &str = "ch:chan:";

/// Broker over Redis pub/sub, shared by every instance using the same Redis and prefix.
#[derive(Debug)]
pub struct RedisBroker {
    prefix: String,
    publisher: ConnectionManager,
    subscriber: ConnectionManager,
    /// Channels this instance asked for. Guarded by an async lock held across the Redis round
    /// trip so that concurrent (un)subscribes of one channel are applied in a single order.
    subscribed: tokio::sync::Mutex<HashSet<Channel>>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    translator: AbortHandle,
}

impl RedisBroker {
    /// Opens the publisher and the RESP3 subscriber connection to `url`. Channel names start
    /// with `prefix`. Fails if Redis cannot be reached now; later outages are survived.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StateError> {
        let prefix = prefix.into();
        let info = url.into_connection_info()?;
        let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let subscriber_info = info.clone().set_redis_settings(resp3);

        let publisher =
            ConnectionManager::new_with_config(Client::open(info)?, ConnectionManagerConfig::new())
                .await?;

        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let subscriber = ConnectionManager::new_with_config(
            Client::open(subscriber_info)?,
            ConnectionManagerConfig::new().set_push_sender(push_tx).set_automatic_resubscription(),
        )
        .await?;

        let (tx, rx) = mpsc::unbounded_channel();
        let translator = tokio::spawn(translate(prefix.clone(), push_rx, tx)).abort_handle();

        Ok(Self {
            prefix,
            publisher,
            subscriber,
            subscribed: tokio::sync::Mutex::new(HashSet::new()),
            rx: Mutex::new(Some(rx)),
            translator,
        })
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        // The push channel can outlive the broker inside the connection's driver; stop
        // translating so the receiver sees the end of the stream.
        self.translator.abort();
    }
}

#[async_trait::async_trait]
impl Broker for RedisBroker {
    async fn publish(&self, channel: &Channel, payload: Bytes) -> Result<(), StateError> {
        let mut con = self.publisher.clone();
        redis::cmd("PUBLISH")
            .arg(channel_name(&self.prefix, channel))
            .arg(payload.as_ref())
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    /// On error the channel is not recorded as subscribed, so the caller's retry really
    /// subscribes.
    async fn subscribe(&self, channel: &Channel) -> Result<(), StateError> {
        let mut subscribed = self.subscribed.lock().await;
        if subscribed.contains(channel) {
            return Ok(());
        }
        let mut con = self.subscriber.clone();
        con.subscribe(channel_name(&self.prefix, channel)).await?;
        subscribed.insert(channel.clone());
        Ok(())
    }

    async fn unsubscribe(&self, channel: &Channel) -> Result<(), StateError> {
        let mut subscribed = self.subscribed.lock().await;
        if !subscribed.contains(channel) {
            return Ok(());
        }
        let mut con = self.subscriber.clone();
        con.unsubscribe(channel_name(&self.prefix, channel)).await?;
        subscribed.remove(channel);
        Ok(())
    }

    fn take_receiver(&self) -> Option<mpsc::UnboundedReceiver<Message>> {
        self.rx.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    /// Pings both connections, so each one notices a loss and starts reconnecting (the
    /// subscriber resubscribing) even if the other is fine. Call it periodically: once the
    /// connection manager's own reconnection attempts (a handful, over a few seconds) are
    /// spent, only a command on the connection starts a new round. During a reconnection it
    /// waits for those attempts, so a health check should bound it with a timeout.
    async fn ping(&self) -> Result<(), StateError> {
        let mut subscriber = self.subscriber.clone();
        let mut publisher = self.publisher.clone();
        let ping = redis::cmd("PING");
        let (sub, publ) = tokio::join!(
            ping.query_async::<()>(&mut subscriber),
            ping.query_async::<()>(&mut publisher)
        );
        sub?;
        publ?;
        Ok(())
    }
}

/// Forwards published messages from the subscriber connection to the broker's receiver until
/// the receiver is dropped.
async fn translate(
    prefix: String,
    mut pushes: mpsc::UnboundedReceiver<PushInfo>,
    out: mpsc::UnboundedSender<Message>,
) {
    while let Some(push) = pushes.recv().await {
        if push.kind != PushKind::Message {
            // Subscribe/unsubscribe confirmations and disconnections: the connection manager
            // already acts on them (resubscription, reconnection).
            tracing::debug!(kind = ?push.kind, "broker: ignoring redis push");
            continue;
        }
        let Some(message) = decode_message(&prefix, push.data) else {
            continue;
        };
        if out.send(message).is_err() {
            tracing::debug!("broker: receiver dropped; stopping translation");
            return;
        }
    }
}

/// `data` of a `message` push is `[channel, payload]`.
fn decode_message(prefix: &str, data: Vec<Value>) -> Option<Message> {
    let mut data = data.into_iter();
    let (Some(Value::BulkString(name)), Some(Value::BulkString(payload)), None) =
        (data.next(), data.next(), data.next())
    else {
        tracing::debug!("broker: malformed message push ignored");
        return None;
    };
    let Some(channel) = parse_channel_name(prefix, &name) else {
        tracing::debug!(
            channel = %String::from_utf8_lossy(&name),
            "broker: message on unknown channel ignored"
        );
        return None;
    };
    Some(Message { channel, payload: Bytes::from(payload) })
}

fn channel_name(prefix: &str, channel: &Channel) -> String {
    match channel {
        Channel::Instance(id) => format!("{prefix}{INSTANCE}{id}"),
        Channel::Presence => format!("{prefix}{PRESENCE}"),
        Channel::Conversation(id) => format!("{prefix}{CONVERSATION}{id}"),
        Channel::Chan(name) => format!("{prefix}{CHAN}{name}"),
    }
}

fn parse_channel_name(prefix: &str, name: &[u8]) -> Option<Channel> {
    let rest = std::str::from_utf8(name).ok()?.strip_prefix(prefix)?;
    if rest == PRESENCE {
        Some(Channel::Presence)
    } else if let Some(name) = rest.strip_prefix(CHAN) {
        Some(Channel::Chan(name.to_owned()))
    } else if let Some(id) = rest.strip_prefix(CONVERSATION) {
        Some(Channel::Conversation(id.to_owned()))
    } else {
        rest.strip_prefix(INSTANCE).map(|id| Channel::Instance(id.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_round_trip() {
        let prefix = "rtgate:";
        for channel in [
            Channel::Chan("general".into()),
            Channel::Chan("a:b:ch:inst:c".into()),
            Channel::Chan(String::new()),
            Channel::Instance("inst-1".into()),
            Channel::Presence,
            Channel::Conversation("0b7e4a8e-6a55-4f6e-9d1c-3a6f2b1c9e10".into()),
            Channel::Chan("news:sports#alice,bob".into()),
        ] {
            let name = channel_name(prefix, &channel);
            assert_eq!(parse_channel_name(prefix, name.as_bytes()), Some(channel), "{name}");
        }
        assert_eq!(channel_name(prefix, &Channel::Presence), "rtgate:ch:presence");
        assert_eq!(channel_name(prefix, &Channel::Chan("c".into())), "rtgate:ch:chan:c");
        assert_eq!(channel_name(prefix, &Channel::Instance("i".into())), "rtgate:ch:inst:i");
    }

    #[test]
    fn foreign_channel_names_are_rejected() {
        let prefix = "rtgate:";
        for name in [
            &b"other:ch:presence"[..],
            b"rtgate:ch:presencex",
            b"rtgate:ch:unknown:x",
            // The removed rooms' channels.
            b"rtgate:ch:room:r",
            b"rtgate:",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_channel_name(prefix, name), None);
        }
    }

    #[test]
    fn message_push_decodes_payload_bytes() {
        let payload = vec![0u8, 0xff, 0xfe, b'x'];
        let message = decode_message(
            "p:",
            vec![Value::BulkString(b"p:ch:inst:7".to_vec()), Value::BulkString(payload.clone())],
        );
        assert_eq!(
            message,
            Some(Message { channel: Channel::Instance("7".into()), payload: Bytes::from(payload) })
        );
        assert_eq!(decode_message("p:", vec![Value::BulkString(b"p:ch:presence".to_vec())]), None);
    }
}
