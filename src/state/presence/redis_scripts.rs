//! The Lua scripts of the Redis presence backend (`super::redis`), which owns the key layout
//! and the atomicity argument they implement: each call touches one hash slot — a user bucket's
//! (a batch of registrations and unregistrations, reaping a bucket's part of a dead instance,
//! each decision taking its version in the same step) or the instance list's (liveness).

/// The version clock of the scripts that decide transitions: `bump()` hands out the versions
/// of one call's transitions, `keep_clock()` stores the last one. A bucket's users share one
/// version watermark (`watermark`, set by the script before its first `bump`): read once per
/// call with `TIME`, `max(watermark, now_µs)`, each transition one above the one before, the
/// watermark written back once at the end. One bucket's transitions, and so each user's, are
/// therefore strictly increasing, also across a clock step back (or a failover to a replica
/// whose clock is behind: the watermark is replicated with the decisions that advanced it);
/// the clock floor keeps them increasing when the watermark is gone (a Redis restart without
/// persistence).
///
/// Why per bucket, not per user: a per-user version key cost each transition a `SET … GET`
/// and a number formatted for it — two fifths of the batch script's time under churn — and
/// Redis a key (with an expiry) per recently seen user; the watermark is one read and one write
/// per call (BENCHMARKS.md, "One version watermark per bucket").
macro_rules! with_clock {
    ($body:literal) => {
        concat!(
            r"
local watermark
local clock
local function bump()
  if not clock then
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
    clock = math.max(now, tonumber(redis.call('GET', watermark)) or 0)
  end
  clock = clock + 1
  return clock
end
-- '%.0f' keeps all digits: a bare number argument may be written in exponent form.
local function keep_clock()
  if clock then
    redis.call('SET', watermark, string.format('%.0f', clock))
  end
end
-- The one removal of a socket that unregister and the reaper share. The user hash decides:
-- only the call whose HDEL removed the socket acts; when that was the user's last socket, it
-- takes the `offline` version. nil: the socket was not there; 0: not the last socket.
local function remove(ukey, sid)
  if redis.call('HDEL', ukey, sid) == 0 then
    return nil
  end
  if redis.call('EXISTS', ukey) == 0 then
    return bump()
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
/// batch is atomic as a whole, so each sees the ones before it). KEYS: the bucket's version
/// watermark, then per operation the user's hash and the instance's index (one bucket's
/// slot). ARGV[1]: what the users' watch topics are named up to the user id ('' when not
/// counted); then five per operation: `r` (register) or `u` (unregister), socket id, user id,
/// the socket's entry (`super::redis::record_value`; '' for `u`), cap (0: none; `r` only).
/// Returns one reply per operation:
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
/// `listeners`: how many clients subscribe to the user's watch topic, -1 when not counted (on
/// a cluster the topic lives in a slot of its own), counted for a transition only (0
/// otherwise). Counted in the call that decides the transition, so a watcher that subscribes
/// after it reads a snapshot that already shows it (`super::redis`, `Transition::watched`).
///
/// The index entries (`<socket> <user>`) and the listener counts are written and read once per
/// call, after the decisions (one `SADD` and one `SREM` per index, one `PUBSUB NUMSUB` for
/// every transition): nothing in the call reads them, and the call is atomic, so the outcome
/// is that of one call per operation with a command or two fewer each.
pub(super) const BATCH: &str = with_clock!(
    r"
watermark = KEYS[1]
local topics_base = ARGV[1]
local replies, index, topics, counted = {}, {}, {}, {}
-- The index entry's last word in this call: true (added) or false (removed).
local function note(ikey, entry, present)
  local entries = index[ikey]
  if not entries then
    entries = {}
    index[ikey] = entries
  end
  entries[entry] = present
end
for i = 1, (#KEYS - 1) / 2 do
  local ukey, ikey = KEYS[2 * i], KEYS[2 * i + 1]
  local a = 5 * i - 3
  local sid, user = ARGV[a + 1], ARGV[a + 2]
  local reply = {0, 0}
  if ARGV[a] == 'r' then
    local count = redis.call('HLEN', ukey)
    local cap = tonumber(ARGV[a + 4])
    if cap > 0 and count >= cap and redis.call('HEXISTS', ukey, sid) == 0 then
      reply[1] = -1
    else
      note(ikey, sid .. ' ' .. user, true)
      if redis.call('HSET', ukey, sid, ARGV[a + 3]) == 1 and count == 0 then
        reply[1] = bump()
      end
    end
  else
    note(ikey, sid .. ' ' .. user, false)
    local v = remove(ukey, sid)
    if not v then
      reply = {}
    else
      reply[1] = v
    end
  end
  if (reply[1] or 0) > 0 then
    if topics_base == '' then
      reply[2] = -1
    else
      topics[#topics + 1] = topics_base .. user
      counted[#counted + 1] = reply
    end
  end
  replies[i] = reply
end
for ikey, entries in pairs(index) do
  local added, removed = {}, {}
  for entry, present in pairs(entries) do
    if present then
      added[#added + 1] = entry
    else
      removed[#removed + 1] = entry
    end
  end
  if #added > 0 then
    redis.call('SADD', ikey, unpack(added))
  end
  if #removed > 0 then
    redis.call('SREM', ikey, unpack(removed))
  end
end
if #topics > 0 then
  local numsub = redis.call('PUBSUB', 'NUMSUB', unpack(topics))
  for j, reply in ipairs(counted) do
    reply[2] = numsub[2 * j]
  end
end
keep_clock()
return replies
"
);

/// KEYS: one bucket's part of an instance's index, the bucket's reaped set of that instance,
/// the bucket's version watermark. ARGV: the bucket's user key base (`…u:`), the reaped set's
/// TTL, chunk, record ('1' or '0'). Removes up to `chunk` of the instance's sockets in this
/// bucket (SPOP: two reapers never take the same one) with the batch's `remove`, deriving each
/// user's keys from the base (they share the declared keys' slot); with `record`, adds each
/// removed socket to the reaped set (kept for the TTL: the instance, back after an outage,
/// learns which of its sockets the reaper announced; an instance that leaves does not come
/// back to ask). Returns {records, left}: a record is {socket, user, entry, version of the
/// user's `offline` or 0}; `left` is how many entries the bucket still holds.
pub(super) const REAP: &str = with_clock!(
    r"
watermark = KEYS[3]
local records = {}
local note = ARGV[4] == '1'
for _, entry in ipairs(redis.call('SPOP', KEYS[1], tonumber(ARGV[3]))) do
  local sid, user = string.match(entry, '^(%S+) (.*)$')
  if sid then
    local base = ARGV[1] .. user
    local ukey = base .. ':sockets'
    -- The entry, for the record the reaper reports: read before `remove` takes it.
    local r = redis.call('HGET', ukey, sid)
    local v = r and remove(ukey, sid)
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
keep_clock()
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
