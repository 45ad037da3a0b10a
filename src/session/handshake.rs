//! The handshake: the first frame must be `connect` with a token; it yields the session's
//! identity and device, or the code the session is refused with.

use crate::{
    auth::Identity,
    node::Node,
    protocol::{ClientFrame, Code, PROTOCOL_VERSION, decode_client_frame},
    proxy::ProxyError,
    transport::{FrameReader, PeerInfo, ReadError},
};

pub(super) enum Refusal {
    /// Refuse with this code and message (sent as `error`, then `disconnect`).
    Refused(Code, String),
    /// The peer left before finishing the handshake.
    Gone(String),
}

/// Longest device id accepted from a client or a token.
const MAX_DEVICE_ID: usize = 64;

fn valid_device(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= MAX_DEVICE_ID
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
}

pub(super) async fn run<R: FrameReader>(
    node: &Node,
    reader: &mut R,
    socket_id: &str,
    peer: &PeerInfo,
) -> Result<(Identity, Option<String>), Refusal> {
    use Refusal::*;
    let bytes = match reader.read_frame().await {
        Ok(Some(b)) => b,
        Ok(None) => return Err(Gone("closed before connect".into())),
        Err(e @ ReadError::TooLarge { .. }) => {
            return Err(Refused(Code::PayloadTooLarge, e.to_string()));
        }
        Err(ReadError::NotText | ReadError::InvalidUtf8) => {
            return Err(Refused(
                Code::ProtocolError,
                "the first frame must be a text `connect` frame".into(),
            ));
        }
        Err(e) => return Err(Gone(e.to_string())),
    };
    let connect = match decode_client_frame(&bytes) {
        Ok(ClientFrame::Connect(c)) => c,
        Ok(_) => {
            return Err(Refused(Code::ProtocolError, "the first frame must be `connect`".into()));
        }
        Err(e) => {
            return Err(Refused(Code::ProtocolError, format!("bad connect frame: {e}")));
        }
    };
    if let Some(v) = connect.version.filter(|v| *v != PROTOCOL_VERSION) {
        return Err(Refused(
            Code::UnsupportedVersion,
            format!("protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"),
        ));
    }
    let token = connect.token.as_deref().unwrap_or_default();
    let identity = if token.is_empty() && node.proxies.config().connect_url.is_some() {
        // No token: the application's backend says who this is, from the request's headers.
        match crate::proxy::events::connect(node, socket_id, peer).await {
            Ok(identity) => identity,
            Err(ProxyError::Refused { message, .. }) => {
                return Err(Refused(Code::ConnectRefused, message));
            }
            Err(e) => {
                tracing::warn!(error = %e, "connect proxy failed");
                let msg = "the application's backend is unavailable; retry later";
                return Err(Refused(Code::BackendUnavailable, msg.into()));
            }
        }
    } else {
        node.auth.verify(token).map_err(|e| Refused(e.code(), e.to_string()))?
    };
    if super::token::is_revoked(node, &identity) {
        return Err(Refused(Code::TokenRevoked, "token revoked".into()));
    }
    // A device pinned by the token wins over the one the client names.
    let device = identity.device_id.clone().or(connect.device);
    if device.as_deref().is_some_and(|d| !valid_device(d)) {
        return Err(Refused(
            Code::ProtocolError,
            format!("device id must be 1 to {MAX_DEVICE_ID} characters of [A-Za-z0-9._:-]"),
        ));
    }
    Ok((identity, device))
}
