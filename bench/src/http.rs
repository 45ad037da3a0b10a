//! The HTTP sides of the backend scenarios (`apipublish`, `rpc`, `webhooks`): a pooled
//! HTTP/1.1 keep-alive client, as an application's backend calls the server API with (and
//! the same kind rtgate's proxy calls the backend with: hyper-util's legacy client), and a
//! minimal HTTP/1.1 server on loopback standing in for the application's backend (the RPC
//! handler, the webhook receiver).

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Response, StatusCode, Uri, body::Incoming, header, service};
use hyper_util::{
    client::legacy::{Client as Legacy, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use tokio::{net::TcpListener, sync::watch};

use crate::pool;

pub type Client = Legacy<HttpConnector, Full<Bytes>>;

/// A keep-alive client: every caller that awaits its answer before the next call reuses one
/// pooled connection.
pub fn client() -> Client {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    Legacy::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(http)
}

/// POSTs a JSON body (with `Authorization` when given); the answer's status and body.
pub async fn post_json(
    client: &Client,
    uri: &Uri,
    authorization: Option<&header::HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Bytes)> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(uri.clone())
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a.clone());
    }
    let response = client.request(req.body(Full::new(body))?).await.context("POST")?;
    let status = response.status();
    let body = response.into_body().collect().await.context("reading the answer")?.to_bytes();
    Ok((status, body))
}

/// A server started by `serve`; it stops (listener and connections) when dropped.
pub struct Served {
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Serves HTTP/1.1 (keep-alive) on `addr`: every request's body is read whole, then `handle`
/// answers it.
pub async fn serve<F, Fut>(addr: SocketAddr, handle: F) -> Result<Served>
where
    F: Fn(Request<Bytes>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let handle = Arc::new(handle);
    let mut accept_stop = stop_rx.clone();
    tokio::spawn(async move {
        loop {
            let tcp = tokio::select! {
                _ = pool::stopped(&mut accept_stop) => return,
                a = listener.accept() => match a {
                    Ok((tcp, _)) => tcp,
                    Err(_) => {
                        // Out of descriptors, say: try again shortly rather than spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (handle, mut stop) = (handle.clone(), stop_rx.clone());
            tokio::spawn(async move {
                let svc = service::service_fn(move |req: Request<Incoming>| {
                    let handle = handle.clone();
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = match body.collect().await {
                            Ok(b) => b.to_bytes(),
                            Err(_) => return Ok::<_, Infallible>(status(StatusCode::BAD_REQUEST)),
                        };
                        Ok(handle(Request::from_parts(parts, body)).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = pool::stopped(&mut stop) => {}
                }
            });
        }
    });
    Ok(Served { addr, stop })
}

/// An answer with a JSON body.
pub fn json(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    r
}

/// An answer without a body.
pub fn status(status: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}
