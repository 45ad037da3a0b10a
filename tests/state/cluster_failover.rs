//! Redis Cluster only: a shard's master hands its slots to its replica (a manual `CLUSTER
//! FAILOVER`, what an operator or a failing master's replicas do), and the broker's sharded
//! subscription follows the slot to the new master while keyed calls succeed again.
//!
//! The failover is graceful, so the other cluster cases running alongside only see their
//! commands redirected; the cluster stays `ok` and keeps its shape (the old master becomes the
//! replica).

use std::time::{Duration, Instant};

use bytes::Bytes;
use rtgate::state::broker::redis::RedisBroker;
use rtgate::state::broker::{Broker, Channel};
use rtgate::state::history::redis::RedisHistory;
use rtgate::state::history::{History, HistoryOptions};
use rtgate::state::redis_conn::Target;

use crate::common::{self, Backend};

/// How long the replica may take to become master, and the subscription to follow it.
const TAKEOVER: Duration = Duration::from_secs(20);

async fn node(addr: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}")).unwrap();
    client.get_multiplexed_async_connection().await.unwrap()
}

/// The master serving `slot` and one of its replicas, as `host:port`.
async fn shard_of(slot: u16) -> (String, String) {
    let Target::Cluster(seeds) = Target::parse(&common::cluster_url()).unwrap() else {
        panic!("not a cluster URL");
    };
    let mut con = node(&seeds[0].addr().to_string()).await;
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await.unwrap();
    let lines: Vec<Vec<&str>> = nodes.lines().map(|l| l.split(' ').collect()).collect();
    let addr = |fields: &[&str]| fields[1].split('@').next().unwrap().to_owned();
    let master = lines
        .iter()
        .find(|f| {
            f[2].contains("master")
                && !f[2].contains("fail")
                && f[8..].iter().any(|range| {
                    let (lo, hi) = range.split_once('-').unwrap_or((range, range));
                    matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if lo <= slot && slot <= hi)
                })
        })
        .unwrap_or_else(|| panic!("no master for slot {slot} in {nodes}"));
    let replica = lines
        .iter()
        .find(|f| f[3] == master[0] && !f[2].contains("fail"))
        .unwrap_or_else(|| panic!("no replica of {} in {nodes}", master[1]));
    (addr(master), addr(replica))
}

#[tokio::test]
async fn sharded_subscription_and_keyed_calls_survive_a_failover() {
    let prefix = common::unique_prefix("cluster-failover");
    let url = common::cluster_url();
    let publisher = RedisBroker::connect(&url, prefix.as_str()).await.unwrap();
    let subscriber = RedisBroker::connect(&url, prefix.as_str()).await.unwrap();
    let mut rx = subscriber.take_receiver().unwrap();
    let history = RedisHistory::new(Backend::Cluster.conn().await, prefix.as_str());
    let opts = HistoryOptions {
        size: 10,
        ttl: Duration::from_secs(60),
        meta_ttl: Duration::from_secs(60),
        durable: false,
    };

    // The broker channel's name carries the tag `{failover}`, as the history's keys of channel
    // `failover` do: both live in the slot that fails over.
    let channel = Channel::Chan("{failover}".into());
    subscriber.subscribe(&channel).await.unwrap();
    publisher.publish(&channel, Bytes::from_static(b"before")).await.unwrap();
    let got = tokio::time::timeout(TAKEOVER, rx.recv()).await.unwrap().unwrap();
    assert_eq!(got.payload, Bytes::from_static(b"before"));
    history.append("failover", Bytes::from_static(b"1"), &opts).await.unwrap();

    let name = format!("{prefix}ch:chan:{{failover}}");
    let (master, replica) = {
        let mut any = Backend::Cluster.conn().await;
        let slot: u16 =
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(&name).query_async(&mut any).await.unwrap();
        shard_of(slot).await
    };
    let mut promoted = node(&replica).await;

    // A replica demoted by an earlier run may still be syncing, and a manual failover needs
    // it in sync. It also needs the other masters' votes, which they refuse for a second
    // failover of the same shard within twice the node timeout (30 s by default): then Redis
    // abandons it after 5 s, and the test takes over without the election (`TAKEOVER`), which
    // moves the slots the same way.
    let started = Instant::now();
    let mut asked: Option<Instant> = None;
    loop {
        let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut promoted).await.unwrap();
        if matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master") {
            break;
        }
        let info: String =
            redis::cmd("INFO").arg("replication").query_async(&mut promoted).await.unwrap();
        let in_sync = info.contains("master_link_status:up");
        match asked {
            None if in_sync => {
                let _: () =
                    redis::cmd("CLUSTER").arg("FAILOVER").query_async(&mut promoted).await.unwrap();
                asked = Some(Instant::now());
            }
            Some(at) if at.elapsed() > Duration::from_secs(6) => {
                let _: () = redis::cmd("CLUSTER")
                    .arg("FAILOVER")
                    .arg("TAKEOVER")
                    .query_async(&mut promoted)
                    .await
                    .unwrap();
                asked = Some(Instant::now());
            }
            _ => {}
        }
        assert!(started.elapsed() < TAKEOVER, "{replica} did not take over from {master}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // ...and a publish reaches the subscriber again, through the new master. Publishes may
    // fail or be lost while the slot map is being learned; retry until one arrives.
    let started = Instant::now();
    let mut n = 0u32;
    loop {
        n += 1;
        let payload = Bytes::from(format!("after {n}"));
        let _ = publisher.publish(&channel, payload.clone()).await;
        let _ = subscriber.ping().await;
        if let Ok(Some(got)) = tokio::time::timeout(Duration::from_millis(250), rx.recv()).await {
            assert_eq!(got.channel, channel);
            if got.payload.starts_with(b"after") {
                break;
            }
        }
        assert!(
            started.elapsed() < TAKEOVER,
            "no delivery {:?} after the failover",
            started.elapsed()
        );
    }

    // Keyed calls reach the new master: the history continues at the next offset.
    let started = Instant::now();
    let position = loop {
        match history.append("failover", Bytes::from_static(b"2"), &opts).await {
            Ok(position) => break position,
            Err(e) => {
                assert!(started.elapsed() < TAKEOVER, "history append after failover: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(position.offset, 2);
    common::cleanup(Backend::Cluster, &prefix).await;
}
