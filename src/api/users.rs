//! Users and their sessions: disconnect a user or one session, users' status in batch, and
//! token revocation (a user's tokens issued before a time, or one token by `jti`).

use std::time::Duration;

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiState,
    error::{ApiError, ApiErrorBody, ApiJson},
    publish::Empty,
    schema,
};
use crate::{
    cluster::bounded,
    commands::{self, Command},
    state::{
        now_ms,
        revocation::{self, Mark},
    },
    store::HistoryQuery,
};

/// A user id as tokens carry it: 1 to 128 bytes, no control characters.
pub(super) fn user_id(user: &str) -> Result<(), ApiError> {
    id_like(user, "a user id")
}

/// User ids and `jti`s: 1 to 128 bytes, no control characters (they become shared-state keys).
fn id_like(value: &str, what: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 128 || value.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} is 1 to 128 bytes without control characters"
        )));
    }
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    #[schema(schema_with = schema::user_id)]
    user: String,
    /// Only this session (`sessionId` from `connected`); every session of the user when absent.
    session: Option<String>,
    /// `true`: the sessions get `force_reconnect` (3010) and reconnect; `false` (default):
    /// `force_disconnect` (3504), and clients stay away until the application acts.
    #[serde(default)]
    reconnect: bool,
    /// For humans, in the `disconnect` frame's `message` (at most 256 bytes).
    #[schema(schema_with = schema::disconnect_message)]
    message: Option<String>,
}

/// Disconnects a user's sessions (or one session) on every instance.
#[utoipa::path(post, path = "/api/v1/disconnect", tag = "users", request_body = DisconnectRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 415, body = ApiErrorBody), (status = 503, body = ApiErrorBody),
    ))]
pub async fn disconnect(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<DisconnectRequest>,
) -> Result<Json<Empty>, ApiError> {
    user_id(&req.user)?;
    let message = req.message.unwrap_or_else(|| "disconnected by the server".into());
    if message.len() > 256 || message.chars().any(char::is_control) {
        return Err(ApiError::bad_request("`message` is at most 256 bytes, no control characters"));
    }
    let cmd = Command::Disconnect {
        user: req.user,
        session: req.session,
        reconnect: req.reconnect,
        message,
    };
    commands::broadcast(&api.node, &cmd).await.map_err(|e| ApiError::unavailable("fanout", &e))?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    /// 1 to 1000 user ids.
    #[schema(schema_with = schema::user_ids)]
    users: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    user: String,
    online: bool,
    /// Distinct devices connected now.
    devices: usize,
    /// Sessions connected now.
    sessions: usize,
    /// For an offline user, when they were last seen going offline (Unix ms), from the
    /// presence history; `null` when online or never seen (or the history did not answer).
    last_seen: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct StatusResult {
    /// In the order asked.
    users: Vec<UserStatus>,
}

pub(super) const MAX_STATUS_USERS: usize = 1000;

/// Whether users are online, on how many devices, and when offline ones were last seen.
#[utoipa::path(post, path = "/api/v1/users-status", tag = "users", request_body = StatusRequest,
    responses(
        (status = 200, body = StatusResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 415, body = ApiErrorBody), (status = 503, body = ApiErrorBody),
    ))]
pub async fn users_status(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<StatusRequest>,
) -> Result<Json<StatusResult>, ApiError> {
    if req.users.is_empty() || req.users.len() > MAX_STATUS_USERS {
        return Err(ApiError::bad_request(format!("`users` lists 1 to {MAX_STATUS_USERS} ids")));
    }
    for u in &req.users {
        user_id(u)?;
    }
    let node = &api.node;
    let presence = bounded(node.presence.query(&req.users))
        .await
        .map_err(|e| ApiError::unavailable("presence", &e))?;
    let last_seen = futures_util::future::join_all(presence.iter().map(|p| async move {
        if p.online {
            return None;
        }
        let q = HistoryQuery {
            user_id: p.user_id.clone(),
            from_ms: 0,
            to_ms: i64::MAX,
            before_id: None,
            limit: 1,
        };
        let read =
            tokio::time::timeout(Duration::from_millis(1500), node.store.presence_history(&q));
        match read.await {
            Ok(Ok(rows)) => rows.first().map(|r| r.log.at_ms),
            _ => None,
        }
    }))
    .await;
    let users = presence
        .into_iter()
        .zip(last_seen)
        .map(|(p, last_seen)| UserStatus {
            user: p.user_id,
            online: p.online,
            devices: p.devices,
            sessions: p.sockets,
            last_seen,
        })
        .collect();
    Ok(Json(StatusResult { users }))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RevokeUserRequest {
    #[schema(schema_with = schema::user_id)]
    user: String,
    /// Tokens whose `iat` is at or before this time (Unix seconds) are revoked; default now. A
    /// token without `iat` is always covered.
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    issued_before: Option<u64>,
    /// Unix ms when the last revoked token expires anyway (its `exp`); the revocation is
    /// forgotten then. Default: 7 days from now.
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    until: Option<u64>,
}

/// Revokes a user's tokens issued before a time: their sessions end with `token_revoked`
/// (3505) on every instance, and those tokens are refused at connect and refresh.
#[utoipa::path(post, path = "/api/v1/revoke-user", tag = "users", request_body = RevokeUserRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 415, body = ApiErrorBody), (status = 503, body = ApiErrorBody),
    ))]
pub async fn revoke_user(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<RevokeUserRequest>,
) -> Result<Json<Empty>, ApiError> {
    user_id(&req.user)?;
    let before = req.issued_before.unwrap_or(now_ms() / 1000);
    let until = until(req.until)?;
    let mark = Mark::User { user: req.user.clone(), before, until_ms: until };
    revoke(&api, mark, Command::RevokeUser { user: req.user, before, until }).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    /// The token's `jti` claim.
    #[schema(schema_with = schema::jti)]
    jti: String,
    /// Unix ms when the token expires anyway (its `exp`). Default: 7 days from now.
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    until: Option<u64>,
}

/// Revokes one token by its `jti`: sessions using it end with `token_revoked` (3505), and it
/// is refused at connect and refresh.
#[utoipa::path(post, path = "/api/v1/revoke-token", tag = "users", request_body = RevokeTokenRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 415, body = ApiErrorBody), (status = 503, body = ApiErrorBody),
    ))]
pub async fn revoke_token(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<RevokeTokenRequest>,
) -> Result<Json<Empty>, ApiError> {
    id_like(&req.jti, "`jti`")?;
    let until = until(req.until)?;
    let mark = Mark::Token { jti: req.jti.clone(), until_ms: until };
    revoke(&api, mark, Command::RevokeToken { jti: req.jti, until }).await
}

/// Stores a revocation (so instances that start or reload later know it), then announces it
/// to every instance (which adds it to its copy and ends the sessions using the tokens).
async fn revoke(api: &ApiState, mark: Mark, cmd: Command) -> Result<Json<Empty>, ApiError> {
    let stored = api.node.revocations.revoke(&mark);
    bounded(stored).await.map_err(|e| ApiError::unavailable("revocations", &e))?;
    commands::broadcast(&api.node, &cmd).await.map_err(|e| ApiError::unavailable("fanout", &e))?;
    Ok(Json(Empty {}))
}

fn until(until: Option<u64>) -> Result<u64, ApiError> {
    let now = now_ms();
    match until {
        None => Ok(revocation::default_until()),
        // Beyond a year is a unit mistake (seconds for ms would be in the past, ns far ahead).
        Some(u) if u > now + 366 * 24 * 3600 * 1000 => {
            Err(ApiError::bad_request("`until` is Unix milliseconds within a year from now"))
        }
        Some(u) => Ok(u),
    }
}
