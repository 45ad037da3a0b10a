//! Redis revocation store: one sorted set (`{prefix}revocations`) of every mark, scored by its
//! `until` (Unix ms), so the live marks are one range read and the lapsed ones one range
//! delete. Members: `u:{before}:{user}` and `j:{jti}`. One key, so it lives in one slot on a
//! Redis Cluster; revocations are rare and read whole only when an instance (re)loads them.

use super::{Mark, Revocations};
use crate::state::{StateError, now_ms, redis_conn::RedisConn};

pub struct RedisRevocations {
    conn: RedisConn,
    key: String,
}

impl RedisRevocations {
    pub fn new(conn: impl Into<RedisConn>, prefix: String) -> Self {
        Self { conn: conn.into(), key: format!("{prefix}revocations") }
    }
}

fn member(mark: &Mark) -> (String, u64) {
    match mark {
        Mark::User { user, before, until_ms } => (format!("u:{before}:{user}"), *until_ms),
        Mark::Token { jti, until_ms } => (format!("j:{jti}"), *until_ms),
    }
}

fn parse(member: &str, until_ms: u64) -> Option<Mark> {
    if let Some(jti) = member.strip_prefix("j:") {
        return Some(Mark::Token { jti: jti.to_owned(), until_ms });
    }
    let (before, user) = member.strip_prefix("u:")?.split_once(':')?;
    Some(Mark::User { user: user.to_owned(), before: before.parse().ok()?, until_ms })
}

#[async_trait::async_trait]
impl Revocations for RedisRevocations {
    async fn revoke(&self, mark: &Mark) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let (member, until) = member(mark);
        // Lapsed marks go as new ones come, so the set holds only live ones. `GT`: a second
        // revocation never shortens the first.
        let _: () = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.key)
            .arg("-inf")
            .arg(now_ms())
            .ignore()
            .cmd("ZADD")
            .arg(&self.key)
            .arg("GT")
            .arg(until)
            .arg(member)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn marks(&self) -> Result<Vec<Mark>, StateError> {
        let mut conn = self.conn.clone();
        let scored: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&self.key)
            .arg(format!("({}", now_ms()))
            .arg("+inf")
            .arg("BYSCORE")
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        Ok(scored.iter().filter_map(|(m, until)| parse(m, *until as u64)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_round_trip_users_with_colons_and_tokens() {
        for mark in [
            Mark::User { user: "org:ann".into(), before: 17, until_ms: 5 },
            Mark::Token { jti: "a:b".into(), until_ms: 9 },
        ] {
            let (m, until) = member(&mark);
            assert_eq!(parse(&m, until), Some(mark));
        }
        assert_eq!(parse("u:x:ann", 1), None);
        assert_eq!(parse("q:ann", 1), None);
    }
}
