//! Who the client of an HTTP request is: the `ClientAddr` request extension the front door
//! sets on every request. Whatever counts or records a client's address — the per-IP connect
//! rate, a session's `PeerInfo::remote`, history's `ip_address` — takes it from here.

use std::net::SocketAddr;

use axum::{
    extract::FromRequestParts,
    http::{StatusCode, request::Parts},
};

/// What a connection says about its client, fixed when it is accepted.
#[derive(Debug, Clone, Copy)]
pub struct ConnAddr {
    /// The TCP peer.
    pub addr: SocketAddr,
    /// Whether `addr` was counted against the per-IP connect rate at accept.
    pub counted: bool,
}

/// The client of one HTTP request, as handlers see it (a request extension set by `front`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr {
    pub addr: SocketAddr,
    /// True when this connection was counted against the per-IP connect rate when it was
    /// accepted; anything that counts per new connection (the `/ws` upgrade) counts only
    /// otherwise, so no connection is counted twice.
    pub counted: bool,
}

impl From<ConnAddr> for ClientAddr {
    fn from(conn: ConnAddr) -> Self {
        ClientAddr { addr: conn.addr, counted: conn.counted }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = (StatusCode, &'static str);

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        // Only a router served without the front door lacks it: a bug, not the client's fault.
        parts
            .extensions
            .get::<ClientAddr>()
            .copied()
            .ok_or((StatusCode::INTERNAL_SERVER_ERROR, "client address unknown"))
    }
}
