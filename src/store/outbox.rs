//! The webhook outbox: events waiting for delivery to the application's endpoints, delivered,
//! or given up on (dead letters), in the history database (PostgreSQL, or the SQLite file).
//!
//! The history writer inserts rows in the batch that records the event (inserts ignore ids
//! already present, so a retried batch adds nothing); the delivery workers of every instance
//! `claim` due rows for a lease (on PostgreSQL with `FOR UPDATE SKIP LOCKED`, so two workers
//! never take the same row), then mark each delivered, due again later, or dead. A worker that
//! dies holding a lease loses it when the lease runs out. Times are Unix milliseconds.

use sqlx::{Database, Executor, IntoArguments, Pool, Row};

use super::{StoreError, chat::RowsAffected};

/// An event for one endpoint, as the writer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: String,
    pub event_id: String,
    pub endpoint: String,
    pub kind: String,
    pub body: String,
    pub created_at_ms: i64,
}

/// One row of the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event_id: String,
    pub endpoint: String,
    pub kind: String,
    pub body: String,
    pub created_at_ms: i64,
    pub attempts: i32,
    pub next_attempt_ms: i64,
    pub delivered_at_ms: Option<i64>,
    pub dead_at_ms: Option<i64>,
    pub last_error: Option<String>,
}

/// Which rows `list` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    Dead,
}

#[async_trait::async_trait]
pub trait Outbox: Send + Sync + 'static {
    /// Inserts deliveries; ids already present are left as they are.
    async fn enqueue(&self, rows: &[NewDelivery]) -> Result<(), StoreError>;

    /// Takes up to `limit` due rows (not delivered, not dead, due by `now_ms`, not claimed)
    /// for `lease_ms`, oldest due first.
    async fn claim(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError>;

    async fn delivered(&self, id: &str, attempts: i32, at_ms: i64) -> Result<(), StoreError>;

    /// Records a failed attempt: due again at `next_ms`.
    async fn retry(
        &self,
        id: &str,
        attempts: i32,
        next_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Gives up on a row (a dead letter), kept for inspection until retention.
    async fn dead(
        &self,
        id: &str,
        attempts: i32,
        at_ms: i64,
        error: &str,
    ) -> Result<(), StoreError>;

    /// Rows in `state`, newest first, at most `limit`.
    async fn list(&self, state: DeliveryState, limit: u32) -> Result<Vec<Delivery>, StoreError>;

    /// Deletes at most `batch` delivered or dead rows created before `before_ms`.
    async fn delete_finished_before(&self, before_ms: i64, batch: u32) -> Result<u64, StoreError>;
}

pub(super) struct SqlOutbox<DB: Database> {
    pool: Pool<DB>,
    /// `FOR UPDATE SKIP LOCKED` where the database has it (PostgreSQL); SQLite serializes
    /// writers anyway.
    skip_locked: &'static str,
}

impl<DB: Database> SqlOutbox<DB> {
    pub(super) fn new(pool: Pool<DB>, skip_locked: &'static str) -> Self {
        Self { pool, skip_locked }
    }
}

const COLUMNS: &str = "id, event_id, endpoint, kind, body, created_at, attempts, next_attempt_at, \
                       delivered_at, dead_at, last_error";

impl<DB> SqlOutbox<DB>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    for<'c> &'c str: sqlx::ColumnIndex<DB::Row>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Decode<'q, DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Decode<'q, DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::QueryResult: RowsAffected,
{
    async fn enqueue_sql(&self, rows: &[NewDelivery]) -> Result<(), StoreError> {
        for chunk in rows.chunks(100) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let b = i * 7;
                    format!(
                        "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                        b + 1,
                        b + 2,
                        b + 3,
                        b + 4,
                        b + 5,
                        b + 6,
                        b + 7
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO webhook_outbox (id, event_id, endpoint, kind, body, created_at, next_attempt_at) \
                 VALUES {} ON CONFLICT (id) DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(&sql);
            for r in chunk {
                q = q
                    .bind(r.id.clone())
                    .bind(r.event_id.clone())
                    .bind(r.endpoint.clone())
                    .bind(r.kind.clone())
                    .bind(r.body.clone())
                    .bind(r.created_at_ms)
                    .bind(r.created_at_ms);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    async fn claim_sql(
        &self,
        now: i64,
        lease: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let sql = format!(
            "UPDATE webhook_outbox SET claimed_until = $1 WHERE id IN (\
               SELECT id FROM webhook_outbox WHERE delivered_at IS NULL AND dead_at IS NULL \
               AND next_attempt_at <= $2 AND claimed_until <= $2 \
               ORDER BY next_attempt_at LIMIT $3 {}) RETURNING {COLUMNS}",
            self.skip_locked
        );
        let rows = sqlx::query(&sql)
            .bind(now.saturating_add(lease))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        let mut claimed: Vec<Delivery> =
            rows.iter().map(delivery::<DB>).collect::<Result<_, _>>()?;
        // `RETURNING` keeps no order; deliver the oldest due first.
        claimed.sort_by(|a, b| (a.next_attempt_ms, &a.id).cmp(&(b.next_attempt_ms, &b.id)));
        Ok(claimed)
    }

    async fn finish_sql(
        &self,
        sql: &str,
        id: &str,
        attempts: i32,
        at: i64,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(sql)
            .bind(attempts)
            .bind(at)
            .bind(error.unwrap_or_default().chars().take(500).collect::<String>())
            .bind(id.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn list_sql(
        &self,
        state: DeliveryState,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        let filter = match state {
            DeliveryState::Pending => "delivered_at IS NULL AND dead_at IS NULL",
            DeliveryState::Delivered => "delivered_at IS NOT NULL",
            DeliveryState::Dead => "dead_at IS NOT NULL",
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_outbox WHERE {filter} ORDER BY created_at DESC, id DESC LIMIT $1"
        );
        let rows = sqlx::query(&sql).bind(i64::from(limit)).fetch_all(&self.pool).await?;
        rows.iter().map(delivery::<DB>).collect()
    }

    async fn delete_sql(&self, before: i64, batch: u32) -> Result<u64, StoreError> {
        let sql = "DELETE FROM webhook_outbox WHERE id IN (SELECT id FROM webhook_outbox \
                   WHERE (delivered_at IS NOT NULL OR dead_at IS NOT NULL) AND created_at < $1 LIMIT $2)";
        let done = sqlx::query(sql).bind(before).bind(i64::from(batch)).execute(&self.pool).await?;
        Ok(done.rows())
    }
}

fn delivery<DB>(row: &DB::Row) -> Result<Delivery, StoreError>
where
    DB: Database,
    for<'c> &'c str: sqlx::ColumnIndex<DB::Row>,
    for<'q> String: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<String>: sqlx::Decode<'q, DB>,
    for<'q> i64: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Option<i64>: sqlx::Decode<'q, DB>,
    for<'q> i32: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
{
    Ok(Delivery {
        id: row.try_get("id")?,
        event_id: row.try_get("event_id")?,
        endpoint: row.try_get("endpoint")?,
        kind: row.try_get("kind")?,
        body: row.try_get("body")?,
        created_at_ms: row.try_get("created_at")?,
        attempts: row.try_get("attempts")?,
        next_attempt_ms: row.try_get("next_attempt_at")?,
        delivered_at_ms: row.try_get("delivered_at")?,
        dead_at_ms: row.try_get("dead_at")?,
        last_error: row.try_get("last_error")?,
    })
}

const DELIVERED: &str = "UPDATE webhook_outbox SET attempts = $1, delivered_at = $2, \
                         last_error = NULLIF($3, '') WHERE id = $4";
const RETRY: &str = "UPDATE webhook_outbox SET attempts = $1, next_attempt_at = $2, \
                     claimed_until = 0, last_error = $3 WHERE id = $4";
const DEAD: &str =
    "UPDATE webhook_outbox SET attempts = $1, dead_at = $2, last_error = $3 WHERE id = $4";

/// `Outbox` for each driver: concrete impls, so the driver bounds above are written once.
macro_rules! outbox_via_sql {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl Outbox for SqlOutbox<$db> {
            async fn enqueue(&self, rows: &[NewDelivery]) -> Result<(), StoreError> {
                self.enqueue_sql(rows).await
            }

            async fn claim(
                &self,
                now_ms: i64,
                lease_ms: i64,
                limit: u32,
            ) -> Result<Vec<Delivery>, StoreError> {
                self.claim_sql(now_ms, lease_ms, limit).await
            }

            async fn delivered(
                &self,
                id: &str,
                attempts: i32,
                at_ms: i64,
            ) -> Result<(), StoreError> {
                self.finish_sql(DELIVERED, id, attempts, at_ms, None).await
            }

            async fn retry(
                &self,
                id: &str,
                attempts: i32,
                next_ms: i64,
                error: &str,
            ) -> Result<(), StoreError> {
                self.finish_sql(RETRY, id, attempts, next_ms, Some(error)).await
            }

            async fn dead(
                &self,
                id: &str,
                attempts: i32,
                at_ms: i64,
                error: &str,
            ) -> Result<(), StoreError> {
                self.finish_sql(DEAD, id, attempts, at_ms, Some(error)).await
            }

            async fn list(
                &self,
                state: DeliveryState,
                limit: u32,
            ) -> Result<Vec<Delivery>, StoreError> {
                self.list_sql(state, limit).await
            }

            async fn delete_finished_before(
                &self,
                before_ms: i64,
                batch: u32,
            ) -> Result<u64, StoreError> {
                self.delete_sql(before_ms, batch).await
            }
        }
    };
}

outbox_via_sql!(sqlx::Sqlite);
outbox_via_sql!(sqlx::Postgres);
