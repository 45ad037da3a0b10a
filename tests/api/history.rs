//! Connection and presence history over both databases: every exit path closes its row with
//! its reason, presence rows follow cluster-wide transitions, the API enforces who may read
//! what, retention deletes only old rows, and a database outage loses nothing in the buffer.

use std::time::{Duration, Instant};

use rstest::rstest;
use rtgate::store::{ConnectionRow, HistoryQuery, Store};
use serde_json::json;

use crate::{
    db_util::{Db, Gate, TestDb},
    helpers::{
        FAN, Kind, ServerProcess, TestServer, channel_publish, expect_closed, fan_namespaces,
        http_get_auth, spawn, subscribe,
    },
    redis_util::{cleanup, redis_url, unique_prefix},
};

fn everything(user: &str) -> HistoryQuery {
    HistoryQuery {
        user_id: user.into(),
        from_ms: i64::MIN,
        to_ms: i64::MAX,
        before_id: None,
        limit: 100,
    }
}

/// Polls until `user` has a closed connection row; returns it.
async fn closed_row(store: &dyn Store, user: &str) -> ConnectionRow {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rows = store.connections(&everything(user)).await.unwrap_or_default();
        if let Some(r) = rows.into_iter().find(|r| r.disconnect_reason.is_some()) {
            return r;
        }
        assert!(Instant::now() < deadline, "no closed row for {user}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn token(server: &TestServer, user: &str, admin: bool) -> String {
    let roles = if admin { vec!["admin".to_owned()] } else { vec![] };
    rtgate::auth::mint_dev_token(&server.config.jwt, user, Duration::from_secs(600), None, roles)
        .unwrap()
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_exit_path_closes_its_row_with_its_reason(#[case] db: Db) {
    let tdb = TestDb::new(db).await;
    let server = spawn(|c| {
        tdb.apply(c);
        c.ping_interval = Duration::from_millis(300);
        c.pong_timeout = Duration::from_millis(300);
        c.jwt.leeway = Duration::ZERO;
        c.event_rate_limit = 5;
        c.rate_limit_flood_factor = 1;
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    let store = tdb.store().await;

    let (mut c, _) = server.connect(Kind::Ws, "left").await;
    c.send(&json!({"type": "disconnect"})).await;
    let (c, _) = server.connect(Kind::Wt, "dropped").await;
    drop(c);
    let (mut silent, _) = server.connect(Kind::Wt, "silent").await;
    let mut expiring = server.open(Kind::Ws).await;
    expiring.send(&json!({"type": "connect", "token": server.token_for("expiring", Duration::from_secs(1))})).await;
    // The expiring client keeps answering pings, so only its token can end it.
    let expiring_task = tokio::spawn(async move {
        loop {
            match expiring.recv().await {
                Some(f) if f["type"] == "ping" => expiring.send(&json!({"type": "pong"})).await,
                Some(f) if f["type"] == "disconnect" => {
                    assert_eq!(f["reason"], "token_expired");
                    return;
                }
                Some(_) => {}
                None => panic!("closed without a disconnect frame"),
            }
        }
    });
    let (mut flooder, _) = server.connect(Kind::Ws, "flooder").await;
    for id in 0..20u64 {
        flooder.send(&json!({"type": "event", "event": "sys:echo", "id": id})).await;
    }
    expect_closed(&mut flooder, "rate_limit_flood", 3006, false).await;
    expect_closed(&mut silent, "ping_timeout", 3001, false).await;
    expiring_task.await.unwrap();

    for (user, reason) in [
        ("left", "client_disconnect"),
        ("dropped", "connection_lost"),
        ("silent", "ping_timeout"),
        ("expiring", "token_expired"),
        ("flooder", "rate_limit_flood"),
    ] {
        let row = closed_row(store.as_ref(), user).await;
        assert_eq!(row.disconnect_reason.as_deref(), Some(reason), "{user}");
        assert!(row.disconnected_at_ms.unwrap() >= row.opened.connected_at_ms);
    }
    let row = closed_row(store.as_ref(), "left").await;
    assert_eq!(
        (row.opened.transport.as_str(), row.opened.ip_address.as_str()),
        ("websocket", "127.0.0.1")
    );

    // Shutdown closes what is still open, with its own reason, before the process exits.
    let (_stay, _) = server.connect(Kind::Wt, "stayed").await;
    closed_or_open(store.as_ref(), "stayed").await;
    server.shutdown.cancel();
    let _ = server.task.await;
    let row = closed_row(store.as_ref(), "stayed").await;
    assert_eq!(row.disconnect_reason.as_deref(), Some("server_shutdown"));
    assert_eq!(row.opened.transport, "webtransport");
    tdb.cleanup().await;
}

/// Waits for the open row of `user` to be written.
async fn closed_or_open(store: &dyn Store, user: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.connections(&everything(user)).await.unwrap_or_default().is_empty() {
        assert!(Instant::now() < deadline, "no row for {user}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test]
async fn slow_consumer_row_is_closed_with_slow_consumer(#[case] db: Db) {
    let tdb = TestDb::new(db).await;
    let server = spawn(|c| {
        tdb.apply(c);
        c.dev_events = true;
        c.namespaces = fan_namespaces();
        c.outbound_queue_bytes = 64 * 1024;
        c.event_rate_limit = 10_000;
    })
    .await;
    let firehose = format!("{FAN}:firehose");
    let (mut victim, _) = server.connect(Kind::Ws, "victim").await;
    subscribe(&mut victim, 1, &firehose).await;
    let (mut publisher, _) = server.connect(Kind::Ws, "publisher").await;
    let blob = json!("x".repeat(60_000));
    // The victim reads nothing from here on; 300 × 60 KB overflows its queue and the socket.
    for id in 0..300u64 {
        publisher.send(&channel_publish(id, &firehose, &blob)).await;
    }
    let store = tdb.store().await;
    let row = closed_row(store.as_ref(), "victim").await;
    assert_eq!(row.disconnect_reason.as_deref(), Some("slow_consumer"));
    tdb.cleanup().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_instance_rows_are_closed_as_instance_lost(#[case] db: Db) {
    let tdb = TestDb::new(db).await;
    let prefix = unique_prefix("lost");
    let survivor = spawn(|c| {
        tdb.apply(c);
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.liveness_ttl = Duration::from_millis(900);
        c.cleanup_interval = Duration::from_millis(300);
    })
    .await;
    let mut env = tdb.env();
    env.push(("REDIS_URL", redis_url()));
    env.push(("RTGATE_REDIS_PREFIX", prefix.clone()));
    env.push(("RTGATE_DB_FLUSH_INTERVAL", "10ms".into()));
    let mut victim = ServerProcess::start(&["--liveness-ttl", "900ms"], &env).await;
    let _c = victim.connect(Kind::Ws, "crashed").await;
    let store = tdb.store().await;
    closed_or_open(store.as_ref(), "crashed").await;
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let row = closed_row(store.as_ref(), "crashed").await;
    assert_eq!(row.disconnect_reason.as_deref(), Some("instance_lost"));
    drop(survivor);
    cleanup(&prefix).await;
    tdb.cleanup().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test]
async fn presence_history_has_one_row_per_cluster_transition(#[case] db: Db) {
    let tdb = TestDb::new(db).await;
    let server = spawn(|c| {
        tdb.apply(c);
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    let (mut phone, _) = server.connect(Kind::Ws, "multi").await;
    let (mut laptop, _) = server.connect(Kind::Wt, "multi").await;
    phone.send(&json!({"type": "disconnect"})).await;
    phone.until_closed().await;
    laptop.send(&json!({"type": "disconnect"})).await;
    laptop.until_closed().await;
    let tok = token(&server, "multi", false);
    let deadline = Instant::now() + Duration::from_secs(10);
    let items = loop {
        let (status, body) =
            http_get_auth(server.http, "/api/users/multi/presence-history", Some(&tok)).await;
        assert_eq!(status, 200, "{body}");
        let items = body["items"].as_array().cloned().unwrap_or_default();
        if items.len() >= 2 {
            break items;
        }
        assert!(Instant::now() < deadline, "presence rows missing: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Newest first: offline (caused by the laptop, the last device), then online (the phone).
    let statuses: Vec<&str> = items.iter().map(|i| i["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["offline", "online"]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, body) =
        http_get_auth(server.http, "/api/users/multi/presence-history", Some(&tok)).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(2), "device flicker must not add rows");
    tdb.cleanup().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test]
async fn history_api_authorization_and_paging(#[case] db: Db) {
    let tdb = TestDb::new(db).await;
    let server = spawn(|c| {
        tdb.apply(c);
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    for _ in 0..5 {
        let (mut c, _) = server.connect(Kind::Ws, "paged").await;
        c.send(&json!({"type": "disconnect"})).await;
        c.until_closed().await;
    }
    let own = token(&server, "paged", false);
    let path = "/api/users/paged/connections";
    let deadline = Instant::now() + Duration::from_secs(10);
    // Five rows, each closed: a close may land in a later batch than its open.
    let closed = |body: &serde_json::Value| {
        body["items"].as_array().map_or(0, |items| {
            items.iter().filter(|i| i["disconnectReason"] == "client_disconnect").count()
        })
    };
    while closed(&http_get_auth(server.http, path, Some(&own)).await.1) < 5 {
        assert!(Instant::now() < deadline, "rows not written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(http_get_auth(server.http, path, None).await.0, 401);
    assert_eq!(http_get_auth(server.http, path, Some("not-a-jwt")).await.0, 401);
    let (status, body) =
        http_get_auth(server.http, path, Some(&token(&server, "mallory", false))).await;
    assert_eq!((status, body["code"].as_str()), (403, Some("forbidden")));
    assert_eq!(http_get_auth(server.http, path, Some(&token(&server, "root", true))).await.0, 200);
    assert_eq!(http_get_auth(server.http, &format!("{path}?limit=0"), Some(&own)).await.0, 400);
    assert_eq!(
        http_get_auth(server.http, &format!("{path}?from=yesterday"), Some(&own)).await.0,
        400
    );

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        let q = cursor.as_ref().map(|c| format!("&cursor={c}")).unwrap_or_default();
        let (status, body) =
            http_get_auth(server.http, &format!("{path}?limit=2{q}"), Some(&own)).await;
        assert_eq!(status, 200);
        for item in body["items"].as_array().unwrap() {
            assert_eq!(item["disconnectReason"], "client_disconnect");
            seen.push(item["id"].as_i64().unwrap());
        }
        cursor = body["nextCursor"].as_str().map(str::to_owned);
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "pages are newest first, disjoint");
    assert_eq!(seen.len(), 5);
    // A time range that excludes everything.
    let (_, body) =
        http_get_auth(server.http, &format!("{path}?to=1970-01-02T00:00:00Z"), Some(&own)).await;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(0));
    tdb.cleanup().await;
}

#[rstest]
#[case::sqlite(Db::Sqlite)]
#[case::postgres(Db::Postgres)]
#[tokio::test]
async fn retention_deletes_only_old_closed_rows(#[case] db: Db) {
    let tdb = TestDb::new(db).await;
    let server = spawn(|c| {
        tdb.apply(c);
        c.db_flush_interval = Duration::from_millis(20);
        c.connection_retention = Duration::from_millis(500);
        c.presence_retention = Duration::from_millis(500);
        c.cleanup_interval = Duration::from_millis(200);
        c.retention_batch = 2;
    })
    .await;
    let store = tdb.store().await;
    for _ in 0..3 {
        let (mut c, _) = server.connect(Kind::Ws, "old").await;
        c.send(&json!({"type": "disconnect"})).await;
        c.until_closed().await;
    }
    let (_open, _) = server.connect(Kind::Wt, "still-here").await;
    closed_row(store.as_ref(), "old").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !store.connections(&everything("old")).await.unwrap().is_empty() {
        assert!(Instant::now() < deadline, "old rows were not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The open connection's row survives however old it gets.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(store.connections(&everything("still-here")).await.unwrap().len(), 1);
    tdb.cleanup().await;
}

/// The database is unreachable from the start (a closed gate in front of PostgreSQL):
/// sessions work, rows wait in the buffer, and they all land once the gate opens.
#[tokio::test]
async fn database_outage_buffers_rows_and_they_land_after() {
    let tdb = TestDb::new(Db::Postgres).await;
    let target: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let gate = Gate::start(target, false).await;
    let url = tdb.pg_url_via(Some(gate.addr));
    let server = spawn(|c| {
        c.database_url = Some(url.clone());
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    for i in 0..4 {
        let (mut c, _) = server.connect(Kind::Ws, &format!("buffered{i}")).await;
        assert_eq!(c.request(1, "sys:echo", json!("works")).await["data"], "works");
        c.send(&json!({"type": "disconnect"})).await;
        c.until_closed().await;
    }
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["checks"]["database"]["status"], "down");
    assert!(ready["checks"]["database"]["writerQueued"].as_u64().unwrap() >= 8, "{ready}");
    assert_eq!(ready["status"], "degraded");

    gate.open();
    let store = tdb.store().await;
    for i in 0..4 {
        let row = closed_row(store.as_ref(), &format!("buffered{i}")).await;
        assert_eq!(row.disconnect_reason.as_deref(), Some("client_disconnect"));
    }

    // A second outage, after the database had been working: the pool's open connections are
    // cut, and what happens meanwhile lands once it is back.
    gate.close();
    for i in 4..6 {
        let (mut c, _) = server.connect(Kind::Wt, &format!("buffered{i}")).await;
        c.send(&json!({"type": "disconnect"})).await;
        c.until_closed().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.get("/health/ready").await.1["checks"]["database"]["writerQueued"].as_u64().unwrap()
            >= 4
    );
    gate.open();
    for i in 4..6 {
        let row = closed_row(store.as_ref(), &format!("buffered{i}")).await;
        assert_eq!(row.disconnect_reason.as_deref(), Some("client_disconnect"));
    }
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["checks"]["database"]["writerDropped"], 0);
    tdb.cleanup().await;
}
