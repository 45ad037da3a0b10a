//! The Lua scripts of the Redis presence backend (`super::redis`), which owns the key layout
//! and the atomicity argument they implement: one script per decision, each touching one hash
//! slot — a user's bucket (register, unregister, reaping a bucket's part of a dead instance,
//! each bumping the user's version in the same step) or the instance list's (liveness).

/// `bump(key)`: the version of a transition, `max(last, now_µs) + 1` on the server's clock,
/// stored with `PX` ARGV-given TTL (`SET … GET`: Redis 6.2 or later). Prepended to every script that decides transitions, so the
/// version is taken in the same atomic step as the decision.
///
/// `listeners(topic)`: how many clients subscribe to the user's watch topic now, or -1 for an
/// empty topic (not counted: on a cluster the topic lives in a slot of its own). Counted in the
/// step that decides the transition, so a watcher that subscribes after it reads a snapshot
/// that already shows it (`super::redis`, `Transition::watched`).
macro_rules! bump_fn {
    () => {
        r"
local function listeners(topic)
  if topic == '' then
    return -1
  end
  return redis.call('PUBSUB', 'NUMSUB', topic)[2]
end
local function bump(key, ttl)
  local t = redis.call('TIME')
  local v = tonumber(t[1]) * 1000000 + tonumber(t[2]) + 1
  -- Written before the last version is known, and read back in the same call: the clock is
  -- past the last version but for a clock step back (or two transitions in one µs), so one
  -- SET usually decides. '%.0f' keeps all digits: a bare number argument may be written in
  -- exponent form.
  local last = tonumber(redis.call('SET', key, string.format('%.0f', v), 'PX', ttl, 'GET')) or 0
  if last >= v then
    v = last + 1
    redis.call('SET', key, string.format('%.0f', v), 'PX', ttl)
  end
  return v
end
"
    };
}

/// A script body with `bump` in scope.
macro_rules! with_bump {
    ($body:literal) => {
        concat!(bump_fn!(), $body)
    };
}

/// A script body with `bump` and `remove(ukey, vkey, sid, ttl)` in scope: the one removal of a
/// socket that unregister and the reaper share. The user hash decides — only the call whose
/// `HDEL` removed the socket acts: when that was the user's last socket, it bumps the version.
/// Returns nil when the socket was not there, else the `offline` version (0: not the last
/// socket).
macro_rules! with_remove {
    ($body:literal) => {
        concat!(
            bump_fn!(),
            r"
local function remove(ukey, vkey, sid, ttl)
  if redis.call('HDEL', ukey, sid) == 0 then
    return nil
  end
  if redis.call('EXISTS', ukey) == 0 then
    return bump(vkey, ttl)
  end
  return 0
end
",
            $body
        )
    };
}

/// `now`: the server's clock in milliseconds, for the liveness deadlines. Every liveness
/// script runs on the instance list's slot, so deadlines are written and compared on one clock.
macro_rules! with_now {
    ($body:literal) => {
        concat!(
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
",
            $body
        )
    };
}

/// KEYS: user hash, user version, the instance's index (one bucket's slot). ARGV: socket id,
/// the socket's entry (`super::redis::record_value`), version TTL, cap (0: none), index entry,
/// the user's watch topic ('' when not counted). Returns {version, listeners}: version -1 when
/// the user already has `cap` other sockets (nothing written), else the `online` transition's
/// version when this was the user's first socket, else 0; `listeners` counted for a transition
/// only. The count taken for the cap also decides "first", so a connect costs no more
/// commands with a cap than without.
pub(super) const REGISTER: &str = with_bump!(
    r"
local count = redis.call('HLEN', KEYS[1])
local cap = tonumber(ARGV[4])
if cap > 0 and count >= cap and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  return {-1, 0}
end
redis.call('SADD', KEYS[3], ARGV[5])
local new = redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if new == 1 and count == 0 then
  return {bump(KEYS[2], ARGV[3]), listeners(ARGV[6])}
end
return {0, 0}
"
);

/// KEYS: user hash, user version, the instance's index (one bucket's slot). ARGV: socket id,
/// version TTL, index entry, the user's watch topic ('' when not counted). Returns {} when this
/// call did not remove the socket (unknown, or removed already), else {version, listeners},
/// `version` being the `offline` transition's when this was the user's last socket, else 0
/// (and `listeners` then 0, not counted). The socket's entry is not read back: the caller
/// holds the record it registered.
pub(super) const UNREGISTER: &str = with_remove!(
    r"
redis.call('SREM', KEYS[3], ARGV[3])
local v = remove(KEYS[1], KEYS[2], ARGV[1], ARGV[2])
if not v then
  return {}
end
if v == 0 then
  return {0, 0}
end
return {v, listeners(ARGV[4])}
"
);

/// KEYS: one bucket's part of an instance's index, the bucket's reaped set of that instance.
/// ARGV: the bucket's user key base (`…u:`), version TTL, chunk, record ('1' or '0'). Removes
/// up to `chunk` of the instance's sockets in this bucket (SPOP: two reapers never take the same
/// one) with `UNREGISTER`'s `remove`, deriving each user's keys from the base (they share the
/// declared keys' slot); with `record`, adds each removed socket to the reaped set (kept for the
/// version TTL: the instance, back after an outage, learns which of its sockets the reaper
/// announced; an instance that leaves does not come back to ask). Returns
/// {records, left}: a record is {socket, user, entry, version of the user's `offline` or 0};
/// `left` is how many entries the bucket still holds.
pub(super) const REAP: &str = with_remove!(
    r"
local records = {}
local note = ARGV[4] == '1'
for _, entry in ipairs(redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))) do
  local sid, user = string.match(entry, '^(%S+) (.*)$')
  if sid then
    local base = ARGV[1] .. user
    local ukey = base .. ':sockets'
    -- The entry, for the record the reaper reports: read before `remove` takes it.
    local r = redis.call('HGET', ukey, sid)
    local v = r and remove(ukey, base .. ':ver', sid, ARGV[2])
    if v then
      if note then
        redis.call('SADD', KEYS[2], sid)
      end
      table.insert(records, {sid, user, r, v})
    end
  end
end
if note and #records > 0 then
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return {records, redis.call('SCARD', KEYS[1])}
"
);

/// KEYS: instances. ARGV: instance, TTL in ms. The instance is live until now + TTL.
pub(super) const HEARTBEAT: &str = with_now!(
    r"
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return 0
"
);

/// KEYS: instances. ARGV: `live` or `expired`. The instances whose deadline is ahead of now,
/// or has passed.
pub(super) const MEMBERS: &str = with_now!(
    r"
if ARGV[1] == 'live' then
  return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
"
);

/// KEYS: instances. ARGV: instance, force. Removes the instance from the list when its
/// deadline has passed, or at once with `force` (the instance leaving itself). Returns 1 when
/// it removed it: a heartbeat that came in since the reaper looked keeps the instance known.
pub(super) const FORGET: &str = with_now!(
    r"
local deadline = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not deadline then
  return 0
end
if ARGV[2] == '1' or tonumber(deadline) <= now then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"
);
