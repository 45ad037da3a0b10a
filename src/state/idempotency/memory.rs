//! In-memory idempotency keys (single node), each with its expiry; expired keys are pruned by
//! the cleanup job and whenever the map has grown.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::{Claim, Idempotency};
use crate::state::StateError;

/// `None` while the first call is still working.
type Entry = (Option<String>, Instant);

#[derive(Default)]
pub struct MemoryIdempotency {
    keys: Mutex<HashMap<String, Entry>>,
}

impl MemoryIdempotency {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets expired keys.
    pub fn prune(&self) {
        let now = Instant::now();
        self.lock().retain(|_, (_, until)| *until > now);
    }
}

#[async_trait::async_trait]
impl Idempotency for MemoryIdempotency {
    async fn claim(&self, key: &str, window: Duration) -> Result<Claim, StateError> {
        let now = Instant::now();
        let mut keys = self.lock();
        if let Some((result, until)) = keys.get(key)
            && *until > now
        {
            return Ok(result.clone().map_or(Claim::Pending, Claim::Done));
        }
        keys.insert(key.to_owned(), (None, now + window));
        Ok(Claim::Fresh)
    }

    async fn complete(&self, key: &str, result: &str, window: Duration) -> Result<(), StateError> {
        self.lock().insert(key.to_owned(), (Some(result.to_owned()), Instant::now() + window));
        Ok(())
    }

    async fn release(&self, key: &str) -> Result<(), StateError> {
        self.lock().remove(key);
        Ok(())
    }
}
