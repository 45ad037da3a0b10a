//! `RedisConn`: the connection every Redis backend holds, to a single Redis or to a Redis
//! Cluster, chosen by the `REDIS_URL` scheme. It owns the URL syntax of both deployments.
//!
//! - `redis://…` (and `unix://…`): one Redis, through a connection manager that reconnects.
//! - `redis+cluster://[user:password@]host:port[,host:port…]`: a Redis Cluster. The addresses
//!   are seed nodes; the client learns the slot map from them and routes each command to the
//!   master owning its key's slot, following `MOVED`/`ASK` redirections and failovers.
//! - `rediss://…` and `rediss+cluster://…`: the same over TLS (rustls), verified against the
//!   system's roots or the CA of [`RedisTls`], which also carries a client certificate.
//!
//! The backends are written so that every script and every pipeline touches one hash slot
//! (keys share a `{tag}`), which is what lets the same code run on both.
//!
//! The cluster client learns a new slot map only from a redirection or a connection error. A
//! master that stops answering without closing its connections (a hung host, a frozen process)
//! gives neither: after its replica is promoted, calls would still go to it and time out until
//! it woke. So a cluster call that is slow or fails on the connection marks the slot map
//! suspect, and [`Cluster`] replaces its connection with a new one built from the seed nodes
//! (in the background, at most once per [`REFRESH_EVERY`]): the new one reads the slot map the
//! cluster agrees on now.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, ClientTlsConfig, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Pipeline,
    RedisFuture, TlsCertificates, Value,
};

use super::StateError;

/// The longest wait between two reconnect attempts of a single-Redis connection. The default
/// backoff doubles up to 3.2 s, so an instance could stay cut off seconds after Redis
/// answered again; capped at the liveness loop's probe period while down (1 s,
/// `cluster::liveness_loop`), it is back within about a second.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(1);

/// The connection manager settings every single-Redis connection starts from.
pub(crate) fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new().set_max_delay(RECONNECT_MAX_DELAY)
}

/// The scheme that names a Redis Cluster by its seed nodes.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The scheme of a Redis Cluster reached over TLS.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

/// Whether `url` names a Redis or a Redis Cluster reached over TLS.
pub fn uses_tls(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with(TLS_CLUSTER_SCHEME)
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

/// TLS material for `rediss://` and `rediss+cluster://` targets, as PEM bytes. Empty: the
/// system's root certificates and no client certificate.
#[derive(Clone, Default)]
pub struct RedisTls {
    /// Certificate authorities that sign the servers' certificates.
    pub ca: Option<Vec<u8>>,
    /// Client certificate and its private key.
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

/// Says what is set, never the bytes: the client key is a secret.
impl fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.is_some())
            .field("client", &self.client.is_some())
            .finish()
    }
}

impl RedisTls {
    fn certificates(&self) -> Option<TlsCertificates> {
        if self.ca.is_none() && self.client.is_none() {
            return None;
        }
        Some(TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca.clone(),
        })
    }

    /// A client for one Redis: with this material when the address is a TLS one.
    pub(crate) fn client(&self, info: ConnectionInfo) -> Result<Client, StateError> {
        match self.certificates() {
            Some(certs) if is_tls(&info) => Ok(Client::build_with_tls(info, certs)?),
            _ => Ok(Client::open(info)?),
        }
    }

    /// A cluster client builder for `seeds`, with this material when they are TLS addresses.
    pub(crate) fn cluster(&self, seeds: Vec<ConnectionInfo>) -> ClusterClientBuilder {
        let tls = seeds.iter().any(is_tls);
        let builder = ClusterClient::builder(seeds);
        match self.certificates() {
            Some(certs) if tls => builder.certs(certs),
            _ => builder,
        }
    }
}

/// What a `REDIS_URL` names.
#[derive(Debug, Clone)]
pub enum Target {
    Single(Box<ConnectionInfo>),
    /// Seed nodes of a cluster, each as an ordinary `redis://` (or `rediss://`) address.
    Cluster(Vec<ConnectionInfo>),
}

impl Target {
    /// Parses a `REDIS_URL`. A cluster URL must name at least one seed node.
    pub fn parse(url: &str) -> Result<Self, StateError> {
        let (rest, scheme) =
            match (url.strip_prefix(CLUSTER_SCHEME), url.strip_prefix(TLS_CLUSTER_SCHEME)) {
                (Some(rest), _) => (rest, "redis"),
                (_, Some(rest)) => (rest, "rediss"),
                _ => return Ok(Target::Single(Box::new(url.into_connection_info()?))),
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
            .map(|h| format!("{scheme}://{auth}{}", h.trim()).into_connection_info())
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
    Cluster(Cluster),
}

/// A call slower than this makes the slot map suspect: far above what any call of ours takes on
/// a healthy cluster, and below the state timeout (`STATE_TIMEOUT`, 2 s) that gives calls up.
pub const SLOW_CALL: Duration = Duration::from_secs(1);

/// The shortest time between two replacements of a cluster connection, so a cluster that is
/// slow everywhere is not also flooded with new connections.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

/// How long building a replacement connection may take before the attempt is dropped.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(5);

/// Armed for the length of one call: dropped (the call returned, or its caller gave up on it)
/// after `SLOW_CALL`, it makes the slot map suspect.
struct SlowCall<'a> {
    cluster: &'a Cluster,
    started: Instant,
}

impl Drop for SlowCall<'_> {
    fn drop(&mut self) {
        if self.started.elapsed() >= SLOW_CALL {
            self.cluster.suspect("slow call");
        }
    }
}

/// What a [`Cluster`] calls after it replaced its connection.
pub type OnReplace = Box<dyn Fn() + Send + Sync>;

/// A Redis Cluster connection that replaces itself when its slot map may be stale (see the
/// module docs). Clones share it, so every backend holding one follows the replacement.
#[derive(Clone)]
pub struct Cluster(Arc<ClusterShared>);

struct ClusterShared {
    client: ClusterClient,
    conn: RwLock<ClusterConnection>,
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    /// Called after every replacement (the broker's subscriber uses it to subscribe its
    /// channels again on the new connection).
    on_replace: Option<OnReplace>,
}

impl Cluster {
    /// Connects through `client`; `on_replace` is called after every replacement.
    pub async fn connect(
        client: ClusterClient,
        on_replace: Option<OnReplace>,
    ) -> Result<Self, StateError> {
        let conn = client.get_async_connection().await?;
        Ok(Cluster(Arc::new(ClusterShared {
            client,
            conn: RwLock::new(conn),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            on_replace,
        })))
    }

    /// The connection in use now.
    pub fn current(&self) -> ClusterConnection {
        self.0.conn.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Runs a call on the current connection, marking the slot map suspect when the call
    /// returns or is given up (dropped by its caller's timeout) after `SLOW_CALL`, or fails on
    /// the connection. The call itself is neither cut short nor retried. No timer per call:
    /// every caller bounds its calls (the state timeout), so a call to a silent node is always
    /// dropped, and the drop is when it is seen.
    pub async fn watch<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> redis::RedisResult<T> {
        let _watch = SlowCall { cluster: self, started: Instant::now() };
        let result = call.await;
        if let Err(e) = &result
            && (e.is_io_error() || e.is_timeout() || e.is_connection_dropped())
        {
            self.suspect("connection error");
        }
        result
    }

    /// Replaces the connection in the background unless a replacement is under way or one
    /// was made less than `REFRESH_EVERY` ago.
    pub fn suspect(&self, why: &'static str) {
        if self.0.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let recent = self
            .0
            .last_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < REFRESH_EVERY);
        if recent {
            self.0.refreshing.store(false, Ordering::Release);
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(REFRESH_TIMEOUT, this.0.client.get_async_connection()).await
            {
                Ok(Ok(conn)) => {
                    tracing::info!(
                        why,
                        "redis cluster: replaced the connection to re-read the slot map"
                    );
                    *this.0.conn.write().unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
                    if let Some(on_replace) = &this.0.on_replace {
                        on_replace();
                    }
                }
                // Debug only: in an outage of the whole cluster this repeats every
                // `REFRESH_EVERY`, and the backends' health already reports the outage.
                Ok(Err(e)) => {
                    tracing::debug!(why, error = %e, "redis cluster: reconnecting failed")
                }
                Err(_) => tracing::debug!(why, "redis cluster: reconnecting timed out"),
            }
            *this.0.last_refresh.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                Some(Instant::now());
            this.0.refreshing.store(false, Ordering::Release);
        });
    }
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
        Self::connect_with(url, &RedisTls::default()).await
    }

    /// As `connect`, with the TLS material a `rediss://` or `rediss+cluster://` target needs.
    pub async fn connect_with(url: &str, tls: &RedisTls) -> Result<Self, StateError> {
        match Target::parse(url)? {
            Target::Single(info) => {
                let client = tls.client(*info)?;
                // One plain attempt first: what no retry fixes (a certificate refused, wrong
                // credentials) fails start-up at once, where the manager retries for ~10 s.
                drop(client.get_multiplexed_async_connection().await?);
                Ok(RedisConn::Single(
                    ConnectionManager::new_with_config(client, manager_config()).await?,
                ))
            }
            Target::Cluster(seeds) => {
                let client = tls.cluster(seeds).build()?;
                Ok(RedisConn::Cluster(Cluster::connect(client, None).await?))
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
            RedisConn::Cluster(c) => {
                let cluster = c.clone();
                Box::pin(async move {
                    let mut conn = cluster.current();
                    cluster.watch(conn.req_packed_command(cmd)).await
                })
            }
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
            RedisConn::Cluster(c) => {
                let cluster = c.clone();
                Box::pin(async move {
                    let mut conn = cluster.current();
                    cluster.watch(conn.req_packed_commands(pipeline, offset, count)).await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Cluster(c) => c.current().get_db(),
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
    fn tls_cluster_urls_name_tls_seed_nodes() {
        let Ok(Target::Cluster(seeds)) =
            Target::parse("rediss+cluster://10.0.0.1:6380,10.0.0.2:6380")
        else {
            panic!("not a cluster target");
        };
        assert!(seeds.iter().all(|s| matches!(s.addr(), ConnectionAddr::TcpTls { .. })));
        let Ok(Target::Single(info)) = Target::parse("rediss://10.0.0.1:6380") else {
            panic!("not a single target");
        };
        assert!(matches!(info.addr(), ConnectionAddr::TcpTls { .. }));
        assert!(Target::parse("rediss+cluster://").is_err());
    }

    #[test]
    fn single_urls_stay_single_and_empty_clusters_are_refused() {
        assert!(matches!(Target::parse("redis://127.0.0.1:6379"), Ok(Target::Single(_))));
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis+cluster://,").is_err());
    }
}
