//! Opening many connections at bounded concurrency, holding them (answering pings) and
//! closing them, shared by the scenarios.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    Common,
    client::{Conn, Target},
    frames::{self, Kind},
    progress::Progress,
    report::Latency,
};

pub struct Ctx {
    pub common: Common,
    pub target: Target,
}

impl Ctx {
    pub fn new(common: Common, target: Target) -> Self {
        Self { common, target }
    }

    /// A token for user `<prefix><n>`, valid for an hour.
    pub fn token(&self, n: usize) -> Result<String> {
        self.token_for(&format!("{}{n}", self.common.user_prefix))
    }

    /// A token for user `sub`, valid for an hour.
    pub fn token_for(&self, sub: &str) -> Result<String> {
        Ok(rtgate::auth::mint_dev_token(
            &self.common.jwt,
            sub,
            Duration::from_secs(3600),
            None,
            vec![],
        )?)
    }
}

/// What opening a batch of connections produced.
pub struct Opened<T> {
    pub items: Vec<T>,
    pub failures: u64,
    /// The first few failure messages, to report why.
    pub errors: Vec<String>,
    pub handshake: Latency,
    pub elapsed: Duration,
}

/// Opens `n` connections with the full handshake, `concurrency` at a time, turning each into a
/// `T` with `then` (e.g. spawning a task that holds it). Users are `first_user..first_user+n`.
/// Stops early at `deadline`.
pub async fn open_many<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    n: usize,
    first_user: usize,
    concurrency: usize,
    deadline: Instant,
    progress: &Progress,
    then: impl Fn(usize, Conn) -> T + Send + Sync + 'static,
) -> Opened<T> {
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new((Vec::with_capacity(n), Vec::new(), Latency::new())));
    let then = Arc::new(then);
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency.clamp(1, n.max(1)) {
        let (ctx, next, failures, shared, then, progress) = (
            ctx.clone(),
            next.clone(),
            failures.clone(),
            shared.clone(),
            then.clone(),
            progress.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut local = Latency::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                let res = match ctx.token(first_user + i) {
                    Ok(token) => ctx.target.connect(&token).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(conn) => {
                        local.record(t0.elapsed());
                        let item = then(i, conn);
                        lock(&shared).0.push(item);
                        progress.add(1);
                    }
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            lock(&shared).1.push(format!("{e:#}"));
                        }
                    }
                }
            }
            lock(&shared).2.merge(&local);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let elapsed = start.elapsed();
    let (items, errors, handshake) = std::mem::take(&mut *lock(&shared));
    Opened { items, failures: failures.load(Ordering::Relaxed), errors, handshake, elapsed }
}

pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Holds a connection open, answering pings, until `stop` turns true; then closes it.
/// Returns whether the server kept it open the whole time.
pub fn hold(mut conn: Conn, mut stop: watch::Receiver<bool>) -> JoinHandle<bool> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped(&mut stop) => {
                    conn.close().await;
                    return true;
                }
                frame = conn.rx.recv() => match frame {
                    Ok(Some(f)) if frames::kind(&f) == Kind::Ping => {
                        if conn.tx.send(frames::pong()).await.is_err() {
                            return false;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return false,
                },
            }
        }
    })
}

/// Closes every held connection and counts those the server had dropped.
pub async fn release(stop: &watch::Sender<bool>, held: Vec<JoinHandle<bool>>) -> u64 {
    let _ = stop.send(true);
    let mut dropped = 0;
    for h in held {
        if !matches!(h.await, Ok(true)) {
            dropped += 1;
        }
    }
    dropped
}

/// The server's user+system CPU time in seconds, from `/proc/PID/stat`.
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Resolves once `stop` turns true (or its sender is gone).
pub async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
