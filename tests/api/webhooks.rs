//! Webhooks from outside: lifecycle events arrive signed (checked here with an HMAC of our
//! own, not the server's code), a receiver that is down gets everything once it is back, an
//! endpoint that never accepts ends in dead letters, and events recorded by an instance that
//! is then killed (`kill -9`) before delivering are delivered by the next one.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use base64::Engine;
use rstest::rstest;
use rtgate::store::outbox::DeliveryState;
use serde_json::Value;

use crate::{
    db_util::{Db, TestDb},
    helpers::{Kind, ServerProcess, spawn},
};

const SECRET: &str = "whsec-for-the-tests-0123";

/// What the receiver got, by event id (a redelivery replaces, as a deduplicating app would).
#[derive(Clone, Default)]
pub struct Receiver {
    events: Arc<Mutex<BTreeMap<String, Value>>>,
    attempts: Arc<Mutex<usize>>,
    /// While false, every request is answered 503.
    up: Arc<AtomicBool>,
}

impl Receiver {
    pub async fn start(up: bool) -> (Receiver, SocketAddr) {
        let r = Receiver::default();
        r.up.store(up, Ordering::SeqCst);
        let app = Router::new().route("/hook", post(receive)).with_state(r.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (r, addr)
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().values().cloned().collect()
    }

    /// Waits until `pred` holds for the events received (at most `within`).
    pub async fn wait(&self, within: Duration, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let events = self.events();
            if pred(&events) {
                return events;
            }
            assert!(tokio::time::Instant::now() < deadline, "never happened; got {events:#?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// Checks the signature the way a receiver must, then records the event.
async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    *r.attempts.lock().unwrap() += 1;
    if !r.up.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let (id, ts, sig) =
        (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&body);
    let expected =
        base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, &signed));
    assert_eq!(sig, format!("v1,{expected}"), "bad signature");
    let age = rtgate::state::now_ms() / 1000 - ts.parse::<u64>().unwrap();
    assert!(age <= 300, "timestamp outside the replay window");
    let event: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(event["id"], id.as_str());
    r.events.lock().unwrap().insert(id, event);
    StatusCode::NO_CONTENT
}

fn of<'a>(events: &'a [Value], kind: &str, user: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind && e["data"]["userId"] == user).collect()
}

fn all_four(user: &str) -> impl Fn(&[Value]) -> bool + '_ {
    move |events| {
        ["session.connected", "user.online", "session.disconnected", "user.offline"]
            .iter()
            .all(|k| !of(events, k, user).is_empty())
    }
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test]
async fn lifecycle_events_arrive_signed_even_after_the_receiver_was_down(#[case] db: Db) {
    let (receiver, addr) = Receiver::start(false).await;
    let test_db = TestDb::new(db).await;
    let s = spawn(|c| {
        test_db.apply(c);
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.secret = Some(SECRET.into());
        c.webhooks.backoff = Duration::from_millis(50);
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    let (c, connected) = s.connect(Kind::Ws, "wendy").await;
    drop(c);
    // Down for a while: attempts fail and are retried.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(*receiver.attempts.lock().unwrap() > 0);
    receiver.set_up(true);
    let events = receiver.wait(Duration::from_secs(10), all_four("wendy")).await;
    let connected_event = of(&events, "session.connected", "wendy")[0];
    assert_eq!(connected_event["data"]["sessionId"], connected["sessionId"]);
    let gone = of(&events, "session.disconnected", "wendy")[0];
    assert_eq!(gone["data"]["reason"], "connection_lost", "{gone}");
    for e in &events {
        assert!(e["createdAt"].as_u64().unwrap() > 0 && e["id"].is_string(), "{e}");
    }
    s.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.task).await;
    test_db.cleanup().await;
}

#[tokio::test]
async fn an_endpoint_that_never_accepts_ends_in_dead_letters() {
    let (_receiver, addr) = Receiver::start(false).await;
    let test_db = TestDb::new(Db::Sqlite).await;
    let s = spawn(|c| {
        test_db.apply(c);
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.secret = Some(SECRET.into());
        c.webhooks.backoff = Duration::from_millis(20);
        c.webhooks.max_attempts = 3;
        c.webhooks.events = vec!["user.online".into()];
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    let _c = s.connect(Kind::Ws, "dora").await;
    let store = test_db.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let dead = loop {
        let dead = store.outbox().list(DeliveryState::Dead, 10).await.unwrap();
        if !dead.is_empty() || tokio::time::Instant::now() > deadline {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(dead.len(), 1, "only user.online is configured");
    assert_eq!((dead[0].kind.as_str(), dead[0].attempts), ("user.online", 3));
    assert_eq!(dead[0].last_error.as_deref(), Some("HTTP 503"));
    test_db.cleanup().await;
}

#[tokio::test]
async fn events_recorded_by_an_instance_killed_before_delivery_are_delivered_by_the_next() {
    let (receiver, addr) = Receiver::start(false).await;
    let test_db = TestDb::new(Db::Postgres).await;
    let mut env = test_db.env();
    env.push(("RTGATE_WEBHOOK_URLS", format!("http://{addr}/hook")));
    env.push(("RTGATE_WEBHOOK_SECRET", SECRET.into()));
    env.push(("RTGATE_WEBHOOK_BACKOFF", "100ms".into()));
    env.push(("RTGATE_DB_FLUSH_INTERVAL", "20ms".into()));
    let mut first = ServerProcess::start(&[], &env).await;
    for user in ["kim", "lee"] {
        drop(first.connect(Kind::Ws, user).await);
    }
    // Recorded: every event is in the outbox (delivery keeps failing: the receiver is down).
    let store = test_db.store().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.outbox().list(DeliveryState::Pending, 100).await.unwrap().len() < 8 {
        assert!(tokio::time::Instant::now() < deadline, "events never reached the outbox");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    first.child.kill().unwrap();
    let _ = first.child.wait();
    receiver.set_up(true);
    let _second = ServerProcess::start(&[], &env).await;
    let events =
        receiver.wait(Duration::from_secs(90), |e| all_four("kim")(e) && all_four("lee")(e)).await;
    assert_eq!(events.len(), 8, "{events:#?}");
    test_db.cleanup().await;
}

#[tokio::test]
async fn channels_report_occupied_and_vacated_and_list_while_active() {
    let (receiver, addr) = Receiver::start(true).await;
    let test_db = TestDb::new(Db::Sqlite).await;
    let s = spawn(|c| {
        test_db.apply(c);
        c.api.keys = vec![crate::api_util::KEY.into()];
        c.webhooks.urls = vec![format!("http://{addr}/hook")];
        c.webhooks.secret = Some(SECRET.into());
        c.webhooks.events = vec!["channel.occupied".into(), "channel.vacated".into()];
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    let (mut a, _) = s.connect(Kind::Ws, "ann").await;
    let (mut b, _) = s.connect(Kind::Wt, "bob").await;
    crate::helpers::subscribe(&mut a, 1, "public:room").await;
    crate::helpers::subscribe(&mut b, 1, "public:room").await;
    crate::helpers::subscribe(&mut b, 2, "public:other").await;
    let listed =
        crate::api_util::call(s.http, "channels", serde_json::json!({"pattern": "public:r*"}))
            .await;
    assert_eq!(
        listed["channels"],
        serde_json::json!([{"channel": "public:room", "subscribers": 2}]),
        "{listed}"
    );
    let occupied = |e: &[Value]| e.iter().filter(|e| e["type"] == "channel.occupied").count() == 2;
    receiver.wait(Duration::from_secs(5), occupied).await;
    a.request(3, "channel:unsubscribe", serde_json::json!({"channel": "public:room"})).await;
    drop(b); // its two subscriptions end with the session
    let events = receiver
        .wait(Duration::from_secs(5), |e| {
            e.iter().filter(|e| e["type"] == "channel.vacated").count() == 2
        })
        .await;
    let vacated: Vec<&Value> = events.iter().filter(|e| e["type"] == "channel.vacated").collect();
    let mut channels: Vec<&str> =
        vacated.iter().map(|e| e["data"]["channel"].as_str().unwrap()).collect();
    channels.sort();
    assert_eq!(channels, ["public:other", "public:room"]);
    let listed = crate::api_util::call(s.http, "channels", serde_json::json!({})).await;
    assert_eq!(listed["channels"], serde_json::json!([]), "{listed}");
    test_db.cleanup().await;
}
