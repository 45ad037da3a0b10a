//! The WebTransport endpoint: its QUIC settings (stream limits, idle timeout, keep-alive, the
//! stateless-reset key) and the accept loop that turns an incoming QUIC connection into a
//! session's transport (QUIC handshake → HTTP/3 CONNECT → the client's frame stream).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use wtransport::{Endpoint, ServerConfig, VarInt, endpoint::IncomingSession};

use super::WT_PATH;
use crate::{
    certs::Certs,
    config::{Config, JwtAlgorithm},
    http,
    node::Node,
    protocol::Code,
    session,
    transport::{PeerInfo, TransportKind, webtransport::WtTransport},
};

/// Streams a WebTransport client may have open at once, per direction. A session needs one
/// bidirectional stream for its frames plus the HTTP/3 request stream, and three
/// unidirectional ones (HTTP/3 control and the two QPACK streams). quinn's default of 100 each
/// costs every connection state for 200 streams it never opens.
pub const WT_MAX_STREAMS: u32 = 8;

/// The QUIC transport settings of the WebTransport endpoint.
pub fn wt_transport_config() -> wtransport::quinn::TransportConfig {
    let mut transport = wtransport::quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(WT_MAX_STREAMS.into())
        .max_concurrent_uni_streams(WT_MAX_STREAMS.into());
    transport
}

/// The kernel buffers asked for on the WebTransport UDP socket, each way. Every QUIC
/// connection shares this one socket, and a connection storm lands hundreds of padded
/// 1,200-byte Initials on it at once: with Linux's default 208 KiB receive buffer the kernel
/// drops them (`RcvbufErrors`), and each dropped Initial costs its client quinn's initial PTO
/// (~1 s) before it retries. Linux caps the request at `net.core.rmem_max` / `wmem_max` and
/// doubles it for its bookkeeping; 4 MiB or more there gives the full size.
pub const WT_UDP_BUFFER_BYTES: usize = 8 << 20;

/// Binds a UDP socket for a WebTransport endpoint with `WT_UDP_BUFFER_BYTES` kernel buffers.
/// `[::]` (any port) is dual-stack, serving IPv4 too: browsers resolve `localhost` to ::1
/// first and do not fall back. Warns when the kernel granted a smaller receive buffer.
pub fn wt_udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let SocketAddr::V6(v6) = addr
        && v6.ip().is_unspecified()
    {
        socket.set_only_v6(false)?;
    }
    // Best effort: a kernel that refuses keeps its default, as before.
    let _ = socket.set_recv_buffer_size(WT_UDP_BUFFER_BYTES);
    let _ = socket.set_send_buffer_size(WT_UDP_BUFFER_BYTES);
    socket.bind(&addr.into())?;
    let granted = socket.recv_buffer_size().unwrap_or(0);
    if granted < WT_UDP_BUFFER_BYTES {
        tracing::warn!(
            granted,
            wanted = WT_UDP_BUFFER_BYTES,
            "WebTransport UDP receive buffer capped by net.core.rmem_max: in connect storms the \
             kernel may drop QUIC Initials (each a ~1 s client retry); raise it to 4 MiB or more"
        );
    }
    Ok(socket.into())
}

pub(super) fn wt_config(config: &Config, certs: &Certs) -> anyhow::Result<ServerConfig> {
    let socket =
        wt_udp_socket(config.wt_addr).with_context(|| format!("binding UDP {}", config.wt_addr))?;
    let builder = ServerConfig::builder().with_bind_socket(socket);
    // The protocol heartbeat detects dead peers; QUIC's idle timeout is only the backstop for
    // a session stuck before or outside it.
    let idle = config.ping_interval + config.pong_timeout + Duration::from_secs(10);
    let keep_alive = Some(config.quic.keep_alive).filter(|d| !d.is_zero() && *d < idle);
    let mut server = builder
        .with_custom_transport(certs.identity.clone_identity(), wt_transport_config())
        .keep_alive_interval(keep_alive)
        .max_idle_timeout(Some(idle))
        .context("QUIC idle timeout out of range")?
        .build();
    stable_endpoint(config, server.quic_endpoint_config_mut());
    Ok(server)
}

/// What the keys of stateless resets are derived from. A reset is only believed by a client
/// when its token matches the one the connection's own server handed out, and quinn only
/// answers packets whose connection id it recognises as one of its own; so both keys must be
/// the same on the instance that restarts (and on every instance behind one address):
/// configured, or derived from the JWT secret every instance already shares. Without a shared
/// secret (RS256/ES256 and no `--wt-reset-key`) they are random, and resets only cover this
/// process's lifetime.
fn reset_secret(config: &Config) -> Option<&[u8]> {
    match (&config.quic.reset_key, config.jwt.algorithm) {
        (Some(key), _) => Some(key.as_bytes()),
        (None, JwtAlgorithm::Hs256) => Some(config.jwt.secret.as_bytes()),
        (None, _) => None,
    }
}

/// 32 bytes for `label`, from the shared secret or at random.
fn derive(config: &Config, label: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    match reset_secret(config) {
        Some(secret) => {
            let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
            out.copy_from_slice(ring::hmac::sign(&key, label).as_ref());
        }
        None => rand::fill(&mut out),
    }
    out
}

/// The endpoint's stateless-reset key and connection-id generator, both stable across
/// restarts when `reset_secret` has a secret.
fn stable_endpoint(config: &Config, endpoint: &mut wtransport::quinn::EndpointConfig) {
    if reset_secret(config).is_none() {
        tracing::warn!(
            "no --wt-reset-key and no HS256 secret: QUIC stateless resets will not survive a restart"
        );
    }
    let reset = derive(config, b"rtgate quic stateless reset v1");
    endpoint.reset_key(Arc::new(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &reset)));
    let cid = derive(config, b"rtgate quic connection ids v1");
    let mut cid_key = [0u8; 8];
    cid_key.copy_from_slice(&cid[..8]);
    let cid_key = u64::from_le_bytes(cid_key);
    endpoint.cid_generator(move || {
        Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
    });
}

pub(super) async fn accept_webtransport(
    node: Arc<Node>,
    endpoint: Endpoint<wtransport::endpoint::endpoint_side::Server>,
) -> Endpoint<wtransport::endpoint::endpoint_side::Server> {
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = node.shutdown.cancelled() => return endpoint,
        };
        let node2 = node.clone();
        node.sessions.spawn(async move {
            if let Some(transport) = establish(&node2, incoming).await {
                session::run(node2, transport).await;
            }
        });
    }
}

/// QUIC handshake → HTTP/3 CONNECT → the client's frame stream, each step under the handshake
/// deadline. `None` when the peer gave up, was too slow, or asked for an unknown path.
async fn establish(node: &Node, incoming: IncomingSession) -> Option<WtTransport> {
    // One deadline for the whole establishment, so a slow peer cannot take it step by step.
    let deadline = tokio::time::Instant::now() + node.config.handshake_timeout;
    let request = match tokio::time::timeout_at(deadline, incoming).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebTransport connection failed before the session request");
            return None;
        }
        Err(_) => return None,
    };
    if request.path() != WT_PATH {
        request.not_found().await;
        return None;
    }
    if !node.config.api.origin_allowed(request.origin()) {
        // Refused before a session exists: the page's origin is not in --allowed-origins.
        request.forbidden().await;
        return None;
    }
    if !node.admission.ip_allowed(request.remote_address().ip()) {
        request.too_many_requests().await;
        return None;
    }
    let peer = PeerInfo {
        kind: TransportKind::WebTransport,
        remote: request.remote_address(),
        user_agent: request.user_agent().map(|s| s.chars().take(256).collect()),
        origin: request.origin().map(|s| s.chars().take(256).collect()),
        headers: http::proxy_headers(&node.config.proxy, |name| {
            request.headers().get(name).map(String::as_str)
        }),
    };
    let conn = tokio::time::timeout_at(deadline, request.accept()).await.ok()?.ok()?;
    // The session's frames ride on the first bidirectional stream the client opens.
    match tokio::time::timeout_at(deadline, conn.accept_bi()).await {
        Ok(Ok((send, recv))) => {
            Some(WtTransport::new(conn, send, recv, peer, node.config.max_frame_bytes))
        }
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "WebTransport session closed before opening its stream");
            None
        }
        Err(_) => {
            let code = Code::HandshakeTimeout;
            conn.close(
                VarInt::from_u32(code.close_code().map_or(0, u32::from)),
                code.as_str().as_bytes(),
            );
            None
        }
    }
}
