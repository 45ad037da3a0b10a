//! The session loop over in-process channels with paused time: deterministic heartbeat
//! and pipeline checks without sockets.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::{
    config::Config,
    dispatch::Router,
    transport::channel::{self, ChannelClient, Written},
};

async fn node(router: Router) -> Arc<Node> {
    let mut cfg = Config::from_env().expect("defaults");
    cfg.jwt.secret = "session-unit".into();
    cfg.ping_interval = Duration::from_secs(25);
    cfg.pong_timeout = Duration::from_secs(20);
    // These tests send no chat events; a lazy in-memory SQLite never opens.
    let chat =
        sqlx::sqlite::SqlitePoolOptions::new().connect_lazy("sqlite::memory:").expect("lazy pool");
    let stores = crate::node::Stores {
        history: Arc::new(crate::store::testing::Fake::default()),
        chat: Arc::new(crate::store::sqlite::SqliteStore::new(chat)),
    };
    Arc::new(Node::with_store(cfg, router, stores).await.expect("node"))
}

fn token(node: &Node) -> String {
    crate::auth::mint_dev_token(&node.config.jwt, "u1", Duration::from_secs(3600), None, vec![])
        .expect("token")
}

async fn next(client: &mut ChannelClient) -> Value {
    match client.rx.recv().await {
        Some(Written::Frame(b)) => serde_json::from_slice(&b).expect("json"),
        other => panic!("expected a frame, got {other:?}"),
    }
}

fn send(client: &ChannelClient, v: Value) {
    client.tx.send(Ok(Bytes::from(v.to_string()))).expect("session alive");
}

async fn connected(node: &Arc<Node>) -> (ChannelClient, tokio::task::JoinHandle<()>) {
    let (transport, mut client) = channel::pair();
    let task = tokio::spawn(run(node.clone(), transport));
    send(&client, json!({"type": "connect", "token": token(node)}));
    assert_eq!(next(&mut client).await["type"], "connected");
    (client, task)
}

#[tokio::test(start_paused = true)]
async fn silent_client_gets_pinged_then_closed_at_interval_plus_timeout() {
    let node = node(Router::new()).await;
    let (mut client, task) = connected(&node).await;
    let t0 = Instant::now();
    assert_eq!(next(&mut client).await["type"], "ping");
    // Timers land on the heartbeat grid (10 ms at a 25 s interval): at most one step late,
    // plus the timer wheel's millisecond.
    let pinged = t0.elapsed();
    assert!(
        pinged >= Duration::from_secs(25) && pinged < Duration::from_millis(25_012),
        "{pinged:?}"
    );
    let d = next(&mut client).await;
    assert_eq!(
        (d["type"].as_str(), d["reason"].as_str()),
        (Some("disconnect"), Some("ping_timeout"))
    );
    let waited = t0.elapsed() - pinged;
    assert!(
        waited >= Duration::from_secs(20) && waited < Duration::from_millis(20_012),
        "{waited:?}"
    );
    assert_eq!(client.rx.recv().await, Some(Written::Closed(3001, "ping_timeout".into())));
    task.await.expect("session ends");
    assert!(node.hub.is_empty());
}

/// A handler that waits a long time must not stop the loop from answering the heartbeat,
/// and events behind it wait their turn (arrival order is kept).
#[tokio::test(start_paused = true)]
async fn slow_handler_does_not_block_heartbeat_and_order_is_kept() {
    let router = Router::new()
        .on("sys:echo", |_ctx: Arc<SessionCtx>, d: Box<serde_json::value::RawValue>| async {
            Ok::<_, EventError>(d)
        })
        .on("test:slow", |_ctx: Arc<SessionCtx>, _: Box<serde_json::value::RawValue>| async {
            tokio::time::sleep(Duration::from_secs(120)).await;
            Ok::<_, EventError>("slow done")
        });
    let node = node(router).await;
    let (mut client, _task) = connected(&node).await;
    send(&client, json!({"type": "event", "event": "test:slow", "id": 1}));
    send(&client, json!({"type": "event", "event": "sys:echo", "id": 2, "data": "after"}));
    // Four heartbeats pass while the slow handler runs; answering them keeps the session.
    for _ in 0..4 {
        assert_eq!(next(&mut client).await["type"], "ping");
        send(&client, json!({"type": "pong"}));
    }
    let first = next(&mut client).await;
    assert_eq!((first["id"].as_u64(), first["data"].as_str()), (Some(1), Some("slow done")));
    let second = next(&mut client).await;
    assert_eq!((second["id"].as_u64(), second["data"].as_str()), (Some(2), Some("after")));
}

#[tokio::test(start_paused = true)]
async fn too_many_pending_events_are_refused_with_overloaded() {
    let router = Router::new()
        .on("sys:echo", |_ctx: Arc<SessionCtx>, d: Box<serde_json::value::RawValue>| async {
            Ok::<_, EventError>(d)
        })
        .on("test:block", |_ctx: Arc<SessionCtx>, _: Box<serde_json::value::RawValue>| async {
            std::future::pending::<()>().await;
            Ok::<_, EventError>(())
        });
    let node = node(router).await;
    let max = node.config.max_pending_events as u64;
    let (mut client, _task) = connected(&node).await;
    send(&client, json!({"type": "event", "event": "test:block", "id": 0}));
    for id in 1..=max + 1 {
        send(&client, json!({"type": "event", "event": "sys:echo", "id": id}));
    }
    let refused = next(&mut client).await;
    assert_eq!(
        (refused["code"].as_str(), refused["id"].as_u64()),
        (Some("overloaded"), Some(max + 1))
    );
}

#[tokio::test(start_paused = true)]
async fn panicking_handler_fails_its_event_and_the_session_stays() {
    let router = Router::new()
        .on("test:panic", |_ctx: Arc<SessionCtx>, _: Box<serde_json::value::RawValue>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, EventError>(())
        })
        .on("sys:echo", |_ctx: Arc<SessionCtx>, d: Box<serde_json::value::RawValue>| async {
            Ok::<_, EventError>(d)
        });
    let node = node(router).await;
    let (mut client, _task) = connected(&node).await;
    send(&client, json!({"type": "event", "event": "test:panic", "id": 1}));
    assert_eq!(next(&mut client).await["code"], "internal_error");
    send(&client, json!({"type": "event", "event": "sys:echo", "id": 2, "data": "alive"}));
    assert_eq!(next(&mut client).await["data"], "alive");
}

#[tokio::test(start_paused = true)]
async fn handler_errors_map_to_codes_and_internal_details_stay_private() {
    let router = Router::new().on(
        "test:fail",
        |_ctx: Arc<SessionCtx>, _: Box<serde_json::value::RawValue>| async {
            Err::<(), _>(EventError::Internal(anyhow::anyhow!("db password is hunter2")))
        },
    );
    let node = node(router).await;
    let (mut client, _task) = connected(&node).await;
    send(&client, json!({"type": "event", "event": "test:fail", "id": 9}));
    let e = next(&mut client).await;
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("internal_error"), Some("internal error"))
    );
    assert!(!e.to_string().contains("hunter2"));
}
