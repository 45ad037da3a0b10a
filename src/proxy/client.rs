//! The HTTP side of proxy calls: one pooled HTTP/1.1 client (keep-alive, HTTPS with the
//! system's roots), and per backend URL a bound on calls in flight and a circuit breaker.
//! A call is one POST of JSON, never retried: publish and RPC are not idempotent, and a
//! retry of the others would only add to the latency the client waits through.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, header};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use tokio::sync::Semaphore;

use super::{ProxyError, breaker::Breaker};

/// Largest backend answer read; past it the answer is malformed.
const MAX_REPLY_BYTES: usize = 1 << 20;

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// The pooled client every outbound call uses (proxies and webhooks): HTTP/1.1 with
/// keep-alive, HTTPS with the system's roots.
pub(crate) type Outbound = Client<Https, Full<Bytes>>;

pub(crate) fn outbound_client() -> Result<Outbound, std::io::Error> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_native_roots()?
        .https_or_http()
        .enable_http1()
        .build();
    Ok(Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// One backend URL's limits.
struct Backend {
    in_flight: Semaphore,
    breaker: Breaker,
}

pub(super) struct HttpClient {
    client: Outbound,
    backends: Mutex<HashMap<String, Arc<Backend>>>,
    timeout: Duration,
    max_in_flight: usize,
}

impl HttpClient {
    pub(super) fn new(timeout: Duration, max_in_flight: usize) -> Result<Self, std::io::Error> {
        Ok(Self {
            client: outbound_client()?,
            backends: Mutex::new(HashMap::new()),
            timeout,
            max_in_flight,
        })
    }

    fn backend(&self, url: &str) -> Arc<Backend> {
        let mut map = self.backends.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(url.to_owned())
            .or_insert_with(|| {
                Arc::new(Backend {
                    in_flight: Semaphore::new(self.max_in_flight),
                    breaker: Breaker::default(),
                })
            })
            .clone()
    }

    /// POSTs `body` to `url`; the answer's body when the backend answered 200.
    pub(super) async fn post(&self, url: &str, body: Bytes) -> Result<Bytes, ProxyError> {
        let backend = self.backend(url);
        let Ok(_slot) = backend.in_flight.try_acquire() else {
            return Err(ProxyError::Overloaded);
        };
        if !backend.breaker.allow(Instant::now()) {
            return Err(ProxyError::CircuitOpen);
        }
        let result = tokio::time::timeout(self.timeout, self.send(url, body)).await;
        let result = result.unwrap_or(Err(ProxyError::Timeout(self.timeout)));
        backend.breaker.record(result.is_ok(), Instant::now());
        result
    }

    async fn send(&self, url: &str, body: Bytes) -> Result<Bytes, ProxyError> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::USER_AGENT, concat!("rtgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(body))
            .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| ProxyError::Unreachable(e.to_string()))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| ProxyError::BadReply(format!("reading the answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            return Err(ProxyError::Status(status.as_u16()));
        }
        Ok(body)
    }
}
