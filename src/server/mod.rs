//! Start-up and shutdown: builds the node, binds both listeners (so tests can use port 0 and
//! read the real ports back), runs them, and drains every session on shutdown while the HTTP
//! listener keeps answering.

mod quic;
mod ready;

pub use quic::{WT_MAX_STREAMS, WT_UDP_BUFFER_BYTES, wt_transport_config, wt_udp_socket};

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use wtransport::Endpoint;

use crate::{
    certs::Certs,
    cluster,
    config::Config,
    dispatch::Router,
    http::{
        self, HttpState,
        client_addr::Proxies,
        front::{self, FrontDoor},
    },
    node::Node,
};

/// Path of the WebTransport endpoint.
pub const WT_PATH: &str = "/wt";

/// A server with both listeners bound, not yet serving.
pub struct Server {
    node: Arc<Node>,
    certs: Arc<Certs>,
    http: std::net::TcpListener,
    http_addr: SocketAddr,
    /// Set when `--tls-cert` makes the HTTP listener HTTPS/WSS.
    https: Option<Arc<rustls::ServerConfig>>,
    wt: Endpoint<wtransport::endpoint::endpoint_side::Server>,
    wt_addr: SocketAddr,
    /// The server API's own listener (`--api-addr`), plain HTTP.
    api: Option<std::net::TcpListener>,
}

impl Server {
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        // Both rustls users (WSS and QUIC) take the process-wide provider; ring is the one
        // compiled in. Installing twice (tests) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        config.check()?;
        if config.split_history() {
            tracing::warn!(
                sqlite = %config.sqlite_path.display(),
                "REDIS_URL without DATABASE_URL (allowed by --allow-local-database): this instance keeps chat and history in its own SQLite file; other instances do not see them"
            );
        }

        let certs = Arc::new(Certs::from_config(&config).await?);
        let https = match config.tls_cert {
            Some(_) => Some(https_config(&certs).context("TLS cert/key for WSS")?),
            None => None,
        };
        if config.proxy_protocol && config.trusted_proxies.0.is_empty() {
            tracing::warn!("--proxy-protocol does nothing without --trusted-proxies");
        }

        let http = listen_tcp(config.http_addr)
            .with_context(|| format!("binding TCP {}", config.http_addr))?;
        let http_addr = http.local_addr()?;

        let wt = Endpoint::server(quic::wt_config(&config, &certs)?)
            .with_context(|| format!("binding UDP {}", config.wt_addr))?;
        let wt_addr = wt.local_addr()?;
        let api = match config.api.addr {
            Some(addr) => {
                Some(listen_tcp(addr).with_context(|| format!("binding TCP {addr} (--api-addr)"))?)
            }
            None => None,
        };

        let router = Router::with_builtins(&config);
        let node = Arc::new(Node::new(config, router).await?);
        Ok(Server { node, certs, http, http_addr, https, wt, wt_addr, api })
    }

    /// Where the server API listens when it has a listener of its own.
    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.api.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    pub fn wt_addr(&self) -> SocketAddr {
        self.wt_addr
    }

    pub fn cert_sha256(&self) -> [u8; 32] {
        self.certs.sha256
    }

    pub fn certs(&self) -> &Certs {
        &self.certs
    }

    pub fn node(&self) -> Arc<Node> {
        self.node.clone()
    }

    /// Cancel this token to shut the server down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.node.shutdown.clone()
    }

    /// Serves until the shutdown token is cancelled, then tells every session
    /// `server_shutdown` and waits up to the configured grace for them to close. Through that
    /// drain the HTTP listener keeps accepting (`/ws` and `/health/ready` answer 503); it closes
    /// after.
    pub async fn run(self) -> anyhow::Result<()> {
        let Server { node, certs, http, https, wt, api, .. } = self;
        // Shared state before listeners: the instance must be alive and subscribed before a
        // session registers, or a reaper elsewhere would take its sockets for a dead one's.
        cluster::join(&node).await;
        tokio::spawn(node.fanout.clone().run());
        tokio::spawn(crate::commands::run(node.clone()));
        if node.config.webhooks.enabled() {
            tokio::spawn(crate::webhooks::deliver::run(node.clone()));
        }
        let liveness = tokio::spawn(cluster::liveness_loop(node.clone()));
        let cleanup = tokio::spawn(cluster::cleanup_loop(node.clone()));
        tokio::spawn(node.channels.clone().refresh_presence(node.shutdown.clone()));

        let app = http::router(HttpState { node: node.clone(), certs });
        let admission = node.clone();
        let mut front = FrontDoor::new(
            node.config.http_header_timeout,
            Proxies::from_config(&node.config),
            Arc::new(move |ip| admission.admission.ip_allowed(ip)),
        );
        if let Some(https) = https {
            front = front.with_tls(https);
        }
        let http_stop = CancellationToken::new();
        let listener = tokio::net::TcpListener::from_std(http)?;
        let serving = front.serve(listener, app, http_stop.clone());
        let wt_task = tokio::spawn(quic::accept_webtransport(node.clone(), wt));
        // The server API's own listener: the same front door (time limits, PROXY header,
        // trusted proxies), no TLS, and it stops with the HTTP port after the drain.
        let api_serving = match api {
            Some(api) => {
                let admission = node.clone();
                let door = FrontDoor::new(
                    node.config.http_header_timeout,
                    Proxies::from_config(&node.config),
                    Arc::new(move |ip| admission.admission.ip_allowed(ip)),
                );
                let routes = http::with_cors(
                    crate::api::router(node.clone()),
                    &node.config.api.cors_origins,
                );
                Some(door.serve(tokio::net::TcpListener::from_std(api)?, routes, http_stop.clone()))
            }
            None => None,
        };

        node.shutdown.cancelled().await;
        tracing::info!(sessions = node.hub.len(), "shutting down: draining sessions");
        node.sessions.close();
        let grace = node.config.shutdown_grace + Duration::from_millis(500);
        if tokio::time::timeout(grace, node.sessions.wait()).await.is_err() {
            tracing::warn!(
                left = node.hub.len(),
                "shutdown grace elapsed with sessions still open"
            );
        }
        // Only now: during the drain a load balancer polling /health/ready and a client
        // retrying /ws got a 503 they can act on, where a closed port says nothing. Upgraded
        // WebSockets are sessions, already drained above.
        http_stop.cancel();
        serving.finish(front::CLOSE_GRACE).await;
        if let Some(api) = api_serving {
            api.finish(front::CLOSE_GRACE).await;
        }
        let _ = tokio::join!(liveness, cleanup);
        // Every session has ended (a drained one left its registration to this); nothing will
        // heartbeat this incarnation again.
        cluster::leave(&node).await;
        // Sessions have recorded their ends; flush the history writer within the grace.
        node.writer.close();
        let writer = node.writer_task.lock().ok().and_then(|mut t| t.take());
        let flushed = match writer {
            Some(w) => tokio::time::timeout(node.config.shutdown_grace, w).await.is_ok(),
            None => true,
        };
        if !flushed {
            tracing::warn!(
                unwritten = node.writer.queued(),
                "history not fully flushed before exit"
            );
        }
        if let Ok(endpoint) = wt_task.await {
            // Lets the CONNECTION_CLOSE frames of the sessions just closed reach their peers.
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Pending connections the kernel queues before `accept`. std's listener asks for 128: in a
/// reconnect storm the queue overflows, and every dropped SYN costs that client a one-second
/// retransmit. The kernel caps this at `net.core.somaxconn`.
pub const LISTEN_BACKLOG: u32 = 4096;

/// A non-blocking TCP listener on `addr` with `LISTEN_BACKLOG`.
pub fn listen_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std does: a restarted server can rebind while old connections sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)?.into_std()
}

/// The HTTPS/WSS listener's TLS: the identity WebTransport serves (the configured PEM pair),
/// HTTP/1.1 only, since WebSocket upgrades need it.
fn https_config(certs: &Certs) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let identity = &certs.identity;
    let chain: Vec<CertificateDer<'static>> = identity
        .certificate_chain()
        .as_slice()
        .iter()
        .map(|c| CertificateDer::from(c.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::try_from(identity.private_key().secret_der().to_vec())
        .map_err(|e| anyhow::anyhow!("unsupported private key: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Runs `rtgate serve`: binds, prints where it listens, serves until SIGTERM/SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    if config.jwt.secret == crate::config::DEV_JWT_SECRET
        && config.jwt.algorithm == crate::config::JwtAlgorithm::Hs256
    {
        tracing::warn!(
            "using the built-in development JWT secret: anyone can mint tokens; set RTGATE_JWT_SECRET"
        );
    }
    let server = Server::bind(config).await?;
    ready::announce(&server);
    let token = server.shutdown_token();
    tokio::spawn(async move {
        shutdown_signal().await;
        token.cancel();
    });
    server.run().await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
