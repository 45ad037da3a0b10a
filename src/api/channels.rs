//! A channel's presence and history for the backend, history removal, and ending a user's
//! subscription server-side.

use axum::{Json, extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::{
    ApiState,
    error::{ApiError, ApiErrorBody, ApiJson},
    publish::Empty,
    resolve, schema,
};
use crate::commands::{self, Command};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelRequest {
    #[schema(schema_with = schema::channel)]
    channel: String,
}

fn not_enabled(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "not_enabled",
        format!("the channel's namespace keeps no {what}"),
    )
}

#[derive(Serialize, ToSchema)]
pub struct PresenceResult {
    /// `{clientId, userId, deviceId, data?}` per subscribed connection.
    #[schema(value_type = Vec<Object>)]
    clients: Box<RawValue>,
}

/// Who is subscribed to a channel (namespaces with `presence`).
#[utoipa::path(post, path = "/api/v1/presence", tag = "channels", request_body = ChannelRequest,
    responses(
        (status = 200, body = PresenceResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn presence(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<ChannelRequest>,
) -> Result<Json<PresenceResult>, ApiError> {
    let ns = resolve(&api.node, &req.channel)?;
    if !ns.presence {
        return Err(not_enabled("presence"));
    }
    let clients = api
        .node
        .channels
        .presence_list(&req.channel)
        .await
        .map_err(|e| ApiError::unavailable("channel presence", &e))?;
    Ok(Json(PresenceResult { clients }))
}

#[derive(Serialize, ToSchema)]
pub struct PresenceStatsResult {
    /// Connections subscribed.
    clients: usize,
    /// Distinct users among them.
    users: usize,
}

/// How many connections and users are subscribed to a channel (namespaces with `presence`).
#[utoipa::path(post, path = "/api/v1/presence-stats", tag = "channels", request_body = ChannelRequest,
    responses(
        (status = 200, body = PresenceStatsResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn presence_stats(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<ChannelRequest>,
) -> Result<Json<PresenceStatsResult>, ApiError> {
    let ns = resolve(&api.node, &req.channel)?;
    if !ns.presence {
        return Err(not_enabled("presence"));
    }
    let stats = api
        .node
        .channels
        .presence_stats(&req.channel)
        .await
        .map_err(|e| ApiError::unavailable("channel presence", &e))?;
    Ok(Json(PresenceStatsResult { clients: stats.clients, users: stats.users }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Since {
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    offset: u64,
    epoch: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryRequest {
    #[schema(schema_with = schema::channel)]
    channel: String,
    /// Publications after this position (oldest first); from another epoch, none.
    since: Option<Since>,
    /// 1 to 1000, default 10.
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// The newest publications, newest first (`since` is then ignored).
    #[serde(default)]
    reverse: bool,
}

#[derive(Serialize, ToSchema)]
pub struct HistoryResult {
    /// `{channel, offset, data, info?}` each.
    #[schema(value_type = Vec<Object>)]
    publications: Box<RawValue>,
    /// Where the history stands: the last offset …
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    offset: u64,
    /// … in this epoch.
    epoch: String,
}

/// Most publications one history call returns.
const MAX_HISTORY_LIMIT: u32 = 1000;

/// A channel's publications (namespaces with history).
#[utoipa::path(post, path = "/api/v1/history", tag = "channels", request_body = HistoryRequest,
    responses(
        (status = 200, body = HistoryResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn history(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<HistoryRequest>,
) -> Result<Json<HistoryResult>, ApiError> {
    resolve(&api.node, &req.channel)?;
    let limit = req.limit.unwrap_or(10);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!("`limit` is 1 to {MAX_HISTORY_LIMIT}")));
    }
    let since = req.since.as_ref().map(|s| (s.offset, s.epoch.as_str()));
    let read = api
        .node
        .channels
        .history_read(&req.channel, since, limit as usize, req.reverse)
        .await
        .map_err(|e| ApiError::unavailable("channel history", &e))?
        .ok_or_else(|| not_enabled("history"))?;
    Ok(Json(HistoryResult {
        publications: read.publications,
        offset: read.offset,
        epoch: read.epoch.to_string(),
    }))
}

/// Removes a channel's publications. Its offset and epoch stay.
#[utoipa::path(post, path = "/api/v1/history-remove", tag = "channels", request_body = ChannelRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn history_remove(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<ChannelRequest>,
) -> Result<Json<Empty>, ApiError> {
    resolve(&api.node, &req.channel)?;
    let removed = api
        .node
        .channels
        .history_remove(&req.channel)
        .await
        .map_err(|e| ApiError::unavailable("channel history", &e))?;
    if !removed {
        return Err(not_enabled("history"));
    }
    Ok(Json(Empty {}))
}

/// Subscribes a user's sessions (or one) to a channel, on every instance, with no
/// authorization by the namespace: each gets `channel:subscribed` and then the channel's
/// publications. Sessions that connect later are not subscribed.
#[utoipa::path(post, path = "/api/v1/subscribe", tag = "channels", request_body = UnsubscribeRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn subscribe(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<UnsubscribeRequest>,
) -> Result<Json<Empty>, ApiError> {
    super::users::user_id(&req.user)?;
    resolve(&api.node, &req.channel)?;
    let cmd = Command::Subscribe { user: req.user, channel: req.channel, session: req.session };
    commands::broadcast(&api.node, &cmd).await.map_err(|e| ApiError::unavailable("fanout", &e))?;
    Ok(Json(Empty {}))
}

/// `{user, channel, session?}`: subscribe and unsubscribe.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnsubscribeRequest {
    #[schema(schema_with = schema::user_id)]
    user: String,
    #[schema(schema_with = schema::channel)]
    channel: String,
    /// Only this session (its `sessionId` from `connected`); every session of the user when
    /// absent.
    session: Option<String>,
}

/// Ends a user's subscriptions to a channel, on every instance: each gets
/// `channel:unsubscribed` with code `unsubscribed` (do not resubscribe automatically).
#[utoipa::path(post, path = "/api/v1/unsubscribe", tag = "channels", request_body = UnsubscribeRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn unsubscribe(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<UnsubscribeRequest>,
) -> Result<Json<Empty>, ApiError> {
    super::users::user_id(&req.user)?;
    resolve(&api.node, &req.channel)?;
    let cmd = Command::Unsubscribe { user: req.user, channel: req.channel, session: req.session };
    commands::broadcast(&api.node, &cmd).await.map_err(|e| ApiError::unavailable("fanout", &e))?;
    Ok(Json(Empty {}))
}
