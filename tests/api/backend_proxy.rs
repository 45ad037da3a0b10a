//! Proxy calls into the application's backend (the in-process `backend`): connect from a
//! cookie on both transports, refresh, subscribe, publish and rpc, the backend's own codes
//! reaching clients, and a backend that hangs or fails costing clients a bounded wait, then
//! (circuit open) none; the session loop answers pings while a call is out.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wtransport::{ClientConfig, Endpoint, endpoint::ConnectOptions, tls::Sha256Digest};

use crate::{
    backend::{self, TestBackend},
    helpers::{Client, Kind, TestServer, WtClient, spawn},
};
use rtgate::config::{NamespaceConfig, Namespaces, SubscribeMode};

async fn server(b: &TestBackend, tweak: impl FnOnce(&mut rtgate::config::Config)) -> TestServer {
    let ns = |name: &str, f: &dyn Fn(&mut NamespaceConfig)| {
        let mut n = NamespaceConfig::new(name);
        f(&mut n);
        n
    };
    let subscribe_url = b.url("/subscribe");
    let namespaces = Namespaces::new([
        ns("proxied", &|n| {
            n.subscribe = SubscribeMode::Proxy;
            n.presence = true;
            n.subscribe_proxy_url = Some(subscribe_url.clone());
        }),
        ns("moderated", &|n| {
            n.client_publish = true;
            n.publish_proxy = true;
            n.history_size = 10;
        }),
        ns("claimed", &|n| n.subscribe = SubscribeMode::Claim),
    ])
    .unwrap();
    let (connect, refresh, publish, rpc) =
        (b.url("/connect"), b.url("/refresh"), b.url("/publish"), b.url("/rpc"));
    spawn(move |c| {
        c.namespaces = namespaces;
        c.proxy.connect_url = Some(connect);
        c.proxy.refresh_url = Some(refresh);
        c.proxy.publish_url = Some(publish);
        c.proxy.rpc_url = Some(rpc);
        c.proxy.timeout = Duration::from_millis(300);
        c.jwt.leeway = Duration::ZERO;
        tweak(c);
    })
    .await
}

/// A connection whose upgrade (or CONNECT) carries `cookie`, with a `connect` frame without
/// a token; returns the first frame.
async fn connect_with_cookie(s: &TestServer, kind: Kind, cookie: &str) -> (Client, Value) {
    let mut c = match kind {
        Kind::Ws => {
            let mut req = format!("ws://{}/ws", s.http).into_client_request().unwrap();
            req.headers_mut().insert("cookie", cookie.parse().unwrap());
            let tcp: Box<dyn crate::helpers::Io> =
                Box::new(tokio::net::TcpStream::connect(s.http).await.unwrap());
            let (ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
            Client::Ws(Box::new(ws))
        }
        Kind::Wt => {
            let cfg = ClientConfig::builder()
                .with_bind_default()
                .with_server_certificate_hashes([Sha256Digest::new(s.cert)])
                .build();
            let endpoint = Endpoint::client(cfg).unwrap();
            let url = format!("https://{}{}", s.wt, rtgate::server::WT_PATH);
            let options = ConnectOptions::builder(url).add_header("cookie", cookie).build();
            let conn = endpoint.connect(options).await.unwrap();
            Client::Wt(Box::new(WtClient::on(conn, endpoint).await))
        }
    };
    c.send(&json!({"type": "connect", "v": 1})).await;
    let first = c.recv().await.unwrap();
    (c, first)
}

#[rstest]
#[case::ws(Kind::Ws)]
#[case::wt(Kind::Wt)]
#[tokio::test]
async fn the_connect_proxy_signs_users_in_from_their_cookie(#[case] kind: Kind) {
    let b = backend::start().await;
    let s = server(&b, |_| {}).await;
    let (mut c, connected) = connect_with_cookie(&s, kind, "theme=dark; session=carol").await;
    assert_eq!(
        (connected["type"].clone(), connected["userId"].clone()),
        (json!("connected"), json!("carol")),
        "{connected}"
    );
    let call = &b.calls.of("connect")[0];
    assert_eq!(call["client"], connected["sessionId"]);
    assert_eq!(call["transport"], if kind == Kind::Ws { "websocket" } else { "webtransport" });
    // The channels the backend granted work as a token's claim.
    let ack = c.request(1, "channel:subscribe", json!({"channel": "claimed:x"})).await;
    assert_eq!(ack["type"], "ack", "{ack}");

    // No session cookie: the backend refuses with its code; do not reconnect.
    let (mut refused, error) = connect_with_cookie(&s, kind, "theme=dark").await;
    assert_eq!(
        (error["code"].clone(), error["message"].clone()),
        (json!("connect_refused"), json!("not signed in")),
        "{error}"
    );
    let d = refused.recv().await.unwrap();
    assert_eq!((d["code"].clone(), d["reconnect"].clone()), (json!(3506), json!(false)), "{d}");
    // A token still works as always.
    let (_, connected) = s.connect(kind, "tokenuser").await;
    assert_eq!(connected["userId"], "tokenuser");
}

#[tokio::test]
async fn a_backend_that_does_not_answer_connect_means_reconnect_later() {
    let b = backend::start().await;
    let hang = b.url("/hang");
    let s = server(&b, |c| c.proxy.connect_url = Some(hang)).await;
    let started = Instant::now();
    let (mut c, error) = connect_with_cookie(&s, Kind::Ws, "session=dan").await;
    assert_eq!(error["code"], "backend_unavailable", "{error}");
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let d = c.recv().await.unwrap();
    assert_eq!((d["code"].clone(), d["reconnect"].clone()), (json!(3011), json!(true)), "{d}");
}

#[tokio::test]
async fn the_refresh_proxy_extends_a_proxied_session() {
    let b = backend::start().await;
    let s = server(&b, |c| c.jwt.refresh_notice = Duration::from_millis(1500)).await;
    let (mut c, connected) = connect_with_cookie(&s, Kind::Ws, "session=erin; expire=2").await;
    assert_eq!(connected["type"], "connected");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(c.request(1, "sys:echo", json!("alive")).await["data"], "alive");
    let calls = b.calls.of("refresh");
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0]["user"], "erin");
}

#[rstest]
#[case::ws(Kind::Ws)]
#[case::wt(Kind::Wt)]
#[tokio::test]
async fn subscribe_publish_and_rpc_go_through_the_backend(#[case] kind: Kind) {
    let b = backend::start().await;
    let s = server(&b, |_| {}).await;
    let (mut c, connected) = s.connect(kind, "fay").await;
    // Subscribe: allowed with the backend's presence info, or refused with its code.
    let ok = c
        .request(1, "channel:subscribe", json!({"channel": "proxied:ok1", "data": {"hi": 1}}))
        .await;
    assert_eq!(ok["type"], "ack", "{ok}");
    let presence = &ok["data"]["presence"][0];
    assert_eq!(presence["data"], json!({"role": "reader"}), "{ok}");
    let sub = &b.calls.of("subscribe")[0];
    assert_eq!(
        (sub["user"].clone(), sub["channel"].clone(), sub["data"].clone()),
        (json!("fay"), json!("proxied:ok1"), json!({"hi": 1}))
    );
    assert_eq!(sub["client"], connected["sessionId"]);
    let no = c.request(2, "channel:subscribe", json!({"channel": "proxied:secret"})).await;
    assert_eq!(
        (no["code"].clone(), no["message"].clone(), no["details"].clone()),
        (json!("app_error"), json!("not your channel"), json!({"appCode": 1403})),
        "{no}"
    );

    // Publish: rewritten, or refused, before it is stored.
    let mut subscriber = s.connect(kind, "gus").await.0;
    crate::helpers::subscribe(&mut subscriber, 1, "moderated:room").await;
    crate::helpers::subscribe(&mut c, 3, "moderated:room").await;
    let spam = c
        .request(
            4,
            "channel:publish",
            json!({"channel": "moderated:room", "data": {"text": "spam!"}}),
        )
        .await;
    assert_eq!(
        (spam["code"].clone(), spam["details"]["appCode"].clone()),
        (json!("app_error"), json!(1400)),
        "{spam}"
    );
    let ack = c
        .request(
            5,
            "channel:publish",
            json!({"channel": "moderated:room", "data": {"text": "oh darn"}}),
        )
        .await;
    assert_eq!(ack["data"]["offset"], 1, "{ack}");
    let p = crate::cluster::next_event(&mut subscriber, "channel:publication").await;
    assert_eq!(p["data"], json!({"text": "oh ****"}));

    // RPC: the backend's result is the ack; its refusal the error.
    let sum = c.request(6, "rpc", json!({"method": "add", "data": {"a": 2, "b": 3}})).await;
    assert_eq!(sum["data"], json!({"sum": 5, "user": "fay"}), "{sum}");
    let fail = c.request(7, "rpc", json!({"method": "fail"})).await;
    assert_eq!(
        (fail["code"].clone(), fail["message"].clone(), fail["details"]["appCode"].clone()),
        (json!("app_error"), json!("it failed"), json!(1500))
    );
    // A code outside 1000–1999 is the backend misbehaving: unavailable, nothing passed on.
    let bad = c.request(8, "rpc", json!({"method": "bad"})).await;
    assert_eq!(bad["code"], "unavailable", "{bad}");
    let invalid = c.request(9, "rpc", json!({"method": "no spaces"})).await;
    assert_eq!(invalid["code"], "validation_failed", "{invalid}");
}

#[tokio::test]
async fn a_hanging_backend_costs_a_bounded_wait_then_none_and_pings_are_answered() {
    let b = backend::start().await;
    let hang = b.url("/hang");
    let s = server(&b, |c| c.proxy.rpc_url = Some(hang)).await;
    let (mut c, _) = s.connect(Kind::Ws, "hal").await;
    // The loop is free while a call is out: a ping sent after the rpc is answered first.
    c.send(&json!({"type": "event", "event": "rpc", "id": 1, "data": {"method": "slow"}})).await;
    c.send(&json!({"type": "ping"})).await;
    let started = Instant::now();
    assert_eq!(c.recv().await.unwrap()["type"], "pong");
    assert!(started.elapsed() < Duration::from_millis(200));
    let first = c.recv().await.unwrap();
    assert_eq!(first["code"], "unavailable", "{first}");
    // Four more timeouts open the circuit; then calls fail at once.
    for id in 2..6 {
        assert_eq!(c.request(id, "rpc", json!({"method": "slow"})).await["code"], "unavailable");
    }
    let started = Instant::now();
    assert_eq!(c.request(9, "rpc", json!({"method": "slow"})).await["code"], "unavailable");
    assert!(started.elapsed() < Duration::from_millis(100), "{:?}", started.elapsed());
    assert_eq!(b.calls.of("hang").len(), 5, "the open circuit sent nothing");
}

#[tokio::test]
async fn calls_in_flight_are_bounded_per_backend() {
    let b = backend::start().await;
    let hang = b.url("/hang");
    let s = server(&b, |c| {
        c.proxy.rpc_url = Some(hang);
        c.proxy.max_in_flight = 2;
        c.proxy.timeout = Duration::from_secs(2);
    })
    .await;
    let mut clients = Vec::new();
    for i in 0..2 {
        let (mut c, _) = s.connect(Kind::Ws, &format!("u{i}")).await;
        c.send(&json!({"type": "event", "event": "rpc", "id": 1, "data": {"method": "slow"}}))
            .await;
        clients.push(c);
    }
    // Both calls are out (the backend saw them) before the third asks.
    let deadline = Instant::now() + Duration::from_secs(2);
    while b.calls.of("hang").len() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut third, _) = s.connect(Kind::Ws, "u3").await;
    let started = Instant::now();
    assert_eq!(third.request(1, "rpc", json!({"method": "slow"})).await["code"], "unavailable");
    assert!(started.elapsed() < Duration::from_millis(200), "{:?}", started.elapsed());
}
