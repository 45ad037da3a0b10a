//! Publishing from the backend: to a channel, to many channels at once, and straight to a
//! user's sessions. Channel publications go through `Channels::publish`, the one entry every
//! publisher uses, and may carry an idempotency key.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::{
    ApiState,
    error::{ApiError, ApiErrorBody, ApiJson},
    resolve, schema,
};
use crate::{cluster::bounded, protocol::encode_event, state::idempotency::Claim};

/// Header on an answer replayed from an earlier call with the same idempotency key.
pub const REPLAYED: &str = "idempotent-replayed";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PublishRequest {
    /// The channel (its namespace must exist).
    #[schema(schema_with = schema::channel)]
    channel: String,
    /// Any JSON; delivered as the publication's `data`.
    #[schema(value_type = Value)]
    data: Box<RawValue>,
    /// Deduplicates retries cluster-wide within `--idempotency-window` (1–128 printable
    /// characters).
    #[schema(schema_with = schema::idempotency_key)]
    idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema, Default)]
pub struct PublishResult {
    /// The publication's offset, in a channel with history.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = "uint64", maximum = 18446744073709551615_u64)]
    offset: Option<u64>,
    /// The history's epoch, in a channel with history.
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

/// Publishes to one channel: stored first when its namespace keeps history, then delivered to
/// every subscriber on every instance.
#[utoipa::path(post, path = "/api/v1/publish", tag = "publishing",
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Published (or replayed: header `idempotent-replayed: true`)", body = PublishResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 404, description = "Unknown namespace", body = ApiErrorBody),
        (status = 409, description = "A call with this idempotency key is in progress", body = ApiErrorBody),
        (status = 413, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn publish(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(req.idempotency_key.as_deref(), "p")?;
    let (channel, data) = (req.channel, req.data);
    // A request that is wrong in itself is refused whatever its key: an earlier call with the
    // same key must not turn it into a replayed success. (`publish_one` checks again: cheap.)
    resolve(&api.node, &channel)?;
    fits(&api, &channel, &data)?;
    idempotent(&api, key, || publish_one(&api, &channel, &data)).await
}

async fn publish_one(
    api: &ApiState,
    channel: &str,
    data: &RawValue,
) -> Result<PublishResult, ApiError> {
    let ns = resolve(&api.node, channel)?;
    fits(api, channel, data)?;
    let position = api
        .node
        .channels
        .publish(channel, &ns, data, None)
        .await
        .map_err(|e| ApiError::unavailable("channel history", &e))?;
    Ok(PublishResult {
        offset: position.as_ref().map(|p| p.offset),
        epoch: position.map(|p| p.epoch.to_string()),
    })
}

/// A publication must fit the frame cap once framed, or no subscriber could receive it.
fn fits(api: &ApiState, channel: &str, data: &RawValue) -> Result<(), ApiError> {
    // `{"type":"event","event":"channel:publication","data":{"channel":…,"offset":…,"data":…}}`
    const FRAMING: usize = 128;
    if data.get().len() + channel.len() + FRAMING > api.node.config.max_frame_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("`data` must fit a frame of {} bytes", api.node.config.max_frame_bytes),
        ));
    }
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BroadcastRequest {
    /// 1 to 100 channels.
    #[schema(schema_with = schema::channels)]
    channels: Vec<String>,
    #[schema(value_type = Value)]
    data: Box<RawValue>,
    /// Deduplicates the whole broadcast, as in `publish`.
    #[schema(schema_with = schema::idempotency_key)]
    idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BroadcastItem {
    channel: String,
    #[serde(flatten)]
    result: PublishResult,
    /// Why this channel's publish failed; the others are unaffected.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct ItemError {
    code: String,
    message: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct BroadcastResult {
    /// One per channel, in the order asked.
    results: Vec<BroadcastItem>,
}

/// Most channels one broadcast names.
pub(super) const MAX_BROADCAST: usize = 100;

/// Publishes the same data to many channels; each channel's result (or error) on its own.
#[utoipa::path(post, path = "/api/v1/broadcast", tag = "publishing",
    request_body = BroadcastRequest,
    responses(
        (status = 200, body = BroadcastResult),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 409, body = ApiErrorBody), (status = 413, body = ApiErrorBody),
        (status = 415, body = ApiErrorBody), (status = 503, body = ApiErrorBody),
    ))]
pub async fn broadcast(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<BroadcastRequest>,
) -> Result<Response, ApiError> {
    if req.channels.is_empty() || req.channels.len() > MAX_BROADCAST {
        return Err(ApiError::bad_request(format!(
            "`channels` lists 1 to {MAX_BROADCAST} channels"
        )));
    }
    let key = idempotency_key(req.idempotency_key.as_deref(), "b")?;
    let (channels, data) = (req.channels, req.data);
    idempotent(&api, key, || async {
        let each = channels.iter().map(|c| publish_one(&api, c, &data));
        let results = futures_util::future::join_all(each).await;
        let results = channels
            .iter()
            .zip(results)
            .map(|(channel, r)| match r {
                Ok(result) => BroadcastItem { channel: channel.clone(), result, error: None },
                Err(e) => BroadcastItem {
                    channel: channel.clone(),
                    result: PublishResult::default(),
                    error: Some(ItemError { code: e.body.code.into(), message: e.body.message }),
                },
            })
            .collect();
        Ok(BroadcastResult { results })
    })
    .await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserPublishRequest {
    /// The user whose every session gets the event.
    #[schema(schema_with = schema::user_id)]
    user: String,
    /// The event name the sessions see (1–64 of `[A-Za-z0-9:._-]`; not `sys:`, `channel:` or
    /// `presence:`).
    #[schema(schema_with = schema::event)]
    event: String,
    #[schema(value_type = Value)]
    data: Box<RawValue>,
}

#[derive(Serialize, ToSchema)]
pub struct Empty {}

/// Pushes `{"type":"event","event":…,"data":…}` to every session of a user, on every
/// instance. Nothing is stored: a user with no session gets nothing.
#[utoipa::path(post, path = "/api/v1/publish-to-user", tag = "publishing",
    request_body = UserPublishRequest,
    responses(
        (status = 200, body = Empty),
        (status = 400, body = ApiErrorBody), (status = 401, body = ApiErrorBody),
        (status = 413, body = ApiErrorBody), (status = 415, body = ApiErrorBody),
        (status = 503, body = ApiErrorBody),
    ))]
pub async fn publish_to_user(
    State(api): State<ApiState>,
    ApiJson(req): ApiJson<UserPublishRequest>,
) -> Result<Json<Empty>, ApiError> {
    super::users::user_id(&req.user)?;
    let reserved = ["sys:", "channel:", "presence:"].iter().any(|p| req.event.starts_with(p));
    if !crate::protocol::valid_event_name(&req.event) || reserved {
        return Err(ApiError::bad_request(
            "`event` is 1 to 64 characters of [A-Za-z0-9:._-], not starting with `sys:`, \
             `channel:` or `presence:`",
        ));
    }
    fits(&api, &req.event, &req.data)?;
    let frame = encode_event(&req.event, &req.data);
    bounded(api.node.fanout.to_user(&req.user, frame))
        .await
        .map_err(|e| ApiError::unavailable("fanout", &e))?;
    Ok(Json(Empty {}))
}

/// The namespaced idempotency key (`p:` publishes and `b:` broadcasts never collide), or
/// `None` when the call has none.
fn idempotency_key(key: Option<&str>, scope: &str) -> Result<Option<String>, ApiError> {
    let Some(key) = key else { return Ok(None) };
    let ok = !key.is_empty() && key.len() <= 128 && key.bytes().all(|b| b.is_ascii_graphic());
    if !ok {
        return Err(ApiError::bad_request(
            "`idempotencyKey` is 1 to 128 printable ASCII characters",
        ));
    }
    Ok(Some(format!("{scope}:{key}")))
}

/// Runs `work` once per idempotency key within the window: a repeat answers with the stored
/// result (and `idempotent-replayed: true`); a failed call releases the key for a retry.
async fn idempotent<T, F, Fut>(
    api: &ApiState,
    key: Option<String>,
    work: F,
) -> Result<Response, ApiError>
where
    T: Serialize + serde::de::DeserializeOwned,
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let Some(key) = key else { return Ok(Json(work().await?).into_response()) };
    let store = &api.node.idempotency;
    let window = api.node.config.api.idempotency_window;
    match bounded(store.claim(&key, window)).await {
        Err(e) => Err(ApiError::unavailable("idempotency keys", &e)),
        Ok(Claim::Pending) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "idempotency_in_progress",
            "a call with this idempotency key is still in progress; retry later",
        )),
        Ok(Claim::Done(stored)) => {
            // The first answer's bytes, as they were: same fields, same order.
            let json = HeaderValue::from_static("application/json");
            let mut response = stored.into_response();
            response.headers_mut().insert(axum::http::header::CONTENT_TYPE, json);
            response.headers_mut().insert(REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Ok(Claim::Fresh) => match work().await {
            Ok(result) => {
                let body = serde_json::to_string(&result).unwrap_or_default();
                if let Err(e) = bounded(store.complete(&key, &body, window)).await {
                    // Published: a retry now would publish again, which the caller asked
                    // us to prevent but which we cannot, so say so in the log.
                    tracing::warn!(error = %e, "could not store an idempotent result");
                }
                Ok(Json(result).into_response())
            }
            Err(e) => {
                let _ = bounded(store.release(&key)).await;
                Err(e)
            }
        },
    }
}
