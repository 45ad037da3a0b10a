//! Redis channel history: one stream and one hash per channel, both under the channel's hash
//! tag so each script touches one slot (ready for Redis Cluster).
//!
//! | key | type | content | lifetime |
//! |---|---|---|---|
//! | `ch:{channel}:meta` | hash | `e` epoch, `o` last offset | `PX meta_ttl` from the last append (or its creation by a read) |
//! | `ch:{channel}:hist` | stream | entry id `<offset>-1`, field `d` | `MAXLEN size`, `PX ttl` from the last append |
//!
//! The stream's ids are the offsets themselves, so a read after offset `n` is one `XRANGE`
//! from the exclusive id `(n-1`, and a trimmed or expired history shows as entries that start
//! above `n + 1`.

use std::sync::Arc;

use bytes::Bytes;
use redis::{Script, Value};

use super::{History, HistoryOptions, HistoryPage, Position, Range, new_epoch};
use crate::state::{StateError, redis_conn::RedisConn};

/// KEYS: meta, stream. ARGV: entry, size, ttl ms, meta ttl ms, a new epoch.
/// Returns {offset, epoch}. A channel without a position gets one with the new epoch, and any
/// stream left from a lost position is dropped (its ids belong to the old epoch).
const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV[5]
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], offset .. '-1', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {offset, epoch}
";

/// KEYS: meta, stream. ARGV: after, limit, reverse (1|0), meta ttl ms, a new epoch.
/// Returns {offset, epoch, entries} with entries as XRANGE returns them.
const READ: &str = r"
local m = redis.call('HMGET', KEYS[1], 'e', 'o')
local epoch, offset = m[1], tonumber(m[2]) or 0
if not epoch then
  epoch = ARGV[5]
  offset = 0
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
local entries = {}
if tonumber(ARGV[2]) > 0 then
  if ARGV[3] == '1' then
    entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[2])
  else
    entries = redis.call('XRANGE', KEYS[2], '(' .. ARGV[1] .. '-1', '+', 'COUNT', ARGV[2])
  end
end
return {offset, epoch, entries}
";

pub struct RedisHistory {
    conn: RedisConn,
    prefix: String,
    append: Script,
    read: Script,
}

impl RedisHistory {
    pub fn new(conn: impl Into<RedisConn>, prefix: impl Into<String>) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.into(),
            append: Script::new(APPEND),
            read: Script::new(READ),
        }
    }

    fn keys(&self, channel: &str) -> (String, String) {
        let p = &self.prefix;
        (format!("{p}ch:{{{channel}}}:meta"), format!("{p}ch:{{{channel}}}:hist"))
    }
}

fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn protocol(what: &str, e: impl std::fmt::Display) -> StateError {
    StateError::Protocol(format!("{what}: {e}"))
}

/// One stream entry as XRANGE returns it: `[id, [field, value]]`, the id `<offset>-1`.
fn entry(value: Value) -> Result<(u64, Bytes), StateError> {
    let (id, fields): (String, Vec<Vec<u8>>) =
        redis::from_redis_value(value).map_err(|e| protocol("history entry", e))?;
    let offset = id
        .split_once('-')
        .and_then(|(o, _)| o.parse().ok())
        .ok_or_else(|| protocol("history entry id", &id))?;
    let data = fields.into_iter().nth(1).ok_or_else(|| protocol("history entry", "no data"))?;
    Ok((offset, Bytes::from(data)))
}

#[async_trait::async_trait]
impl History for RedisHistory {
    async fn append(
        &self,
        channel: &str,
        data: Bytes,
        opts: &HistoryOptions,
    ) -> Result<Position, StateError> {
        let (meta, stream) = self.keys(channel);
        let reply: Value = self
            .append
            .key(meta)
            .key(stream)
            .arg(data.as_ref())
            .arg(opts.size.max(1))
            .arg(ms(opts.ttl))
            .arg(ms(opts.meta_ttl.max(opts.ttl)))
            .arg(new_epoch().as_ref())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (offset, epoch): (u64, String) =
            redis::from_redis_value(reply).map_err(|e| protocol("history append", e))?;
        Ok(Position { offset, epoch: Arc::from(epoch) })
    }

    async fn read(
        &self,
        channel: &str,
        range: Range,
        limit: usize,
        opts: &HistoryOptions,
    ) -> Result<HistoryPage, StateError> {
        let (meta, stream) = self.keys(channel);
        let (after, reverse) = match range {
            Range::After(after) => (after, "0"),
            Range::Newest => (0, "1"),
        };
        let reply: Value = self
            .read
            .key(meta)
            .key(stream)
            .arg(after)
            .arg(limit)
            .arg(reverse)
            .arg(ms(opts.meta_ttl.max(opts.ttl)))
            .arg(new_epoch().as_ref())
            .invoke_async(&mut self.conn.clone())
            .await?;
        let (offset, epoch, raw): (u64, String, Vec<Value>) =
            redis::from_redis_value(reply).map_err(|e| protocol("history read", e))?;
        let entries = raw.into_iter().map(entry).collect::<Result<Vec<_>, _>>()?;
        Ok(HistoryPage { top: Position { offset, epoch: Arc::from(epoch) }, entries })
    }

    async fn remove(&self, channel: &str) -> Result<(), StateError> {
        let (_, stream) = self.keys(channel);
        let _: Value = redis::cmd("DEL").arg(stream).query_async(&mut self.conn.clone()).await?;
        Ok(())
    }
}
