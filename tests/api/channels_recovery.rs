//! Channel recovery: nothing lost, nothing twice. A subscriber that reconnects — to another
//! instance, or after the instance it was on was killed — with its last `{offset, epoch}` gets
//! exactly the publications it missed, then live ones, in offset order; thousands of them
//! while two publishers on other instances keep going. When recovery is impossible (beyond the
//! history window, another epoch) it is told so, and a subscription whose channel lost its
//! history is ended with `state_lost`.

use std::time::{Duration, Instant};

use rstest::rstest;
use serde_json::{Value, json};

use crate::{
    channels::{ask, backend_publish, namespaces, next, start},
    cluster::Backend,
    helpers::{Client, Kind, ServerProcess, TestServer, spawn},
    redis_util::{cleanup, redis_url, unique_prefix},
};

/// What a subscriber saw of one channel: its offsets in arrival order.
#[derive(Default)]
struct Seen {
    offsets: Vec<u64>,
    epoch: String,
}

impl Seen {
    fn last(&self) -> u64 {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Takes a subscribe ack (its recovered publications) into account.
    fn ack(&mut self, ack: &Value) {
        let d = &ack["data"];
        self.epoch = d["epoch"].as_str().unwrap_or_default().to_owned();
        for p in d["publications"].as_array().into_iter().flatten() {
            self.offsets.push(p["offset"].as_u64().unwrap());
        }
    }

    fn frame(&mut self, f: &Value) {
        if f["type"] == "event" && f["event"] == "channel:publication" {
            self.offsets.push(f["data"]["offset"].as_u64().unwrap());
        }
    }

    /// Every offset 1..=n exactly once, in order.
    fn assert_complete(&self, n: u64) {
        let expected: Vec<u64> = (1..=n).collect();
        if self.offsets != expected {
            let dup = self.offsets.windows(2).find(|w| w[1] <= w[0]);
            let gap = self.offsets.windows(2).find(|w| w[1] > w[0] + 1);
            panic!(
                "{} offsets seen for {n} published; first out of order {dup:?}, first gap {gap:?}, last {:?}",
                self.offsets.len(),
                self.offsets.last()
            );
        }
    }
}

async fn subscribe(c: &mut Client, id: u64, channel: &str, seen: &mut Seen, since: bool) -> Value {
    let mut data = json!({"channel": channel});
    if since {
        data["since"] = json!({"offset": seen.last(), "epoch": seen.epoch});
    }
    let (ack, before) = ask(c, id, "channel:subscribe", data).await;
    assert_eq!(ack["type"], "ack", "{ack}");
    // Live publications follow the ack, never precede it.
    assert!(before.iter().all(|f| f["event"] != "channel:publication"), "{before:?}");
    seen.ack(&ack);
    ack
}

/// Reads publications until `n` offsets were seen (or fails after `within`).
async fn read_until(c: &mut Client, seen: &mut Seen, n: u64, within: Duration) {
    let deadline = Instant::now() + within;
    while seen.last() < n && (seen.offsets.len() as u64) < n {
        assert!(Instant::now() < deadline, "only {} of {n} arrived", seen.offsets.len());
        let f = c.recv().await.expect("subscriber connection closed");
        seen.frame(&f);
    }
}

#[rstest]
#[tokio::test]
async fn a_reconnect_to_another_instance_recovers_exactly_what_was_missed(
    #[values(Kind::Ws, Kind::Wt)] kind: Kind,
    #[values(Backend::Memory, Backend::Redis)] backend: Backend,
) {
    let cluster = start(backend, "channels-recover").await;
    let (mut publisher, _) = cluster.at(0).connect(Kind::Ws, "backend").await;
    let mut seen = Seen::default();
    let (mut sub, _) = cluster.at(0).connect(kind, "reader").await;
    subscribe(&mut sub, 1, "news:r", &mut seen, false).await;
    for n in 1..=3 {
        backend_publish(&mut publisher, n, "news:r", json!(n)).await;
    }
    read_until(&mut sub, &mut seen, 3, Duration::from_secs(5)).await;
    drop(sub);
    for n in 4..=8 {
        backend_publish(&mut publisher, n, "news:r", json!(n)).await;
    }
    let (mut sub, _) = cluster.at(1).connect(kind, "reader").await;
    let ack = subscribe(&mut sub, 1, "news:r", &mut seen, true).await;
    assert_eq!(
        (ack["data"]["recovered"].as_bool(), ack["data"]["offset"].as_u64()),
        (Some(true), Some(8)),
        "{ack}"
    );
    for n in 9..=12 {
        backend_publish(&mut publisher, n, "news:r", json!(n)).await;
    }
    read_until(&mut sub, &mut seen, 12, Duration::from_secs(5)).await;
    seen.assert_complete(12);
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn recovery_beyond_the_history_window_or_from_another_epoch_says_so(
    #[case] backend: Backend,
) {
    let cluster = start(backend, "channels-norecover").await;
    let (mut c, _) = cluster.at(0).connect(Kind::Ws, "reader").await;
    let (ack, _) = ask(&mut c, 1, "channel:subscribe", json!({"channel": "short:w"})).await;
    let epoch = ack["data"]["epoch"].clone();
    ask(&mut c, 2, "channel:unsubscribe", json!({"channel": "short:w"})).await;
    for n in 1..=12 {
        backend_publish(&mut c, 10 + n, "short:w", json!(n)).await;
    }
    // Missed 12, history keeps 5: not recoverable.
    let (ack, _) = ask(
        &mut c,
        3,
        "channel:subscribe",
        json!({"channel": "short:w", "since": {"offset": 0, "epoch": epoch}}),
    )
    .await;
    let d = &ack["data"];
    assert_eq!(
        (d["recovered"].as_bool(), d["offset"].as_u64(), d["publications"].clone()),
        (Some(false), Some(12), json!([])),
        "{ack}"
    );
    ask(&mut c, 4, "channel:unsubscribe", json!({"channel": "short:w"})).await;
    // Within the window: recovered.
    let (ack, _) = ask(
        &mut c,
        5,
        "channel:subscribe",
        json!({"channel": "short:w", "since": {"offset": 9, "epoch": epoch}}),
    )
    .await;
    let offsets: Vec<u64> = ack["data"]["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["offset"].as_u64().unwrap())
        .collect();
    assert_eq!((ack["data"]["recovered"].as_bool(), offsets), (Some(true), vec![10, 11, 12]));
    ask(&mut c, 6, "channel:unsubscribe", json!({"channel": "short:w"})).await;
    // Another epoch, or a position ahead of the channel: not recovered.
    for since in [json!({"offset": 11, "epoch": "e-other"}), json!({"offset": 99, "epoch": epoch})]
    {
        let (ack, _) =
            ask(&mut c, 7, "channel:subscribe", json!({"channel": "short:w", "since": since}))
                .await;
        assert_eq!(ack["data"]["recovered"], false, "{ack}");
        ask(&mut c, 8, "channel:unsubscribe", json!({"channel": "short:w"})).await;
    }
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

/// The channel's history is lost under its live subscribers (here: deleted from Redis, as a
/// Redis restart without persistence would): they are told `state_lost`, and resubscribing
/// from the old position says it was not recovered.
#[tokio::test]
async fn an_epoch_change_ends_live_subscriptions_with_state_lost() {
    let cluster = start(Backend::Redis, "channels-epoch").await;
    let (mut publisher, _) = cluster.at(0).connect(Kind::Ws, "backend").await;
    let (mut sub, _) = cluster.at(1).connect(Kind::Wt, "reader").await;
    let mut seen = Seen::default();
    subscribe(&mut sub, 1, "news:e", &mut seen, false).await;
    backend_publish(&mut publisher, 1, "news:e", json!(1)).await;
    read_until(&mut sub, &mut seen, 1, Duration::from_secs(5)).await;
    let client = redis::Client::open(redis_url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}ch:{{news:e}}:*", cluster.prefix))
        .query_async(&mut con)
        .await
        .unwrap();
    // The history's two keys (the channel's occupancy is not its history).
    let keys: Vec<String> = keys.into_iter().filter(|k| !k.ends_with(":occ")).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let _: () = redis::cmd("DEL").arg(keys).query_async(&mut con).await.unwrap();
    let fresh = backend_publish(&mut publisher, 2, "news:e", json!("new epoch")).await;
    assert_eq!(fresh["offset"], 1);
    assert_ne!(fresh["epoch"].as_str(), Some(seen.epoch.as_str()));
    let lost = next(&mut sub, "channel:unsubscribed").await;
    assert_eq!(
        (lost["code"].as_str(), lost["resubscribe"].as_bool()),
        (Some("state_lost"), Some(true)),
        "{lost}"
    );
    let ack = subscribe(&mut sub, 2, "news:e", &mut seen, true).await;
    assert_eq!(
        (ack["data"]["recovered"].as_bool(), ack["data"]["epoch"].clone()),
        (Some(false), fresh["epoch"].clone())
    );
    cleanup(&cluster.prefix).await;
    cluster.stop().await;
}

/// Publishes `count` publications to `channel` through `c`, one acked request at a time
/// (ids from `first_id`).
async fn publish_many(mut c: Client, channel: &'static str, count: u64) -> Client {
    for n in 0..count {
        backend_publish(&mut c, 1_000 + n, channel, json!({"n": n})).await;
    }
    c
}

/// Three instances on one Redis. Two publishers (instances 0 and 2) publish thousands of
/// publications concurrently while the subscriber, first on instance 1, reconnects twice: once
/// politely to instance 0, once after the instance it was on was killed (`kill -9`, a process
/// of its own) to instance 2. Every publication arrives exactly once, in offset order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_publications_arrive_once_in_order_across_reconnects_and_a_crash() {
    const PER_PUBLISHER: u64 = 1_500;
    const CHANNEL: &str = "fire:hose";
    let prefix = unique_prefix("channels-firehose");
    let config = |c: &mut rtgate::config::Config| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.dev_events = true;
        c.namespaces = namespaces();
        c.event_rate_limit = 1_000_000;
    };
    let a = spawn(config).await;
    let c_server = spawn(config).await;
    // The instance that will be killed runs as its own process, with the same namespaces
    // (from a configuration file).
    let file = std::env::temp_dir()
        .join(format!("rtgate-firehose-{}.toml", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, "[namespaces.fire]\nhistory_size = 1000\nrecover = true\n").unwrap();
    let mut b = ServerProcess::start(
        &["--config", file.to_str().unwrap(), "--event-rate-limit", "1000000"],
        &[("REDIS_URL", redis_url()), ("RTGATE_REDIS_PREFIX", prefix.clone())],
    )
    .await;

    let mut seen = Seen::default();
    let mut sub = b.connect(Kind::Wt, "reader").await;
    subscribe(&mut sub, 1, CHANNEL, &mut seen, false).await;
    let p1 = tokio::spawn(publish_many(
        a.connect(Kind::Ws, "backend-a").await.0,
        CHANNEL,
        PER_PUBLISHER,
    ));
    let p2 = tokio::spawn(publish_many(
        c_server.connect(Kind::Ws, "backend-c").await.0,
        CHANNEL,
        PER_PUBLISHER,
    ));
    let total = 2 * PER_PUBLISHER;

    // A polite reconnect to instance 0, a third of the way in.
    read_until(&mut sub, &mut seen, total / 3, Duration::from_secs(60)).await;
    sub.send(&json!({"type": "disconnect"})).await;
    drop(sub);
    let mut sub = a.open(Kind::Ws).await;
    connect(&mut sub, &a).await;
    subscribe(&mut sub, 2, CHANNEL, &mut seen, true).await;
    // Back to the process, then kill it two thirds of the way in.
    read_until(&mut sub, &mut seen, total / 2, Duration::from_secs(60)).await;
    drop(sub);
    let mut sub = b.connect(Kind::Ws, "reader").await;
    subscribe(&mut sub, 3, CHANNEL, &mut seen, true).await;
    read_until(&mut sub, &mut seen, 2 * total / 3, Duration::from_secs(60)).await;
    b.child.kill().unwrap();
    b.child.wait().unwrap();
    drop(sub);
    let mut sub = c_server.open(Kind::Wt).await;
    connect(&mut sub, &c_server).await;
    subscribe(&mut sub, 4, CHANNEL, &mut seen, true).await;

    p1.await.unwrap();
    p2.await.unwrap();
    read_until(&mut sub, &mut seen, total, Duration::from_secs(60)).await;
    seen.assert_complete(total);
    let _ = std::fs::remove_file(&file);
    cleanup(&prefix).await;
}

async fn connect(c: &mut Client, server: &TestServer) {
    c.send(&json!({"type": "connect", "token": server.token("reader")})).await;
    assert_eq!(c.recv().await.unwrap()["type"], "connected");
}

/// Missed publications that would not fit in the connection's outbound budget are not pushed
/// into one ack (which would cut the connection as a slow consumer): the subscriber is told to
/// reload instead, and a history read returns fewer.
#[tokio::test]
async fn recovery_too_big_for_one_ack_says_reload_and_keeps_the_connection() {
    let cluster = start(Backend::Memory, "channels-bigrecover").await;
    let (mut c, _) = cluster.at(0).connect(Kind::Ws, "reader").await;
    let (ack, _) = ask(&mut c, 1, "channel:subscribe", json!({"channel": "news:big"})).await;
    let epoch = ack["data"]["epoch"].clone();
    ask(&mut c, 2, "channel:unsubscribe", json!({"channel": "news:big"})).await;
    let big = "x".repeat(50_000);
    for n in 0..8 {
        backend_publish(&mut c, 10 + n, "news:big", json!(big)).await;
    }
    let (ack, _) = ask(
        &mut c,
        3,
        "channel:subscribe",
        json!({"channel": "news:big", "since": {"offset": 0, "epoch": epoch}}),
    )
    .await;
    assert_eq!(
        (ack["data"]["recovered"].as_bool(), ack["data"]["offset"].as_u64()),
        (Some(false), Some(8)),
        "{}",
        ack["data"]["recovered"]
    );
    let (h, _) =
        ask(&mut c, 4, "channel:history", json!({"channel": "news:big", "limit": 8})).await;
    let n = h["data"]["publications"].as_array().map_or(0, Vec::len);
    assert!((1..8).contains(&n), "{n} publications of 50 kB in one answer");
    assert_eq!(c.request(5, "sys:echo", json!("still here")).await["data"], "still here");
    cluster.stop().await;
}

/// Redis restarts empty under a subscriber in a presence namespace: once the instance sees
/// Redis again it puts its presence entries back (refreshes alone keep only entries that
/// still exist).
#[tokio::test]
async fn channel_presence_comes_back_after_redis_restarts_empty() {
    let mut redis = crate::redis_util::PrivateRedis::start().await;
    let server = spawn(|c| {
        c.redis_url = Some(redis.url());
        c.namespaces = namespaces();
        c.liveness_ttl = Duration::from_millis(600);
    })
    .await;
    let (mut alice, _) = server.connect(Kind::Ws, "alice").await;
    let (ack, _) = ask(&mut alice, 1, "channel:subscribe", json!({"channel": "room:p"})).await;
    assert_eq!(ack["data"]["presence"].as_array().map(Vec::len), Some(1), "{ack}");
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 10;
    loop {
        id += 1;
        let (stats, _) =
            ask(&mut alice, id, "channel:presence-stats", json!({"channel": "room:p"})).await;
        if stats["data"]["clients"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "presence did not come back: {stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A namespace with `history_durable` keeps its history in the database: emptying Redis
/// changes nothing for it (no `state_lost`, offsets go on in the same epoch), and after every
/// instance was stopped and a new one started on the same database, a subscriber recovers what
/// it missed. Memory + SQLite is one instance; Redis + PostgreSQL is two on one Redis and one
/// schema.
#[rstest]
#[case::memory(Backend::Memory)]
#[case::redis(Backend::Redis)]
#[tokio::test]
async fn durable_history_survives_redis_and_every_instance_restarting(#[case] backend: Backend) {
    use crate::{
        cluster::Cluster,
        db_util::{Db, TestDb},
    };
    let db = TestDb::new(if backend == Backend::Redis { Db::Postgres } else { Db::Sqlite }).await;
    let tweak = |c: &mut rtgate::config::Config| {
        db.apply(c);
        let mut ledger = rtgate::config::NamespaceConfig::new("ledger");
        ledger.history_size = 100;
        ledger.recover = true;
        ledger.history_durable = true;
        c.namespaces = rtgate::config::Namespaces::new([ledger]).unwrap();
    };
    let cluster = Cluster::start(backend, "channels-durable", tweak).await;
    let (mut publisher, _) = cluster.at(0).connect(Kind::Ws, "backend").await;
    let (mut sub, _) = cluster.at(1).connect(Kind::Wt, "reader").await;
    let mut seen = Seen::default();
    subscribe(&mut sub, 1, "ledger:x", &mut seen, false).await;
    for n in 1..=3 {
        backend_publish(&mut publisher, n, "ledger:x", json!(n)).await;
    }
    read_until(&mut sub, &mut seen, 3, Duration::from_secs(5)).await;
    let epoch = seen.epoch.clone();
    if backend == Backend::Redis {
        // As a Redis restarted without persistence: every key of this cluster gone.
        cleanup(&cluster.prefix).await;
        let fourth = backend_publish(&mut publisher, 4, "ledger:x", json!(4)).await;
        assert_eq!((fourth["offset"].as_u64(), fourth["epoch"].as_str()), (Some(4), Some(&*epoch)));
        read_until(&mut sub, &mut seen, 4, Duration::from_secs(5)).await;
    } else {
        backend_publish(&mut publisher, 4, "ledger:x", json!(4)).await;
        read_until(&mut sub, &mut seen, 4, Duration::from_secs(5)).await;
    }
    drop(sub);
    backend_publish(&mut publisher, 5, "ledger:x", json!(5)).await;
    drop(publisher);
    let prefix = cluster.prefix.clone();
    cluster.stop().await;

    // A new instance (the memory case: new in-memory state) on the same database.
    let server = spawn(|c| {
        tweak(c);
        c.dev_events = true;
        if backend == Backend::Redis {
            c.redis_url = Some(redis_url());
            c.redis_prefix = prefix.clone();
        }
    })
    .await;
    let (mut sub, _) = server.connect(Kind::Ws, "reader").await;
    let ack = subscribe(&mut sub, 1, "ledger:x", &mut seen, true).await;
    assert_eq!(
        (ack["data"]["recovered"].as_bool(), ack["data"]["epoch"].as_str()),
        (Some(true), Some(&*epoch)),
        "{ack}"
    );
    let (mut publisher, _) = server.connect(Kind::Ws, "backend").await;
    assert_eq!(backend_publish(&mut publisher, 6, "ledger:x", json!(6)).await["offset"], 6);
    read_until(&mut sub, &mut seen, 6, Duration::from_secs(5)).await;
    seen.assert_complete(6);
    server.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    cleanup(&prefix).await;
    db.cleanup().await;
}
