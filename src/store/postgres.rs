//! PostgreSQL backend (`DATABASE_URL=postgres://…`). Times are `TIMESTAMPTZ` in the tables
//! (so operators can query them naturally) and Unix milliseconds at the trait, converted in SQL.
//! Batches are single statements over `UNNEST`ed arrays: one round trip per batch and no
//! bind-parameter limit however large the batch. Their rows convert milliseconds through
//! `float8` (`at::float8 / 1000`), not `numeric` (`at / 1000.0`): the same instant for every
//! millisecond value, at a twentieth of the cost per row.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

use super::{
    ConnectionClosed, ConnectionOpened, ConnectionRow, HistoryQuery, PresenceLog, PresenceRow,
    Store, StoreError,
    chat::{Dialect, Sql, chat_store_via_sql},
    connection_row, presence_row,
};

/// PostgreSQL's timestamp range is wider than this; clamping keeps `to_timestamp` valid for
/// open-ended queries (`from = -∞`, `to = +∞`).
const MIN_MS: i64 = 0;
const MAX_MS: i64 = 253_402_300_799_999; // 9999-12-31T23:59:59.999Z

pub struct PgStore {
    pool: PgPool,
    chat: Sql<sqlx::Postgres>,
    channels: std::sync::Arc<super::channel_history::SqlHistory<sqlx::Postgres>>,
    outbox: std::sync::Arc<super::outbox::SqlOutbox<sqlx::Postgres>>,
}

const DIALECT: Dialect = Dialect {
    to_time: |p| format!("to_timestamp({p} / 1000.0)"),
    to_ms: |c| format!("(extract(epoch FROM {c}) * 1000)::bigint"),
};

chat_store_via_sql!(PgStore);

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            chat: Sql { pool: pool.clone(), dialect: DIALECT },
            channels: std::sync::Arc::new(super::channel_history::SqlHistory::new(
                pool.clone(),
                DIALECT,
            )),
            outbox: std::sync::Arc::new(super::outbox::SqlOutbox::new(
                pool.clone(),
                "FOR UPDATE SKIP LOCKED",
            )),
            pool,
        }
    }

    /// A lazily connecting pool: the server starts while PostgreSQL is down, and the writer's
    /// retries find it when it comes back.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(2))
            .connect_lazy(url)?;
        Ok(Self::new(pool))
    }
}

const CONNECTION_COLUMNS: &str = "id, socket_id, user_id, device_id, transport, ip_address, user_agent, server_instance, \
     (extract(epoch FROM connected_at) * 1000)::bigint AS connected_at, \
     (extract(epoch FROM disconnected_at) * 1000)::bigint AS disconnected_at, disconnect_reason";

#[async_trait::async_trait]
impl Store for PgStore {
    async fn migrate(&self) -> Result<(), StoreError> {
        sqlx::migrate!("./migrations/postgres").run(&self.pool).await?;
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn insert_connections(&self, rows: &[ConnectionOpened]) -> Result<(), StoreError> {
        let col = |f: fn(&ConnectionOpened) -> String| rows.iter().map(f).collect::<Vec<_>>();
        let agents: Vec<Option<String>> = rows.iter().map(|r| r.user_agent.clone()).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.connected_at_ms).collect();
        sqlx::query(
            "INSERT INTO socket_connections \
               (socket_id, user_id, device_id, transport, ip_address, user_agent, server_instance, connected_at) \
             SELECT s, u, d, t, ip, ua, inst, to_timestamp(at::float8 / 1000) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[]) \
               AS v(s, u, d, t, ip, ua, inst, at) \
             ON CONFLICT (socket_id) DO NOTHING",
        )
        .bind(col(|r| r.socket_id.clone()))
        .bind(col(|r| r.user_id.clone()))
        .bind(col(|r| r.device_id.clone()))
        .bind(col(|r| r.transport.clone()))
        .bind(col(|r| r.ip_address.clone()))
        .bind(agents)
        .bind(col(|r| r.server_instance.clone()))
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close_connections(&self, rows: &[ConnectionClosed]) -> Result<(), StoreError> {
        let ids: Vec<&str> = rows.iter().map(|r| r.socket_id.as_str()).collect();
        let at: Vec<i64> = rows.iter().map(|r| r.disconnected_at_ms).collect();
        let reasons: Vec<&str> = rows.iter().map(|r| r.reason.as_str()).collect();
        // DISTINCT ON keeps the first close of a socket if a batch holds two; the first wins,
        // as it does across batches (`disconnected_at IS NULL`).
        sqlx::query(
            "UPDATE socket_connections AS c \
             SET disconnected_at = to_timestamp(v.at::float8 / 1000), disconnect_reason = v.reason \
             FROM (SELECT DISTINCT ON (s) s, at, reason FROM UNNEST($1::text[], $2::bigint[], $3::text[]) \
                   WITH ORDINALITY AS x(s, at, reason, n) ORDER BY s, n) AS v \
             WHERE c.socket_id = v.s AND c.disconnected_at IS NULL",
        )
        .bind(ids)
        .bind(at)
        .bind(reasons)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn insert_ended_connections(
        &self,
        rows: &[(ConnectionOpened, ConnectionClosed)],
    ) -> Result<(), StoreError> {
        let col = |f: fn(&(ConnectionOpened, ConnectionClosed)) -> &str| {
            rows.iter().map(f).collect::<Vec<_>>()
        };
        let agents: Vec<Option<&str>> = rows.iter().map(|(o, _)| o.user_agent.as_deref()).collect();
        let at: Vec<i64> = rows.iter().map(|(o, _)| o.connected_at_ms).collect();
        let ended: Vec<i64> = rows.iter().map(|(_, c)| c.disconnected_at_ms).collect();
        sqlx::query(
            "INSERT INTO socket_connections \
               (socket_id, user_id, device_id, transport, ip_address, user_agent, server_instance, connected_at, \
                disconnected_at, disconnect_reason) \
             SELECT s, u, d, t, ip, ua, inst, to_timestamp(at::float8 / 1000), to_timestamp(ended::float8 / 1000), reason \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], \
                         $8::bigint[], $9::bigint[], $10::text[]) \
               AS v(s, u, d, t, ip, ua, inst, at, ended, reason) \
             ON CONFLICT (socket_id) DO UPDATE \
               SET disconnected_at = EXCLUDED.disconnected_at, disconnect_reason = EXCLUDED.disconnect_reason \
               WHERE socket_connections.disconnected_at IS NULL",
        )
        .bind(col(|(o, _)| &o.socket_id))
        .bind(col(|(o, _)| &o.user_id))
        .bind(col(|(o, _)| &o.device_id))
        .bind(col(|(o, _)| &o.transport))
        .bind(col(|(o, _)| &o.ip_address))
        .bind(agents)
        .bind(col(|(o, _)| &o.server_instance))
        .bind(at)
        .bind(ended)
        .bind(col(|(_, c)| &c.reason))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn close_instance(
        &self,
        instance: &str,
        at_ms: i64,
        reason: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE socket_connections SET disconnected_at = to_timestamp($1 / 1000.0), disconnect_reason = $2 \
             WHERE server_instance = $3 AND disconnected_at IS NULL",
        )
        .bind(at_ms)
        .bind(reason)
        .bind(instance)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn insert_presence(&self, rows: &[PresenceLog]) -> Result<(), StoreError> {
        let col = |f: fn(&PresenceLog) -> &str| rows.iter().map(f).collect::<Vec<_>>();
        let at: Vec<i64> = rows.iter().map(|r| r.at_ms).collect();
        sqlx::query(
            "INSERT INTO presence_logs (user_id, device_id, status, at) \
             SELECT u, d, s, to_timestamp(at::float8 / 1000) \
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS v(u, d, s, at, n) \
             ORDER BY n",
        )
        .bind(col(|r| &r.user_id))
        .bind(col(|r| &r.device_id))
        .bind(col(|r| &r.status))
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn connections(&self, q: &HistoryQuery) -> Result<Vec<ConnectionRow>, StoreError> {
        let sql = format!(
            "SELECT {CONNECTION_COLUMNS} FROM socket_connections \
             WHERE user_id = $1 AND connected_at >= to_timestamp($2 / 1000.0) AND connected_at < to_timestamp($3 / 1000.0) \
               AND ($4::bigint IS NULL OR (connected_at, id) < (SELECT connected_at, id FROM socket_connections WHERE id = $4)) \
             ORDER BY connected_at DESC, id DESC LIMIT $5"
        );
        let rows = sqlx::query(&sql)
            .bind(&q.user_id)
            .bind(q.from_ms.clamp(MIN_MS, MAX_MS))
            .bind(q.to_ms.clamp(MIN_MS, MAX_MS))
            .bind(q.before_id)
            .bind(i64::from(q.limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(connection_row).collect::<Result<_, _>>()?)
    }

    async fn presence_history(&self, q: &HistoryQuery) -> Result<Vec<PresenceRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, user_id, device_id, status, (extract(epoch FROM at) * 1000)::bigint AS at \
             FROM presence_logs \
             WHERE user_id = $1 AND at >= to_timestamp($2 / 1000.0) AND at < to_timestamp($3 / 1000.0) \
               AND ($4::bigint IS NULL OR (at, id) < (SELECT at, id FROM presence_logs WHERE id = $4)) \
             ORDER BY at DESC, id DESC LIMIT $5",
        )
        .bind(&q.user_id)
        .bind(q.from_ms.clamp(MIN_MS, MAX_MS))
        .bind(q.to_ms.clamp(MIN_MS, MAX_MS))
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
             WHERE disconnected_at < to_timestamp($1 / 1000.0) LIMIT $2)",
        )
        .bind(before_ms.clamp(MIN_MS, MAX_MS))
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    async fn delete_presence_before(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM presence_logs WHERE id IN (SELECT id FROM presence_logs WHERE at < to_timestamp($1 / 1000.0) LIMIT $2)",
        )
        .bind(before_ms.clamp(MIN_MS, MAX_MS))
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
