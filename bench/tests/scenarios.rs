//! Keeps the load generator from rotting: every scenario runs for a moment against a real
//! rtgate (in this process, on port 0) and must print one parseable JSON summary with
//! nonzero results. Sizes and durations are tiny; nothing here asserts timing.

use std::{net::SocketAddr, process::Command, time::Duration};

use rtgate::{config::Config, server::Server};
use serde_json::Value;

const SECRET: &str = "bench-test-secret";

struct Running {
    http: SocketAddr,
    wt: SocketAddr,
    cert_hex: String,
    shutdown: tokio_util::sync::CancellationToken,
}

async fn spawn_server() -> Running {
    spawn_server_with(|_| {}).await
}

/// A server configured as `spawn_server`'s, then by `configure`.
async fn spawn_server_with(configure: impl FnOnce(&mut Config)) -> Running {
    // The benchmark servers' namespaces (`bench:` for fanout), as scripts/bench passes them.
    let namespaces = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/bench-channels.toml");
    let mut c = Config::load(["rtgate", "--config", namespaces]).expect("bench config");
    c.http_addr = "127.0.0.1:0".parse().expect("addr");
    c.wt_addr = "127.0.0.1:0".parse().expect("addr");
    c.jwt.secret = SECRET.into();
    c.redis_url = None;
    c.database_url = None;
    c.dev_events = true;
    c.connect_rate_per_ip = 1_000_000;
    c.event_rate_limit = 1_000_000_000;
    c.shutdown_grace = Duration::from_secs(1);
    c.sqlite_path = std::env::temp_dir().join(format!(
        "rtgate-bench-test-{}-{}.sqlite",
        std::process::id(),
        rand_suffix()
    ));
    configure(&mut c);
    let server = Server::bind(c).await.expect("server binds");
    let running = Running {
        http: server.http_addr(),
        wt: server.wt_addr(),
        cert_hex: server.cert_sha256().iter().map(|b| format!("{b:02x}")).collect(),
        shutdown: server.shutdown_token(),
    };
    tokio::spawn(server.run());
    running
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// Runs the load generator binary and returns its JSON summary.
async fn bench(s: &Running, transport: &str, args: &[&str]) -> Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rtgate-bench"));
    cmd.args(["--transport", transport, "--http", &s.http.to_string(), "--wt", &s.wt.to_string()])
        .args(["--cert-hash", &s.cert_hex, "--jwt-secret", SECRET, "--max-time", "60s"])
        .args(["--server-pid", &std::process::id().to_string(), "--threads", "1"])
        .args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output()).await.expect("join").expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rtgate-bench {args:?} failed: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line, got {stdout:?}");
    serde_json::from_str(lines[0]).expect("the summary is JSON")
}

fn num(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("`{key}` missing or not a number in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_closed_loop_over_both_transports_reports_throughput_and_latency() {
    let s = spawn_server().await;
    for transport in ["ws", "wt"] {
        let r = bench(
            &s,
            transport,
            &["echo", "--conns", "2", "--duration", "500ms", "--warmup", "100ms"],
        )
        .await;
        assert_eq!(r["scenario"], "echo_closed_loop");
        assert_eq!(r["transport"], transport);
        assert!(num(&r, "acked") > 0.0, "{r}");
        assert!(num(&r, "msgs_per_s") > 0.0, "{r}");
        assert!(num(&r, "p99_us") >= num(&r, "p50_us"), "{r}");
        assert_eq!(num(&r, "errors"), 0.0, "{r}");
        assert_eq!(num(&r, "failures"), 0.0, "{r}");
    }
    s.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_echo_fanout_recover_connect_churn_and_idle_produce_results() {
    let s = spawn_server().await;
    let r = bench(
        &s,
        "ws",
        &["echo", "--conns", "2", "--rate", "200", "--duration", "500ms", "--warmup", "100ms"],
    )
    .await;
    assert_eq!(r["scenario"], "echo_fixed_rate");
    assert!(num(&r, "acked") > 0.0, "{r}");

    let r =
        bench(&s, "ws", &["fanout", "--receivers", "3", "--duration", "300ms", "--drain", "1s"])
            .await;
    assert_eq!(num(&r, "receivers"), 3.0, "{r}");
    assert!(num(&r, "published") > 0.0, "{r}");
    // Every acked publish reached every receiver: the channel and the counting both work.
    assert_eq!(r["via"], "bench:fanout", "{r}");
    assert_eq!(num(&r, "delivered"), num(&r, "expected"), "{r}");
    // Through a channel with history, then recovering publications missed on it.
    let history = ["--channel", "benchh:fanout"];
    let fanout = ["fanout", "--receivers", "3", "--duration", "300ms", "--drain", "1s"];
    let r = bench(&s, "ws", &[&fanout[..], &history[..]].concat()).await;
    assert!(num(&r, "published") > 0.0, "{r}");
    assert_eq!(num(&r, "delivered"), num(&r, "expected"), "{r}");
    let r = bench(&s, "ws", &["recover", "--missed", "5", "--rounds", "3"]).await;
    assert_eq!(num(&r, "recovered_per_round"), 5.0, "{r}");

    let r = bench(&s, "wt", &["connect", "--n", "5", "--concurrency", "2"]).await;
    assert_eq!(num(&r, "connected"), 5.0, "{r}");
    assert!(num(&r, "connects_per_s") > 0.0, "{r}");

    let r = bench(&s, "ws", &["churn", "--concurrency", "2", "--duration", "300ms"]).await;
    assert!(num(&r, "cycles") > 0.0, "{r}");

    let r = bench(&s, "ws", &["idle", "--n", "5", "--settle", "100ms"]).await;
    assert_eq!(num(&r, "held"), 5.0, "{r}");
    assert!(num(&r, "rss_after") > 0.0, "{r}");

    // Through the impairment relay: a clean level and a lossy one; every echo answered.
    let lossy = [
        "lossy",
        "--loss",
        "0,0.05",
        "--delay",
        "5ms",
        "--sessions",
        "2",
        "--requests",
        "10",
        "--datagrams",
        "50",
        "--flows",
        "2",
        "--flow-requests",
        "10",
        "--drain",
        "500ms",
    ];
    let r = bench(&s, "wt", &lossy).await;
    assert_eq!(num(&r, "loss0_echo_samples"), 20.0, "{r}");
    assert_eq!(num(&r, "loss0_relay_dropped"), 0.0, "{r}");
    assert_eq!(num(&r, "loss5_echo_unanswered"), 0.0, "{r}");
    assert_eq!(num(&r, "loss5_flows_shared_samples"), 20.0, "{r}");
    assert!(num(&r, "loss0_dgram_back") > 0.0, "{r}");
    s.shutdown.cancel();
}

/// A loopback port free a moment ago (for the backends the load generator runs, whose URLs
/// the server must know before they listen).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("its address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_scenarios_apipublish_rpc_and_webhooks_produce_results() {
    const KEY: &str = "bench-test-api-key-0123456789";
    let (rpc, hooks) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let (rpc_url, hooks_url) = (format!("http://{rpc}/rpc"), format!("http://{hooks}/hooks"));
    let s = spawn_server_with(|c| {
        c.api.keys = vec![KEY.into()];
        c.proxy.rpc_url = Some(rpc_url);
        c.webhooks.urls = vec![hooks_url];
        c.webhooks.secret = Some("bench-test-webhook-secret".into());
    })
    .await;

    // Publications from the server API reach every receiver.
    let r = bench(
        &s,
        "ws",
        &[
            "apipublish",
            "--receivers",
            "3",
            "--callers",
            "2",
            "--duration",
            "300ms",
            "--drain",
            "1s",
            "--api-key",
            KEY,
        ],
    )
    .await;
    assert_eq!(r["scenario"], "apipublish");
    assert!(num(&r, "published") > 0.0, "{r}");
    assert_eq!(num(&r, "delivered"), num(&r, "expected"), "{r}");
    assert_eq!(num(&r, "api_errors"), 0.0, "{r}");
    assert!(num(&r, "p99_us") >= num(&r, "p50_us"), "{r}");

    // RPC calls, direct and through the proxy, at two levels.
    let r = bench(
        &s,
        "ws",
        &[
            "rpc",
            "--concurrency",
            "1,2",
            "--duration",
            "300ms",
            "--slice",
            "100ms",
            "--warmup",
            "50ms",
            "--backend",
            &rpc,
        ],
    )
    .await;
    for c in ["c1", "c2"] {
        for path in ["direct", "rtgate"] {
            assert!(num(&r, &format!("{c}_{path}_calls")) > 0.0, "{r}");
        }
        assert!(r[format!("{c}_overhead_p99_us")].is_i64(), "{r}");
    }
    assert_eq!(num(&r, "errors"), 0.0, "{r}");

    // Every session's four lifecycle events reach the receiver.
    let r = bench(
        &s,
        "ws",
        &[
            "webhooks",
            "--sessions",
            "5",
            "--concurrency",
            "2",
            "--drain",
            "20s",
            "--receiver",
            &hooks,
        ],
    )
    .await;
    assert_eq!(num(&r, "sessions"), 5.0, "{r}");
    assert_eq!(num(&r, "events"), 20.0, "{r}");
    assert_eq!(num(&r, "unsigned"), 0.0, "{r}");
    for kind in ["session.connected", "session.disconnected", "user.online", "user.offline"] {
        assert_eq!(r["by_type"][kind], 5, "{r}");
    }
    s.shutdown.cancel();
}
