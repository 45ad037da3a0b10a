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
    assert_eq!(*store.closed.lock().unwrap(), vec![("s3".to_owned(), "ping_timeout".to_owned())]);
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
    assert_eq!(*store.closed.lock().unwrap(), vec![("s0".to_owned(), "ping_timeout".to_owned())]);
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
