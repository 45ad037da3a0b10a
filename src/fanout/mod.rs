//! Fanout: delivering one encoded frame to a user (all devices), a socket, presence watchers,
//! a chat conversation or a channel, wherever in the cluster the recipients are.
//!
//! Local recipients are served straight from the hub (or a stream feed); the same bytes go to
//! the broker in an envelope naming the target, so every other instance delivers to its own
//! local recipients. The frame is encoded once per publish and shared (`Bytes`) by every
//! recipient on every instance. Users and sockets are routed through the registry to the
//! instances that hold them; a user's presence transitions, a conversation and a channel each
//! travel on a broker channel of their own that an instance subscribes to while it has a local
//! watcher or member (`topics`), so what nobody on an instance wants never reaches it.
//!
//! Senders do not wait for the broker: envelopes go through `outbox`, an ordered queue that
//! one task publishes in bursts (one round trip each), so a publisher's events are not spaced
//! a Redis round trip apart.
//!
//! Envelopes (`envelope`) name the target; receivers ignore envelopes they published
//! themselves.

mod envelope;
mod outbox;
mod streams;
mod topics;

use std::sync::Arc;

use bytes::Bytes;

use envelope::{Envelope, Kind, decode, encode, prefixed, split_seq};
use outbox::Outbox;

use crate::{
    channels::source::ChannelFeed,
    chat::feed::Feed,
    hub::Hub,
    state::{
        StateError,
        broker::{Broker, Channel, Message},
        presence::PresenceStore,
    },
    telemetry::metrics::{self, FanoutKind, Origin},
};

pub struct Fanout {
    instance_id: String,
    hub: Arc<Hub>,
    /// Chat conversations' ordered delivery.
    feed: Arc<Feed>,
    /// Channels' ordered delivery (and their local subscribers).
    channels: Arc<ChannelFeed>,
    broker: Arc<dyn Broker>,
    /// Envelopes on their way to the broker, in order; senders do not wait for it.
    outbox: Outbox,
    presence: Arc<dyn PresenceStore>,
    /// Cluster commands from other instances, for `commands::run` (taken once).
    commands: (tokio::sync::mpsc::Sender<Bytes>, std::sync::Mutex<Option<CommandRx>>),
}

type CommandRx = tokio::sync::mpsc::Receiver<Bytes>;

/// Cluster commands waiting to be applied; more are dropped (with a warning). Commands are
/// rare API calls, so this is never reached short of a flood.
const COMMAND_QUEUE: usize = 1024;

impl Fanout {
    pub fn new(
        instance_id: String,
        hub: Arc<Hub>,
        feed: Arc<Feed>,
        channels: Arc<ChannelFeed>,
        broker: Arc<dyn Broker>,
        presence: Arc<dyn PresenceStore>,
        health: Arc<crate::state::guard::Health>,
    ) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(COMMAND_QUEUE);
        let commands = (tx, std::sync::Mutex::new(Some(rx)));
        let outbox = Outbox::spawn(broker.clone(), health);
        Self { instance_id, hub, feed, channels, broker, outbox, presence, commands }
    }

    /// Sends a cluster command (`commands::Command`, encoded) to every other instance. Unlike
    /// deliveries, it waits for the broker: the server API reports whether it went out.
    pub async fn command(&self, body: Bytes) -> Result<(), StateError> {
        let env = self.envelope(Kind::Command, "", None, body);
        self.broker.publish(&Channel::Cluster, env).await
    }

    /// The commands other instances send; `None` after the first call.
    pub fn take_commands(&self) -> Option<CommandRx> {
        self.commands.1.lock().ok()?.take()
    }

    fn envelope(&self, kind: Kind, target: &str, exclude: Option<&str>, frame: Bytes) -> Bytes {
        encode(&Envelope { kind, origin: &self.instance_id, target, exclude, frame })
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
                self.outbox.post(Channel::Instance(instance), env.clone())?;
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
        self.outbox.post(Channel::Instance(owner_instance.to_owned()), env)
    }

    /// Delivers a presence update about `user` to every session watching them, cluster-wide:
    /// on the user's own topic, which only instances with a watcher of theirs listen to.
    pub async fn to_watchers(
        &self,
        user: &str,
        version: u64,
        frame: Bytes,
    ) -> Result<usize, StateError> {
        let local = self.to_local_watchers(user, version, &frame);
        let env =
            self.envelope(Kind::Watchers, user, None, prefixed(version.to_be_bytes(), &frame));
        metrics::fanout_published(FanoutKind::Watchers);
        self.outbox.post(Channel::Watch(user.to_owned()), env)?;
        Ok(local)
    }

    /// Delivers a presence update about `user` to this instance's watchers only: for a
    /// transition no instance listens for (`Transition::watched`), which published would reach
    /// nobody.
    pub fn to_local_watchers(&self, user: &str, version: u64, frame: &Bytes) -> usize {
        let local = self.hub.deliver_watchers(user, version, frame);
        metrics::fanout_delivered(Origin::Local, local);
        local
    }

    /// Subscribes the channels every instance needs, and every watched user, conversation and
    /// channel with a local watcher or member (after an outage).
    pub async fn subscribe_base(&self) -> Result<(), StateError> {
        self.broker.subscribe(&Channel::Instance(self.instance_id.clone())).await?;
        self.broker.subscribe(&Channel::Cluster).await?;
        for user in self.hub.watched_users() {
            self.broker.subscribe(&Channel::Watch(user.to_string())).await?;
        }
        for conversation in self.feed.streams() {
            self.broker.subscribe(&Channel::Conversation(conversation.to_string())).await?;
        }
        for channel in self.channels.streams() {
            self.broker.subscribe(&Channel::Chan(channel.to_string())).await?;
        }
        // Whatever was published while this instance was not listening is in the store (or
        // the channel history).
        self.feed.catch_up_all();
        self.channels.catch_up_all();
        Ok(())
    }

    /// Waits until every envelope queued so far went to the broker (or failed), at most
    /// `STATE_TIMEOUT`.
    pub async fn flush(&self) {
        let flushed = async {
            self.outbox.flush().await;
            Ok(())
        };
        if crate::cluster::bounded(flushed).await.is_err() {
            tracing::warn!("fanout: the broker queue did not drain before the exit");
        }
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
            Kind::ChannelPub => {
                let Some((offset, epoch, frame)) = envelope::channel_position(&env.frame) else {
                    return;
                };
                self.channels.receive(env.target, epoch, offset, frame);
                0
            }
            Kind::ChannelPlain => {
                self.channels.broadcast(env.target, env.exclude, &env.frame, false)
            }
            Kind::ChannelVolatile => {
                self.channels.broadcast(env.target, env.exclude, &env.frame, true)
            }
            Kind::Command => {
                if self.commands.0.try_send(env.frame.clone()).is_err() {
                    tracing::warn!("cluster command queue full; a command was dropped");
                }
                0
            }
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
