//! `echo`: acked `sys:echo` round trips. Closed loop (`--rate 0`): every connection keeps
//! `--inflight` requests outstanding, as fast as the server answers. Fixed rate: the total
//! `--rate` is split over the connections, and latency is measured from each request's
//! scheduled send time, so a stalled server shows up as latency rather than as fewer samples.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Result;

use crate::{
    client::Conn,
    frames::{self, Kind},
    pool::{self, Ctx},
    progress::Progress,
    report::{Latency, Report, per_sec},
};

#[derive(clap::Args)]
pub struct Args {
    /// Connections sending.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Total messages per second over all connections; 0 = closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Requests outstanding per connection in the closed loop.
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    /// Measured time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unmeasured time before it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Payload size in bytes (a JSON string).
    #[arg(long, default_value_t = 100)]
    payload: usize,
}

#[derive(Default)]
struct Tally {
    lat: Latency,
    done: u64,
    errors: u64,
    lost: u64,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let progress = Progress::start("connected", Some(a.conns as u64));
    let opened = pool::open_many(
        &ctx,
        a.conns,
        0,
        a.conns.min(200),
        Instant::now() + Duration::from_secs(60),
        &progress,
        |i, c| (i, c),
    )
    .await;
    progress.finish();
    let n = opened.items.len();
    anyhow::ensure!(n > 0, "no connection opened: {:?}", opened.errors);
    let payload = Arc::new("x".repeat(a.payload));
    let start = Instant::now();
    let measure_from = start + a.warmup;
    let end = measure_from + a.duration;
    let total = Arc::new(Mutex::new(Tally::default()));
    let progress = Progress::start("acks", None);
    let cpu = Arc::new(Mutex::new(None));
    let cpu_pid = ctx.common.server_pid;
    {
        // Server CPU is sampled at the start of the measured phase.
        let cpu = cpu.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(measure_from.into()).await;
            *pool::lock(&cpu) = Some(super::ServerCpu::start(cpu_pid));
        });
    }
    let mut tasks = Vec::new();
    for (i, conn) in opened.items {
        let (payload, total, progress) = (payload.clone(), total.clone(), progress.clone());
        let (rate, inflight) = (a.rate, a.inflight.max(1));
        tasks.push(tokio::spawn(async move {
            let t = if rate == 0 {
                closed_loop(conn, &payload, inflight, measure_from, end, &progress).await
            } else {
                // Each connection gets rate/n; their schedules are staggered across one period.
                let period = Duration::from_secs_f64(n as f64 / rate as f64);
                let offset = period.mul_f64(i as f64 / n as f64);
                fixed_rate(conn, &payload, period, start + offset, measure_from, end, &progress)
                    .await
            };
            let mut all = pool::lock(&total);
            all.lat.merge(&t.lat);
            all.done += t.done;
            all.errors += t.errors;
            all.lost += t.lost;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    progress.finish();
    let measured = end.saturating_duration_since(measure_from);
    let t = std::mem::take(&mut *pool::lock(&total));
    let mut r = Report::new(
        if a.rate == 0 { "echo_closed_loop" } else { "echo_fixed_rate" },
        &ctx.common.target,
        ctx.common.transport,
    );
    r.set("conns", n as u64)
        .set("payload", a.payload as u64)
        .set("rate_target", a.rate)
        .set("inflight", if a.rate == 0 { a.inflight as u64 } else { 0 })
        .set("secs", measured.as_secs_f64())
        .set("acked", t.done)
        .set("msgs_per_s", per_sec(t.done, measured))
        .latency("", &t.lat)
        .set("errors", t.errors)
        .set("unanswered", t.lost);
    if let Some(cpu) = pool::lock(&cpu).take() {
        cpu.finish(&mut r);
    }
    super::failures(&mut r, opened.failures, &opened.errors);
    r.print();
    Ok(())
}

/// Keeps `inflight` echoes outstanding on one connection until `end`.
async fn closed_loop(
    mut conn: Conn,
    payload: &str,
    inflight: usize,
    measure_from: Instant,
    end: Instant,
    progress: &crate::progress::Progress,
) -> Tally {
    let mut t = Tally::default();
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    let mut id = 0u64;
    loop {
        while sent.len() < inflight && Instant::now() < end {
            id += 1;
            if conn.tx.send(&frames::echo(id, payload)).await.is_err() {
                t.lost += sent.len() as u64;
                return t;
            }
            sent.push_back(Instant::now());
        }
        if sent.is_empty() {
            break;
        }
        let frame =
            match tokio::time::timeout_at((end + Duration::from_secs(5)).into(), conn.rx.recv())
                .await
            {
                Ok(Ok(Some(f))) => f,
                _ => {
                    t.lost += sent.len() as u64;
                    return t;
                }
            };
        match frames::kind(&frame) {
            Kind::Ack | Kind::Error => {
                // Echo acks come back in request order, so the oldest send is the one answered.
                let Some(at) = sent.pop_front() else { continue };
                if frames::kind(&frame) == Kind::Error {
                    t.errors += 1;
                } else if at >= measure_from && at < end {
                    t.lat.record(at.elapsed());
                    t.done += 1;
                    progress.add(1);
                }
            }
            Kind::Ping => {
                let _ = conn.tx.send(frames::pong()).await;
            }
            _ => {}
        }
    }
    conn.close().await;
    t
}

/// Sends one echo every `period` from `first` on, until `end`; latency from the scheduled time.
async fn fixed_rate(
    mut conn: Conn,
    payload: &str,
    period: Duration,
    first: Instant,
    measure_from: Instant,
    end: Instant,
    progress: &crate::progress::Progress,
) -> Tally {
    let mut t = Tally::default();
    let mut tick = tokio::time::interval_at(first.into(), period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent: VecDeque<Instant> = VecDeque::new();
    let mut id = 0u64;
    let hard_end = end + Duration::from_secs(5);
    loop {
        if Instant::now() >= end && sent.is_empty() {
            break;
        }
        tokio::select! {
            at = tick.tick(), if Instant::now() < end => {
                id += 1;
                if conn.tx.send(&frames::echo(id, payload)).await.is_err() {
                    break;
                }
                sent.push_back(at.into_std());
            }
            frame = conn.rx.recv() => match frame {
                Ok(Some(f)) => match frames::kind(&f) {
                    Kind::Ack | Kind::Error => {
                        let Some(at) = sent.pop_front() else { continue };
                        if frames::kind(&f) == Kind::Error {
                            t.errors += 1;
                        } else if at >= measure_from && at < end {
                            t.lat.record(at.elapsed());
                            t.done += 1;
                            progress.add(1);
                        }
                    }
                    Kind::Ping => { let _ = conn.tx.send(frames::pong()).await; }
                    _ => {}
                },
                _ => break,
            },
            _ = tokio::time::sleep_until(hard_end.into()) => break,
        }
    }
    t.lost += sent.len() as u64;
    conn.close().await;
    t
}
