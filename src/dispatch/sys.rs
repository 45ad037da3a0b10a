//! Built-in `sys:*` events, used by tests, benchmarks and client health checks.
//!
//! The `sys:room-*` and `sys:user-publish` events are open rooms and direct pushes with no
//! authorization beyond a valid token; they exist for tests and benchmarks and are only
//! registered with `--dev-events`.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, value::RawValue};
use validator::Validate;

use super::{EventError, Router};
use crate::{
    cluster::bounded,
    hub::HubError,
    protocol::{MAX_EVENT_NAME_LEN, encode_event},
    session::SessionCtx,
    validate::{Dto, FieldError, identifier, validated},
};

pub fn register(router: Router, dev_events: bool) -> Router {
    let router = router.on("sys:echo", echo).on("sys:volatile-echo", volatile_echo);
    if !dev_events {
        return router;
    }
    router
        .on("sys:room-join", room_join)
        .on("sys:room-leave", room_leave)
        .on("sys:room-publish", room_publish)
        .on("sys:user-publish", user_publish)
        .on("sys:channel-publish", channel_publish)
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

fn field(path: &str, rule: &str, message: &str) -> FieldError {
    FieldError { path: path.into(), rule: rule.into(), message: message.into() }
}

/// The `sys:room-join` / `sys:room-leave` payload. Public (fields private) only so the
/// `dto_parse` fuzz target can name it.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields)]
pub struct Room {
    #[validate(custom(function = "identifier"))]
    room: String,
}

impl Dto for Room {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

/// The `sys:room-publish` / `sys:user-publish` payload. Public (fields private) only so the
/// `dto_parse` fuzz target can name it.
#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Publish {
    #[serde(default)]
    room: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[validate(custom(function = "event_name"))]
    event: String,
    data: Box<RawValue>,
    /// Also deliver to the publishing session (rooms only).
    #[serde(default)]
    include_self: bool,
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
        let mut errors = validated(self).err().unwrap_or_default();
        let target = match (&self.room, &self.user_id) {
            (Some(room), None) => identifier(room).map_err(|e| ("room", e)),
            (None, Some(user)) => identifier(user).map_err(|e| ("userId", e)),
            _ => {
                errors.push(field("", "one_of", "exactly one of `room` and `userId` is required"));
                Ok(())
            }
        };
        if let Err((path, e)) = target {
            errors.push(field(path, &e.code, &e.message.unwrap_or_default()));
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }
}

async fn room_join(ctx: Arc<SessionCtx>, dto: Room) -> Result<(), EventError> {
    let max = ctx.node.config.max_rooms_per_socket;
    ctx.node.fanout.join(&ctx.socket_id, &dto.room, max).await.map_err(|e| match e {
        HubError::Limit(n) => {
            EventError::LimitExceeded(format!("at most {n} rooms per connection"))
        }
        HubError::UnknownSession => EventError::Internal(anyhow::anyhow!("session not in hub")),
    })
}

async fn room_leave(ctx: Arc<SessionCtx>, dto: Room) -> Result<(), EventError> {
    ctx.node.fanout.leave(&ctx.socket_id, &dto.room).await;
    Ok(())
}

fn unavailable(ctx: &SessionCtx, e: crate::state::StateError) -> EventError {
    ctx.node.backends.mark_degraded("publish", &e);
    EventError::Unavailable("fanout is unavailable".into())
}

/// Publishes `{event, data}` to a room (`room`) and acks with the number of local deliveries.
async fn room_publish(ctx: Arc<SessionCtx>, dto: Publish) -> Result<serde_json::Value, EventError> {
    let Some(room) = dto.room.as_deref() else {
        return Err(EventError::Validation(vec![field("room", "required", "`room` is required")]));
    };
    let frame = encode_event(&dto.event, &dto.data);
    let exclude = (!dto.include_self).then_some(&*ctx.socket_id);
    let local = bounded(ctx.node.fanout.to_room(room, frame, exclude))
        .await
        .map_err(|e| unavailable(&ctx, e))?;
    Ok(json!({ "localDeliveries": local }))
}

/// Publishes `{event, data}` to every session of `userId`, on every instance.
async fn user_publish(ctx: Arc<SessionCtx>, dto: Publish) -> Result<serde_json::Value, EventError> {
    let Some(user) = dto.user_id.as_deref() else {
        return Err(EventError::Validation(vec![field(
            "userId",
            "required",
            "`userId` is required",
        )]));
    };
    let frame = encode_event(&dto.event, &dto.data);
    let local =
        bounded(ctx.node.fanout.to_user(user, frame)).await.map_err(|e| unavailable(&ctx, e))?;
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
