//! `fanout`: N receivers subscribe to one channel (`channel:subscribe`; `--channel`, by
//! default `bench:fanout`, whose namespace `scripts/bench-channels.toml` defines without
//! history), one publisher keeps `--inflight` acked `sys:channel-publish` requests (a
//! `--dev-events` server) outstanding for `--duration`. Reports deliveries per second (all
//! receivers together) and publish→receive latency from the send time each message carries.
//! Against the Socket.IO peer the channel is a room (`room:join`, `room:publish`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use tokio::sync::watch;

use crate::{
    client::Conn,
    frames::{self, Kind},
    pool::{self, Ctx},
    progress::Progress,
    report::{Latency, Report, per_sec},
};

/// Latency shards, so receivers rarely contend on one lock.
const SHARDS: usize = 16;

#[derive(clap::Args)]
pub struct Args {
    /// Publishes outstanding (unacked) at once.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    #[command(flatten)]
    d: Delivery,
}

/// The options of a run that publishes to receivers on one channel: shared by `fanout` (a
/// client publishes) and `apipublish` (the server API does).
#[derive(clap::Args)]
pub(super) struct Delivery {
    /// Receivers on the channel.
    #[arg(long, default_value_t = 1000)]
    pub(super) receivers: usize,
    /// Publishing time.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub(super) duration: Duration,
    /// Padding per message, in bytes.
    #[arg(long, default_value_t = 80)]
    pub(super) payload: usize,
    /// How long to wait for the last deliveries after the last publish.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub(super) drain: Duration,
    /// Record every k-th delivery's latency per receiver.
    #[arg(long, default_value_t = 4)]
    pub(super) sample_every: u64,
    /// The channel to fan out through. rtgate needs its namespace configured (`bench:` has no
    /// history, `benchh:` stores every publication: `scripts/bench-channels.toml`); the raw
    /// baseline takes any name; for Socket.IO it is the room's name.
    #[arg(long, default_value = "bench:fanout")]
    pub(super) channel: String,
}

/// What the receivers share: the run's epoch (send times are µs since it), the delivery
/// count, the latest delivery and the sampled latencies. Also used by `apipublish`.
pub(super) struct Shared {
    pub(super) epoch: Instant,
    pub(super) delivered: AtomicU64,
    /// µs since `epoch` of the latest delivery.
    last_delivery_us: AtomicU64,
    lat: Vec<Mutex<Latency>>,
}

impl Shared {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            delivered: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            lat: (0..SHARDS).map(|_| Mutex::new(Latency::new())).collect(),
        })
    }

    /// Waits up to `drain` for `expected` deliveries in all; returns the deliveries so far.
    pub(super) async fn drain(&self, expected: u64, drain: Duration) -> u64 {
        let drain_end = Instant::now() + drain;
        while self.delivered.load(Ordering::Relaxed) < expected && Instant::now() < drain_end {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.delivered.load(Ordering::Relaxed)
    }

    /// From `start` to the latest delivery, at least `duration`.
    pub(super) fn window(&self, start: Instant, duration: Duration) -> Duration {
        let last = Duration::from_micros(self.last_delivery_us.load(Ordering::Relaxed));
        (self.epoch + last).saturating_duration_since(start).max(duration)
    }

    /// Every receiver's sampled latencies together.
    pub(super) fn latency(&self) -> Latency {
        let mut lat = Latency::new();
        for s in &self.lat {
            lat.merge(&pool::lock(s));
        }
        lat
    }
}

/// Receivers subscribed to the channel, each counting what it gets until `stop`.
pub(super) struct Receivers {
    pub(super) tasks: Vec<tokio::task::JoinHandle<bool>>,
    pub(super) failures: u64,
    pub(super) errors: Vec<String>,
}

/// Opens `n` connections (users 1..=n), subscribes each to `channel` and starts counting
/// deliveries into `shared`.
pub(super) async fn subscribe_receivers(
    ctx: &Arc<Ctx>,
    n: usize,
    channel: &str,
    shared: &Arc<Shared>,
    sample_every: u64,
    stop_rx: &watch::Receiver<bool>,
) -> Result<Receivers> {
    let progress = Progress::start("receivers joined", Some(n as u64));
    let opened = pool::open_many(
        ctx,
        n,
        1,
        200,
        Instant::now() + Duration::from_secs(300),
        &progress,
        |i, c| (i, c),
    )
    .await;
    // Join in parallel, then start receiving.
    let mut joins = Vec::new();
    for (i, mut conn) in opened.items {
        let join = frames::fanout_join(1, channel);
        joins.push(tokio::spawn(async move {
            conn.tx.send(&join).await?;
            loop {
                let f = tokio::time::timeout(Duration::from_secs(30), conn.rx.recv())
                    .await
                    .context("no answer to the subscribe")??
                    .context("closed before joining")?;
                match frames::kind(&f) {
                    Kind::Ack => return Ok::<_, anyhow::Error>((i, conn)),
                    Kind::Ping => conn.tx.send(frames::pong()).await?,
                    Kind::Error => bail!("subscribe refused: {}", String::from_utf8_lossy(&f)),
                    _ => {}
                }
            }
        }));
    }
    let mut tasks = Vec::new();
    let mut join_errors = Vec::new();
    for j in joins {
        match j.await {
            Ok(Ok((i, conn))) => {
                tasks.push(receive(conn, i, shared.clone(), sample_every, stop_rx.clone()))
            }
            Ok(Err(e)) => join_errors.push(format!("{e:#}")),
            Err(e) => join_errors.push(e.to_string()),
        }
    }
    progress.finish();
    anyhow::ensure!(!tasks.is_empty(), "no receiver joined: {:?} {:?}", opened.errors, join_errors);
    let mut errors = opened.errors;
    errors.extend(join_errors.iter().take(5).cloned());
    Ok(Receivers { tasks, failures: opened.failures + join_errors.len() as u64, errors })
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let shared = Shared::new();
    let (stop, stop_rx) = watch::channel(false);
    let receivers =
        subscribe_receivers(&ctx, a.d.receivers, &a.d.channel, &shared, a.d.sample_every, &stop_rx)
            .await?;
    let publisher = ctx.target.connect(&ctx.token(0)?).await.context("publisher connect")?;
    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let progress = Progress::start("published", None);
    let start = Instant::now();
    let (published, publish_errors, publish_lat) =
        publish(publisher, &shared, &a, start + a.d.duration, &progress).await;
    progress.finish();
    let expected = published * receivers.tasks.len() as u64;
    // Wait for the tail, up to --drain.
    let delivered = shared.drain(expected, a.d.drain).await;
    let window = shared.window(start, a.d.duration);
    let lat = shared.latency();
    let mut r = Report::new("fanout", &ctx.common.target, ctx.common.transport);
    r.set("via", a.d.channel.as_str())
        .set("receivers", receivers.tasks.len() as u64)
        .set("published", published)
        .set("publishes_per_s", per_sec(published, a.d.duration))
        .set("expected", expected)
        .set("delivered", delivered)
        .set("delivered_ratio", ratio(delivered, expected))
        .set("secs", (window.as_secs_f64() * 1000.0).round() / 1000.0)
        .set("deliveries_per_s", per_sec(delivered, window))
        .latency("", &lat)
        .latency("publish_ack", &publish_lat)
        .set("publish_errors", publish_errors);
    cpu.finish(&mut r);
    super::failures(&mut r, receivers.failures, &receivers.errors);
    let dropped = pool::release(&stop, receivers.tasks).await;
    r.set("receivers_dropped_by_server", dropped);
    r.print();
    Ok(())
}

/// `delivered / expected`, to four decimals (0 when nothing was expected).
pub(super) fn ratio(delivered: u64, expected: u64) -> f64 {
    if expected > 0 { ((delivered as f64 / expected as f64) * 1e4).round() / 1e4 } else { 0.0 }
}

/// One receiver: counts deliveries, samples their latency, answers pings, until `stop`.
fn receive(
    mut conn: Conn,
    i: usize,
    shared: Arc<Shared>,
    every: u64,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<bool> {
    tokio::spawn(async move {
        let mut seen = 0u64;
        // Raw samples, not a histogram: 10k receivers with a histogram each would cost the
        // load generator over a gigabyte.
        let mut local: Vec<u64> = Vec::new();
        let mut pending = 0u64;
        let every = every.max(1);
        let flush = |local: &mut Vec<u64>, pending: &mut u64| {
            shared.delivered.fetch_add(*pending, Ordering::Relaxed);
            *pending = 0;
            if !local.is_empty() {
                let mut s = pool::lock(&shared.lat[i % SHARDS]);
                for us in local.drain(..) {
                    s.record_us(us);
                }
            }
        };
        let kept = loop {
            tokio::select! {
                _ = pool::stopped(&mut stop) => break true,
                f = conn.rx.recv() => match f {
                    Ok(Some(f)) => match frames::kind(&f) {
                        Kind::Event => {
                            let now_us = shared.epoch.elapsed().as_micros() as u64;
                            seen += 1;
                            pending += 1;
                            if seen.is_multiple_of(every)
                                && let Some(t) = frames::sent_at_us(&f)
                            {
                                local.push(now_us.saturating_sub(t));
                            }
                            shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
                            // Counted in batches so receivers do not all hammer one atomic.
                            if pending >= 32 {
                                flush(&mut local, &mut pending);
                            }
                        }
                        Kind::Ping => {
                            let _ = conn.tx.send(frames::pong()).await;
                        }
                        _ => {}
                    },
                    Ok(None) | Err(_) => break false,
                },
                // A quiet receiver publishes what it has so far.
                _ = tokio::time::sleep(Duration::from_millis(10)), if pending > 0 => {
                    flush(&mut local, &mut pending);
                }
            }
        };
        flush(&mut local, &mut pending);
        if kept {
            conn.close().await;
        }
        kept
    })
}

/// Publishes with `inflight` outstanding until `end`; returns (acked, errors, ack latency).
async fn publish(
    mut conn: Conn,
    shared: &Shared,
    a: &Args,
    end: Instant,
    progress: &Progress,
) -> (u64, u64, Latency) {
    let pad = "x".repeat(a.d.payload);
    let mut sent = std::collections::VecDeque::new();
    let (mut acked, mut errors, mut id) = (0u64, 0u64, 0u64);
    let mut lat = Latency::new();
    loop {
        while sent.len() < a.inflight.max(1) && Instant::now() < end {
            id += 1;
            let t = shared.epoch.elapsed().as_micros() as u64;
            let frame = frames::fanout_publish(id, &a.d.channel, t, &pad);
            if conn.tx.send(&frame).await.is_err() {
                return (acked, errors + 1, lat);
            }
            sent.push_back(Instant::now());
        }
        if sent.is_empty() {
            break;
        }
        match tokio::time::timeout(Duration::from_secs(10), conn.rx.recv()).await {
            Ok(Ok(Some(f))) => match frames::kind(&f) {
                Kind::Ack => {
                    if let Some(at) = sent.pop_front() {
                        lat.record(at.elapsed());
                    }
                    acked += 1;
                    progress.add(1);
                }
                Kind::Error => {
                    sent.pop_front();
                    errors += 1;
                }
                Kind::Ping => {
                    let _ = conn.tx.send(frames::pong()).await;
                }
                _ => {}
            },
            _ => {
                errors += sent.len() as u64;
                break;
            }
        }
    }
    conn.close().await;
    (acked, errors, lat)
}
