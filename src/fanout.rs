//! Fanout: delivering one encoded frame to a room, a user (all devices) or a socket,
//! wherever in the cluster the recipients are.
//!
//! Local recipients are served straight from the hub; the same bytes go to the broker in an
//! envelope naming the target, so every other instance delivers to its own local recipients.
//! The frame is encoded once per publish and shared (`Bytes`) by every recipient on every
//! instance. Rooms travel on per-room channels that an instance subscribes to while it has a
//! local member; users and sockets are routed through the registry to the instances that hold
//! them; presence transitions go to every instance.
//!
//! Envelope (our own, binary): `kind u8 | origin len u8 | origin | target len u16 | target |
//! exclude len u16 | exclude | frame…`. Receivers ignore envelopes they published themselves.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use crate::{
    chat::feed::Feed,
    hub::{Hub, Interest},
    state::{
        StateError,
        broker::{Broker, Channel, Message},
        presence::PresenceStore,
    },
    telemetry::metrics::{self, FanoutKind, Origin},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Kind {
    Room = 1,
    User = 2,
    Socket = 3,
    /// A presence update: the frame is prefixed with its version (u64, big-endian).
    Watchers = 4,
    /// A chat message: the frame is prefixed with its seq (i64, big-endian).
    Chat = 5,
    /// A member removed from a conversation: `exclude` names the user.
    ChatKick = 6,
    /// A volatile chat event (typing): `exclude` names the sending socket.
    ChatVolatile = 7,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Room,
            2 => Kind::User,
            3 => Kind::Socket,
            4 => Kind::Watchers,
            5 => Kind::Chat,
            6 => Kind::ChatKick,
            7 => Kind::ChatVolatile,
            _ => return None,
        })
    }
}

struct Envelope<'a> {
    kind: Kind,
    origin: &'a str,
    target: &'a str,
    exclude: Option<&'a str>,
    frame: Bytes,
}

fn encode(env: &Envelope<'_>) -> Bytes {
    let exclude = env.exclude.unwrap_or_default();
    let mut buf = BytesMut::with_capacity(
        6 + env.origin.len() + env.target.len() + exclude.len() + env.frame.len(),
    );
    buf.put_u8(env.kind as u8);
    // Ids are bounded far below these widths (instance ids ≤ 64, rooms and users ≤ 128).
    buf.put_u8(env.origin.len().min(255) as u8);
    buf.put_slice(&env.origin.as_bytes()[..env.origin.len().min(255)]);
    buf.put_u16(env.target.len().min(u16::MAX as usize) as u16);
    buf.put_slice(env.target.as_bytes());
    buf.put_u16(exclude.len() as u16);
    buf.put_slice(exclude.as_bytes());
    buf.put_slice(&env.frame);
    buf.freeze()
}

/// Parses an envelope; `None` for anything malformed (a foreign publisher on our channels).
fn decode(payload: &Bytes) -> Option<Envelope<'_>> {
    let b = payload.as_ref();
    let kind = Kind::from_u8(*b.first()?)?;
    let mut at = 1;
    let origin_len = *b.get(at)? as usize;
    at += 1;
    let origin = std::str::from_utf8(b.get(at..at + origin_len)?).ok()?;
    at += origin_len;
    let mut field = || -> Option<&str> {
        let len = u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize;
        let s = std::str::from_utf8(b.get(at + 2..at + 2 + len)?).ok()?;
        at += 2 + len;
        Some(s)
    };
    let target = field()?;
    let exclude = field()?;
    Some(Envelope {
        kind,
        origin,
        target,
        exclude: (!exclude.is_empty()).then_some(exclude),
        frame: payload.slice(at..),
    })
}

/// Splits a chat envelope's body into its seq (or a presence version, whose bits are read back
/// with `as u64`) and frame.
fn split_seq(body: &Bytes) -> Option<(i64, Bytes)> {
    let seq = i64::from_be_bytes(body.get(..8)?.try_into().ok()?);
    Some((seq, body.slice(8..)))
}

/// `n` (8 bytes, big-endian) then `frame`: a chat seq or a presence version in front of the
/// frame it orders.
fn prefixed(n: [u8; 8], frame: &Bytes) -> Bytes {
    let mut body = BytesMut::with_capacity(8 + frame.len());
    body.put_slice(&n);
    body.put_slice(frame);
    body.freeze()
}

pub struct Fanout {
    instance_id: String,
    hub: Arc<Hub>,
    feed: Arc<Feed>,
    broker: Arc<dyn Broker>,
    presence: Arc<dyn PresenceStore>,
}

impl Fanout {
    pub fn new(
        instance_id: String,
        hub: Arc<Hub>,
        feed: Arc<Feed>,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
    ) -> Self {
        Self { instance_id, hub, feed, broker, presence }
    }

    fn envelope(&self, kind: Kind, target: &str, exclude: Option<&str>, frame: Bytes) -> Bytes {
        encode(&Envelope { kind, origin: &self.instance_id, target, exclude, frame })
    }

    /// Delivers `frame` to every member of `room` in the cluster, except `exclude`.
    pub async fn to_room(
        &self,
        room: &str,
        frame: Bytes,
        exclude: Option<&str>,
    ) -> Result<usize, StateError> {
        let local = self.hub.deliver_room(room, &frame, exclude);
        metrics::fanout_delivered(Origin::Local, local);
        let env = self.envelope(Kind::Room, room, exclude, frame);
        metrics::fanout_published(FanoutKind::Room);
        self.broker.publish(&Channel::Room(room.to_owned()), env).await?;
        Ok(local)
    }

    /// Delivers `frame` to every session of `user`, on every instance.
    pub async fn to_user(&self, user: &str, frame: Bytes) -> Result<usize, StateError> {
        let local = self.hub.deliver_user(user, &frame);
        metrics::fanout_delivered(Origin::Local, local);
        let mut instances: Vec<String> = self
            .presence
            .sockets_of_user(user)
            .await?
            .into_iter()
            .map(|s| s.instance_id)
            .filter(|i| *i != self.instance_id)
            .collect();
        instances.sort_unstable();
        instances.dedup();
        if !instances.is_empty() {
            let env = self.envelope(Kind::User, user, None, frame);
            for instance in instances {
                metrics::fanout_published(FanoutKind::User);
                self.broker.publish(&Channel::Instance(instance), env.clone()).await?;
            }
        }
        Ok(local)
    }

    /// Delivers `frame` to one socket, on whichever instance holds it.
    pub async fn to_socket(
        &self,
        socket_id: &str,
        owner_instance: &str,
        frame: Bytes,
    ) -> Result<(), StateError> {
        if owner_instance == self.instance_id {
            metrics::fanout_delivered(Origin::Local, self.hub.deliver_socket(socket_id, &frame));
            return Ok(());
        }
        let env = self.envelope(Kind::Socket, socket_id, None, frame);
        metrics::fanout_published(FanoutKind::Socket);
        self.broker.publish(&Channel::Instance(owner_instance.to_owned()), env).await
    }

    /// Delivers a presence update about `user` to every session watching them, cluster-wide.
    pub async fn to_watchers(
        &self,
        user: &str,
        version: u64,
        frame: Bytes,
    ) -> Result<usize, StateError> {
        let local = self.hub.deliver_watchers(user, version, &frame);
        metrics::fanout_delivered(Origin::Local, local);
        let env =
            self.envelope(Kind::Watchers, user, None, prefixed(version.to_be_bytes(), &frame));
        metrics::fanout_published(FanoutKind::Watchers);
        self.broker.publish(&Channel::Presence, env).await?;
        Ok(local)
    }

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
        self.broker.publish(&Channel::Conversation(conversation.to_owned()), env).await
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
        self.broker.publish(&Channel::Conversation(conversation.to_owned()), env).await
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
        self.broker.publish(&Channel::Conversation(conversation.to_owned()), env).await
    }

    /// Subscribes this instance to `conversation` (its first local member joined).
    pub async fn watch_conversation(&self, conversation: &str) {
        let channel = Channel::Conversation(conversation.to_owned());
        if let Err(e) = crate::cluster::bounded(self.broker.subscribe(&channel)).await {
            // The resync after the outage resubscribes and reads what was missed.
            tracing::warn!(conversation, error = %e, "subscribing a conversation channel failed");
        }
    }

    /// Unsubscribes `conversation` (its last local member left) — and subscribes again if a
    /// member joined while the unsubscribe was in flight.
    pub async fn release_conversation(&self, conversation: &str) {
        let channel = Channel::Conversation(conversation.to_owned());
        if let Err(e) = crate::cluster::bounded(self.broker.unsubscribe(&channel)).await {
            tracing::warn!(conversation, error = %e, "unsubscribing a conversation channel failed");
        }
        if self.feed.has(conversation) {
            self.watch_conversation(conversation).await;
        }
    }

    /// Joins `socket_id` to `room`, subscribing this instance to the room's channel when it
    /// is the first local member.
    pub async fn join(
        &self,
        socket_id: &str,
        room: &str,
        max_rooms: usize,
    ) -> Result<(), crate::hub::HubError> {
        if self.hub.join(socket_id, room, max_rooms)? == Interest::First {
            let channel = Channel::Room(room.to_owned());
            let subscribe = self.broker.subscribe(&channel);
            if let Err(e) = crate::cluster::bounded(subscribe).await {
                // Local members still get local publishes; the resync after the outage
                // resubscribes every room with members.
                tracing::warn!(room, error = %e, "subscribing a room channel failed");
            }
        }
        Ok(())
    }

    pub async fn leave(&self, socket_id: &str, room: &str) {
        if self.hub.leave(socket_id, room) == Interest::Last {
            self.unsubscribe_room(room).await;
        }
    }

    pub async fn unsubscribe_room(&self, room: &str) {
        let channel = Channel::Room(room.to_owned());
        let unsubscribe = self.broker.unsubscribe(&channel);
        if let Err(e) = crate::cluster::bounded(unsubscribe).await {
            tracing::warn!(room, error = %e, "unsubscribing a room channel failed");
        }
    }

    /// Subscribes the channels every instance needs, and every room with a local member
    /// (after an outage).
    pub async fn subscribe_base(&self) -> Result<(), StateError> {
        self.broker.subscribe(&Channel::Instance(self.instance_id.clone())).await?;
        self.broker.subscribe(&Channel::Presence).await?;
        for room in self.hub.rooms() {
            self.broker.subscribe(&Channel::Room(room.to_string())).await?;
        }
        for conversation in self.feed.streams() {
            self.broker.subscribe(&Channel::Conversation(conversation.to_string())).await?;
        }
        // Whatever was published while this instance was not listening is in the store.
        self.feed.catch_up_all();
        Ok(())
    }

    /// Checks the broker connection (and lets a Redis broker reconnect and resubscribe).
    pub async fn ping(&self) -> Result<(), StateError> {
        self.broker.ping().await
    }

    /// Delivers one message from the broker to local recipients.
    pub fn deliver(self: &Arc<Self>, msg: &Message) {
        let Some(env) = decode(&msg.payload) else {
            tracing::debug!(channel = ?msg.channel, "ignoring a malformed fanout envelope");
            return;
        };
        if env.origin == self.instance_id {
            return; // Already delivered locally when published.
        }
        let delivered = match env.kind {
            Kind::Room => self.hub.deliver_room(env.target, &env.frame, env.exclude),
            Kind::User => self.hub.deliver_user(env.target, &env.frame),
            Kind::Socket => self.hub.deliver_socket(env.target, &env.frame),
            Kind::Watchers => {
                let Some((version, frame)) = split_seq(&env.frame) else { return };
                self.hub.deliver_watchers(env.target, version as u64, &frame)
            }
            Kind::Chat => {
                let Some((seq, frame)) = split_seq(&env.frame) else { return };
                self.feed.receive(env.target, "", crate::chat::feed::seq(seq), frame);
                0
            }
            Kind::ChatKick => {
                let user = env.exclude.unwrap_or_default();
                if self.feed.kick(env.target, user, &env.frame) {
                    let fanout = self.clone();
                    let conversation = env.target.to_owned();
                    tokio::spawn(async move { fanout.release_conversation(&conversation).await });
                }
                0
            }
            Kind::ChatVolatile => self.feed.broadcast(env.target, env.exclude, &env.frame, true),
        };
        metrics::fanout_delivered(Origin::Remote, delivered);
    }

    /// Runs until the broker's receiver closes: delivers every incoming message.
    pub async fn run(self: Arc<Self>) {
        let Some(mut rx) = self.broker.take_receiver() else {
            tracing::error!("broker receiver already taken; cross-instance fanout is off");
            return;
        };
        while let Some(msg) = rx.recv().await {
            self.deliver(&msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_and_shares_the_frame() {
        let frame = Bytes::from_static(br#"{"type":"event"}"#);
        let env = encode(&Envelope {
            kind: Kind::Room,
            origin: "rtg-1",
            target: "room/ä",
            exclude: Some("s1"),
            frame: frame.clone(),
        });
        let d = decode(&env).unwrap();
        assert_eq!(
            (d.kind, d.origin, d.target, d.exclude),
            (Kind::Room, "rtg-1", "room/ä", Some("s1"))
        );
        assert_eq!(d.frame, frame);
        let d2 =
            encode(&Envelope { kind: Kind::User, origin: "o", target: "u", exclude: None, frame });
        assert_eq!(decode(&d2).unwrap().exclude, None);
    }

    #[test]
    fn malformed_envelopes_are_rejected_not_panicked_on() {
        for bad in [
            &b""[..],
            b"\x09",
            b"\x01\x05ab",
            b"\x01\x01a\x00\x09xy",
            b"\x01\x00\x00\x01\xff\x00\x00",
        ] {
            assert!(decode(&Bytes::copy_from_slice(bad)).is_none(), "{bad:?}");
        }
    }
}
