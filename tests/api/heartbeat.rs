//! Heartbeat over both transports: pings arrive, pongs keep the session, silence ends it,
//! including a peer that vanishes without closing anything.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::json;

use crate::{
    helpers::{Client, Kind, expect_closed, spawn},
    relay::Relay,
};

const INTERVAL: Duration = Duration::from_millis(300);
const TIMEOUT: Duration = Duration::from_millis(400);

fn fast_heartbeat(c: &mut rtgate::config::Config) {
    c.ping_interval = INTERVAL;
    c.pong_timeout = TIMEOUT;
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn client_that_answers_pings_stays_connected(#[case] kind: Kind) {
    let server = spawn(fast_heartbeat).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    let until = Instant::now() + INTERVAL * 5;
    let mut pings = 0;
    while Instant::now() < until {
        let f = c.recv().await.expect("still connected");
        assert_eq!(f["type"], "ping", "{f}");
        pings += 1;
        c.send(&json!({"type": "pong"})).await;
    }
    assert!(pings >= 3, "{pings} pings");
    assert_eq!(c.request(1, "sys:echo", json!("alive")).await["data"], "alive");
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn client_that_never_pongs_is_closed_within_the_bound(#[case] kind: Kind) {
    let server = spawn(fast_heartbeat).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    let started = Instant::now();
    let frames = expect_closed(&mut c, "ping_timeout", 3001, false).await;
    let elapsed = started.elapsed();
    assert!(frames.iter().any(|f| f["type"] == "ping") || frames.len() == 1);
    // First ping at INTERVAL, deadline TIMEOUT later; allow scheduling slack on a busy box.
    assert!(
        elapsed >= INTERVAL + TIMEOUT - Duration::from_millis(50),
        "closed too early: {elapsed:?}"
    );
    assert!(
        elapsed <= INTERVAL + TIMEOUT + Duration::from_millis(1500),
        "closed too late: {elapsed:?}"
    );
}

/// The peer disappears without a FIN, RST or CONNECTION_CLOSE: the relay between it and the
/// server simply stops forwarding. Only the protocol heartbeat can notice.
#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn vanished_peer_is_detected_by_the_heartbeat(#[case] kind: Kind) {
    let server = spawn(fast_heartbeat).await;
    let relay = match kind {
        Kind::Ws => Relay::tcp(server.http).await,
        Kind::Wt => Relay::udp(server.wt).await,
    };
    let (http, wt) = match kind {
        Kind::Ws => (relay.addr, server.wt),
        Kind::Wt => (server.http, relay.addr),
    };
    let mut c = Client::open(kind, http, wt, server.cert).await;
    c.send(&json!({"type": "connect", "token": server.token("ghost")})).await;
    assert_eq!(c.recv().await.unwrap()["type"], "connected");
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["sessions"].as_object().map(|m| m.len()), Some(1));

    relay.cut();
    let started = Instant::now();
    loop {
        let (_, ready) = server.get("/health/ready").await;
        if ready["sessions"].as_object().is_some_and(|m| m.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < INTERVAL + TIMEOUT + Duration::from_secs(2),
            "vanished peer still registered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
