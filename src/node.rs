//! The node: the composition root every session and HTTP handler shares. It owns the
//! configuration, the authenticator, the router, the shared-state backends (memory or Redis,
//! chosen once here), the hub of local sessions with its fanout, and the shutdown signal and
//! task tracker that make graceful shutdown wait for every session.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{AuthConfigError, Authenticator},
    channels::Channels,
    chat::feed::Feed,
    config::{Config, RedisTlsConfig},
    dispatch::Router,
    fanout::Fanout,
    hub::Hub,
    state::{
        StateError,
        broker::{Broker, memory::MemoryBroker, redis::RedisBroker},
        channel_presence::{
            ChannelPresence, memory::MemoryChannelPresence, redis::RedisChannelPresence,
        },
        guard::{Guarded, Health},
        history::{History, memory::MemoryHistory, redis::RedisHistory, routed::Routed},
        idempotency::{Idempotency, memory::MemoryIdempotency, redis::RedisIdempotency},
        occupancy::{Occupancy, memory::MemoryOccupancy, redis::RedisOccupancy},
        presence::{PresenceStore, memory::MemoryPresence, redis::RedisPresence},
        ratelimit::{Quota, RateLimiter, memory::MemoryRateLimiter, redis::RedisRateLimiter},
        redis_conn::{RedisConn, RedisTls},
        revocation::{Known, Revocations, memory::MemoryRevocations, redis::RedisRevocations},
    },
    store::{
        Store, StoreError,
        chat::ChatStore,
        postgres::PgStore,
        sqlite::SqliteStore,
        writer::{Writer, WriterConfig},
    },
    telemetry::metrics::EventMetrics,
    throttle::Throttle,
};

/// The shared-state backends `Node::new` picks, before they are wired together.
type Picked = (
    Arc<dyn PresenceStore>,
    Arc<dyn Broker>,
    Arc<dyn RateLimiter>,
    ChannelState,
    ApiState,
    Backends,
);

/// The server API's shared state: token revocations, idempotency keys, channel occupancy.
type ApiState = (Arc<dyn Revocations>, Arc<dyn Idempotency>, Arc<dyn Occupancy>);

/// The channel backends `Node::new` picks: history and presence.
type ChannelState = (Arc<dyn History>, Arc<dyn ChannelPresence>);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("connecting to redis at start-up: {0}")]
    Redis(#[from] StateError),
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
    #[error("loading the system's root certificates for HTTPS proxy calls: {0}")]
    Proxy(std::io::Error),
    #[error("reading {} for Redis TLS: {source}", path.display())]
    RedisTls { path: PathBuf, source: std::io::Error },
}

/// The Redis TLS files, read once at start-up.
fn redis_tls(config: &RedisTlsConfig) -> Result<RedisTls, NodeError> {
    let read = |path: &PathBuf| {
        std::fs::read(path).map_err(|source| NodeError::RedisTls { path: path.clone(), source })
    };
    let client = match (&config.cert, &config.key) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(RedisTls { ca: config.ca.as_ref().map(read).transpose()?, client })
}

/// Which shared-state backend is in use, and whether it currently answers.
pub struct Backends {
    /// `None` for the in-memory (single node) backends.
    pub redis: Option<RedisConn>,
    /// In-memory per-user limiter, pruned by the cleanup job.
    pub memory_limiter: Option<Arc<MemoryRateLimiter>>,
    /// In-memory channel history and presence, pruned by the cleanup job.
    pub memory_channels: Option<(Arc<MemoryHistory>, Arc<MemoryChannelPresence>)>,
    /// In-memory revocations and idempotency keys, pruned by the cleanup job.
    pub memory_api: Option<(Arc<MemoryRevocations>, Arc<MemoryIdempotency>)>,
    /// Down when a shared-state call found Redis unreachable: guarded calls then fail at once,
    /// and the liveness loop resynchronizes this instance's sessions once Redis answers again.
    pub health: Arc<Health>,
    /// Sockets whose unregister failed, settled by that resync.
    pub unsettled: crate::cluster::Unsettled,
}

impl Backends {
    pub fn kind(&self) -> &'static str {
        if self.redis.is_some() { "redis" } else { "memory" }
    }

    /// Marks the backends degraded after `err`, when it says Redis is unreachable (a guarded
    /// call already did; this covers calls bounded from outside, like a fanout of several).
    pub fn mark_degraded(&self, what: &str, err: &StateError) {
        if err.is_outage() {
            self.health.mark_down(what, err);
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.health.is_down()
    }

    pub(crate) fn clear_degraded(&self) -> bool {
        self.health.mark_up()
    }
}

pub struct Node {
    pub config: Config,
    /// This instance's name (`--instance-id`, or random): in logs, `connected.instanceId` and
    /// `/health/ready`.
    pub instance_id: String,
    /// This run of the instance, `<instance_id>#<run>`, new at every start: the id the
    /// instance has in shared state and in the connection history. A process restarted under
    /// a pinned `--instance-id` is a new incarnation, so the cluster reaps the sockets of the
    /// one that crashed instead of taking them for its own.
    pub incarnation: String,
    pub auth: Authenticator,
    pub router: Router,
    /// Per-event counters for the router's names (unknown names share one label).
    pub events: EventMetrics,
    pub throttle: Throttle,
    pub hub: Arc<Hub>,
    pub presence: Arc<dyn PresenceStore>,
    /// Where the tokens the backend revoked are stored (the server API writes, the instance
    /// reloads `revoked` from it).
    pub revocations: Arc<dyn Revocations>,
    /// This instance's copy of the revocations, checked at connect and refresh without a
    /// round trip (`state::revocation`).
    pub revoked: Known,
    /// The server API's idempotency keys.
    pub idempotency: Arc<dyn Idempotency>,
    /// Subscribers per channel and instance.
    pub occupancy: Arc<dyn Occupancy>,
    pub fanout: Arc<Fanout>,
    pub backends: Backends,
    /// Connection and presence history (PostgreSQL or SQLite). Sessions never call it; they
    /// go through `writer`.
    pub store: Arc<dyn Store>,
    /// Conversations and messages. Chat handlers and the chat REST API call it directly
    /// (bounded by a timeout): a message is acknowledged only once it is stored.
    pub chat_store: Arc<dyn ChatStore>,
    /// Local sessions' joined conversations and ordered message delivery.
    pub chat: Arc<Feed>,
    /// Proxy calls into the application's backend.
    pub proxies: crate::proxy::Proxies,
    /// Channels: this instance's subscriptions, their ordered delivery and presence.
    pub channels: Arc<Channels>,
    pub writer: Writer,
    /// Records webhook events (through `writer`).
    pub webhooks: crate::webhooks::Emitter,
    /// The writer task, awaited (bounded) at shutdown so buffered records are flushed.
    pub writer_task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Admission control for new connections (global cap, per-IP connect rate).
    pub admission: Admission,
    /// Cancelled once when the server starts shutting down; every session and accept loop
    /// selects on it.
    pub shutdown: CancellationToken,
    /// Tracks every session task (and their teardown), so shutdown waits for all of them.
    pub sessions: TaskTracker,
}

impl Node {
    /// Builds a node serving the events of `router`, on Redis when `config.redis_url` is set
    /// and in memory otherwise.
    pub async fn new(config: Config, router: Router) -> Result<Node, NodeError> {
        let stores = open_store(&config).await?;
        Self::with_store(config, router, stores).await
    }

    /// As `new`, with the stores given (tests use this to avoid a database server).
    pub async fn with_store(
        config: Config,
        router: Router,
        stores: Stores,
    ) -> Result<Node, NodeError> {
        let Stores { history: store, chat: chat_store } = stores;
        let instance_id = config.instance_id();
        let incarnation = incarnation_of(&instance_id);
        let health = Arc::new(Health::default());
        let auth = Authenticator::from_config(&config.jwt)?;
        let quota = Quota { limit: config.message_rate_limit, window: config.message_rate_window };
        let hub = Arc::new(Hub::default());
        let (presence, broker, limiter, (history, channel_presence), api, backends): Picked =
            match &config.redis_url {
                Some(url) => {
                    // One Redis or a Redis Cluster, by the URL's scheme (`redis_conn`).
                    let tls = redis_tls(&config.redis_tls)?;
                    let conn = RedisConn::connect_with(url, &tls).await?;
                    let prefix = config.redis_prefix.clone();
                    let broker = RedisBroker::connect_with(url, prefix.clone(), &tls).await?;
                    let presence = RedisPresence::new(conn.clone(), prefix.clone())
                        .with_watch_topics(broker.watch_topic_base());
                    let limiter =
                        RedisRateLimiter::new(conn.clone(), prefix.clone(), "user", quota);
                    let history = RedisHistory::new(conn.clone(), prefix.clone());
                    let channel_presence = RedisChannelPresence::new(conn.clone(), prefix.clone());
                    let revocations = RedisRevocations::new(conn.clone(), prefix.clone());
                    let idempotency = RedisIdempotency::new(conn.clone(), prefix.clone());
                    let occupancy = RedisOccupancy::new(conn.clone(), prefix.clone());
                    (
                        // Guarded: every Redis call bounded, timed, and refused at once while
                        // Redis is known to be down.
                        Arc::new(Guarded::new(presence, health.clone())),
                        Arc::new(Guarded::new(broker, health.clone())),
                        Arc::new(Guarded::new(limiter, health.clone())),
                        (
                            Arc::new(Guarded::new(history, health.clone())),
                            Arc::new(Guarded::new(channel_presence, health.clone())),
                        ),
                        (
                            Arc::new(Guarded::new(revocations, health.clone())),
                            Arc::new(Guarded::new(idempotency, health.clone())),
                            Arc::new(Guarded::new(occupancy, health.clone())),
                        ),
                        Backends {
                            redis: Some(conn),
                            memory_limiter: None,
                            memory_channels: None,
                            memory_api: None,
                            health: health.clone(),
                            unsettled: Default::default(),
                        },
                    )
                }
                None => {
                    let limiter = Arc::new(MemoryRateLimiter::new(quota));
                    let history = Arc::new(MemoryHistory::new());
                    let channel_presence = Arc::new(MemoryChannelPresence::new());
                    let revocations = Arc::new(MemoryRevocations::new());
                    let idempotency = Arc::new(MemoryIdempotency::new());
                    (
                        Arc::new(MemoryPresence::new()),
                        Arc::new(MemoryBroker::new()),
                        limiter.clone(),
                        (history.clone(), channel_presence.clone()),
                        (
                            revocations.clone(),
                            idempotency.clone(),
                            Arc::new(MemoryOccupancy::new()),
                        ),
                        Backends {
                            redis: None,
                            memory_limiter: Some(limiter),
                            memory_channels: Some((history, channel_presence)),
                            memory_api: Some((revocations, idempotency)),
                            health: health.clone(),
                            unsettled: Default::default(),
                        },
                    )
                }
            };
        let (writer, writer_task) = Writer::spawn(
            store.clone(),
            WriterConfig {
                batch_size: config.db_batch_size.max(1),
                flush_interval: config.db_flush_interval,
                capacity: config.db_buffer,
            },
        );
        let chat = Arc::new(crate::chat::feed::feed(chat_store.clone(), config.chat_gap_timeout));
        let history = Arc::new(Routed::new(history, store.channel_history()));
        let channel_feed = Channels::feed(&config, history);
        let fanout = Arc::new(Fanout::new(
            incarnation.clone(),
            hub.clone(),
            chat.clone(),
            channel_feed.clone(),
            broker,
            presence.clone(),
            health.clone(),
        ));
        let webhooks = crate::webhooks::Emitter::new(&config.webhooks, writer.clone());
        let channels = Channels::new(
            &config,
            channel_feed,
            (channel_presence, api.2.clone()),
            fanout.clone(),
            (incarnation.clone(), webhooks.clone()),
        );
        Ok(Node {
            events: EventMetrics::new(router.names()),
            throttle: Throttle::new(&config, limiter),
            instance_id,
            incarnation,
            auth,
            router,
            hub,
            presence,
            revocations: api.0,
            revoked: Known::new(),
            idempotency: api.1,
            fanout,
            backends,
            store,
            chat_store,
            chat,
            proxies: crate::proxy::Proxies::new(&config.proxy).map_err(NodeError::Proxy)?,
            channels,
            writer,
            webhooks,
            occupancy: api.2,
            writer_task: std::sync::Mutex::new(Some(writer_task)),
            admission: Admission::new(&config),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            config,
        })
    }
}

fn incarnation_of(instance_id: &str) -> String {
    let run = uuid::Uuid::new_v4().simple().to_string();
    format!("{instance_id}#{}", &run[..8])
}

/// The two faces of the one database: history (written through the batched writer) and chat.
pub struct Stores {
    pub history: Arc<dyn Store>,
    pub chat: Arc<dyn ChatStore>,
}

impl Stores {
    pub fn of<S: Store + ChatStore>(store: Arc<S>) -> Self {
        Stores { history: store.clone(), chat: store }
    }
}

/// PostgreSQL when `DATABASE_URL` is set, the SQLite file otherwise. Migrations are tried
/// here; a database that is down at start does not stop the server (the writer migrates
/// before its first write and keeps records until then).
pub async fn open_store(config: &Config) -> Result<Stores, StoreError> {
    let stores = match &config.database_url {
        Some(url) => Stores::of(Arc::new(PgStore::connect(url).await?)),
        None => Stores::of(Arc::new(SqliteStore::open(&config.sqlite_path).await?)),
    };
    let store = &stores.history;
    match tokio::time::timeout(std::time::Duration::from_secs(5), store.migrate()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "database unavailable at start; history is buffered until it answers")
        }
        Err(_) => {
            tracing::warn!("database did not answer at start; history is buffered until it answers")
        }
    }
    Ok(stores)
}

/// Admission control: how many connections this instance holds, and how fast each IP may
/// open new ones. Checked before a session is spent on a connection.
pub struct Admission {
    open: std::sync::atomic::AtomicUsize,
    max: usize,
    per_ip: governor::DefaultKeyedRateLimiter<std::net::IpAddr>,
}

/// Holds one slot of `--max-connections` while the connection lives.
/// A connection slot; dropping it frees it. It owns its node, so a session's future can hold
/// it without borrowing from itself.
pub struct Slot(Arc<Node>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.admission.open.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Admission {
    fn new(config: &Config) -> Self {
        let limit = std::num::NonZeroU32::new(config.connect_rate_per_ip)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let period =
            (config.connect_rate_window / limit.get()).max(std::time::Duration::from_nanos(1));
        let quota = governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(limit))
            .allow_burst(limit);
        Self {
            open: Default::default(),
            max: config.max_connections,
            per_ip: governor::RateLimiter::keyed(quota),
        }
    }

    /// Whether `ip` may open another connection now (counts the attempt). Called once per
    /// connection with the client's resolved address: at TCP accept by the HTTP front door
    /// (or at the `/ws` upgrade behind a header-only trusted proxy), and at the WebTransport
    /// session request. An IPv4-mapped IPv6 address shares its IPv4 address's budget.
    pub fn ip_allowed(&self, ip: std::net::IpAddr) -> bool {
        self.per_ip.check_key(&ip.to_canonical()).is_ok()
    }

    /// Takes a connection slot of `node`, or `None` when the instance is full.
    pub fn slot(node: &Arc<Node>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        let before = node.admission.open.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(node.clone());
        (before < node.admission.max).then_some(slot)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Forgets IPs whose budget is full again (called by the cleanup job).
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
    }
}
