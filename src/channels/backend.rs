//! What the application's backend may do with a channel outside any subscription (the server
//! API): read its presence and history, remove its history. Clients reach the same data
//! through `requests`, within a subscription; both read the same backends.

use std::sync::Arc;

use serde_json::value::RawValue;

use super::{Channels, frames};
use crate::{
    cluster::bounded,
    state::{
        StateError,
        channel_presence::Stats,
        history::{HistoryPage, Range},
    },
};

/// A history read for the backend.
pub struct HistoryRead {
    pub publications: Box<RawValue>,
    pub offset: u64,
    pub epoch: Arc<str>,
}

impl Channels {
    /// The channel's presence list (at most `--max-presence-list` clients), as a JSON array.
    pub async fn presence_list(&self, channel: &str) -> Result<Box<RawValue>, StateError> {
        let list = bounded(self.presence.list(channel, self.max_presence_list)).await?;
        Ok(frames::array(&list))
    }

    pub async fn presence_stats(&self, channel: &str) -> Result<Stats, StateError> {
        bounded(self.presence.stats(channel)).await
    }

    /// Up to `limit` publications after `since` (oldest first), or the newest with `reverse`
    /// (newest first). `None` when the channel's namespace keeps no history. A `since` from
    /// another epoch reads nothing but the top.
    pub async fn history_read(
        &self,
        channel: &str,
        since: Option<(u64, &str)>,
        limit: usize,
        reverse: bool,
    ) -> Result<Option<HistoryRead>, StateError> {
        let source = self.feed.source();
        let Some(opts) = source.options(channel) else { return Ok(None) };
        let range = match (since, reverse) {
            (_, true) => Range::Newest,
            (Some((offset, _)), false) => Range::After(offset),
            (None, false) => Range::After(0),
        };
        let HistoryPage { top, entries } =
            bounded(source.history().read(channel, range, limit, &opts)).await?;
        let other_epoch = since.is_some_and(|(_, epoch)| epoch != &*top.epoch);
        let entries = if other_epoch { Vec::new() } else { entries };
        Ok(Some(HistoryRead {
            publications: frames::publications(channel, &entries),
            offset: top.offset,
            epoch: top.epoch,
        }))
    }

    /// Removes the channel's publications. Its offset and epoch stay, so a subscriber that
    /// missed some learns they are gone and the next publication continues the offsets.
    /// `false` when the namespace keeps no history.
    pub async fn history_remove(&self, channel: &str) -> Result<bool, StateError> {
        let source = self.feed.source();
        if source.options(channel).is_none() {
            return Ok(false);
        }
        bounded(source.history().remove(channel)).await?;
        Ok(true)
    }
}
