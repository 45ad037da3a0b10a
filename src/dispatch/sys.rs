//! Built-in `sys:*` events.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{EventError, Router};
use crate::session::SessionCtx;

pub fn register(router: Router) -> Router {
    router.on("sys:echo", echo)
}

/// Acks with the payload it was given, unchanged. Used by tests and benchmarks to measure
/// the whole pipeline with a handler that costs nothing.
async fn echo(_ctx: Arc<SessionCtx>, data: Box<RawValue>) -> Result<Box<RawValue>, EventError> {
    Ok(data)
}
