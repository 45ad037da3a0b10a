//! Built-in `sys:*` events, used by tests, benchmarks and client health checks.
//!
//! `sys:user-publish` (a direct push to every connection of a user) and `sys:channel-publish`
//! (a channel publication as the backend would make it) need no authorization beyond a valid
//! token; they exist for tests and benchmarks and are only registered with `--dev-events`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, value::RawValue};
use validator::Validate;

use super::{EventError, Router};
use crate::{
    cluster::bounded,
    protocol::{MAX_EVENT_NAME_LEN, encode_event},
    session::SessionCtx,
    validate::{Dto, FieldError, identifier, validated},
};

pub fn register(router: Router, dev_events: bool) -> Router {
    let router = router
        .on("sys:echo", echo)
        .on("sys:volatile-echo", volatile_echo)
        .on("sys:refresh", refresh);
    if !dev_events {
        return router;
    }
    router.on("sys:user-publish", user_publish).on("sys:channel-publish", channel_publish)
}

/// Acks with the payload it was given, unchanged: the whole pipeline with a handler that
/// costs nothing.
async fn echo(_ctx: Arc<SessionCtx>, data: Box<RawValue>) -> Result<Box<RawValue>, EventError> {
    Ok(data)
}

/// Sends the payload back as a volatile `sys:volatile-echo` event (a datagram on
/// WebTransport, an ordinary frame on WebSocket), then acks with `null`.
async fn volatile_echo(ctx: Arc<SessionCtx>, data: Box<RawValue>) -> Result<(), EventError> {
    ctx.outbound.send_volatile(encode_event("sys:volatile-echo", &data));
    Ok(())
}

/// The `sys:refresh` payload: a new connection token for the same user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    token: String,
}

impl Dto for Refresh {}

/// Replaces the session's token with a newer one of the same user (and device, when the
/// token pins one): the session then ends at the new token's expiry, and a revocation is
/// judged by the new token. The connect token's other claims (`channels`, roles) stay.
async fn refresh(ctx: Arc<SessionCtx>, dto: Refresh) -> Result<serde_json::Value, EventError> {
    let denied = |why: &str| EventError::Forbidden(format!("refresh refused: {why}"));
    let identity = ctx.node.auth.verify(&dto.token).map_err(|e| denied(&e.to_string()))?;
    if identity.user_id != *ctx.user_id {
        return Err(denied("the token is for another user"));
    }
    if identity.device_id.as_deref().is_some_and(|d| d != &*ctx.device_id) {
        return Err(denied("the token is for another device"));
    }
    if crate::session::is_revoked(&ctx.node, &identity) {
        return Err(denied("the token was revoked"));
    }
    let cfg = &ctx.node.config.jwt;
    ctx.token.replace(&identity, cfg.leeway, cfg.refresh_notice);
    Ok(json!({ "expiresAt": identity.expires_at.saturating_mul(1000) }))
}

/// The `sys:user-publish` payload. Public (fields private) only so the `dto_parse` fuzz target
/// can name it.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Publish {
    #[validate(custom(function = "identifier"))]
    user_id: String,
    #[validate(custom(function = "event_name"))]
    event: String,
    data: Box<RawValue>,
}

fn event_name(name: &str) -> Result<(), validator::ValidationError> {
    if crate::protocol::valid_event_name(name) {
        return Ok(());
    }
    Err(validator::ValidationError::new("event_name").with_message(
        format!("must be 1 to {MAX_EVENT_NAME_LEN} characters of [A-Za-z0-9:._-]").into(),
    ))
}

impl Dto for Publish {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

/// Publishes `{event, data}` to every session of `userId`, on every instance, and acks with the
/// number of local deliveries.
async fn user_publish(ctx: Arc<SessionCtx>, dto: Publish) -> Result<serde_json::Value, EventError> {
    let frame = encode_event(&dto.event, &dto.data);
    let local = bounded(ctx.node.fanout.to_user(&dto.user_id, frame)).await.map_err(|e| {
        ctx.node.backends.mark_degraded("publish", &e);
        EventError::Unavailable("fanout is unavailable".into())
    })?;
    Ok(json!({ "localDeliveries": local }))
}

/// The `sys:channel-publish` payload: a publication "from the backend" (no `client_publish`
/// or subscription needed), for tests and benchmarks until the server API exists.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelPublish {
    channel: String,
    data: Box<RawValue>,
}

impl Dto for ChannelPublish {}

async fn channel_publish(
    ctx: Arc<SessionCtx>,
    dto: ChannelPublish,
) -> Result<serde_json::Value, EventError> {
    let parsed = crate::channels::name::parse(&dto.channel).map_err(EventError::BadChannel)?;
    let ns = ctx
        .node
        .config
        .namespaces
        .get(parsed.namespace)
        .cloned()
        .ok_or(EventError::PermissionDenied(None))?;
    let position =
        ctx.node.channels.publish(&dto.channel, &ns, &dto.data, None).await.map_err(|e| {
            ctx.node.backends.mark_degraded("channel publish", &e);
            EventError::Unavailable("channel history is unavailable".into())
        })?;
    Ok(match position {
        Some(p) => json!({ "offset": p.offset, "epoch": &*p.epoch }),
        None => json!({}),
    })
}
