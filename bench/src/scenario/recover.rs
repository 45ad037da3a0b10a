//! `recover`: the cost of catching up. One connection publishes `--missed` publications to a
//! channel with history (`sys:channel-publish`, a `--dev-events` server); then, `--rounds`
//! times, a subscriber subscribes with `since` set `--missed` publications back and the time
//! from its `channel:subscribe` to the ack that carries the missed publications is measured,
//! then it unsubscribes. Reports the latency of recovering `--missed` publications.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{
    client::Conn,
    frames::{self, Kind},
    pool::Ctx,
    progress::Progress,
    report::{Latency, Report},
};

#[derive(clap::Args)]
pub struct Args {
    /// The channel (its namespace must keep history and recover, e.g. `benchh:` in
    /// `scripts/bench-channels.toml`).
    #[arg(long, default_value = "benchh:recover")]
    channel: String,
    /// Publications missed, and recovered, per round.
    #[arg(long, default_value_t = 100)]
    missed: u64,
    /// Subscribe/unsubscribe rounds measured.
    #[arg(long, default_value_t = 500)]
    rounds: u64,
    /// Padding per publication, in bytes.
    #[arg(long, default_value_t = 80)]
    payload: usize,
}

/// Sends `frame` and waits for the ack or error with `id`, answering pings; returns the
/// answer's bytes.
async fn ask(conn: &mut Conn, frame: &str, id: u64) -> Result<Vec<u8>> {
    conn.tx.send(frame).await?;
    let id_field = format!(r#""id":{id},"#);
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), conn.rx.recv())
            .await
            .context("no answer")??
            .context("closed")?;
        match frames::kind(&f) {
            Kind::Ping => conn.tx.send(frames::pong()).await?,
            Kind::Ack | Kind::Error
                if f.windows(id_field.len()).any(|w| w == id_field.as_bytes()) =>
            {
                if frames::kind(&f) == Kind::Error {
                    bail!("refused: {}", String::from_utf8_lossy(&f));
                }
                return Ok(f.to_vec());
            }
            _ => {}
        }
    }
}

pub async fn run(ctx: &Ctx, a: Args) -> Result<()> {
    let mut publisher = ctx.target.connect(&ctx.token(0)?).await.context("publisher connect")?;
    let mut subscriber = ctx.target.connect(&ctx.token(1)?).await.context("subscriber connect")?;
    let pad = "x".repeat(a.payload);
    let mut id = 0u64;
    let mut publish = async |publisher: &mut Conn, n: u64| -> Result<(u64, String)> {
        let mut last = (0, String::new());
        for _ in 0..n {
            id += 1;
            let ack = ask(publisher, &frames::channel_publish(id, &a.channel, 0, &pad), id).await?;
            let v: serde_json::Value = serde_json::from_slice(&ack)?;
            let offset = v["data"]["offset"]
                .as_u64()
                .context("publication without an offset: does the namespace keep history?")?;
            last = (offset, v["data"]["epoch"].as_str().unwrap_or_default().to_owned());
        }
        Ok(last)
    };
    let (top, epoch) = publish(&mut publisher, a.missed).await?;
    let since = top.saturating_sub(a.missed);
    let cpu = super::ServerCpu::start(ctx.common.server_pid);
    let progress = Progress::start("recoveries", Some(a.rounds));
    let mut lat = Latency::new();
    let mut recovered_total = 0u64;
    for round in 0..a.rounds {
        let sub_id = 1_000_000 + 2 * round;
        let frame = frames::channel_subscribe(sub_id, &a.channel, Some((since, &epoch)));
        let started = Instant::now();
        let ack = ask(&mut subscriber, &frame, sub_id).await?;
        lat.record(started.elapsed());
        let v: serde_json::Value = serde_json::from_slice(&ack)?;
        if v["data"]["recovered"] != true {
            bail!("round {round}: not recovered: {v}");
        }
        recovered_total += v["data"]["publications"].as_array().map_or(0, |p| p.len() as u64);
        let unsub = serde_json::json!({"type": "event", "event": "channel:unsubscribe", "id": sub_id + 1, "data": {"channel": a.channel}}).to_string();
        ask(&mut subscriber, &unsub, sub_id + 1).await?;
        progress.add(1);
    }
    progress.finish();
    let mut r = Report::new("recover", &ctx.common.target, ctx.common.transport);
    r.set("missed", a.missed)
        .set("rounds", a.rounds)
        .set("recovered_per_round", recovered_total / a.rounds.max(1))
        .latency("", &lat);
    cpu.finish(&mut r);
    publisher.close().await;
    subscriber.close().await;
    r.print();
    Ok(())
}
