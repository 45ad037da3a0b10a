//! `RedisConn`: the connection every Redis backend holds, to a single Redis or to a Redis
//! Cluster, chosen by the `REDIS_URL` scheme. It owns the URL syntax of both deployments.
//!
//! - `redis://…` (and `unix://…`): one Redis, through a connection manager that reconnects.
//! - `redis+cluster://[user:password@]host:port[,host:port…]`: a Redis Cluster. The addresses
//!   are seed nodes; the client learns the slot map from them and routes each command to the
//!   master owning its key's slot, following `MOVED`/`ASK` redirections and failovers.
//!
//! The backends are written so that every script and every pipeline touches one hash slot
//! (keys share a `{tag}`), which is what lets the same code run on both.

use std::fmt;

use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::StateError;

/// The scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// What a `REDIS_URL` names.
#[derive(Debug, Clone)]
pub enum Target {
    Single(ConnectionInfo),
    /// Seed nodes of a cluster, each as an ordinary `redis://` address.
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    /// Parses a `REDIS_URL`. A cluster URL must name at least one seed node.
    pub fn parse(url: &str) -> Result<Self, StateError> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(Target::Single(url.into_connection_info()?));
        };
        // Credentials, when given, apply to every node.
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((auth, hosts)) => (format!("{auth}@"), hosts),
            None => (String::new(), rest),
        };
        let hosts = hosts.trim_end_matches('/');
        let seeds = hosts
            .split(',')
            .filter(|h| !h.trim().is_empty())
            .map(|h| format!("redis://{auth}{}", h.trim()).into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(StateError::Protocol(format!(
                "{CLUSTER_SCHEME} URL names no seed node (expected host:port[,host:port…])"
            )));
        }
        Ok(Target::Cluster(seeds))
    }
}

/// A connection to one Redis or to a Redis Cluster. Cheap to clone: clones share the
/// underlying multiplexed connections.
#[derive(Clone)]
pub enum RedisConn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_cluster() { "RedisConn::Cluster" } else { "RedisConn::Single" })
    }
}

impl RedisConn {
    /// Connects to what `url` names. Fails if it cannot be reached now; later outages are
    /// survived (reconnection, slot map refresh).
    pub async fn connect(url: &str) -> Result<Self, StateError> {
        match Target::parse(url)? {
            Target::Single(info) => {
                Ok(RedisConn::Single(ConnectionManager::new(Client::open(info)?).await?))
            }
            Target::Cluster(seeds) => {
                let client = ClusterClient::builder(seeds).build()?;
                Ok(RedisConn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }
}

impl From<ConnectionManager> for RedisConn {
    fn from(conn: ConnectionManager) -> Self {
        RedisConn::Single(conn)
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_their_seed_nodes() {
        let Ok(Target::Cluster(seeds)) =
            Target::parse("redis+cluster://u:secret@127.0.0.1:7101, 127.0.0.1:7102/")
        else {
            panic!("not a cluster target");
        };
        let addrs: Vec<String> = seeds.iter().map(|s| s.addr().to_string()).collect();
        assert_eq!(addrs, ["127.0.0.1:7101", "127.0.0.1:7102"]);
        assert!(seeds.iter().all(|s| s.redis_settings().password() == Some("secret")));
    }

    #[test]
    fn single_urls_stay_single_and_empty_clusters_are_refused() {
        assert!(matches!(Target::parse("redis://127.0.0.1:6379"), Ok(Target::Single(_))));
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://,").is_err());
    }
}
