//! HTTP surface (axum): the WebSocket endpoint, health, the dev certificate hash, the history and
//! chat APIs, Prometheus metrics, the bundled browser client and demo page and, behind
//! `--ws-echo`, the conformance echo. `front` is the accept loop in front of all of them;
//! `client_addr` says who the client of a request is.

mod assets;
pub(crate) mod body;
mod chat;
pub mod client_addr;
mod echo;
pub mod front;
mod health;
mod history;
mod metrics;
mod proxy_protocol;

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use base64::Engine;
use serde_json::json;

use self::client_addr::ClientAddr;
use crate::{
    certs::Certs,
    node::Node,
    session,
    transport::{
        PeerInfo, TransportKind,
        websocket::{WsTransport, upgrade::WsUpgrade},
    },
};

/// Path of the WebSocket endpoint.
pub const WS_PATH: &str = "/ws";

#[derive(Clone)]
pub struct HttpState {
    pub node: Arc<Node>,
    pub certs: Arc<Certs>,
}

pub fn router(state: HttpState) -> Router {
    let router = Router::new()
        .route(WS_PATH, get(websocket))
        .route("/health/live", get(health::live))
        .route("/health/ready", get(health::ready))
        .route("/cert-hash", get(cert_hash))
        .route("/metrics", get(metrics::metrics))
        .route("/api/users/{id}/connections", get(history::connections))
        .route("/api/users/{id}/presence-history", get(history::presence_history))
        .route("/api/conversations", get(chat::list).post(chat::create))
        .route("/api/conversations/{id}", get(chat::show))
        .route("/api/conversations/{id}/members", post(chat::add_member))
        .route("/api/conversations/{id}/members/{user}", delete(chat::remove_member))
        .route("/api/conversations/{id}/messages", get(chat::messages));
    let router = assets::routes(router);
    let node = state.node.clone();
    // Not even routed unless asked for: the echo has no auth and a cap far above the frame cap.
    let router = if state.node.config.ws_echo {
        router.route(echo::ECHO_PATH, get(echo::echo))
    } else {
        router
    };
    let router = router.with_state(state);
    // The server API is here unless it has a listener of its own (`--api-addr`).
    let router = if node.config.api.addr.is_none() {
        router.merge(crate::api::router(node.clone()))
    } else {
        router
    };
    with_cors(router, &node.config.api.cors_origins)
}

/// CORS for pages on the origins of `--cors-origins`: the REST APIs, the client's files and
/// preflights. Nothing is added when none is configured. Credentials are never allowed: the
/// APIs take tokens in `Authorization`, not cookies, so `*` stays safe.
pub fn with_cors(router: Router, origins: &[String]) -> Router {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    if origins.is_empty() {
        return router;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| o.parse().ok()))
    };
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            axum::http::Method::GET,
            axum::http::Method::POST,
            axum::http::Method::DELETE,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .expose_headers([header::HeaderName::from_static(crate::api::publish::REPLAYED)])
        .max_age(std::time::Duration::from_secs(600));
    router.layer(cors)
}

/// The headers of a session request the connect proxy gets, by `lookup` (lower-case name to
/// value); none when no connect proxy is configured. Values are capped like other headers.
pub(crate) fn proxy_headers<'a>(
    config: &crate::config::ProxyConfig,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Vec<(String, String)> {
    if config.connect_url.is_none() {
        return Vec::new();
    }
    config
        .headers
        .iter()
        .filter_map(|name| {
            let value = lookup(name)?;
            Some((name.clone(), value.chars().take(4096).collect()))
        })
        .collect()
}

fn header_string(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(|s| s.chars().take(256).collect())
}

async fn websocket(
    State(state): State<HttpState>,
    client: ClientAddr,
    headers: HeaderMap,
    upgrade: WsUpgrade,
) -> Response {
    let node = state.node;
    if node.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    if !node.config.api.origin_allowed(headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())) {
        return (StatusCode::FORBIDDEN, "this origin may not open a session (--allowed-origins)")
            .into_response();
    }
    // Most connections were counted when they were accepted. One from a trusted proxy was
    // not (the client behind it was unknown then): it counts here, under the address the proxy
    // reports, and an abusive source is refused before an upgrade or a session is spent on it.
    if !client.counted && !node.admission.ip_allowed(client.addr.ip()) {
        return (StatusCode::TOO_MANY_REQUESTS, "too many connections from this address")
            .into_response();
    }
    let peer = PeerInfo {
        kind: TransportKind::WebSocket,
        remote: client.addr,
        user_agent: header_string(&headers, header::USER_AGENT),
        origin: header_string(&headers, header::ORIGIN),
        headers: proxy_headers(&node.config.proxy, |name| {
            headers.get(name).and_then(|v| v.to_str().ok())
        }),
    };
    let max = node.config.max_frame_bytes;
    upgrade.on_upgrade(move |io| {
        let transport = WsTransport::new(io, bytes::Bytes::new(), peer, max);
        node.sessions.track_future(session::run(node.clone(), transport))
    })
}

/// The SHA-256 of the certificate WebTransport serves, for `serverCertificateHashes`.
async fn cert_hash(State(state): State<HttpState>) -> impl IntoResponse {
    let c = &state.certs;
    let body = Json(json!({
        "algorithm": "sha-256",
        "hex": c.sha256_hex(),
        "base64": base64::engine::general_purpose::STANDARD.encode(c.sha256),
        "bytes": c.sha256.to_vec(),
        "selfSigned": c.self_signed,
    }));
    // A dev page on another port or origin may need it; the hash is public information.
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"), (header::CACHE_CONTROL, "no-store")], body)
}
