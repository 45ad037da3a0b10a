//! Raw WebSocket echo at `/echo`, for conformance testing only (`serve --ws-echo`, off by
//! default): the Autobahn cases run by `scripts/autobahn.sh` exercise the WebSocket framing
//! `/ws` uses (`transport::websocket::codec`) and its handshake, without the session protocol
//! or authentication on top.

use axum::response::Response;
use bytes::Bytes;
use tokio::io::AsyncWriteExt;

use crate::transport::websocket::{
    self,
    codec::{self, Incoming, MessageReader},
    upgrade::{Upgrade, WsUpgrade},
};

/// Path of the echo endpoint.
pub(super) const ECHO_PATH: &str = "/echo";

/// Message and frame cap of the echo route. Autobahn's 9.x cases send single messages and frames
/// of up to 16 MiB, far above `--max-frame-bytes`; the headroom keeps the largest of them clear of
/// the limit. Acceptable only because the route is off unless a test asks for it.
const ECHO_MAX_BYTES: usize = 16 * 1024 * 1024 + 1024 * 1024;

pub(super) async fn echo(upgrade: WsUpgrade) -> Response {
    upgrade.on_upgrade(run)
}

async fn run(io: Upgrade) {
    let (read_half, mut write_half) = tokio::io::split(io);
    let mut reader = MessageReader::new(read_half, Bytes::new(), ECHO_MAX_BYTES);
    let mut out = Vec::new();
    // Every way out sends a close frame (the peer's code echoed, or the failure's), then ends
    // the connection: RFC 6455's close handshake from either side, or failing it.
    loop {
        let close = match reader.read().await {
            Ok(Some(Incoming::Text(text))) => {
                codec::encode(&mut out, codec::TEXT, &text);
                None
            }
            Ok(Some(Incoming::Binary(data))) => {
                codec::encode(&mut out, codec::BINARY, &data);
                None
            }
            Ok(Some(Incoming::Ping(payload))) => {
                codec::encode(&mut out, codec::PONG, &payload);
                None
            }
            Ok(Some(Incoming::Pong)) => None,
            Ok(Some(Incoming::Close(close))) => {
                codec::encode_close_reply(&mut out, close.as_ref());
                Some(())
            }
            Ok(None) => return,
            Err(e) => match e.close_code() {
                Some(code) => {
                    codec::encode_close(&mut out, code, "");
                    Some(())
                }
                None => return,
            },
        };
        if write_half.write_all(&out).await.is_err() {
            return;
        }
        out.clear();
        if close.is_some() {
            let _ = write_half.shutdown().await;
            websocket::drain(&mut reader.into_inner()).await;
            return;
        }
    }
}
