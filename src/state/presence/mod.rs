//! The socket registry and multi-device presence.
//!
//! A user is online while at least one of their sockets is registered anywhere in the
//! cluster. `register` and `unregister` decide the online/offline transitions atomically
//! (one Lua script each on Redis), so two devices leaving at once on two instances produce
//! exactly one `Offline`, and a reconnect racing a disconnect never leaves a connected user
//! marked offline (every connection has its own socket id; removing an old one cannot remove
//! a new one).
//!
//! Instances prove they are alive with `heartbeat`; `reap_dead_instances`, run periodically on
//! every instance (safely concurrently), removes the sockets of instances whose liveness
//! expired and reports the resulting offline transitions exactly once cluster-wide. An
//! "instance" here is an incarnation (`Node::incarnation`, new at every start), so a process
//! restarted under a pinned `--instance-id` never adopts the sockets of the one that crashed.
//!
//! **Versions.** Every transition carries a `version` from one cluster-wide counter, taken in
//! the same atomic step that decides the transition, so versions order a user's transitions
//! the way the store applied them (their `at_ms` cannot: two can share a millisecond, and they
//! reach watchers through different instances in either order). `query` returns a snapshot
//! version: every transition it reflects has a version at or below it, every later one a
//! version above. A transition's version is `max(last + 1, now_µs + 1)` and a snapshot's
//! `max(last, now_µs)`, where `last` is the last version handed out to the user's bucket of
//! users (on Redis one watermark key per bucket; in memory one counter for all). Taking the
//! clock as a floor keeps versions from going backwards when `last` is lost (a Redis restart
//! without persistence), lets a query take a snapshot without writing, and stays below 2^53
//! for JavaScript clients.

pub mod memory;
pub mod redis;
mod redis_batch;
mod redis_instances;
mod redis_replies;
mod redis_scripts;

use std::time::Duration;

use super::StateError;

/// One live connection, as the cluster knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketRecord {
    pub socket_id: String,
    pub user_id: String,
    pub device_id: String,
    /// `websocket` | `webtransport`.
    pub transport: String,
    pub instance_id: String,
    pub connected_at_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Online,
    Offline,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
        }
    }
}

/// A cluster-wide transition of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub user_id: String,
    /// The device whose connect or disconnect caused the transition.
    pub device_id: String,
    pub status: Status,
    pub at_ms: u64,
    /// Orders this user's transitions cluster-wide (see the module docs).
    pub version: u64,
    /// False when the step that decided the transition saw that no instance listened for this
    /// user's transitions (on one Redis: no subscriber to the user's watch topic). Published,
    /// it would reach nobody; a watcher that subscribes later reads a snapshot taken after the
    /// transition. True whenever the store cannot tell.
    pub watched: bool,
}

/// What `query` reports for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserPresence {
    pub user_id: String,
    pub online: bool,
    /// Distinct devices with at least one socket.
    pub devices: usize,
    pub sockets: usize,
    /// The snapshot's version: transitions at or below it are reflected here.
    pub version: u64,
}

/// What `register_capped` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// Registered; the user's `Online` transition if this was their first socket.
    Added(Option<Transition>),
    /// The user is at the cap: nothing was written.
    Full,
}

/// What the reaper removed for one dead instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reaped {
    pub instance_id: String,
    pub sockets: Vec<SocketRecord>,
    /// Users that went offline because of it (one entry per user).
    pub offline: Vec<Transition>,
}

#[async_trait::async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Registers a socket (registry entry, per-user and per-instance indexes) unless its user
    /// already has `max` other sockets registered in the cluster: then nothing is written and
    /// the answer is `Full`. The count and the write are one atomic step, so the cap is exact
    /// across instances. `Added` carries the `Online` transition when this is the user's first
    /// socket. Registering the same socket id twice is idempotent (`Added(None)` the second
    /// time, whatever the count).
    async fn register_capped(
        &self,
        socket: &SocketRecord,
        max: usize,
    ) -> Result<Registered, StateError>;

    /// `register_capped` without a cap.
    async fn register(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError> {
        Ok(match self.register_capped(socket, usize::MAX).await? {
            Registered::Added(online) => online,
            Registered::Full => None,
        })
    }

    /// Removes a socket (found by its id, user and instance). Returns the `Offline` transition
    /// when it was the user's last socket, with the device of `socket` (the record its session
    /// registered: the store does not read it back). Unregistering an unknown socket is a no-op
    /// returning `None`.
    async fn unregister(&self, socket: &SocketRecord) -> Result<Option<Transition>, StateError>;

    /// Whether a reaper removed `socket` (its instance was found dead) within the last hour.
    /// An instance back after an outage asks it of the sockets whose unregister failed: the
    /// reaper announced those users' transitions already.
    async fn reaped(&self, socket: &SocketRecord) -> Result<bool, StateError>;

    /// Presence of each user, in the order asked.
    async fn query(&self, user_ids: &[String]) -> Result<Vec<UserPresence>, StateError>;

    /// One socket of a user, if it is registered (records are kept with their user).
    async fn socket(
        &self,
        user_id: &str,
        socket_id: &str,
    ) -> Result<Option<SocketRecord>, StateError>;

    /// Every registered socket of a user (any instance).
    async fn sockets_of_user(&self, user_id: &str) -> Result<Vec<SocketRecord>, StateError>;

    /// The sockets an instance registered, as (socket id, user id), by socket id.
    async fn sockets_of_instance(
        &self,
        instance_id: &str,
    ) -> Result<Vec<(String, String)>, StateError>;

    /// Every live instance with how many sockets it has registered, by id.
    async fn instances(&self) -> Result<Vec<(String, usize)>, StateError>;

    /// Marks `instance_id` alive for `ttl` (also records it as a known instance). An instance
    /// must heartbeat before it registers sockets: to the reaper, a known instance without a
    /// live heartbeat is dead.
    async fn heartbeat(&self, instance_id: &str, ttl: Duration) -> Result<(), StateError>;

    /// Removes the registry entries and presence of every known instance whose liveness
    /// expired. Safe to run on every instance at once: each socket is reaped once, and each
    /// user goes offline once. A backend may reap a large instance in steps (Redis: 500
    /// sockets per step); two reapers of one such instance may then both report it, each with
    /// its own part of the sockets.
    async fn reap_dead_instances(&self) -> Result<Vec<Reaped>, StateError>;

    /// A graceful exit: forgets `instance_id` at once, alive or not (its liveness marker, its
    /// entry among the known instances), removing whatever sockets it still has registered
    /// as the reaper would. `None` when there was nothing to forget.
    async fn leave(&self, instance_id: &str) -> Result<Option<Reaped>, StateError>;
}

/// The version of a transition after `last`: see the module docs.
pub fn next_version(last: u64, now_us: u64) -> u64 {
    last.max(now_us) + 1
}

/// The version of a snapshot taken now, after `last`.
pub fn snapshot_version(last: u64, now_us: u64) -> u64 {
    last.max(now_us)
}

/// Microseconds since the Unix epoch, the floor of every version this process hands out.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}
