//! Redis Cluster only: a master that stops answering without closing its connections (frozen
//! with `SIGSTOP`, as a hung host or a long GC-like pause would), on a cluster of this test's
//! own: its replica is promoted after the node timeout, and keyed calls through one
//! `RedisConn`, and a sharded subscription of the frozen shard, must reach the new master
//! without the frozen one ever answering again.
//!
//! Its own cluster (3 masters, 3 replicas, `cluster-node-timeout` 1 s, on free ports) because
//! freezing a master of the shared one would stall every other test's calls to that shard.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionLike;
use rtgate::state::broker::redis::RedisBroker;
use rtgate::state::broker::{Broker, Channel};
use rtgate::state::redis_conn::{RedisConn, SLOW_CALL};

/// How long the frozen master's replica may take to be promoted and found: a few node
/// timeouts, the time the cluster needs to agree on the failure and elect.
const PROMOTION: Duration = Duration::from_secs(20);

/// How long the test waits for one call: past `SLOW_CALL`, as the state timeout is, so a call
/// to the frozen node is seen as slow before it is given up.
const CALL: Duration = Duration::from_millis(1500);

struct MiniCluster {
    nodes: Vec<(u16, Child)>,
    dir: std::path::PathBuf,
}

impl Drop for MiniCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            // A frozen node must be woken to die.
            let _ = Command::new("kill").arg("-CONT").arg(child.id().to_string()).status();
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A port whose cluster bus port (+10,000) is free too. Both below Linux's ephemeral range
/// (from 32,768), so no outgoing connection of a test running alongside takes one between
/// this check and the node's bind.
fn free_port_pair(taken: &[u16]) -> u16 {
    loop {
        let port = 10_000 + (rand_u16() % 12_000);
        if taken.iter().any(|&t| t == port || t + 10_000 == port || port + 10_000 == t) {
            continue;
        }
        let ok = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok();
        if ok {
            return port;
        }
    }
}

fn rand_u16() -> u16 {
    (uuid::Uuid::new_v4().as_u128() & 0xffff) as u16
}

async fn node(port: u16) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

impl MiniCluster {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rtgate-frozen-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = MiniCluster { nodes: Vec::new(), dir };
        let mut ports = Vec::new();
        for _ in 0..6 {
            let port = free_port_pair(&ports);
            ports.push(port);
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "1000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&cluster.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server (scripts/services.sh installs it)");
            cluster.nodes.push((port, child));
        }
        for &port in &ports {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                    && let Ok(mut con) = client.get_multiplexed_async_connection().await
                    && redis::cmd("PING").query_async::<String>(&mut con).await.is_ok()
                {
                    break;
                }
                assert!(Instant::now() < deadline, "redis-server on {port} did not start");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(created.success(), "redis-cli --cluster create failed");
        let deadline = Instant::now() + Duration::from_secs(30);
        for &port in &ports {
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut node(port).await)
                    .await
                    .unwrap();
                if info.contains("cluster_state:ok") {
                    break;
                }
                assert!(Instant::now() < deadline, "the cluster did not become ok");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        cluster
    }

    fn url(&self) -> String {
        let seeds: Vec<String> = self.nodes.iter().map(|(p, _)| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Every node's view but the frozen one's (`CLUSTER NODES`, its key count), for a
    /// failure message.
    async fn views(&self, frozen: u16) -> String {
        let mut out = String::new();
        for &(port, _) in self.nodes.iter().filter(|(p, _)| *p != frozen) {
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

    /// The master serving `key`'s slot, as (port, pid).
    async fn master_of(&self, key: &str) -> (u16, u32) {
        let port0 = self.nodes[0].0;
        let mut con = node(port0).await;
        let slot: u16 =
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async(&mut con).await.unwrap();
        let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await.unwrap();
        for line in nodes.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if !f[2].contains("master") || f[2].contains("fail") {
                continue;
            }
            let serves = f[8..].iter().any(|range| {
                let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
            });
            if serves {
                let port: u16 =
                    f[1].split('@').next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
                let pid = self.nodes.iter().find(|(p, _)| *p == port).unwrap().1.id();
                return (port, pid);
            }
        }
        panic!("no master for slot {slot} in {nodes}");
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
    let cluster = MiniCluster::start().await;
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
    let (port, pid) = cluster.master_of(key).await;
    // The write is on the replica before the master freezes, so the promoted one has it.
    // `WAIT` counts the replicas that have the *calling connection's* writes, so the write is
    // repeated on the connection that waits. A replica of a new cluster may still be in its
    // first sync: ask again until it acknowledges.
    let mut master = node(port).await;
    let _: () = set.query_async(&mut master).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(200).query_async(&mut master).await.unwrap();
        if acked == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the replica did not acknowledge the write");
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
