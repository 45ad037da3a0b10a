//! `impair`: the impairment relay on its own, for trying a client (a browser, client-js) by
//! hand on a bad network: it listens on an ephemeral loopback UDP port, forwards to the
//! server's WebTransport address with loss, delay, jitter, reordering and duplication, and
//! prints what it did every `--report-every` and at the end. `--rebind-every` moves the
//! server-facing side to new ports periodically, as a NAT rebinding would. Bounded by
//! `--duration` (and `--max-time`).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

use crate::{
    client::Transport,
    impair::{Counts, ImpairRelay, Impairment},
    report::Report,
};

#[derive(clap::Args)]
pub struct Args {
    /// The server's WebTransport address to relay to (default: the global `--wt`).
    #[arg(long)]
    to: Option<SocketAddr>,
    /// Probability that a packet is dropped, each direction.
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// One-way delay.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Extra one-way delay, uniform in 0..=jitter per packet.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// Probability that a packet is held back by one more delay.
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Probability that a packet is sent twice.
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give every client a new server-facing port this often.
    #[arg(long, value_parser = humantime::parse_duration)]
    rebind_every: Option<Duration>,
    /// How long the relay runs.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often to print the counts.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    report_every: Duration,
}

pub async fn run(wt: SocketAddr, a: Args) -> Result<()> {
    let to = a.to.unwrap_or(wt);
    let impairment = Impairment {
        loss: a.loss.clamp(0.0, 1.0),
        delay: a.delay,
        jitter: a.jitter,
        reorder: a.reorder.clamp(0.0, 1.0),
        duplicate: a.duplicate.clamp(0.0, 1.0),
        seed: a.seed,
    };
    let relay = ImpairRelay::start(to, impairment).await.context("starting the relay")?;
    // The line a script or a person waits for: where to point the client.
    println!("RELAY addr={} to={to} url=https://{}/wt", relay.addr, relay.addr);
    let end = Instant::now() + a.duration;
    let mut report = tokio::time::interval(a.report_every.max(Duration::from_millis(100)));
    report.tick().await;
    let rebind_every = a.rebind_every.filter(|d| !d.is_zero());
    let mut rebind = tokio::time::interval(rebind_every.unwrap_or(a.duration));
    rebind.tick().await;
    let mut rebinds = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end.into()) => break,
            _ = report.tick() => {
                let c = relay.counts();
                eprintln!(
                    "forwarded {} dropped {} duplicated {} upstream ports {:?}",
                    c.forwarded, c.dropped, c.duplicated, relay.upstream_ports()
                );
            }
            _ = rebind.tick(), if rebind_every.is_some() => {
                relay.rebind().await.context("rebinding")?;
                rebinds += 1;
                eprintln!("rebound: upstream ports now {:?}", relay.upstream_ports());
            }
        }
    }
    let Counts { forwarded, dropped, duplicated } = relay.counts();
    let mut r = Report::new("impair", "relay", Transport::Wt);
    r.set("addr", relay.addr.to_string())
        .set("to", to.to_string())
        .set("forwarded", forwarded)
        .set("dropped", dropped)
        .set("duplicated", duplicated)
        .set("rebinds", rebinds)
        .set("upstream_ports", relay.upstream_ports());
    r.print();
    Ok(())
}
