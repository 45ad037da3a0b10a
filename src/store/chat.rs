//! Chat persistence: conversations, members and messages, behind the `ChatStore` trait.
//!
//! Both backends run the same SQL (this module, generic over the sqlx driver); they differ only
//! in how a Unix-millisecond value becomes a stored time and back (`Dialect`). The one rule the
//! rest of chat relies on lives in `send_message`: the conversation's `last_seq` is incremented
//! in the same transaction that inserts the message, so concurrent senders on any number of
//! instances get consecutive seqs, and a committed seq implies every lower one is committed.

use serde::Serialize;
use sqlx::{Database, Executor, IntoArguments, Pool, Row};

use super::StoreError;

/// One stored message, as it goes on the wire (`message:new`, REST pages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub sender_id: String,
    pub content: String,
    pub reply_to_id: Option<String>,
    pub client_message_id: Option<String>,
    #[serde(rename = "createdAt")]
    pub created_at_ms: i64,
}

/// A message to store; `seq` is assigned by the store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub conversation_id: String,
    pub sender_id: String,
    pub content: String,
    pub reply_to_id: Option<String>,
    pub client_message_id: Option<String>,
    pub created_at_ms: i64,
}

/// What `send_message` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    Stored(Message),
    /// The sender already sent this `client_message_id` here: the original, nothing stored.
    Duplicate(Message),
    /// No such conversation, or the sender is not a member (indistinguishable on purpose).
    NotMember,
    /// `reply_to_id` names no message of this conversation.
    ReplyNotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    fn parse(s: &str) -> Role {
        if s == "owner" { Role::Owner } else { Role::Member }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Conversation {
    pub id: String,
    pub title: Option<String>,
    pub created_by: String,
    #[serde(rename = "createdAt")]
    pub created_at_ms: i64,
    pub last_seq: i64,
    /// The reading user's role in it.
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub user_id: String,
    pub role: Role,
}

#[derive(Debug, Clone)]
pub struct NewConversation {
    pub id: String,
    pub title: Option<String>,
    pub created_by: String,
    /// Other members (the creator is added as owner; duplicates are ignored).
    pub members: Vec<String>,
    pub created_at_ms: i64,
}

/// Which messages a page holds. Pages are always returned in ascending `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// The first `limit` with `seq > after` (and `< before` when set).
    After { after: i64, before: Option<i64>, limit: u32 },
    /// The last `limit` with `seq < before` (the newest when `None`).
    Before { before: Option<i64>, limit: u32 },
}

/// A recovery read: the conversation's newest seq and the missed messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    pub last_seq: i64,
    /// The newest `limit` messages with `since < seq <= last_seq`, ascending.
    pub messages: Vec<Message>,
    /// More than `limit` were missed; the oldest were left out.
    pub has_more: bool,
}

#[async_trait::async_trait]
pub trait ChatStore: Send + Sync + 'static {
    /// Creates a conversation with its creator as owner and `members` as members.
    async fn create_conversation(&self, c: &NewConversation) -> Result<Conversation, StoreError>;

    /// The conversation as `user` sees it; `None` when it does not exist or `user` is not a
    /// member.
    async fn conversation(&self, id: &str, user: &str) -> Result<Option<Conversation>, StoreError>;

    async fn members(&self, id: &str) -> Result<Vec<Member>, StoreError>;

    /// `user`'s conversations, newest first, at most `limit`.
    async fn conversations_of(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<Conversation>, StoreError>;

    /// Adds a member; false when they already were one.
    async fn add_member(&self, id: &str, user: &str, at_ms: i64) -> Result<bool, StoreError>;

    /// Removes a member; false when they were not one.
    async fn remove_member(&self, id: &str, user: &str) -> Result<bool, StoreError>;

    /// Stores a message from a member, assigning the next seq (see the module docs).
    async fn send_message(&self, m: &NewMessage) -> Result<SendOutcome, StoreError>;

    /// A page of a conversation's messages (membership is the caller's check) and whether
    /// more exist beyond it in the direction it was read.
    async fn messages(&self, id: &str, page: Page) -> Result<(Vec<Message>, bool), StoreError>;

    /// What `user` missed since `since` (nothing when `None`), bounded by `limit`; `None`
    /// when `user` is not a member.
    async fn recovery(
        &self,
        id: &str,
        user: &str,
        since: Option<i64>,
        limit: u32,
    ) -> Result<Option<Recovery>, StoreError>;
}

/// How a backend stores times: the SQL turning a ms parameter into a stored time, and a stored
/// time column into ms.
#[derive(Clone, Copy)]
pub(super) struct Dialect {
    pub to_time: fn(&str) -> String,
    pub to_ms: fn(&str) -> String,
}

/// The shared implementation: `DB`'s pool plus its dialect.
pub(super) struct Sql<DB: Database> {
    pub pool: Pool<DB>,
    pub dialect: Dialect,
}

const MESSAGE_COLUMNS: &str =
    "id, conversation_id, seq, sender_id, content, reply_to_id, client_message_id";

impl<DB> Sql<DB>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c str: sqlx::ColumnIndex<DB::Row>,
    usize: sqlx::ColumnIndex<DB::Row>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::QueryResult: RowsAffected,
{
    fn message_select(&self) -> String {
        format!(
            "SELECT {MESSAGE_COLUMNS}, {} AS created_at FROM messages",
            (self.dialect.to_ms)("created_at")
        )
    }

    fn conversation_select(&self) -> String {
        format!(
            "SELECT c.id, c.title, c.created_by, {} AS created_at, c.last_seq, m.role \
             FROM conversations c JOIN conversation_members m ON m.conversation_id = c.id",
            (self.dialect.to_ms)("c.created_at")
        )
    }

    pub(super) async fn create_conversation(
        &self,
        c: &NewConversation,
    ) -> Result<Conversation, StoreError> {
        let mut tx = self.pool.begin().await?;
        let insert = format!(
            "INSERT INTO conversations (id, title, created_by, created_at, last_seq) VALUES ($1, $2, $3, {}, 0)",
            (self.dialect.to_time)("$4")
        );
        sqlx::query(&insert)
            .bind(c.id.clone())
            .bind(c.title.clone())
            .bind(c.created_by.clone())
            .bind(c.created_at_ms)
            .execute(&mut *tx)
            .await?;
        let member = format!(
            "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at) VALUES ($1, $2, $3, {}) \
             ON CONFLICT (conversation_id, user_id) DO NOTHING",
            (self.dialect.to_time)("$4")
        );
        let owner = std::iter::once((&c.created_by, Role::Owner));
        for (user, role) in owner.chain(c.members.iter().map(|m| (m, Role::Member))) {
            sqlx::query(&member)
                .bind(c.id.clone())
                .bind(user.clone())
                .bind(role.as_str())
                .bind(c.created_at_ms)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Conversation {
            id: c.id.clone(),
            title: c.title.clone(),
            created_by: c.created_by.clone(),
            created_at_ms: c.created_at_ms,
            last_seq: 0,
            role: Role::Owner,
        })
    }

    pub(super) async fn conversation(
        &self,
        id: &str,
        user: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let sql = format!("{} WHERE c.id = $1 AND m.user_id = $2", self.conversation_select());
        let row = sqlx::query(&sql).bind(id).bind(user).fetch_optional(&self.pool).await?;
        Ok(row.as_ref().map(conversation_row).transpose()?)
    }

    pub(super) async fn members(&self, id: &str) -> Result<Vec<Member>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id, role FROM conversation_members WHERE conversation_id = $1 ORDER BY joined_at, user_id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        let member = |r: &DB::Row| -> Result<Member, sqlx::Error> {
            let role: String = r.try_get("role")?;
            Ok(Member { user_id: r.try_get("user_id")?, role: Role::parse(&role) })
        };
        Ok(rows.iter().map(member).collect::<Result<_, _>>()?)
    }

    pub(super) async fn conversations_of(
        &self,
        user: &str,
        limit: u32,
    ) -> Result<Vec<Conversation>, StoreError> {
        let sql = format!(
            "{} WHERE m.user_id = $1 ORDER BY c.created_at DESC, c.id DESC LIMIT $2",
            self.conversation_select()
        );
        let rows =
            sqlx::query(&sql).bind(user).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(conversation_row).collect::<Result<_, _>>()?)
    }

    pub(super) async fn add_member(
        &self,
        id: &str,
        user: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "INSERT INTO conversation_members (conversation_id, user_id, role, joined_at) VALUES ($1, $2, 'member', {}) \
             ON CONFLICT (conversation_id, user_id) DO NOTHING",
            (self.dialect.to_time)("$3")
        );
        let done = sqlx::query(&sql).bind(id).bind(user).bind(at_ms).execute(&self.pool).await?;
        Ok(rows_affected::<DB>(&done) > 0)
    }

    pub(super) async fn remove_member(&self, id: &str, user: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "DELETE FROM conversation_members WHERE conversation_id = $1 AND user_id = $2",
        )
        .bind(id)
        .bind(user)
        .execute(&self.pool)
        .await?;
        Ok(rows_affected::<DB>(&done) > 0)
    }

    pub(super) async fn send_message(&self, m: &NewMessage) -> Result<SendOutcome, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The write comes first: it takes the conversation's row lock (PostgreSQL) or the
        // write lock (SQLite) before anything is read, so the reads below see every message
        // committed before ours and no concurrent sender can interleave. A refusal rolls it
        // back.
        let seq: Option<i64> = sqlx::query_scalar(
            "UPDATE conversations SET last_seq = last_seq + 1 WHERE id = $1 AND EXISTS \
             (SELECT 1 FROM conversation_members WHERE conversation_id = $1 AND user_id = $2) \
             RETURNING last_seq",
        )
        .bind(m.conversation_id.clone())
        .bind(m.sender_id.clone())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(seq) = seq else {
            return Ok(SendOutcome::NotMember);
        };
        if let Some(key) = &m.client_message_id {
            let sql = format!(
                "{} WHERE conversation_id = $1 AND sender_id = $2 AND client_message_id = $3",
                self.message_select()
            );
            let original = sqlx::query(&sql)
                .bind(m.conversation_id.clone())
                .bind(m.sender_id.clone())
                .bind(key.clone())
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(row) = original {
                return Ok(SendOutcome::Duplicate(message_row(&row)?));
            }
        }
        if let Some(reply) = &m.reply_to_id {
            let found: Option<i64> = sqlx::query_scalar(
                "SELECT seq FROM messages WHERE id = $1 AND conversation_id = $2",
            )
            .bind(reply.clone())
            .bind(m.conversation_id.clone())
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_none() {
                return Ok(SendOutcome::ReplyNotFound);
            }
        }
        let insert = format!(
            "INSERT INTO messages ({MESSAGE_COLUMNS}, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, {})",
            (self.dialect.to_time)("$8")
        );
        sqlx::query(&insert)
            .bind(m.id.clone())
            .bind(m.conversation_id.clone())
            .bind(seq)
            .bind(m.sender_id.clone())
            .bind(m.content.clone())
            .bind(m.reply_to_id.clone())
            .bind(m.client_message_id.clone())
            .bind(m.created_at_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(SendOutcome::Stored(Message {
            id: m.id.clone(),
            conversation_id: m.conversation_id.clone(),
            seq,
            sender_id: m.sender_id.clone(),
            content: m.content.clone(),
            reply_to_id: m.reply_to_id.clone(),
            client_message_id: m.client_message_id.clone(),
            created_at_ms: m.created_at_ms,
        }))
    }

    pub(super) async fn messages(
        &self,
        id: &str,
        page: Page,
    ) -> Result<(Vec<Message>, bool), StoreError> {
        let (after, before, limit, ascending) = match page {
            Page::After { after, before, limit } => (after, before, limit, true),
            Page::Before { before, limit } => (0, before, limit, false),
        };
        let order = if ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "{} WHERE conversation_id = $1 AND seq > $2 AND seq < $3 ORDER BY seq {order} LIMIT $4",
            self.message_select()
        );
        let rows = sqlx::query(&sql)
            .bind(id)
            .bind(after)
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        let mut messages: Vec<Message> = rows.iter().map(message_row).collect::<Result<_, _>>()?;
        let more = messages.len() > limit as usize;
        messages.truncate(limit as usize);
        if !ascending {
            messages.reverse();
        }
        Ok((messages, more))
    }

    pub(super) async fn recovery(
        &self,
        id: &str,
        user: &str,
        since: Option<i64>,
        limit: u32,
    ) -> Result<Option<Recovery>, StoreError> {
        let last_seq: Option<i64> = sqlx::query_scalar(
            "SELECT c.last_seq FROM conversations c JOIN conversation_members m \
             ON m.conversation_id = c.id WHERE c.id = $1 AND m.user_id = $2",
        )
        .bind(id)
        .bind(user)
        .fetch_optional(&self.pool)
        .await?;
        let Some(last_seq) = last_seq else { return Ok(None) };
        let Some(since) = since.filter(|s| *s < last_seq) else {
            return Ok(Some(Recovery { last_seq, messages: Vec::new(), has_more: false }));
        };
        // Bounded above by the snapshot's last_seq, so every message returned is one the
        // caller's `last_seq` accounts for.
        let (messages, has_more) = self
            .messages(id, Page::Before { before: Some(last_seq + 1), limit })
            .await
            .map(|(page, _)| {
                let missed: Vec<Message> = page.into_iter().filter(|m| m.seq > since).collect();
                let more = missed.first().is_some_and(|m| m.seq > since + 1);
                (missed, more)
            })?;
        Ok(Some(Recovery { last_seq, messages, has_more }))
    }
}

fn rows_affected<DB: Database>(done: &DB::QueryResult) -> u64
where
    DB::QueryResult: RowsAffected,
{
    done.rows()
}

/// `rows_affected`, which sqlx has on each driver's result type but not on a trait.
pub(super) trait RowsAffected {
    fn rows(&self) -> u64;
}

impl RowsAffected for sqlx::postgres::PgQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

impl RowsAffected for sqlx::sqlite::SqliteQueryResult {
    fn rows(&self) -> u64 {
        self.rows_affected()
    }
}

fn message_row<R: Row>(r: &R) -> Result<Message, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Message {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        seq: r.try_get("seq")?,
        sender_id: r.try_get("sender_id")?,
        content: r.try_get("content")?,
        reply_to_id: r.try_get("reply_to_id")?,
        client_message_id: r.try_get("client_message_id")?,
        created_at_ms: r.try_get("created_at")?,
    })
}

fn conversation_row<R: Row>(r: &R) -> Result<Conversation, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = r.try_get("role")?;
    Ok(Conversation {
        id: r.try_get("id")?,
        title: r.try_get("title")?,
        created_by: r.try_get("created_by")?,
        created_at_ms: r.try_get("created_at")?,
        last_seq: r.try_get("last_seq")?,
        role: Role::parse(&role),
    })
}

/// Implements `ChatStore` for a backend with a `chat: Sql<_>` field.
macro_rules! chat_store_via_sql {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::chat::ChatStore for $ty {
            async fn create_conversation(
                &self,
                c: &$crate::store::chat::NewConversation,
            ) -> Result<$crate::store::chat::Conversation, StoreError> {
                self.chat.create_conversation(c).await
            }
            async fn conversation(
                &self,
                id: &str,
                user: &str,
            ) -> Result<Option<$crate::store::chat::Conversation>, StoreError> {
                self.chat.conversation(id, user).await
            }
            async fn members(
                &self,
                id: &str,
            ) -> Result<Vec<$crate::store::chat::Member>, StoreError> {
                self.chat.members(id).await
            }
            async fn conversations_of(
                &self,
                user: &str,
                limit: u32,
            ) -> Result<Vec<$crate::store::chat::Conversation>, StoreError> {
                self.chat.conversations_of(user, limit).await
            }
            async fn add_member(
                &self,
                id: &str,
                user: &str,
                at_ms: i64,
            ) -> Result<bool, StoreError> {
                self.chat.add_member(id, user, at_ms).await
            }
            async fn remove_member(&self, id: &str, user: &str) -> Result<bool, StoreError> {
                self.chat.remove_member(id, user).await
            }
            async fn send_message(
                &self,
                m: &$crate::store::chat::NewMessage,
            ) -> Result<$crate::store::chat::SendOutcome, StoreError> {
                self.chat.send_message(m).await
            }
            async fn messages(
                &self,
                id: &str,
                page: $crate::store::chat::Page,
            ) -> Result<(Vec<$crate::store::chat::Message>, bool), StoreError> {
                self.chat.messages(id, page).await
            }
            async fn recovery(
                &self,
                id: &str,
                user: &str,
                since: Option<i64>,
                limit: u32,
            ) -> Result<Option<$crate::store::chat::Recovery>, StoreError> {
                self.chat.recovery(id, user, since, limit).await
            }
        }
    };
}
pub(super) use chat_store_via_sql;
