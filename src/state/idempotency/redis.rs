//! Redis idempotency keys: `idem:{key}`, an empty string while the first call works, then its
//! result, expiring after the window.

use std::time::Duration;

use super::{Claim, Idempotency};
use crate::state::{StateError, redis_conn::RedisConn};

pub struct RedisIdempotency {
    conn: RedisConn,
    prefix: String,
}

impl RedisIdempotency {
    pub fn new(conn: impl Into<RedisConn>, prefix: String) -> Self {
        Self { conn: conn.into(), prefix }
    }

    fn key(&self, key: &str) -> String {
        format!("{}idem:{{{key}}}", self.prefix)
    }
}

fn px(window: Duration) -> u64 {
    (window.as_millis() as u64).max(1)
}

#[async_trait::async_trait]
impl Idempotency for RedisIdempotency {
    async fn claim(&self, key: &str, window: Duration) -> Result<Claim, StateError> {
        let mut conn = self.conn.clone();
        // SET NX … GET answers the value that was there (nil when the claim took).
        let was: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg("")
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(px(window))
            .query_async(&mut conn)
            .await?;
        Ok(match was {
            None => Claim::Fresh,
            Some(v) if v.is_empty() => Claim::Pending,
            Some(v) => Claim::Done(v),
        })
    }

    async fn complete(&self, key: &str, result: &str, window: Duration) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("SET")
            .arg(self.key(key))
            .arg(result)
            .arg("PX")
            .arg(px(window))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: () = redis::cmd("DEL").arg(self.key(key)).query_async(&mut conn).await?;
        Ok(())
    }
}
