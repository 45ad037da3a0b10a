//! Redis Cluster only: a master that stops answering without closing its connections (frozen
//! with `SIGSTOP`, as a hung host or a long GC-like pause would), on a cluster of this test's
//! own: its replica is promoted after the node timeout, and keyed calls through one
//! `RedisConn`, and a sharded subscription of the frozen shard, must reach the new master
//! without the frozen one ever answering again.
//!
//! Its own cluster (3 masters, 3 replicas, `cluster-node-timeout` 1 s, on free ports) because
//! freezing a master of the shared one would stall every other test's calls to that shard.

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionLike;
use rtgate::state::broker::redis::RedisBroker;
use rtgate::state::broker::{Broker, Channel};
use rtgate::state::redis_conn::{RedisConn, SLOW_CALL};

use crate::local_redis::LocalRedis;

/// How long the frozen master's replica may take to be promoted and found: a few node
/// timeouts, the time the cluster needs to agree on the failure and elect.
const PROMOTION: Duration = Duration::from_secs(20);

/// How long the test waits for one call: past `SLOW_CALL`, as the state timeout is, so a call
/// to the frozen node is seen as slow before it is given up.
const CALL: Duration = Duration::from_millis(1500);

struct MiniCluster(LocalRedis);

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

impl MiniCluster {
    fn start() -> Self {
        let args = |port: u16| {
            let port = port.to_string();
            ["--port", &port, "--cluster-enabled", "yes", "--cluster-node-timeout", "1000"]
                .map(String::from)
                .to_vec()
        };
        let local = LocalRedis::start(LocalRedis::dir("frozen"), 6, args, Vec::new());
        local.create_cluster(1);
        MiniCluster(local)
    }

    fn url(&self) -> String {
        let seeds: Vec<String> =
            self.0.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Every node's view but the frozen one's (`CLUSTER NODES`, its key count), for a
    /// failure message.
    async fn views(&self, frozen: u16) -> String {
        let mut out = String::new();
        for &(port, _) in self.0.nodes.iter().filter(|(p, _)| *p != frozen) {
            let mut con = node(port).await;
            let nodes: String = redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut con)
                .await
                .unwrap_or_else(|e| e.to_string());
            let keys: i64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap_or(-1);
            out.push_str(&format!("node {port} ({keys} keys):\n{nodes}\n"));
        }
        out
    }

    /// The master serving `key`'s slot, as (port, pid), and the port of its replica.
    async fn shard_of(&self, key: &str) -> ((u16, u32), u16) {
        let port0 = self.0.nodes[0].0;
        let mut con = node(port0).await;
        let slot: u16 =
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut con).await.unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await.unwrap();
        let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
        let port_of = |f: &[&str]| -> u16 {
            f[1].split('@').next().unwrap().rsplit(':').next().unwrap().parse().unwrap()
        };
        let master = lines
            .iter()
            .filter(|f| f[2].contains("master") && !f[2].contains("fail"))
            .find(|f| {
                f[8..].iter().any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                })
            })
            .unwrap_or_else(|| panic!("no master for slot {slot} in {nodes}"));
        let replica = lines
            .iter()
            .find(|f| f[2].contains("slave") && f[3] == master[0])
            .unwrap_or_else(|| panic!("no replica of {} in {nodes}", master[0]));
        let port = port_of(master);
        let pid = self.0.nodes.iter().find(|(p, _)| *p == port).unwrap().1.id();
        ((port, pid), port_of(replica))
    }
}

async fn get(conn: &mut RedisConn, key: &str) -> Result<Option<String>, String> {
    let cmd = redis::cmd("GET").arg(key).clone();
    match tokio::time::timeout(CALL, conn.req_packed_command(&cmd)).await {
        Ok(Ok(v)) => redis::from_redis_value(v).map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".into()),
    }
}

#[tokio::test]
async fn calls_and_subscriptions_reach_the_replica_of_a_frozen_master() {
    assert!(CALL > SLOW_CALL);
    let cluster = MiniCluster::start();
    let url = cluster.url();
    let mut conn = RedisConn::connect(&url).await.unwrap();
    let publisher = RedisBroker::connect(&url, "t:").await.unwrap();
    let subscriber = RedisBroker::connect(&url, "t:").await.unwrap();
    let mut rx = subscriber.take_receiver().unwrap();
    // The key and the broker channel `t:ch:chan:{frozen}` share the tag: one slot, one shard.
    let key = "{frozen}:k";
    let channel = Channel::Chan("{frozen}".into());
    subscriber.subscribe(&channel).await.unwrap();
    publisher.publish(&channel, Bytes::from_static(b"before")).await.unwrap();
    let got = tokio::time::timeout(CALL, rx.recv()).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"before"));

    let set = redis::cmd("SET").arg(key).arg("1").clone();
    conn.req_packed_command(&set).await.unwrap();
    let ((port, pid), replica) = cluster.shard_of(key).await;
    // The write must be on the replica before the master freezes, so the promoted one has it.
    // Checked on the replica itself: right after the cluster is created a replica is still in
    // its first sync, and a write made then was seen missing from it once the sync was done,
    // with `WAIT` on the writing connection answering 1. So the write is repeated on the
    // master until the replica serves it.
    let mut master = node(port).await;
    let mut on_replica = node(replica).await;
    let _: () = redis::cmd("READONLY").query_async(&mut on_replica).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let _: () = set.query_async(&mut master).await.unwrap();
        let _: i64 = redis::cmd("WAIT").arg(1).arg(200).query_async(&mut master).await.unwrap();
        let there: Option<String> =
            redis::cmd("GET").arg(key).query_async(&mut on_replica).await.unwrap();
        if there.as_deref() == Some("1") {
            break;
        }
        assert!(Instant::now() < deadline, "the replica on {replica} never had the write");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(get(&mut conn, key).await, Ok(Some("1".into())));

    // Shown only if the test fails: the cluster as it was when the master froze.
    eprintln!("freezing the master on {port}; before:\n{}", cluster.views(0).await);
    let stopped = Command::new("kill").arg("-STOP").arg(pid.to_string()).status().unwrap();
    assert!(stopped.success());
    let frozen_at = Instant::now();

    // Keyed calls: retried as the state layer's callers do, each bounded past `SLOW_CALL`.
    let mut last = Err(String::new());
    while frozen_at.elapsed() < PROMOTION {
        last = get(&mut conn, key).await;
        if last == Ok(Some("1".into())) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if last != Ok(Some("1".into())) {
        let views = cluster.views(port).await;
        panic!(
            "keyed calls did not reach the promoted replica within {PROMOTION:?} of the master \
             (port {port}) freezing: last answer {last:?}; the cluster as the others see it:\n{views}"
        );
    }
    let keyed_after = frozen_at.elapsed();

    // The subscription: the broker is pinged as the health check does, and publishes are
    // retried until one arrives through the new master.
    let mut n = 0u32;
    let delivered = loop {
        n += 1;
        let payload = Bytes::from(format!("after {n}"));
        let _ = tokio::time::timeout(CALL, publisher.publish(&channel, payload)).await;
        let _ = tokio::time::timeout(CALL, subscriber.ping()).await;
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(250), rx.recv()).await
            && got.payload.starts_with(b"after")
        {
            break frozen_at.elapsed();
        }
        assert!(
            frozen_at.elapsed() < PROMOTION * 2,
            "no delivery on the frozen shard's channel within {:?}",
            PROMOTION * 2
        );
    };
    eprintln!(
        "after the master froze: keyed calls in {keyed_after:?}, deliveries in {delivered:?}"
    );
    drop(cluster);
}
