//! Durable history: connection and presence logs (chat in `chat`, durable channel history in
//! `channel_history`) in PostgreSQL
//! (`DATABASE_URL=postgres://…`) or an embedded SQLite file (the default), behind one `Store`
//! trait with one test suite run against both (`tests/store/`).
//!
//! Sessions never call the store: they hand records to `writer::Writer`, which batches them
//! and survives database outages within a bounded buffer. Reads serve the history API.
//! Every timestamp crossing this trait is Unix milliseconds (`i64`).

pub mod channel_history;
pub mod chat;
pub mod outbox;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
pub mod testing;
pub mod writer;

/// A connection that was established (authenticated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOpened {
    pub socket_id: String,
    pub user_id: String,
    pub device_id: String,
    /// `websocket` | `webtransport`.
    pub transport: String,
    pub ip_address: String,
    pub user_agent: Option<String>,
    pub server_instance: String,
    pub connected_at_ms: i64,
}

/// A connection that ended, and why (`client_disconnect`, `ping_timeout`, `instance_lost`, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionClosed {
    pub socket_id: String,
    pub disconnected_at_ms: i64,
    pub reason: String,
}

/// One row of `socket_connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRow {
    pub id: i64,
    pub opened: ConnectionOpened,
    pub disconnected_at_ms: Option<i64>,
    pub disconnect_reason: Option<String>,
}

/// One row of `presence_logs`: a cluster-wide transition of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceLog {
    pub user_id: String,
    pub device_id: String,
    /// `online` | `offline`.
    pub status: String,
    pub at_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub id: i64,
    pub log: PresenceLog,
}

/// What a history query asks for: rows of `user_id` with time in `[from_ms, to_ms)`, newest
/// first (by time, then id), at most `limit`; when paging on, only rows that sort after the
/// row `before_id` (keyset pagination on `(time, id)`: no row repeats or is skipped when new
/// rows arrive, even rows that land late with an older time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryQuery {
    pub user_id: String,
    pub from_ms: i64,
    pub to_ms: i64,
    pub before_id: Option<i64>,
    pub limit: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migrating the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// Applies pending migrations (idempotent).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// Cheap liveness check for `/health/ready`.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Inserts connection rows, in one statement per batch. A socket id already present is
    /// left as it is (a retried batch must not duplicate rows).
    async fn insert_connections(&self, rows: &[ConnectionOpened]) -> Result<(), StoreError>;

    /// Sets `disconnected_at`/`disconnect_reason` of each socket's row that is still open.
    async fn close_connections(&self, rows: &[ConnectionClosed]) -> Result<(), StoreError>;

    /// Inserts connections that opened and ended within one batch as rows already closed: one
    /// write per row where `insert_connections` then `close_connections` would write it twice
    /// (short sessions, reconnect storms). A socket id already present is closed if still
    /// open and otherwise left as it is, so a retried batch ends the same way. Socket ids are
    /// distinct within a call.
    async fn insert_ended_connections(
        &self,
        rows: &[(ConnectionOpened, ConnectionClosed)],
    ) -> Result<(), StoreError> {
        let opened: Vec<ConnectionOpened> = rows.iter().map(|(o, _)| o.clone()).collect();
        let closed: Vec<ConnectionClosed> = rows.iter().map(|(_, c)| c.clone()).collect();
        self.insert_connections(&opened).await?;
        self.close_connections(&closed).await
    }

    /// Closes every still-open row of `instance` (it crashed). Returns how many were closed.
    async fn close_instance(
        &self,
        instance: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<u64, StoreError>;

    /// Inserts presence transitions, in one statement per batch.
    async fn insert_presence(&self, rows: &[PresenceLog]) -> Result<(), StoreError>;

    /// Connection rows by `connected_at` (see `HistoryQuery`), newest first.
    async fn connections(&self, q: &HistoryQuery) -> Result<Vec<ConnectionRow>, StoreError>;

    /// Presence rows by `at` (see `HistoryQuery`), newest first.
    async fn presence_history(&self, q: &HistoryQuery) -> Result<Vec<PresenceRow>, StoreError>;

    /// Deletes at most `batch` connection rows that ended before `before_ms`. Returns how many.
    async fn delete_connections_before(
        &self,
        before_ms: i64,
        batch: u32,
    ) -> Result<u64, StoreError>;

    /// Deletes at most `batch` presence rows older than `before_ms`. Returns how many.
    async fn delete_presence_before(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError>;

    /// The durable channel history kept in this database.
    fn channel_history(&self) -> std::sync::Arc<dyn crate::state::history::History>;

    /// The webhook outbox kept in this database.
    fn outbox(&self) -> std::sync::Arc<dyn outbox::Outbox>;

    /// Retention of durable channel history: publications expired by `now_ms`, and channels
    /// unused since `unused_before_ms`, at most `batch` of each. Returns how many rows went.
    async fn delete_expired_channel_history(
        &self,
        now_ms: i64,
        unused_before_ms: i64,
        batch: u32,
    ) -> Result<u64, StoreError>;
}

/// Both backends select the same column names (times as Unix ms), so one mapper reads a row
/// of either into `ConnectionRow`.
fn connection_row<R: sqlx::Row>(r: &R) -> Result<ConnectionRow, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(ConnectionRow {
        id: r.try_get("id")?,
        opened: ConnectionOpened {
            socket_id: r.try_get("socket_id")?,
            user_id: r.try_get("user_id")?,
            device_id: r.try_get("device_id")?,
            transport: r.try_get("transport")?,
            ip_address: r.try_get("ip_address")?,
            user_agent: r.try_get("user_agent")?,
            server_instance: r.try_get("server_instance")?,
            connected_at_ms: r.try_get("connected_at")?,
        },
        disconnected_at_ms: r.try_get("disconnected_at")?,
        disconnect_reason: r.try_get("disconnect_reason")?,
    })
}

/// The `presence_logs` mapper shared by both backends (`at` as Unix ms).
fn presence_row<R: sqlx::Row>(r: &R) -> Result<PresenceRow, sqlx::Error>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(PresenceRow {
        id: r.try_get("id")?,
        log: PresenceLog {
            user_id: r.try_get("user_id")?,
            device_id: r.try_get("device_id")?,
            status: r.try_get("status")?,
            at_ms: r.try_get("at")?,
        },
    })
}
