//! Redis presence backend: the cluster-wide socket registry, per-user and per-instance indexes,
//! instance liveness and the reaping of dead instances.
//!
//! # Keys (all under the configured prefix, then the hash tag `{presence}`)
//!
//! Every presence key shares one hash tag, so on Redis Cluster they all live in one slot and
//! the scripts below, which span a socket's record, its user's hash and version, its instance's
//! set and the instance list, stay single atomic steps. The price: presence is served by one
//! shard (and its replicas) however many the cluster has; the other concerns spread by channel,
//! user or key. Tagging per user instead would split `register`/`unregister` from the instance
//! indexes and the reaper into per-user steps, which the crash-consistency argument below would
//! have to be redone for.
//!
//! | key | type | content | lifetime |
//! |---|---|---|---|
//! | `sock:{socket_id}` | hash | `user`, `device`, `transport`, `instance`, `connected_at` (ms) | unregister, or the reaper |
//! | `user:{user_id}:socks` | hash | socket id → device id; exists exactly while the user is online | emptied by unregister or the reaper |
//! | `user:{user_id}:ver` | string | the version of the user's last transition | `PX` one hour after that transition |
//! | `inst:{instance_id}:socks` | set | socket ids registered by that instance | emptied by unregister, or by the reaper (in chunks) |
//! | `inst:{instance_id}:alive` | string | liveness marker | `PX` TTL, refreshed by `heartbeat` |
//! | `instances` | set | ids of every instance that registered or heartbeated | the reaper removes dead ones; `leave` the instance itself on a graceful exit |
//!
//! The registry keys carry no TTL on purpose: they live exactly as long as their socket, and a
//! TTL would either expire a healthy long-lived connection or need a refresh per socket. The
//! only way they outlive their socket is the instance dying before teardown, and that is what
//! the liveness key and the reaper cover. Redis deletes a hash or set when its last member goes,
//! so after every socket left only `inst:*:alive`, `instances` and the `user:*:ver` of recent
//! transitions remain; once every instance stopped gracefully, only the versions, until they
//! expire. (Instance ids here are incarnations, `Node::incarnation`.)
//!
//! # Atomicity
//!
//! Each operation that decides a transition is one Lua script (sent with `EVALSHA`, loaded on
//! first use), so two devices leaving at once see one "last socket" and two reapers of the
//! same instance see one instance to reap. The reap script derives record and user keys from
//! the tagged base inside the script, which Redis Cluster allows because they share the slot of
//! the declared keys.
//!
//! Each transition script also bumps the user's version in the same step (`with_bump!`), and
//! `query` reads versions, devices and the server clock in one MULTI.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use redis::{FromRedisValue, Script, Value};

use super::redis_scripts::{REAP, REGISTER, UNREGISTER};
use super::{
    PresenceStore, Reaped, Registered, SocketRecord, Status, Transition, UserPresence,
    snapshot_version,
};
use crate::state::{StateError, now_ms, redis_conn::RedisConn};

/// How long a user's version outlives their last transition. Past it, the clock floor of the
/// next version (see the parent module) keeps versions increasing without the key.
const VERSION_TTL_MS: u64 = 60 * 60 * 1000;

/// What one run of the reap script returns: forgotten, records, offline, sockets left.
type ReapReply =
    (i64, Vec<(String, String, String, String, String, u64)>, Vec<(String, String, u64)>, u64);

/// Sockets one run of the reap script removes at most: a few milliseconds of the shard's time,
/// so reaping (or leaving with) 100,000 sockets never stalls everyone else's presence calls.
const REAP_CHUNK: u64 = 500;

/// Presence shared by every instance through one Redis.
pub struct RedisPresence {
    conn: RedisConn,
    prefix: String,
    /// `prefix` then the hash tag: what every key starts with.
    base: String,
    register: Script,
    unregister: Script,
    reap: Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RedisPresence {
    pub fn new(conn: impl Into<RedisConn>, prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        Self {
            conn: conn.into(),
            base: format!("{prefix}{{presence}}:"),
            prefix,
            register: Script::new(REGISTER),
            unregister: Script::new(UNREGISTER),
            reap: Script::new(REAP),
        }
    }

    fn sock_key(&self, socket_id: &str) -> String {
        format!("{}sock:{socket_id}", self.base)
    }

    fn user_key(&self, user_id: &str) -> String {
        format!("{}user:{user_id}:socks", self.base)
    }

    fn version_key(&self, user_id: &str) -> String {
        format!("{}user:{user_id}:ver", self.base)
    }

    fn inst_socks_key(&self, instance_id: &str) -> String {
        format!("{}inst:{instance_id}:socks", self.base)
    }

    fn alive_key(&self, instance_id: &str) -> String {
        format!("{}inst:{instance_id}:alive", self.base)
    }

    fn instances_key(&self) -> String {
        format!("{}instances", self.base)
    }

    /// Reaps `instance_id` if its liveness expired, or at once with `force`.
    async fn reap_one(&self, instance_id: &str, force: bool) -> Result<Option<Reaped>, StateError> {
        let (mut forgotten, mut records, mut offline) = (0, Vec::new(), Vec::new());
        loop {
            let reply: Value = self
                .reap
                .key(self.alive_key(instance_id))
                .key(self.inst_socks_key(instance_id))
                .key(self.instances_key())
                .arg(&self.base)
                .arg(instance_id)
                .arg(VERSION_TTL_MS)
                .arg(if force { "1" } else { "0" })
                .arg(REAP_CHUNK)
                .invoke_async(&mut self.conn.clone())
                .await?;
            let (gone, chunk, off, left): ReapReply = decode(reply, "reap")?;
            forgotten += gone;
            records.extend(chunk);
            offline.extend(off);
            if left == 0 {
                break;
            }
        }
        if forgotten == 0 && records.is_empty() {
            // Live, or another reaper got there first.
            return Ok(None);
        }
        let at_ms = now_ms();
        let mut sockets: Vec<SocketRecord> = records
            .into_iter()
            .map(|(socket_id, user_id, device_id, transport, instance_id, connected_at_ms)| {
                SocketRecord {
                    socket_id,
                    user_id,
                    device_id,
                    transport,
                    instance_id,
                    connected_at_ms,
                }
            })
            .collect();
        sockets.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
        let offline = offline
            .into_iter()
            .map(|(user_id, device_id, version)| Transition {
                user_id,
                device_id,
                status: Status::Offline,
                at_ms,
                version,
            })
            .collect();
        Ok(Some(Reaped { instance_id: instance_id.to_owned(), sockets, offline }))
    }
}

/// Converts a reply, reporting a shape we did not expect as a protocol error rather than a
/// Redis failure: it means the keys were written by something else.
fn decode<T: FromRedisValue>(reply: Value, what: &str) -> Result<T, StateError> {
    redis::from_redis_value(reply).map_err(|e| StateError::Protocol(format!("{what}: {e}")))
}

/// The transition a script reported, if any: scripts answer a transition's version, or 0
/// for none (versions start far above 0, at the clock in µs).
fn transition(socket: &SocketRecord, status: Status, version: u64) -> Option<Transition> {
    (version > 0).then(|| Transition {
        user_id: socket.user_id.clone(),
        device_id: socket.device_id.clone(),
        status,
        at_ms: now_ms(),
        version,
    })
}

/// Builds a record from its hash; `None` when the hash is gone (removed between the index read
/// and this one).
fn record_from_hash(
    socket_id: String,
    mut fields: HashMap<String, String>,
) -> Result<Option<SocketRecord>, StateError> {
    if fields.is_empty() {
        return Ok(None);
    }
    let mut take = |name: &str| {
        fields
            .remove(name)
            .ok_or_else(|| StateError::Protocol(format!("socket {socket_id}: no field {name}")))
    };
    let user_id = take("user")?;
    let device_id = take("device")?;
    let transport = take("transport")?;
    let instance_id = take("instance")?;
    let connected_at = take("connected_at")?;
    let connected_at_ms = connected_at.parse().map_err(|_| {
        StateError::Protocol(format!("socket {socket_id}: connected_at {connected_at:?}"))
    })?;
    Ok(Some(SocketRecord {
        socket_id,
        user_id,
        device_id,
        transport,
        instance_id,
        connected_at_ms,
    }))
}

fn presence_from_devices(user_id: &str, devices: &[String], version: u64) -> UserPresence {
    let distinct: HashSet<&String> = devices.iter().collect();
    UserPresence {
        user_id: user_id.to_owned(),
        online: !devices.is_empty(),
        devices: distinct.len(),
        sockets: devices.len(),
        version,
    }
}

#[async_trait::async_trait]
impl PresenceStore for RedisPresence {
    async fn register_capped(
        &self,
        socket: &SocketRecord,
        max: usize,
    ) -> Result<Registered, StateError> {
        if max == 0 {
            return Ok(Registered::Full);
        }
        // 0 means no cap to the script; a cap past what a hash can hold is none either.
        let cap = if max >= u32::MAX as usize { 0 } else { max as u64 };
        let reply: Value = self
            .register
            .key(self.sock_key(&socket.socket_id))
            .key(self.user_key(&socket.user_id))
            .key(self.inst_socks_key(&socket.instance_id))
            .key(self.instances_key())
            .key(self.version_key(&socket.user_id))
            .arg(&socket.socket_id)
            .arg(&socket.user_id)
            .arg(&socket.device_id)
            .arg(&socket.transport)
            .arg(&socket.instance_id)
            .arg(socket.connected_at_ms)
            .arg(VERSION_TTL_MS)
            .arg(cap)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let version: i64 = decode(reply, "register")?;
        Ok(match u64::try_from(version) {
            Ok(version) => Registered::Added(transition(socket, Status::Online, version)),
            Err(_) => Registered::Full,
        })
    }

    async fn unregister(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        let reply: Value = self
            .unregister
            .key(self.user_key(&socket.user_id))
            .key(self.sock_key(&socket.socket_id))
            .key(self.inst_socks_key(&socket.instance_id))
            .key(self.version_key(&socket.user_id))
            .arg(&socket.socket_id)
            .arg(VERSION_TTL_MS)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let version: u64 = decode(reply, "unregister")?;
        Ok(transition(socket, Status::Offline, version))
    }

    async fn query(&self, user_ids: &[String]) -> Result<Vec<UserPresence>, StateError> {
        if user_ids.is_empty() {
            return Ok(Vec::new());
        }
        // One MULTI: the devices, the versions and the clock of one instant, so each snapshot
        // version matches what the snapshot shows.
        let mut pipe = redis::pipe();
        pipe.atomic();
        for user_id in user_ids {
            pipe.hvals(self.user_key(user_id));
        }
        pipe.mget(user_ids.iter().map(|u| self.version_key(u)).collect::<Vec<_>>());
        pipe.cmd("TIME");
        let reply: Value = pipe.query_async(&mut self.conn.clone()).await?;
        let mut replies: Vec<Value> = decode(reply, "query")?;
        let (Some(time), Some(versions)) = (replies.pop(), replies.pop()) else {
            return Err(StateError::Protocol("query: short reply".into()));
        };
        let (secs, micros): (u64, u64) = decode(time, "query time")?;
        let now_us = secs.saturating_mul(1_000_000).saturating_add(micros);
        let versions: Vec<Option<u64>> = decode(versions, "query versions")?;
        let devices: Vec<Vec<String>> = decode(Value::Array(replies), "query")?;
        if devices.len() != user_ids.len() || versions.len() != user_ids.len() {
            return Err(StateError::Protocol(format!(
                "query: {} replies for {} users",
                devices.len(),
                user_ids.len()
            )));
        }
        Ok(user_ids
            .iter()
            .zip(devices)
            .zip(versions)
            .map(|((user_id, devices), last)| {
                let version = snapshot_version(last.unwrap_or(0), now_us);
                presence_from_devices(user_id, &devices, version)
            })
            .collect())
    }

    async fn socket(&self, socket_id: &str) -> Result<Option<SocketRecord>, StateError> {
        let reply: Value = redis::cmd("HGETALL")
            .arg(self.sock_key(socket_id))
            .query_async(&mut self.conn.clone())
            .await?;
        let fields: HashMap<String, String> = decode(reply, "socket")?;
        record_from_hash(socket_id.to_owned(), fields)
    }

    async fn sockets_of_user(&self, user_id: &str) -> Result<Vec<SocketRecord>, StateError> {
        let mut conn = self.conn.clone();
        let reply: Value =
            redis::cmd("HGETALL").arg(self.user_key(user_id)).query_async(&mut conn).await?;
        let devices: HashMap<String, String> = decode(reply, "sockets_of_user")?;
        let mut ids: Vec<String> = devices.into_keys().collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(self.sock_key(id));
        }
        let reply: Value = pipe.query_async(&mut conn).await?;
        let hashes: Vec<HashMap<String, String>> = decode(reply, "sockets_of_user")?;
        let mut records = Vec::with_capacity(ids.len());
        for (id, fields) in ids.into_iter().zip(hashes) {
            if let Some(record) = record_from_hash(id, fields)? {
                records.push(record);
            }
        }
        Ok(records)
    }

    async fn sockets_of_instance(&self, instance_id: &str) -> Result<Vec<String>, StateError> {
        let reply: Value = redis::cmd("SMEMBERS")
            .arg(self.inst_socks_key(instance_id))
            .query_async(&mut self.conn.clone())
            .await?;
        let mut ids: Vec<String> = decode(reply, "sockets_of_instance")?;
        ids.sort();
        Ok(ids)
    }

    async fn instances(&self) -> Result<Vec<(String, usize)>, StateError> {
        let mut conn = self.conn.clone();
        let reply: Value =
            redis::cmd("SMEMBERS").arg(self.instances_key()).query_async(&mut conn).await?;
        let mut ids: Vec<String> = decode(reply, "instances")?;
        ids.sort();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("EXISTS").arg(self.alive_key(id)).cmd("SCARD").arg(self.inst_socks_key(id));
        }
        let reply: Value = pipe.query_async(&mut conn).await?;
        let counts: Vec<usize> = decode(reply, "instances")?;
        Ok(ids
            .into_iter()
            .zip(counts.chunks(2))
            .filter(|(_, c)| c.first().copied().unwrap_or(0) == 1)
            .map(|(id, c)| (id, c.get(1).copied().unwrap_or(0)))
            .collect())
    }

    async fn heartbeat(&self, instance_id: &str, ttl: Duration) -> Result<(), StateError> {
        // PX 0 is an error in Redis; a zero TTL means "dead at once", which 1 ms approximates.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let reply: Value = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(self.alive_key(instance_id))
            .arg(1)
            .arg("PX")
            .arg(ttl_ms)
            .ignore()
            .sadd(self.instances_key(), instance_id)
            .ignore()
            .query_async(&mut self.conn.clone())
            .await?;
        decode::<()>(reply, "heartbeat")
    }

    async fn reap_dead_instances(&self) -> Result<Vec<Reaped>, StateError> {
        let reply: Value = redis::cmd("SMEMBERS")
            .arg(self.instances_key())
            .query_async(&mut self.conn.clone())
            .await?;
        let mut instances: Vec<String> = decode(reply, "reap_dead_instances")?;
        instances.sort();
        let mut reaped = Vec::new();
        for instance_id in &instances {
            if let Some(one) = self.reap_one(instance_id, false).await? {
                reaped.push(one);
            }
        }
        Ok(reaped)
    }

    async fn leave(&self, instance_id: &str) -> Result<Option<Reaped>, StateError> {
        self.reap_one(instance_id, true).await
    }
}
