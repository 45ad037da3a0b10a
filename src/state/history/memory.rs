//! In-memory channel history (single node): every channel's position and newest entries
//! behind one mutex, with the same expiry rules as the Redis backend, checked on access and
//! by `prune` (the cleanup job).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Mutex, MutexGuard},
    time::Instant,
};

use bytes::Bytes;

use super::{History, HistoryOptions, HistoryPage, Position, Range, new_epoch};
use crate::state::StateError;

#[derive(Debug, Default)]
pub struct MemoryHistory {
    channels: Mutex<HashMap<String, Channel>>,
}

#[derive(Debug)]
struct Channel {
    position: Position,
    entries: VecDeque<(u64, Bytes)>,
    /// When the entries expire (`ttl` after the last append).
    entries_until: Instant,
    /// When the position expires (`meta_ttl` after the last append or its creation).
    position_until: Instant,
}

impl MemoryHistory {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Channel>> {
        // Every update leaves the maps consistent before anything can panic.
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets expired positions and entries.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut channels = self.lock();
        channels.retain(|_, c| c.position_until > now);
        for c in channels.values_mut() {
            if c.entries_until <= now {
                c.entries = VecDeque::new();
            }
        }
    }
}

/// The live channel `name`, created (with a new epoch) when it has no live position.
fn channel<'a>(
    channels: &'a mut HashMap<String, Channel>,
    name: &str,
    opts: &HistoryOptions,
    now: Instant,
) -> &'a mut Channel {
    if channels.get(name).is_some_and(|c| c.position_until <= now) {
        channels.remove(name);
    }
    let c = channels.entry(name.to_owned()).or_insert_with(|| Channel {
        position: Position { offset: 0, epoch: new_epoch() },
        entries: VecDeque::new(),
        entries_until: now,
        position_until: now + opts.meta_ttl.max(opts.ttl),
    });
    if c.entries_until <= now {
        c.entries.clear();
    }
    c
}

#[async_trait::async_trait]
impl History for MemoryHistory {
    async fn append(
        &self,
        name: &str,
        entry: Bytes,
        opts: &HistoryOptions,
    ) -> Result<Position, StateError> {
        let now = Instant::now();
        let mut channels = self.lock();
        let c = channel(&mut channels, name, opts, now);
        c.position.offset += 1;
        c.entries.push_back((c.position.offset, entry));
        while c.entries.len() > opts.size {
            c.entries.pop_front();
        }
        c.entries_until = now + opts.ttl;
        c.position_until = now + opts.meta_ttl.max(opts.ttl);
        Ok(c.position.clone())
    }

    async fn read(
        &self,
        name: &str,
        range: Range,
        limit: usize,
        opts: &HistoryOptions,
    ) -> Result<HistoryPage, StateError> {
        let mut channels = self.lock();
        let c = channel(&mut channels, name, opts, Instant::now());
        let entries = match range {
            Range::After(after) => {
                c.entries.iter().filter(|(o, _)| *o > after).take(limit).cloned().collect()
            }
            Range::Newest => c.entries.iter().rev().take(limit).cloned().collect(),
        };
        Ok(HistoryPage { top: c.position.clone(), entries })
    }

    async fn remove(&self, name: &str) -> Result<(), StateError> {
        if let Some(c) = self.lock().get_mut(name) {
            c.entries.clear();
        }
        Ok(())
    }
}
