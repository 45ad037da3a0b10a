//! The outbound path: every frame a session sends goes through a queue bounded in bytes and
//! is written by one writer task per session. Senders never wait (a broadcast must not stall
//! on one slow client); a sender that would push the queue past its byte budget marks the
//! session as a slow consumer instead, and the session closes it.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use tokio::sync::Notify;
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
    /// Something outside the session ended it (the server API's disconnect, a revoked
    /// token): the session closes with this code.
    Kicked(crate::protocol::Code, String),
}

/// The queue itself. A `VecDeque` behind a mutex rather than an mpsc channel: a channel
/// preallocates a block of slots per connection (1.8 KB here), an empty `VecDeque` nothing,
/// and with one consumer and rare contention the lock costs no more than the channel.
#[derive(Default)]
struct Queue {
    cmds: VecDeque<Cmd>,
    /// Every `Outbound` handle is gone: the writer drains what is queued and stops.
    senders_gone: bool,
    /// The writer stopped: nothing queued from now on would ever be written.
    writer_gone: bool,
}

struct State {
    queue: Mutex<Queue>,
    /// Wakes the writer. `notify_one` stores a permit when the writer is not waiting yet,
    /// so a frame queued between its last look and its wait is not missed.
    ready: Notify,
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

    fn queue(&self) -> MutexGuard<'_, Queue> {
        // The lock is never held across a call that can panic; recover the data if it was.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `cmd` unless the writer is gone.
    fn push(&self, cmd: Cmd) -> bool {
        {
            let mut q = self.queue();
            if q.writer_gone {
                return false;
            }
            q.cmds.push_back(cmd);
        }
        self.ready.notify_one();
        true
    }
}

/// Lives as long as any `Outbound` clone; dropping the last one lets the writer finish.
struct Handle {
    state: Arc<State>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.state.queue().senders_gone = true;
        self.state.ready.notify_one();
    }
}

/// A cloneable handle for queueing frames to one session.
#[derive(Clone)]
pub struct Outbound {
    handle: Arc<Handle>,
}

impl Outbound {
    /// Starts the writer task for `writer` with a budget of `max_bytes` queued bytes.
    /// `dead()` also resolves when `stop` is cancelled (the server's shutdown), so the session
    /// loop waits on one future for both.
    pub fn spawn<W: FrameWriter>(
        writer: W,
        max_bytes: usize,
        stop: &CancellationToken,
    ) -> (Outbound, tokio::task::JoinHandle<()>) {
        let state = Arc::new(State {
            queue: Mutex::new(Queue::default()),
            ready: Notify::new(),
            queued: AtomicUsize::new(0),
            max: max_bytes,
            dead: stop.child_token(),
            why: Mutex::new(None),
        });
        let task = tokio::spawn(write_loop(writer, state.clone()));
        (Outbound { handle: Arc::new(Handle { state }) }, task)
    }

    fn state(&self) -> &State {
        &self.handle.state
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
        let state = self.state();
        let before = state.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > state.max {
            state.queued.fetch_sub(len, Ordering::AcqRel);
            if reliable {
                state.kill(Dead::SlowConsumer);
            }
            return false;
        }
        if !state.push(cmd) {
            state.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Queues the last frame of a session regardless of the byte budget (a session closed as
    /// a slow consumer still gets its `disconnect` if it reads again), then the close.
    pub fn finish(&self, last: Option<Bytes>, code: u16, reason: &'static str) {
        let state = self.state();
        if let Some(frame) = last {
            let len = frame.len();
            state.queued.fetch_add(len, Ordering::AcqRel);
            if !state.push(Cmd::Frame(frame)) {
                state.queued.fetch_sub(len, Ordering::AcqRel);
            }
        }
        state.push(Cmd::Close { code, reason });
    }

    /// Ends the session from outside it: its loop stops and says goodbye with `code`. The
    /// first reason to end a session wins.
    pub fn kick(&self, code: crate::protocol::Code, message: String) {
        self.state().kill(Dead::Kicked(code, message));
    }

    /// Queues the transport close after everything already queued.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.state().push(Cmd::Close { code, reason });
    }

    /// Bytes waiting to be written.
    pub fn queued_bytes(&self) -> usize {
        self.state().queued.load(Ordering::Acquire)
    }

    /// Resolves when the outbound side died (`why()` then says why) or `stop` was cancelled.
    pub async fn dead(&self) {
        self.state().dead.cancelled().await
    }

    pub fn why(&self) -> Option<Dead> {
        self.state().why.lock().ok().and_then(|w| w.clone())
    }
}

/// What the writer found in the queue.
enum Next {
    Cmd(Cmd),
    /// Nothing queued; wait for the next frame.
    Empty,
    /// Nothing queued and never will be.
    Finished,
}

fn next(state: &State) -> Next {
    let mut q = state.queue();
    match q.cmds.pop_front() {
        Some(cmd) => Next::Cmd(cmd),
        None if q.senders_gone => Next::Finished,
        None => {
            // A drained queue gives its memory back: an idle connection holds no slots (one
            // allocation per burst costs less than keeping them for every idle connection).
            if q.cmds.capacity() > 0 {
                q.cmds = VecDeque::new();
            }
            Next::Empty
        }
    }
}

/// Marks the writer gone on every exit path, so later sends fail instead of queueing into
/// nothing, and releases what was still queued.
struct WriterGone<'a>(&'a State);

impl Drop for WriterGone<'_> {
    fn drop(&mut self) {
        let dropped = {
            let mut q = self.0.queue();
            q.writer_gone = true;
            std::mem::take(&mut q.cmds)
        };
        let bytes: usize = dropped
            .iter()
            .map(|c| match c {
                Cmd::Frame(f) | Cmd::Volatile(f) => f.len(),
                Cmd::Close { .. } => 0,
            })
            .sum();
        self.0.queued.fetch_sub(bytes, Ordering::AcqRel);
    }
}

async fn write_loop<W: FrameWriter>(mut writer: W, state: Arc<State>) {
    let _gone = WriterGone(&state);
    let mut unflushed = 0;
    loop {
        let cmd = match next(&state) {
            Next::Cmd(cmd) => cmd,
            Next::Empty | Next::Finished if unflushed > 0 => {
                unflushed = 0;
                if let Err(e) = writer.flush().await {
                    state.kill(Dead::WriteFailed(e.0));
                    return;
                }
                continue;
            }
            Next::Empty => {
                tokio::select! {
                    _ = state.ready.notified() => {}
                    // The transport's own frames (a pong) go out with a flush.
                    _ = writer.wants_flush() => unflushed = 1,
                }
                continue;
            }
            Next::Finished => return,
        };
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
                // Boxed: the close future (a timer, a drain) would otherwise size every
                // session's writer task for its whole life.
                Box::pin(writer.close(code, reason)).await;
                return;
            }
        };
        state.queued.fetch_sub(len, Ordering::AcqRel);
        if let Err(e) = result {
            state.kill(Dead::WriteFailed(e.0));
            return;
        }
        unflushed += 1;
        if unflushed == MAX_BATCH {
            unflushed = 0;
            if let Err(e) = writer.flush().await {
                state.kill(Dead::WriteFailed(e.0));
                return;
            }
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
        let (out, task) = Outbound::spawn(writer, 1024, &CancellationToken::new());
        assert!(out.send(Bytes::from_static(b"a")));
        assert!(out.send_volatile(Bytes::from_static(b"b")));
        out.close(3000, "bye");
        task.await.unwrap();
        use channel::Written::*;
        assert_eq!(client.rx.recv().await, Some(Frame(Bytes::from_static(b"a"))));
        assert_eq!(client.rx.recv().await, Some(Volatile(Bytes::from_static(b"b"))));
        assert_eq!(client.rx.recv().await, Some(Closed(3000, "bye".into())));
    }

    #[tokio::test]
    async fn dropping_every_handle_ends_the_writer_after_what_was_queued() {
        let (t, mut client) = channel::pair();
        let (_, _, writer) = t.split();
        let (out, task) = Outbound::spawn(writer, 1024, &CancellationToken::new());
        let clone = out.clone();
        assert!(out.send(Bytes::from_static(b"a")));
        drop(out);
        assert!(clone.send(Bytes::from_static(b"b")));
        drop(clone);
        task.await.unwrap();
        use channel::Written::*;
        assert_eq!(client.rx.recv().await, Some(Frame(Bytes::from_static(b"a"))));
        assert_eq!(client.rx.recv().await, Some(Frame(Bytes::from_static(b"b"))));
    }

    #[tokio::test]
    async fn sends_after_the_writer_stopped_are_refused_and_not_counted() {
        let (t, _client) = channel::pair();
        let (_, _, writer) = t.split();
        let (out, task) = Outbound::spawn(writer, 1024, &CancellationToken::new());
        out.close(1000, "bye");
        task.await.unwrap();
        assert!(!out.send(Bytes::from_static(b"late")));
        out.finish(Some(Bytes::from_static(b"last")), 1000, "bye");
        assert_eq!(out.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn stop_resolves_dead_without_a_reason() {
        let stop = CancellationToken::new();
        let (out, _task) = Outbound::spawn(Stuck, 10, &stop);
        stop.cancel();
        out.dead().await;
        assert_eq!(out.why(), None);
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
        let (out, _task) = Outbound::spawn(Stuck, 100, &CancellationToken::new());
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
        let (out, _task) = Outbound::spawn(Stuck, 10, &CancellationToken::new());
        assert!(!out.send_volatile(Bytes::from(vec![0; 50])));
        assert_eq!(out.why(), None);
    }
}
