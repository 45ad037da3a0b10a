//! The WebSocket opening handshake (RFC 6455 §4.2) as an axum extractor: the request is
//! checked, the `101 Switching Protocols` answer built, and the upgraded connection handed to
//! the caller's task once hyper has sent that answer. HTTP/1.1 only, like the front door.

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::future::Future;

/// The upgraded connection, as tokio I/O.
pub type Upgrade = TokioIo<Upgraded>;

/// A request that asked for a WebSocket; `on_upgrade` accepts it.
pub struct WsUpgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request was not a WebSocket opening handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("a WebSocket handshake must be a GET request")]
    NotGet,
    #[error("the Connection header must include 'upgrade'")]
    Connection,
    #[error("the Upgrade header must be 'websocket'")]
    UpgradeHeader,
    #[error("the Sec-WebSocket-Version header must be 13")]
    Version,
    #[error("the Sec-WebSocket-Key header is missing")]
    Key,
    #[error("this connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let status = match self {
            Refused::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            Refused::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
        if parts.method != Method::GET {
            return Err(Refused::NotGet);
        }
        if !has_token(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(Refused::Connection);
        }
        if !has_token(&parts.headers, header::UPGRADE, "websocket") {
            return Err(Refused::UpgradeHeader);
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
            return Err(Refused::Version);
        }
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).ok_or(Refused::Key)?.clone();
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(Refused::NotUpgradable)?;
        Ok(WsUpgrade { key, on_upgrade })
    }
}

impl WsUpgrade {
    /// Answers `101` and runs `session` on the connection in a task of its own once the
    /// answer is out. A connection that fails before that never reaches `session`.
    pub fn on_upgrade<F, Fut>(self, session: F) -> Response
    where
        F: FnOnce(Upgrade) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let accept = tungstenite::handshake::derive_accept_key(self.key.as_bytes());
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => session(TokioIo::new(upgraded)).await,
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        if let Ok(accept) = HeaderValue::from_str(&accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        response
    }
}
