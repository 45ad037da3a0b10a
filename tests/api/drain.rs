//! The drain: after SIGTERM (or the shutdown token) and until the last session has closed, the
//! HTTP listener keeps answering — `/health/ready` with `503 draining`, `/ws` with `503` — so a
//! load balancer and a reconnecting client see an answer, not a refused connection. Only after
//! the drain does the listener close.

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    helpers::{Client, FAN, FanConfig, Kind, ServerProcess, fan_namespaces, spawn, subscribe},
    raw_http::{request, ws},
};

const GRACE: Duration = Duration::from_secs(3);

/// Makes `stalled` a session the drain must wait for: it subscribes to a channel and then
/// reads nothing while 30 MB of publications are queued for it, far more than the socket
/// buffers hold, so its `server_shutdown` goodbye waits behind them for up to
/// `--shutdown-grace`.
async fn stall(stalled: &mut Client, publisher: &mut Client) {
    let channel = format!("{FAN}:drain");
    subscribe(stalled, 1, &channel).await;
    let blob = "x".repeat(60_000);
    for id in 0..500u64 {
        let data = json!({"channel": channel, "data": blob});
        let ack = publisher.request(id, "sys:channel-publish", data).await;
        assert_eq!(ack["type"], "ack", "{ack}");
    }
}

const STALL_FLAGS: [&str; 8] = [
    "--dev-events",
    "--outbound-queue-bytes",
    "67108864",
    "--event-rate-limit",
    "100000",
    "--shutdown-grace",
    "3s",
    "--log=warn",
];

/// Polls the listener for `span` after shutdown began: every `/health/ready` is `503 draining`
/// and every `/ws` upgrade a `503`, each over a new TCP connection.
async fn assert_answers_while_draining(http: SocketAddr, span: Duration) {
    let until = Instant::now() + span;
    let mut rounds = 0;
    while Instant::now() < until {
        let ready = request(http, b"", "/health/ready", &[]).await;
        let (status, body) = ready.unwrap_or_else(|e| panic!("/health/ready while draining: {e}"));
        assert_eq!((status, body["status"].as_str()), (503, Some("draining")), "{body}");
        match ws(http, b"", &[]).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
                assert_eq!(resp.status(), 503)
            }
            Err(e) => panic!("/ws while draining: {e}"),
            Ok(_) => panic!("/ws upgraded while draining"),
        }
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(rounds >= 3, "only {rounds} rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_answers_503_during_the_drain_then_closes() {
    let server = spawn(|c| {
        c.dev_events = true;
        c.namespaces = fan_namespaces();
        c.outbound_queue_bytes = 64 << 20;
        c.event_rate_limit = 100_000;
        c.shutdown_grace = GRACE;
    })
    .await;
    let (mut stalled, _) = server.connect(Kind::Ws, "stalled").await;
    let (mut publisher, _) = server.connect(Kind::Ws, "publisher").await;
    stall(&mut stalled, &mut publisher).await;
    let started = Instant::now();
    server.shutdown.cancel();
    assert_answers_while_draining(server.http, Duration::from_millis(1500)).await;
    assert!(!server.task.is_finished(), "the stalled session holds the drain");
    let result = tokio::time::timeout(GRACE + Duration::from_secs(5), server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "server did not stop cleanly: {result:?}");
    assert!(started.elapsed() >= GRACE - Duration::from_millis(500), "{:?}", started.elapsed());
    assert!(
        tokio::net::TcpStream::connect(server.http).await.is_err(),
        "the listener closes after the drain"
    );
    drop(stalled);
}

/// The real binary, the real signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_keeps_the_listener_answering_503_through_the_drain() {
    let conf = FanConfig::write();
    let flags: Vec<&str> = STALL_FLAGS.into_iter().chain(["--config", conf.path()]).collect();
    let mut server = ServerProcess::start(&flags, &[]).await;
    let mut stalled = server.connect(Kind::Ws, "stalled").await;
    let mut publisher = server.connect(Kind::Ws, "publisher").await;
    stall(&mut stalled, &mut publisher).await;
    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    // Give the signal a moment to land, so the polls below see the drain, not the time before.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_answers_while_draining(server.http, Duration::from_millis(1500)).await;
    let exit = tokio::task::block_in_place(|| server.child.wait()).unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    assert!(tokio::net::TcpStream::connect(server.http).await.is_err());
    drop(stalled);
}
