//! The `channel:*` events: subscribe (authorization per namespace, recovery), unsubscribe,
//! publish, presence, presence stats and history. Every refusal that could tell whether a
//! channel exists for someone else is the same `permission_denied`.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{Channels, Sub, frames, name};
use crate::{
    auth::AuthError,
    cluster::bounded,
    config::{NamespaceConfig, SubscribeMode},
    dispatch::{Acked, EventError, Router},
    session::SessionCtx,
    state::history::{Position, Range},
    stream::{Deliver, Finish, Top},
    validate::{Dto, FieldError, optional_object},
};

/// Largest `data` a subscriber may attach to its presence, in bytes of JSON.
pub const MAX_CLIENT_DATA: usize = 1024;
/// Source reads a subscribe repeats when another join's read raced it (`Finish::Stale`).
const JOIN_ATTEMPTS: usize = 3;

pub fn register(router: Router) -> Router {
    router
        .on_acked("channel:subscribe", subscribe)
        .on("channel:unsubscribe", unsubscribe)
        .on("channel:publish", publish)
        .on("channel:presence", presence)
        .on("channel:presence-stats", presence_stats)
        .on("channel:history", history)
}

/// A position in a channel's history, as a client holds it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeDto {
    channel: String,
    #[serde(default)]
    token: Option<String>,
    #[serde(default, deserialize_with = "optional_object")]
    since: Option<Since>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

impl Dto for SubscribeDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        match &self.data {
            Some(d) if d.get().len() > MAX_CLIENT_DATA => Err(vec![FieldError {
                path: "data".into(),
                rule: "length".into(),
                message: format!("must be at most {MAX_CLIENT_DATA} bytes of JSON"),
            }]),
            _ => Ok(()),
        }
    }
}

/// `{"channel"}`: unsubscribe, presence, presence stats.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDto {
    channel: String,
}

impl Dto for ChannelDto {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishDto {
    channel: String,
    data: Box<RawValue>,
}

impl Dto for PublishDto {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryDto {
    channel: String,
    #[serde(default, deserialize_with = "optional_object")]
    since: Option<Since>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    reverse: bool,
}

/// Most publications one `channel:history` returns.
pub const MAX_HISTORY_LIMIT: u32 = 100;

impl Dto for HistoryDto {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        match self.limit {
            Some(l) if !(1..=MAX_HISTORY_LIMIT).contains(&l) => Err(vec![FieldError {
                path: "limit".into(),
                rule: "range".into(),
                message: format!("must be 1 to {MAX_HISTORY_LIMIT}"),
            }]),
            _ => Ok(()),
        }
    }
}

fn unavailable(ctx: &SessionCtx, what: &str, e: crate::state::StateError) -> EventError {
    ctx.node.backends.mark_degraded(what, &e);
    EventError::Unavailable(format!("{what} is unavailable"))
}

/// The channel's name and namespace, or the refusal: `bad_channel` for a bad name,
/// `permission_denied` for a namespace that does not exist.
fn resolve<'a>(
    ctx: &SessionCtx,
    channel: &'a str,
) -> Result<(name::ChannelName<'a>, Arc<NamespaceConfig>), EventError> {
    let parsed = name::parse(channel).map_err(EventError::BadChannel)?;
    let ns = ctx.node.config.namespaces.get(parsed.namespace).cloned();
    Ok((parsed, ns.ok_or(EventError::PermissionDenied(None))?))
}

/// Whether this connection may subscribe; `Some(exp, info)` for a subscription token.
fn authorize(
    ctx: &SessionCtx,
    ns: &NamespaceConfig,
    channel: &name::ChannelName<'_>,
    token: Option<&str>,
) -> Result<Option<(u64, Option<String>)>, EventError> {
    let user = &*ctx.user_id;
    let allowed = match ns.subscribe {
        SubscribeMode::Public => true,
        SubscribeMode::User => channel.allows_user(user),
        SubscribeMode::Claim => {
            ctx.identity.channels.iter().any(|entry| name::claim_matches(entry, channel.full))
        }
        SubscribeMode::Token => {
            let token = token.unwrap_or_default();
            return match ctx.node.auth.verify_subscription(token, user, channel.full) {
                Ok(grant) => Ok(Some((grant.expires_at, grant.info))),
                Err(AuthError::Expired) => Err(EventError::PermissionDenied(Some("token_expired"))),
                Err(_) => Err(EventError::PermissionDenied(None)),
            };
        }
        // Refused at start (`Config::check`); kept total.
        SubscribeMode::Proxy => false,
    };
    if allowed { Ok(None) } else { Err(EventError::PermissionDenied(None)) }
}

#[derive(Serialize)]
struct SubscribeAck<'a> {
    channel: &'a str,
    offset: u64,
    epoch: &'a str,
    recovered: bool,
    publications: Box<RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<Box<RawValue>>,
}

async fn subscribe(ctx: Arc<SessionCtx>, dto: SubscribeDto) -> Result<Acked, EventError> {
    let (channel, ns) = resolve(&ctx, &dto.channel)?;
    let grant = authorize(&ctx, &ns, &channel, dto.token.as_deref())?;
    let channels = &ctx.node.channels;
    let channel = channel.full;
    if channels.is_subscribed(&ctx.socket_id, channel) {
        return Err(EventError::AlreadySubscribed);
    }
    let max = channels.max_subscriptions;
    let first = channels
        .feed
        .begin_join(&ctx.socket_id, &ctx.user_id, &ctx.outbound, channel, max)
        .map_err(|n| {
            EventError::LimitExceeded(format!("at most {n} subscriptions per connection"))
        })?;
    if first {
        channels.fanout.watch_channel(channel).await;
    }
    match join(&ctx, &ns, channel, &dto, grant).await {
        Ok(acked) => Ok(acked),
        Err(e) => {
            if channels.feed.leave(&ctx.socket_id, channel) {
                channels.fanout.release_channel(channel).await;
            }
            Err(e)
        }
    }
}

/// After `begin_join`: reads the history (recovering from `since` where the namespace allows),
/// finishes the join, adds presence, and answers; the subscription goes live after the ack.
async fn join(
    ctx: &Arc<SessionCtx>,
    ns: &Arc<NamespaceConfig>,
    channel: &str,
    dto: &SubscribeDto,
    grant: Option<(u64, Option<String>)>,
) -> Result<Acked, EventError> {
    let channels = &ctx.node.channels;
    let source = channels.feed.source();
    let since = dto.since.as_ref().filter(|_| ns.recover);
    let mut answer = None;
    for _ in 0..JOIN_ATTEMPTS {
        let (top, recovered, entries) = match source.options(channel) {
            Some(opts) => {
                let range = Range::After(since.map_or(u64::MAX, |s| s.offset));
                let limit = if since.is_some() { opts.size } else { 0 };
                let page = bounded(source.history().read(channel, range, limit, &opts))
                    .await
                    .map_err(|e| unavailable(ctx, "channel history", e))?;
                let recovered = since.is_some_and(|s| {
                    *s.epoch == *page.top.epoch
                        && s.offset <= page.top.offset
                        && (s.offset == page.top.offset
                            || page.entries.first().is_some_and(|(o, _)| *o == s.offset + 1))
                });
                // An ack is one frame through the connection's outbound budget: recovery that
                // would not fit in half of it says "reload" instead of cutting the connection.
                let fits = fits(ctx, &page.entries);
                let recovered = recovered && fits;
                let entries = if recovered { page.entries } else { Vec::new() };
                (page.top, recovered, entries)
            }
            None => (Position { offset: 0, epoch: Arc::from("") }, false, Vec::new()),
        };
        let base = if recovered { since.map(|s| s.offset) } else { None };
        let handed: Vec<(u64, bytes::Bytes)> =
            entries.iter().map(|(o, _)| (*o, bytes::Bytes::new())).collect();
        let stream_top = Top { pos: top.offset, epoch: top.epoch.clone() };
        match channels.feed.finish_join(
            &ctx.socket_id,
            channel,
            base,
            &stream_top,
            &handed,
            Deliver::Later,
        ) {
            Finish::Done { .. } => {
                answer = Some((top, recovered, entries));
                break;
            }
            Finish::Gone => {
                return Err(EventError::Unavailable(
                    "the subscription ended while it was made".into(),
                ));
            }
            Finish::Stale => continue,
        }
    }
    let Some((top, recovered, entries)) = answer else {
        return Err(EventError::Unavailable("the channel is too busy to subscribe; retry".into()));
    };
    let data = grant
        .as_ref()
        .and_then(|(_, info)| info.clone())
        .or_else(|| dto.data.as_ref().map(|d| d.get().to_owned()));
    let info = frames::client_info(&ctx.socket_id, &ctx.user_id, &ctx.device_id, data.as_deref());
    let presence = if ns.presence {
        let add = channels.presence.add(
            channel,
            &ctx.socket_id,
            &ctx.user_id,
            info.clone(),
            super::PRESENCE_TTL,
        );
        bounded(add).await.map_err(|e| unavailable(ctx, "channel presence", e))?;
        let list = bounded(channels.presence.list(channel, channels.max_presence_list))
            .await
            .map_err(|e| unavailable(ctx, "channel presence", e))?;
        if ns.join_leave {
            let frame = frames::notice_frame("channel:join", channel, &info);
            if let Err(e) =
                bounded(channels.fanout.channel_notice(channel, Some(&ctx.socket_id), frame)).await
            {
                tracing::debug!(channel, error = %e, "announcing a join failed");
            }
        }
        Some(frames::array(&list))
    } else {
        None
    };
    let generation = channels.next_generation();
    let channel: Arc<str> = Arc::from(channel);
    channels.lock().entry(ctx.socket_id.clone()).or_default().insert(
        channel.clone(),
        Sub { namespace: ns.clone(), outbound: ctx.outbound.clone(), info, generation },
    );
    if let Some((exp, _)) = grant {
        channels.expire_at(ctx.socket_id.clone(), channel.clone(), generation, exp);
    }
    let ack = SubscribeAck {
        channel: &channel,
        offset: top.offset,
        epoch: &top.epoch,
        recovered,
        publications: frames::publications(&channel, &entries),
        presence,
    };
    let data = serde_json::value::to_raw_value(&ack).map_err(anyhow::Error::from)?;
    let feed = channels.feed.clone();
    let socket = ctx.socket_id.clone();
    Ok(Acked { data, then: Box::new(move || feed.go_live(&socket, &channel)) })
}

async fn unsubscribe(ctx: Arc<SessionCtx>, dto: ChannelDto) -> Result<(), EventError> {
    name::parse(&dto.channel).map_err(EventError::BadChannel)?;
    ctx.node.channels.end(&ctx.socket_id, &dto.channel, None).await;
    Ok(())
}

#[derive(Serialize, Default)]
struct PublishAck {
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<Arc<str>>,
}

async fn publish(ctx: Arc<SessionCtx>, dto: PublishDto) -> Result<PublishAck, EventError> {
    let (channel, ns) = resolve(&ctx, &dto.channel)?;
    if !ns.client_publish {
        return Err(EventError::PermissionDenied(None));
    }
    let channels = &ctx.node.channels;
    if !channels.is_subscribed(&ctx.socket_id, channel.full) {
        return Err(EventError::NotSubscribed);
    }
    let info = ns
        .publisher_info
        .then(|| frames::client_info(&ctx.socket_id, &ctx.user_id, &ctx.device_id, None));
    let position = channels
        .publish(channel.full, &ns, &dto.data, info.as_deref())
        .await
        .map_err(|e| unavailable(&ctx, "channel history", e))?;
    Ok(PublishAck { offset: position.as_ref().map(|p| p.offset), epoch: position.map(|p| p.epoch) })
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

/// Whether `entries` fit in one answer: half the connection's outbound budget.
fn fits(ctx: &SessionCtx, entries: &[(u64, bytes::Bytes)]) -> bool {
    let bytes: usize = entries.iter().map(|(_, f)| f.len() + 48).sum();
    bytes <= ctx.node.config.outbound_queue_bytes / 2
}

/// The subscription `ctx` must hold to read `channel`, and its namespace.
fn subscribed(ctx: &SessionCtx, channel: &str) -> Result<Arc<NamespaceConfig>, EventError> {
    let (_, ns) = resolve(ctx, channel)?;
    if !ctx.node.channels.is_subscribed(&ctx.socket_id, channel) {
        return Err(EventError::NotSubscribed);
    }
    Ok(ns)
}

#[derive(Serialize)]
struct PresenceAck {
    clients: Box<RawValue>,
}

async fn presence(ctx: Arc<SessionCtx>, dto: ChannelDto) -> Result<PresenceAck, EventError> {
    let ns = subscribed(&ctx, &dto.channel)?;
    if !ns.presence {
        return Err(EventError::PermissionDenied(None));
    }
    let channels = &ctx.node.channels;
    let list = bounded(channels.presence.list(&dto.channel, channels.max_presence_list))
        .await
        .map_err(|e| unavailable(&ctx, "channel presence", e))?;
    Ok(PresenceAck { clients: frames::array(&list) })
}

#[derive(Serialize)]
struct StatsAck {
    clients: usize,
    users: usize,
}

async fn presence_stats(ctx: Arc<SessionCtx>, dto: ChannelDto) -> Result<StatsAck, EventError> {
    let ns = subscribed(&ctx, &dto.channel)?;
    if !ns.presence {
        return Err(EventError::PermissionDenied(None));
    }
    let stats = bounded(ctx.node.channels.presence.stats(&dto.channel))
        .await
        .map_err(|e| unavailable(&ctx, "channel presence", e))?;
    Ok(StatsAck { clients: stats.clients, users: stats.users })
}

#[derive(Serialize)]
struct HistoryAck {
    publications: Box<RawValue>,
    offset: u64,
    epoch: Arc<str>,
}

async fn history(ctx: Arc<SessionCtx>, dto: HistoryDto) -> Result<HistoryAck, EventError> {
    subscribed(&ctx, &dto.channel)?;
    let source = ctx.node.channels.feed.source();
    let opts = source.options(&dto.channel).ok_or(EventError::PermissionDenied(None))?;
    let limit = dto.limit.unwrap_or(10) as usize;
    let range = match (&dto.since, dto.reverse) {
        (_, true) => Range::Newest,
        (Some(since), false) => Range::After(since.offset),
        (None, false) => Range::After(0),
    };
    let page = bounded(source.history().read(&dto.channel, range, limit, &opts))
        .await
        .map_err(|e| unavailable(&ctx, "channel history", e))?;
    let other_epoch = dto.since.as_ref().is_some_and(|s| *s.epoch != *page.top.epoch);
    let mut entries = if other_epoch { Vec::new() } else { page.entries };
    // The answer is one frame: fewer publications rather than one the connection cannot take.
    while !entries.is_empty() && !fits(&ctx, &entries) {
        entries.pop();
    }
    Ok(HistoryAck {
        publications: frames::publications(&dto.channel, &entries),
        offset: page.top.offset,
        epoch: page.top.epoch,
    })
}
