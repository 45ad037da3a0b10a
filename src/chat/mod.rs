//! Chat: conversations, messages, membership and recovery after reconnect, on top of the
//! core's pipeline, fanout and store.
//!
//! - `dto`: the event payloads and their rules.
//! - `events`: the realtime handlers (`conversation:join`/`leave`, `message:send`, `typing`).
//! - `feed`: per-instance ordered delivery of `message:new` and the join/recovery handshake.
//! - REST lives in `http::chat`; persistence in `store::chat`.
//!
//! The store assigns each message its conversation's next `seq`; everything else (ordering,
//! gap filling, recovery, idempotent retries) is built on seqs being gapless.

pub mod dto;
pub mod events;
pub mod feed;

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::{
    protocol::encode_event,
    store::{StoreError, chat::Message},
};

/// Longest a chat call (realtime event or REST) waits for the database before failing with
/// `unavailable`: a session handles its events one at a time, so a hung database must not hang
/// it.
pub const DB_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a chat store call under `DB_TIMEOUT`, logging a failure once here. `None` means the
/// database failed or did not answer; each caller maps it to its own `unavailable`.
pub async fn bounded_store<T>(fut: impl Future<Output = Result<T, StoreError>>) -> Option<T> {
    match tokio::time::timeout(DB_TIMEOUT, fut).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "chat storage failed");
            None
        }
        Err(_) => {
            tracing::warn!(timeout = ?DB_TIMEOUT, "chat storage did not answer");
            None
        }
    }
}

/// The `message:new` frame of `message`, encoded once and shared by every recipient.
pub fn message_frame(message: &Message) -> Bytes {
    match serde_json::value::to_raw_value(message) {
        Ok(raw) => encode_event("message:new", &raw),
        // A struct of strings and integers always serializes.
        Err(_) => Bytes::new(),
    }
}

/// The `conversation:removed` frame.
pub fn removed_frame(conversation_id: &str) -> Bytes {
    let data = json!({ "conversationId": conversation_id });
    match serde_json::value::to_raw_value(&data) {
        Ok(raw) => encode_event("conversation:removed", &raw),
        Err(_) => Bytes::new(),
    }
}

/// The canonical (lowercase, hyphenated) form of a UUID the client sent, so the same
/// conversation is one key whatever case the client used. Callers validated it already.
pub fn canonical(id: &str) -> String {
    uuid::Uuid::try_parse(id).map(|u| u.hyphenated().to_string()).unwrap_or_else(|_| id.to_owned())
}
