//! `GET /metrics`: every documented series is exposed, and each moves when the server does the
//! thing it counts. The recorder is process-wide and tests run in parallel, so counters are
//! checked as deltas (at least what this test caused) and gauges as lower bounds.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use rstest::rstest;
use rtgate::telemetry::metrics::names;
use serde_json::json;

use crate::{
    cluster::next_event,
    helpers::{
        FAN, Kind, TestServer, channel_publish, expect_closed, fan_namespaces, spawn, subscribe,
    },
    redis_util::{cleanup, keys, redis_url, unique_prefix},
};

/// One scrape, parsed: `name{labels}` → value.
struct Scrape {
    content_type: String,
    text: String,
    series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// The value of the series `name` carrying every label in `labels` (0 if absent: an
    /// unlabelled-yet counter has simply not been registered).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or(0.0)
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .find(|(n, l, _)| {
                n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
    }

    /// Whether the exposition has a `# TYPE` line for `name` of `kind`.
    fn has_type(&self, name: &str, kind: &str) -> bool {
        self.text.lines().any(|l| l == format!("# TYPE {name} {kind}"))
    }
}

fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            // Label values here never contain `,` or `"` (they come from closed sets).
            let labels = labels
                .split(',')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("label=value");
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line}")),
            };
            (name.to_owned(), labels, value)
        })
        .collect()
}

async fn scrape_at(addr: SocketAddr) -> Scrape {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type: ").map(str::to_owned))
        .unwrap_or_default();
    Scrape { content_type, text: body.to_owned(), series: parse(body) }
}

async fn scrape(server: &TestServer) -> Scrape {
    scrape_at(server.http).await
}

/// Scrapes until `ok` holds (teardown runs after the client sees the close), or fails.
async fn eventually(server: &TestServer, what: &str, ok: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = scrape(server).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what} never held:\n{}", s.text);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn transport(kind: Kind) -> &'static str {
    match kind {
        Kind::Ws => "websocket",
        Kind::Wt => "webtransport",
    }
}

#[tokio::test]
async fn every_documented_series_is_exposed_with_its_type() {
    let server = spawn(|_| {}).await;
    // Series with per-value labels (events, disconnect reasons) appear once first counted.
    let (mut c, _) = server.connect(Kind::Ws, "metrics-types").await;
    assert_eq!(c.request(1, "sys:echo", json!(1)).await["type"], "ack");
    c.send(&json!({"type": "disconnect"})).await;
    let _ = c.until_closed().await;
    // And one refused, so the refusals' series exists whatever ran before in this process.
    let mut refused = server.open(Kind::Ws).await;
    refused.send(&json!({"type": "connect", "token": "not-a-token"})).await;
    let _ = refused.until_closed().await;
    let s = eventually(&server, "a disconnect and a refusal counted", |s| {
        s.find("rtgate_disconnects_total", &[("reason", "client_disconnect")]).is_some()
            && s.text.contains("rtgate_handshake_refusals_total{")
    })
    .await;
    assert!(s.content_type.starts_with("text/plain; version=0.0.4"), "{}", s.content_type);
    for name in names::ALL {
        assert!(s.text.contains(&format!("# HELP {name} ")), "{name} has no HELP line");
    }
    for (name, kind) in [
        ("rtgate_connections", "gauge"),
        ("rtgate_connects_total", "counter"),
        ("rtgate_redis_command_duration_seconds", "histogram"),
        ("rtgate_db_writer_queue_depth", "gauge"),
        ("rtgate_outbound_queue_bytes", "gauge"),
        ("rtgate_fanout_deliveries_total", "counter"),
    ] {
        assert!(s.has_type(name, kind), "{name} is not a {kind}");
    }
    // Sampled at scrape: this request's own task is alive on the runtime.
    assert!(s.get("rtgate_runtime_alive_tasks", &[]) >= 1.0);
    assert!(s.find("rtgate_db_writer_queue_depth", &[]).is_some());
    assert!(s.find("rtgate_outbound_queue_bytes_max", &[]).is_some());
}

/// One session over each transport: connect, an echo, a refused payload, a bad frame, an
/// unknown event, then `disconnect`; every counter involved moves.
#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn a_session_moves_its_counters(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let t = transport(kind);
    let echo_ok = [("event", "sys:echo"), ("outcome", "ok")];
    let invalid = [("event", "presence:query"), ("outcome", "validation_failed")];
    let minted = "metrics:never-registered";
    let unknown = [("event", "unknown"), ("outcome", "unknown_event")];
    let left = [("reason", "client_disconnect")];
    let before = scrape(&server).await;

    let (mut c, _) = server.connect(kind, "metrics-user").await;
    let during = scrape(&server).await;
    assert!(
        during.get("rtgate_connects_total", &[("transport", t)])
            >= before.get("rtgate_connects_total", &[("transport", t)]) + 1.0
    );
    assert!(during.get("rtgate_connections", &[("transport", t)]) >= 1.0);

    assert_eq!(c.request(1, "sys:echo", json!({"hi": 1})).await["type"], "ack");
    let refused = c.request(2, "presence:query", json!({"userIds": []})).await;
    assert_eq!(refused["code"], "validation_failed");
    c.send_text("not json").await;
    assert_eq!(c.recv().await.unwrap()["code"], "bad_frame");
    assert_eq!(c.request(3, minted, json!({})).await["code"], "unknown_event");
    c.send(&json!({"type": "disconnect"})).await;
    let _ = c.until_closed().await;

    let after = eventually(&server, "disconnect counted", |s| {
        s.get("rtgate_disconnects_total", &left)
            >= before.get("rtgate_disconnects_total", &left) + 1.0
    })
    .await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        assert!(
            after.get(name, labels) >= before.get(name, labels) + 1.0,
            "{name}{labels:?} did not move:\n{}",
            after.text
        );
    };
    moved("rtgate_events_total", &echo_ok);
    moved("rtgate_events_total", &invalid);
    moved("rtgate_events_total", &unknown);
    moved("rtgate_validation_errors_total", &[("kind", "payload")]);
    moved("rtgate_validation_errors_total", &[("kind", "frame")]);
    assert!(!after.text.contains(minted), "an unknown event name became a label");
}

/// Connections that never go live are counted by why, per transport.
#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn refused_handshakes_are_counted_by_reason(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let t = transport(kind);
    let bad_token = [("transport", t), ("reason", "invalid_token")];
    let before = scrape(&server).await;
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "v": 1, "token": "not-a-jwt"})).await;
    expect_closed(&mut c, "invalid_token", 3501, true).await;
    // Series are process-wide and other tests run alongside, so only growth is asserted.
    eventually(&server, "refusal counted", |s| {
        s.get("rtgate_handshake_refusals_total", &bad_token)
            >= before.get("rtgate_handshake_refusals_total", &bad_token) + 1.0
    })
    .await;
}

#[tokio::test]
async fn rate_limited_events_are_counted_by_scope_and_event() {
    let server = spawn(|c| {
        c.event_rate_limit = 1;
        c.event_rate_window = Duration::from_secs(60);
    })
    .await;
    let limited = [("event", "sys:echo"), ("outcome", "rate_limit_exceeded")];
    let before = scrape(&server).await;
    let (mut c, _) = server.connect(Kind::Ws, "metrics-limited").await;
    assert_eq!(c.request(1, "sys:echo", json!(1)).await["type"], "ack");
    assert_eq!(c.request(2, "sys:echo", json!(2)).await["code"], "rate_limit_exceeded");
    let after = scrape(&server).await;
    let socket = [("scope", "socket")];
    assert!(
        after.get("rtgate_rate_limited_total", &socket)
            >= before.get("rtgate_rate_limited_total", &socket) + 1.0
    );
    assert!(
        after.get("rtgate_events_total", &limited)
            >= before.get("rtgate_events_total", &limited) + 1.0
    );
}

#[tokio::test]
async fn ping_timeouts_are_counted_and_recorded_as_the_disconnect_reason() {
    let server = spawn(|c| {
        c.ping_interval = Duration::from_millis(100);
        c.pong_timeout = Duration::from_millis(100);
    })
    .await;
    let reason = [("reason", "ping_timeout")];
    let before = scrape(&server).await;
    let (mut c, _) = server.connect(Kind::Ws, "metrics-silent").await;
    expect_closed(&mut c, "ping_timeout", 3001, false).await;
    let after = eventually(&server, "ping timeout counted", |s| {
        s.get("rtgate_disconnects_total", &reason)
            >= before.get("rtgate_disconnects_total", &reason) + 1.0
    })
    .await;
    assert!(
        after.get("rtgate_ping_timeouts_total", &[])
            >= before.get("rtgate_ping_timeouts_total", &[]) + 1.0
    );
}

#[tokio::test]
async fn slow_consumer_closes_are_counted() {
    let server = spawn(|c| {
        c.dev_events = true;
        c.namespaces = fan_namespaces();
        c.outbound_queue_bytes = 64 * 1024;
        c.event_rate_limit = 10_000;
    })
    .await;
    let before = scrape(&server).await;
    let firehose = format!("{FAN}:metrics-firehose");
    let (mut victim, _) = server.connect(Kind::Ws, "metrics-victim").await;
    subscribe(&mut victim, 1, &firehose).await;
    let (mut publisher, _) = server.connect(Kind::Ws, "metrics-publisher").await;
    let blob = json!("x".repeat(60_000));
    // The victim reads nothing from here on; 300 × 60 KB overflows its queue and the socket.
    for id in 0..300u64 {
        publisher.send(&channel_publish(id, &firehose, &blob)).await;
    }
    let after = eventually(&server, "slow consumer counted", |s| {
        s.get("rtgate_slow_consumer_closes_total", &[])
            >= before.get("rtgate_slow_consumer_closes_total", &[]) + 1.0
    })
    .await;
    let reason = [("reason", "slow_consumer")];
    assert!(
        after.get("rtgate_disconnects_total", &reason)
            >= before.get("rtgate_disconnects_total", &reason) + 1.0
    );
    // Publications to a channel without history are delivered locally and still published
    // to the broker.
    let channel = [("kind", "channel")];
    assert!(
        after.get("rtgate_fanout_publishes_total", &channel)
            >= before.get("rtgate_fanout_publishes_total", &channel) + 1.0
    );
    let local = [("origin", "local")];
    assert!(
        after.get("rtgate_fanout_deliveries_total", &local)
            >= before.get("rtgate_fanout_deliveries_total", &local) + 1.0
    );
}

/// On Redis: the presence, limiter and broker calls land in the latency histogram, and a
/// channel publication from one instance is a remote delivery on the other.
#[tokio::test]
async fn redis_latency_and_cross_instance_fanout_are_measured() {
    let prefix = unique_prefix("metrics");
    let on_redis = |c: &mut rtgate::config::Config| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.dev_events = true;
        c.namespaces = fan_namespaces();
        c.message_events = vec!["sys:channel-publish".into()];
    };
    let a = spawn(on_redis).await;
    let b = spawn(on_redis).await;
    let count =
        |s: &Scrape, op: &str| s.get("rtgate_redis_command_duration_seconds_count", &[("op", op)]);
    let remote = [("origin", "remote")];
    let before = scrape(&a).await;
    let before_b = scrape(&b).await;

    let channel = format!("{FAN}:metrics");
    let (mut sub, _) = b.connect(Kind::Ws, "metrics-sub").await;
    subscribe(&mut sub, 1, &channel).await;
    let (mut publisher, _) = a.connect(Kind::Wt, "metrics-pub").await;
    let data = json!({"channel": channel, "data": {"n": 1}});
    assert_eq!(publisher.request(2, "sys:channel-publish", data).await["type"], "ack");
    assert_eq!(next_event(&mut sub, "channel:publication").await["data"]["n"], 1);

    let after = scrape(&a).await;
    for op in ["presence_register", "limiter_check", "broker_publish"] {
        assert!(count(&after, op) >= count(&before, op) + 1.0, "{op}:\n{}", after.text);
    }
    // A finite bucket holds the calls: they took well under a second.
    let le1 = [("op", "broker_publish"), ("le", "1")];
    assert!(after.get("rtgate_redis_command_duration_seconds_bucket", &le1) >= 1.0);
    let after_b = scrape(&b).await;
    assert!(
        after_b.get("rtgate_fanout_deliveries_total", &remote)
            >= before_b.get("rtgate_fanout_deliveries_total", &remote) + 1.0
    );
    drop((sub, publisher));
    a.shutdown.cancel();
    b.shutdown.cancel();
    let _ = tokio::join!(a.task, b.task);
    cleanup(&prefix).await;
    assert!(keys(&redis_url(), &prefix).await.is_empty());
}
