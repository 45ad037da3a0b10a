//! The instance side of the Redis presence backend (`super::redis`, which owns the key layout
//! and the atomicity argument): the instance list and its liveness deadlines, reading an
//! instance's index across the buckets, and removing a dead (or leaving) instance's sockets,
//! every bucket at once, a chunk of each per step (recording which it removed).

use futures_util::future::try_join_all;
use redis::Value;

use super::redis::{REAP_CHUNK, REAPED_TTL_MS, RedisPresence};
use super::redis_replies::{decode, record_from_value, transition};
use super::{Reaped, SocketRecord, Status};
use crate::state::{StateError, now_ms};

impl RedisPresence {
    /// Every bucket's part of an instance's index, as (socket id, user id), by socket id.
    pub(super) async fn index_of(
        &self,
        instance_id: &str,
    ) -> Result<Vec<(String, String)>, StateError> {
        let parts = self
            .per_bucket(|n| async move {
                let reply: Value = redis::cmd("SMEMBERS")
                    .arg(self.index_key(n, instance_id))
                    .query_async(&mut self.conn.clone())
                    .await?;
                decode::<Vec<String>>(reply, "sockets_of_instance")
            })
            .await?;
        let mut ids: Vec<(String, String)> = parts
            .iter()
            .flatten()
            .filter_map(|e| e.split_once(' '))
            .map(|(sid, user)| (sid.to_owned(), user.to_owned()))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The live instances with their socket counts (every bucket of each).
    pub(super) async fn live_instances(&self) -> Result<Vec<(String, usize)>, StateError> {
        let ids = self.members("live").await?;
        let mut live = Vec::with_capacity(ids.len());
        for id in ids {
            let counts = self
                .per_bucket(|n| {
                    let key = self.index_key(n, &id);
                    async move {
                        let reply: Value = redis::cmd("SCARD")
                            .arg(key)
                            .query_async(&mut self.conn.clone())
                            .await?;
                        decode::<usize>(reply, "instances")
                    }
                })
                .await?;
            live.push((id, counts.iter().sum()));
        }
        Ok(live)
    }

    /// Instances in the list whose deadline is ahead (`live`) or has passed (`expired`).
    pub(super) async fn members(&self, which: &str) -> Result<Vec<String>, StateError> {
        let reply: Value = self
            .members
            .key(self.instances_key())
            .arg(which)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut ids: Vec<String> = decode(reply, "instances")?;
        ids.sort();
        Ok(ids)
    }

    /// Reaps `instance_id` if its liveness expired, or at once with `force`. One reaper at a
    /// time per dead instance (a claim in its slot, so concurrent reapers do not split one
    /// instance's report between them); the instance leaving itself does not wait for it.
    pub(super) async fn reap_one(
        &self,
        instance_id: &str,
        force: bool,
    ) -> Result<Option<Reaped>, StateError> {
        if force {
            return self.reap_claimed(instance_id, true).await;
        }
        let claim = self.reaper_key(instance_id);
        // Outlives any one reaper's run (bounded by REAP_TIMEOUT), so a reaper that died while
        // holding it delays the next one by at most that; what it left is still in the index.
        let ttl_ms = crate::state::REAP_TIMEOUT.as_millis() as u64;
        let reply: Value = redis::cmd("SET")
            .arg(&claim)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut self.conn.clone())
            .await?;
        if reply == Value::Nil {
            return Ok(None);
        }
        let reaped = self.reap_claimed(instance_id, false).await;
        let reply: Value =
            redis::cmd("DEL").arg(&claim).query_async(&mut self.conn.clone()).await?;
        decode::<i64>(reply, "reap")?;
        reaped
    }

    /// Removes the instance's sockets: each step runs the reap script on every bucket still
    /// holding some (concurrently), until none does; then forgets the instance.
    async fn reap_claimed(
        &self,
        instance_id: &str,
        force: bool,
    ) -> Result<Option<Reaped>, StateError> {
        let mut sockets = Vec::new();
        let mut offline = Vec::new();
        let at_ms = now_ms();
        let mut pending: Vec<u32> = (0..self.buckets).collect();
        let drained = loop {
            if pending.is_empty() {
                break true;
            }
            // A heartbeat since the caller looked: the instance is back, leave it be.
            if !force && self.members("live").await?.iter().any(|id| id == instance_id) {
                break false;
            }
            let steps =
                try_join_all(pending.iter().map(|&n| self.reap_bucket(n, instance_id, !force)));
            let mut next = Vec::new();
            for (n, (records, left)) in pending.iter().zip(steps.await?) {
                for (socket_id, user_id, entry, v) in records {
                    // Removed already: an entry we cannot read (written by something else)
                    // loses its own report, not the rest of the step's.
                    let record = match record_from_value(socket_id, user_id, &entry) {
                        Ok(record) => record,
                        Err(e) => {
                            tracing::warn!(error = %e, "reaped a socket entry of unknown shape");
                            continue;
                        }
                    };
                    // The reaper does not count listeners: a reaped user's watchers are told.
                    offline.extend(transition(&record, Status::Offline, v, true, at_ms));
                    sockets.push(record);
                }
                if left > 0 {
                    next.push(*n);
                }
            }
            pending = next;
        };
        let forgotten = drained && {
            let reply: Value = self
                .forget
                .key(self.instances_key())
                .arg(instance_id)
                .arg(if force { "1" } else { "0" })
                .invoke_async(&mut self.conn.clone())
                .await?;
            decode::<i64>(reply, "forget")? == 1
        };
        if !forgotten && sockets.is_empty() {
            // Live, or another reaper got there first.
            return Ok(None);
        }
        sockets.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
        Ok(Some(Reaped { instance_id: instance_id.to_owned(), sockets, offline }))
    }

    /// Whether a reaper removed `socket`: its id is in its bucket's reaped set of its instance.
    pub(super) async fn was_reaped(&self, socket: &SocketRecord) -> Result<bool, StateError> {
        let key = self.reaped_key(self.bucket_of(&socket.user_id), &socket.instance_id);
        let reply: Value = redis::cmd("SISMEMBER")
            .arg(key)
            .arg(&socket.socket_id)
            .query_async(&mut self.conn.clone())
            .await?;
        decode::<i64>(reply, "reaped").map(|n| n == 1)
    }

    /// One run of the reap script on bucket `n`: the records it removed and the entries left.
    /// `record`: note what it removes in the reaped set (not when the instance leaves: it does
    /// not come back to ask).
    async fn reap_bucket(
        &self,
        n: u32,
        instance_id: &str,
        record: bool,
    ) -> Result<ReapStep, StateError> {
        let reply: Value = self
            .reap
            .key(self.index_key(n, instance_id))
            .key(self.reaped_key(n, instance_id))
            .key(self.watermark_key(n))
            .arg(self.users_base(n))
            .arg(REAPED_TTL_MS)
            .arg(REAP_CHUNK)
            .arg(if record { "1" } else { "0" })
            .invoke_async(&mut self.conn.clone())
            .await?;
        decode(reply, "reap")
    }
}

/// What one run of the reap script returns: the sockets removed (socket, user, its entry in
/// the user's hash, the user's `offline` version or 0) and the entries left.
type ReapStep = (Vec<(String, String, String, u64)>, u64);
