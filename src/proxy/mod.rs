//! Proxy calls into the application's backend: `connect` (authenticate a connection from its
//! upgrade's headers instead of a JWT), `refresh` (extend such a session), `subscribe` (allow
//! or deny a subscription in a `subscribe = "proxy"` namespace), `publish` (validate or
//! rewrite a client publication) and `rpc` (a client request the backend answers).
//!
//! Every call is one JSON POST (`client`), bounded in time and in calls in flight per backend
//! URL, behind a circuit breaker (`breaker`), timed and counted per kind. The backend answers
//! `{"result": {...}}` or `{"error": {"code": 1000–1999, "message"}}`; its codes reach the
//! client as `app_error` with `details.appCode`. Anything else (no answer, a non-2xx status,
//! a malformed body) is the backend failing: the client gets `unavailable`. Calls run inside
//! the event's handler future (or, for `refresh`, a task of its own), never in the session
//! loop itself. PROTOCOL.md, "Backend proxies", has every request and answer.

mod breaker;
pub(crate) mod client;
pub mod events;

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{config::ProxyConfig, dispatch::EventError, telemetry::metrics};

/// The backend's own error codes, passed to clients as they are.
pub const APP_CODES: std::ops::RangeInclusive<u16> = 1000..=1999;

/// The kinds of proxy call, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    Connect,
    Refresh,
    Subscribe,
    Publish,
    Rpc,
}

impl ProxyKind {
    pub const ALL: [ProxyKind; 5] = [
        ProxyKind::Connect,
        ProxyKind::Refresh,
        ProxyKind::Subscribe,
        ProxyKind::Publish,
        ProxyKind::Rpc,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ProxyKind::Connect => "connect",
            ProxyKind::Refresh => "refresh",
            ProxyKind::Subscribe => "subscribe",
            ProxyKind::Publish => "publish",
            ProxyKind::Rpc => "rpc",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The backend refused, with its own code and message for the client.
    #[error("{message}")]
    Refused { code: u16, message: String },
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the backend is unreachable: {0}")]
    Unreachable(String),
    #[error("the backend answered HTTP {0}")]
    Status(u16),
    #[error("the backend's answer is malformed: {0}")]
    BadReply(String),
    #[error("too many calls to the backend in flight")]
    Overloaded,
    #[error("the backend keeps failing; calls are refused for a few seconds")]
    CircuitOpen,
    #[error("no proxy is configured for this")]
    NotConfigured,
}

impl ProxyError {
    /// The `reason` label of `rtgate_proxy_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::Refused { .. } => "refused",
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Unreachable(_) => "unreachable",
            ProxyError::Status(_) => "status",
            ProxyError::BadReply(_) => "bad_reply",
            ProxyError::Overloaded => "overloaded",
            ProxyError::CircuitOpen => "circuit_open",
            ProxyError::NotConfigured => "not_configured",
        }
    }
}

impl From<ProxyError> for EventError {
    fn from(e: ProxyError) -> Self {
        match e {
            ProxyError::Refused { code, message } => EventError::App { code, message },
            other => {
                tracing::warn!(error = %other, "proxy call failed");
                EventError::Unavailable("the application's backend is unavailable".into())
            }
        }
    }
}

/// What the backend answers: a result, or its refusal.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply<T> {
    result: Option<T>,
    error: Option<BackendError>,
}

#[derive(Deserialize)]
struct BackendError {
    code: u16,
    #[serde(default)]
    message: String,
}

/// The configured proxies and the client that calls them.
pub struct Proxies {
    config: ProxyConfig,
    http: client::HttpClient,
}

impl Proxies {
    pub fn new(config: &ProxyConfig) -> Result<Self, std::io::Error> {
        Ok(Self {
            config: config.clone(),
            http: client::HttpClient::new(config.timeout, config.max_in_flight)?,
        })
    }

    pub fn config(&self) -> &ProxyConfig {
        &self.config
    }

    /// Calls `url` with `request`; the backend's `result`, or why there is none.
    pub async fn call<Req: Serialize, Res: DeserializeOwned>(
        &self,
        kind: ProxyKind,
        url: Option<&str>,
        request: &Req,
    ) -> Result<Res, ProxyError> {
        let url = url.ok_or(ProxyError::NotConfigured)?;
        let started = Instant::now();
        let result = self.call_once(url, request).await;
        metrics::proxy_call(kind, started, result.as_ref().err().map(ProxyError::reason));
        result
    }

    async fn call_once<Req: Serialize, Res: DeserializeOwned>(
        &self,
        url: &str,
        request: &Req,
    ) -> Result<Res, ProxyError> {
        let body = serde_json::to_vec(request).map_err(|e| ProxyError::BadReply(e.to_string()))?;
        let answer = self.http.post(url, Bytes::from(body)).await?;
        let reply: Reply<Res> =
            serde_json::from_slice(&answer).map_err(|e| ProxyError::BadReply(e.to_string()))?;
        match (reply.result, reply.error) {
            (_, Some(BackendError { code, message })) if APP_CODES.contains(&code) => {
                Err(ProxyError::Refused { code, message })
            }
            (_, Some(e)) => Err(ProxyError::BadReply(format!(
                "error code {} is outside {}–{}",
                e.code,
                APP_CODES.start(),
                APP_CODES.end()
            ))),
            (Some(result), None) => Ok(result),
            (None, None) => Err(ProxyError::BadReply("neither `result` nor `error`".into())),
        }
    }
}
