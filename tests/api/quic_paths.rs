//! WebTransport on networks that misbehave, through the userspace impairment relay: a client
//! whose address changes mid-session (NAT rebinding, Wi-Fi to cellular), loss, delay,
//! reordering and duplication, and a server that is killed and restarted under its clients.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    helpers::{Client, Kind, ServerProcess, TestServer, spawn},
    impair::{ImpairRelay, Impairment},
};

/// A WebTransport client that reaches `server` only through `relay`, connected as `user`.
async fn connect_via(server: &TestServer, relay: &ImpairRelay, user: &str) -> Client {
    let mut c = Client::open(Kind::Wt, server.http, relay.addr, server.cert).await;
    c.send(&json!({"type": "connect", "v": 1, "token": server.token(user)})).await;
    let connected = c.recv().await.expect("a frame after connect");
    assert_eq!(connected["type"], "connected", "{connected}");
    c
}

/// Sends `ids` as `sys:echo` requests without waiting, then reads frames until every ack is
/// in; returns the acked ids in arrival order.
async fn echo_pipelined(c: &mut Client, ids: std::ops::RangeInclusive<u64>) -> Vec<u64> {
    for id in ids.clone() {
        c.send(&json!({"type": "event", "event": "sys:echo", "id": id, "data": {"n": id}})).await;
    }
    let mut acked = Vec::new();
    while acked.len() < ids.clone().count() {
        let f = c.recv().await.expect("session closed while acks were due");
        if f["type"] == "ack" {
            assert_eq!(f["data"]["n"], f["id"], "{f}");
            acked.push(f["id"].as_u64().unwrap());
        }
    }
    acked
}

#[tokio::test]
async fn a_session_survives_its_client_changing_address() {
    let server = spawn(|_| {}).await;
    let relay = ImpairRelay::start(server.wt, Impairment::default()).await.unwrap();
    let mut c = connect_via(&server, &relay, "alice").await;
    assert_eq!(echo_pipelined(&mut c, 1..=20).await, (1..=20).collect::<Vec<_>>());

    // Requests in flight while the path changes under them.
    for id in 21..=40 {
        c.send(&json!({"type": "event", "event": "sys:echo", "id": id, "data": {"n": id}})).await;
    }
    let before = relay.upstream_ports();
    relay.rebind().await.unwrap();
    let after = relay.upstream_ports();
    assert_eq!((before.len(), after.len()), (1, 1));
    assert_ne!(before, after, "the server sees the client from a new port");
    let mut acked = Vec::new();
    while acked.len() < 20 {
        let f = c.recv().await.expect("the session ended on the address change");
        if f["type"] == "ack" {
            acked.push(f["id"].as_u64().unwrap());
        }
    }
    assert_eq!(acked, (21..=40).collect::<Vec<_>>(), "nothing lost, nothing reordered");
    // Still the same session, now answering on the new path.
    assert_eq!(echo_pipelined(&mut c, 41..=60).await, (41..=60).collect::<Vec<_>>());
    assert_eq!(relay.counts().dropped, 0);
}

#[tokio::test]
async fn a_session_survives_five_percent_loss_at_100ms_rtt() {
    // Hundreds of events in a second: more than a socket's default rate allows.
    let server = spawn(|c| c.event_rate_limit = 10_000).await;
    let impairment = Impairment {
        loss: 0.05,
        delay: Duration::from_millis(50),
        jitter: Duration::from_millis(5),
        reorder: 0.02,
        duplicate: 0.01,
        seed: 17,
    };
    let relay = ImpairRelay::start(server.wt, impairment).await.unwrap();
    let mut c = connect_via(&server, &relay, "alice").await;

    // Reliable frames: every one, once, in order, whatever the network did to the packets.
    assert_eq!(echo_pipelined(&mut c, 1..=200).await, (1..=200).collect::<Vec<_>>());

    // Volatile frames ride datagrams: some are lost, which they are allowed to be, and the
    // session does not mind.
    let sent = 200u64;
    for id in 0..sent {
        c.send_datagram(&json!({"type": "event", "event": "sys:volatile-echo", "data": id}));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut received = 0u64;
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let next = tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            c.wt_connection().receive_datagram(),
        )
        .await;
        match next {
            Ok(Ok(d)) => {
                let v: Value = serde_json::from_slice(&d.payload()).unwrap();
                if v["event"] == "sys:volatile-echo" {
                    received += 1;
                }
            }
            _ => break,
        }
    }
    let counts = relay.counts();
    assert!(counts.dropped > 0 && counts.duplicated > 0, "the relay impaired: {counts:?}");
    // Each datagram crosses the relay twice: ~0.95² arrive. Far less means datagrams are
    // dropped somewhere other than the network.
    assert!(received * 100 >= sent * 75, "{received} of {sent} datagrams came back");
    assert!(received < sent, "with 5 % loss some datagrams are lost ({received} of {sent})");
    // The session is still healthy after it.
    assert_eq!(echo_pipelined(&mut c, 201..=210).await, (201..=210).collect::<Vec<_>>());
}

/// After `kill -9`, a server restarted on the same port answers the old connection's next
/// packet with a stateless reset (its key is derived from the shared JWT secret), so the
/// client learns at once that its session is gone instead of waiting out the idle timeout.
#[tokio::test]
async fn a_restarted_server_resets_the_connections_of_the_one_before() {
    let db = std::env::temp_dir()
        .join(format!("rtgate-reset-{}.sqlite", uuid::Uuid::new_v4().simple()))
        .display()
        .to_string();
    let args = ["--sqlite-path", db.as_str()];
    let mut first = ServerProcess::start(&args, &[]).await;
    let c = first.connect(Kind::Wt, "alice").await;
    let (http, wt) = (first.http.to_string(), first.wt.to_string());
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _second = ServerProcess::start_on(&http, &wt, &args, &[]).await;

    // The client's liveness probe: an empty datagram, as client-js sends on a silent path.
    // The client's own retransmissions may have drawn the reset already, which is as good.
    let restarted = Instant::now();
    let _ = c.wt_connection().send_datagram(b"");
    let closed = tokio::time::timeout(Duration::from_secs(2), c.wt_connection().closed())
        .await
        .expect("the restarted server reset the old connection within 2 s");
    assert!(closed.to_string().contains("reset"), "closed by a stateless reset: {closed}");
    assert!(restarted.elapsed() < Duration::from_secs(1), "{:?}", restarted.elapsed());
}

/// Empty datagrams are liveness probes: the session ignores them and carries on.
#[tokio::test]
async fn empty_datagrams_are_ignored() {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(Kind::Wt, "alice").await;
    for _ in 0..5 {
        c.wt_connection().send_datagram(b"").unwrap();
    }
    let ack = c.request(1, "sys:echo", json!("still here")).await;
    assert_eq!((ack["type"].as_str(), ack["data"].as_str()), (Some("ack"), Some("still here")));
}
