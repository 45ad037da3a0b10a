//! `rtgate-bench`: a load generator for rtgate (and for the raw baseline server in
//! `examples/raw_server.rs`, which speaks the same frames) over WebSocket or WebTransport, and
//! for the Socket.IO peer (`--protocol socketio`).
//! Every scenario is bounded in count and time and prints one JSON summary line on stdout and
//! a table on stderr. See BENCHMARKS.md for how the numbers are taken.

mod client;
mod frames;
mod http;
mod impair;
mod pool;
mod progress;
mod redis_probe;
mod report;
mod scenario;

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::client::{Target, Transport};

#[derive(Parser)]
#[command(
    name = "rtgate-bench",
    about = "Load generator for rtgate over WebSocket and WebTransport"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options every scenario shares.
#[derive(clap::Args, Clone)]
pub struct Common {
    /// Label for the server under test, copied into the report (`rtgate`, `raw`, …).
    #[arg(long, global = true, default_value = "rtgate")]
    pub target: String,
    #[arg(long, global = true, value_enum, default_value = "ws")]
    pub transport: Transport,
    /// The protocol spoken: rtgate's frames (rtgate and the raw baseline) or Socket.IO 4 (the
    /// Socket.IO peer in anchors/socketio-bench; WebSocket only).
    #[arg(long, global = true, value_enum, default_value = "rtgate")]
    pub protocol: frames::Protocol,
    /// TCP address of the server's HTTP/WebSocket listener.
    #[arg(long, global = true, default_value = "127.0.0.1:3000")]
    pub http: SocketAddr,
    /// UDP address of the server's WebTransport listener.
    #[arg(long, global = true, default_value = "127.0.0.1:4433")]
    pub wt: SocketAddr,
    /// SHA-256 (hex) of the server's WebTransport certificate; fetched from `/cert-hash` if unset.
    #[arg(long, global = true)]
    pub cert_hash: Option<String>,
    /// Number of loopback source addresses (127.0.0.1, .2, …) WebSocket connections spread
    /// over; each gives ~28k ports towards one server port.
    #[arg(long, global = true, default_value_t = 1)]
    pub source_ips: u8,
    /// WebTransport client endpoints (UDP sockets) the connections spread over.
    #[arg(long, global = true, default_value_t = 2)]
    pub wt_endpoints: usize,
    /// PID of the server, to report its RSS and CPU time.
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Users are named `<prefix><n>`, one per connection.
    #[arg(long, global = true, default_value = "bench-")]
    pub user_prefix: String,
    /// Hard limit on the whole run; a scenario still running is abandoned with an error.
    #[arg(long, global = true, default_value = "600s", value_parser = humantime::parse_duration)]
    pub max_time: Duration,
    /// Worker threads of the load generator's runtime (0: one per core).
    #[arg(long, global = true, default_value_t = 0)]
    pub threads: usize,
    #[command(flatten)]
    pub jwt: rtgate::config::JwtConfig,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N connections, hold them, report the server's RSS per connection.
    Idle(scenario::idle::Args),
    /// Acked `sys:echo`: closed loop (`--rate 0`) or a fixed total rate; latency and throughput.
    Echo(scenario::echo::Args),
    /// N receivers on one channel, one publisher; deliveries per second and publish→receive latency.
    Fanout(scenario::fanout::Args),
    /// Connection storm with the full handshake; connects per second.
    Connect(scenario::connect::Args),
    /// Connect, one acked echo, disconnect, in a loop for a duration.
    Churn(scenario::churn::Args),
    /// Subscribe with `since` N publications back, repeatedly; the latency of recovering them.
    Recover(scenario::recover::Args),
    /// `fanout` with the publications POSTed to the server API by concurrent HTTP callers.
    Apipublish(scenario::apipublish::Args),
    /// Calls to a backend the load generator runs: direct, and as `rpc` events through the
    /// server's RPC proxy; the latency of each and the difference.
    Rpc(scenario::rpc::Args),
    /// Sessions opened and closed as fast as possible; the lifecycle webhooks' delivery rate
    /// to a receiver the load generator runs.
    Webhooks(scenario::webhooks::Args),
    /// WebTransport through the impairment relay at each loss level: sequential acked echo
    /// latency, datagram delivery, and independent flows on one stream against a stream each.
    Lossy(scenario::lossy::Args),
    /// The impairment relay alone, in front of the server's WebTransport address, for trying
    /// clients by hand (not a measurement): prints where to connect and what it dropped.
    Impair(scenario::relay::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if cli.common.threads > 0 {
        rt.worker_threads(cli.common.threads);
    }
    let rt = match rt.build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let max = cli.common.max_time;
    let result = rt.block_on(async move {
        tokio::time::timeout(max, run(cli)).await.context("the run exceeded --max-time")?
    });
    // Connections still held by abandoned tasks are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    raise_nofile();
    if let Scenario::Impair(a) = cli.scenario {
        return scenario::relay::run(cli.common.wt, a).await;
    }
    let c = &cli.common;
    if c.protocol == frames::Protocol::Socketio && c.transport != Transport::Ws {
        anyhow::bail!("--protocol socketio runs over WebSocket only");
    }
    let rtgate_only =
        matches!(cli.scenario, Scenario::Apipublish(_) | Scenario::Rpc(_) | Scenario::Webhooks(_));
    if c.protocol == frames::Protocol::Socketio && rtgate_only {
        anyhow::bail!("apipublish, rpc and webhooks measure rtgate's backend features only");
    }
    frames::set_protocol(c.protocol);
    let cert = match (&c.cert_hash, c.transport) {
        (Some(hex), _) => Some(client::parse_hex32(hex)?),
        (None, Transport::Wt) => Some(client::fetch_cert_hash(c.http).await?),
        (None, Transport::Ws) => None,
    };
    let sources = (1..=c.source_ips.max(1))
        .map(|i| std::net::IpAddr::from([127, 0, 0, i]))
        .filter(|_| c.http.ip().is_loopback() && c.source_ips > 1)
        .collect();
    let target = Target::new(
        c.transport,
        c.http,
        format!("https://{}/wt", c.wt),
        sources,
        cert,
        c.wt_endpoints,
    )?;
    let ctx = pool::Ctx::new(c.clone(), target);
    match cli.scenario {
        Scenario::Idle(a) => scenario::idle::run(&ctx, a).await,
        Scenario::Echo(a) => scenario::echo::run(&ctx, a).await,
        Scenario::Fanout(a) => scenario::fanout::run(&ctx, a).await,
        Scenario::Connect(a) => scenario::connect::run(&ctx, a).await,
        Scenario::Churn(a) => scenario::churn::run(&ctx, a).await,
        Scenario::Recover(a) => scenario::recover::run(&ctx, a).await,
        Scenario::Apipublish(a) => scenario::apipublish::run(&ctx, a).await,
        Scenario::Rpc(a) => scenario::rpc::run(&ctx, a).await,
        Scenario::Webhooks(a) => scenario::webhooks::run(&ctx, a).await,
        Scenario::Lossy(a) => scenario::lossy::run(&ctx, a).await,
        Scenario::Impair(a) => scenario::relay::run(ctx.common.wt, a).await,
    }
}

/// Raises the open-file limit as far as allowed: 100k connections need 100k descriptors.
fn raise_nofile() {
    let want = 1_048_576;
    let Ok((soft, hard)) = rlimit::Resource::NOFILE.get() else { return };
    // Root may raise the hard limit too; otherwise the soft limit goes up to the hard one.
    if rlimit::Resource::NOFILE.set(want.max(soft), want.max(hard)).is_err() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}
