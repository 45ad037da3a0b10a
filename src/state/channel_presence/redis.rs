//! Redis channel presence: per channel a hash of entries and a sorted set of their expiry
//! times, under the channel's hash tag (one slot per script).
//!
//! | key | type | content | lifetime |
//! |---|---|---|---|
//! | `ch:{channel}:pres` | hash | client id → `user id` NUL `client info JSON` | `PX ttl` from the last add or refresh |
//! | `ch:{channel}:pexp` | sorted set | client id scored by its expiry (ms, server clock) | the same |
//!
//! Expired entries are removed by the next read of the channel, in the same script.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use redis::{Script, Value};

use super::{ChannelPresence, Stats};
use crate::state::{StateError, redis_conn::RedisConn};

/// Prepended to every script: `now` in ms on the server's clock, and `sweep(pres, pexp)`.
macro_rules! with_sweep {
    ($body:literal) => {
        concat!(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function sweep(pres, pexp)
  local gone = redis.call('ZRANGEBYSCORE', pexp, '-inf', now)
  if #gone > 0 then
    redis.call('HDEL', pres, unpack(gone))
    redis.call('ZREMRANGEBYSCORE', pexp, '-inf', now)
  end
end
",
            $body
        )
    };
}

/// KEYS: pres, pexp. ARGV: client, user, info, ttl ms.
const ADD: &str = with_sweep!(
    r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '\0' .. ARGV[3])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return 1
"
);

/// KEYS: pres, pexp. ARGV: limit. Returns up to `limit` live entries.
const LIST: &str = with_sweep!(
    r"
sweep(KEYS[1], KEYS[2])
local all = redis.call('HVALS', KEYS[1])
local limit = tonumber(ARGV[1])
if #all <= limit then return all end
local out = {}
for i = 1, limit do out[i] = all[i] end
return out
"
);

/// KEYS: pres, pexp. Returns {clients, users}.
const STATS: &str = with_sweep!(
    r"
sweep(KEYS[1], KEYS[2])
local users, distinct = {}, 0
local all = redis.call('HVALS', KEYS[1])
for _, v in ipairs(all) do
  local user = string.match(v, '^([^%z]*)')
  if not users[user] then users[user] = true; distinct = distinct + 1 end
end
return {#all, distinct}
"
);

/// KEYS: pres, pexp. ARGV: ttl ms, clients… Refreshes the clients still present.
const REFRESH: &str = with_sweep!(
    r"
local ttl = tonumber(ARGV[1])
local kept = 0
for i = 2, #ARGV do
  if redis.call('ZADD', KEYS[2], 'XX', 'CH', now + ttl, ARGV[i]) == 1 then kept = kept + 1 end
end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return kept
"
);

pub struct RedisChannelPresence {
    conn: RedisConn,
    prefix: String,
    add: Script,
    list: Script,
    stats: Script,
    refresh: Script,
}

impl RedisChannelPresence {
    pub fn new(conn: impl Into<RedisConn>, prefix: impl Into<String>) -> Self {
        Self {
            conn: conn.into(),
            prefix: prefix.into(),
            add: Script::new(ADD),
            list: Script::new(LIST),
            stats: Script::new(STATS),
            refresh: Script::new(REFRESH),
        }
    }

    fn keys(&self, channel: &str) -> (String, String) {
        let p = &self.prefix;
        (format!("{p}ch:{{{channel}}}:pres"), format!("{p}ch:{{{channel}}}:pexp"))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn decode<T: redis::FromRedisValue>(reply: Value, what: &str) -> Result<T, StateError> {
    redis::from_redis_value(reply).map_err(|e| StateError::Protocol(format!("{what}: {e}")))
}

#[async_trait::async_trait]
impl ChannelPresence for RedisChannelPresence {
    async fn add(
        &self,
        channel: &str,
        client_id: &str,
        user_id: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let (pres, pexp) = self.keys(channel);
        let reply: Value = self
            .add
            .key(pres)
            .key(pexp)
            .arg(client_id)
            .arg(user_id)
            .arg(info.as_ref())
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await?;
        decode::<i64>(reply, "channel presence add").map(|_| ())
    }

    async fn remove(&self, channel: &str, client_id: &str) -> Result<(), StateError> {
        let (pres, pexp) = self.keys(channel);
        let reply: Value = redis::pipe()
            .atomic()
            .hdel(pres, client_id)
            .ignore()
            .zrem(pexp, client_id)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        decode::<()>(reply, "channel presence remove")
    }

    async fn list(&self, channel: &str, limit: usize) -> Result<Vec<Bytes>, StateError> {
        let (pres, pexp) = self.keys(channel);
        let reply: Value =
            self.list.key(pres).key(pexp).arg(limit).invoke_async(&mut self.conn.clone()).await?;
        let values: Vec<Vec<u8>> = decode(reply, "channel presence list")?;
        Ok(values
            .into_iter()
            .filter_map(|v| {
                // `user` NUL `info`: the info is everything after the first NUL.
                let at = v.iter().position(|b| *b == 0)?;
                Some(Bytes::from(v).slice(at + 1..))
            })
            .collect())
    }

    async fn stats(&self, channel: &str) -> Result<Stats, StateError> {
        let (pres, pexp) = self.keys(channel);
        let reply: Value =
            self.stats.key(pres).key(pexp).invoke_async(&mut self.conn.clone()).await?;
        let (clients, users): (usize, usize) = decode(reply, "channel presence stats")?;
        Ok(Stats { clients, users })
    }

    async fn refresh(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), StateError> {
        let mut by_channel: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (channel, client) in entries {
            by_channel.entry(channel).or_default().push(client);
        }
        if by_channel.is_empty() {
            return Ok(());
        }
        // One script per channel (one slot each), sent together over the multiplexed
        // connection: not one pipeline, which Redis Cluster would refuse across slots.
        let ttl = ms(ttl);
        futures_util::future::try_join_all(by_channel.into_iter().map(|(channel, clients)| {
            let (pres, pexp) = self.keys(channel);
            let mut invocation = self.refresh.key(pres);
            invocation.key(pexp).arg(ttl);
            for client in clients {
                invocation.arg(client);
            }
            let mut conn = self.conn.clone();
            async move {
                let reply: Value = invocation.invoke_async(&mut conn).await?;
                decode::<i64>(reply, "channel presence refresh")
            }
        }))
        .await?;
        Ok(())
    }
}
