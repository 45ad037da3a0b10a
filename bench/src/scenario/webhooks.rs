//! `webhooks`: how fast lifecycle events reach the application's backend. The load generator
//! runs the receiver: an HTTP/1.1 server on `--receiver` answering every POST `200` (the
//! server under test runs with `--webhook-urls http://<receiver>/hooks` and a
//! `--webhook-secret`). Then `--concurrency` workers open and close `--sessions` sessions
//! (full handshake, then `disconnect`), each a user of its own (`<--user-prefix>wh<run>-<n>`,
//! so events of other runs against the same server are told apart), as fast as the server
//! takes them: four events each (`session.connected`, `user.online`, `session.disconnected`,
//! `user.offline`), stored in the outbox and POSTed by the server's delivery workers.
//! Waits up to `--drain` after the last session closed for all of them.
//!
//! Reports the distinct events received (deduplicated by their `id`: delivery is at least
//! once), events per second from the first received to the last, the same from the first
//! session opened, and each event's lag from its `createdAt` to its receipt.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use crate::{
    http,
    pool::{self, Ctx},
    progress::Progress,
    report::{Latency, Report, per_sec},
};

#[derive(clap::Args)]
pub struct Args {
    /// Sessions opened and closed, each by a user of its own (four events per session).
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Sessions opening or closing at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Where the receiver listens; the server's `--webhook-urls` must point at it (any path).
    #[arg(long, default_value = "127.0.0.1:3962")]
    receiver: SocketAddr,
    /// How long to wait for the events after the last session closed.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    drain: Duration,
}

/// What the receiver saw.
#[derive(Default)]
struct Received {
    /// First receipts of this run's first and last event.
    first: Option<Instant>,
    last: Option<Instant>,
    /// Every POST, duplicates included.
    posts: u64,
    /// Distinct event ids of this run's users.
    ids: HashSet<String>,
    by_type: BTreeMap<String, u64>,
    /// Events of users not of this run, or bodies that are not events.
    foreign: u64,
    unsigned: u64,
    /// `createdAt` → receipt, first receipt of each event.
    lag: Latency,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let received = Arc::new(Mutex::new(Received::default()));
    // Users of this run only: `<prefix>wh<run>-<n>`.
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros());
    let prefix: Arc<str> = format!("{}wh{run_id:x}-", ctx.common.user_prefix).into();
    let seen = received.clone();
    let users = prefix.clone();
    let receiver = http::serve(a.receiver, move |req| {
        let status = receive(&req, &seen, &users);
        async move { http::status(status) }
    })
    .await
    .context("starting the webhook receiver")?;

    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let progress = Progress::start("sessions", Some(a.sessions as u64));
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new((0u64, Vec::<String>::new())));
    let start = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..a.concurrency.clamp(1, a.sessions.max(1)) {
        let (ctx, next, done, errors, progress, prefix) = (
            ctx.clone(),
            next.clone(),
            done.clone(),
            errors.clone(),
            progress.clone(),
            prefix.clone(),
        );
        let n = a.sessions;
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let res = match ctx.token_for(&format!("{prefix}{i}")) {
                    Ok(token) => ctx.target.connect(&token).await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(conn) => {
                        conn.close().await;
                        done.fetch_add(1, Ordering::Relaxed);
                        progress.add(1);
                    }
                    Err(e) => {
                        let mut errs = pool::lock(&errors);
                        errs.0 += 1;
                        if errs.1.len() < 5 {
                            errs.1.push(format!("{e:#}"));
                        }
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    progress.finish();
    let churn = start.elapsed();
    let sessions = done.load(Ordering::Relaxed);
    let expected = 4 * sessions;
    let progress = Progress::start("events", Some(expected));
    let drain_end = Instant::now() + a.drain;
    loop {
        let n = pool::lock(&received).ids.len() as u64;
        progress.count.store(n, Ordering::Relaxed);
        if n >= expected || Instant::now() >= drain_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    progress.finish();
    drop(receiver);
    let got = std::mem::take(&mut *pool::lock(&received));
    let events = got.ids.len() as u64;
    let (first, last) = (got.first.unwrap_or(start), got.last.unwrap_or(start));
    let spread = last.saturating_duration_since(first);
    let end_to_end = last.saturating_duration_since(start);
    let mut r = Report::new("webhooks", &ctx.common.target, ctx.common.transport);
    r.set("sessions", sessions)
        .set("concurrency", a.concurrency as u64)
        .set("churn_secs", secs(churn))
        .set("sessions_per_s", per_sec(sessions, churn))
        .set("expected_events", expected)
        .set("events", events)
        .set("missing", expected.saturating_sub(events))
        .set("posts", got.posts)
        .set("duplicates", got.posts.saturating_sub(events + got.foreign))
        .set("foreign", got.foreign)
        .set("unsigned", got.unsigned)
        .set("by_type", serde_json::to_value(&got.by_type)?)
        .set("first_to_last_secs", secs(spread))
        .set("events_per_s", per_sec(events, spread))
        .set("end_to_end_secs", secs(end_to_end))
        .set("end_to_end_events_per_s", per_sec(events, end_to_end))
        .latency("lag", &got.lag);
    cpu.finish(&mut r);
    let (failures, first_errors) = std::mem::take(&mut *pool::lock(&errors));
    super::failures(&mut r, failures, &first_errors);
    r.print();
    Ok(())
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

/// Counts one webhook POST; the status to answer.
fn receive(req: &Request<Bytes>, received: &Mutex<Received>, prefix: &str) -> StatusCode {
    if req.method() != Method::POST {
        return StatusCode::METHOD_NOT_ALLOWED;
    }
    let now = Instant::now();
    let now_us = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64);
    let signed = req.headers().contains_key("webhook-signature");
    let event: Option<Value> = serde_json::from_slice(req.body()).ok();
    let mut r = pool::lock(received);
    r.posts += 1;
    if !signed {
        r.unsigned += 1;
    }
    let Some(event) = event else {
        r.foreign += 1;
        return StatusCode::OK;
    };
    let ours = event["data"]["userId"].as_str().is_some_and(|u| u.starts_with(prefix));
    let (Some(id), Some(kind), true) = (event["id"].as_str(), event["type"].as_str(), ours) else {
        r.foreign += 1;
        return StatusCode::OK;
    };
    if r.ids.insert(id.to_owned()) {
        r.first.get_or_insert(now);
        r.last = Some(now);
        *r.by_type.entry(kind.to_owned()).or_default() += 1;
        if let Some(created_ms) = event["createdAt"].as_u64() {
            r.lag.record_us(now_us.saturating_sub(created_ms * 1000));
        }
    }
    StatusCode::OK
}
