//! Each channel's history where its namespace keeps it: in shared state (memory or Redis), or
//! in the database when the namespace sets `history_durable` (`store::channel_history`). The
//! feed, the handlers and the server API see one `History` and never ask which.

use std::sync::Arc;

use bytes::Bytes;

use super::{History, HistoryOptions, HistoryPage, Position, Range};
use crate::state::StateError;

pub struct Routed {
    shared: Arc<dyn History>,
    durable: Arc<dyn History>,
}

impl Routed {
    pub fn new(shared: Arc<dyn History>, durable: Arc<dyn History>) -> Self {
        Self { shared, durable }
    }

    fn of(&self, opts: &HistoryOptions) -> &dyn History {
        if opts.durable { self.durable.as_ref() } else { self.shared.as_ref() }
    }
}

#[async_trait::async_trait]
impl History for Routed {
    async fn append(
        &self,
        channel: &str,
        entry: Bytes,
        opts: &HistoryOptions,
    ) -> Result<Position, StateError> {
        self.of(opts).append(channel, entry, opts).await
    }

    async fn read(
        &self,
        channel: &str,
        range: Range,
        limit: usize,
        opts: &HistoryOptions,
    ) -> Result<HistoryPage, StateError> {
        self.of(opts).read(channel, range, limit, opts).await
    }

    /// Removal names no options: both are asked (the one that never held the channel has
    /// nothing to delete).
    async fn remove(&self, channel: &str) -> Result<(), StateError> {
        let (shared, durable) =
            tokio::join!(self.shared.remove(channel), self.durable.remove(channel));
        shared.and(durable)
    }
}
