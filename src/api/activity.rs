//! What is going on in the cluster: the active channels with their subscriber counts, and the
//! webhook outbox (pending deliveries, delivered events, dead letters).

use axum::{Json, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{
    ApiState,
    error::{ApiError, ApiErrorBody, ApiJson},
};
use crate::{cluster::bounded, store::outbox::DeliveryState};

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChannelsRequest {
    /// A glob over channel names (`*` any run, `?` one character); default `*`.
    #[schema(min_length = 1, max_length = 255)]
    pattern: Option<String>,
    /// The previous page's `nextCursor`.
    #[schema(max_length = 255)]
    cursor: Option<String>,
    /// About this many per page (1–1000, default 100); a page may hold a few more or fewer.
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct ActiveChannel {
    channel: String,
    /// Subscriptions to it across the cluster.
    subscribers: u64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChannelsResult {
    channels: Vec<ActiveChannel>,
    /// Pass as `cursor` for the next page; `null` after the last.
    next_cursor: Option<String>,
}

/// The channels that have subscribers anywhere in the cluster, with how many.
#[utoipa::path(post, path = "/api/v1/channels", tag = "channels", request_body = ChannelsRequest,
    responses(
        (status = 200, body = ChannelsResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 413, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn channels(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<ChannelsRequest>,
) -> Result<Json<ChannelsResult>, ApiError> {
    let pattern = req.pattern.unwrap_or_else(|| "*".into());
    let limit = req.limit.unwrap_or(100);
    if pattern.is_empty() || pattern.len() > 255 || !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`pattern` is 1 to 255 bytes, `limit` 1 to 1000"));
    }
    if req.cursor.as_ref().is_some_and(|c| c.len() > 255) {
        return Err(ApiError::bad_request("`cursor` is what a previous page returned"));
    }
    let page = bounded(api.node.occupancy.list(&pattern, req.cursor.as_deref(), limit as usize))
        .await
        .map_err(|e| ApiError::unavailable("channel occupancy", &e))?;
    Ok(Json(ChannelsResult {
        channels: page
            .channels
            .into_iter()
            .map(|(channel, subscribers)| ActiveChannel { channel, subscribers })
            .collect(),
        next_cursor: page.next,
    }))
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum WebhookState {
    Pending,
    Delivered,
    Dead,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhooksRequest {
    state: WebhookState,
    /// 1 to 1000, default 100; newest first.
    #[schema(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
    /// The event's id (`webhook-id`).
    event_id: String,
    endpoint: String,
    #[serde(rename = "type")]
    kind: String,
    /// The body delivered, as JSON.
    #[schema(value_type = Object)]
    event: serde_json::Value,
    created_at: i64,
    attempts: i32,
    /// When the next attempt is due (pending ones).
    next_attempt_at: i64,
    delivered_at: Option<i64>,
    dead_at: Option<i64>,
    last_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhooksResult {
    deliveries: Vec<WebhookDelivery>,
}

/// The webhook outbox: pending deliveries, delivered events and dead letters (kept for
/// `--webhook-retention`).
#[utoipa::path(post, path = "/api/v1/webhooks", tag = "cluster", request_body = WebhooksRequest,
    responses(
        (status = 200, body = WebhooksResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 413, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn webhooks(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<WebhooksRequest>,
) -> Result<Json<WebhooksResult>, ApiError> {
    let limit = req.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("`limit` is 1 to 1000"));
    }
    let state = match req.state {
        WebhookState::Pending => DeliveryState::Pending,
        WebhookState::Delivered => DeliveryState::Delivered,
        WebhookState::Dead => DeliveryState::Dead,
    };
    // The durable history's bound and error: a slow database is not a shared-state outage.
    let rows = crate::store::channel_history::within(api.node.store.outbox().list(state, limit))
        .await
        .map_err(|e| ApiError::unavailable("the database", &e))?;
    let deliveries = rows
        .into_iter()
        .map(|d| WebhookDelivery {
            event: serde_json::from_str(&d.body).unwrap_or(serde_json::Value::Null),
            event_id: d.event_id,
            endpoint: d.endpoint,
            kind: d.kind,
            created_at: d.created_at_ms,
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_ms,
            delivered_at: d.delivered_at_ms,
            dead_at: d.dead_at_ms,
            last_error: d.last_error,
        })
        .collect();
    Ok(Json(WebhooksResult { deliveries }))
}
