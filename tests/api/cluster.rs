//! The cluster: presence, fanout and rate limits behave as one server across instances
//! sharing one Redis — and the same scenarios pass on the in-memory backend, where "both
//! instances" are one server.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    helpers::{Client, FAN, Kind, TestServer, expect_closed, fan_namespaces, spawn, subscribe},
    redis_util::{cleanup, redis_url, subscribers, unique_prefix},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
}

/// Two instances on one Redis (or one in-memory server twice). Index with `at(i)`.
pub struct Cluster {
    servers: Vec<TestServer>,
    pub prefix: String,
}

impl Cluster {
    pub async fn start(
        backend: Backend,
        test: &str,
        tweak: impl Fn(&mut rtgate::config::Config),
    ) -> Cluster {
        let prefix = unique_prefix(test);
        let n = if backend == Backend::Redis { 2 } else { 1 };
        let mut servers = Vec::new();
        for _ in 0..n {
            let prefix = prefix.clone();
            servers.push(
                spawn(|c| {
                    if backend == Backend::Redis {
                        c.redis_url = Some(redis_url());
                        c.redis_prefix = prefix;
                    }
                    c.dev_events = true;
                    tweak(c);
                })
                .await,
            );
        }
        Cluster { servers, prefix }
    }

    pub fn at(&self, i: usize) -> &TestServer {
        &self.servers[i % self.servers.len()]
    }

    /// Shuts every instance down and waits for it (its history writer flushes on the way), so
    /// nothing writes into the test's database after this returns.
    pub async fn stop(self) {
        for server in self.servers {
            server.shutdown.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), server.task).await;
        }
    }
}

/// The next frame that is an event named `name` (skipping pings and anything else).
pub async fn next_event(c: &mut Client, name: &str) -> Value {
    loop {
        let f = c.recv().await.unwrap_or_else(|| panic!("closed while waiting for {name}"));
        if f["type"] == "event" && f["event"] == name {
            return f["data"].clone();
        }
    }
}

/// Asserts no event named `name` arrives within `wait`.
pub async fn no_event(c: &mut Client, name: &str, wait: Duration) {
    let deadline = Instant::now() + wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(f) = tokio::time::timeout(left, c.recv()).await else {
            return;
        };
        let f = f.expect("connection closed");
        assert!(!(f["type"] == "event" && f["event"] == name), "unexpected {name}: {f}");
    }
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn presence_is_cluster_wide_and_multi_device(#[case] backend: Backend) {
    let cluster = Cluster::start(backend, "presence", |_| {}).await;
    let (mut bob, _) = cluster.at(1).connect(Kind::Wt, "bob").await;
    let ack = bob.request(1, "presence:subscribe", json!({"userIds": ["alice"]})).await;
    let mut before = ack["data"]["users"][0].clone();
    let version = before.as_object_mut().and_then(|o| o.remove("version"));
    assert_eq!(before, json!({"userId": "alice", "online": false, "devices": 0}));
    let version = version.and_then(|v| v.as_u64()).expect("a snapshot version");

    let (mut phone, _) = cluster.at(0).connect(Kind::Ws, "alice").await;
    let up = next_event(&mut bob, "presence:update").await;
    assert_eq!((up["userId"].as_str(), up["status"].as_str()), (Some("alice"), Some("online")));
    assert!(up["version"].as_u64().is_some_and(|v| v > version), "{up} after {version}");

    // A second device on the other instance: still one user online, two devices, no update.
    let (mut laptop, _) = cluster.at(1).connect(Kind::Wt, "alice").await;
    let q = bob.request(2, "presence:query", json!({"userIds": ["alice"]})).await;
    let now = &q["data"]["users"][0];
    assert_eq!((now["online"].as_bool(), now["devices"].as_u64()), (Some(true), Some(2)), "{q}");
    assert!(now["version"].as_u64() >= up["version"].as_u64(), "{q} after {up}");

    phone.send(&json!({"type": "disconnect"})).await;
    no_event(&mut bob, "presence:update", Duration::from_millis(300)).await;
    laptop.send(&json!({"type": "disconnect"})).await;
    let down = next_event(&mut bob, "presence:update").await;
    assert_eq!(down["status"], "offline");
    no_event(&mut bob, "presence:update", Duration::from_millis(300)).await;

    // Unsubscribed: no more updates.
    bob.request(3, "presence:unsubscribe", json!({"userIds": ["alice"]})).await;
    let _again = cluster.at(0).connect(Kind::Ws, "alice").await;
    no_event(&mut bob, "presence:update", Duration::from_millis(300)).await;
    cleanup(&cluster.prefix).await;
}

/// Waits (up to 5 s) until `name` has `n` subscribers.
async fn await_subscribers(name: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = subscribers(name).await;
        if now == n {
            return;
        }
        assert!(Instant::now() < deadline, "{name}: {now} subscribers, expected {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A user's presence travels on a topic of its own that only instances with a watcher of
/// theirs listen to: a transition nobody watches reaches no instance, and an instance stops
/// listening when its last watcher unsubscribes or leaves.
#[tokio::test]
async fn presence_topics_follow_the_watchers() {
    let cluster = Cluster::start(Backend::Redis, "presence-topics", |_| {}).await;
    let topic = format!("{}ch:watch:alice", cluster.prefix);
    let (mut alice, _) = cluster.at(0).connect(Kind::Ws, "alice").await;
    assert_eq!(subscribers(&topic).await, 0, "nobody watches alice yet");

    let (mut bob, _) = cluster.at(1).connect(Kind::Ws, "bob").await;
    let (mut carol, _) = cluster.at(1).connect(Kind::Ws, "carol").await;
    bob.request(1, "presence:subscribe", json!({"userIds": ["alice"]})).await;
    // Subscribed before the snapshot is answered; one instance, however many watchers.
    assert_eq!(subscribers(&topic).await, 1);
    carol.request(1, "presence:subscribe", json!({"userIds": ["alice"]})).await;
    assert_eq!(subscribers(&topic).await, 1);

    bob.request(2, "presence:unsubscribe", json!({"userIds": ["alice"]})).await;
    assert_eq!(subscribers(&topic).await, 1, "carol still watches");
    carol.send(&json!({"type": "disconnect"})).await;
    await_subscribers(&topic, 0).await;

    // Watching again listens again, and the updates arrive across instances.
    bob.request(3, "presence:subscribe", json!({"userIds": ["alice"]})).await;
    assert_eq!(subscribers(&topic).await, 1);
    alice.send(&json!({"type": "disconnect"})).await;
    let down = next_event(&mut bob, "presence:update").await;
    assert_eq!(
        (down["userId"].as_str(), down["status"].as_str()),
        (Some("alice"), Some("offline"))
    );

    // A session's end releases every user it was the last watcher of.
    bob.request(4, "presence:subscribe", json!({"userIds": ["dave"]})).await;
    let dave_topic = format!("{}ch:watch:dave", cluster.prefix);
    assert_eq!(subscribers(&dave_topic).await, 1);
    bob.send(&json!({"type": "disconnect"})).await;
    await_subscribers(&topic, 0).await;
    await_subscribers(&dave_topic, 0).await;
    cleanup(&cluster.prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn presence_subscriptions_are_bounded_per_socket(#[case] backend: Backend) {
    let cluster =
        Cluster::start(backend, "presence-bound", |c| c.max_presence_subscriptions = 3).await;
    let (mut c, _) = cluster.at(0).connect(Kind::Ws, "watcher").await;
    let ok = c.request(1, "presence:subscribe", json!({"userIds": ["a", "b", "c"]})).await;
    assert_eq!(ok["type"], "ack");
    let refused = c.request(2, "presence:subscribe", json!({"userIds": ["d"]})).await;
    assert_eq!(refused["code"], "limit_exceeded");
    let invalid = c.request(3, "presence:subscribe", json!({"userIds": []})).await;
    assert_eq!(invalid["code"], "validation_failed");
    assert_eq!(invalid["details"]["errors"][0]["path"], "userIds");
    cleanup(&cluster.prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn channel_fanout_reaches_subscribers_on_every_instance(#[case] backend: Backend) {
    let cluster =
        Cluster::start(backend, "channel-fanout", |c| c.namespaces = fan_namespaces()).await;
    let lobby = format!("{FAN}:lobby");
    let mut members = Vec::new();
    for (i, kind) in [Kind::Ws, Kind::Wt, Kind::Ws, Kind::Wt].into_iter().enumerate() {
        let (mut c, _) = cluster.at(i).connect(kind, &format!("m{i}")).await;
        subscribe(&mut c, 1, &lobby).await;
        members.push(c);
    }
    let (mut outsider, _) = cluster.at(0).connect(Kind::Ws, "outsider").await;
    let (mut publisher, _) = cluster.at(0).connect(Kind::Wt, "backend").await;
    let ack = publisher
        .request(1, "sys:channel-publish", json!({"channel": lobby, "data": {"n": 1}}))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    for m in &mut members {
        let p = next_event(m, "channel:publication").await;
        assert_eq!(p, json!({"channel": lobby, "data": {"n": 1}}));
    }
    no_event(&mut outsider, "channel:publication", Duration::from_millis(200)).await;

    // After unsubscribing, a subscriber on the other instance gets nothing; the one still
    // subscribed there does.
    let ack = members[1].request(2, "channel:unsubscribe", json!({"channel": lobby})).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    publisher.request(2, "sys:channel-publish", json!({"channel": lobby, "data": 2})).await;
    for i in [0, 2, 3] {
        let p = next_event(&mut members[i], "channel:publication").await;
        assert_eq!(p, json!({"channel": lobby, "data": 2}));
    }
    no_event(&mut members[1], "channel:publication", Duration::from_millis(200)).await;
    cleanup(&cluster.prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn user_fanout_reaches_every_device(#[case] backend: Backend) {
    let cluster = Cluster::start(backend, "user-fanout", |_| {}).await;
    let (mut d1, _) = cluster.at(0).connect(Kind::Ws, "carol").await;
    let (mut d2, _) = cluster.at(1).connect(Kind::Wt, "carol").await;
    let (mut sender, _) = cluster.at(0).connect(Kind::Wt, "dan").await;
    let ack = sender
        .request(
            1,
            "sys:user-publish",
            json!({"userId": "carol", "event": "ping:me", "data": "hi"}),
        )
        .await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(next_event(&mut d1, "ping:me").await, "hi");
    assert_eq!(next_event(&mut d2, "ping:me").await, "hi");
    cleanup(&cluster.prefix).await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn per_user_message_budget_is_shared_across_sockets_and_instances(#[case] backend: Backend) {
    let cluster = Cluster::start(backend, "user-limit", |c| {
        c.message_events = vec!["sys:echo".into()];
        c.message_rate_limit = 5;
        c.message_rate_window = Duration::from_secs(60);
    })
    .await;
    let (mut a, _) = cluster.at(0).connect(Kind::Ws, "eve").await;
    let (mut b, _) = cluster.at(1).connect(Kind::Wt, "eve").await;
    let mut acked = 0;
    let mut refused = Vec::new();
    for id in 0..10u64 {
        let c = if id % 2 == 0 { &mut a } else { &mut b };
        let r = c.request(id, "sys:echo", json!(id)).await;
        match r["type"].as_str() {
            Some("ack") => acked += 1,
            _ => refused.push(r),
        }
    }
    assert_eq!(acked, 5);
    let e = &refused[0];
    assert_eq!(e["code"], "rate_limit_exceeded");
    assert_eq!(
        (e["details"]["limit"].as_u64(), e["details"]["windowMs"].as_u64()),
        (Some(5), Some(60_000))
    );
    let now = rtgate::state::now_ms();
    let reset = e["details"]["resetAt"].as_u64().unwrap();
    assert!(reset > now && reset <= now + 12_000 + 1000, "resetAt {reset} vs now {now}");
    // The connection stays, and other events are not messages.
    assert_eq!(a.request(99, "sys:volatile-echo", json!(null)).await["type"], "ack");
    // Another user has their own budget.
    let (mut f, _) = cluster.at(0).connect(Kind::Ws, "frank").await;
    assert_eq!(f.request(1, "sys:echo", json!(1)).await["type"], "ack");
    cleanup(&cluster.prefix).await;
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn per_socket_limit_refuses_then_flooding_disconnects(#[case] kind: Kind) {
    let server = spawn(|c| {
        c.event_rate_limit = 10;
        c.event_rate_window = Duration::from_secs(10);
        c.rate_limit_flood_factor = 3;
    })
    .await;
    let (mut c, _) = server.connect(kind, "spammer").await;
    for id in 0..10u64 {
        assert_eq!(c.request(id, "sys:echo", json!(id)).await["type"], "ack");
    }
    let refused = c.request(10, "sys:echo", json!(10)).await;
    assert_eq!(refused["code"], "rate_limit_exceeded");
    assert_eq!(refused["details"]["limit"], 10);
    // 3 × 10 refusals within the flood window end the session with its own code.
    for id in 11..45u64 {
        c.send(&json!({"type": "event", "event": "sys:echo", "id": id})).await;
    }
    let frames = expect_closed(&mut c, "rate_limit_flood", 3006, false).await;
    assert!(frames.iter().filter(|f| f["code"] == "rate_limit_exceeded").count() >= 29);
}
