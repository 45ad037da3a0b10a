//! The server API: what the application's backend calls to publish, disconnect, revoke and
//! read presence and history, under `/api/v1/`, JSON in and out, every method a `POST`.
//!
//! - `error`: the one error shape `{code, message, details}` and the body extractor;
//! - `publish`: channel publications (with idempotency keys), broadcasts, user pushes;
//! - `channels`: presence, history, history removal, server-side unsubscribe;
//! - `users`: disconnect, status, revocation; `info`: the cluster.
//!
//! Authentication: `Authorization: apikey <key>`, compared in constant time against every
//! configured key (`--api-keys`). With no key configured the API answers only clients on
//! loopback, so a laptop needs no setup and a server is never open by accident. The OpenAPI
//! document at `/api/v1/openapi.json` is generated from the handlers and their types
//! (utoipa), so it cannot drift from the code; it is public.

pub mod channels;
pub mod error;
pub mod info;
pub mod publish;
pub mod users;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::{get, post},
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
        info::info,
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
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(limit));
    Router::new().route("/api/v1/openapi.json", get(openapi_json)).merge(methods).with_state(state)
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
        assert_eq!(paths.len(), 14, "{:?}", paths.keys().collect::<Vec<_>>());
        assert!(doc["components"]["securitySchemes"]["apikey"].is_object());
    }
}
