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
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::Notify, task::JoinHandle};

use super::{ConnectionClosed, ConnectionOpened, PresenceLog, Store, outbox::NewDelivery};

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

/// Writes one batch: all inserts first, so closes in the same batch find their rows.
async fn write(
    store: &dyn Store,
    batch: impl Iterator<Item = Record>,
) -> Result<(), super::StoreError> {
    let (mut opened, mut closed, mut presence, mut lost, mut webhooks) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in batch {
        match r {
            Record::Opened(o) => opened.push(o),
            Record::Closed(c) => closed.push(c),
            Record::Presence(p) => presence.push(p),
            Record::InstanceLost { instance, at_ms } => lost.push((instance, at_ms)),
            Record::Webhook(w) => webhooks.push(w),
        }
    }
    let ended = pair_ended(&mut opened, &mut closed);
    if !opened.is_empty() {
        store.insert_connections(&opened).await?;
    }
    if !ended.is_empty() {
        store.insert_ended_connections(&ended).await?;
    }
    if !presence.is_empty() {
        store.insert_presence(&presence).await?;
    }
    if !closed.is_empty() {
        store.close_connections(&closed).await?;
    }
    for (instance, at_ms) in lost {
        let n = store.close_instance(&instance, at_ms, "instance_lost").await?;
        tracing::info!(instance = %instance, rows = n, "closed the connection rows of a lost instance");
    }
    if !webhooks.is_empty() {
        store.outbox().enqueue(&webhooks).await?;
    }
    Ok(())
}

/// Takes out of a batch the connections it both opens and closes, each with its first close
/// (the first close wins, as in `close_connections`): they are written once, already closed.
/// What stays in `opened` and `closed` is written as before.
fn pair_ended(
    opened: &mut Vec<ConnectionOpened>,
    closed: &mut Vec<ConnectionClosed>,
) -> Vec<(ConnectionOpened, ConnectionClosed)> {
    if opened.is_empty() || closed.is_empty() {
        return Vec::new();
    }
    let mut first_close: HashMap<String, ConnectionClosed> = HashMap::new();
    for c in closed.iter() {
        first_close.entry(c.socket_id.clone()).or_insert_with(|| c.clone());
    }
    let mut ended = Vec::new();
    let mut paired = HashSet::new();
    opened.retain(|o| {
        if paired.contains(&o.socket_id) {
            // Opened twice in one batch: the pair already holds it.
            return false;
        }
        let Some(c) = first_close.remove(&o.socket_id) else { return true };
        paired.insert(o.socket_id.clone());
        ended.push((o.clone(), c));
        false
    });
    closed.retain(|c| !paired.contains(&c.socket_id));
    ended
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{store::testing::Fake, telemetry::metrics::names};

    fn opened(i: usize) -> Record {
        Record::Opened(ConnectionOpened {
            socket_id: format!("s{i}"),
            user_id: "u".into(),
            device_id: "d".into(),
            transport: "websocket".into(),
            ip_address: "127.0.0.1".into(),
            user_agent: None,
            server_instance: "i".into(),
            connected_at_ms: i as i64,
        })
    }

    fn cfg(capacity: usize) -> WriterConfig {
        WriterConfig { batch_size: 10, flush_interval: Duration::from_millis(20), capacity }
    }

    async fn settle(w: &Writer) {
        for _ in 0..500 {
            if w.queued() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("writer did not drain: {} queued", w.queued());
    }

    #[tokio::test(start_paused = true)]
    async fn writes_in_batches_and_in_order() {
        let store = Arc::new(Fake::default());
        let (w, _task) = Writer::spawn(store.clone(), cfg(1000));
        for i in 0..25 {
            w.record(opened(i));
        }
        w.record(Record::Closed(ConnectionClosed {
            socket_id: "s3".into(),
            disconnected_at_ms: 9,
            reason: "ping_timeout".into(),
        }));
        settle(&w).await;
        let expected: Vec<String> = (0..25).map(|i| format!("s{i}")).collect();
        assert_eq!(*store.opened.lock().unwrap(), expected);
        assert_eq!(
            *store.closed.lock().unwrap(),
            vec![("s3".to_owned(), "ping_timeout".to_owned())]
        );
        assert!(store.calls.load(Ordering::SeqCst) <= 3, "25 records in batches of 10");
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_opened_and_closed_in_one_batch_is_written_once() {
        let store = Arc::new(Fake::default());
        let (w, _task) = Writer::spawn(store.clone(), cfg(1000));
        let close = |id: &str, reason: &str| {
            Record::Closed(ConnectionClosed {
                socket_id: id.into(),
                disconnected_at_ms: 9,
                reason: reason.into(),
            })
        };
        w.record(opened(1));
        w.record(opened(2));
        w.record(close("s1", "client_disconnect"));
        w.record(close("s1", "ping_timeout"));
        w.record(close("s0", "ping_timeout"));
        settle(&w).await;
        assert_eq!(*store.ended.lock().unwrap(), vec!["s1".to_owned()]);
        assert_eq!(*store.opened.lock().unwrap(), vec!["s2".to_owned()]);
        // A close of a socket opened in an earlier batch is still an update.
        assert_eq!(
            *store.closed.lock().unwrap(),
            vec![("s0".to_owned(), "ping_timeout".to_owned())]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn keeps_records_through_an_outage_and_writes_them_after() {
        let store = Arc::new(Fake::default());
        store.down.store(true, Ordering::SeqCst);
        let (w, _task) = Writer::spawn(store.clone(), cfg(1000));
        for i in 0..50 {
            w.record(opened(i));
        }
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(w.queued(), 50);
        assert!(!w.healthy());
        store.down.store(false, Ordering::SeqCst);
        settle(&w).await;
        assert_eq!(store.opened.lock().unwrap().len(), 50);
        assert_eq!(w.dropped(), 0);
        assert!(w.healthy());
    }

    #[tokio::test(start_paused = true)]
    async fn past_capacity_the_oldest_are_dropped_and_counted() {
        let store = Arc::new(Fake::default());
        store.down.store(true, Ordering::SeqCst);
        let (w, _task) = Writer::spawn(store.clone(), cfg(20));
        let counted = || crate::telemetry::metrics::current(names::WRITER_DROPPED, &[]);
        let before = counted();
        for i in 0..30 {
            w.record(opened(i));
        }
        assert_eq!((w.queued(), w.dropped()), (20, 10));
        // The metric is process-wide (other tests may drop too): at least ours moved it.
        assert!(counted() >= before + 10.0);
        store.down.store(false, Ordering::SeqCst);
        settle(&w).await;
        let expected: Vec<String> = (10..30).map(|i| format!("s{i}")).collect();
        assert_eq!(*store.opened.lock().unwrap(), expected);
    }

    /// A finished batch pops every head entry up to its last sequence number, so the queue
    /// must hold them in sequence order whichever threads record at once; out of order, a
    /// record queued behind a later one was popped unwritten (an open row that never closed).
    #[tokio::test]
    async fn records_from_many_threads_queue_in_sequence_order() {
        let store = Arc::new(Fake::default());
        store.down.store(true, Ordering::SeqCst);
        let (w, _task) = Writer::spawn(store, cfg(1_000_000));
        std::thread::scope(|s| {
            for t in 0..4 {
                let w = w.clone();
                s.spawn(move || (0..20_000).for_each(|i| w.record(opened(t * 20_000 + i))));
            }
        });
        let q = w.inner.lock();
        assert_eq!(q.len(), 80_000);
        let behind = q.iter().zip(q.iter().skip(1)).filter(|(a, b)| a.0 >= b.0).count();
        assert_eq!(behind, 0, "{behind} records queued behind a later sequence number");
    }

    #[tokio::test(start_paused = true)]
    async fn a_drained_backlog_gives_its_buffer_back() {
        let store = Arc::new(Fake::default());
        store.down.store(true, Ordering::SeqCst);
        let (w, _task) = Writer::spawn(store.clone(), cfg(100_000));
        for i in 0..5_000 {
            w.record(opened(i));
        }
        assert!(w.inner.lock().capacity() >= 5_000);
        store.down.store(false, Ordering::SeqCst);
        settle(&w).await;
        assert_eq!(store.opened.lock().unwrap().len(), 5_000);
        let cap = w.inner.lock().capacity();
        assert!(cap <= 4 * 64, "the drained queue still holds {cap} slots");
    }

    #[test]
    fn steady_load_keeps_its_buffer() {
        let mut q: VecDeque<(u64, Record)> = VecDeque::with_capacity(200);
        q.extend((0..150).map(|i| (i as u64, opened(i))));
        let cap = q.capacity();
        release_backlog(&mut q, 100);
        assert_eq!(q.capacity(), cap, "a queue within a few batches must not reallocate");
    }

    #[tokio::test(start_paused = true)]
    async fn close_flushes_then_stops() {
        let store = Arc::new(Fake::default());
        let (w, task) = Writer::spawn(store.clone(), cfg(1000));
        for i in 0..5 {
            w.record(opened(i));
        }
        w.close();
        task.await.unwrap();
        assert_eq!(store.opened.lock().unwrap().len(), 5);
    }
}
