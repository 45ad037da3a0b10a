//! Channel history as a stream source: the feed fills a gap in a channel's publications from
//! its history, and learns from it when the history's epoch changed or it no longer reaches
//! back to the gap (then the channel's state is lost for its local subscribers, who are told
//! to resubscribe).

use std::sync::{Arc, OnceLock, Weak};

use super::{Channels, frames, name};
use crate::{
    config::Namespaces,
    state::history::{History, HistoryOptions, Range},
    stream::{self, Lost, Read, Source},
};

pub struct ChannelSource {
    history: Arc<dyn History>,
    namespaces: Namespaces,
    meta_ttl: std::time::Duration,
    /// The feature, for telling sessions about lost state; set once it exists (it owns the
    /// feed that owns this source).
    channels: OnceLock<Weak<Channels>>,
}

/// The channel feed of this instance.
pub type ChannelFeed = stream::Feed<ChannelSource>;

impl ChannelSource {
    pub fn new(
        history: Arc<dyn History>,
        namespaces: Namespaces,
        meta_ttl: std::time::Duration,
    ) -> Self {
        Self { history, namespaces, meta_ttl, channels: OnceLock::new() }
    }

    pub(super) fn bind(&self, channels: Weak<Channels>) {
        let _ = self.channels.set(channels);
    }

    pub fn history(&self) -> &Arc<dyn History> {
        &self.history
    }

    /// The history options of `channel`'s namespace; `None` when it keeps no history (or the
    /// namespace is unknown).
    pub fn options(&self, channel: &str) -> Option<HistoryOptions> {
        let parsed = name::parse(channel).ok()?;
        let ns = self.namespaces.get(parsed.namespace)?;
        ns.has_history().then(|| HistoryOptions {
            size: ns.history_size,
            ttl: ns.history_ttl,
            meta_ttl: self.meta_ttl,
            durable: ns.history_durable,
        })
    }
}

#[async_trait::async_trait]
impl Source for ChannelSource {
    async fn read_after(&self, channel: &str, after: u64, limit: u32) -> anyhow::Result<Read> {
        let opts = self
            .options(channel)
            .ok_or_else(|| anyhow::anyhow!("channel {channel} keeps no history"))?;
        let page = self.history.read(channel, Range::After(after), limit as usize, &opts).await?;
        let last = page.entries.last().map_or(after, |(o, _)| *o);
        let entries = page
            .entries
            .into_iter()
            .map(|(offset, f)| (offset, frames::publication_frame(channel, Some(offset), &f)))
            .collect();
        Ok(Read { epoch: page.top.epoch, entries, more: last < page.top.offset })
    }

    /// History is a window: what fell out of it is gone, and subscribers must learn that they
    /// missed it (resubscribe: `recovered: false`).
    fn hole_ends_state(&self) -> bool {
        true
    }

    async fn state_lost(&self, channel: Arc<str>, members: Vec<Lost>, emptied: bool) {
        if let Some(channels) = self.channels.get().and_then(Weak::upgrade) {
            channels.lost(&channel, members, emptied).await;
        }
    }
}
