//! The head-of-line measurement of `lossy`: independent sequential request flows on one
//! session, first multiplexed on its one bidirectional stream, then on a stream each.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::BytesMut;
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use super::{Session, Tally, close, sequential};
use crate::{
    client::{Rx, STEP_TIMEOUT, Tx},
    frames::{self, Kind},
    pool,
};

/// `flows` independent sequential request flows on the session's one stream: a writer shared
/// under a lock, one reader handing each ack to the flow waiting for its id.
pub(super) async fn shared_stream_flows(
    s: Session,
    payload: &str,
    flows: usize,
    per_flow: usize,
    timeout: Duration,
) -> Tally {
    type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<bool>>>>;
    let Session { conn, tx, mut rx } = s;
    let tx = Arc::new(AsyncMutex::new(tx));
    let waiting: Waiting = Arc::new(Mutex::new(HashMap::new()));
    let reader = {
        let (tx, waiting) = (tx.clone(), waiting.clone());
        tokio::spawn(async move {
            while let Ok(Some(f)) = rx.recv().await {
                let kind = frames::kind(&f);
                if kind == Kind::Ping {
                    let _ = tx.lock().await.send(frames::pong()).await;
                    continue;
                }
                if !matches!(kind, Kind::Ack | Kind::Error) {
                    continue;
                }
                let id = serde_json::from_slice::<serde_json::Value>(&f)
                    .ok()
                    .and_then(|v| v["id"].as_u64());
                if let Some(done) = id.and_then(|id| pool::lock(&waiting).remove(&id)) {
                    let _ = done.send(kind == Kind::Ack);
                }
            }
        })
    };
    let deadline = Instant::now() + timeout;
    let tasks: Vec<_> = (0..flows as u64)
        .map(|f| {
            let (tx, waiting, payload) = (tx.clone(), waiting.clone(), payload.to_owned());
            tokio::spawn(async move {
                let mut t = Tally::default();
                for i in 0..per_flow as u64 {
                    // Ids say which flow a request belongs to: flow f uses f·10⁶ + 1, + 2, …
                    let id = f * 1_000_000 + i + 1;
                    let (done, answered) = oneshot::channel();
                    pool::lock(&waiting).insert(id, done);
                    let t0 = Instant::now();
                    if tx.lock().await.send(&frames::echo(id, &payload)).await.is_err() {
                        t.unanswered += per_flow as u64 - i;
                        break;
                    }
                    match tokio::time::timeout_at(deadline.into(), answered).await {
                        Ok(Ok(true)) => t.lat.record(t0.elapsed()),
                        Ok(Ok(false)) => t.errors += 1,
                        _ => {
                            t.unanswered += per_flow as u64 - i;
                            break;
                        }
                    }
                }
                t
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            total.merge(&t);
        }
    }
    reader.abort();
    let mut tx = tx.lock().await;
    close(&conn, &mut tx).await;
    total
}

/// The same flows, each on a bidirectional stream of its own on one session. The session's
/// first stream (which carried `connect`) stays open and idle.
pub(super) async fn stream_per_flow(
    s: Session,
    payload: &str,
    flows: usize,
    per_flow: usize,
    timeout: Duration,
) -> Result<Tally> {
    let deadline = Instant::now() + timeout;
    let mut streams = Vec::with_capacity(flows);
    for _ in 0..flows {
        let (send, recv) = tokio::time::timeout(STEP_TIMEOUT, async {
            s.conn
                .open_bi()
                .await
                .context("opening a flow's stream")?
                .await
                .context("opening a flow's stream")
        })
        .await
        .context("opening a flow's stream timed out")??;
        streams.push((Tx::Wt(send), Rx::Wt { recv, buf: BytesMut::with_capacity(256) }));
    }
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|(mut tx, mut rx)| {
            let payload = payload.to_owned();
            tokio::spawn(async move {
                sequential(&mut tx, &mut rx, &payload, per_flow, 0, deadline).await
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        if let Ok(t) = task.await {
            total.merge(&t);
        }
    }
    let Session { conn, mut tx, .. } = s;
    close(&conn, &mut tx).await;
    Ok(total)
}
