//! The requests a subscription allows: `channel:publish` (where the namespace lets
//! subscribers publish), `channel:presence`, `channel:presence-stats` and `channel:history`.

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{
    dto::{ChannelDto, HistoryDto, PublishDto},
    events::{fits, resolve, unavailable},
    frames,
};
use crate::{
    cluster::bounded, config::NamespaceConfig, dispatch::EventError, session::SessionCtx,
    state::history::Range,
};

#[derive(Serialize, Default)]
pub(super) struct PublishAck {
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<Arc<str>>,
}

pub(super) async fn publish(
    ctx: Arc<SessionCtx>,
    dto: PublishDto,
) -> Result<PublishAck, EventError> {
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
    // The backend may refuse the publication or rewrite it first.
    let rewritten = if ns.publish_proxy {
        let url = ns.publish_proxy_url.as_deref();
        let url = url.or(ctx.node.proxies.config().publish_url.as_deref());
        crate::proxy::events::publish(&ctx, url, channel.full, &dto.data).await?
    } else {
        None
    };
    let data = rewritten.as_deref().unwrap_or(&dto.data);
    let position = channels
        .publish(channel.full, &ns, data, info.as_deref())
        .await
        .map_err(|e| unavailable(&ctx, "channel history", e))?;
    Ok(PublishAck { offset: position.as_ref().map(|p| p.offset), epoch: position.map(|p| p.epoch) })
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
pub(super) struct PresenceAck {
    clients: Box<RawValue>,
}

pub(super) async fn presence(
    ctx: Arc<SessionCtx>,
    dto: ChannelDto,
) -> Result<PresenceAck, EventError> {
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
pub(super) struct StatsAck {
    clients: usize,
    users: usize,
}

pub(super) async fn presence_stats(
    ctx: Arc<SessionCtx>,
    dto: ChannelDto,
) -> Result<StatsAck, EventError> {
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
pub(super) struct HistoryAck {
    publications: Box<RawValue>,
    offset: u64,
    epoch: Arc<str>,
}

pub(super) async fn history(
    ctx: Arc<SessionCtx>,
    dto: HistoryDto,
) -> Result<HistoryAck, EventError> {
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
