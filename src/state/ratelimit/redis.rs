//! Redis rate limiter: GCRA state shared by every instance, one atomic script per check.
//!
//! Key: `{prefix}rl:{name}:{key}`, a string holding the theoretical arrival time (TAT), in
//! microseconds on the Redis server's clock: the moment this key's budget is whole again.
//!
//! Algorithm (GCRA, see the parent module for why): with emission interval `T = window /
//! limit` and burst tolerance `limit × T` (the window, up to rounding), a check at `now`
//! computes `new_tat = max(tat, now) + T` and admits when `new_tat - now <= limit × T`.
//! Admitted, it stores `new_tat` with `PX = new_tat - now`, so the key expires exactly when
//! it would read as fresh: idle keys cost nothing and nothing needs sweeping. Denied, it
//! writes nothing, and a retry is admitted from `new_tat - limit × T` on.
//!
//! Why the server's clock (`TIME` inside the script): every instance decides against one
//! clock, so skew between hosts can neither hand out extra budget nor deny early. Redis 7
//! replicates a script's effects rather than the script, so a script reading `TIME` may
//! write.

use redis::Value;

use super::{Decision, Quota, RateLimiter};
use crate::state::{StateError, redis_conn::RedisConn};

/// KEYS[1]: the key. ARGV[1]: T in µs. ARGV[2]: the burst tolerance in µs.
/// Returns `{allowed (0|1), remaining, reset_at_ms}`.
const GCRA_LUA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local stored = redis.call('GET', KEYS[1])
local tat = stored and tonumber(stored) or now
if tat < now then
  tat = now
end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > burst then
  return {0, 0, math.ceil((new_tat - burst) / 1000)}
end
-- '%.0f' keeps all digits: a bare number argument may be written in exponent form.
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((burst - ahead) / interval), math.ceil(new_tat / 1000)}
";

/// GCRA over Redis. Every instance built with the same prefix and name shares one budget
/// per key.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: RedisConn,
    /// `{prefix}rl:{name}:`, to which the caller's key is appended.
    key_prefix: String,
    quota: Quota,
    interval_us: u64,
    burst_us: u64,
    script: redis::Script,
}

impl std::fmt::Debug for RedisRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisRateLimiter")
            .field("key_prefix", &self.key_prefix)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl RedisRateLimiter {
    /// `name` separates limiters sharing a prefix (per-socket events, per-user messages).
    /// As in the memory backend, a limit of 0 counts as 1, and the interval is at least 1 µs.
    pub fn new(
        conn: impl Into<RedisConn>,
        prefix: impl Into<String>,
        name: &str,
        quota: Quota,
    ) -> Self {
        let limit = u64::from(quota.limit.max(1));
        let window_us = u64::try_from(quota.window.as_micros()).unwrap_or(u64::MAX);
        // Rounded down as governor does; the tolerance is then `limit × T`, not the window,
        // so a window that does not divide evenly never admits more than `limit` at once.
        let interval_us = (window_us / limit).max(1);
        Self {
            conn: conn.into(),
            key_prefix: format!("{}rl:{name}:", prefix.into()),
            quota,
            interval_us,
            burst_us: interval_us.saturating_mul(limit),
            script: redis::Script::new(GCRA_LUA),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.key_prefix)
    }
}

#[async_trait::async_trait]
impl RateLimiter for RedisRateLimiter {
    fn quota(&self) -> Quota {
        self.quota
    }

    async fn check(&self, key: &str) -> Result<Decision, StateError> {
        let mut conn = self.conn.clone();
        let reply: Value = self
            .script
            .key(self.key(key))
            .arg(self.interval_us)
            .arg(self.burst_us)
            .invoke_async(&mut conn)
            .await?;
        parse_decision(reply)
    }

    async fn forget(&self, key: &str) -> Result<(), StateError> {
        let mut conn = self.conn.clone();
        let _: Value = redis::cmd("DEL").arg(self.key(key)).query_async(&mut conn).await?;
        Ok(())
    }
}

fn parse_decision(reply: Value) -> Result<Decision, StateError> {
    let bad = |what: &str, reply: &Value| {
        StateError::Protocol(format!("rate limit script: {what}: {reply:?}"))
    };
    let Value::Array(items) = &reply else {
        return Err(bad("expected an array", &reply));
    };
    let [Value::Int(allowed), Value::Int(remaining), Value::Int(reset_at_ms)] = items.as_slice()
    else {
        return Err(bad("expected three integers", &reply));
    };
    let allowed = match allowed {
        0 => false,
        1 => true,
        _ => return Err(bad("allowed is neither 0 nor 1", &reply)),
    };
    let remaining = u32::try_from(*remaining).map_err(|_| bad("remaining out of range", &reply))?;
    let reset_at_ms =
        u64::try_from(*reset_at_ms).map_err(|_| bad("reset_at out of range", &reply))?;
    Ok(Decision { allowed, remaining, reset_at_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_script_reply() {
        let reply = Value::Array(vec![Value::Int(1), Value::Int(4), Value::Int(1_700_000)]);
        assert_eq!(
            parse_decision(reply).unwrap(),
            Decision { allowed: true, remaining: 4, reset_at_ms: 1_700_000 }
        );
    }

    #[test]
    fn rejects_unexpected_replies() {
        for reply in [
            Value::Nil,
            Value::Array(vec![Value::Int(1), Value::Int(4)]),
            Value::Array(vec![Value::Int(2), Value::Int(4), Value::Int(5)]),
            Value::Array(vec![Value::Int(1), Value::Int(-1), Value::Int(5)]),
            Value::Array(vec![Value::Int(1), Value::BulkString(b"4".to_vec()), Value::Int(5)]),
        ] {
            assert!(
                matches!(parse_decision(reply), Err(StateError::Protocol(_))),
                "must be a protocol error"
            );
        }
    }
}
