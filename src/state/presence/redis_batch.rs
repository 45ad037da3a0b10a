//! Registrations and unregistrations of the Redis presence backend (`super::redis`) sent in
//! batches: one script call per bucket carries every connect and disconnect that arrived while
//! the bucket's previous call was out.
//!
//! Why: under connection churn a script call costs Redis far more than the commands inside it
//! (the call itself, the reply, the wakeup and the socket I/O around each one), and the server
//! as much again in its client. Group commit amortizes that without a timer: an operation that
//! finds its bucket idle goes out at once (no added latency when load is light), and the ones
//! that arrive while it is out wait for it and go together in the next call, up to
//! `MAX_BATCH`. Every operation is still its own decision in the script, in arrival order, so
//! the outcomes are those of one call per operation.
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

/// One registration or unregistration, with its keys (all of one bucket) and arguments.
pub(super) struct Op {
    pub kind: Kind,
    pub user_key: String,
    pub version_key: String,
    pub index_key: String,
    pub socket_id: String,
    pub index_entry: String,
    pub watch_topic: String,
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
    queues: Box<[Mutex<Queue>]>,
    conn: RedisConn,
    script: Script,
    version_ttl_ms: u64,
}

impl Batches {
    pub(super) fn new(conn: RedisConn, buckets: u32, version_ttl_ms: u64) -> Arc<Self> {
        Arc::new(Self {
            queues: (0..buckets.max(1)).map(|_| Mutex::default()).collect(),
            conn,
            script: Script::new(BATCH),
            version_ttl_ms,
        })
    }

    fn queue(&self, bucket: u32) -> MutexGuard<'_, Queue> {
        let i = bucket as usize % self.queues.len();
        self.queues[i].lock().unwrap_or_else(|p| p.into_inner())
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
            match self.send(&batch).await {
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

    /// One script call for `batch`: one reply per operation, in order.
    async fn send(&self, batch: &[Pending]) -> Result<Vec<Value>, StateError> {
        let mut call = self.script.prepare_invoke();
        call.arg(self.version_ttl_ms);
        for Pending { op, .. } in batch {
            call.key(&op.user_key).key(&op.version_key).key(&op.index_key);
            let (kind, entry, cap) = match &op.kind {
                Kind::Register { entry, cap } => ("r", entry.as_str(), *cap),
                Kind::Unregister => ("u", "", 0),
            };
            call.arg(kind)
                .arg(&op.socket_id)
                .arg(entry)
                .arg(cap)
                .arg(&op.index_entry)
                .arg(&op.watch_topic);
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
