//! Redis occupancy: per channel a hash instance → subscribers (`ch:{channel}:occ`, under the
//! channel's hash tag), the set of active channels (`chans`), and per instance the set of
//! channels it counts in (`inst:{instance}:occ`, for the reaper). The hash and its change are
//! one script; the two sets follow as separate commands and are repaired lazily (`list` drops
//! a listed channel whose hash is gone), because they live in other slots. Nothing here is a
//! pipeline across slots, so it runs unchanged on Redis Cluster (where such a pipeline would
//! be refused with CROSSSLOT); the per-channel reads of `list` go out concurrently instead.

use redis::Script;

use super::{Change, Occupancy, Page};
use crate::state::{StateError, redis_conn::RedisConn};

/// KEYS: the channel's hash. ARGV: instance, delta. Returns {change, instance's count}, change
/// 1 occupied, 2 vacated, 0 neither.
const ADD: &str = r"
local before = redis.call('HLEN', KEYS[1])
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], ARGV[2])
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
local after = redis.call('HLEN', KEYS[1])
local change = 0
if before == 0 and after > 0 then change = 1 end
if before > 0 and after == 0 then change = 2 end
return {change, n}
";

/// KEYS: the channel's hash. ARGV: instance. Returns 1 when that left the channel empty.
const FORGET: &str = r"
local had = redis.call('HDEL', KEYS[1], ARGV[1])
if had == 1 and redis.call('HLEN', KEYS[1]) == 0 then return 1 end
return 0
";

pub struct RedisOccupancy {
    conn: RedisConn,
    prefix: String,
    add: Script,
    forget: Script,
}

impl RedisOccupancy {
    pub fn new(conn: impl Into<RedisConn>, prefix: String) -> Self {
        Self { conn: conn.into(), prefix, add: Script::new(ADD), forget: Script::new(FORGET) }
    }

    fn hash(&self, channel: &str) -> String {
        format!("{}ch:{{{channel}}}:occ", self.prefix)
    }

    fn active(&self) -> String {
        format!("{}chans", self.prefix)
    }

    fn of_instance(&self, instance: &str) -> String {
        format!("{}inst:{instance}:occ", self.prefix)
    }
}

#[async_trait::async_trait]
impl Occupancy for RedisOccupancy {
    async fn add(&self, channel: &str, instance: &str, delta: i64) -> Result<Change, StateError> {
        let mut conn = self.conn.clone();
        let (change, n): (i64, i64) = self
            .add
            .key(self.hash(channel))
            .arg(instance)
            .arg(delta)
            .invoke_async(&mut conn)
            .await?;
        // Two keys in two slots: two commands, sent together.
        let index = redis::cmd(if n > 0 { "SADD" } else { "SREM" })
            .arg(self.of_instance(instance))
            .arg(channel)
            .clone();
        let active = match change {
            1 => Some(redis::cmd("SADD").arg(self.active()).arg(channel).clone()),
            2 => Some(redis::cmd("SREM").arg(self.active()).arg(channel).clone()),
            _ => None,
        };
        let mut active_conn = conn.clone();
        let (indexed, activated) = tokio::join!(index.query_async::<()>(&mut conn), async {
            match &active {
                Some(cmd) => cmd.query_async::<()>(&mut active_conn).await,
                None => Ok(()),
            }
        });
        indexed?;
        activated?;
        Ok(match change {
            1 => Change::Occupied,
            2 => Change::Vacated,
            _ => Change::Unchanged,
        })
    }

    async fn list(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StateError> {
        let mut conn = self.conn.clone();
        let cursor: u64 = cursor.and_then(|c| c.parse().ok()).unwrap_or(0);
        let (next, names): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(self.active())
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(limit.max(1))
            .query_async(&mut conn)
            .await?;
        // One hash per channel, each in its channel's slot: concurrent reads, not a pipeline.
        let counts: Vec<Vec<i64>> = futures_util::future::try_join_all(names.iter().map(|name| {
            let mut conn = conn.clone();
            let key = self.hash(name);
            async move { redis::cmd("HVALS").arg(key).query_async::<Vec<i64>>(&mut conn).await }
        }))
        .await?;
        let mut channels = Vec::new();
        let mut stale = Vec::new();
        for (name, values) in names.into_iter().zip(counts) {
            let n: i64 = values.iter().filter(|v| **v > 0).sum();
            if n > 0 {
                channels.push((name, n as u64));
            } else {
                stale.push(name);
            }
        }
        if !stale.is_empty() {
            let _: () =
                redis::cmd("SREM").arg(self.active()).arg(stale).query_async(&mut conn).await?;
        }
        Ok(Page { channels, next: (next != 0).then(|| next.to_string()) })
    }

    async fn forget_instance(&self, instance: &str) -> Result<Vec<String>, StateError> {
        let mut conn = self.conn.clone();
        let key = self.of_instance(instance);
        let channels: Vec<String> = redis::cmd("SMEMBERS").arg(&key).query_async(&mut conn).await?;
        let mut vacated = Vec::new();
        for channel in channels {
            let emptied: i64 =
                self.forget.key(self.hash(&channel)).arg(instance).invoke_async(&mut conn).await?;
            if emptied == 1 {
                let _: () = redis::cmd("SREM")
                    .arg(self.active())
                    .arg(&channel)
                    .query_async(&mut conn)
                    .await?;
                vacated.push(channel);
            }
        }
        let _: () = redis::cmd("DEL").arg(&key).query_async(&mut conn).await?;
        Ok(vacated)
    }
}
