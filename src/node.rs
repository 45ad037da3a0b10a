//! The node: the composition root every session and HTTP handler shares. It owns the
//! configuration, the authenticator, the router, the shared-state backends (memory or Redis,
//! chosen once here), the hub of local sessions with its fanout, and the shutdown signal and
//! task tracker that make graceful shutdown wait for every session.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{AuthConfigError, Authenticator},
    config::Config,
    dispatch::Router,
    fanout::Fanout,
    hub::Hub,
    state::{
        StateError,
        broker::{Broker, memory::MemoryBroker, redis::RedisBroker},
        presence::{PresenceStore, memory::MemoryPresence, redis::RedisPresence},
        ratelimit::{Quota, RateLimiter, memory::MemoryRateLimiter, redis::RedisRateLimiter},
    },
    throttle::Throttle,
};

/// The shared-state backends `Node::new` picks, before they are wired together.
type Picked = (
    Arc<dyn PresenceStore>,
    Arc<dyn Broker>,
    Arc<dyn RateLimiter>,
    Backends,
);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("connecting to redis at start-up: {0}")]
    Redis(#[from] StateError),
}

/// Which shared-state backend is in use, and whether it currently answers.
pub struct Backends {
    /// `None` for the in-memory (single node) backends.
    pub redis: Option<redis::aio::ConnectionManager>,
    /// In-memory per-user limiter, pruned by the cleanup job.
    pub memory_limiter: Option<Arc<MemoryRateLimiter>>,
    /// Set when a shared-state call failed; the liveness loop resynchronizes this instance's
    /// sessions once the backend answers again, then clears it.
    degraded: AtomicBool,
}

impl Backends {
    pub fn kind(&self) -> &'static str {
        if self.redis.is_some() {
            "redis"
        } else {
            "memory"
        }
    }

    pub fn mark_degraded(&self, what: &str, err: &StateError) {
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(error = %err, during = what, "shared state unreachable; sessions continue locally");
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    pub(crate) fn clear_degraded(&self) -> bool {
        self.degraded.swap(false, Ordering::AcqRel)
    }
}

pub struct Node {
    pub config: Config,
    pub instance_id: String,
    pub auth: Authenticator,
    pub router: Router,
    pub throttle: Throttle,
    pub hub: Arc<Hub>,
    pub presence: Arc<dyn PresenceStore>,
    pub fanout: Arc<Fanout>,
    pub backends: Backends,
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
        let instance_id = config.instance_id();
        let auth = Authenticator::from_config(&config.jwt)?;
        let quota = Quota {
            limit: config.message_rate_limit,
            window: config.message_rate_window,
        };
        let hub = Arc::new(Hub::default());
        let (presence, broker, limiter, backends): Picked = match &config.redis_url {
            Some(url) => {
                let client = redis::Client::open(url.as_str()).map_err(StateError::from)?;
                let conn = redis::aio::ConnectionManager::new(client)
                    .await
                    .map_err(StateError::from)?;
                let prefix = config.redis_prefix.clone();
                let broker = RedisBroker::connect(url, prefix.clone()).await?;
                (
                    Arc::new(RedisPresence::new(conn.clone(), prefix.clone())),
                    Arc::new(broker),
                    Arc::new(RedisRateLimiter::new(conn.clone(), prefix, "user", quota)),
                    Backends {
                        redis: Some(conn),
                        memory_limiter: None,
                        degraded: AtomicBool::new(false),
                    },
                )
            }
            None => {
                let limiter = Arc::new(MemoryRateLimiter::new(quota));
                (
                    Arc::new(MemoryPresence::new()),
                    Arc::new(MemoryBroker::new()),
                    limiter.clone(),
                    Backends {
                        redis: None,
                        memory_limiter: Some(limiter),
                        degraded: AtomicBool::new(false),
                    },
                )
            }
        };
        let fanout = Arc::new(Fanout::new(
            instance_id.clone(),
            hub.clone(),
            broker,
            presence.clone(),
        ));
        Ok(Node {
            throttle: Throttle::new(&config, limiter),
            instance_id,
            auth,
            router,
            hub,
            presence,
            fanout,
            backends,
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            config,
        })
    }
}
