//! The chat REST API: conversations, members and message pages, for the same JWTs as the
//! realtime handshake (`Authorization: Bearer …`).
//!
//! A caller who is not a member of a conversation gets `404` for it, exactly as if it did
//! not exist: non-members learn nothing. A member without the right to do something (add or
//! remove others; only the owner may) gets `403`.

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    HttpState,
    body::{BodyRejection, JsonObject},
    history::{ApiError, bad_request, bearer},
};
use crate::{
    auth::Identity,
    chat::{bounded_store, canonical, removed_frame},
    cluster::bounded,
    protocol::encode_event,
    state::now_ms,
    store::{
        StoreError,
        chat::{Conversation, Member, NewConversation, Page, Role},
    },
    validate::identifier,
};

const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 200;
const MAX_TITLE_CHARS: usize = 200;
const MAX_INITIAL_MEMBERS: usize = 100;
const MAX_LISTED: u32 = 500;

fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found", "no such conversation".into())
}

async fn db<T>(fut: impl Future<Output = Result<T, StoreError>>) -> Result<T, ApiError> {
    bounded_store(fut).await.ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the chat database is unavailable".into(),
        )
    })
}

fn conversation_id(raw: &str) -> Result<String, ApiError> {
    // Anything that is not a UUID cannot name a conversation.
    crate::validate::uuid(raw).map_err(|_| not_found())?;
    Ok(canonical(raw))
}

fn user_id(raw: &str, field: &str) -> Result<String, ApiError> {
    identifier(raw)
        .map_err(|_| bad_request(format!("`{field}` must be a user id (1 to 128 bytes)")))?;
    Ok(raw.to_owned())
}

/// The caller's view of conversation `id`, or 404.
async fn membership(
    state: &HttpState,
    caller: &Identity,
    id: &str,
) -> Result<Conversation, ApiError> {
    db(state.node.chat_store.conversation(id, &caller.user_id)).await?.ok_or_else(not_found)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    title: Option<String>,
    #[serde(default)]
    members: Vec<String>,
}

pub(super) async fn create(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<JsonObject<CreateBody>, BodyRejection>,
) -> Result<Response, ApiError> {
    let caller = bearer(&state, &headers)?;
    let JsonObject(body) = body.map_err(|e| bad_request(e.message()))?;
    if body.title.as_ref().is_some_and(|t| t.chars().count() > MAX_TITLE_CHARS) {
        return Err(bad_request(format!("`title` must be at most {MAX_TITLE_CHARS} characters")));
    }
    if body.members.len() > MAX_INITIAL_MEMBERS {
        return Err(bad_request(format!("at most {MAX_INITIAL_MEMBERS} initial members")));
    }
    let members =
        body.members.iter().map(|m| user_id(m, "members")).collect::<Result<Vec<_>, _>>()?;
    let new = NewConversation {
        id: uuid::Uuid::now_v7().to_string(),
        title: body.title,
        created_by: caller.user_id.clone(),
        members,
        created_at_ms: now_ms() as i64,
    };
    let store = &state.node.chat_store;
    let conversation = db(store.create_conversation(&new)).await?;
    let members = db(store.members(&conversation.id)).await?;
    for member in members.iter().filter(|m| m.user_id != caller.user_id) {
        announce_added(&state, &conversation, &member.user_id).await;
    }
    Ok((StatusCode::CREATED, Json(with_members(&conversation, &members))).into_response())
}

/// Tells `user`'s live sessions they were added (`conversation:added`), so a client can
/// join without polling. Best effort: the conversation list is the source of truth.
async fn announce_added(state: &HttpState, conversation: &Conversation, user: &str) {
    let data = json!({ "conversation": conversation_json(&Conversation { role: Role::Member, ..conversation.clone() }) });
    let Ok(raw) = serde_json::value::to_raw_value(&data) else { return };
    let frame = encode_event("conversation:added", &raw);
    if let Err(e) = bounded(state.node.fanout.to_user(user, frame)).await {
        state.node.backends.mark_degraded("conversation:added", &e);
    }
}

fn conversation_json(c: &Conversation) -> Value {
    serde_json::to_value(c).unwrap_or(Value::Null)
}

fn with_members(c: &Conversation, members: &[Member]) -> Value {
    let mut value = conversation_json(c);
    if let Value::Object(map) = &mut value {
        map.insert("members".into(), serde_json::to_value(members).unwrap_or(Value::Null));
    }
    value
}

#[derive(Debug, Deserialize)]
pub(super) struct ListParams {
    limit: Option<u32>,
}

pub(super) async fn list(
    State(state): State<HttpState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = bearer(&state, &headers)?;
    let Query(p) = params.map_err(|e| bad_request(e.body_text()))?;
    let limit = p.limit.unwrap_or(MAX_LISTED);
    if !(1..=MAX_LISTED).contains(&limit) {
        return Err(bad_request(format!("`limit` must be 1 to {MAX_LISTED}")));
    }
    let conversations = db(state.node.chat_store.conversations_of(&caller.user_id, limit)).await?;
    Ok(Json(json!({ "conversations": conversations })))
}

pub(super) async fn show(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let caller = bearer(&state, &headers)?;
    let id = conversation_id(&id)?;
    let conversation = membership(&state, &caller, &id).await?;
    let members = db(state.node.chat_store.members(&id)).await?;
    Ok(Json(with_members(&conversation, &members)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct AddBody {
    user_id: String,
}

pub(super) async fn add_member(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<JsonObject<AddBody>, BodyRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = bearer(&state, &headers)?;
    let id = conversation_id(&id)?;
    let JsonObject(body) = body.map_err(|e| bad_request(e.message()))?;
    let user = user_id(&body.user_id, "userId")?;
    let conversation = membership(&state, &caller, &id).await?;
    if conversation.role != Role::Owner {
        return Err(forbidden("only the owner may add members"));
    }
    if db(state.node.chat_store.add_member(&id, &user, now_ms() as i64)).await? {
        announce_added(&state, &conversation, &user).await;
    }
    Ok(StatusCode::NO_CONTENT)
}

fn forbidden(msg: &str) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, "forbidden", msg.into())
}

pub(super) async fn remove_member(
    State(state): State<HttpState>,
    Path((id, user)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let caller = bearer(&state, &headers)?;
    let id = conversation_id(&id)?;
    let conversation = membership(&state, &caller, &id).await?;
    if user != caller.user_id && conversation.role != Role::Owner {
        return Err(forbidden("only the owner may remove other members"));
    }
    if !db(state.node.chat_store.remove_member(&id, &user)).await? {
        return Err(ApiError(StatusCode::NOT_FOUND, "not_found", "no such member".into()));
    }
    // The removal is committed; now take the user's live sessions out of the conversation on
    // every instance, so they stop receiving it.
    let kick = state.node.fanout.kick_from_conversation(&id, &user, removed_frame(&id));
    if let Err(e) = bounded(kick).await {
        // Instances that missed the kick still deliver to the removed user's already-joined
        // sessions until they rejoin (which the store then refuses).
        state.node.backends.mark_degraded("conversation kick", &e);
    }
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub(super) struct PageParams {
    after_seq: Option<i64>,
    before_seq: Option<i64>,
    limit: Option<u32>,
}

pub(super) async fn messages(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = bearer(&state, &headers)?;
    let id = conversation_id(&id)?;
    let Query(p) = params.map_err(|e| bad_request(e.body_text()))?;
    let limit = p.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(bad_request(format!("`limit` must be 1 to {MAX_PAGE}")));
    }
    if p.after_seq.is_some_and(|s| s < 0) || p.before_seq.is_some_and(|s| s < 0) {
        return Err(bad_request("`after_seq` and `before_seq` must be 0 or more"));
    }
    membership(&state, &caller, &id).await?;
    let page = match p.after_seq {
        Some(after) => Page::After { after, before: p.before_seq, limit },
        None => Page::Before { before: p.before_seq, limit },
    };
    let (messages, has_more) = db(state.node.chat_store.messages(&id, page)).await?;
    Ok(Json(json!({ "messages": messages, "hasMore": has_more })))
}
