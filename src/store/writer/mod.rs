//! The batched background writer: sessions hand it records and never wait for the database.
//!
//! Records queue in memory, in order, and are written in batches (one multi-row statement per
//! kind) when `batch_size` are waiting or `flush_interval` has passed. When the database fails,
//! the batch stays at the head of the queue and is retried with exponential backoff (100 ms up
//! to 5 s); writes are idempotent (inserts ignore existing socket ids, closes only touch open
//! rows), so a retried batch never duplicates anything. The queue holds at most `capacity`
//! records: past it the **oldest** are dropped, counted (`dropped()`), and logged — a long
//! outage loses history, never memory. On shutdown the writer flushes what it can within a
//! deadline.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};

use super::{ConnectionClosed, ConnectionOpened, PresenceLog, Store, outbox::NewDelivery};

mod batch;
use batch::write;

/// One thing to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Opened(ConnectionOpened),
    Closed(ConnectionClosed),
    Presence(PresenceLog),
    /// Every still-open row of a crashed instance is closed with `instance_lost`.
    InstanceLost {
        instance: String,
        at_ms: i64,
    },
    /// A webhook for one endpoint, into the outbox in the same batch as the record it follows.
    Webhook(NewDelivery),
}

#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub capacity: usize,
}

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

struct Inner {
    /// (sequence number, record): the sequence tells a finished batch which head entries are
    /// its own even if overflow dropped some of them while it was being written.
    queue: Mutex<VecDeque<(u64, Record)>>,
    next_seq: AtomicU64,
    capacity: usize,
    dropped: AtomicU64,
    wake: Notify,
    closing: AtomicBool,
    /// Whether the last write attempt succeeded, for health reporting.
    healthy: AtomicBool,
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, VecDeque<(u64, Record)>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A cheap handle to the writer task.
#[derive(Clone)]
pub struct Writer {
    inner: Arc<Inner>,
}

impl Writer {
    pub fn spawn(store: Arc<dyn Store>, cfg: WriterConfig) -> (Writer, JoinHandle<()>) {
        let inner = Arc::new(Inner {
            queue: Mutex::new(VecDeque::new()),
            next_seq: AtomicU64::new(0),
            capacity: cfg.capacity.max(1),
            dropped: AtomicU64::new(0),
            wake: Notify::new(),
            closing: AtomicBool::new(false),
            healthy: AtomicBool::new(true),
        });
        let task = tokio::spawn(run(store, cfg, inner.clone()));
        (Writer { inner }, task)
    }

    /// Queues a record. Never blocks and never fails; past capacity the oldest record goes.
    pub fn record(&self, record: Record) {
        let dropped = {
            let mut q = self.inner.lock();
            // Numbered under the lock: the queue must stay in sequence order, since a finished
            // batch pops every head entry up to its last number.
            let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
            q.push_back((seq, record));
            let over = q.len().saturating_sub(self.inner.capacity);
            q.drain(..over);
            over
        };
        if dropped > 0 {
            let total =
                self.inner.dropped.fetch_add(dropped as u64, Ordering::Relaxed) + dropped as u64;
            crate::telemetry::metrics::writer_dropped(dropped as u64);
            // One warning per thousand drops keeps a long outage from flooding the log.
            if total == dropped as u64 || total % 1000 < dropped as u64 {
                tracing::warn!(
                    dropped_total = total,
                    "database writer buffer full; dropping the oldest records"
                );
            }
        }
        self.inner.wake.notify_one();
    }

    /// Records waiting to be written.
    pub fn queued(&self) -> usize {
        self.inner.lock().len()
    }

    /// Records dropped because the buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Whether the last write attempt succeeded.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.load(Ordering::Relaxed)
    }

    /// Asks the task to flush everything and stop.
    pub fn close(&self) {
        self.inner.closing.store(true, Ordering::Release);
        self.inner.wake.notify_one();
    }
}

async fn run(store: Arc<dyn Store>, cfg: WriterConfig, inner: Arc<Inner>) {
    let mut migrated = false;
    let mut backoff = MIN_BACKOFF;
    loop {
        let closing = inner.closing.load(Ordering::Acquire);
        if inner.lock().is_empty() {
            if closing {
                return;
            }
            inner.wake.notified().await;
            continue;
        }
        // Give a batch a moment to fill unless it is already full or we are closing.
        if !closing && inner.lock().len() < cfg.batch_size {
            tokio::select! {
                _ = tokio::time::sleep(cfg.flush_interval) => {}
                _ = wait_for(&inner, cfg.batch_size) => {}
            }
        }
        let result = async {
            if !migrated {
                store.migrate().await?;
                migrated = true;
            }
            let batch: Vec<(u64, Record)> =
                inner.lock().iter().take(cfg.batch_size).cloned().collect();
            let last = batch.last().map(|(seq, _)| *seq);
            write(store.as_ref(), batch.into_iter().map(|(_, r)| r)).await?;
            Ok::<_, super::StoreError>(last)
        }
        .await;
        match result {
            Ok(last) => {
                if let Some(last) = last {
                    let mut q = inner.lock();
                    while q.front().is_some_and(|(seq, _)| *seq <= last) {
                        q.pop_front();
                    }
                    release_backlog(&mut q, cfg.batch_size);
                }
                if !inner.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("database writes resumed");
                }
                backoff = MIN_BACKOFF;
            }
            Err(e) => {
                if inner.healthy.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "database write failed; keeping records and retrying");
                }
                // Shutting down against a dead database keeps retrying too: the deadline in
                // `Server::run` bounds how long the process waits for this task.
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// After a backlog (a database outage, a burst) has drained, gives its buffer back. A
/// `VecDeque` keeps its largest capacity forever: an outage that queued 100k records would
/// otherwise hold their slots (about 200 bytes each) for the life of the process. Shrinks only
/// when far larger than a batch needs, so steady load never reallocates.
fn release_backlog(q: &mut VecDeque<(u64, Record)>, batch_size: usize) {
    let keep = batch_size.saturating_mul(2).max(64);
    if q.capacity() > keep.saturating_mul(4) && q.len() <= keep {
        q.shrink_to(keep);
    }
}

async fn wait_for(inner: &Inner, n: usize) {
    while inner.lock().len() < n {
        inner.wake.notified().await;
    }
}

#[cfg(test)]
mod tests;
