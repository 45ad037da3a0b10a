//! Shared helpers for the backend suites: where the Redis and the Redis Cluster are, a
//! connection to either, and listing/deleting a test's keys on either.

use rtgate::state::redis_conn::{RedisConn, Target};

/// The Redis the suites run against.
pub fn redis_url() -> String {
    std::env::var("REDIS_TEST_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The Redis Cluster the suites run against (`scripts/services.sh` starts it).
pub fn cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_TEST_URL")
        .unwrap_or_else(|_| "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103".into())
}

/// A key prefix no other test uses.
pub fn unique_prefix(test: &str) -> String {
    format!("rtgate-test:{test}:{}:", uuid::Uuid::new_v4().simple())
}

/// Which backend a parametrized case runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Redis,
    Cluster,
}

impl Backend {
    /// The `REDIS_URL` of a Redis backend.
    pub fn url(self) -> String {
        match self {
            Backend::Memory => panic!("the memory backend has no URL"),
            Backend::Redis => redis_url(),
            Backend::Cluster => cluster_url(),
        }
    }

    /// A new connection (so two handles race at the server as two instances would).
    pub async fn conn(self) -> RedisConn {
        RedisConn::connect(&self.url()).await.unwrap()
    }
}

/// Plain connections to every master holding keys: the one Redis, or each cluster master
/// (pattern commands see one node's keys only).
async fn masters(backend: Backend) -> Vec<redis::aio::MultiplexedConnection> {
    let seed = match Target::parse(&backend.url()).unwrap() {
        Target::Single(info) => {
            let client = redis::Client::open(*info).unwrap();
            return vec![client.get_multiplexed_async_connection().await.unwrap()];
        }
        Target::Cluster(seeds) => seeds.into_iter().next().unwrap(),
    };
    let mut con =
        redis::Client::open(seed).unwrap().get_multiplexed_async_connection().await.unwrap();
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(&mut con).await.unwrap();
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else { continue };
        if !flags.contains("master") || flags.contains("fail") {
            continue;
        }
        let addr = addr.split('@').next().unwrap();
        let client = redis::Client::open(format!("redis://{addr}")).unwrap();
        out.push(client.get_multiplexed_async_connection().await.unwrap());
    }
    assert!(!out.is_empty(), "no cluster master in {nodes}");
    out
}

/// Every key under `prefix`, on every master.
pub async fn keys(backend: Backend, prefix: &str) -> Vec<String> {
    let mut all = Vec::new();
    for mut con in masters(backend).await {
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{prefix}*")).query_async(&mut con).await.unwrap();
        all.extend(keys);
    }
    all.sort();
    all
}

/// Deletes every key under `prefix` (end-of-test hygiene for the Redis cases). One DEL per key,
/// routed by the cluster connection (which follows a slot that moved since the listing): a
/// multi-key DEL would span slots on a cluster.
pub async fn cleanup(backend: Backend, prefix: &str) {
    if backend == Backend::Memory {
        return;
    }
    let mut con = backend.conn().await;
    for key in keys(backend, prefix).await {
        let _: () = redis::cmd("DEL").arg(key).query_async(&mut con).await.unwrap();
    }
}
