//! The hub: the sessions connected to this instance. Later capabilities (rooms, fanout,
//! presence) hang off it; today it answers "who is connected here" for health, shutdown and
//! tests.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use crate::{session::outbound::Outbound, transport::TransportKind};

/// What the hub keeps per session.
#[derive(Clone)]
pub struct SessionEntry {
    pub user_id: Arc<str>,
    pub device_id: Arc<str>,
    pub transport: TransportKind,
    pub outbound: Outbound,
}

#[derive(Default)]
pub struct Hub {
    // A plain mutex: every critical section is a map insert/remove/lookup, never an await.
    sessions: Mutex<HashMap<Arc<str>, SessionEntry>>,
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, SessionEntry>> {
        // A panic while holding this lock cannot leave the map half-updated (single calls),
        // so a poisoned lock is still safe to use.
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, socket_id: Arc<str>, entry: SessionEntry) {
        self.lock().insert(socket_id, entry);
    }

    pub fn remove(&self, socket_id: &str) {
        self.lock().remove(socket_id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sessions per transport, for health and metrics.
    pub fn count_by_transport(&self) -> HashMap<TransportKind, usize> {
        let mut counts = HashMap::new();
        for entry in self.lock().values() {
            *counts.entry(entry.transport).or_default() += 1;
        }
        counts
    }
}
