//! `rpc`: what rtgate's RPC proxy adds to a call to the application's backend. The load
//! generator runs the backend itself: an HTTP/1.1 server on `--backend` whose `POST /rpc`
//! answers `{"client","user","method","data"}` with `{"result":{"data":<data>}}` (the server
//! under test runs with `--proxy-rpc-url http://<backend>/rpc`). For each level of
//! `--concurrency` (that many callers, each waiting for its answer before the next call) two
//! paths are timed, alternating in `--slice`s until each had `--duration`:
//! - **direct**: the caller POSTs the same body to the backend itself (a pooled keep-alive
//!   client, as rtgate's proxy uses);
//! - **rtgate**: the caller sends `{"type":"event","event":"rpc","id":N,"data":{"method",
//!   "data"}}` on its session (one session per caller) and waits for the ack, which rtgate
//!   makes from the backend's answer.
//!
//! Reports each path's latency percentiles per level and the overhead (rtgate − direct) at
//! p50 and p99.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use bytes::Bytes;
use hyper::{Method, Request, StatusCode, Uri};
use serde_json::{Value, json};

use crate::{
    client::Conn,
    frames::{self, Kind},
    http,
    pool::{self, Ctx},
    progress::Progress,
    report::{Latency, Report, per_sec},
};

/// The method every call names.
const METHOD: &str = "bench.echo";

#[derive(clap::Args)]
pub struct Args {
    /// Calls in flight, one level after the other (comma-separated): that many callers, each
    /// waiting for its answer before its next call.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Measured time per path and level.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// The two paths take turns in slices this long, so the machine's noise falls on both.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    slice: Duration,
    /// Unmeasured calls on both paths before each level.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Where the backend listens; the server's `--proxy-rpc-url` must be `http://<this>/rpc`.
    #[arg(long, default_value = "127.0.0.1:3961")]
    backend: SocketAddr,
    /// Padding in each call's data, in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    Rtgate,
}

/// One path's results at one level.
#[derive(Default)]
struct Tally {
    calls: u64,
    errors: u64,
    first_errors: Vec<String>,
    lat: Latency,
    busy: Duration,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.lat.merge(&other.lat);
        let room = 3usize.saturating_sub(self.first_errors.len());
        self.first_errors.extend(other.first_errors.into_iter().take(room));
    }

    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.first_errors.len() < 3 {
            self.first_errors.push(e);
        }
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    anyhow::ensure!(!a.concurrency.is_empty(), "--concurrency needs at least one level");
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let backend = http::serve(a.backend, move |req| {
        let counter = counter.clone();
        async move { answer(req, &counter) }
    })
    .await
    .context("starting the RPC backend")?;
    let uri: Uri = format!("http://{}/rpc", backend.addr).parse().context("the backend's URL")?;
    let most = a.concurrency.iter().copied().max().unwrap_or(1).max(1);
    let progress = Progress::start("sessions", Some(most as u64));
    let opened = pool::open_many(
        &ctx,
        most,
        1,
        50,
        Instant::now() + Duration::from_secs(60),
        &progress,
        |_, c| c,
    )
    .await;
    progress.finish();
    anyhow::ensure!(
        opened.items.len() == most,
        "{} of {most} sessions opened: {:?}",
        opened.items.len(),
        opened.errors
    );
    let mut conns = opened.items;
    let pad: Arc<str> = "x".repeat(a.payload).into();
    let client = http::client();
    // One call on each path first: a server without the RPC proxy fails the run here.
    let probe = Caller { client: client.clone(), uri: uri.clone(), pad: pad.clone(), worker: 0 };
    let mut t = Tally::default();
    probe.direct(&mut t, Instant::now()).await;
    let first = conns.first_mut().context("no session")?;
    let mut seq = 0;
    probe.rtgate(first, &mut seq, &mut t, Instant::now()).await;
    anyhow::ensure!(t.errors == 0, "the probe calls failed: {:?}", t.first_errors);

    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let mut r = Report::new("rpc", &ctx.common.target, ctx.common.transport);
    r.set("method", METHOD).set("payload", a.payload as u64);
    let slices = (a.duration.as_secs_f64() / a.slice.as_secs_f64().max(0.001)).ceil().max(1.0);
    let slice = a.duration.div_f64(slices);
    let mut errors = 0;
    for &c in &a.concurrency {
        let c = c.max(1);
        let caller =
            |w| Caller { client: client.clone(), uri: uri.clone(), pad: pad.clone(), worker: w };
        let callers: Vec<Caller> = (0..c).map(caller).collect();
        for path in [Path::Direct, Path::Rtgate] {
            (conns, _) = timed(path, &callers, conns, a.warmup).await;
        }
        let (mut direct, mut rtgate) = (Tally::default(), Tally::default());
        for _ in 0..slices as u64 {
            for path in [Path::Direct, Path::Rtgate] {
                let t0 = Instant::now();
                let (back, tally) = timed(path, &callers, conns, slice).await;
                conns = back;
                let into = if path == Path::Direct { &mut direct } else { &mut rtgate };
                into.busy += t0.elapsed();
                into.add(tally);
            }
        }
        for (name, t) in [("direct", &direct), ("rtgate", &rtgate)] {
            let p = format!("c{c}_{name}");
            r.set(&format!("{p}_calls"), t.calls)
                .set(&format!("{p}_calls_per_s"), per_sec(t.calls, t.busy))
                .latency(&p, &t.lat)
                .set(&format!("{p}_errors"), t.errors);
            if !t.first_errors.is_empty() {
                r.set(&format!("{p}_first_errors"), t.first_errors.clone());
            }
            errors += t.errors;
        }
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let at = |t: &Tally| t.lat.0.value_at_quantile(q) as i64;
            r.set(&format!("c{c}_overhead_{name}_us"), at(&rtgate) - at(&direct));
        }
    }
    cpu.finish(&mut r);
    r.set("errors", errors).set("backend_served", served.load(Ordering::Relaxed));
    super::failures(&mut r, opened.failures, &opened.errors);
    for conn in conns {
        conn.close().await;
    }
    drop(backend);
    r.print();
    Ok(())
}

/// The backend's answer: the call's `data` back as the result's.
fn answer(req: Request<Bytes>, served: &AtomicU64) -> hyper::Response<http_body_util::Full<Bytes>> {
    if req.method() != Method::POST || req.uri().path() != "/rpc" {
        return http::status(StatusCode::NOT_FOUND);
    }
    let Ok(call) = serde_json::from_slice::<Value>(req.body()) else {
        return http::status(StatusCode::BAD_REQUEST);
    };
    served.fetch_add(1, Ordering::Relaxed);
    let body = json!({"result": {"data": call.get("data").unwrap_or(&Value::Null)}});
    http::json(StatusCode::OK, body.to_string())
}

/// Runs `path` with one task per caller for `len`; gives the sessions back.
async fn timed(
    path: Path,
    callers: &[Caller],
    mut conns: Vec<Conn>,
    len: Duration,
) -> (Vec<Conn>, Tally) {
    let end = Instant::now() + len;
    let mut tasks = Vec::new();
    for caller in callers {
        let caller = caller.clone();
        let conn = (path == Path::Rtgate).then(|| conns.pop()).flatten();
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            let mut seq = 0;
            match conn {
                None => {
                    while Instant::now() < end {
                        caller.direct(&mut t, end).await;
                    }
                    (None, t)
                }
                Some(mut conn) => {
                    while Instant::now() < end {
                        caller.rtgate(&mut conn, &mut seq, &mut t, end).await;
                    }
                    (Some(conn), t)
                }
            }
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok((conn, t)) => {
                conns.extend(conn);
                tally.add(t);
            }
            Err(e) => tally.error(format!("a caller panicked: {e}")),
        }
    }
    (conns, tally)
}

/// One caller: its worker number names its client and user in direct calls.
#[derive(Clone)]
struct Caller {
    client: http::Client,
    uri: Uri,
    pad: Arc<str>,
    worker: usize,
}

impl Caller {
    /// One direct call to the backend; a failure waits a little (until at most `end`).
    async fn direct(&self, t: &mut Tally, end: Instant) {
        let w = self.worker;
        let body = format!(
            r#"{{"client":"direct-{w}","user":"bench-{w}","method":"{METHOD}","data":{{"n":{},"b":"{}"}}}}"#,
            t.calls, self.pad
        );
        let t0 = Instant::now();
        let call = http::post_json(&self.client, &self.uri, None, Bytes::from(body));
        let failed = match tokio::time::timeout(Duration::from_secs(10), call).await {
            Ok(Ok((StatusCode::OK, _))) => {
                t.lat.record(t0.elapsed());
                t.calls += 1;
                return;
            }
            Ok(Ok((status, _))) => format!("backend answered {status}"),
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => "no answer within 10 s".into(),
        };
        t.error(failed);
        // A failing backend is not spun against.
        let pause = end.min(Instant::now() + Duration::from_millis(10));
        tokio::time::sleep_until(pause.into()).await;
    }

    /// One `rpc` event on `conn`, waiting for its ack (answering pings meanwhile).
    async fn rtgate(&self, conn: &mut Conn, seq: &mut u64, t: &mut Tally, end: Instant) {
        *seq += 1;
        let id = *seq;
        let frame = format!(
            r#"{{"type":"event","event":"rpc","id":{id},"data":{{"method":"{METHOD}","data":{{"n":{id},"b":"{}"}}}}}}"#,
            self.pad
        );
        let t0 = Instant::now();
        if let Err(e) = conn.tx.send(&frame).await {
            t.error(format!("{e:#}"));
            tokio::time::sleep_until(end.into()).await;
            return;
        }
        loop {
            let f = match tokio::time::timeout(Duration::from_secs(10), conn.rx.recv()).await {
                Ok(Ok(Some(f))) => f,
                Ok(Ok(None)) => {
                    t.error("the server closed the session".into());
                    tokio::time::sleep_until(end.into()).await;
                    return;
                }
                Ok(Err(e)) => {
                    t.error(format!("{e:#}"));
                    tokio::time::sleep_until(end.into()).await;
                    return;
                }
                Err(_) => {
                    t.error("no ack within 10 s".into());
                    return;
                }
            };
            match frames::kind(&f) {
                Kind::Ack => {
                    t.lat.record(t0.elapsed());
                    t.calls += 1;
                    return;
                }
                Kind::Error => {
                    t.error(String::from_utf8_lossy(&f).into_owned());
                    return;
                }
                Kind::Ping => {
                    let _ = conn.tx.send(frames::pong()).await;
                }
                _ => {}
            }
        }
    }
}
