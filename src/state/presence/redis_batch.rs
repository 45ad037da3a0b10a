//! Registrations and unregistrations of the Redis presence backend (`super::redis`) sent in
//! batches: one script call per bucket carries every connect and disconnect that arrived while
//! the bucket's previous call was out.
//!
//! Why: under connection churn a script call costs Redis far more than the commands inside it
//! (the call itself, the reply, the wakeup and the socket I/O around each one), and the server
//! as much again in its client. Group commit amortizes that without a timer: an operation that
//! finds its bucket idle goes out after one scheduler pass (no added latency when load is
//! light), and the ones that arrive while it is out wait for it and go together in the next
//! call, up to `MAX_BATCH`. Every operation is still its own decision in the script, in
//! arrival order, so the outcomes are those of one call per operation.
//!
//! An operation whose caller stopped waiting before its batch was sent (a handshake the client
//! abandoned, a timeout) is not sent at all; one already sent takes effect, as a single call
//! would have. A failed call fails every operation in it with the same error, so an outage
//! looks to each the way it looked to a call of its own.

use std::sync::{Arc, Mutex, MutexGuard};

use redis::{Script, Value};
use tokio::sync::oneshot;

use super::redis_replies::decode;
use super::redis_scripts::BATCH;
use crate::state::{StateError, redis_conn::RedisConn};

/// Operations in one script call at most: a few dozen keep the call well under a millisecond
/// of Redis' time, so a batch never stalls the shard for other clients.
const MAX_BATCH: usize = 64;

/// One registration or unregistration, with its keys (both of one bucket) and arguments.
pub(super) struct Op {
    pub kind: Kind,
    pub user_key: String,
    pub index_key: String,
    pub socket_id: String,
    pub user_id: String,
}

pub(super) enum Kind {
    /// The socket's entry (`super::redis::record_value`) and the per-user cap (0: none).
    Register {
        entry: String,
        cap: u64,
    },
    Unregister,
}

struct Pending {
    op: Op,
    reply: oneshot::Sender<Result<Value, StateError>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Pending>,
    /// A task is sending this bucket's batches; new operations join its next one.
    sending: bool,
}

/// The per-bucket queues and what sends them.
pub(super) struct Batches {
    /// Per bucket: its queue and its version watermark's key.
    queues: Box<[(Mutex<Queue>, String)]>,
    conn: RedisConn,
    script: Script,
    /// What a user's watch topic is named up to the user id; '' when the script does not
    /// count its subscribers.
    watch_topics: String,
}

impl Batches {
    /// `watermarks`: each bucket's version watermark key, in bucket order.
    pub(super) fn new(conn: RedisConn, watermarks: Vec<String>, watch_topics: String) -> Arc<Self> {
        Arc::new(Self {
            queues: watermarks.into_iter().map(|key| (Mutex::default(), key)).collect(),
            conn,
            script: Script::new(BATCH),
            watch_topics,
        })
    }

    /// Bucket `bucket`'s queue and watermark key.
    fn slot(&self, bucket: u32) -> &(Mutex<Queue>, String) {
        &self.queues[bucket as usize % self.queues.len()]
    }

    fn queue(&self, bucket: u32) -> MutexGuard<'_, Queue> {
        self.slot(bucket).0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op` on its bucket and waits for its reply (the script's reply for this one
    /// operation).
    pub(super) async fn submit(self: &Arc<Self>, bucket: u32, op: Op) -> Result<Value, StateError> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.queue(bucket);
            q.waiting.push(Pending { op, reply: tx });
            !std::mem::replace(&mut q.sending, true)
        };
        if start {
            // A task of its own, not the caller's future: a caller that stops waiting must not
            // strand the operations queued behind it.
            tokio::spawn(self.clone().send_all(bucket));
        }
        rx.await.map_err(|_| {
            StateError::Protocol("presence: the batch was dropped before it answered".into())
        })?
    }

    /// Sends the bucket's batches until its queue is empty.
    async fn send_all(self: Arc<Self>, bucket: u32) {
        loop {
            // One pass of the scheduler first: sessions already runnable (woken by a handshake
            // or a close) queue their operations before the batch is cut, so they share this
            // call rather than wait for the next. No timer: on an idle runtime this returns at
            // once. Under churn it took batches from ~14 operations to ~20 and Redis from 16.1
            // to 13.6 µs a cycle (BENCHMARKS.md, "One version watermark per bucket").
            tokio::task::yield_now().await;
            let batch: Vec<Pending> = {
                let mut q = self.queue(bucket);
                q.waiting.retain(|p| !p.reply.is_closed());
                if q.waiting.is_empty() {
                    q.sending = false;
                    return;
                }
                let n = q.waiting.len().min(MAX_BATCH);
                q.waiting.drain(..n).collect()
            };
            match self.send(bucket, &batch).await {
                Ok(replies) => {
                    for (p, reply) in batch.into_iter().zip(replies) {
                        let _ = p.reply.send(Ok(reply));
                    }
                }
                Err(e) => {
                    for p in batch {
                        let _ = p.reply.send(Err(e.clone()));
                    }
                }
            }
        }
    }

    /// One script call for `batch` of `bucket`: one reply per operation, in order.
    async fn send(&self, bucket: u32, batch: &[Pending]) -> Result<Vec<Value>, StateError> {
        let mut call = self.script.prepare_invoke();
        call.key(&self.slot(bucket).1).arg(&self.watch_topics);
        for Pending { op, .. } in batch {
            call.key(&op.user_key).key(&op.index_key);
            let (kind, entry, cap) = match &op.kind {
                Kind::Register { entry, cap } => ("r", entry.as_str(), *cap),
                Kind::Unregister => ("u", "", 0),
            };
            call.arg(kind).arg(&op.socket_id).arg(&op.user_id).arg(entry).arg(cap);
        }
        let reply: Value = call.invoke_async(&mut self.conn.clone()).await?;
        let replies: Vec<Value> = decode(reply, "presence batch")?;
        if replies.len() != batch.len() {
            return Err(StateError::Protocol(format!(
                "presence batch: {} replies for {} operations",
                replies.len(),
                batch.len()
            )));
        }
        Ok(replies)
    }
}
