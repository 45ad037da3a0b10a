//! An instance's life in the cluster: a restart under a pinned `--instance-id` is a new
//! incarnation that reaps the crashed one; a graceful exit leaves nothing of the instance in
//! Redis; during a Redis blackout every shared-state call is bounded, and once one found Redis
//! unreachable the rest answer at once.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    cluster::next_event,
    helpers::{Kind, ServerProcess, http_get_auth, spawn},
    redis_util::{cleanup, keys, redis_url, unique_prefix},
    relay::Relay,
};

const TTL: Duration = Duration::from_millis(900);
const CLEANUP: Duration = Duration::from_millis(300);

fn ghost_token() -> String {
    let mut config = crate::helpers::test_config();
    config.jwt.secret = crate::helpers::SECRET.into();
    rtgate::auth::mint_dev_token(&config.jwt, "ghost", Duration::from_secs(60), None, vec![])
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_under_a_pinned_id_reaps_the_crashed_run() {
    let prefix = unique_prefix("pinned");
    let db = std::env::temp_dir().join(format!("rtgate-pinned-{}.sqlite", uuid::Uuid::new_v4()));
    let env = [
        ("REDIS_URL", redis_url()),
        ("RTGATE_REDIS_PREFIX", prefix.clone()),
        ("RTGATE_SQLITE_PATH", db.display().to_string()),
        ("RTGATE_ALLOW_LOCAL_DATABASE", "true".to_owned()),
    ];
    let args =
        ["--instance-id", "pinned-a", "--liveness-ttl", "900ms", "--cleanup-interval", "300ms"];
    let token = ghost_token();
    let mut first = ServerProcess::start(&args, &env).await;
    let _ghost = first.connect(Kind::Ws, "ghost").await;
    // Its connection row is written (the history writer batches) before the crash.
    let deadline = Instant::now() + Duration::from_secs(5);
    while http_get_auth(first.http, "/api/users/ghost/connections", Some(&token)).await.1["items"]
        .as_array()
        .is_none_or(Vec::is_empty)
    {
        assert!(Instant::now() < deadline, "the connection row was never written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.child.kill().unwrap(); // SIGKILL: no teardown runs
    first.child.wait().unwrap();

    let second = ServerProcess::start(&args, &env).await;
    let restarted = Instant::now();
    let mut watcher = second.connect(Kind::Wt, "watcher").await;
    let ack = watcher.request(1, "presence:subscribe", json!({"userIds": ["ghost"]})).await;
    // The crashed run's socket is still registered until its liveness runs out.
    if ack["data"]["users"][0]["online"] == true {
        let down = next_event(&mut watcher, "presence:update").await;
        assert_eq!(
            (down["userId"].as_str(), down["status"].as_str()),
            (Some("ghost"), Some("offline"))
        );
    }
    let bound = TTL + CLEANUP + Duration::from_millis(1500);
    assert!(restarted.elapsed() <= bound, "took {:?} > {bound:?}", restarted.elapsed());

    // The crashed run's connection row is closed, and says which run it was.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, page) =
            http_get_auth(second.http, "/api/users/ghost/connections", Some(&token)).await;
        assert_eq!(status, 200, "{page}");
        let row = &page["items"][0];
        if row["disconnectReason"] == "instance_lost" {
            assert!(row["serverInstance"].as_str().unwrap().starts_with("pinned-a#"), "{row}");
            break;
        }
        assert!(Instant::now() < deadline, "the crashed run's row is still open: {page}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(second);
    cleanup(&prefix).await;
    let _ = std::fs::remove_file(&db);
}

/// A graceful exit removes the instance from the cluster at once: its entry in the liveness
/// list, not only its sockets. What remains is the presence version watermark of the users'
/// bucket (one key per bucket, for good), nothing per user.
#[tokio::test]
async fn a_graceful_exit_leaves_only_the_version_watermark() {
    let prefix = unique_prefix("leave");
    let server = spawn(|c| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
    })
    .await;
    let (_alice, _) = server.connect(Kind::Ws, "alice").await;
    let (_bob, _) = server.connect(Kind::Wt, "bob").await;
    assert!(keys(&redis_url(), &prefix).await.iter().any(|k| k.ends_with("{presence}:liveness")));
    server.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    assert!(matches!(stopped, Ok(Ok(Ok(())))), "{stopped:?}");
    let left = keys(&redis_url(), &prefix).await;
    assert_eq!(left, [format!("{prefix}{{pb:0}}:ver")], "{left:?}");
    cleanup(&prefix).await;
}

/// Redis stops answering (a black hole, not a refused connection): a per-user-limited event
/// is admitted (fail-open) within the documented bound, and once one call found Redis
/// unreachable, the next events and a new connection do not wait at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_blackout_costs_one_bounded_wait_then_none() {
    let redis: std::net::SocketAddr = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .expect("REDIS_TEST_URL is redis://host:port");
    let relay = Relay::tcp(redis).await;
    let prefix = unique_prefix("blackout");
    let server = spawn(|c| {
        c.redis_url = Some(format!("redis://{}", relay.addr));
        c.redis_prefix = prefix.clone();
        c.message_events = vec!["sys:echo".into()];
    })
    .await;
    let (mut alice, _) = server.connect(Kind::Ws, "alice").await;
    assert_eq!(alice.request(1, "sys:echo", json!("warm")).await["data"], "warm");

    relay.cut();
    let started = Instant::now();
    assert_eq!(alice.request(2, "sys:echo", json!("first")).await["data"], "first");
    let first = started.elapsed();
    let bound = rtgate::state::STATE_TIMEOUT + Duration::from_millis(1500);
    assert!(first <= bound, "the first limited event took {first:?} > {bound:?}");
    for id in 3..8 {
        let started = Instant::now();
        assert_eq!(alice.request(id, "sys:echo", json!(id)).await["data"], id);
        let took = started.elapsed();
        assert!(took < Duration::from_millis(500), "event {id} waited {took:?} on a known outage");
    }
    let started = Instant::now();
    let (mut bob, _) = server.connect(Kind::Wt, "bob").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "a connect waited {took:?} on a known outage");
    let q = bob.request(1, "presence:query", json!({"userIds": ["alice"]})).await;
    assert_eq!(q["code"], "unavailable");
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(ready["status"], "degraded", "{ready}");
    cleanup(&prefix).await;
}

/// Redis without a shared database would split chat and history per instance: refused at
/// start unless allowed, and said on `/health/ready` when allowed.
#[tokio::test]
async fn redis_without_a_shared_database_is_refused_unless_allowed() {
    let mut config = crate::helpers::test_config();
    config.redis_url = Some(redis_url());
    config.redis_prefix = unique_prefix("split");
    config.allow_local_database = false;
    let refused = rtgate::server::Server::bind(config).await.err().expect("refused");
    let why = format!("{refused:#}");
    assert!(why.contains("DATABASE_URL") && why.contains("--allow-local-database"), "{why}");

    let prefix = unique_prefix("split");
    let server = spawn(|c| {
        c.redis_url = Some(redis_url());
        c.redis_prefix = prefix.clone();
    })
    .await;
    let (_, ready) = server.get("/health/ready").await;
    let warning = ready["checks"]["database"]["warning"].as_str().unwrap_or_default();
    assert!(warning.contains("DATABASE_URL"), "{ready}");
    // Without Redis there is one instance, and nothing to warn about.
    let alone = spawn(|_| {}).await;
    let (_, ready) = alone.get("/health/ready").await;
    assert!(ready["checks"]["database"].get("warning").is_none(), "{ready}");
    cleanup(&prefix).await;
}
