//! Redis revocations: one string per revoked user (`rev:u:{user}`, the `before` time) and one
//! per revoked token (`rev:j:{jti}`), each expiring when the tokens it covers would have.

use redis::{Script, aio::ConnectionManager};

use super::{Revocations, TokenRef, covers};
use crate::state::{StateError, now_ms};

/// KEYS: the user's mark. ARGV: before, ttl ms. Keeps the larger `before` and the longer TTL.
const REVOKE_USER: &str = r"
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local before = tonumber(ARGV[1])
if before > cur then cur = before end
local ttl = tonumber(ARGV[2])
local left = redis.call('PTTL', KEYS[1])
if left > ttl then ttl = left end
redis.call('SET', KEYS[1], cur, 'PX', ttl)
return 1
";

pub struct RedisRevocations {
    conn: ConnectionManager,
    prefix: String,
    revoke_user: Script,
}

impl RedisRevocations {
    pub fn new(conn: ConnectionManager, prefix: String) -> Self {
        Self { conn, prefix, revoke_user: Script::new(REVOKE_USER) }
    }

    fn user_key(&self, user: &str) -> String {
        format!("{}rev:u:{{{user}}}", self.prefix)
    }

    fn token_key(&self, jti: &str) -> String {
        format!("{}rev:j:{{{jti}}}", self.prefix)
    }
}

/// Milliseconds from now until `until_ms`, at least 1 (a past `until` still sets a mark that
/// expires at once rather than an invalid TTL).
fn ttl_ms(until_ms: u64) -> u64 {
    until_ms.saturating_sub(now_ms()).max(1)
}

#[async_trait::async_trait]
impl Revocations for RedisRevocations {
    async fn revoke_user(&self, user: &str, before: u64, until_ms: u64) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: i64 = self
            .revoke_user
            .key(self.user_key(user))
            .arg(before)
            .arg(ttl_ms(until_ms))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn revoke_token(&self, jti: &str, until_ms: u64) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        // GT: a second revocation never shortens the first.
        let key = self.token_key(jti);
        let ttl = ttl_ms(until_ms);
        let _: () = redis::pipe()
            .cmd("SET")
            .arg(&key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ttl)
            .arg("GT")
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn is_revoked(&self, token: TokenRef<'_>) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        // Two keys in two slots: two commands in one pipeline, not an MGET.
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(self.user_key(token.user));
        if let Some(jti) = token.jti {
            pipe.cmd("EXISTS").arg(self.token_key(jti));
        }
        let (before, by_jti): (Option<u64>, Option<bool>) = if token.jti.is_some() {
            let (b, j): (Option<u64>, bool) = pipe.query_async(&mut conn).await?;
            (b, Some(j))
        } else {
            let (b,): (Option<u64>,) = pipe.query_async(&mut conn).await?;
            (b, None)
        };
        Ok(before.is_some_and(|b| covers(b, token.issued_at)) || by_jti.unwrap_or(false))
    }
}
