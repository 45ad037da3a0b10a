//! Built-in `sys:*` events, used by tests, benchmarks and client health checks.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{EventError, Router};
use crate::{protocol::encode_event, session::SessionCtx};

pub fn register(router: Router) -> Router {
    router
        .on("sys:echo", echo)
        .on("sys:volatile-echo", volatile_echo)
}

/// Acks with the payload it was given, unchanged: the whole pipeline with a handler that
/// costs nothing.
async fn echo(_ctx: Arc<SessionCtx>, data: Box<RawValue>) -> Result<Box<RawValue>, EventError> {
    Ok(data)
}

/// Sends the payload back as a volatile `sys:volatile-echo` event (a datagram on
/// WebTransport, an ordinary frame on WebSocket), then acks with `null`.
async fn volatile_echo(ctx: Arc<SessionCtx>, data: Box<RawValue>) -> Result<(), EventError> {
    ctx.outbound
        .send_volatile(encode_event("sys:volatile-echo", &data));
    Ok(())
}
