//! The hub: the sessions connected to this instance, by user, and the users whose presence
//! they watch. It answers "which local sessions should get this frame" for
//! the fanout layer, and it never does I/O: every operation is a short critical section
//! under one mutex, and delivering is queueing onto non-blocking `Outbound`s.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;

use crate::{session::outbound::Outbound, transport::TransportKind};

/// What the hub keeps per session.
#[derive(Clone)]
pub struct SessionEntry {
    pub user_id: Arc<str>,
    pub device_id: Arc<str>,
    pub transport: TransportKind,
    pub connected_at_ms: u64,
    pub outbound: Outbound,
    /// The session's current token, for revocations.
    pub token: crate::session::SessionToken,
    /// The session itself, for what the backend does on a user's behalf (server-side
    /// subscriptions). Weak: the session owns its context, the hub only finds it.
    pub ctx: std::sync::Weak<crate::session::SessionCtx>,
}

struct Session {
    entry: SessionEntry,
    watching: HashSet<Arc<str>>,
}

/// One user's sessions (or one user's watchers), each with its
/// outbound queue: a broadcast walks this map alone, with no second lookup per recipient
/// (a lookup per socket id held the 10k-receiver fanout at 0.79 of the raw baseline:
/// BENCHMARKS.md, fanout A/B).
type Members = HashMap<Arc<str>, Outbound>;

#[derive(Default)]
struct Inner {
    sessions: HashMap<Arc<str>, Session>,
    /// user → local sessions of that user.
    users: HashMap<Arc<str>, Members>,
    /// user → local sessions watching that user's presence.
    watchers: HashMap<Arc<str>, Watchers>,
}

/// The local watchers of one user, and the version of the last presence update delivered to
/// them: an update at or below it is older than what they were told, and is dropped.
#[derive(Default)]
struct Watchers {
    members: Members,
    delivered: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("session is not registered")]
    UnknownSession,
    #[error("at most {0} allowed per connection")]
    Limit(usize),
}

#[derive(Default)]
pub struct Hub {
    // A plain mutex: every critical section is a few map operations, never an await.
    inner: Mutex<Inner>,
}

/// Removes `socket_id` from `user`'s watchers, forgetting the user when none is left; true
/// then (the instance can stop listening for the user's transitions).
fn unwatch_one(map: &mut HashMap<Arc<str>, Watchers>, user: &str, socket_id: &str) -> bool {
    let Some(watchers) = map.get_mut(user) else {
        return false;
    };
    watchers.members.remove(socket_id);
    if watchers.members.is_empty() {
        map.remove(user);
        return true;
    }
    false
}

/// Removes `member` from `map[key]`, forgetting the key when none is left.
fn remove_member(map: &mut HashMap<Arc<str>, Members>, key: &str, member: &str) {
    let Some(set) = map.get_mut(key) else {
        return;
    };
    set.remove(member);
    if set.is_empty() {
        map.remove(key);
    }
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Each critical section leaves the maps consistent before it can panic, so a
        // poisoned lock is still safe to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, socket_id: Arc<str>, entry: SessionEntry) {
        let mut inner = self.lock();
        inner
            .users
            .entry(entry.user_id.clone())
            .or_default()
            .insert(socket_id.clone(), entry.outbound.clone());
        inner.sessions.insert(socket_id, Session { entry, watching: HashSet::new() });
    }

    /// Removes a session from everything. Returns the users it was the last local watcher of.
    pub fn remove(&self, socket_id: &str) -> Vec<Arc<str>> {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.remove(socket_id) else {
            return Vec::new();
        };
        remove_member(&mut inner.users, &session.entry.user_id, socket_id);
        session
            .watching
            .into_iter()
            .filter(|user| unwatch_one(&mut inner.watchers, user, socket_id))
            .collect()
    }

    /// Ends the local sessions `select` picks, with `code`: those of `user` when given, else
    /// every session. Returns how many. The sessions say goodbye themselves (`Outbound::kick`).
    pub fn kick(
        &self,
        user: Option<&str>,
        select: impl Fn(&str, &SessionEntry) -> bool,
        code: crate::protocol::Code,
        message: &str,
    ) -> usize {
        let picked: Vec<Outbound> = {
            let inner = self.lock();
            let pick = |(id, s): (&Arc<str>, &Session)| {
                select(id, &s.entry).then(|| s.entry.outbound.clone())
            };
            match user {
                Some(user) => inner
                    .users
                    .get(user)
                    .into_iter()
                    .flat_map(|m| m.keys())
                    .filter_map(|id| inner.sessions.get_key_value(id))
                    .filter_map(pick)
                    .collect(),
                None => inner.sessions.iter().filter_map(pick).collect(),
            }
        };
        for outbound in &picked {
            outbound.kick(code, message.to_owned());
        }
        picked.len()
    }

    /// The live local sessions of `user`.
    pub fn contexts_of(&self, user: &str) -> Vec<Arc<crate::session::SessionCtx>> {
        let inner = self.lock();
        let Some(members) = inner.users.get(user) else { return Vec::new() };
        members
            .keys()
            .filter_map(|id| inner.sessions.get(id))
            .filter_map(|s| s.entry.ctx.upgrade())
            .collect()
    }

    /// The local sessions of `user`, by socket id.
    pub fn sockets_of(&self, user: &str) -> Vec<Arc<str>> {
        self.lock().users.get(user).map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// Adds `users` to what `socket_id` watches, refusing the whole request past `max`.
    pub fn watch(&self, socket_id: &str, users: &[String], max: usize) -> Result<(), HubError> {
        let mut inner = self.lock();
        let session = inner.sessions.get_mut(socket_id).ok_or(HubError::UnknownSession)?;
        let new: Vec<&String> =
            users.iter().filter(|u| !session.watching.contains(u.as_str())).collect();
        if session.watching.len() + new.len() > max {
            return Err(HubError::Limit(max));
        }
        let new: Vec<Arc<str>> = new.into_iter().map(|u| Arc::from(u.as_str())).collect();
        session.watching.extend(new.iter().cloned());
        let outbound = session.entry.outbound.clone();
        for user in new {
            inner
                .watchers
                .entry(user)
                .or_default()
                .members
                .insert(socket_id.into(), outbound.clone());
        }
        Ok(())
    }

    /// Removes `users` from what `socket_id` watches. Returns those it was the last local
    /// watcher of.
    pub fn unwatch<'u>(&self, socket_id: &str, users: &'u [String]) -> Vec<&'u str> {
        let mut inner = self.lock();
        let Some(session) = inner.sessions.get_mut(socket_id) else {
            return Vec::new();
        };
        let removed: Vec<&String> =
            users.iter().filter(|u| session.watching.remove(u.as_str())).collect();
        removed
            .into_iter()
            .filter(|user| unwatch_one(&mut inner.watchers, user, socket_id))
            .map(String::as_str)
            .collect()
    }

    /// Whether a local session watches `user`.
    pub fn is_watched(&self, user: &str) -> bool {
        self.lock().watchers.contains_key(user)
    }

    /// Every user a local session watches.
    pub fn watched_users(&self) -> Vec<Arc<str>> {
        self.lock().watchers.keys().cloned().collect()
    }

    /// Queues `frame` to every local session of `user`.
    pub fn deliver_user(&self, user: &str, frame: &Bytes) -> usize {
        let inner = self.lock();
        let Some(sockets) = inner.users.get(user) else {
            return 0;
        };
        Self::deliver(sockets.values(), frame)
    }

    pub fn deliver_socket(&self, socket_id: &str, frame: &Bytes) -> usize {
        let inner = self.lock();
        Self::deliver(inner.sessions.get(socket_id).map(|s| &s.entry.outbound), frame)
    }

    /// Queues `frame`, the presence update of `user` with `version`, to every local session
    /// watching `user`, unless an update with a higher version was delivered already.
    pub fn deliver_watchers(&self, user: &str, version: u64, frame: &Bytes) -> usize {
        let mut inner = self.lock();
        let Some(watchers) = inner.watchers.get_mut(user) else {
            return 0;
        };
        if version <= watchers.delivered {
            return 0;
        }
        watchers.delivered = version;
        Self::deliver(watchers.members.values(), frame)
    }

    fn deliver<'a>(recipients: impl IntoIterator<Item = &'a Outbound>, frame: &Bytes) -> usize {
        // `Bytes::clone` shares one buffer: the frame was encoded once for all recipients.
        recipients.into_iter().filter(|o| o.send(frame.clone())).count()
    }

    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions of `user` on this instance.
    pub fn count_user(&self, user: &str) -> usize {
        self.lock().users.get(user).map_or(0, HashMap::len)
    }

    pub fn contains(&self, socket_id: &str) -> bool {
        self.lock().sessions.contains_key(socket_id)
    }

    /// Snapshot of every local session, for resynchronizing shared state after an outage.
    pub fn sessions(&self) -> Vec<(Arc<str>, SessionEntry)> {
        self.lock().sessions.iter().map(|(id, s)| (id.clone(), s.entry.clone())).collect()
    }

    /// Bytes queued to every local session and to the fullest one, sampled for metrics (one
    /// pass under the lock per scrape, rather than a shared counter touched per frame).
    pub fn outbound_bytes(&self) -> (usize, usize) {
        self.lock()
            .sessions
            .values()
            .map(|s| s.entry.outbound.queued_bytes())
            .fold((0, 0), |(sum, max), q| (sum + q, max.max(q)))
    }

    /// Sessions per transport, for health and metrics.
    pub fn count_by_transport(&self) -> HashMap<TransportKind, usize> {
        let mut counts = HashMap::new();
        for s in self.lock().sessions.values() {
            *counts.entry(s.entry.transport).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests;
