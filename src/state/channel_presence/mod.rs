//! Channel presence: which connections are subscribed to a channel whose namespace keeps
//! presence, each with its client info (a JSON object: `clientId`, `userId`, `deviceId`,
//! `data`?).
//!
//! Entries expire: each is added with a TTL and the instance holding the connection refreshes
//! its entries well within it (`refresh`, batched). A connection that ends removes its entries;
//! one whose instance crashed simply stops being refreshed and disappears within the TTL, with
//! no reaper and no per-instance index.

pub mod memory;
pub mod redis;

use std::time::Duration;

use bytes::Bytes;

use super::StateError;

/// What `stats` reports for one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Connections present.
    pub clients: usize,
    /// Distinct users among them.
    pub users: usize,
}

#[async_trait::async_trait]
pub trait ChannelPresence: Send + Sync + 'static {
    /// Adds (or replaces) `client_id` of `user_id` in `channel`, alive for `ttl`.
    async fn add(
        &self,
        channel: &str,
        client_id: &str,
        user_id: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), StateError>;

    /// Removes `client_id` from `channel`; a no-op when it is not there.
    async fn remove(&self, channel: &str, client_id: &str) -> Result<(), StateError>;

    /// The client infos present in `channel`, at most `limit`.
    async fn list(&self, channel: &str, limit: usize) -> Result<Vec<Bytes>, StateError>;

    async fn stats(&self, channel: &str) -> Result<Stats, StateError>;

    /// Keeps every `(channel, client_id)` alive for another `ttl`; entries that expired or
    /// were removed meanwhile are not brought back.
    async fn refresh(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), StateError>;
}
