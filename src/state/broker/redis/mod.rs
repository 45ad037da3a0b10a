//! Redis backend: owns this instance's two Redis connections for cross-instance fanout, its set
//! of subscribed channels, and the task that turns Redis pushes into [`Message`]s
//! (`pushes.rs`). Channel names: `names.rs`.
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
//!
//! # On Redis Cluster: sharded pub/sub
//! Given a `redis+cluster://` URL, both connections are cluster connections and the broker uses
//! sharded pub/sub (`SPUBLISH`/`SSUBSCRIBE`): a message goes only to the shard owning its
//! channel's slot (classic `PUBLISH` would be broadcast over the cluster bus to every node).
//! The cluster connection records the confirmed sharded subscriptions and, when it reconnects
//! a node or learns a new slot map (a failover, a slot migration), resubscribes each one on the
//! node that now owns its slot. Messages then arrive as `smessage` pushes.
//!
//! A master that hands its slots over while still up (a manual failover, a resharding) tells
//! its shard subscribers so with an `sunsubscribe` push, and the connection then forgets the
//! subscription. The broker answers such a push for a channel it still wants by subscribing
//! again (routed, through the redirection, to the new owner), retrying until it succeeds or
//! the channel is no longer wanted: see [`follow_slot_moves`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::ProtocolVersion;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

mod names;
mod pushes;

use names::{channel_name, watch_topic_base};
use pushes::translate;

use super::{Broker, Channel, Message};
use crate::state::StateError;
use crate::state::redis_conn::{Cluster, RedisConn, RedisTls, Target, manager_config};

/// Broker over Redis pub/sub, shared by every instance using the same Redis and prefix.
#[derive(Debug)]
pub struct RedisBroker {
    prefix: String,
    publisher: RedisConn,
    subscriber: Subscriber,
    /// Channels this instance asked for. Guarded by an async lock held across the Redis round
    /// trip so that concurrent (un)subscribes of one channel are applied in a single order.
    /// Shared (weakly) with the translator, which resubscribes what a slot move dropped.
    subscribed: Arc<Subscribed>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Message>>>,
    translator: AbortHandle,
}

impl RedisBroker {
    /// What a user's watch topic ([`Channel::Watch`]) is named up to the user id, for the
    /// presence scripts to count its subscribers; `None` on a cluster, where the topic is a
    /// sharded channel in a slot of its own that a script elsewhere cannot see.
    pub fn watch_topic_base(&self) -> Option<String> {
        match self.subscriber {
            Subscriber::Single(_) => Some(watch_topic_base(&self.prefix)),
            Subscriber::Cluster(_) => None,
        }
    }

    /// Opens the publisher and the RESP3 subscriber connection to `url` (one Redis, or a
    /// cluster by its `redis+cluster://` seed nodes). Channel names start with `prefix`. Fails
    /// if Redis cannot be reached now; later outages are survived.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> Result<Self, StateError> {
        Self::connect_with(url, prefix, &RedisTls::default()).await
    }

    /// As `connect`, with the TLS material a `rediss://` or `rediss+cluster://` target needs.
    pub async fn connect_with(
        url: &str,
        prefix: impl Into<String>,
        tls: &RedisTls,
    ) -> Result<Self, StateError> {
        let prefix = prefix.into();
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        // Set once the translator's `Follow` exists; held weakly, so the subscriber connection
        // (which holds this) and the `Follow` (which holds the subscriber) are no cycle.
        let resubscribe_to: Arc<OnceLock<Weak<Follow>>> = Arc::default();
        let (publisher, subscriber) = match Target::parse(url)? {
            Target::Single(info) => {
                let resp3 = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
                let subscriber_info = (*info).clone().set_redis_settings(resp3);
                let publisher =
                    ConnectionManager::new_with_config(tls.client(*info)?, manager_config())
                        .await?;
                let subscriber = ConnectionManager::new_with_config(
                    tls.client(subscriber_info)?,
                    manager_config().set_push_sender(push_tx).set_automatic_resubscription(),
                )
                .await?;
                (RedisConn::Single(publisher), Subscriber::Single(subscriber))
            }
            Target::Cluster(seeds) => {
                let publisher = Cluster::connect(tls.cluster(seeds.clone()).build()?, None).await?;
                // A push sender makes the cluster connection track subscriptions and move them
                // with their slots. A replacement connection (a stale slot map, see
                // `redis_conn`) starts with none: every wanted channel is subscribed again.
                let resubscribe = resubscribe_to.clone();
                let on_replace = Box::new(move || {
                    if let Some(follow) = resubscribe.get().and_then(Weak::upgrade) {
                        tokio::spawn(resubscribe_all(follow));
                    }
                });
                let client = tls
                    .cluster(seeds)
                    .use_protocol(ProtocolVersion::RESP3)
                    .push_sender(push_tx)
                    .build()?;
                let subscriber = Cluster::connect(client, Some(on_replace)).await?;
                (RedisConn::Cluster(publisher), Subscriber::Cluster(subscriber))
            }
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let subscribed = Arc::new(Subscribed::default());
        let follow = matches!(subscriber, Subscriber::Cluster(_)).then(|| {
            Arc::new(Follow {
                prefix: prefix.clone(),
                subscriber: subscriber.clone(),
                subscribed: Arc::downgrade(&subscribed),
            })
        });
        if let Some(follow) = &follow {
            let _ = resubscribe_to.set(Arc::downgrade(follow));
        }
        let translator =
            tokio::spawn(translate(prefix.clone(), push_rx, tx, follow)).abort_handle();

        Ok(Self { prefix, publisher, subscriber, subscribed, rx: Mutex::new(Some(rx)), translator })
    }
}

type Subscribed = tokio::sync::Mutex<HashSet<Channel>>;

/// What the translator needs to resubscribe a sharded channel the server dropped.
struct Follow {
    prefix: String,
    subscriber: Subscriber,
    subscribed: Weak<Subscribed>,
}

/// Longest wait between two attempts to resubscribe a dropped sharded channel.
const RESUBSCRIBE_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Subscribes `channel` again after the server dropped it (its slot moved), until that
/// succeeds, the channel is no longer wanted (an `unsubscribe` removed it; the lock orders the
/// two), or the broker is gone. A failure (the slot's new owner not reachable yet) waits and
/// retries with a growing delay.
async fn follow_slot_moves(follow: Arc<Follow>, channel: Channel) {
    let name = channel_name(&follow.prefix, &channel);
    let mut backoff = Duration::from_millis(50);
    loop {
        let Some(subscribed) = follow.subscribed.upgrade() else { return };
        {
            let wanted = subscribed.lock().await;
            if !wanted.contains(&channel) {
                return;
            }
            match follow.subscriber.clone().subscribe(name.clone()).await {
                Ok(()) => {
                    tracing::info!(channel = %name, "broker: resubscribed after a slot move");
                    return;
                }
                Err(e) => {
                    tracing::warn!(channel = %name, error = %e, "broker: resubscribe failed; retrying");
                }
            }
        }
        drop(subscribed);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RESUBSCRIBE_MAX_BACKOFF);
    }
}

/// Subscribes every wanted channel again, on a subscriber connection that replaced one whose
/// slot map was stale.
async fn resubscribe_all(follow: Arc<Follow>) {
    let Some(subscribed) = follow.subscribed.upgrade() else { return };
    let channels: Vec<Channel> = subscribed.lock().await.iter().cloned().collect();
    drop(subscribed);
    tracing::info!(channels = channels.len(), "broker: resubscribing on a new cluster connection");
    for channel in channels {
        tokio::spawn(follow_slot_moves(follow.clone(), channel));
    }
}

/// The subscriber connection: classic pub/sub on one Redis, sharded pub/sub on a cluster.
#[derive(Clone)]
enum Subscriber {
    Single(ConnectionManager),
    Cluster(Cluster),
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Subscriber::Single(_) => "Subscriber::Single",
            Subscriber::Cluster(_) => "Subscriber::Cluster",
        })
    }
}

impl Subscriber {
    async fn subscribe(&mut self, name: String) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(c) => c.subscribe(name).await,
            Subscriber::Cluster(c) => {
                let mut conn = c.current();
                c.watch(conn.ssubscribe(name)).await
            }
        }
    }

    async fn unsubscribe(&mut self, name: String) -> redis::RedisResult<()> {
        match self {
            Subscriber::Single(c) => c.unsubscribe(name).await,
            Subscriber::Cluster(c) => {
                let mut conn = c.current();
                c.watch(conn.sunsubscribe(name)).await
            }
        }
    }

    async fn ping(&mut self) -> redis::RedisResult<()> {
        let ping = redis::cmd("PING");
        match self {
            Subscriber::Single(c) => ping.query_async(c).await,
            Subscriber::Cluster(c) => {
                let mut conn = c.current();
                c.watch(ping.query_async(&mut conn)).await
            }
        }
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
        // On a cluster, to the shard owning the channel's slot only.
        redis::cmd(if con.is_cluster() { "SPUBLISH" } else { "PUBLISH" })
            .arg(channel_name(&self.prefix, channel))
            .arg(payload.as_ref())
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    async fn publish_all(&self, messages: &[(Channel, Bytes)]) -> Result<(), StateError> {
        let mut con = self.publisher.clone();
        if con.is_cluster() {
            // A pipeline must stay on one slot (see `redis_conn`), and these channels hash to
            // many: one pipeline per channel keeps each channel's order in one round trip (a
            // burst on one channel awaited message by message took 256 round trips, past the
            // state timeout in a connect storm), the channels go concurrently.
            let mut by_channel: Vec<(&Channel, Vec<&[u8]>)> = Vec::new();
            for (channel, payload) in messages {
                match by_channel.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, payloads)) => payloads.push(payload),
                    None => by_channel.push((channel, vec![payload])),
                }
            }
            let sends = by_channel.into_iter().map(|(channel, payloads)| {
                let mut con = con.clone();
                let name = channel_name(&self.prefix, channel);
                async move {
                    let mut pipe = redis::pipe();
                    for payload in payloads {
                        pipe.cmd("SPUBLISH").arg(&name).arg(payload).ignore();
                    }
                    pipe.query_async::<()>(&mut con).await?;
                    Ok::<(), StateError>(())
                }
            });
            futures_util::future::try_join_all(sends).await?;
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in messages {
            pipe.cmd("PUBLISH").arg(channel_name(&self.prefix, channel)).arg(payload.as_ref());
            pipe.ignore();
        }
        pipe.query_async::<()>(&mut con).await?;
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
        let (sub, publ) = tokio::join!(subscriber.ping(), ping.query_async::<()>(&mut publisher));
        sub?;
        publ?;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
