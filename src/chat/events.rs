//! The chat events: `conversation:join`, `conversation:leave`, `message:send`, `typing`.
//!
//! Membership is checked against the store on join and send (in the same statement or
//! transaction that does the work, so a removal cannot slip between check and act), and
//! against the local feed for typing: a session is in the feed only after a checked join, and
//! a removal takes it out.

use std::{future::Future, sync::Arc};

use serde::Serialize;
use serde_json::json;

use super::{
    bounded_store, canonical,
    dto::{JoinDto, LeaveDto, SendMessageDto, TypingDto},
    feed::{Deliver, Finish},
    message_frame,
};
use crate::{
    cluster::bounded,
    dispatch::{EventError, Router},
    protocol::encode_event,
    session::SessionCtx,
    state::now_ms,
    store::{
        StoreError,
        chat::{NewMessage, SendOutcome},
    },
    validate::FieldError,
};

/// Store reads a join repeats when another join's read raced it (see `Finish::Stale`).
const JOIN_ATTEMPTS: usize = 3;

pub fn register(router: Router) -> Router {
    router
        .on("conversation:join", join)
        .on("conversation:leave", leave)
        .on("message:send", send)
        .on("typing", typing)
}

async fn db<T>(fut: impl Future<Output = Result<T, StoreError>>) -> Result<T, EventError> {
    bounded_store(fut)
        .await
        .ok_or_else(|| EventError::Unavailable("chat storage is unavailable".into()))
}

fn not_member() -> EventError {
    // The same answer for a conversation that does not exist: a non-member learns nothing.
    EventError::Forbidden("not a member of this conversation".into())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JoinAck {
    conversation_id: String,
    last_seq: i64,
    recovered: usize,
    has_more: bool,
}

async fn join(ctx: Arc<SessionCtx>, dto: JoinDto) -> Result<JoinAck, EventError> {
    let node = &ctx.node;
    let conv = canonical(&dto.conversation_id);
    let max = node.config.max_rooms_per_socket;
    let first =
        node.chat.begin_join(&ctx.socket_id, &ctx.user_id, &ctx.outbound, &conv, max).map_err(
            |n| EventError::LimitExceeded(format!("at most {n} conversations per connection")),
        )?;
    if first {
        node.fanout.watch_conversation(&conv).await;
    }
    let limit = node.config.chat_recovery_limit;
    for _ in 0..JOIN_ATTEMPTS {
        let read = db(node.chat_store.recovery(&conv, &ctx.user_id, dto.since_seq, limit)).await;
        let recovery = match read {
            Ok(Some(r)) => r,
            Ok(None) => {
                release(&ctx, &conv).await;
                return Err(not_member());
            }
            Err(e) => {
                release(&ctx, &conv).await;
                return Err(e);
            }
        };
        let since = dto.since_seq.map(super::feed::seq);
        let (top, entries) = (super::feed::top(&recovery), super::feed::entries(&recovery));
        match node.chat.finish_join(&ctx.socket_id, &conv, since, &top, &entries, Deliver::Now) {
            Finish::Done { recovered } => {
                return Ok(JoinAck {
                    conversation_id: conv,
                    last_seq: recovery.last_seq,
                    recovered,
                    has_more: recovery.has_more,
                });
            }
            // Removed from the conversation while joining.
            Finish::Gone => return Err(not_member()),
            Finish::Stale => continue,
        }
    }
    release(&ctx, &conv).await;
    Err(EventError::Unavailable("the conversation is too busy to join; retry".into()))
}

/// Takes the session out of `conv`, unsubscribing this instance when it was the last.
async fn release(ctx: &SessionCtx, conv: &str) {
    if ctx.node.chat.leave(&ctx.socket_id, conv) {
        ctx.node.fanout.release_conversation(conv).await;
    }
}

async fn leave(ctx: Arc<SessionCtx>, dto: LeaveDto) -> Result<(), EventError> {
    release(&ctx, &canonical(&dto.conversation_id)).await;
    Ok(())
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SendAck {
    id: String,
    seq: i64,
    created_at: i64,
    /// True when this was a retry of a message already stored.
    duplicate: bool,
}

async fn send(ctx: Arc<SessionCtx>, dto: SendMessageDto) -> Result<SendAck, EventError> {
    let node = &ctx.node;
    let message = NewMessage {
        id: uuid::Uuid::now_v7().to_string(),
        conversation_id: canonical(&dto.conversation_id),
        sender_id: ctx.user_id.to_string(),
        content: dto.content,
        reply_to_id: dto.reply_to_id.as_deref().map(canonical),
        client_message_id: dto.client_message_id,
        created_at_ms: now_ms() as i64,
    };
    let (stored, duplicate) = match db(node.chat_store.send_message(&message)).await? {
        SendOutcome::Stored(m) => (m, false),
        SendOutcome::Duplicate(m) => (m, true),
        SendOutcome::NotMember => return Err(not_member()),
        SendOutcome::ReplyNotFound => {
            return Err(EventError::Validation(vec![FieldError {
                path: "replyToId".into(),
                rule: "exists".into(),
                message: "must be a message of this conversation".into(),
            }]));
        }
    };
    // A retry is published again: if the first attempt's instance died between commit and
    // publish, this is what delivers it live; receivers drop seqs they already delivered.
    let frame = message_frame(&stored);
    let published =
        bounded(node.fanout.to_conversation(&stored.conversation_id, stored.seq, frame)).await;
    if let Err(e) = published {
        // Stored is what the ack promises; other instances fill the gap from the store.
        node.backends.mark_degraded("chat publish", &e);
    }
    Ok(SendAck { id: stored.id, seq: stored.seq, created_at: stored.created_at_ms, duplicate })
}

async fn typing(ctx: Arc<SessionCtx>, dto: TypingDto) -> Result<(), EventError> {
    let conv = canonical(&dto.conversation_id);
    if !ctx.node.chat.is_joined(&ctx.socket_id, &conv) {
        return Err(EventError::Forbidden("join the conversation first".into()));
    }
    let data =
        json!({ "conversationId": conv, "userId": &*ctx.user_id, "isTyping": dto.is_typing });
    let raw = serde_json::value::to_raw_value(&data).map_err(anyhow::Error::from)?;
    let frame = encode_event("typing", &raw);
    // Volatile: a lost typing indicator is not worth an error.
    if let Err(e) = bounded(ctx.node.fanout.typing(&conv, &ctx.socket_id, frame)).await {
        ctx.node.backends.mark_degraded("typing", &e);
    }
    Ok(())
}
