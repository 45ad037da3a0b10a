//! Durable channel history: the `History` of namespaces with `history_durable = true`, kept in
//! the database (PostgreSQL, or the SQLite file) instead of shared state, so it survives a
//! Redis restart and a restart of every instance.
//!
//! Same contract as the shared-state backends (`state::history`), one difference in what
//! expires: entries expire one by one, `ttl` after each was published (an expired prefix, never
//! a hole in the middle), and the position (offset and epoch) lives until the channel has been
//! unused for `meta_ttl`, when retention deletes it. The offset is assigned in the transaction
//! that inserts the entry (the position row's lock serializes publishers on every instance), as
//! chat assigns message seqs.
//!
//! Every call is bounded by `DB_TIMEOUT`, below the shared-state bound its callers wrap it in,
//! and fails as `StateError::Database`: a slow database must never be mistaken for a Redis
//! outage (which would mark shared state degraded).

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use sqlx::{Database, Executor, IntoArguments, Pool, Row};

use super::{
    StoreError,
    chat::{Dialect, RowsAffected},
};
use crate::state::{
    StateError,
    history::{History, HistoryOptions, HistoryPage, Position, Range, new_epoch},
};

/// Longest a durable history call waits for the database; shorter than `STATE_TIMEOUT`, so
/// this bound, not the caller's, reports a slow database.
pub const DB_TIMEOUT: Duration = Duration::from_millis(1500);

pub(super) struct SqlHistory<DB: Database> {
    pool: Pool<DB>,
    dialect: Dialect,
}

impl<DB: Database> SqlHistory<DB> {
    pub(super) fn new(pool: Pool<DB>, dialect: Dialect) -> Self {
        Self { pool, dialect }
    }
}

fn now_ms() -> i64 {
    crate::state::now_ms() as i64
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Offsets are stored as signed 64-bit integers; no real channel reaches the difference.
fn offset(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn stored(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) async fn within<T>(
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StateError> {
    match tokio::time::timeout(DB_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(StateError::Database(e.to_string())),
        Err(_) => Err(StateError::Database(format!("did not answer within {DB_TIMEOUT:?}"))),
    }
}

impl<DB> SqlHistory<DB>
where
    DB: Database,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'c> &'c str: sqlx::ColumnIndex<DB::Row>,
    for<'q> String: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DB::QueryResult: RowsAffected,
{
    async fn append_sql(
        &self,
        channel: &str,
        entry: Bytes,
        opts: &HistoryOptions,
    ) -> Result<Position, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        // The upsert comes first: it takes the position's row lock (PostgreSQL) or the write
        // lock (SQLite) before anything else, so concurrent publishers queue here.
        let upsert = format!(
            "INSERT INTO channel_positions (channel, last_seq, epoch, updated_at) VALUES ($1, 1, $2, {now}) \
             ON CONFLICT (channel) DO UPDATE SET last_seq = channel_positions.last_seq + 1, \
             updated_at = excluded.updated_at RETURNING last_seq, epoch",
            now = (self.dialect.to_time)("$3")
        );
        let row = sqlx::query(&upsert)
            .bind(channel)
            .bind(new_epoch().to_string())
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
        let seq: i64 = row.try_get("last_seq")?;
        let epoch: String = row.try_get("epoch")?;
        let insert = format!(
            "INSERT INTO channel_publications (channel, seq, data, expires_at) VALUES ($1, $2, $3, {})",
            (self.dialect.to_time)("$4")
        );
        sqlx::query(&insert)
            .bind(channel)
            .bind(seq)
            .bind(entry.to_vec())
            .bind(now.saturating_add(ms(opts.ttl)))
            .execute(&mut *tx)
            .await?;
        let keep = i64::try_from(opts.size).unwrap_or(i64::MAX);
        if seq > keep {
            sqlx::query("DELETE FROM channel_publications WHERE channel = $1 AND seq <= $2")
                .bind(channel)
                .bind(seq - keep)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Position { offset: offset(seq), epoch: Arc::from(epoch) })
    }

    /// The channel's position, created (offset 0, a new epoch) when it has none, so a reader
    /// of an empty channel and its first publisher agree on the epoch.
    async fn position(&self, channel: &str) -> Result<Position, StoreError> {
        let select = "SELECT last_seq, epoch FROM channel_positions WHERE channel = $1";
        if let Some(row) = sqlx::query(select).bind(channel).fetch_optional(&self.pool).await? {
            return position_row::<DB>(&row);
        }
        let create = format!(
            "INSERT INTO channel_positions (channel, last_seq, epoch, updated_at) VALUES ($1, 0, $2, {}) \
             ON CONFLICT (channel) DO NOTHING",
            (self.dialect.to_time)("$3")
        );
        sqlx::query(&create)
            .bind(channel)
            .bind(new_epoch().to_string())
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query(select).bind(channel).fetch_one(&self.pool).await?;
        position_row::<DB>(&row)
    }

    async fn read_sql(
        &self,
        channel: &str,
        range: Range,
        limit: usize,
        opts: &HistoryOptions,
    ) -> Result<HistoryPage, StoreError> {
        let top = self.position(channel).await?;
        if limit == 0 {
            return Ok(HistoryPage { top, entries: Vec::new() });
        }
        // Bounded by the position read above (a publication committed since then is not part
        // of this page) and by the namespace's size (it may have shrunk since those entries
        // were trimmed).
        let newest = stored(top.offset);
        let oldest_kept = newest.saturating_sub(i64::try_from(opts.size).unwrap_or(i64::MAX));
        let (after, order) = match range {
            Range::After(after) => (stored(after).max(oldest_kept), "ASC"),
            Range::Newest => (oldest_kept, "DESC"),
        };
        let sql = format!(
            "SELECT seq, data FROM channel_publications WHERE channel = $1 AND seq > $2 AND seq <= $3 \
             AND expires_at > {} ORDER BY seq {order} LIMIT $5",
            (self.dialect.to_time)("$4")
        );
        let rows = sqlx::query(&sql)
            .bind(channel)
            .bind(after)
            .bind(newest)
            .bind(now_ms())
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        let entry = |r: &DB::Row| -> Result<(u64, Bytes), sqlx::Error> {
            let seq: i64 = r.try_get("seq")?;
            let data: Vec<u8> = r.try_get("data")?;
            Ok((offset(seq), Bytes::from(data)))
        };
        let entries = rows.iter().map(entry).collect::<Result<_, _>>()?;
        Ok(HistoryPage { top, entries })
    }

    async fn remove_sql(&self, channel: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM channel_publications WHERE channel = $1")
            .bind(channel)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Retention: deletes at most `batch` publications that expired before `now_ms`, and at
    /// most `batch` positions unused since `unused_before_ms` (with whatever publications they
    /// still had). Returns how many rows went.
    pub(super) async fn delete_expired(
        &self,
        now_ms: i64,
        unused_before_ms: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let publications = format!(
            "DELETE FROM channel_publications WHERE (channel, seq) IN \
             (SELECT channel, seq FROM channel_publications WHERE expires_at <= {} LIMIT $2)",
            (self.dialect.to_time)("$1")
        );
        let done = sqlx::query(&publications)
            .bind(now_ms)
            .bind(i64::from(batch))
            .execute(&self.pool)
            .await?;
        let mut total = done.rows();
        let unused = format!(
            "SELECT channel FROM channel_positions WHERE updated_at < {} LIMIT $2",
            (self.dialect.to_time)("$1")
        );
        let rows = sqlx::query(&unused)
            .bind(unused_before_ms)
            .bind(i64::from(batch))
            .fetch_all(&self.pool)
            .await?;
        let channels: Vec<String> =
            rows.iter().map(|r| r.try_get("channel")).collect::<Result<_, _>>()?;
        for channel in channels {
            let mut tx = self.pool.begin().await?;
            // Only if still unused: a publisher may have come back since the select.
            let gone = format!(
                "DELETE FROM channel_positions WHERE channel = $1 AND updated_at < {}",
                (self.dialect.to_time)("$2")
            );
            let done = sqlx::query(&gone)
                .bind(channel.clone())
                .bind(unused_before_ms)
                .execute(&mut *tx)
                .await?;
            if done.rows() > 0 {
                let rest = sqlx::query("DELETE FROM channel_publications WHERE channel = $1")
                    .bind(channel)
                    .execute(&mut *tx)
                    .await?;
                total += 1 + rest.rows();
            }
            tx.commit().await?;
        }
        Ok(total)
    }
}

fn position_row<DB>(row: &DB::Row) -> Result<Position, StoreError>
where
    DB: Database,
    for<'c> &'c str: sqlx::ColumnIndex<DB::Row>,
    for<'q> String: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
    for<'q> i64: sqlx::Decode<'q, DB> + sqlx::Type<DB>,
{
    let seq: i64 = row.try_get("last_seq")?;
    let epoch: String = row.try_get("epoch")?;
    Ok(Position { offset: offset(seq), epoch: Arc::from(epoch) })
}

/// `History` for each driver: concrete impls, so the driver bounds above are written once.
macro_rules! history_via_sql {
    ($db:ty) => {
        #[async_trait::async_trait]
        impl History for SqlHistory<$db> {
            async fn append(
                &self,
                channel: &str,
                entry: Bytes,
                opts: &HistoryOptions,
            ) -> Result<Position, StateError> {
                within(self.append_sql(channel, entry, opts)).await
            }

            async fn read(
                &self,
                channel: &str,
                range: Range,
                limit: usize,
                opts: &HistoryOptions,
            ) -> Result<HistoryPage, StateError> {
                within(self.read_sql(channel, range, limit, opts)).await
            }

            async fn remove(&self, channel: &str) -> Result<(), StateError> {
                within(self.remove_sql(channel)).await
            }
        }
    };
}

history_via_sql!(sqlx::Sqlite);
history_via_sql!(sqlx::Postgres);
