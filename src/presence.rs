//! Presence as clients see it: the `presence:subscribe`, `presence:unsubscribe` and
//! `presence:query` events, and the `presence:update` events pushed to watchers on every
//! cluster-wide online/offline transition. The transitions themselves are decided by the
//! `PresenceStore` (atomically, across instances); this module announces them.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;
use validator::Validate;

use crate::{
    cluster::bounded,
    dispatch::{EventError, Router},
    hub::HubError,
    node::Node,
    protocol::encode_event,
    session::SessionCtx,
    state::presence::{Transition, UserPresence},
    validate::{Dto, FieldError, identifier, validated},
};

/// Most user ids one request may name.
pub const MAX_USERS_PER_REQUEST: usize = 100;

pub fn register(router: Router) -> Router {
    router
        .on("presence:subscribe", subscribe)
        .on("presence:unsubscribe", unsubscribe)
        .on("presence:query", query)
}

#[derive(Debug, Deserialize, Validate)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserIds {
    #[validate(
        length(min = 1, max = 100, message = "must name 1 to 100 users"),
        custom(function = "identifiers")
    )]
    pub user_ids: Vec<String>,
}

/// Every id an identifier (the `length` rule above bounds how many).
fn identifiers(ids: &[String]) -> Result<(), validator::ValidationError> {
    ids.iter().try_for_each(|id| identifier(id))
}

impl Dto for UserIds {
    fn validate(&self) -> Result<(), Vec<FieldError>> {
        validated(self)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PresenceEntry {
    user_id: String,
    online: bool,
    devices: usize,
    /// The snapshot's version: updates at or below it are older than this answer.
    version: u64,
}

#[derive(Debug, Serialize)]
pub struct PresenceReply {
    users: Vec<PresenceEntry>,
}

impl From<Vec<UserPresence>> for PresenceReply {
    fn from(users: Vec<UserPresence>) -> Self {
        let users = users
            .into_iter()
            .map(|u| PresenceEntry {
                user_id: u.user_id,
                online: u.online,
                devices: u.devices,
                version: u.version,
            })
            .collect();
        PresenceReply { users }
    }
}

async fn current(ctx: &SessionCtx, users: &[String]) -> Result<PresenceReply, EventError> {
    match bounded(ctx.node.presence.query(users)).await {
        Ok(users) => Ok(users.into()),
        Err(e) => {
            ctx.node.backends.mark_degraded("presence query", &e);
            Err(EventError::Unavailable("presence is unavailable".into()))
        }
    }
}

/// Starts pushing `presence:update` for these users; acks with their current presence.
async fn subscribe(ctx: Arc<SessionCtx>, dto: UserIds) -> Result<PresenceReply, EventError> {
    let max = ctx.node.config.max_presence_subscriptions;
    ctx.node.hub.watch(&ctx.socket_id, &dto.user_ids, max).map_err(|e| match e {
        HubError::Limit(n) => {
            EventError::LimitExceeded(format!("at most {n} presence subscriptions per connection"))
        }
        HubError::UnknownSession => EventError::Internal(anyhow::anyhow!("session not in hub")),
    })?;
    // Listening before the snapshot is read: a transition after the snapshot is delivered.
    for user in &dto.user_ids {
        ctx.node.fanout.watch_user(user).await;
    }
    current(&ctx, &dto.user_ids).await
}

async fn unsubscribe(ctx: Arc<SessionCtx>, dto: UserIds) -> Result<(), EventError> {
    for user in ctx.node.hub.unwatch(&ctx.socket_id, &dto.user_ids) {
        ctx.node.fanout.release_user(user).await;
    }
    Ok(())
}

async fn query(ctx: Arc<SessionCtx>, dto: UserIds) -> Result<PresenceReply, EventError> {
    current(&ctx, &dto.user_ids).await
}

/// Tells every watcher in the cluster about a transition. Each instance delivers a user's
/// updates in version order and drops one older than what it already delivered (a reconnect on
/// one instance racing the teardown on another publishes `online` and `offline` from two
/// places, and they can arrive in either order), so the last update a watcher gets is the
/// user's state. A transition the store saw nobody listen for (`Transition::watched`) is not
/// published: only this instance's watchers, if it has any, are told.
pub async fn announce(node: &Node, t: &Transition) {
    if !t.watched && !node.hub.is_watched(&t.user_id) {
        return;
    }
    let data = json!({
        "userId": t.user_id,
        "status": t.status.as_str(),
        "deviceId": t.device_id,
        "at": t.at_ms,
        "version": t.version,
    });
    let Ok(raw) = serde_json::value::to_raw_value(&data) else {
        return;
    };
    let frame = encode_event("presence:update", &raw);
    if !t.watched {
        node.fanout.to_local_watchers(&t.user_id, t.version, &frame);
        return;
    }
    if let Err(e) = bounded(node.fanout.to_watchers(&t.user_id, t.version, frame)).await {
        node.backends.mark_degraded("presence announce", &e);
    }
}
