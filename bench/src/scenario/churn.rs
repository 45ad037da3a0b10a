//! `churn`: `--concurrency` workers each loop connect (full handshake) → one acked echo →
//! `disconnect` for `--duration`; reports cycles per second and the cycle latency.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{
    frames::{self, Kind},
    pool::{self, Ctx},
    progress::Progress,
    report::{Latency, Report, per_sec},
};

#[derive(clap::Args)]
pub struct Args {
    /// Workers cycling at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// How long to cycle.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let end = Instant::now() + a.duration;
    let progress = Progress::start("cycles", None);
    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let failures = Arc::new(AtomicU64::new(0));
    let total = Arc::new(Mutex::new((Latency::new(), 0u64, Vec::<String>::new())));
    let start = Instant::now();
    let mut workers = Vec::new();
    for w in 0..a.concurrency.max(1) {
        let (ctx, failures, total, progress) =
            (ctx.clone(), failures.clone(), total.clone(), progress.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Latency::new();
            let mut cycles = 0u64;
            // One user per worker: a worker has at most one connection open at a time.
            let token = match ctx.token(w) {
                Ok(t) => t,
                Err(e) => {
                    pool::lock(&total).2.push(format!("{e:#}"));
                    return;
                }
            };
            while Instant::now() < end {
                let t0 = Instant::now();
                match cycle(&ctx, &token).await {
                    Ok(()) => {
                        lat.record(t0.elapsed());
                        cycles += 1;
                        progress.add(1);
                    }
                    Err(e) => {
                        if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                            pool::lock(&total).2.push(format!("{e:#}"));
                        }
                        // Back off a little so a refusing server is not spun against.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
            let mut t = pool::lock(&total);
            t.0.merge(&lat);
            t.1 += cycles;
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    progress.finish();
    let elapsed = start.elapsed();
    let (lat, cycles, errors) = std::mem::take(&mut *pool::lock(&total));
    let mut r = Report::new("churn", &ctx.common.target, ctx.common.transport);
    r.set("concurrency", a.concurrency as u64)
        .set("secs", (elapsed.as_secs_f64() * 1000.0).round() / 1000.0)
        .set("cycles", cycles)
        .set("cycles_per_s", per_sec(cycles, elapsed))
        .latency("cycle", &lat);
    cpu.finish(&mut r);
    super::failures(&mut r, failures.load(Ordering::Relaxed), &errors);
    r.print();
    Ok(())
}

async fn cycle(ctx: &Ctx, token: &str) -> Result<()> {
    let mut conn = ctx.target.connect(token).await?;
    conn.tx.send(&frames::echo(1, "churn")).await?;
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), conn.rx.recv())
            .await
            .context("no echo ack")??
            .context("closed before the echo ack")?;
        match frames::kind(&f) {
            Kind::Ack => break,
            Kind::Error => bail!("echo refused: {}", String::from_utf8_lossy(&f)),
            _ => {}
        }
    }
    conn.close().await;
    Ok(())
}
