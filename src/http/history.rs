//! The history API: a user's connections and presence transitions, read from the store.
//!
//! `GET /api/users/{id}/connections` and `GET /api/users/{id}/presence-history`, with a JWT in
//! `Authorization: Bearer …` (the same tokens as the realtime handshake). A user may read their
//! own history; a token with the `admin` role may read anyone's; anyone else gets 403.
//!
//! Query: `from`, `to` (Unix milliseconds or RFC 3339; `[from, to)`, default everything),
//! `limit` (1–500, default 50), `cursor` (from the previous page's `nextCursor`). Pages are
//! newest first and use keyset pagination on `(time, id)`, so a page never repeats or skips
//! rows when new ones arrive between requests.

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::HttpState;
use crate::{
    auth::Identity,
    store::{ConnectionRow, HistoryQuery, PresenceRow},
};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

/// An API error: status plus the same `code`/`message` shape as protocol errors.
pub(super) struct ApiError(pub StatusCode, pub &'static str, pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "code": self.1, "message": self.2 }))).into_response()
    }
}

pub(super) fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", msg.into())
}

/// The caller's identity from `Authorization: Bearer <jwt>`.
pub(super) fn bearer(state: &HttpState, headers: &HeaderMap) -> Result<Identity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError(
                StatusCode::UNAUTHORIZED,
                "auth_required",
                "Authorization: Bearer <token> is required".into(),
            )
        })?;
    state
        .node
        .auth
        .verify(token.trim())
        .map_err(|e| ApiError(StatusCode::UNAUTHORIZED, e.code().as_str(), e.to_string()))
}

#[derive(Debug, Deserialize)]
pub(super) struct Params {
    from: Option<String>,
    to: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
}

fn instant(raw: &str, name: &str) -> Result<i64, ApiError> {
    if let Ok(ms) = raw.parse::<i64>() {
        return Ok(ms);
    }
    OffsetDateTime::parse(raw, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| bad_request(format!("`{name}` must be Unix milliseconds or an RFC 3339 time")))
}

fn rfc3339(ms: i64) -> Value {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

/// Authorizes the caller for `user_id` and turns the query string into a `HistoryQuery`.
fn query(
    state: &HttpState,
    headers: &HeaderMap,
    user_id: String,
    p: Params,
) -> Result<HistoryQuery, ApiError> {
    let caller = bearer(state, headers)?;
    if caller.user_id != user_id && !caller.admin {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "forbidden",
            "you may only read your own history".into(),
        ));
    }
    let from_ms = p.from.as_deref().map(|f| instant(f, "from")).transpose()?.unwrap_or(i64::MIN);
    let to_ms = p.to.as_deref().map(|t| instant(t, "to")).transpose()?.unwrap_or(i64::MAX);
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(bad_request(format!("`limit` must be 1 to {MAX_LIMIT}")));
    }
    let before_id = p
        .cursor
        .as_deref()
        .map(|c| c.parse::<i64>().map_err(|_| bad_request("`cursor` is not one this API returned")))
        .transpose()?;
    Ok(HistoryQuery { user_id, from_ms, to_ms, before_id, limit })
}

fn page(items: Vec<Value>, last_id: Option<i64>, limit: u32) -> Json<Value> {
    // A full page may have more behind it; the cursor is the last id seen.
    let next = (items.len() == limit as usize).then(|| last_id.map(|id| id.to_string())).flatten();
    Json(json!({ "items": items, "nextCursor": next }))
}

fn unavailable(e: crate::store::StoreError) -> ApiError {
    tracing::warn!(error = %e, "history query failed");
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the history database is unavailable".into(),
    )
}

fn connection_json(r: &ConnectionRow) -> Value {
    let o = &r.opened;
    json!({
        "id": r.id,
        "socketId": o.socket_id,
        "userId": o.user_id,
        "deviceId": o.device_id,
        "transport": o.transport,
        "ipAddress": o.ip_address,
        "userAgent": o.user_agent,
        "serverInstance": o.server_instance,
        "connectedAt": rfc3339(o.connected_at_ms),
        "disconnectedAt": r.disconnected_at_ms.map(rfc3339),
        "disconnectReason": r.disconnect_reason,
    })
}

fn presence_json(r: &PresenceRow) -> Value {
    json!({
        "id": r.id,
        "userId": r.log.user_id,
        "deviceId": r.log.device_id,
        "status": r.log.status,
        "at": rfc3339(r.log.at_ms),
    })
}

pub(super) async fn connections(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let q = query(&state, &headers, user_id, p)?;
    let rows = state.node.store.connections(&q).await.map_err(unavailable)?;
    let last = rows.last().map(|r| r.id);
    Ok(page(rows.iter().map(connection_json).collect(), last, q.limit))
}

pub(super) async fn presence_history(
    State(state): State<HttpState>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
    Query(p): Query<Params>,
) -> Result<Json<Value>, ApiError> {
    let q = query(&state, &headers, user_id, p)?;
    let rows = state.node.store.presence_history(&q).await.map_err(unavailable)?;
    let last = rows.last().map(|r| r.id);
    Ok(page(rows.iter().map(presence_json).collect(), last, q.limit))
}
