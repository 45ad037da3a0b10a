//! `lossy`: WebTransport through the impairment relay (`impair.rs`) at a fixed delay, one loss
//! level after another (each direction), each level on a fresh relay in front of the server:
//!
//! 1. **echo**: `--sessions` sessions, each sending `--requests` acked `sys:echo` one after the
//!    other (one outstanding per session); latency per request.
//! 2. **datagrams**: the same sessions send `--datagrams` `sys:volatile-echo` events as QUIC
//!    datagrams (no id, so no ack) and count the distinct ones the server sends back as
//!    datagrams. Each crosses the lossy path twice, so `(1 - loss)²` is what the network lets
//!    through; less than that is dropped somewhere else.
//! 3. **flows**, the head-of-line question: one more session carries `--flows` independent
//!    request flows (each sequential, one outstanding), all multiplexed on the session's one
//!    bidirectional stream; with `--separate-streams` the same flows then run again on a
//!    bidirectional stream each, on one more session (only a server that reads more than the
//!    first stream answers them: the raw baseline started with `--wt-streams`).
//!
//! Every wait is bounded (`--phase-timeout`), and the whole run by `--max-time`.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
use wtransport::Connection;

mod flows;

use flows::{shared_stream_flows, stream_per_flow};

use crate::{
    client::{Rx, STEP_TIMEOUT, Transport, Tx},
    frames::{self, Kind},
    impair::{Counts, ImpairRelay, Impairment},
    pool::{self, Ctx},
    report::{Latency, Report},
};

/// Bidirectional streams the server lets a connection have open (rtgate's, which the raw
/// baseline uses too).
const MAX_BIDI_STREAMS: usize = rtgate::server::WT_MAX_STREAMS as usize;

#[derive(clap::Args)]
pub struct Args {
    /// Loss probabilities to run, in each direction, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0,0.01,0.05")]
    loss: Vec<f64>,
    /// One-way delay the relay adds (the round trip gets twice this).
    #[arg(long, default_value = "50ms", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Extra one-way delay, uniform in 0..=jitter per packet.
    #[arg(long, default_value = "2ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Seed of the relay's generator (the same for every level).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Sessions sending sequential acked echoes.
    #[arg(long, default_value_t = 8)]
    sessions: usize,
    /// Sequential echoes per session.
    #[arg(long, default_value_t = 150)]
    requests: usize,
    /// Echo payload size in bytes (a JSON string).
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Datagrams sent per level, spread over the sessions.
    #[arg(long, default_value_t = 1000)]
    datagrams: usize,
    /// Gap between one session's datagrams.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    datagram_gap: Duration,
    /// How long to wait for echoed datagrams after the last one sent.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    drain: Duration,
    /// Independent request flows on one session, for the head-of-line comparison (0: none).
    /// With `--separate-streams` at most 6: the server allows 8 bidirectional streams per
    /// connection, and the session's CONNECT request and first stream take two.
    #[arg(long, default_value_t = 6)]
    flows: usize,
    /// Sequential echoes per flow.
    #[arg(long, default_value_t = 150)]
    flow_requests: usize,
    /// Also run the flows on a bidirectional stream each (the raw baseline with `--wt-streams`).
    #[arg(long)]
    separate_streams: bool,
    /// Longest one phase of one level may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    phase_timeout: Duration,
}

/// One WebTransport session through the relay: its frame stream and the connection (for
/// datagrams and more streams).
pub(super) struct Session {
    conn: Connection,
    tx: Tx,
    rx: Rx,
}

/// Latencies and the requests that got no answer.
#[derive(Default)]
pub(super) struct Tally {
    lat: Latency,
    errors: u64,
    unanswered: u64,
}

impl Tally {
    fn merge(&mut self, other: &Tally) {
        self.lat.merge(&other.lat);
        self.errors += other.errors;
        self.unanswered += other.unanswered;
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    if ctx.common.transport != Transport::Wt {
        bail!("lossy runs over WebTransport: pass --transport wt");
    }
    if a.separate_streams && a.flows + 2 > MAX_BIDI_STREAMS {
        bail!("--separate-streams takes at most {} flows", MAX_BIDI_STREAMS - 2);
    }
    if a.loss.iter().any(|l| !(0.0..1.0).contains(l)) {
        bail!("--loss values are probabilities in [0, 1)");
    }
    let ctx = Arc::new(Ctx::new(ctx.common.clone(), ctx.target.clone()));
    let mut r = Report::new("lossy", &ctx.common.target, ctx.common.transport);
    r.set("delay_ms", a.delay.as_millis() as u64)
        .set("jitter_ms", a.jitter.as_millis() as u64)
        .set("seed", a.seed)
        .set("sessions", a.sessions as u64)
        .set("requests", a.requests as u64)
        .set("flows", a.flows as u64)
        .set("flow_requests", a.flow_requests as u64);
    let payload = "x".repeat(a.payload);
    let mut next_user = 0usize;
    for &loss in &a.loss {
        let label = format!("loss{}", (loss * 1000.0).round() / 10.0);
        let impairment = Impairment {
            loss,
            delay: a.delay,
            jitter: a.jitter,
            reorder: 0.0,
            duplicate: 0.0,
            seed: a.seed,
        };
        let relay = ImpairRelay::start(ctx.common.wt, impairment)
            .await
            .context("starting the impairment relay")?;
        let url = format!("https://{}/wt", relay.addr);
        eprintln!("== {label}: relay {} → {}", relay.addr, ctx.common.wt);

        // 1. Sequential acked echoes from a handful of sessions.
        let mut sessions = Vec::new();
        let mut handshake = Latency::new();
        for _ in 0..a.sessions.max(1) {
            let t0 = Instant::now();
            sessions.push(open(&ctx, &url, next_user).await?);
            handshake.record(t0.elapsed());
            next_user += 1;
        }
        let deadline = Instant::now() + a.phase_timeout;
        let mut echo = Tally::default();
        let tasks: Vec<_> = sessions
            .into_iter()
            .map(|mut s| {
                let (payload, n) = (payload.clone(), a.requests);
                tokio::spawn(async move {
                    let t = sequential(&mut s.tx, &mut s.rx, &payload, n, 0, deadline).await;
                    (s, t)
                })
            })
            .collect();
        let mut sessions = Vec::new();
        for task in tasks {
            let (s, t) = task.await.context("an echo task panicked")?;
            echo.merge(&t);
            sessions.push(s);
        }
        r.latency(&format!("{label}_handshake"), &handshake)
            .latency(&format!("{label}_echo"), &echo.lat)
            .set(&format!("{label}_echo_errors"), echo.errors)
            .set(&format!("{label}_echo_unanswered"), echo.unanswered);

        // 2. Datagrams there and back.
        let (sent, back) = datagrams(sessions, &a).await;
        let ratio = if sent == 0 { 0.0 } else { back as f64 / sent as f64 };
        r.set(&format!("{label}_dgram_sent"), sent)
            .set(&format!("{label}_dgram_back"), back)
            .set(&format!("{label}_dgram_ratio"), (ratio * 1000.0).round() / 1000.0)
            .set(
                &format!("{label}_dgram_expected"),
                ((1.0 - loss) * (1.0 - loss) * 1000.0).round() / 1000.0,
            );

        // 3. Independent flows: on the one stream, then on a stream each.
        if a.flows > 0 {
            let s = open(&ctx, &url, next_user).await?;
            next_user += 1;
            let t =
                shared_stream_flows(s, &payload, a.flows, a.flow_requests, a.phase_timeout).await;
            r.latency(&format!("{label}_flows_shared"), &t.lat)
                .set(&format!("{label}_flows_shared_unanswered"), t.unanswered + t.errors);
            if a.separate_streams {
                let s = open(&ctx, &url, next_user).await?;
                next_user += 1;
                let t =
                    stream_per_flow(s, &payload, a.flows, a.flow_requests, a.phase_timeout).await?;
                r.latency(&format!("{label}_flows_separate"), &t.lat)
                    .set(&format!("{label}_flows_separate_unanswered"), t.unanswered + t.errors);
            }
        }
        let Counts { forwarded, dropped, duplicated } = relay.counts();
        r.set(&format!("{label}_relay_forwarded"), forwarded)
            .set(&format!("{label}_relay_dropped"), dropped)
            .set(&format!("{label}_relay_duplicated"), duplicated)
            .set(&format!("{label}_relay_flows"), relay.upstream_ports().len() as u64);
    }
    r.print();
    Ok(())
}

/// Opens a session through the relay at `url` and completes the `connect` handshake.
async fn open(ctx: &Ctx, url: &str, user: usize) -> Result<Session> {
    let endpoints = &ctx.target.endpoints;
    let ep = &endpoints[user % endpoints.len().max(1)];
    let conn = tokio::time::timeout(STEP_TIMEOUT, ep.connect(url))
        .await
        .context("WebTransport connect through the relay timed out")?
        .context("WebTransport connect through the relay")?;
    let (send, recv) = tokio::time::timeout(STEP_TIMEOUT, async {
        conn.open_bi().await.context("opening the stream")?.await.context("opening the stream")
    })
    .await
    .context("opening the stream timed out")??;
    let mut s =
        Session { conn, tx: Tx::Wt(send), rx: Rx::Wt { recv, buf: BytesMut::with_capacity(256) } };
    s.tx.send(&frames::connect(&ctx.token(user)?)).await?;
    loop {
        let frame = tokio::time::timeout(STEP_TIMEOUT, s.rx.recv())
            .await
            .context("no answer to connect")??
            .context("closed during the handshake")?;
        match frames::kind(&frame) {
            Kind::Connected => return Ok(s),
            Kind::Ping => s.tx.send(frames::pong()).await?,
            _ => bail!("handshake refused: {}", String::from_utf8_lossy(&frame)),
        }
    }
}

/// `n` acked echoes one after the other on one stream; ids from `first_id + 1`.
pub(super) async fn sequential(
    tx: &mut Tx,
    rx: &mut Rx,
    payload: &str,
    n: usize,
    first_id: u64,
    deadline: Instant,
) -> Tally {
    let mut t = Tally::default();
    for i in 0..n as u64 {
        let t0 = Instant::now();
        if tx.send(&frames::echo(first_id + i + 1, payload)).await.is_err() {
            t.unanswered += n as u64 - i;
            return t;
        }
        loop {
            match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Ok(Ok(Some(f))) => match frames::kind(&f) {
                    Kind::Ack => {
                        t.lat.record(t0.elapsed());
                        break;
                    }
                    Kind::Error => {
                        t.errors += 1;
                        break;
                    }
                    Kind::Ping => {
                        let _ = tx.send(frames::pong()).await;
                    }
                    _ => {}
                },
                _ => {
                    t.unanswered += n as u64 - i;
                    return t;
                }
            }
        }
    }
    t
}

/// Sends this level's datagrams over `sessions` (each its share, `--datagram-gap` apart) and
/// counts the distinct ones that came back; closes the sessions. (sent, came back).
async fn datagrams(sessions: Vec<Session>, a: &Args) -> (u64, u64) {
    let n = sessions.len().max(1);
    let per = a.datagrams.div_ceil(n);
    let (gap, drain, timeout) = (a.datagram_gap, a.drain, a.phase_timeout);
    let tasks: Vec<_> = sessions
        .into_iter()
        .enumerate()
        .map(|(k, mut s)| {
            tokio::spawn(async move {
                let back = Arc::new(Mutex::new(HashSet::new()));
                let receiver = {
                    let (conn, back) = (s.conn.clone(), back.clone());
                    tokio::spawn(async move {
                        while let Ok(d) = conn.receive_datagram().await {
                            if let Some(id) = volatile_echo_id(&d.payload()) {
                                pool::lock(&back).insert(id);
                            }
                        }
                    })
                };
                let hard_end = Instant::now() + timeout;
                let mut sent = 0u64;
                let mut tick = tokio::time::interval(gap);
                for i in 0..per {
                    tokio::select! {
                        _ = tick.tick() => {}
                        // The stream stays answered while datagrams go: a ping wants its pong.
                        f = s.rx.recv() => {
                            if let Ok(Some(f)) = f && frames::kind(&f) == Kind::Ping {
                                let _ = s.tx.send(frames::pong()).await;
                            }
                            continue;
                        }
                    }
                    if Instant::now() >= hard_end {
                        break;
                    }
                    let id = (k * per + i) as u64;
                    let frame =
                        format!(r#"{{"type":"event","event":"sys:volatile-echo","data":{id}}}"#);
                    if s.conn.send_datagram(frame.as_bytes()).is_ok() {
                        sent += 1;
                    }
                }
                let until = (Instant::now() + drain).min(hard_end + drain);
                while Instant::now() < until {
                    match tokio::time::timeout_at(until.into(), s.rx.recv()).await {
                        Ok(Ok(Some(f))) if frames::kind(&f) == Kind::Ping => {
                            let _ = s.tx.send(frames::pong()).await;
                        }
                        Ok(Ok(Some(_))) => {}
                        _ => tokio::time::sleep_until(until.into()).await,
                    }
                }
                receiver.abort();
                let back = pool::lock(&back).len() as u64;
                close(&s.conn, &mut s.tx).await;
                (sent, back)
            })
        })
        .collect();
    let (mut sent, mut back) = (0, 0);
    for t in tasks {
        if let Ok((s, b)) = t.await {
            sent += s;
            back += b;
        }
    }
    (sent, back)
}

/// The id a `sys:volatile-echo` datagram carries back.
fn volatile_echo_id(payload: &[u8]) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    (v["event"] == "sys:volatile-echo").then(|| v["data"].as_u64()).flatten()
}

/// Ends a session: `disconnect` on its stream, then the QUIC close.
pub(super) async fn close(conn: &Connection, tx: &mut Tx) {
    let _ = tokio::time::timeout(Duration::from_secs(2), tx.send(frames::disconnect())).await;
    conn.close(0u32.into(), b"");
}
