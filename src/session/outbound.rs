//! The outbound path: every frame a session sends goes through a queue bounded in bytes and
//! is written by one writer task per session. Senders never wait (a broadcast must not stall
//! on one slow client); a sender that would push the queue past its byte budget marks the
//! session as a slow consumer instead, and the session closes it.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::transport::FrameWriter;

/// How many queued frames the writer pushes before one flush; bounds latency of the first.
const MAX_BATCH: usize = 64;

enum Cmd {
    Frame(Bytes),
    Volatile(Bytes),
    Close { code: u16, reason: &'static str },
}

/// Why the outbound side gave up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dead {
    /// The byte budget overflowed: the client does not read fast enough.
    SlowConsumer,
    /// Writing failed: the peer is gone.
    WriteFailed(String),
}

struct State {
    queued: AtomicUsize,
    max: usize,
    /// Cancelled when the outbound side is dead; the session loop waits on it.
    dead: CancellationToken,
    why: Mutex<Option<Dead>>,
}

impl State {
    fn kill(&self, why: Dead) {
        if let Ok(mut slot) = self.why.lock() {
            slot.get_or_insert(why);
        }
        self.dead.cancel();
    }
}

/// A cloneable handle for queueing frames to one session.
#[derive(Clone)]
pub struct Outbound {
    tx: mpsc::UnboundedSender<Cmd>,
    state: Arc<State>,
}

impl Outbound {
    /// Starts the writer task for `writer` with a budget of `max_bytes` queued bytes.
    pub fn spawn<W: FrameWriter>(
        writer: W,
        max_bytes: usize,
    ) -> (Outbound, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(State {
            queued: AtomicUsize::new(0),
            max: max_bytes,
            dead: CancellationToken::new(),
            why: Mutex::new(None),
        });
        let task = tokio::spawn(write_loop(writer, rx, state.clone()));
        (Outbound { tx, state }, task)
    }

    /// Queues a frame. Returns false (and marks the session a slow consumer) when the queue
    /// is over budget, or false when the session is already closing.
    pub fn send(&self, frame: Bytes) -> bool {
        let len = frame.len();
        self.push(Cmd::Frame(frame), len, true)
    }

    /// Queues a frame that may be dropped. Over budget, it is dropped without penalty.
    pub fn send_volatile(&self, frame: Bytes) -> bool {
        let len = frame.len();
        self.push(Cmd::Volatile(frame), len, false)
    }

    fn push(&self, cmd: Cmd, len: usize, reliable: bool) -> bool {
        let before = self.state.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > self.state.max {
            self.state.queued.fetch_sub(len, Ordering::AcqRel);
            if reliable {
                self.state.kill(Dead::SlowConsumer);
            }
            return false;
        }
        if self.tx.send(cmd).is_err() {
            self.state.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues the last frame of a session regardless of the byte budget (a session closed as
    /// a slow consumer still gets its `disconnect` if it reads again), then the close.
    pub fn finish(&self, last: Option<Bytes>, code: u16, reason: &'static str) {
        if let Some(frame) = last {
            self.state.queued.fetch_add(frame.len(), Ordering::AcqRel);
            let _ = self.tx.send(Cmd::Frame(frame));
        }
        let _ = self.tx.send(Cmd::Close { code, reason });
    }

    /// Queues the transport close after everything already queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        let _ = self.tx.send(Cmd::Close { code, reason });
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.state.queued.load(Ordering::Acquire)
    }

    /// Resolves when the outbound side died; `why()` then says why.
    pub async fn dead(&self) {
        self.state.dead.cancelled().await
    }

    pub fn why(&self) -> Option<Dead> {
        self.state.why.lock().ok().and_then(|w| w.clone())
    }
}

async fn write_loop<W: FrameWriter>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    state: Arc<State>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        for cmd in batch.drain(..) {
            let (result, len) = match cmd {
                Cmd::Frame(f) => {
                    let len = f.len();
                    (writer.write_frame(f).await, len)
                }
                Cmd::Volatile(f) => {
                    let len = f.len();
                    (writer.write_volatile(f).await, len)
                }
                Cmd::Close { code, reason } => {
                    if let Err(e) = writer.flush().await {
                        tracing::debug!(error = %e, "flush before close failed");
                    }
                    writer.close(code, reason).await;
                    return;
                }
            };
            state.queued.fetch_sub(len, Ordering::AcqRel);
            if let Err(e) = result {
                state.kill(Dead::WriteFailed(e.0));
                return;
            }
        }
        if let Err(e) = writer.flush().await {
            state.kill(Dead::WriteFailed(e.0));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{Transport, channel};

    #[tokio::test]
    async fn writes_in_order_then_closes() {
        let (t, mut client) = channel::pair();
        let (_, _, writer) = t.split();
        let (out, task) = Outbound::spawn(writer, 1024);
        assert!(out.send(Bytes::from_static(b"a")));
        assert!(out.send_volatile(Bytes::from_static(b"b")));
        out.close(3000, "bye");
        task.await.unwrap();
        use channel::Written::*;
        assert_eq!(client.rx.recv().await, Some(Frame(Bytes::from_static(b"a"))));
        assert_eq!(client.rx.recv().await, Some(Volatile(Bytes::from_static(b"b"))));
        assert_eq!(client.rx.recv().await, Some(Closed(3000, "bye".into())));
    }

    /// A writer that never completes, like a peer that stopped reading.
    struct Stuck;
    impl FrameWriter for Stuck {
        async fn write_frame(&mut self, _: Bytes) -> Result<(), crate::transport::WriteError> {
            std::future::pending().await
        }
        async fn write_volatile(&mut self, _: Bytes) -> Result<(), crate::transport::WriteError> {
            std::future::pending().await
        }
        async fn flush(&mut self) -> Result<(), crate::transport::WriteError> {
            Ok(())
        }
        async fn close(self, _: u16, _: &str) {}
    }

    #[tokio::test]
    async fn over_budget_marks_slow_consumer_and_stays_bounded() {
        let (out, _task) = Outbound::spawn(Stuck, 100);
        let frame = Bytes::from(vec![b'x'; 30]);
        let mut accepted = 0;
        for _ in 0..1000 {
            if out.send(frame.clone()) {
                accepted += 1;
            }
        }
        assert!(accepted <= 4, "accepted {accepted}");
        assert!(out.queued_bytes() <= 100);
        out.dead().await;
        assert_eq!(out.why(), Some(Dead::SlowConsumer));
    }

    #[tokio::test]
    async fn volatile_over_budget_is_dropped_without_penalty() {
        let (out, _task) = Outbound::spawn(Stuck, 10);
        assert!(!out.send_volatile(Bytes::from(vec![0; 50])));
        assert_eq!(out.why(), None);
    }
}
