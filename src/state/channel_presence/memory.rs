//! In-memory channel presence (single node), with the Redis backend's expiry rules: expired
//! entries are dropped when read and by `prune` (the cleanup job).

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{ChannelPresence, Stats};
use crate::state::StateError;

#[derive(Debug, Default)]
pub struct MemoryChannelPresence {
    channels: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

#[derive(Debug)]
struct Entry {
    user_id: String,
    info: Bytes,
    until: Instant,
}

type Channels = HashMap<String, HashMap<String, Entry>>;

impl MemoryChannelPresence {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Channels> {
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops expired entries everywhere.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut channels = self.lock();
        for entries in channels.values_mut() {
            entries.retain(|_, e| e.until > now);
        }
        channels.retain(|_, entries| !entries.is_empty());
    }
}

/// The live entries of `channel`.
fn live<'a>(channels: &'a mut Channels, channel: &str) -> Option<&'a HashMap<String, Entry>> {
    let now = Instant::now();
    let entries = channels.get_mut(channel)?;
    entries.retain(|_, e| e.until > now);
    if entries.is_empty() {
        channels.remove(channel);
        return None;
    }
    channels.get(channel)
}

#[async_trait::async_trait]
impl ChannelPresence for MemoryChannelPresence {
    async fn add(
        &self,
        channel: &str,
        client_id: &str,
        user_id: &str,
        info: Bytes,
        ttl: Duration,
    ) -> Result<(), StateError> {
        let entry = Entry { user_id: user_id.to_owned(), info, until: Instant::now() + ttl };
        self.lock().entry(channel.to_owned()).or_default().insert(client_id.to_owned(), entry);
        Ok(())
    }

    async fn remove(&self, channel: &str, client_id: &str) -> Result<(), StateError> {
        let mut channels = self.lock();
        if let Some(entries) = channels.get_mut(channel) {
            entries.remove(client_id);
            if entries.is_empty() {
                channels.remove(channel);
            }
        }
        Ok(())
    }

    async fn list(&self, channel: &str, limit: usize) -> Result<Vec<Bytes>, StateError> {
        let mut channels = self.lock();
        let Some(entries) = live(&mut channels, channel) else { return Ok(Vec::new()) };
        Ok(entries.values().take(limit).map(|e| e.info.clone()).collect())
    }

    async fn stats(&self, channel: &str) -> Result<Stats, StateError> {
        let mut channels = self.lock();
        let Some(entries) = live(&mut channels, channel) else { return Ok(Stats::default()) };
        let users: HashSet<&str> = entries.values().map(|e| e.user_id.as_str()).collect();
        Ok(Stats { clients: entries.len(), users: users.len() })
    }

    async fn refresh(&self, entries: &[(String, String)], ttl: Duration) -> Result<(), StateError> {
        let until = Instant::now() + ttl;
        let mut channels = self.lock();
        for (channel, client_id) in entries {
            if let Some(e) = channels.get_mut(channel).and_then(|c| c.get_mut(client_id)) {
                e.until = until;
            }
        }
        Ok(())
    }
}
