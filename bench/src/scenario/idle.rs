//! `idle`: open N connections, hold them, and report how much the server's RSS grew per
//! connection; with `--observe`, the server's CPU per held connection and minute (heartbeats
//! and timers); with `--redis-info`, also what the server's Redis spends on them (memory, keys,
//! commands per connect, per held connection and minute, and per disconnect).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::{
    pool::{self, Ctx},
    progress::Progress,
    redis_probe::{Probe, round2},
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
    /// The Redis the server uses (`redis://…`): snapshots of its memory, keys and command
    /// counts before opening, once held, after `--observe`, and after the release.
    #[arg(long)]
    redis_info: Option<String>,
    /// How long to keep holding after the first measurement, to measure what held connections
    /// cost per minute: the server's CPU (heartbeats, timers) and, with `--redis-info`, the
    /// commands (presence refreshes).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    observe: Duration,
    /// With `--redis-info`: how long to wait after the release before the last snapshot, for
    /// the server to finish its disconnect work.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    drain_wait: Duration,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let pid = ctx.common.server_pid.context("idle needs --server-pid to read the server's RSS")?;
    let mut probe = match &a.redis_info {
        Some(url) => Some(Probe::connect(url).await?),
        None => None,
    };
    let redis_before = match probe.as_mut() {
        Some(p) => Some(p.snapshot().await?),
        None => None,
    };
    let keys_before = redis_before.as_ref().map_or(0, |s| s.keys());
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
    let mut redis = match (probe.as_mut(), redis_before) {
        (Some(p), Some(s0)) => {
            let s1 = p.snapshot().await?;
            r.set("redis_bytes_per_conn", s0.memory_per_conn(&s1, held))
                .set("redis_keys_per_conn", s0.keys_per_conn(&s1, held))
                .set("redis_cmds_per_connect", round2(s0.calls_per_conn(&s1, held)))
                .set("redis_connect_cmds", s0.calls_by_command(&s1, held));
            Some(s1)
        }
        _ => None,
    };
    if !a.observe.is_zero() {
        let (cpu0, t0) = (pool::cpu_secs(pid), Instant::now());
        tokio::time::sleep(a.observe).await;
        let minutes = t0.elapsed().as_secs_f64() / 60.0;
        if let (Some(c0), Some(c1), true) = (cpu0, pool::cpu_secs(pid), held > 0) {
            // µs of server CPU per held connection and minute: what holding costs at rest.
            let per = (c1 - c0) * 1e6 / held as f64 / minutes;
            r.set("held_cpu_us_per_conn_minute", round2(per));
        }
        if let (Some(p), Some(s1)) = (probe.as_mut(), redis.as_ref()) {
            let s2 = p.snapshot().await?;
            let minutes = s1.secs_until(&s2) / 60.0;
            r.set("redis_cmds_per_conn_minute", round2(s1.calls_per_conn(&s2, held) / minutes))
                .set(
                    "redis_held_cmds_per_minute",
                    per_minute(s1.calls_by_command(&s2, held), minutes),
                );
            redis = Some(s2);
        }
    }
    let dropped = pool::release(&stop, opened.items).await;
    r.set("dropped_by_server", dropped);
    if let (Some(p), Some(s_held)) = (probe.as_mut(), redis) {
        tokio::time::sleep(a.drain_wait).await;
        let s3 = p.snapshot().await?;
        r.set("redis_cmds_per_disconnect", round2(s_held.calls_per_conn(&s3, held)))
            .set("redis_disconnect_cmds", s_held.calls_by_command(&s3, held))
            .set("redis_keys_left", s3.keys() as i64 - keys_before as i64);
    }
    r.print();
    Ok(())
}

fn per_minute(v: serde_json::Value, minutes: f64) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .map(|(k, v)| (k, serde_json::json!(round2(v.as_f64().unwrap_or(0.0) / minutes))))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        other => other,
    }
}
