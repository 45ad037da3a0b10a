//! Channel history: each channel with history is a stream of entries at gapless offsets
//! (1, 2, 3, …) within an epoch, the last `size` of them kept for `ttl` after the last append.
//!
//! The offset is assigned where the history lives, in the same atomic step that stores the
//! entry (one Lua script on Redis, one lock in memory), so publishers on any instance never
//! share or skip an offset. The epoch is a short random string chosen when the channel's
//! position is first created; it changes only when that position is lost (it expired after
//! `meta_ttl` without an append, or Redis restarted empty), which is how a subscriber learns
//! that offsets it holds mean nothing any more. Reading a channel creates its position if it has
//! none, so a subscriber that read an empty channel and the first publication agree on the
//! epoch.
//!
//! Entries are opaque bytes (the channels feature stores each publication's JSON fields).
//!
//! Implementations: `memory` (one node), `redis` (shared), and, for namespaces that ask for
//! durable history, `store::channel_history` in the database; `routed` picks per channel.

pub mod memory;
pub mod redis;
pub mod routed;

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use super::StateError;

/// How a channel's history is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// Entries kept (the newest).
    pub size: usize,
    /// How long entries are kept after the last append.
    pub ttl: Duration,
    /// How long the position (offset and epoch) is kept after the last append; at least `ttl`.
    pub meta_ttl: Duration,
    /// Kept in the database rather than shared state (`routed`).
    pub durable: bool,
}

/// Where a channel's history stands: its last offset (0 before the first append) and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// A read: where the history stands, and the entries asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub top: Position,
    /// `(offset, entry)`, oldest first (newest first for a reverse read).
    pub entries: Vec<(u64, Bytes)>,
}

/// Which entries a read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// Those after this offset, oldest first.
    After(u64),
    /// The newest, newest first.
    Newest,
}

#[async_trait::async_trait]
pub trait History: Send + Sync + 'static {
    /// Appends `entry` to `channel`; returns its offset and the epoch.
    async fn append(
        &self,
        channel: &str,
        entry: Bytes,
        opts: &HistoryOptions,
    ) -> Result<Position, StateError>;

    /// Up to `limit` entries of `range` (none for `limit` 0), and where the history stands.
    async fn read(
        &self,
        channel: &str,
        range: Range,
        limit: usize,
        opts: &HistoryOptions,
    ) -> Result<HistoryPage, StateError>;

    /// Deletes the entries of `channel`; its offsets and epoch stay, so a subscriber that
    /// missed some learns they are gone.
    async fn remove(&self, channel: &str) -> Result<(), StateError>;
}

/// A fresh epoch: 8 random hex digits.
pub fn new_epoch() -> Arc<str> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    Arc::from(&id[..8])
}
