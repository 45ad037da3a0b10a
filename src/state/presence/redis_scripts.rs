//! The Lua scripts of the Redis presence backend (`super::redis`), which owns the key layout
//! and the atomicity argument they implement: one script per decision, each bumping the
//! user's version in the same step.

/// `bump(key)`: the version of a transition, `max(last, now_µs) + 1` on the server's clock,
/// stored with `PX` ARGV-given TTL. Prepended to every script that decides transitions, so the
/// version is taken in the same atomic step as the decision.
macro_rules! with_bump {
    ($body:literal) => {
        concat!(
            r"
local function bump(key, ttl)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local v = math.max(tonumber(redis.call('GET', key)) or 0, now) + 1
  -- '%.0f' keeps all digits: a bare number argument may be written in exponent form.
  redis.call('SET', key, string.format('%.0f', v), 'PX', ttl)
  return v
end
",
            $body
        )
    };
}

/// KEYS: record, user hash, instance set, instances, user version. ARGV: socket id, user,
/// device, transport, instance, connected_at, version TTL, cap (0: none). Returns -1 when the
/// user already has `cap` other sockets (nothing written), else the `online` transition's
/// version when this was the user's first socket, else 0. The count taken for the cap also
/// decides "first", so a connect costs no more commands with a cap than without.
pub(super) const REGISTER: &str = with_bump!(
    r"
local count = redis.call('HLEN', KEYS[2])
local cap = tonumber(ARGV[8])
if cap > 0 and count >= cap and redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  return -1
end
local new = redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[1], 'user', ARGV[2], 'device', ARGV[3], 'transport', ARGV[4],
  'instance', ARGV[5], 'connected_at', ARGV[6])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[5])
if new == 1 and count == 0 then
  return bump(KEYS[5], ARGV[7])
end
return 0
"
);

/// KEYS: user hash, record, instance set, user version. ARGV: socket id, version TTL. Returns
/// the `offline` transition's version when this was the user's last socket, else 0. The user
/// hash decides: only the caller whose HDEL removed the socket acts.
pub(super) const UNREGISTER: &str = with_bump!(
    r"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('DEL', KEYS[2])
redis.call('SREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
  return bump(KEYS[4], ARGV[2])
end
return 0
"
);

/// KEYS: alive key, instance set, instances. ARGV: key base, instance id, version TTL, force,
/// chunk. Returns {forgotten, records, offline, left}: `forgotten` is 1 when this run removed
/// the instance from `instances` (the run that took its last socket); records are {socket,
/// user, device, transport, instance, connected_at}; offline entries are {user, device of the
/// removed socket, version}; `left` is how many of the instance's sockets are still to reap. Unless `force` is 1 (the instance
/// leaving itself), a live instance (a heartbeat won the race with the caller's SMEMBERS)
/// returns {0, {}, {}, 0}. At most `chunk` sockets go per run (SPOP: two reapers never take
/// the same one), so reaping a large instance never holds the shard for long; the caller runs
/// it again while `left` is above 0 (the liveness key is gone by then, so it goes on).
pub(super) const REAP: &str = with_bump!(
    r"
if ARGV[4] ~= '1' and redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, {}, {}, 0}
end
redis.call('DEL', KEYS[1])
local records, offline = {}, {}
for _, sid in ipairs(redis.call('SPOP', KEYS[2], tonumber(ARGV[5]))) do
  local rkey = ARGV[1] .. 'sock:' .. sid
  local r = redis.call('HMGET', rkey, 'user', 'device', 'transport', 'instance', 'connected_at')
  if r[1] then
    local user, device = r[1], r[2] or ''
    local ukey = ARGV[1] .. 'user:' .. user .. ':socks'
    if redis.call('HDEL', ukey, sid) == 1 and redis.call('EXISTS', ukey) == 0 then
      local v = bump(ARGV[1] .. 'user:' .. user .. ':ver', ARGV[3])
      table.insert(offline, {user, device, v})
    end
    redis.call('DEL', rkey)
    table.insert(records, {sid, user, device, r[3] or '', r[4] or ARGV[2], tonumber(r[5]) or 0})
  end
end
local left = redis.call('SCARD', KEYS[2])
-- Forgotten only with its last socket: a reaper cut short finds it again on its next run.
local forgotten = 0
if left == 0 then
  forgotten = redis.call('SREM', KEYS[3], ARGV[2])
end
return {forgotten, records, offline, left}
"
);
