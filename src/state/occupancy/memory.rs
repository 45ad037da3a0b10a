//! In-memory occupancy (single node): channel → instance → subscribers.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Mutex,
};

use super::{Change, Occupancy, Page, glob};
use crate::state::StateError;

#[derive(Default)]
pub struct MemoryOccupancy {
    channels: Mutex<BTreeMap<String, HashMap<String, i64>>>,
}

impl MemoryOccupancy {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, HashMap<String, i64>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl Occupancy for MemoryOccupancy {
    async fn add(&self, channel: &str, instance: &str, delta: i64) -> Result<Change, StateError> {
        let mut channels = self.lock();
        let before = channels.contains_key(channel);
        let counts = channels.entry(channel.to_owned()).or_default();
        let n = counts.entry(instance.to_owned()).or_default();
        *n += delta;
        if *n <= 0 {
            counts.remove(instance);
        }
        let after = !counts.is_empty();
        if !after {
            channels.remove(channel);
        }
        Ok(match (before, after) {
            (false, true) => Change::Occupied,
            (true, false) => Change::Vacated,
            _ => Change::Unchanged,
        })
    }

    async fn list(
        &self,
        pattern: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<Page, StateError> {
        let channels = self.lock();
        let after = cursor.unwrap_or("");
        let mut page: Vec<(String, u64)> = channels
            .range::<str, _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded))
            .filter(|(name, _)| glob(pattern, name))
            .take(limit.max(1) + 1)
            .map(|(name, counts)| (name.clone(), counts.values().map(|n| *n as u64).sum()))
            .collect();
        let next = (page.len() > limit.max(1)).then(|| {
            page.pop();
            page.last().map(|(n, _)| n.clone()).unwrap_or_default()
        });
        Ok(Page { channels: page, next })
    }

    async fn forget_instance(&self, instance: &str) -> Result<Vec<String>, StateError> {
        let mut channels = self.lock();
        let mut vacated = Vec::new();
        channels.retain(|name, counts| {
            let had = counts.remove(instance).is_some();
            if had && counts.is_empty() {
                vacated.push(name.clone());
            }
            !counts.is_empty()
        });
        Ok(vacated)
    }
}
