//! `apipublish`: `fanout` with the publications coming from the application's backend. N
//! receivers subscribe to one channel (`--channel`, by default `bench:fanout`, no history) as
//! in `fanout`; `--callers` concurrent HTTP/1.1 keep-alive callers POST
//! `{"channel","data"}` to the server API (`/api/v1/publish`, `Authorization: apikey
//! <--api-key>`), each waiting for its answer before the next call, for `--duration`. Reports
//! deliveries per second (all receivers together), the latency from the start of the API call
//! to each receiver getting the publication (the send time is in the data, as in `fanout`),
//! and the API calls' own latency.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::{StatusCode, Uri, header::HeaderValue};
use tokio::sync::watch;

use super::fanout::{Delivery, Shared, ratio, subscribe_receivers};
use crate::{
    http,
    pool::{self, Ctx},
    progress::Progress,
    report::{Latency, Report, per_sec},
};

#[derive(clap::Args)]
pub struct Args {
    /// Concurrent API callers, each with one call outstanding on its own keep-alive connection.
    #[arg(long, default_value_t = 50)]
    callers: usize,
    /// A key of the server's `--api-keys`. None: no `Authorization` (a server without keys
    /// answers loopback callers).
    #[arg(long)]
    api_key: Option<String>,
    /// Where the server API listens (`--api-addr` of the server); default: `--http`.
    #[arg(long)]
    api: Option<SocketAddr>,
    #[command(flatten)]
    d: Delivery,
}

/// What the callers add up.
#[derive(Default)]
struct Calls {
    ok: u64,
    errors: u64,
    first_errors: Vec<String>,
    lat: Latency,
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let uri: Uri = format!("http://{}/api/v1/publish", a.api.unwrap_or(ctx.common.http))
        .parse()
        .context("the server API's URL")?;
    let auth = a
        .api_key
        .as_deref()
        .map(|k| HeaderValue::from_str(&format!("apikey {k}")))
        .transpose()
        .context("--api-key is not a header value")?;
    let shared = Shared::new();
    let (stop, stop_rx) = watch::channel(false);
    let receivers =
        subscribe_receivers(&ctx, a.d.receivers, &a.d.channel, &shared, a.d.sample_every, &stop_rx)
            .await?;
    let client = http::client();
    // One call first: a wrong key or channel fails the run here, not as N errors later.
    let probe = format!(r#"{{"channel":"{}","data":{{"probe":true}}}}"#, a.d.channel);
    let (status, body) = http::post_json(&client, &uri, auth.as_ref(), Bytes::from(probe))
        .await
        .with_context(|| format!("calling {uri}"))?;
    anyhow::ensure!(
        status == StatusCode::OK,
        "{uri} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    // The probe reached every receiver too; count from here.
    let probes = shared.drain(receivers.tasks.len() as u64, Duration::from_secs(5)).await;
    shared.delivered.fetch_sub(probes, Ordering::Relaxed);

    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let progress = Progress::start("published", None);
    let calls = Arc::new(Mutex::new(Calls::default()));
    let start = Instant::now();
    let end = start + a.d.duration;
    let pad = Arc::<str>::from("x".repeat(a.d.payload));
    let mut callers = Vec::new();
    for _ in 0..a.callers.max(1) {
        let (client, uri, auth, shared, calls, pad, progress) = (
            client.clone(),
            uri.clone(),
            auth.clone(),
            shared.clone(),
            calls.clone(),
            pad.clone(),
            progress.clone(),
        );
        let channel = a.d.channel.clone();
        callers.push(tokio::spawn(async move {
            let mut mine = Calls::default();
            while Instant::now() < end {
                let t = shared.epoch.elapsed().as_micros() as u64;
                let body = format!(r#"{{"channel":"{channel}","data":{{"t":{t},"b":"{pad}"}}}}"#);
                let t0 = Instant::now();
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    http::post_json(&client, &uri, auth.as_ref(), Bytes::from(body)),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 10 s")));
                match answer {
                    Ok((StatusCode::OK, _)) => {
                        mine.lat.record(t0.elapsed());
                        mine.ok += 1;
                        progress.add(1);
                    }
                    Ok((status, body)) => {
                        mine.errors += 1;
                        if mine.first_errors.len() < 3 {
                            let body = String::from_utf8_lossy(&body);
                            mine.first_errors.push(format!("{status}: {body}"));
                        }
                    }
                    Err(e) => {
                        mine.errors += 1;
                        if mine.first_errors.len() < 3 {
                            mine.first_errors.push(format!("{e:#}"));
                        }
                        // A refusing server is not spun against.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            let mut all = pool::lock(&calls);
            all.ok += mine.ok;
            all.errors += mine.errors;
            all.lat.merge(&mine.lat);
            let room = 5usize.saturating_sub(all.first_errors.len());
            all.first_errors.extend(mine.first_errors.into_iter().take(room));
        }));
    }
    for c in callers {
        let _ = c.await;
    }
    progress.finish();
    let calls = std::mem::take(&mut *pool::lock(&calls));
    let expected = calls.ok * receivers.tasks.len() as u64;
    let delivered = shared.drain(expected, a.d.drain).await;
    let window = shared.window(start, a.d.duration);
    let mut r = Report::new("apipublish", &ctx.common.target, ctx.common.transport);
    r.set("via", a.d.channel.as_str())
        .set("receivers", receivers.tasks.len() as u64)
        .set("callers", a.callers.max(1) as u64)
        .set("published", calls.ok)
        .set("publishes_per_s", per_sec(calls.ok, a.d.duration))
        .set("expected", expected)
        .set("delivered", delivered)
        .set("delivered_ratio", ratio(delivered, expected))
        .set("secs", (window.as_secs_f64() * 1000.0).round() / 1000.0)
        .set("deliveries_per_s", per_sec(delivered, window))
        .latency("", &shared.latency())
        .latency("api", &calls.lat)
        .set("api_errors", calls.errors);
    if !calls.first_errors.is_empty() {
        r.set("api_first_errors", calls.first_errors);
    }
    cpu.finish(&mut r);
    super::failures(&mut r, receivers.failures, &receivers.errors);
    let dropped = pool::release(&stop, receivers.tasks).await;
    r.set("receivers_dropped_by_server", dropped);
    r.print();
    Ok(())
}
