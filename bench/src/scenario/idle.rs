//! `idle`: open N connections, hold them, and report how much the server's RSS grew per
//! connection.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::{
    pool::{self, Ctx},
    progress::Progress,
    report::{Report, rss_bytes},
};

#[derive(clap::Args)]
pub struct Args {
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    n: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// How long to hold them after the last one opened, before measuring.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Longest the opening phase may take.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    open_timeout: Duration,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let pid = ctx.common.server_pid.context("idle needs --server-pid to read the server's RSS")?;
    let before = rss_bytes(pid).context("reading the server's RSS")?;
    let (stop, stop_rx) = watch::channel(false);
    let progress = Progress::start("opened", Some(a.n as u64));
    let deadline = Instant::now() + a.open_timeout;
    let opened = pool::open_many(&ctx, a.n, 0, a.concurrency, deadline, &progress, move |_, c| {
        pool::hold(c, stop_rx.clone())
    })
    .await;
    progress.finish();
    tokio::time::sleep(a.settle).await;
    let after = rss_bytes(pid).context("reading the server's RSS")?;
    let held = opened.items.len() as u64;
    let mut r = Report::new("idle", &ctx.common.target, ctx.common.transport);
    r.set("requested", a.n as u64)
        .set("held", held)
        .set("open_s", (opened.elapsed.as_secs_f64() * 100.0).round() / 100.0)
        .set("rss_before", before)
        .set("rss_after", after)
        .set("bytes_per_conn", after.saturating_sub(before).checked_div(held).unwrap_or(0));
    super::failures(&mut r, opened.failures, &opened.errors);
    let dropped = pool::release(&stop, opened.items).await;
    r.set("dropped_by_server", dropped);
    r.print();
    Ok(())
}
