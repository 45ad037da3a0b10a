//! In-memory presence backend (single node): the socket registry, per-user and per-instance
//! indexes and instance liveness, all behind one mutex.
//!
//! It mirrors the Redis backend operation for operation — each method body is what one Lua
//! script does there, done under the lock — so the shared suite can hold both to the same
//! contract. One lock instead of finer ones: every operation touches several maps at once, and
//! holding them all is what makes a transition decision atomic.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    PresenceStore, Reaped, Registered, SocketRecord, Status, Transition, UserPresence,
    next_version, now_us, snapshot_version,
};
use crate::state::{StateError, now_ms};

/// Presence kept in this process.
#[derive(Debug, Default)]
pub struct MemoryPresence {
    inner: Mutex<Maps>,
}

/// How long a reaped socket stays known as reaped (Redis: the version TTL).
const REAPED_FOR: Duration = Duration::from_secs(60 * 60);

#[derive(Debug, Default)]
struct Maps {
    /// socket id → record.
    sockets: HashMap<String, SocketRecord>,
    /// user → (socket id → device). A user is present here exactly while online.
    users: HashMap<String, HashMap<String, String>>,
    /// instance → its socket ids. Every known instance has an entry, possibly empty (like the
    /// Redis `instances` set, a known instance stays known until reaped).
    instances: HashMap<String, HashSet<String>>,
    /// instance → end of its liveness. Missing or past means dead.
    alive_until: HashMap<String, Instant>,
    /// socket id → when a reaper removed it; kept for `REAPED_FOR`, like Redis' reaped sets.
    reaped: HashMap<String, Instant>,
    /// The last transition's version. One counter for every user: versions only have to
    /// order each user's transitions, and a single node has no reason to keep one per user.
    version: u64,
}

impl MemoryPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn maps(&self) -> MutexGuard<'_, Maps> {
        // Nothing under this lock can panic short of allocation failure, so poisoning cannot
        // hide a half-done update; keep serving rather than failing every later call.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Maps {
    /// A transition of `socket`'s user, with the next version.
    fn transition(&mut self, socket: &SocketRecord, status: Status) -> Transition {
        self.version = next_version(self.version, now_us());
        Transition {
            user_id: socket.user_id.clone(),
            device_id: socket.device_id.clone(),
            status,
            at_ms: now_ms(),
            version: self.version,
            // The memory broker's topics are this process's; delivery checks them itself.
            watched: true,
        }
    }

    /// `None` when the user already has `max` other sockets; else whether this socket is the
    /// user's first.
    fn register(&mut self, socket: &SocketRecord, max: usize) -> Option<bool> {
        let devices = self.users.entry(socket.user_id.clone()).or_default();
        if devices.len() >= max && !devices.contains_key(&socket.socket_id) {
            if devices.is_empty() {
                self.users.remove(&socket.user_id);
            }
            return None;
        }
        let new = devices.insert(socket.socket_id.clone(), socket.device_id.clone()).is_none();
        let first = new && devices.len() == 1;
        self.sockets.insert(socket.socket_id.clone(), socket.clone());
        self.instances
            .entry(socket.instance_id.clone())
            .or_default()
            .insert(socket.socket_id.clone());
        Some(first)
    }

    /// Removes `socket_id` from `user_id`'s sockets; true when that left the user with none.
    fn remove_from_user(&mut self, user_id: &str, socket_id: &str) -> Option<bool> {
        let devices = self.users.get_mut(user_id)?;
        devices.remove(socket_id)?;
        let last = devices.is_empty();
        if last {
            self.users.remove(user_id);
        }
        Some(last)
    }

    /// Whether the removed socket was its user's last; `None` when the socket was not
    /// registered to that user.
    fn unregister(&mut self, socket: &SocketRecord) -> Option<bool> {
        if let Some(ids) = self.instances.get_mut(&socket.instance_id) {
            ids.remove(&socket.socket_id);
        }
        let last = self.remove_from_user(&socket.user_id, &socket.socket_id)?;
        self.sockets.remove(&socket.socket_id)?;
        Some(last)
    }

    fn is_dead(&self, instance_id: &str, now: Instant) -> bool {
        self.alive_until.get(instance_id).is_none_or(|until| *until <= now)
    }

    /// `note`: record the removed sockets as reaped (not when the instance leaves).
    fn reap(&mut self, instance_id: &str, note: bool) -> Reaped {
        let ids = self.instances.remove(instance_id).unwrap_or_default();
        self.alive_until.remove(instance_id);
        let now = Instant::now();
        self.reaped.retain(|_, at| now.duration_since(*at) < REAPED_FOR);
        let mut sockets = Vec::new();
        let mut offline = Vec::new();
        for id in ids {
            let Some(record) = self.sockets.remove(&id) else {
                continue;
            };
            if self.remove_from_user(&record.user_id, &id) == Some(true) {
                offline.push(self.transition(&record, Status::Offline));
            }
            if note {
                self.reaped.insert(id, now);
            }
            sockets.push(record);
        }
        sockets.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
        Reaped { instance_id: instance_id.to_owned(), sockets, offline }
    }
}

#[async_trait::async_trait]
impl PresenceStore for MemoryPresence {
    async fn register_capped(
        &self,
        socket: &SocketRecord,
        max: usize,
    ) -> Result<Registered, StateError> {
        let mut maps = self.maps();
        Ok(match maps.register(socket, max) {
            Some(first) => {
                Registered::Added(first.then(|| maps.transition(socket, Status::Online)))
            }
            None => Registered::Full,
        })
    }

    async fn unregister(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        let mut maps = self.maps();
        Ok(match maps.unregister(socket) {
            Some(true) => Some(maps.transition(socket, Status::Offline)),
            _ => None,
        })
    }

    async fn reaped(&self, socket: &SocketRecord) -> Result<bool, StateError> {
        let maps = self.maps();
        Ok(maps.reaped.get(&socket.socket_id).is_some_and(|at| at.elapsed() < REAPED_FOR))
    }

    async fn query(&self, user_ids: &[String]) -> Result<Vec<UserPresence>, StateError> {
        let maps = self.maps();
        let version = snapshot_version(maps.version, now_us());
        Ok(user_ids
            .iter()
            .map(|user_id| {
                let devices = maps.users.get(user_id);
                let sockets = devices.map_or(0, HashMap::len);
                let distinct: HashSet<&String> =
                    devices.into_iter().flat_map(|d| d.values()).collect();
                UserPresence {
                    user_id: user_id.clone(),
                    online: sockets > 0,
                    devices: distinct.len(),
                    sockets,
                    version,
                }
            })
            .collect())
    }

    async fn socket(
        &self,
        user_id: &str,
        socket_id: &str,
    ) -> Result<Option<SocketRecord>, StateError> {
        Ok(self.maps().sockets.get(socket_id).filter(|r| r.user_id == user_id).cloned())
    }

    async fn sockets_of_user(&self, user_id: &str) -> Result<Vec<SocketRecord>, StateError> {
        let maps = self.maps();
        let mut records: Vec<SocketRecord> = maps
            .users
            .get(user_id)
            .into_iter()
            .flat_map(|devices| devices.keys())
            .filter_map(|id| maps.sockets.get(id).cloned())
            .collect();
        records.sort_by(|a, b| a.socket_id.cmp(&b.socket_id));
        Ok(records)
    }

    async fn sockets_of_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<(String, String)>, StateError> {
        let maps = self.maps();
        let mut ids: Vec<(String, String)> = maps
            .instances
            .get(instance_id)
            .into_iter()
            .flatten()
            .filter_map(|id| maps.sockets.get(id).map(|r| (id.clone(), r.user_id.clone())))
            .collect();
        ids.sort();
        Ok(ids)
    }

    async fn instances(&self) -> Result<Vec<(String, usize)>, StateError> {
        let maps = self.maps();
        let now = Instant::now();
        let mut live: Vec<(String, usize)> = maps
            .instances
            .iter()
            .filter(|(id, _)| !maps.is_dead(id, now))
            .map(|(id, socks)| (id.clone(), socks.len()))
            .collect();
        live.sort();
        Ok(live)
    }

    async fn heartbeat(&self, instance_id: &str, ttl: Duration) -> Result<(), StateError> {
        let mut maps = self.maps();
        maps.alive_until.insert(instance_id.to_owned(), Instant::now() + ttl);
        maps.instances.entry(instance_id.to_owned()).or_default();
        Ok(())
    }

    async fn reap_dead_instances(&self) -> Result<Vec<Reaped>, StateError> {
        let mut maps = self.maps();
        let now = Instant::now();
        let mut dead: Vec<String> =
            maps.instances.keys().filter(|id| maps.is_dead(id, now)).cloned().collect();
        dead.sort();
        Ok(dead.iter().map(|id| maps.reap(id, true)).collect())
    }

    async fn leave(&self, instance_id: &str) -> Result<Option<Reaped>, StateError> {
        let mut maps = self.maps();
        if !maps.instances.contains_key(instance_id) && !maps.alive_until.contains_key(instance_id)
        {
            return Ok(None);
        }
        Ok(Some(maps.reap(instance_id, false)))
    }
}
