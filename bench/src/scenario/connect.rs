//! `connect`: a connection storm. Opens N connections with the full handshake (transport,
//! `connect` with a fresh JWT, `connected`), `concurrency` at a time, holding them until all
//! are open; reports connects per second.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use tokio::sync::watch;

use crate::{
    pool::{self, Ctx},
    progress::Progress,
    report::{Report, per_sec},
};

#[derive(clap::Args)]
pub struct Args {
    /// Connections to open.
    #[arg(long, default_value_t = 2000)]
    n: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Longest the storm may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let (stop, stop_rx) = watch::channel(false);
    let progress = Progress::start("connected", Some(a.n as u64));
    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let opened = pool::open_many(
        &ctx,
        a.n,
        0,
        a.concurrency,
        Instant::now() + a.timeout,
        &progress,
        move |_, c| pool::hold(c, stop_rx.clone()),
    )
    .await;
    progress.finish();
    let mut r = Report::new("connect", &ctx.common.target, ctx.common.transport);
    let ok = opened.items.len() as u64;
    r.set("n", a.n as u64)
        .set("concurrency", a.concurrency as u64)
        .set("connected", ok)
        .set("secs", (opened.elapsed.as_secs_f64() * 1000.0).round() / 1000.0)
        .set("connects_per_s", per_sec(ok, opened.elapsed))
        .latency("handshake", &opened.handshake);
    cpu.finish(&mut r);
    super::failures(&mut r, opened.failures, &opened.errors);
    pool::release(&stop, opened.items).await;
    r.print();
    Ok(())
}
