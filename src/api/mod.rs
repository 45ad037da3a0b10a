//! The server API: what the application's backend calls to publish, disconnect, revoke and
//! read presence and history, under `/api/v1/`, JSON in and out, every method a `POST`.
//!
//! - `error`: the one error shape `{code, message, details}` and the body extractor;
//! - `publish`: channel publications (with idempotency keys), broadcasts, user pushes;
//! - `channels`: presence, history, history removal, server-side unsubscribe;
//! - `users`: disconnect, status, revocation; `info`: the cluster; `activity`: the active
//!   channels and the webhook outbox.
//!
//! Authentication: `Authorization: apikey <key>`, compared in constant time against every
//! configured key (`--api-keys`). With no key configured the API answers only clients on
//! loopback, so a laptop needs no setup and a server is never open by accident. The OpenAPI
//! document at `/api/v1/openapi.json` is generated from the handlers and their types
//! (utoipa), so it cannot drift from the code; it is public.

pub mod activity;
pub mod channels;
pub mod error;
pub mod info;
pub mod publish;
mod schema;
pub mod users;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use subtle::ConstantTimeEq;
use utoipa::OpenApi;

use self::error::ApiError;
use crate::{config::NamespaceConfig, http::client_addr::ClientAddr, node::Node};

/// What every handler of the server API gets.
#[derive(Clone)]
pub struct ApiState {
    pub node: Arc<Node>,
    /// SHA-256 of each configured key: compared digest to digest, so neither a key's
    /// length nor its content shows in the time a refusal takes.
    keys: Arc<[[u8; 32]]>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "rtgate server API", description = "What the application's backend calls: publish to channels and users, disconnect and revoke, read presence and history. Every method is a POST with a JSON object body; every error is `{code, message, details}`."),
    paths(
        publish::publish, publish::broadcast, publish::publish_to_user,
        channels::presence, channels::presence_stats, channels::history,
        channels::history_remove, channels::subscribe, channels::unsubscribe,
        users::disconnect, users::users_status, users::revoke_user, users::revoke_token,
        info::info, activity::channels, activity::webhooks,
    ),
    modifiers(&ApiKeyScheme),
    security(("apikey" = [])),
)]
struct ApiDoc;

struct ApiKeyScheme;

impl utoipa::Modify for ApiKeyScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apikey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "`apikey <key>`, one of `--api-keys`",
            ))),
        );
    }
}

/// The OpenAPI 3.1 document of the server API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The `/api/v1` routes, for the HTTP port's router or the `--api-addr` listener's.
pub fn router(node: Arc<Node>) -> Router {
    let keys: Arc<[[u8; 32]]> = node.config.api.keys.iter().map(|k| digest(k.as_bytes())).collect();
    let limit = node.config.api.max_body_bytes;
    let state = ApiState { node, keys };
    let methods = Router::new()
        .route("/api/v1/publish", post(publish::publish))
        .route("/api/v1/broadcast", post(publish::broadcast))
        .route("/api/v1/publish-to-user", post(publish::publish_to_user))
        .route("/api/v1/presence", post(channels::presence))
        .route("/api/v1/presence-stats", post(channels::presence_stats))
        .route("/api/v1/history", post(channels::history))
        .route("/api/v1/history-remove", post(channels::history_remove))
        .route("/api/v1/subscribe", post(channels::subscribe))
        .route("/api/v1/unsubscribe", post(channels::unsubscribe))
        .route("/api/v1/disconnect", post(users::disconnect))
        .route("/api/v1/users-status", post(users::users_status))
        .route("/api/v1/revoke-user", post(users::revoke_user))
        .route("/api/v1/revoke-token", post(users::revoke_token))
        .route("/api/v1/info", post(info::info))
        .route("/api/v1/channels", post(activity::channels))
        .route("/api/v1/webhooks", post(activity::webhooks))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(limit));
    Router::new()
        .route("/api/v1/openapi.json", get(openapi_json))
        .method_not_allowed_fallback(method_not_allowed)
        .merge(methods)
        // Under /api/v1 every answer is in the API's error shape, a mistyped method included.
        .route("/api/v1", any(not_found))
        .route("/api/v1/", any(not_found))
        .route("/api/v1/{*rest}", any(not_found))
        .with_state(state)
}

/// A method the path does not take; axum adds the `Allow` header listing those it does.
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this path does not take this method (`Allow` lists those it does)",
    )
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such server API method")
}

async fn openapi_json() -> Response {
    ([(header::CACHE_CONTROL, "no-cache")], Json(openapi())).into_response()
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Whether `given` is one of `keys`: every key is compared, whatever matched, in constant time.
fn key_matches(keys: &[[u8; 32]], given: &str) -> bool {
    let given = digest(given.as_bytes());
    keys.iter().fold(subtle::Choice::from(0), |any, k| any | k.ct_eq(&given)).into()
}

async fn authenticate(State(api): State<ApiState>, request: Request, next: Next) -> Response {
    let allowed = if api.keys.is_empty() {
        // No key configured: loopback only (the client as the front door resolved it).
        let client = request.extensions().get::<ClientAddr>();
        client.is_some_and(|c| c.addr.ip().is_loopback())
    } else {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("apikey "))
            .unwrap_or("");
        key_matches(&api.keys, given.trim())
    };
    if !allowed {
        return ApiError::unauthorized().into_response();
    }
    next.run(request).await
}

/// The namespace of `channel`: `bad_channel` for a bad name, `unknown_namespace` (404) for a
/// namespace that is not configured.
pub(crate) fn resolve(node: &Node, channel: &str) -> Result<Arc<NamespaceConfig>, ApiError> {
    let parsed = crate::channels::name::parse(channel)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "bad_channel", m))?;
    node.config.namespaces.get(parsed.namespace).cloned().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_namespace",
            format!("no namespace {:?} is configured", parsed.namespace),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_configured_key_matches_and_nothing_else() {
        let keys: Vec<[u8; 32]> = ["first-key-0123456", "second-key-012345"]
            .iter()
            .map(|k| digest(k.as_bytes()))
            .collect();
        assert!(key_matches(&keys, "first-key-0123456"));
        assert!(key_matches(&keys, "second-key-012345"));
        assert!(!key_matches(&keys, "first-key-012345"));
        assert!(!key_matches(&keys, ""));
        assert!(!key_matches(&[], "first-key-0123456"));
    }

    #[test]
    fn the_document_is_openapi_3_1_and_lists_every_method() {
        let doc = serde_json::to_value(openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        let paths = doc["paths"].as_object().unwrap();
        assert_eq!(paths.len(), 16, "{:?}", paths.keys().collect::<Vec<_>>());
        assert!(doc["components"]["securitySchemes"]["apikey"].is_object());
    }

    /// What the handlers check is in the document, so clients and fuzzers see it
    /// (`scripts/schemathesis.sh` checks that the server refuses whatever breaks it).
    #[test]
    fn the_document_states_the_checked_limits() {
        let doc = serde_json::to_value(openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let channel = &schemas["ChannelRequest"]["properties"]["channel"];
        assert_eq!((&channel["minLength"], &channel["maxLength"]), (&1.into(), &255.into()));
        assert!(channel["pattern"].is_string(), "{channel}");
        let users = &schemas["StatusRequest"]["properties"]["users"];
        assert_eq!((&users["minItems"], &users["maxItems"]), (&1.into(), &1000.into()));
        assert_eq!(users["items"]["maxLength"], 128);
        let channels = &schemas["BroadcastRequest"]["properties"]["channels"];
        assert_eq!((&channels["minItems"], &channels["maxItems"]), (&1.into(), &100.into()));
        let key = &schemas["PublishRequest"]["properties"]["idempotencyKey"];
        assert_eq!(key["pattern"], "^[!-~]{1,128}$");
        assert_eq!(key["type"], serde_json::json!(["string", "null"]));
        assert!(!schemas["PublishRequest"]["required"].to_string().contains("idempotencyKey"));
        // Offsets are u64 end to end, not int64.
        let offset = &schemas["Since"]["properties"]["offset"];
        assert_eq!((&offset["format"], &offset["maximum"]), (&"uint64".into(), &u64::MAX.into()));
    }
}
