//! The Lua scripts of the Redis presence backend (`super::redis`), which owns the key layout
//! and the atomicity argument they implement: each call touches one hash slot — a user bucket's
//! (a batch of registrations and unregistrations, reaping a bucket's part of a dead instance,
//! each decision bumping its user's version in the same step) or the instance list's
//! (liveness).

/// `bump(key, ttl)`: the version of a transition, `max(last, now_µs) + 1` on the server's
/// clock, stored with a `PX` TTL (`SET … GET`: Redis 6.2 or later). Prepended to every script
/// that decides transitions, so the version is taken in the same atomic step as the decision.
macro_rules! bump_fn {
    () => {
        r"
-- The server's clock in µs, read once per call: every transition a call decides (a batch's,
-- a reaper chunk's) takes its version from the same instant, one `TIME` per call.
local clock
local function bump(key, ttl)
  if not clock then
    local t = redis.call('TIME')
    clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
  end
  local v = clock + 1
  -- Written before the last version is known, and read back in the same call: the clock is
  -- past the last version but for a clock step back (or two transitions of one user in one
  -- call), so one SET usually decides. '%.0f' keeps all digits: a bare number argument may be
  -- written in exponent form.
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

/// Registers and unregisters sockets of one bucket, in order, each as its own decision (the
/// batch is atomic as a whole, so each sees the ones before it). KEYS: per operation, the
/// user's hash, the user's version and the instance's index (one bucket's slot). ARGV[1]: the
/// version TTL; then six per operation: `r` (register) or `u` (unregister), socket id, the
/// socket's entry (`super::redis::record_value`; '' for `u`), cap (0: none; `r` only), index
/// entry, the user's watch topic ('' when not counted). Returns one reply per operation:
///
/// - register: {version, listeners}, version -1 when the user already has `cap` other sockets
///   (nothing written), else the `online` transition's version when this was the user's first
///   socket, else 0. The count taken for the cap also decides "first", so a connect costs no
///   more commands with a cap than without.
/// - unregister: {} when this call did not remove the socket (unknown, or removed already),
///   else {version, listeners}, `version` being the `offline` transition's when this was the
///   user's last socket, else 0. The socket's entry is not read back: the caller holds the
///   record it registered.
///
/// `listeners`: how many clients subscribe to the user's watch topic, -1 for an empty topic
/// (not counted: on a cluster the topic lives in a slot of its own), counted for a transition
/// only (0 otherwise). Counted in the step that decides the transition, so a watcher that
/// subscribes after it reads a snapshot that already shows it (`super::redis`,
/// `Transition::watched`).
pub(super) const BATCH: &str = with_remove!(
    r"
local function listeners(topic)
  if topic == '' then
    return -1
  end
  return redis.call('PUBSUB', 'NUMSUB', topic)[2]
end
local ttl = ARGV[1]
local replies = {}
for i = 1, #KEYS / 3 do
  local ukey, vkey, ikey = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local a = 6 * i - 4
  local sid, topic = ARGV[a + 1], ARGV[a + 5]
  local reply = {0, 0}
  if ARGV[a] == 'r' then
    local count = redis.call('HLEN', ukey)
    local cap = tonumber(ARGV[a + 3])
    if cap > 0 and count >= cap and redis.call('HEXISTS', ukey, sid) == 0 then
      reply = {-1, 0}
    else
      redis.call('SADD', ikey, ARGV[a + 4])
      if redis.call('HSET', ukey, sid, ARGV[a + 2]) == 1 and count == 0 then
        reply = {bump(vkey, ttl), listeners(topic)}
      end
    end
  else
    redis.call('SREM', ikey, ARGV[a + 4])
    local v = remove(ukey, vkey, sid, ttl)
    if not v then
      reply = {}
    elseif v > 0 then
      reply = {v, listeners(topic)}
    end
  end
  replies[i] = reply
end
return replies
"
);

/// KEYS: one bucket's part of an instance's index, the bucket's reaped set of that instance.
/// ARGV: the bucket's user key base (`…u:`), version TTL, chunk, record ('1' or '0'). Removes
/// up to `chunk` of the instance's sockets in this bucket (SPOP: two reapers never take the same
/// one) with the batch's `remove`, deriving each user's keys from the base (they share the
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
