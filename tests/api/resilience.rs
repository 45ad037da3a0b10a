//! Failure: a crashed instance's users go offline on the survivors; a Redis outage keeps
//! sessions working and the cluster converges when Redis returns; keys do not leak.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::{
    cluster::next_event,
    db_util::Gate,
    helpers::{Client, FAN, Kind, ServerProcess, TestServer, fan_namespaces, spawn, subscribe},
    redis_util::{PrivateRedis, cleanup, keys, redis_url, unique_prefix},
};

const TTL: Duration = Duration::from_millis(900);
const CLEANUP: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_instance_users_go_offline_within_ttl_plus_interval() {
    let prefix = unique_prefix("kill9");
    let fast = |c: &mut rtgate::config::Config| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.liveness_ttl = TTL;
        c.cleanup_interval = CLEANUP;
    };
    let survivor = spawn(fast).await;
    let victim = ServerProcess::start(
        &["--liveness-ttl", "900ms", "--cleanup-interval", "300ms"],
        &[("REDIS_URL", redis_url()), ("RTGATE_REDIS_PREFIX", prefix.clone())],
    )
    .await;
    let (mut watcher, _) = survivor.connect(Kind::Ws, "watcher").await;
    watcher.request(1, "presence:subscribe", json!({"userIds": ["gone1", "gone2"]})).await;
    let _a = victim.connect(Kind::Ws, "gone1").await;
    let _b = victim.connect(Kind::Wt, "gone2").await;
    for _ in 0..2 {
        assert_eq!(next_event(&mut watcher, "presence:update").await["status"], "online");
    }

    let mut victim = victim;
    victim.child.kill().unwrap(); // SIGKILL: no teardown runs
    victim.child.wait().unwrap();
    let killed = Instant::now();
    let mut offline = Vec::new();
    while offline.len() < 2 {
        let u = next_event(&mut watcher, "presence:update").await;
        assert_eq!(u["status"], "offline");
        offline.push(u["userId"].as_str().unwrap().to_owned());
    }
    offline.sort();
    assert_eq!(offline, ["gone1", "gone2"]);
    let bound = TTL + CLEANUP + Duration::from_millis(1500);
    assert!(killed.elapsed() <= bound, "took {:?} > {bound:?}", killed.elapsed());
    let q = watcher.request(2, "presence:query", json!({"userIds": ["gone1"]})).await;
    assert_eq!(q["data"]["users"][0]["online"], false);
    // Nothing of the dead instance is left in Redis: only the watcher's user hash remains, and
    // of the users that were on it nothing (their versions live in the bucket's watermark).
    let left = keys(&redis_url(), &prefix).await;
    let hashes: Vec<&String> = left.iter().filter(|k| k.ends_with(":sockets")).collect();
    assert_eq!(hashes.len(), 1, "{left:?}");
    assert!(hashes[0].ends_with(":u:watcher:sockets"), "{left:?}");
    assert!(!left.iter().any(|k| k.contains(":u:gone")), "{left:?}");
    assert!(left.iter().any(|k| k.ends_with("{pb:0}:ver")), "{left:?}");
    cleanup(&prefix).await;
}

#[tokio::test]
async fn redis_outage_keeps_sessions_up_and_the_cluster_converges_after() {
    let mut redis = PrivateRedis::start().await;
    let server = spawn(|c| {
        c.redis_url = Some(redis.url());
        c.liveness_ttl = Duration::from_millis(600);
    })
    .await;
    let (mut alice, _) = server.connect(Kind::Ws, "alice").await;
    let (mut bob, _) = server.connect(Kind::Wt, "bob").await;
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(
        (ready["status"].as_str(), ready["checks"]["redis"]["status"].as_str()),
        (Some("ready"), Some("up"))
    );

    redis.kill();
    // Sessions keep working for everything local.
    assert_eq!(alice.request(1, "sys:echo", json!("local")).await["data"], "local");
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!(status, 200);
    assert_eq!(
        (ready["status"].as_str(), ready["checks"]["redis"]["status"].as_str()),
        (Some("degraded"), Some("down"))
    );
    let q = bob.request(2, "presence:query", json!({"userIds": ["alice"]})).await;
    assert_eq!(q["code"], "unavailable");
    // A session that starts during the outage still connects.
    let (mut carol, _) = server.connect(Kind::Ws, "carol").await;

    // Redis comes back empty: the instance rewrites its sessions and presence converges.
    redis.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let q =
            carol.request(3, "presence:query", json!({"userIds": ["alice", "bob", "carol"]})).await;
        let online: Vec<bool> = q["data"]["users"]
            .as_array()
            .map(|u| u.iter().map(|u| u["online"] == true).collect())
            .unwrap_or_default();
        if online == [true, true, true] {
            break;
        }
        assert!(Instant::now() < deadline, "presence did not converge: {q}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["status"], "ready");
}

/// Two instances on one Redis, one of them (`cut_off`) through a gate; bob on the other
/// watches alice, who is connected to `cut_off`.
struct Outage {
    prefix: String,
    gate: Gate,
    cut_off: TestServer,
    _watching: TestServer,
    bob: Client,
    alice: Client,
    /// Alice's `online` as bob saw it.
    up: Value,
}

impl Outage {
    async fn start(name: &str) -> Outage {
        Self::with_liveness(name, false).await
    }

    /// With `reaping`, `cut_off` lives `TTL` without a heartbeat and the watching instance
    /// reaps every `CLEANUP`: an outage longer than `TTL` gets `cut_off` reaped.
    async fn with_liveness(name: &str, reaping: bool) -> Outage {
        let prefix = unique_prefix(name);
        let redis: std::net::SocketAddr = redis_url()
            .trim_start_matches("redis://")
            .trim_end_matches('/')
            .parse()
            .expect("REDIS_TEST_URL is redis://host:port");
        let gate = Gate::start(redis, true).await;
        // The default liveness TTL (15 s: a heartbeat every 5 s), so only the probes that
        // start when a call finds Redis down bring the instance back within the bound of
        // `offline_after_reopening`. The watching instance's reaper stays out of it (its first
        // pass is long after the test), so an `offline` can only come from the resync.
        let cut_off = spawn(|c| {
            c.redis_url = Some(format!("redis://{}", gate.addr));
            c.redis_prefix = prefix.clone();
            if reaping {
                c.liveness_ttl = TTL;
            }
        })
        .await;
        let watching = spawn(|c| {
            c.redis_url = Some(redis_url());
            c.redis_prefix = prefix.clone();
            c.cleanup_interval = if reaping { CLEANUP } else { Duration::from_secs(600) };
        })
        .await;
        let (mut bob, _) = watching.connect(Kind::Ws, "bob").await;
        bob.request(1, "presence:subscribe", json!({"userIds": ["alice"]})).await;
        let (alice, _) = cut_off.connect(Kind::Ws, "alice").await;
        let up = next_event(&mut bob, "presence:update").await;
        assert_eq!(up["status"], "online", "{up}");
        Outage { prefix, gate, cut_off, _watching: watching, bob, alice, up }
    }

    /// Waits until `cut_off` is degraded and has no session left.
    async fn degraded_and_empty(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (_, ready) = self.cut_off.get("/health/ready").await;
            if ready["status"] == "degraded"
                && ready["sessions"].as_object().is_some_and(|m| m.is_empty())
            {
                return;
            }
            assert!(Instant::now() < deadline, "not degraded without sessions: {ready}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the gate and checks bob gets alice's `offline`, with the device that went, soon.
    async fn offline_after_reopening(mut self) {
        let device = self.up["deviceId"].as_str().filter(|d| !d.is_empty()).expect("a device");
        self.gate.open();
        let reopened = Instant::now();
        let down = next_event(&mut self.bob, "presence:update").await;
        // Probes every second while down (README): one probe, the resync, the publication.
        let took = reopened.elapsed();
        assert!(took < Duration::from_secs(3), "offline {took:?} after Redis answered again");
        assert_eq!(
            (down["userId"].as_str(), down["status"].as_str(), down["deviceId"].as_str()),
            (Some("alice"), Some("offline"), Some(device)),
            "{down}"
        );
        assert!(down["version"].as_u64() > self.up["version"].as_u64(), "{down} after {}", self.up);
        cleanup(&self.prefix).await;
    }
}

/// A session that ends while its instance cannot reach Redis stays registered there until
/// Redis answers again; then the instance's resync removes it, and a watcher on another
/// instance gets the user's `offline` with the device that went (the stored record's: the
/// session that registered it is gone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_ended_in_an_outage_goes_offline_after_it_with_its_device() {
    let mut o = Outage::start("resync-offline").await;
    o.gate.close();
    // A call finds Redis unreachable first, so the instance is degraded before alice leaves
    // and her unregister is refused without being sent.
    let q = o.alice.request(2, "presence:query", json!({"userIds": ["bob"]})).await;
    assert_eq!(q["code"], "unavailable", "{q}");
    o.alice.send(&json!({"type": "disconnect"})).await;
    o.degraded_and_empty().await;
    o.offline_after_reopening().await;
}

/// An unregister that Redis runs but whose reply never arrives: Redis removed the socket and
/// decided the `offline`, and nobody announced it. The resync announces the user's state
/// then, with the device that went.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_whose_reply_was_lost_is_announced_after_the_outage() {
    let mut o = Outage::start("resync-lost").await;
    o.gate.mute();
    o.alice.send(&json!({"type": "disconnect"})).await;
    // Redis ran the unregister (alice's hash is gone) while the call waits for its reply, then
    // times out (2 s) and the instance is degraded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while keys(&redis_url(), &o.prefix).await.iter().any(|k| k.ends_with(":u:alice:sockets")) {
        assert!(Instant::now() < deadline, "the unregister never reached Redis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    o.degraded_and_empty().await;
    // Cut what the muted connections still carry, then let new ones through.
    o.gate.close();
    o.offline_after_reopening().await;
}

/// A session that ends in an outage longer than its instance's liveness: another instance
/// reaps the instance and announces the user's `offline`; when Redis answers again, the
/// instance's resync finds the socket gone — by the reaper, not by a lost reply of its own —
/// and announces nothing more (no second `offline`, no second history row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_the_reaper_announced_is_not_announced_again_after_the_outage() {
    let mut o = Outage::with_liveness("resync-reaped", true).await;
    o.gate.close();
    let q = o.alice.request(2, "presence:query", json!({"userIds": ["bob"]})).await;
    assert_eq!(q["code"], "unavailable", "{q}");
    o.alice.send(&json!({"type": "disconnect"})).await;
    o.degraded_and_empty().await;
    let down = next_event(&mut o.bob, "presence:update").await;
    assert_eq!(
        (down["userId"].as_str(), down["status"].as_str()),
        (Some("alice"), Some("offline"))
    );
    assert_eq!(down["deviceId"], o.up["deviceId"], "{down}");

    o.bob.request(2, "presence:subscribe", json!({"userIds": ["marker"]})).await;
    o.gate.open();
    let deadline = Instant::now() + Duration::from_secs(10);
    while o.cut_off.get("/health/ready").await.1["status"] == "degraded" {
        assert!(Instant::now() < deadline, "still degraded after Redis answered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The resync runs right after the probe that clears the degraded state: give it time to
    // finish, then a marker's `online` from the same instance must be bob's next update.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _marker = o.cut_off.connect(Kind::Ws, "marker").await;
    let next = next_event(&mut o.bob, "presence:update").await;
    assert_eq!(
        (next["userId"].as_str(), next["status"].as_str()),
        (Some("marker"), Some("online"))
    );
    cleanup(&o.prefix).await;
}

/// Connects and disconnects many clients (some politely, some by dropping the transport)
/// and checks Redis is back to the keys an idle instance keeps.
#[tokio::test]
async fn keys_return_to_baseline_after_churn() {
    let prefix = unique_prefix("hygiene");
    let server = spawn(|c| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
        c.dev_events = true;
        c.namespaces = fan_namespaces();
        c.message_events = vec!["sys:echo".into()];
        // Clients that vanish are found by the heartbeat; keep it short for the test.
        c.ping_interval = Duration::from_millis(300);
        c.pong_timeout = Duration::from_millis(300);
    })
    .await;
    // Let the first liveness refresh land, then take the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let baseline = keys(&redis_url(), &prefix).await;
    assert!(!baseline.is_empty(), "the instance's liveness keys exist");

    for round in 0..3 {
        let mut clients = Vec::new();
        for i in 0..10 {
            let kind = if i % 2 == 0 { Kind::Ws } else { Kind::Wt };
            let (mut c, _) = server.connect(kind, &format!("churn{}", i % 4)).await;
            subscribe(&mut c, 1, &format!("{FAN}:r{i}")).await;
            c.request(2, "presence:subscribe", json!({"userIds": ["x"]})).await;
            c.request(3, "sys:echo", json!(round)).await;
            clients.push(c);
        }
        for (i, mut c) in clients.into_iter().enumerate() {
            if i % 3 == 0 {
                c.send(&json!({"type": "disconnect"})).await;
            }
            drop(c); // the rest vanish by dropping the transport
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = keys(&redis_url(), &prefix).await;
        // Rate-limit keys expire on their own and the presence watermark stays; count the rest.
        let lasting: Vec<&String> =
            now.iter().filter(|k| !k.contains(":rl:") && !k.ends_with(":ver")).collect();
        let expected: Vec<&String> = baseline.iter().collect();
        if lasting == expected
            && server.get("/health/ready").await.1["sessions"]
                .as_object()
                .is_some_and(|m| m.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "keys did not return to baseline: {now:?} vs {baseline:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cleanup(&prefix).await;
}
