//! The server API from outside: the key check, every malformed request answered in the one
//! error shape with its status, the OpenAPI document, and publishing (with idempotency keys),
//! broadcasts, user pushes, presence and history, on one server and across two instances on
//! Redis.

use std::time::Duration;

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    api_util::{KEY, KEY2, assert_error, call, call_with, raw},
    channels::namespaces,
    cluster::{Backend, Cluster, next_event, no_event},
    helpers::{Kind, spawn, subscribe},
    redis_util::cleanup,
};

/// A cluster (two instances on Redis, one server in memory) serving the API with `KEY`/`KEY2`.
pub async fn start(backend: Backend, test: &str) -> Cluster {
    Cluster::start(backend, test, |c| {
        c.namespaces = namespaces();
        c.api.keys = vec![KEY.into(), KEY2.into()];
    })
    .await
}

#[tokio::test]
async fn every_configured_key_works_and_nothing_else_does() {
    let s = spawn(|c| c.api.keys = vec![KEY.into(), KEY2.into()]).await;
    let body = r#"{"users":["u"]}"#;
    for key in [KEY, KEY2] {
        assert_eq!(call_with(s.http, Some(key), "users-status", body).await.status, 200);
    }
    let wrong = format!("{KEY}x");
    for key in [None, Some(""), Some("nope"), Some(&wrong[..]), Some(&KEY[..KEY.len() - 1])] {
        assert_error(&call_with(s.http, key, "users-status", body).await, 401, "unauthorized");
    }
    // Another scheme with the right key is not the API key.
    let bearer = format!("Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n");
    let a = raw(s.http, "POST", "/api/v1/users-status", &bearer, body).await;
    assert_error(&a, 401, "unauthorized");
    // The document is public.
    let a = raw(s.http, "GET", "/api/v1/openapi.json", "", "").await;
    assert_eq!(a.status, 200);
    assert!(a.body["openapi"].as_str().unwrap().starts_with("3.1"), "{}", a.body);
    for path in [
        "publish",
        "broadcast",
        "publish-to-user",
        "subscribe",
        "unsubscribe",
        "disconnect",
        "presence",
        "presence-stats",
        "history",
        "history-remove",
        "users-status",
        "revoke-user",
        "revoke-token",
        "info",
    ] {
        assert!(a.body["paths"][format!("/api/v1/{path}")]["post"].is_object(), "{path}");
    }
}

#[tokio::test]
async fn without_keys_only_loopback_clients_are_served() {
    // The test client is on loopback; a trusted proxy (also loopback) names a remote client.
    let s = spawn(|c| {
        c.trusted_proxies = rtgate::config::TrustedProxies(vec!["127.0.0.1/32".parse().unwrap()]);
    })
    .await;
    let body = r#"{"users":["u"]}"#;
    assert_eq!(call_with(s.http, None, "users-status", body).await.status, 200);
    let forwarded =
        "X-Forwarded-For: 203.0.113.9\r\nContent-Type: application/json\r\n".to_string();
    let a = raw(s.http, "POST", "/api/v1/users-status", &forwarded, body).await;
    assert_error(&a, 401, "unauthorized");
}

#[tokio::test]
async fn malformed_requests_get_their_status_and_code() {
    let s = spawn(|c| {
        c.namespaces = namespaces();
        c.api.keys = vec![KEY.into()];
        c.api.max_body_bytes = 4096;
    })
    .await;
    let bad = |body: &'static str, status: u16, code: &'static str| (body, status, code);
    for (body, status, code) in [
        bad("{", 400, "bad_request"),
        bad("[]", 400, "bad_request"),
        bad("null", 400, "bad_request"),
        bad(r#"{"channel":7,"data":1}"#, 400, "bad_request"),
        bad(r#"{"data":1}"#, 400, "bad_request"),
        bad(r#"{"channel":"news:a","data":1,"extra":true}"#, 400, "bad_request"),
        bad(r#"{"channel":"news a","data":1}"#, 400, "bad_channel"),
        bad(r#"{"channel":"nowhere:a","data":1}"#, 404, "unknown_namespace"),
        bad(r#"{"channel":"news:a","data":1,"idempotencyKey":""}"#, 400, "bad_request"),
    ] {
        assert_error(&call_with(s.http, Some(KEY), "publish", body).await, status, code);
    }
    let big = format!(r#"{{"channel":"news:a","data":"{}"}}"#, "x".repeat(5000));
    assert_error(&call_with(s.http, Some(KEY), "publish", &big).await, 413, "payload_too_large");
    let auth = format!("Authorization: apikey {KEY}\r\n");
    let a = raw(s.http, "POST", "/api/v1/publish", &auth, r#"{"channel":"news:a","data":1}"#).await;
    assert_error(&a, 415, "unsupported_media_type");
    for (method, body, code) in [
        ("history", r#"{"channel":"news:a","limit":0}"#, "bad_request"),
        ("history", r#"{"channel":"room:a"}"#, "not_enabled"),
        ("presence", r#"{"channel":"news:a"}"#, "not_enabled"),
        ("broadcast", r#"{"channels":[],"data":1}"#, "bad_request"),
        ("users-status", r#"{"users":[]}"#, "bad_request"),
        ("publish-to-user", r#"{"user":"u","event":"sys:echo","data":1}"#, "bad_request"),
        ("disconnect", r#"{"user":""}"#, "bad_request"),
        ("revoke-user", r#"{"user":"u","until":99999999999999}"#, "bad_request"),
    ] {
        assert_error(&call_with(s.http, Some(KEY), method, body).await, 400, code);
    }
}

#[rstest]
#[case::memory(Backend::Memory, Kind::Ws)]
#[case::redis_ws(Backend::Redis, Kind::Ws)]
#[case::redis_wt(Backend::Redis, Kind::Wt)]
#[tokio::test]
async fn a_publish_reaches_subscribers_everywhere_once_per_idempotency_key(
    #[case] backend: Backend,
    #[case] kind: Kind,
) {
    let cluster = start(backend, "api_publish").await;
    let (mut sub, _) = cluster.at(1).connect(kind, "reader").await;
    subscribe(&mut sub, 1, "news:api").await;
    let api = cluster.at(0).http;
    let first = call(api, "publish", json!({"channel": "news:api", "data": {"n": 1}})).await;
    assert_eq!(first["offset"], 1, "{first}");
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let p = next_event(&mut sub, "channel:publication").await;
    assert_eq!(p, json!({"channel": "news:api", "offset": 1, "data": {"n": 1}}));

    // The same idempotency key twice, on two instances: one publication, the same answer.
    let body = json!({"channel": "news:api", "data": {"n": 2}, "idempotencyKey": "k-2"});
    let a = call_with(api, Some(KEY), "publish", &body.to_string()).await;
    assert_eq!((a.status, a.body["offset"].clone()), (200, json!(2)), "{}", a.body);
    assert_eq!(a.header("idempotent-replayed"), None);
    let again = call_with(cluster.at(1).http, Some(KEY), "publish", &body.to_string()).await;
    assert_eq!(again.body, a.body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(next_event(&mut sub, "channel:publication").await["offset"], 2);
    no_event(&mut sub, "channel:publication", Duration::from_millis(300)).await;

    // History through the API, then its removal: the position stays, the entries go.
    let h = call(api, "history", json!({"channel": "news:api", "limit": 10})).await;
    assert_eq!(h["offset"], 2);
    assert_eq!(h["epoch"], epoch);
    let offsets: Vec<Value> =
        h["publications"].as_array().unwrap().iter().map(|p| p["offset"].clone()).collect();
    assert_eq!(offsets, [json!(1), json!(2)]);
    let newest =
        call(api, "history", json!({"channel": "news:api", "limit": 1, "reverse": true})).await;
    assert_eq!(newest["publications"][0]["data"], json!({"n": 2}));
    let other = json!({"channel": "news:api", "since": {"offset": 0, "epoch": "other"}});
    assert_eq!(call(api, "history", other).await["publications"], json!([]));
    assert_eq!(call(api, "history-remove", json!({"channel": "news:api"})).await, json!({}));
    let h = call(api, "history", json!({"channel": "news:api"})).await;
    assert_eq!((h["offset"].clone(), h["publications"].clone()), (json!(2), json!([])));
    drop(sub);
    let prefix = cluster.prefix.clone();
    cluster.stop().await;
    cleanup(&prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn broadcasts_user_pushes_and_presence(#[case] backend: Backend) {
    let cluster = start(backend, "api_broadcast").await;
    let (mut a, _) = cluster.at(0).connect(Kind::Ws, "ann").await;
    let (mut b, connected_b) = cluster.at(1).connect(Kind::Wt, "ann").await;
    subscribe(&mut a, 1, "news:one").await;
    subscribe(&mut b, 1, "room:two").await;
    let api = cluster.at(0).http;
    let r = call(
        api,
        "broadcast",
        json!({"channels": ["news:one", "room:two", "nowhere:x"], "data": "hi"}),
    )
    .await;
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["offset"], 1);
    assert!(results[1].get("error").is_none() && results[1].get("offset").is_none(), "{r}");
    assert_eq!(results[2]["error"]["code"], "unknown_namespace");
    assert_eq!(next_event(&mut a, "channel:publication").await["data"], "hi");
    assert_eq!(next_event(&mut b, "channel:publication").await["channel"], "room:two");

    // A push to every session of the user, wherever it is.
    call(api, "publish-to-user", json!({"user": "ann", "event": "app:note", "data": {"x": 1}}))
        .await;
    assert_eq!(next_event(&mut a, "app:note").await, json!({"x": 1}));
    assert_eq!(next_event(&mut b, "app:note").await, json!({"x": 1}));

    // Presence of the room, read by the backend.
    let p = call(cluster.at(1).http, "presence", json!({"channel": "room:two"})).await;
    let clients = p["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 1);
    assert_eq!(clients[0]["clientId"], connected_b["sessionId"]);
    let stats = call(api, "presence-stats", json!({"channel": "room:two"})).await;
    assert_eq!(stats, json!({"clients": 1, "users": 1}));

    // Users' status and the cluster.
    let st = call(api, "users-status", json!({"users": ["ann", "nobody"]})).await;
    assert_eq!(st["users"][0]["online"], true);
    assert_eq!(st["users"][0]["sessions"], 2);
    assert_eq!(
        st["users"][1],
        json!({"user": "nobody", "online": false, "devices": 0, "sessions": 0, "lastSeen": null})
    );
    let info = call(api, "info", json!({})).await;
    let instances = if backend == Backend::Redis { 2 } else { 1 };
    assert_eq!(info["instances"].as_array().unwrap().len(), instances, "{info}");
    assert_eq!(info["connections"], 2, "{info}");
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    drop((a, b));
    let prefix = cluster.prefix.clone();
    cluster.stop().await;
    cleanup(&prefix).await;
}

#[tokio::test]
async fn an_offline_user_was_last_seen_when_they_left() {
    let s = spawn(|c| {
        c.api.keys = vec![KEY.into()];
        c.db_flush_interval = Duration::from_millis(20);
    })
    .await;
    let (c, _) = s.connect(Kind::Ws, "gone").await;
    drop(c);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let st = call(s.http, "users-status", json!({"users": ["gone"]})).await;
        let user = &st["users"][0];
        if user["online"] == false && user["lastSeen"].is_i64() {
            let now = rtgate::state::now_ms() as i64;
            assert!((now - user["lastSeen"].as_i64().unwrap()).abs() < 10_000, "{user}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never offline with a time: {user}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_api_can_have_a_listener_of_its_own() {
    let mut config = crate::helpers::test_config();
    config.api.keys = vec![KEY.into()];
    config.api.addr = Some("127.0.0.1:0".parse().unwrap());
    let server = rtgate::server::Server::bind(config).await.unwrap();
    let (http, api) = (server.http_addr(), server.api_addr().unwrap());
    let stop = server.shutdown_token();
    let task = tokio::spawn(server.run());
    assert_eq!(call_with(api, Some(KEY), "info", "{}").await.status, 200);
    assert_eq!(call_with(http, Some(KEY), "info", "{}").await.status, 404);
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}
