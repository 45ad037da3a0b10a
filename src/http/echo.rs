//! Raw WebSocket echo at `/echo`, for conformance testing only (`serve --ws-echo`, off by
//! default): the Autobahn cases run by `scripts/autobahn.sh` exercise tungstenite through the
//! same axum upgrade `/ws` uses, without the session protocol or authentication on top.

use axum::{
    extract::ws::{Message, WebSocket, WebSocketUpgrade},
    response::Response,
};

/// Path of the echo endpoint.
pub(super) const ECHO_PATH: &str = "/echo";

/// Message and frame cap of the echo route. Autobahn's 9.x cases send single messages and frames
/// of up to 16 MiB, far above `--max-frame-bytes`; the headroom keeps the largest of them clear of
/// the limit. Acceptable only because the route is off unless a test asks for it.
const ECHO_MAX_BYTES: usize = 16 * 1024 * 1024 + 1024 * 1024;

pub(super) async fn echo(upgrade: WebSocketUpgrade) -> Response {
    upgrade.max_message_size(ECHO_MAX_BYTES).max_frame_size(ECHO_MAX_BYTES).on_upgrade(run)
}

async fn run(mut socket: WebSocket) {
    // Until the stream ends, not until a Close arrives: tungstenite queues its close reply
    // when it reads the peer's Close and sends it on the next poll, which then reports the
    // end. Returning on the Close itself would drop the connection without that reply. A
    // protocol error also ends the stream; dropping the socket then fails the connection, as
    // RFC 6455 asks.
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                if socket.send(message).await.is_err() {
                    break;
                }
            }
            // Pings are answered by tungstenite itself; pongs and Close need nothing from us.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }
}
