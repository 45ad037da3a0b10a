//! Embedded SQLite backend: the default when `DATABASE_URL` is unset, so a laptop keeps
//! history with no database server. One file, WAL journal (readers never block the writer),
//! times as Unix milliseconds.

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    Connection, QueryBuilder, Sqlite, SqliteConnection, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use super::{
    ConnectionClosed, ConnectionOpened, ConnectionRow, HistoryQuery, PresenceLog, PresenceRow,
    Store, StoreError,
    chat::{Dialect, Sql, chat_store_via_sql},
    connection_row, presence_row,
};

/// Rows per multi-row INSERT: 8 parameters each stays far below SQLite's 32,766 limit.
///
/// Every row count is different SQL, so these inserts are prepared per call and never enter
/// sqlx's per-connection statement cache: cached, each writer batch size seen would keep a
/// compiled statement of up to 8,000 parameters alive on every pooled connection (100 per
/// connection before eviction), which the memory soak measured as 9 MB of live heap, most of
/// the server's, after two minutes of churn. Compiling one statement per batch costs little
/// next to writing the batch.
const CHUNK: usize = 1000;

/// Connections in the pool: one writes at a time (SQLite's rule); the others serve the
/// history and chat reads next to it.
const POOL_SIZE: u32 = 4;

/// Page cache per connection, in KiB. With SQLite's default (2,000 KiB each, 8 MB for the pool)
/// the caches kept filling as the history file grew by a row per connection: the soak saw the
/// server's RSS still rising 2 % between its first and third minute of churn, and flat at this
/// size. The file's pages stay in the OS page cache either way, so a miss here costs a read
/// from memory, not from disk.
const CACHE_KIB: u32 = 256;

pub struct SqliteStore {
    pool: SqlitePool,
    chat: Sql<Sqlite>,
    channels: std::sync::Arc<super::channel_history::SqlHistory<Sqlite>>,
    outbox: std::sync::Arc<super::outbox::SqlOutbox<Sqlite>>,
}

/// Times are stored as Unix milliseconds already.
const DIALECT: Dialect = Dialect { to_time: |p| p.to_owned(), to_ms: |c| c.to_owned() };

chat_store_via_sql!(SqliteStore);

impl SqliteStore {
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            chat: Sql { pool: pool.clone(), dialect: DIALECT },
            channels: std::sync::Arc::new(super::channel_history::SqlHistory::new(
                pool.clone(),
                DIALECT,
            )),
            outbox: std::sync::Arc::new(super::outbox::SqlOutbox::new(pool.clone(), "")),
            pool,
        }
    }

    /// Open connections in the pool (all of them, soon after `open`).
    pub fn connections(&self) -> u32 {
        self.pool.size()
    }

    /// Opens (creating if missing) the database file at `path`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            // NORMAL with WAL loses at most the last transactions on power loss, never
            // corrupts; FULL would fsync every batch.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true)
            .pragma("cache_size", format!("-{CACHE_KIB}"));
        switch_to_wal(&options).await?;
        // All connections open at start and are never recycled: a file database has no
        // server-side reason to reconnect, and a connection opened or replaced mid-run brings a
        // fresh page cache and statement cache, a step in RSS that the memory soak would read
        // as a leak (and an operator too).
        let pool = SqlitePoolOptions::new()
            .max_connections(POOL_SIZE)
            .min_connections(POOL_SIZE)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        Ok(Self::new(pool))
    }
}

/// WAL is a property of the file, and switching a file to it takes an exclusive lock that
/// SQLite's busy timeout does not wait for. So one connection switches it, retrying while
/// another process (a second instance on the same file) holds the file, and the pool's
/// connections then open in the mode the file already has instead of each racing to set it.
async fn switch_to_wal(options: &SqliteConnectOptions) -> Result<(), StoreError> {
    let wal = options.clone().journal_mode(SqliteJournalMode::Wal);
    let mut attempt = 0;
    loop {
        match SqliteConnection::connect_with(&wal).await {
            Ok(conn) => {
                conn.close().await?;
                return Ok(());
            }
            Err(e) if is_busy(&e) && attempt < 50 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt.min(10))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SQLITE_BUSY or one of its extended codes (the low byte is the primary code).
fn is_busy(e: &sqlx::Error) -> bool {
    let code = match e {
        sqlx::Error::Database(db) => db.code(),
        _ => None,
    };
    code.and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/sqlite").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_connections(&self, rows: &[ConnectionOpened]) -> Result<(), StoreError> {
        for chunk in rows.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO socket_connections (socket_id, user_id, device_id, transport, ip_address, user_agent, server_instance, connected_at) ",
            );
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.socket_id)
                    .push_bind(&r.user_id)
                    .push_bind(&r.device_id)
                    .push_bind(&r.transport)
                    .push_bind(&r.ip_address)
                    .push_bind(&r.user_agent)
                    .push_bind(&r.server_instance)
                    .push_bind(r.connected_at_ms);
            });
            q.push(" ON CONFLICT (socket_id) DO NOTHING");
            // Not cached: see `CHUNK`.
            q.build().persistent(false).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn close_connections(&self, rows: &[ConnectionClosed]) -> Result<(), StoreError> {
        // One transaction, one prepared UPDATE per row: SQLite has no UPDATE … FROM VALUES
        // join as convenient as PostgreSQL's, and in-process statements are cheap.
        let mut tx = self.pool.begin().await?;
        for r in rows {
            sqlx::query(
                "UPDATE socket_connections SET disconnected_at = ?, disconnect_reason = ? \
                 WHERE socket_id = ? AND disconnected_at IS NULL",
            )
            .bind(r.disconnected_at_ms)
            .bind(&r.reason)
            .bind(&r.socket_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn insert_ended_connections(
        &self,
        rows: &[(ConnectionOpened, ConnectionClosed)],
    ) -> Result<(), StoreError> {
        for chunk in rows.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> = QueryBuilder::new(
                "INSERT INTO socket_connections (socket_id, user_id, device_id, transport, ip_address, user_agent, server_instance, connected_at, disconnected_at, disconnect_reason) ",
            );
            q.push_values(chunk, |mut b, (o, c)| {
                b.push_bind(&o.socket_id)
                    .push_bind(&o.user_id)
                    .push_bind(&o.device_id)
                    .push_bind(&o.transport)
                    .push_bind(&o.ip_address)
                    .push_bind(&o.user_agent)
                    .push_bind(&o.server_instance)
                    .push_bind(o.connected_at_ms)
                    .push_bind(c.disconnected_at_ms)
                    .push_bind(&c.reason);
            });
            q.push(
                " ON CONFLICT (socket_id) DO UPDATE SET disconnected_at = excluded.disconnected_at, \
                 disconnect_reason = excluded.disconnect_reason WHERE disconnected_at IS NULL",
            );
            // Not cached: see `CHUNK`.
            q.build().persistent(false).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn close_instance(
        &self,
        instance: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE socket_connections SET disconnected_at = ?, disconnect_reason = ? \
             WHERE server_instance = ? AND disconnected_at IS NULL",
        )
        .bind(at_ms)
        .bind(reason)
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_presence(&self, rows: &[PresenceLog]) -> Result<(), StoreError> {
        for chunk in rows.chunks(CHUNK) {
            let mut q: QueryBuilder<Sqlite> =
                QueryBuilder::new("INSERT INTO presence_logs (user_id, device_id, status, at) ");
            q.push_values(chunk, |mut b, r| {
                b.push_bind(&r.user_id)
                    .push_bind(&r.device_id)
                    .push_bind(&r.status)
                    .push_bind(r.at_ms);
            });
            // Not cached: see `CHUNK`.
            q.build().persistent(false).execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn connections(&self, q: &HistoryQuery) -> Result<Vec<ConnectionRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM socket_connections \
             WHERE user_id = ? AND connected_at >= ? AND connected_at < ? \
               AND (? IS NULL OR (connected_at, id) < (SELECT connected_at, id FROM socket_connections WHERE id = ?)) \
             ORDER BY connected_at DESC, id DESC LIMIT ?",
        )
        .bind(&q.user_id)
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(q.before_id)
        .bind(q.before_id)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(connection_row).collect::<Result<_, _>>()?)
    }

    async fn presence_history(&self, q: &HistoryQuery) -> Result<Vec<PresenceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_id, device_id, status, at FROM presence_logs \
             WHERE user_id = ? AND at >= ? AND at < ? \
               AND (? IS NULL OR (at, id) < (SELECT at, id FROM presence_logs WHERE id = ?)) \
             ORDER BY at DESC, id DESC LIMIT ?",
        )
        .bind(&q.user_id)
        .bind(q.from_ms)
        .bind(q.to_ms)
        .bind(q.before_id)
        .bind(q.before_id)
        .bind(i64::from(q.limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(presence_row).collect::<Result<_, _>>()?)
    }

    async fn delete_connections_before(
        &self,
        before_ms: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM socket_connections WHERE id IN (SELECT id FROM socket_connections \
             WHERE disconnected_at IS NOT NULL AND disconnected_at < ? LIMIT ?)",
        )
        .bind(before_ms)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_presence_before(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM presence_logs WHERE id IN (SELECT id FROM presence_logs WHERE at < ? LIMIT ?)")
            .bind(before_ms)
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    fn channel_history(&self) -> std::sync::Arc<dyn crate::state::history::History> {
        self.channels.clone()
    }

    fn outbox(&self) -> std::sync::Arc<dyn super::outbox::Outbox> {
        self.outbox.clone()
    }

    async fn delete_expired_channel_history(
        &self,
        now_ms: i64,
        unused_before_ms: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.channels.delete_expired(now_ms, unused_before_ms, batch).await
    }
}
