//! Channels over both transports and both shared-state backends: subscribe and receive, every
//! authorization mode refusing what it must (with one answer that leaks nothing), publishing
//! by clients where allowed, presence with join/leave, history, limits, and a subscription
//! token that expires.

use std::time::Duration;

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    cluster::{Backend, Cluster},
    helpers::{Client, Kind, TestServer},
    redis_util::cleanup,
};
use rtgate::config::{NamespaceConfig, Namespaces, SubscribeMode};

/// The namespaces these tests configure.
pub fn namespaces() -> Namespaces {
    let ns = |name: &str, f: &dyn Fn(&mut NamespaceConfig)| {
        let mut n = NamespaceConfig::new(name);
        f(&mut n);
        n
    };
    Namespaces::new([
        ns("news", &|n| {
            n.history_size = 100;
            n.recover = true;
        }),
        ns("room", &|n| {
            n.client_publish = true;
            n.publisher_info = true;
            n.presence = true;
            n.join_leave = true;
        }),
        ns("notify", &|n| {
            n.subscribe = SubscribeMode::User;
            n.history_size = 10;
        }),
        ns("claimed", &|n| n.subscribe = SubscribeMode::Claim),
        ns("secret", &|n| {
            n.subscribe = SubscribeMode::Token;
            n.presence = true;
        }),
        ns("short", &|n| {
            n.history_size = 5;
            n.recover = true;
        }),
        ns("fire", &|n| {
            n.history_size = 1000;
            n.recover = true;
        }),
        ns("cursor", &|n| {
            n.client_publish = true;
            n.volatile = true;
        }),
    ])
    .expect("valid namespaces")
}

pub async fn start(backend: Backend, test: &str) -> Cluster {
    Cluster::start(backend, test, |c| {
        c.namespaces = namespaces();
        c.jwt.leeway = Duration::ZERO;
        c.max_subscriptions = 8;
    })
    .await
}

/// Sends a request and returns its answer and every other frame that arrived before it (a
/// channel push may come before an ack).
pub async fn ask(c: &mut Client, id: u64, event: &str, data: Value) -> (Value, Vec<Value>) {
    c.send(&json!({"type": "event", "event": event, "id": id, "data": data})).await;
    let mut before = Vec::new();
    loop {
        let f = c.recv().await.expect("connection closed while waiting for an answer");
        if f["id"] == id && (f["type"] == "ack" || f["type"] == "error") {
            return (f, before);
        }
        if f["type"] != "ping" {
            before.push(f);
        }
    }
}

/// The next pushed event named `name`.
pub async fn next(c: &mut Client, name: &str) -> Value {
    loop {
        let f = c.recv().await.unwrap_or_else(|| panic!("closed while waiting for {name}"));
        if f["type"] == "event" && f["event"] == name {
            return f["data"].clone();
        }
    }
}

/// Publishes as the backend would (the `--dev-events` path).
pub async fn backend_publish(c: &mut Client, id: u64, channel: &str, data: Value) -> Value {
    let (ack, _) =
        ask(c, id, "sys:channel-publish", json!({"channel": channel, "data": data})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    ack["data"].clone()
}

fn code(answer: &Value) -> &str {
    answer["code"].as_str().unwrap_or("(not an error)")
}

#[rstest]
#[tokio::test]
async fn subscribers_receive_publications_in_offset_order(
    #[values(Kind::Ws, Kind::Wt)] kind: Kind,
    #[values(Backend::Memory, Backend::Redis)] backend: Backend,
) {
    let cluster = start(backend, "channels-basic").await;
    let (mut alice, _) = cluster.at(0).connect(kind, "alice").await;
    let (mut backend_conn, _) = cluster.at(1).connect(Kind::Ws, "backend").await;
    let (ack, _) = ask(&mut alice, 1, "channel:subscribe", json!({"channel": "news:sports"})).await;
    let d = &ack["data"];
    assert_eq!(
        (d["channel"].as_str(), d["offset"].as_u64(), d["recovered"].as_bool()),
        (Some("news:sports"), Some(0), Some(false)),
        "{ack}"
    );
    assert!(
        d["epoch"].as_str().is_some_and(|e| !e.is_empty()) && d["publications"] == json!([]),
        "{ack}"
    );
    for n in 1..=5 {
        let p = backend_publish(&mut backend_conn, 10 + n, "news:sports", json!({"n": n})).await;
        assert_eq!((p["offset"].as_u64(), p["epoch"].as_str()), (Some(n), d["epoch"].as_str()));
    }
    for n in 1..=5 {
        let p = next(&mut alice, "channel:publication").await;
        assert_eq!(p, json!({"channel": "news:sports", "offset": n, "data": {"n": n}}));
    }
    // Unsubscribed: nothing more.
    assert_eq!(
        ask(&mut alice, 2, "channel:unsubscribe", json!({"channel": "news:sports"})).await.0["type"],
        "ack"
    );
    backend_publish(&mut backend_conn, 30, "news:sports", json!("after")).await;
    let (echo, before) = ask(&mut alice, 3, "sys:echo", json!("sync")).await;
    assert_eq!(echo["data"], "sync");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, late) = ask(&mut alice, 4, "sys:echo", json!("sync")).await;
    assert!(
        before.iter().chain(late.iter()).all(|f| f["event"] != "channel:publication"),
        "{before:?} {late:?}"
    );
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

/// Every way a subscription can be refused, each with the documented code; `permission_denied`
/// is one answer whatever the reason (nothing tells a channel that exists for someone else
/// from one that does not).
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn authorization_modes_refuse_what_they_must(#[case] backend: Backend) {
    let cluster = start(backend, "channels-authz").await;
    let server = cluster.at(0);
    let (mut bob, _) = server.connect(Kind::Ws, "bob").await;
    let mut id = 0;
    let mut subscribe = async |c: &mut Client, data: Value| {
        id += 1;
        ask(c, id, "channel:subscribe", data).await.0
    };
    // User-limited: only the users the name lists.
    assert_eq!(
        subscribe(&mut bob, json!({"channel": "notify:#alice"})).await["code"],
        "permission_denied"
    );
    assert_eq!(subscribe(&mut bob, json!({"channel": "notify:#alice,bob"})).await["type"], "ack");
    assert_eq!(
        subscribe(&mut bob, json!({"channel": "notify:bob"})).await["code"],
        "permission_denied"
    );
    // Unknown namespace, and the default namespace (not configured here).
    let unknown = subscribe(&mut bob, json!({"channel": "nope:x"})).await;
    let denied = subscribe(&mut bob, json!({"channel": "notify:#alice"})).await;
    assert_eq!(
        (unknown["code"].clone(), unknown["message"].clone()),
        (denied["code"].clone(), denied["message"].clone())
    );
    assert_eq!(code(&subscribe(&mut bob, json!({"channel": "lobby"})).await), "permission_denied");
    // Claim: the connection token lists channels or prefixes.
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "claimed:x"})).await),
        "permission_denied"
    );
    let claims = rtgate::auth::mint_dev_token_with_channels(
        &server.config.jwt,
        "carol",
        Duration::from_secs(60),
        None,
        vec![],
        vec!["claimed:doc-*".into(), "claimed:exact".into()],
    )
    .unwrap();
    let mut carol = server.open(Kind::Wt).await;
    carol.send(&json!({"type": "connect", "token": claims})).await;
    assert_eq!(carol.recv().await.unwrap()["type"], "connected");
    assert_eq!(subscribe(&mut carol, json!({"channel": "claimed:doc-7"})).await["type"], "ack");
    assert_eq!(subscribe(&mut carol, json!({"channel": "claimed:exact"})).await["type"], "ack");
    assert_eq!(
        code(&subscribe(&mut carol, json!({"channel": "claimed:exactly"})).await),
        "permission_denied"
    );
    // Token: one for this user and channel; not another's, not another channel's, not expired.
    let sub_token = |user: &str, channel: &str, ttl: u64| {
        rtgate::auth::mint_subscription_token(
            &server.config.jwt,
            user,
            channel,
            Duration::from_secs(ttl),
            None,
        )
        .unwrap()
    };
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "secret:a"})).await),
        "permission_denied"
    );
    assert_eq!(
        code(
            &subscribe(
                &mut bob,
                json!({"channel": "secret:a", "token": sub_token("carol", "secret:a", 60)})
            )
            .await
        ),
        "permission_denied"
    );
    assert_eq!(
        code(
            &subscribe(
                &mut bob,
                json!({"channel": "secret:a", "token": sub_token("bob", "secret:b", 60)})
            )
            .await
        ),
        "permission_denied"
    );
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "secret:a", "token": "not.a.jwt"})).await),
        "permission_denied"
    );
    let expired = subscribe(
        &mut bob,
        json!({"channel": "secret:a", "token": sub_token("bob", "secret:a", 0)}),
    )
    .await;
    assert_eq!(
        (code(&expired), expired["details"]["reason"].as_str()),
        ("permission_denied", Some("token_expired"))
    );
    assert_eq!(
        subscribe(
            &mut bob,
            json!({"channel": "secret:a", "token": sub_token("bob", "secret:a", 60)})
        )
        .await["type"],
        "ack"
    );
    // Names, duplicates, limits.
    for bad in ["", "news sports", "news:é", ":x", "news:{x}"] {
        assert_eq!(
            code(&subscribe(&mut bob, json!({"channel": bad})).await),
            "bad_channel",
            "{bad:?}"
        );
    }
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "notify:#alice,bob"})).await),
        "already_subscribed"
    );
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "news:a", "since": [1, "e"]})).await),
        "validation_failed"
    );
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "news:a", "data": "x".repeat(2000)})).await),
        "validation_failed"
    );
    for n in 0..6 {
        assert_eq!(
            subscribe(&mut bob, json!({"channel": format!("news:{n}")})).await["type"],
            "ack",
            "{n}"
        );
    }
    assert_eq!(
        code(&subscribe(&mut bob, json!({"channel": "news:one-too-many"})).await),
        "limit_exceeded"
    );
    // Nothing above hurt the connection.
    assert_eq!(bob.request(999, "sys:echo", json!("alive")).await["data"], "alive");
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

/// Clients publish where the namespace allows, only to channels they are subscribed to; the
/// publication carries its publisher's info; presence lists who is there, and subscribers see
/// joins and leaves, on any instance.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn client_publishing_presence_and_join_leave(#[case] backend: Backend) {
    let cluster = start(backend, "channels-room").await;
    let (mut alice, hello) = cluster.at(0).connect(Kind::Wt, "alice").await;
    let (mut bob, _) = cluster.at(1).connect(Kind::Ws, "bob").await;
    let (ack, _) =
        ask(&mut alice, 1, "channel:publish", json!({"channel": "room:1", "data": "x"})).await;
    assert_eq!(code(&ack), "not_subscribed");
    let (ack, _) =
        ask(&mut alice, 2, "channel:publish", json!({"channel": "news:1", "data": "x"})).await;
    assert_eq!(code(&ack), "permission_denied", "news does not allow client publishing");
    let (ack, _) = ask(
        &mut alice,
        3,
        "channel:subscribe",
        json!({"channel": "room:1", "data": {"color": "red"}}),
    )
    .await;
    assert_eq!(ack["data"]["presence"].as_array().map(Vec::len), Some(1), "{ack}");
    let (ack, _) = ask(&mut bob, 1, "channel:subscribe", json!({"channel": "room:1"})).await;
    assert_eq!(ack["data"]["presence"].as_array().map(Vec::len), Some(2), "{ack}");
    let join = next(&mut alice, "channel:join").await;
    assert_eq!(
        (join["channel"].as_str(), join["info"]["userId"].as_str()),
        (Some("room:1"), Some("bob"))
    );
    let (ack, before) =
        ask(&mut alice, 4, "channel:publish", json!({"channel": "room:1", "data": {"hi": 1}}))
            .await;
    assert_eq!(ack["data"], json!({}), "no history, no offset: {ack}");
    // The publisher's own copy may come before its ack.
    let own =
        before.into_iter().find(|f| f["event"] == "channel:publication").map(|f| f["data"].clone());
    let own = match own {
        Some(p) => p,
        None => next(&mut alice, "channel:publication").await,
    };
    for p in [own, next(&mut bob, "channel:publication").await] {
        assert_eq!(p["data"], json!({"hi": 1}));
        assert_eq!(
            (p["info"]["userId"].as_str(), p["info"]["clientId"].as_str()),
            (Some("alice"), hello["sessionId"].as_str())
        );
        assert!(p.get("offset").is_none(), "{p}");
    }
    let (stats, _) = ask(&mut bob, 2, "channel:presence-stats", json!({"channel": "room:1"})).await;
    assert_eq!(stats["data"], json!({"clients": 2, "users": 2}));
    let (list, _) = ask(&mut bob, 3, "channel:presence", json!({"channel": "room:1"})).await;
    let red = list["data"]["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["userId"] == "alice")
        .cloned()
        .unwrap();
    assert_eq!(red["data"], json!({"color": "red"}));
    let (hist, _) = ask(&mut bob, 4, "channel:history", json!({"channel": "room:1"})).await;
    assert_eq!(code(&hist), "permission_denied", "room keeps no history");
    // Alice leaves by closing her connection: bob is told.
    drop(alice);
    let leave = next(&mut bob, "channel:leave").await;
    assert_eq!(leave["info"]["userId"], "alice");
    let (stats, _) = ask(&mut bob, 5, "channel:presence-stats", json!({"channel": "room:1"})).await;
    assert_eq!(stats["data"], json!({"clients": 1, "users": 1}));
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn history_reads_both_ways_and_answers_another_epoch_with_nothing(#[case] backend: Backend) {
    let cluster = start(backend, "channels-history").await;
    let (mut c, _) = cluster.at(0).connect(Kind::Ws, "reader").await;
    let (sub, _) = ask(&mut c, 1, "channel:subscribe", json!({"channel": "news:h"})).await;
    let epoch = sub["data"]["epoch"].clone();
    for n in 1..=7 {
        backend_publish(&mut c, 10 + n, "news:h", json!(n)).await;
    }
    let offsets = |v: &Value| -> Vec<u64> {
        v["data"]["publications"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["offset"].as_u64().unwrap())
            .collect()
    };
    let (h, _) = ask(
        &mut c,
        2,
        "channel:history",
        json!({"channel": "news:h", "since": {"offset": 3, "epoch": epoch}, "limit": 2}),
    )
    .await;
    assert_eq!((offsets(&h), h["data"]["offset"].as_u64()), (vec![4, 5], Some(7)), "{h}");
    let (h, _) = ask(
        &mut c,
        3,
        "channel:history",
        json!({"channel": "news:h", "reverse": true, "limit": 3}),
    )
    .await;
    assert_eq!(offsets(&h), [7, 6, 5]);
    let (h, _) = ask(
        &mut c,
        4,
        "channel:history",
        json!({"channel": "news:h", "since": {"offset": 3, "epoch": "other"}}),
    )
    .await;
    assert_eq!(offsets(&h), Vec::<u64>::new());
    let (h, _) = ask(&mut c, 5, "channel:history", json!({"channel": "news:h", "limit": 0})).await;
    assert_eq!(code(&h), "validation_failed");
    let (h, _) = ask(&mut c, 6, "channel:history", json!({"channel": "news:other"})).await;
    assert_eq!(code(&h), "not_subscribed");
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

/// A subscription token's expiry ends that subscription, not the connection.
#[rstest]
#[tokio::test]
async fn an_expired_subscription_token_ends_the_subscription_only(
    #[values(Kind::Ws, Kind::Wt)] kind: Kind,
) {
    let cluster = start(Backend::Memory, "channels-expiry").await;
    let server: &TestServer = cluster.at(0);
    let (mut bob, _) = server.connect(kind, "bob").await;
    let token = rtgate::auth::mint_subscription_token(
        &server.config.jwt,
        "bob",
        "secret:x",
        // `exp` is whole seconds: two, so at least one is left when it is presented.
        Duration::from_secs(2),
        None,
    )
    .unwrap();
    let (ack, _) =
        ask(&mut bob, 1, "channel:subscribe", json!({"channel": "secret:x", "token": token})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let ended =
        tokio::time::timeout(Duration::from_secs(4), next(&mut bob, "channel:unsubscribed"))
            .await
            .expect("ended in time");
    assert_eq!(
        ended,
        json!({"channel": "secret:x", "code": "subscription_expired", "reason": "subscription token expired", "resubscribe": true})
    );
    assert_eq!(bob.request(2, "sys:echo", json!("still here")).await["data"], "still here");
    let (p, _) = ask(&mut bob, 3, "channel:presence", json!({"channel": "secret:x"})).await;
    assert_eq!(code(&p), "not_subscribed");
    cluster.stop().await;
}

/// Volatile channels go as datagrams on WebTransport.
#[tokio::test]
async fn volatile_publications_travel_as_datagrams_on_webtransport() {
    let cluster = start(Backend::Memory, "channels-volatile").await;
    let (mut a, _) = cluster.at(0).connect(Kind::Wt, "a").await;
    let (mut b, _) = cluster.at(0).connect(Kind::Wt, "b").await;
    for c in [&mut a, &mut b] {
        assert_eq!(
            ask(c, 1, "channel:subscribe", json!({"channel": "cursor:doc"})).await.0["type"],
            "ack"
        );
    }
    let (ack, _) =
        ask(&mut a, 2, "channel:publish", json!({"channel": "cursor:doc", "data": {"x": 3}})).await;
    assert_eq!(ack["type"], "ack");
    let got = b.recv_datagram().await;
    assert_eq!(
        (got["event"].as_str(), got["data"]["data"]["x"].as_u64()),
        (Some("channel:publication"), Some(3))
    );
    cluster.stop().await;
}
