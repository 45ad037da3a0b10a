//! Redis presence backend: the cluster-wide socket registry, per-user and per-instance indexes,
//! instance liveness and the reaping of dead instances.
//!
//! # Keys (all under the configured prefix)
//!
//! Users are spread over *buckets* by a hash of their id (`bucket_of`): 256 on a Redis Cluster,
//! one on a single Redis. A bucket is a hash tag, `{pb:<n>}`, so its keys share a slot: the
//! keys of every user in it, and each instance's index of its sockets in it. That lets one
//! script register or unregister a socket — the user's hash (which holds the socket's record),
//! the bucket's version watermark *and* the instance's index — as one atomic step, while on a
//! cluster the buckets, and with them the connect path, spread over every shard. Only the
//! instance list, written by heartbeats (one every few seconds per instance), is one key in one
//! slot, `{presence}`.
//!
//! | key | type | content | lifetime |
//! |---|---|---|---|
//! | `{pb:<n>}:u:<user>:sockets` | hash | socket id → `<connected_at ms> <transport> <instance> <device>`; exists exactly while the user is online | emptied by unregister or the reaper |
//! | `{pb:<n>}:ver` | string | the version watermark: the last version handed out to a transition of a user in bucket n (`redis_scripts`, `with_clock`) | none: one key per bucket |
//! | `{pb:<n>}:i:<instance>` | set | `<socket> <user>` for each socket the instance registered for a user of bucket n | emptied by unregister, or by the reaper (in chunks) |
//! | `{pb:<n>}:r:<instance>` | set | the sockets of that index a reaper removed, for an instance back after an outage to tell them from those its own lost replies removed (`cluster::resync`); not written when an instance leaves | `PX` one hour after the reap |
//! | `{pi:<instance>}:reaper` | string | held by the one reaper removing a dead instance's sockets | deleted when it is done; `PX` 30 s |
//! | `{presence}:liveness` | sorted set | instance → the end of its liveness (ms, Redis' clock) | the reaper removes dead ones; `leave` the instance itself on a graceful exit |
//!
//! The registry keys carry no TTL on purpose: they live exactly as long as their socket, and a
//! TTL would either expire a healthy long-lived connection or need a refresh per socket. The
//! only way they outlive their socket is the instance dying before teardown, and that is what
//! the liveness deadline and the reaper cover. Redis deletes a hash or set when its last member
//! goes, so after every socket left only the instance list, the buckets' watermarks and the
//! reaped sets of recent reaps remain; once every instance stopped gracefully, the watermarks
//! (and those sets, until they expire). (Instance ids here are incarnations,
//! `Node::incarnation`.) A socket's record is its entry in the user's hash, not a key of its
//! own: a key costs Redis ~120 bytes more per connection and a connect one more command
//! (BENCHMARKS.md, "History batches cut by time; socket records in the user's hash").
//!
//! # Atomicity
//!
//! Each decision is made inside one Lua script on one slot (sent with `EVALSHA`, loaded on
//! first use): registering or unregistering a socket decides first/last socket and the cap,
//! writes the instance's index and takes the transition's version in the same step, so two
//! devices leaving at once see one "last socket", a socket removed by both its session and a
//! reaper is reported once (only the `HDEL` that removed it acts), and no crash leaves a user
//! entry that no index names. Registrations and unregistrations that arrive together share a
//! script call per bucket (`super::redis_batch`: the ones that arrive while the bucket's call
//! is out go in the next), each still its own decision in arrival order. Reaping a dead
//! instance is one script per bucket and chunk, the same steps for each socket it pops.
//!
//! Liveness is the instance's deadline in the instance list, so "is it dead" and "forget it"
//! are one script on one slot: a heartbeat that moved the deadline after the reaper looked
//! keeps the instance known, and its next death is reaped like any other. What it costs: the
//! reaper, a resync and the instance list's counts read every bucket of an instance (256
//! concurrent calls on a cluster), all rare.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::try_join_all;
use redis::{Script, Value};

use super::redis_batch::{Batches, Kind, Op};
use super::redis_replies::{decode, presence_from_entries, record_from_value, transition};
use super::redis_scripts::{FORGET, HEARTBEAT, MEMBERS, REAP};
use super::{
    PresenceStore, Reaped, Registered, SocketRecord, Status, Transition, UserPresence,
    snapshot_version,
};
use crate::state::{StateError, now_ms, redis_conn::RedisConn};

/// How long a bucket's reaped set of an instance is kept after the reap: an instance back
/// after an outage asks it within its liveness TTL and the resync, well inside this.
pub(super) const REAPED_TTL_MS: u64 = 60 * 60 * 1000;

/// Index entries one reaper step takes from one bucket: a few milliseconds of its shard, so
/// reaping (or leaving with) 100,000 sockets never stalls anyone else's presence calls.
pub(super) const REAP_CHUNK: usize = 500;

/// Buckets users are spread over on a Redis Cluster: enough to spread presence over hundreds of
/// shards, few enough that reading every bucket of an instance stays cheap.
const CLUSTER_BUCKETS: u32 = 256;

/// Presence shared by every instance through one Redis or one Redis Cluster.
pub struct RedisPresence {
    pub(super) conn: RedisConn,
    prefix: String,
    /// 1 on a single Redis, `CLUSTER_BUCKETS` on a cluster.
    pub(super) buckets: u32,
    /// What every key of bucket n starts with, built once: keys are built on every connect
    /// and disconnect.
    bases: Box<[String]>,
    /// Registrations and unregistrations, sent in batches per bucket (`super::redis_batch`),
    /// with the watch topic naming the scripts count subscribers of ('' for none:
    /// `with_watch_topics`).
    batches: std::sync::Arc<Batches>,
    pub(super) reap: Script,
    heartbeat: Script,
    pub(super) members: Script,
    pub(super) forget: Script,
}

impl std::fmt::Debug for RedisPresence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisPresence").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// What the batch script reports of a socket it removed: the `offline` version (0: not
/// the user's last socket) and the watch topic's subscribers (`listeners`).
type Removed = (u64, i64);

/// A socket's entry in its user's hash: `<connected_at ms> <transport> <instance> <device>`.
/// Neither the transport nor an incarnation holds a space, so whatever follows the third
/// space is the device (which holds none either: `session::handshake` checks it).
pub(super) fn record_value(s: &SocketRecord) -> String {
    format!("{} {} {} {}", s.connected_at_ms, s.transport, s.instance_id, s.device_id)
}

/// The version watermark key of the bucket whose keys start with `base`.
fn watermark_key(base: &str) -> String {
    [base, "ver"].concat()
}

/// Every bucket's version watermark key, in bucket order.
fn watermarks(bases: &[String]) -> Vec<String> {
    bases.iter().map(|base| watermark_key(base)).collect()
}

/// FNV-1a: a fixed hash, so every instance and every version puts a user in the same bucket.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193))
}

impl RedisPresence {
    pub fn new(conn: impl Into<RedisConn>, prefix: impl Into<String>) -> Self {
        let conn = conn.into();
        let buckets = if conn.is_cluster() { CLUSTER_BUCKETS } else { 1 };
        let prefix = prefix.into();
        let bases: Box<[String]> = (0..buckets).map(|n| format!("{prefix}{{pb:{n}}}:")).collect();
        Self {
            batches: Batches::new(conn.clone(), watermarks(&bases), String::new()),
            buckets,
            bases,
            conn,
            prefix,
            reap: Script::new(REAP),
            heartbeat: Script::new(HEARTBEAT),
            members: Script::new(MEMBERS),
            forget: Script::new(FORGET),
        }
    }

    /// Has the transition scripts count the subscribers of the user's watch topic, named
    /// `base` + user id (the broker's naming, `RedisBroker::watch_topic_base`), so a
    /// transition nobody listens for is marked unwatched and not published. Only where the
    /// topic lives on the node that runs the script: one Redis, not a cluster.
    pub fn with_watch_topics(mut self, base: Option<String>) -> Self {
        let base = base.filter(|_| !self.conn.is_cluster()).unwrap_or_default();
        self.batches = Batches::new(self.conn.clone(), watermarks(&self.bases), base);
        self
    }

    pub(super) fn bucket_of(&self, user_id: &str) -> u32 {
        fnv1a(user_id.as_bytes()) % self.buckets
    }

    /// What every key of bucket `n` starts with.
    fn bucket_base(&self, n: u32) -> &str {
        &self.bases[n as usize % self.bases.len()]
    }

    fn user_key(&self, user_id: &str) -> String {
        [self.bucket_base(self.bucket_of(user_id)), "u:", user_id, ":sockets"].concat()
    }

    /// Bucket `n`'s version watermark.
    pub(super) fn watermark_key(&self, n: u32) -> String {
        watermark_key(self.bucket_base(n))
    }

    /// Bucket `n`'s part of `instance_id`'s index.
    pub(super) fn index_key(&self, n: u32, instance_id: &str) -> String {
        [self.bucket_base(n), "i:", instance_id].concat()
    }

    /// The sockets of `instance_id` in bucket `n` that a reaper removed (recently: the set
    /// expires, `REAPED_TTL_MS`).
    pub(super) fn reaped_key(&self, n: u32, instance_id: &str) -> String {
        format!("{}r:{instance_id}", self.bucket_base(n))
    }

    /// The user key base the reap script derives a bucket's user keys from.
    pub(super) fn users_base(&self, n: u32) -> String {
        format!("{}u:", self.bucket_base(n))
    }

    pub(super) fn reaper_key(&self, instance_id: &str) -> String {
        format!("{}{{pi:{instance_id}}}:reaper", self.prefix)
    }

    pub(super) fn instances_key(&self) -> String {
        format!("{}{{presence}}:liveness", self.prefix)
    }

    /// Every bucket's part of `instance_id`'s index: what `f` answers for each, in bucket
    /// order, asked concurrently (on a cluster each is its own slot).
    pub(super) async fn per_bucket<T, F, Fut>(&self, f: F) -> Result<Vec<T>, StateError>
    where
        F: Fn(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, StateError>>,
    {
        try_join_all((0..self.buckets).map(f)).await
    }

    /// A batch operation on `socket` (`super::redis_batch`), with the keys of its bucket.
    fn op(&self, socket: &SocketRecord, kind: Kind) -> (u32, Op) {
        let (user_id, socket_id) = (&socket.user_id, &socket.socket_id);
        let bucket = self.bucket_of(user_id);
        let op = Op {
            kind,
            user_key: self.user_key(user_id),
            index_key: self.index_key(bucket, &socket.instance_id),
            socket_id: socket_id.clone(),
            user_id: user_id.clone(),
        };
        (bucket, op)
    }

    /// Unregisters one socket: what it removed, if this call removed it.
    async fn remove(&self, socket: &SocketRecord) -> Result<Option<Removed>, StateError> {
        let (bucket, op) = self.op(socket, Kind::Unregister);
        let reply = self.batches.submit(bucket, op).await?;
        let fields: Vec<Value> = decode(reply, "unregister")?;
        if fields.is_empty() {
            return Ok(None);
        }
        decode(Value::Array(fields), "unregister").map(Some)
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
        let (bucket, op) = self.op(socket, Kind::Register { entry: record_value(socket), cap });
        let reply = self.batches.submit(bucket, op).await?;
        // `listeners`: the watch topic's subscribers, -1 when not counted (watched unless 0).
        let (version, listeners): (i64, i64) = decode(reply, "register")?;
        Ok(match u64::try_from(version) {
            Ok(version) => Registered::Added(transition(
                socket,
                Status::Online,
                version,
                listeners != 0,
                now_ms(),
            )),
            Err(_) => Registered::Full,
        })
    }

    async fn unregister(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        let Some((version, listeners)) = self.remove(socket).await? else {
            return Ok(None);
        };
        Ok(transition(socket, Status::Offline, version, listeners != 0, now_ms()))
    }

    async fn reaped(&self, socket: &SocketRecord) -> Result<bool, StateError> {
        self.was_reaped(socket).await
    }

    async fn query(&self, user_ids: &[String]) -> Result<Vec<UserPresence>, StateError> {
        // One MULTI per bucket (one in all on a single Redis): the devices, the bucket's
        // watermark and the clock of one instant, so each snapshot version matches what the
        // snapshot shows.
        let mut by_bucket: HashMap<u32, Vec<&String>> = HashMap::new();
        for user_id in user_ids {
            by_bucket.entry(self.bucket_of(user_id)).or_default().push(user_id);
        }
        let answers = try_join_all(by_bucket.into_iter().map(|(bucket, users)| async move {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for user_id in &users {
                pipe.hvals(self.user_key(user_id));
            }
            pipe.get(self.watermark_key(bucket));
            pipe.cmd("TIME");
            let reply: Value = pipe.query_async(&mut self.conn.clone()).await?;
            let mut replies: Vec<Value> = decode(reply, "query")?;
            let (Some(time), Some(last)) = (replies.pop(), replies.pop()) else {
                return Err(StateError::Protocol("query: short reply".into()));
            };
            let (secs, micros): (u64, u64) = decode(time, "query time")?;
            let now_us = secs.saturating_mul(1_000_000).saturating_add(micros);
            let last: Option<u64> = decode(last, "query version")?;
            let version = snapshot_version(last.unwrap_or(0), now_us);
            let entries: Vec<Vec<String>> = decode(Value::Array(replies), "query")?;
            if entries.len() != users.len() {
                return Err(StateError::Protocol(format!(
                    "query: {} replies for {} users",
                    entries.len(),
                    users.len()
                )));
            }
            users
                .into_iter()
                .zip(entries)
                .map(|(user_id, entries)| {
                    Ok((user_id.as_str(), presence_from_entries(user_id, &entries, version)?))
                })
                .collect::<Result<Vec<_>, StateError>>()
        }))
        .await?;
        let found: HashMap<&str, UserPresence> = answers.into_iter().flatten().collect();
        // In the order asked; a user asked twice gets the same answer twice.
        user_ids
            .iter()
            .map(|u| {
                found
                    .get(u.as_str())
                    .cloned()
                    .ok_or_else(|| StateError::Protocol(format!("query: no answer for user {u}")))
            })
            .collect()
    }

    async fn socket(
        &self,
        user_id: &str,
        socket_id: &str,
    ) -> Result<Option<SocketRecord>, StateError> {
        let reply: Value = redis::cmd("HGET")
            .arg(self.user_key(user_id))
            .arg(socket_id)
            .query_async(&mut self.conn.clone())
            .await?;
        let entry: Option<String> = decode(reply, "socket")?;
        entry.map(|e| record_from_value(socket_id.to_owned(), user_id.to_owned(), &e)).transpose()
    }

    async fn sockets_of_user(&self, user_id: &str) -> Result<Vec<SocketRecord>, StateError> {
        let reply: Value = redis::cmd("HGETALL")
            .arg(self.user_key(user_id))
            .query_async(&mut self.conn.clone())
            .await?;
        let entries: HashMap<String, String> = decode(reply, "sockets_of_user")?;
        let mut records = entries
            .into_iter()
            .map(|(id, e)| record_from_value(id, user_id.to_owned(), &e))
            .collect::<Result<Vec<_>, _>>()?;
        records.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
        Ok(records)
    }

    async fn sockets_of_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<(String, String)>, StateError> {
        self.index_of(instance_id).await
    }

    async fn instances(&self) -> Result<Vec<(String, usize)>, StateError> {
        self.live_instances().await
    }

    async fn heartbeat(&self, instance_id: &str, ttl: Duration) -> Result<(), StateError> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let reply: Value = self
            .heartbeat
            .key(self.instances_key())
            .arg(instance_id)
            .arg(ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        decode::<i64>(reply, "heartbeat").map(drop)
    }

    async fn reap_dead_instances(&self) -> Result<Vec<Reaped>, StateError> {
        let mut reaped = Vec::new();
        for instance_id in self.members("expired").await? {
            if let Some(one) = self.reap_one(&instance_id, false).await? {
                reaped.push(one);
            }
        }
        Ok(reaped)
    }

    async fn leave(&self, instance_id: &str) -> Result<Option<Reaped>, StateError> {
        self.reap_one(instance_id, true).await
    }
}
