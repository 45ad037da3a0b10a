//! The `channel:*` events, registered here: subscribe (authorization per namespace, recovery)
//! and unsubscribe in this file; the requests a subscription allows (publish, presence,
//! presence stats, history) in `requests`; their payloads in `dto`. Every refusal that could
//! tell whether a channel exists for someone else is the same `permission_denied`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    Sub,
    dto::{ChannelDto, SubscribeDto},
    frames, name, requests,
};
use crate::{
    auth::AuthError,
    cluster::bounded,
    config::{NamespaceConfig, SubscribeMode},
    dispatch::{Acked, EventError, Router},
    session::SessionCtx,
    state::history::{Position, Range},
    stream::{Deliver, Finish, Top},
};

/// Source reads a subscribe repeats when another join's read raced it (`Finish::Stale`).
const JOIN_ATTEMPTS: usize = 3;

pub fn register(router: Router) -> Router {
    router
        .on_acked("channel:subscribe", subscribe)
        .on("channel:unsubscribe", unsubscribe)
        .on("channel:publish", requests::publish)
        .on("channel:presence", requests::presence)
        .on("channel:presence-stats", requests::presence_stats)
        .on("channel:history", requests::history)
}

pub(super) fn unavailable(ctx: &SessionCtx, what: &str, e: crate::state::StateError) -> EventError {
    ctx.node.backends.mark_degraded(what, &e);
    EventError::Unavailable(format!("{what} is unavailable"))
}

/// The channel's name and namespace, or the refusal: `bad_channel` for a bad name,
/// `permission_denied` for a namespace that does not exist.
pub(super) fn resolve<'a>(
    ctx: &SessionCtx,
    channel: &'a str,
) -> Result<(name::ChannelName<'a>, Arc<NamespaceConfig>), EventError> {
    let parsed = name::parse(channel).map_err(EventError::BadChannel)?;
    let ns = ctx.node.config.namespaces.get(parsed.namespace).cloned();
    Ok((parsed, ns.ok_or(EventError::PermissionDenied(None))?))
}

/// What an authorization grants beyond the subscription itself.
#[derive(Default)]
struct Grant {
    /// A subscription token's `exp`: the subscription ends then.
    expires_at: Option<u64>,
    /// Presence info from a subscription token or the subscribe proxy.
    info: Option<String>,
}

/// Whether this connection may subscribe, and what the authorization grants.
async fn authorize(
    ctx: &SessionCtx,
    ns: &NamespaceConfig,
    channel: &name::ChannelName<'_>,
    dto: &SubscribeDto,
) -> Result<Grant, EventError> {
    let user = &*ctx.user_id;
    let allowed = match ns.subscribe {
        SubscribeMode::Public => true,
        SubscribeMode::User => channel.allows_user(user),
        SubscribeMode::Claim => {
            ctx.channel_claims.iter().any(|entry| name::claim_matches(entry, channel.full))
        }
        SubscribeMode::Token => {
            let token = dto.token.as_deref().unwrap_or_default();
            return match ctx.node.auth.verify_subscription(token, user, channel.full) {
                Ok(g) => Ok(Grant { expires_at: Some(g.expires_at), info: g.info }),
                Err(AuthError::Expired) => Err(EventError::PermissionDenied(Some("token_expired"))),
                Err(_) => Err(EventError::PermissionDenied(None)),
            };
        }
        SubscribeMode::Proxy => {
            let url = ns.subscribe_proxy_url.as_deref();
            let url = url.or(ctx.node.proxies.config().subscribe_url.as_deref());
            let data = dto.data.as_deref();
            let info = crate::proxy::events::subscribe(ctx, url, channel.full, data).await?;
            return Ok(Grant { expires_at: None, info });
        }
    };
    if allowed { Ok(Grant::default()) } else { Err(EventError::PermissionDenied(None)) }
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
    let grant = authorize(&ctx, &ns, &channel, &dto).await?;
    subscribe_authorized(&ctx, &ns, &dto, grant).await
}

/// Subscribes `ctx` to a channel on the backend's word (the server API): no authorization by
/// the namespace, no recovery. The session gets `channel:subscribed` with what a
/// `channel:subscribe` ack would carry, then the channel's live publications.
pub async fn server_subscribe(ctx: Arc<SessionCtx>, channel: &str) -> Result<(), EventError> {
    let (_, ns) = resolve(&ctx, channel)?;
    let dto = SubscribeDto { channel: channel.to_owned(), token: None, since: None, data: None };
    let Acked { data, then } = subscribe_authorized(&ctx, &ns, &dto, Grant::default()).await?;
    ctx.outbound.send(crate::protocol::encode_event("channel:subscribed", &data));
    then();
    Ok(())
}

async fn subscribe_authorized(
    ctx: &Arc<SessionCtx>,
    ns: &Arc<NamespaceConfig>,
    dto: &SubscribeDto,
    grant: Grant,
) -> Result<Acked, EventError> {
    let channels = &ctx.node.channels;
    let channel = dto.channel.as_str();
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
    match join(ctx, ns, channel, dto, grant).await {
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
    grant: Grant,
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
    let data = grant.info.clone().or_else(|| dto.data.as_ref().map(|d| d.get().to_owned()));
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
    channels.occupy(&channel, 1).await;
    if let Some(exp) = grant.expires_at {
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

/// Whether `entries` fit in one answer: half the connection's outbound budget.
pub(super) fn fits(ctx: &SessionCtx, entries: &[(u64, bytes::Bytes)]) -> bool {
    let bytes: usize = entries.iter().map(|(_, f)| f.len() + 48).sum();
    bytes <= ctx.node.config.outbound_queue_bytes / 2
}
