//! Redis revocations: one string per revoked user (`rev:u:{user}`, the `before` time) and one
//! per revoked token (`rev:j:{jti}`), each expiring when the tokens it covers would have.

use redis::Script;

use super::{Revocations, TokenRef, covers};
use crate::state::{StateError, now_ms, redis_conn::RedisConn};

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
    conn: RedisConn,
    prefix: String,
    revoke_user: Script,
}

impl RedisRevocations {
    pub fn new(conn: impl Into<RedisConn>, prefix: String) -> Self {
        Self { conn: conn.into(), prefix, revoke_user: Script::new(REVOKE_USER) }
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
        // Two keys in two slots: two commands sent together, not an MGET nor a pipeline (Redis
        // Cluster refuses both across slots).
        let mut user_conn = self.conn.clone();
        let mut jti_conn = self.conn.clone();
        let user = redis::cmd("GET").arg(self.user_key(token.user)).clone();
        let jti = token.jti.map(|jti| redis::cmd("EXISTS").arg(self.token_key(jti)).clone());
        let (before, by_jti) =
            tokio::join!(user.query_async::<Option<u64>>(&mut user_conn), async {
                match &jti {
                    Some(cmd) => cmd.query_async::<bool>(&mut jti_conn).await.map(Some),
                    None => Ok(None),
                }
            });
        let (before, by_jti) = (before?, by_jti?);
        Ok(before.is_some_and(|b| covers(b, token.issued_at)) || by_jti.unwrap_or(false))
    }
}
