//! Channels: named streams of publications that connections subscribe to, authorized per
//! namespace, with per-channel presence, history and gapless recovery (PROTOCOL.md,
//! "Channels").
//!
//! - `name`: the naming rules, namespaces, user-limited names, claim patterns.
//! - `frames`: what goes on the wire and into history, encoded once.
//! - `source`: channel history as a `stream::Source`, so ordering, gap filling and recovery
//!   are the stream feed's (the same machinery as chat's), not a copy.
//! - `events`: the `channel:*` handlers: subscribe and unsubscribe (authorization, recovery);
//!   `requests`: publish, presence and history within a subscription; `dto`: their payloads.
//!
//! This module owns the subscriptions of this instance's sessions: the feed knows which
//! sessions receive which channel; `subs` knows, per session, what each subscription needs
//! at its end (presence to remove, a leave to announce, a token's expiry to watch).

pub mod backend;
pub mod dto;
pub mod events;
pub mod frames;
pub mod name;
pub mod requests;
pub mod source;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;

use self::{
    frames::Unsubscribe,
    source::{ChannelFeed, ChannelSource},
};
use crate::{
    cluster::bounded,
    config::{Config, NamespaceConfig},
    fanout::Fanout,
    session::outbound::Outbound,
    state::occupancy::{Change, Occupancy},
    state::{
        channel_presence::ChannelPresence,
        history::{History, Position},
    },
    stream::Lost,
};

/// How long a presence entry lives without a refresh; refreshed every third of it.
pub const PRESENCE_TTL: Duration = Duration::from_secs(60);

/// One subscription of one session.
struct Sub {
    namespace: Arc<NamespaceConfig>,
    outbound: Outbound,
    /// The client info in presence and join/leave notices.
    info: Bytes,
    /// Tells this subscription from an earlier one to the same channel (a token expiry timer
    /// of the old one must not end the new one).
    generation: u64,
}

/// socket → channel → subscription.
type Subs = HashMap<Arc<str>, HashMap<Arc<str>, Sub>>;

pub struct Channels {
    feed: Arc<ChannelFeed>,
    presence: Arc<dyn ChannelPresence>,
    occupancy: Arc<dyn Occupancy>,
    /// This instance's incarnation, its name in `occupancy`.
    instance: String,
    webhooks: crate::webhooks::Emitter,
    fanout: Arc<Fanout>,
    subs: Mutex<Subs>,
    generation: AtomicU64,
    max_subscriptions: usize,
    max_presence_list: usize,
    leeway: Duration,
}

impl Channels {
    /// The feed the fanout delivers channel publications into; built before the fanout.
    pub fn feed(config: &Config, history: Arc<dyn History>) -> Arc<ChannelFeed> {
        let source =
            ChannelSource::new(history, config.namespaces.clone(), config.history_meta_ttl);
        Arc::new(ChannelFeed::new(source, config.chat_gap_timeout))
    }

    pub fn new(
        config: &Config,
        feed: Arc<ChannelFeed>,
        (presence, occupancy): (Arc<dyn ChannelPresence>, Arc<dyn Occupancy>),
        fanout: Arc<Fanout>,
        (instance, webhooks): (String, crate::webhooks::Emitter),
    ) -> Arc<Self> {
        let channels = Arc::new(Channels {
            feed,
            presence,
            occupancy,
            instance,
            webhooks,
            fanout,
            subs: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(1),
            max_subscriptions: config.max_subscriptions,
            max_presence_list: config.max_presence_list,
            leeway: config.jwt.leeway,
        });
        channels.feed.source().bind(Arc::downgrade(&channels));
        channels
    }

    fn lock(&self) -> MutexGuard<'_, Subs> {
        // Every update leaves the map consistent before anything can panic.
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_subscribed(&self, socket: &str, channel: &str) -> bool {
        self.lock().get(socket).is_some_and(|s| s.contains_key(channel))
    }

    /// Ends `socket`'s subscription to `channel`: out of the feed (and the broker channel when
    /// it was the last local one), out of presence, a leave announced. `why` tells the session
    /// when the server ended it. A no-op when not subscribed.
    pub async fn end(&self, socket: &str, channel: &str, why: Option<Unsubscribe>) {
        let Some(sub) = self.take(socket, channel) else { return };
        if let Some(why) = why {
            sub.outbound.send(frames::unsubscribed_frame(channel, why));
        }
        if self.feed.leave(socket, channel) {
            self.fanout.release_channel(channel).await;
        }
        self.forget(channel, socket, &sub).await;
    }

    fn take(&self, socket: &str, channel: &str) -> Option<Sub> {
        let mut subs = self.lock();
        let of_socket = subs.get_mut(socket)?;
        let sub = of_socket.remove(channel);
        if of_socket.is_empty() {
            subs.remove(socket);
        }
        sub
    }

    /// A subscription started (+1) or ended (−1) here: the cluster's count of the channel's
    /// subscribers, and `channel.occupied` / `channel.vacated` when it is the first or last.
    async fn occupy(&self, channel: &str, delta: i64) {
        match crate::cluster::bounded(self.occupancy.add(channel, &self.instance, delta)).await {
            Ok(Change::Occupied) => {
                self.webhooks.emit("channel.occupied", occupancy_event(channel))
            }
            Ok(Change::Vacated) => self.webhooks.emit("channel.vacated", occupancy_event(channel)),
            Ok(Change::Unchanged) => {}
            // Counts drift until the instance restarts; events may be missed, nothing else.
            Err(e) => tracing::debug!(channel, error = %e, "updating channel occupancy failed"),
        }
    }

    /// Presence and join/leave bookkeeping of a subscription that ended.
    async fn forget(&self, channel: &str, socket: &str, sub: &Sub) {
        self.occupy(channel, -1).await;
        if !sub.namespace.presence {
            return;
        }
        if let Err(e) = crate::cluster::bounded(self.presence.remove(channel, socket)).await {
            // The entry expires within PRESENCE_TTL without refreshes.
            tracing::debug!(channel, error = %e, "removing channel presence failed");
        }
        if sub.namespace.join_leave {
            let frame = frames::notice_frame("channel:leave", channel, &sub.info);
            if let Err(e) =
                crate::cluster::bounded(self.fanout.channel_notice(channel, Some(socket), frame))
                    .await
            {
                tracing::debug!(channel, error = %e, "announcing a leave failed");
            }
        }
    }

    /// The session ended: its subscriptions go, now for the local maps and in the returned
    /// future (run by the session's teardown task) for shared state.
    pub fn session_closed(self: &Arc<Self>, socket: &Arc<str>) -> Option<BoxFuture<'static, ()>> {
        let subs = self.lock().remove(socket)?;
        let emptied = self.feed.remove_socket(socket);
        let channels = self.clone();
        let socket = socket.clone();
        Some(Box::pin(async move {
            for channel in emptied {
                channels.fanout.release_channel(&channel).await;
            }
            for (channel, sub) in subs {
                channels.forget(&channel, &socket, &sub).await;
            }
        }))
    }

    /// The feed lost `channel`'s state: its live members were taken out; tell them and
    /// forget their subscriptions.
    async fn lost(&self, channel: &str, members: Vec<Lost>, emptied: bool) {
        for (socket, outbound) in members {
            outbound.send(frames::unsubscribed_frame(channel, Unsubscribe::StateLost));
            if let Some(sub) = self.take(&socket, channel) {
                self.forget(channel, &socket, &sub).await;
            }
        }
        if emptied {
            self.fanout.release_channel(channel).await;
        }
    }

    /// Ends a token subscription when its token expires, unless it ended or was replaced.
    fn expire_at(self: &Arc<Self>, socket: Arc<str>, channel: Arc<str>, generation: u64, exp: u64) {
        let at = std::time::UNIX_EPOCH + Duration::from_secs(exp) + self.leeway;
        let wait = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
        let channels = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            let Some(channels) = channels.upgrade() else { return };
            let current = channels
                .lock()
                .get(&socket)
                .and_then(|s| s.get(&channel))
                .is_some_and(|sub| sub.generation == generation);
            if current {
                channels.end(&socket, &channel, Some(Unsubscribe::SubscriptionExpired)).await;
            }
        });
    }

    /// Keeps this instance's presence entries alive. Runs until `shutdown`.
    pub async fn refresh_presence(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(PRESENCE_TTL / 3) => {}
                _ = shutdown.cancelled() => return,
            }
            let entries: Vec<(String, String)> = self
                .lock()
                .iter()
                .flat_map(|(socket, subs)| {
                    subs.iter()
                        .filter(|(_, sub)| sub.namespace.presence)
                        .map(move |(channel, _)| (channel.to_string(), socket.to_string()))
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            if let Err(e) =
                crate::cluster::bounded(self.presence.refresh(&entries, PRESENCE_TTL)).await
            {
                tracing::warn!(error = %e, entries = entries.len(), "refreshing channel presence failed");
            }
        }
    }

    /// Adds this instance's presence entries again (after a shared-state outage: the store
    /// may have lost them).
    pub async fn restore_presence(&self) -> Result<(), crate::state::StateError> {
        let entries: Vec<(Arc<str>, Arc<str>, Bytes)> = self
            .lock()
            .iter()
            .flat_map(|(socket, subs)| {
                subs.iter()
                    .filter(|(_, sub)| sub.namespace.presence)
                    .map(move |(channel, sub)| (channel.clone(), socket.clone(), sub.info.clone()))
            })
            .collect();
        for (channel, socket, info) in entries {
            let user = frames::info_user(&info).unwrap_or_default();
            let add = self.presence.add(&channel, &socket, &user, info, PRESENCE_TTL);
            crate::cluster::bounded(add).await?;
        }
        Ok(())
    }

    fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::Relaxed)
    }
}

/// The `data` of `channel.occupied` / `channel.vacated`.
pub(crate) fn occupancy_event(channel: &str) -> serde_json::Value {
    serde_json::json!({ "channel": channel, "at": crate::state::now_ms() })
}

impl Channels {
    /// Publishes `data` to `channel` (of namespace `ns`), stored first when the namespace
    /// keeps history, then delivered cluster-wide. The position when stored. The caller has
    /// authorized it (a subscriber where `client_publish` allows, the backend, `--dev-events`).
    pub async fn publish(
        &self,
        channel: &str,
        ns: &NamespaceConfig,
        data: &RawValue,
        info: Option<&[u8]>,
    ) -> Result<Option<Position>, crate::state::StateError> {
        let fields = frames::fields(data, info);
        let source = self.feed.source();
        let Some(opts) = source.options(channel) else {
            let frame = frames::publication_frame(channel, None, &fields);
            bounded(self.fanout.to_channel(channel, None, frame, ns.volatile)).await?;
            return Ok(None);
        };
        let position = bounded(source.history().append(channel, fields.clone(), &opts)).await?;
        let frame = frames::publication_frame(channel, Some(position.offset), &fields);
        let pos = Some((&*position.epoch, position.offset));
        if let Err(e) = bounded(self.fanout.to_channel(channel, pos, frame, false)).await {
            // Stored: instances that miss it fill the gap from history when the next one
            // arrives (or on their next catch-up).
            tracing::warn!(channel, error = %e, "publishing a stored publication failed");
        }
        Ok(Some(position))
    }
}
