//! The HTTP front door: the TCP accept loop in front of the axum router. It owns what happens
//! to a connection before a handler sees a request — the per-IP connect rate, the PROXY
//! protocol header, TLS, HTTP/1.1 parsing — and the time limit on all of it: a connection that
//! sends nothing, a request head a byte at a time, or nothing more after its last response, is
//! closed after `--http-header-timeout`. A WebSocket upgrade leaves it: from then on the
//! socket belongs to the session, and nothing here keeps a buffer or a task for it.

use std::{
    convert::Infallible,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use axum::{Router, http::Request, response::Response, routing::future::RouteFuture};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    client_addr::{ConnAddr, Proxies},
    proxy_protocol,
};

/// Decides whether a client IP may open another connection now (and counts it).
pub type Admit = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// How long connections get to finish the request in hand once the listener has closed.
pub const CLOSE_GRACE: Duration = Duration::from_millis(500);

/// Everything a connection goes through before the router; shared by all of them.
pub struct FrontDoor {
    header_timeout: Duration,
    tls: Option<TlsAcceptor>,
    proxies: Proxies,
    admit: Admit,
    http: http1::Builder,
}

impl FrontDoor {
    /// Plain HTTP. `admit` is asked once per connection, with the client's address as soon as
    /// it is known: at accept, or after the PROXY header. A connection from a trusted proxy
    /// that names no client is not asked about here (see `ClientAddr::counted`).
    pub fn new(header_timeout: Duration, proxies: Proxies, admit: Admit) -> Self {
        let mut http = http1::Builder::new();
        // hyper's header timer needs a timer to exist; with one it bounds every request head,
        // the first and each one after a kept-alive response alike.
        http.timer(TokioTimer::new()).header_read_timeout(header_timeout);
        FrontDoor { header_timeout, tls: None, proxies, admit, http }
    }

    /// HTTPS/WSS with this configuration (HTTP/1.1 only; WebSocket upgrades need it).
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(TlsAcceptor::from(config));
        self
    }

    /// Serves `router` on `listener` until `stop` is cancelled. Then the listener is closed and
    /// every connection is asked to close once its current request is answered.
    pub fn serve(self, listener: TcpListener, router: Router, stop: CancellationToken) -> Serving {
        let connections = TaskTracker::new();
        let accept =
            tokio::spawn(Arc::new(self).accept_loop(listener, router, stop, connections.clone()));
        Serving { accept, connections }
    }

    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        router: Router,
        stop: CancellationToken,
        connections: TaskTracker,
    ) {
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, mostly: give connections time to close
                        // instead of spinning on the error.
                        tracing::warn!(error = %e, "accepting a TCP connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            // A trusted proxy speaks for many clients, and names them later if at all; anyone
            // else is counted now, before a task, a TLS handshake or a buffer is spent.
            let counted = !self.proxies.trusts(peer.ip());
            if counted && !(self.admit)(peer.ip()) {
                tracing::debug!(%peer, "over the per-IP connect rate: closed at accept");
                continue;
            }
            let conn = ConnAddr { addr: peer, counted };
            connections.spawn(self.clone().connection(stream, conn, router.clone(), stop.clone()));
        }
        connections.close();
    }

    async fn connection(
        self: Arc<Self>,
        mut stream: TcpStream,
        mut conn: ConnAddr,
        router: Router,
        stop: CancellationToken,
    ) {
        // Frames are small and latency matters more than segment count.
        let _ = stream.set_nodelay(true);
        // One deadline for everything before the first request head (PROXY header, TLS), so a
        // slow peer cannot take the steps one at a time.
        let deadline = Instant::now() + self.header_timeout;
        let peer = conn.addr;
        if self.proxies.expects_proxy_header(peer.ip()) {
            let header = proxy_protocol::read_header(&mut stream);
            match tokio::time::timeout_at(deadline, header).await {
                Ok(Ok(Some(source))) => {
                    conn.addr = SocketAddr::new(source.ip().to_canonical(), source.port())
                }
                Ok(Ok(None)) => {} // the proxy's own connection (a health check)
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "closing a trusted proxy's connection");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "no PROXY header within the header timeout");
                    return;
                }
            }
            if !self.proxies.trusts(conn.addr.ip()) {
                if !(self.admit)(conn.addr.ip()) {
                    tracing::debug!(client = %conn.addr, "over the per-IP connect rate: closed");
                    return;
                }
                conn.counted = true;
            }
        }
        let service = Entry { front: self.clone(), router, conn };
        match &self.tls {
            None => self.serve_http(stream, service, stop).await,
            Some(tls) => match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
                Ok(Ok(tls_stream)) => self.serve_http(tls_stream, service, stop).await,
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "no TLS handshake within the header timeout"),
            },
        }
    }

    async fn serve_http<I>(&self, io: I, service: Entry, stop: CancellationToken)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let conn = self.http.serve_connection(TokioIo::new(io), service).with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            result = conn.as_mut() => result,
            _ = stop.cancelled() => {
                conn.as_mut().graceful_shutdown();
                match tokio::time::timeout(CLOSE_GRACE, conn).await {
                    Ok(result) => result,
                    Err(_) => return,
                }
            }
        };
        // Header timeouts, resets and malformed requests all end here; none is ours to fix.
        if let Err(e) = result {
            tracing::debug!(error = %e, "HTTP connection ended");
        }
    }
}

/// The accept loop and its connections, for shutdown.
pub struct Serving {
    accept: JoinHandle<()>,
    connections: TaskTracker,
}

impl Serving {
    /// Waits for the accept loop to end (its `stop` cancelled), then up to `grace` for the open
    /// HTTP connections to close. Upgraded WebSockets are not among them.
    pub async fn finish(self, grace: Duration) {
        let _ = self.accept.await;
        let _ = tokio::time::timeout(grace, self.connections.wait()).await;
    }
}

/// The router behind one connection: each request gets its client's address as an extension.
struct Entry {
    front: Arc<FrontDoor>,
    router: Router,
    conn: ConnAddr,
}

impl hyper::service::Service<Request<Incoming>> for Entry {
    type Response = Response;
    type Error = Infallible;
    type Future = RouteFuture<Infallible>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let client = self.front.proxies.resolve(&self.conn, req.headers());
        req.extensions_mut().insert(client);
        tower_service::Service::call(&mut self.router.clone(), req)
    }
}
