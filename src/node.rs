//! The node: the composition root every session and HTTP handler shares. It owns the
//! configuration, the authenticator, the router, the hub of local sessions, and the shutdown
//! signal and task tracker that make graceful shutdown wait for every session.

use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{AuthConfigError, Authenticator},
    config::Config,
    dispatch::Router,
    hub::Hub,
    throttle::Throttle,
};

pub struct Node {
    pub config: Config,
    pub instance_id: String,
    pub auth: Authenticator,
    pub router: Router,
    pub throttle: Throttle,
    pub hub: Hub,
    /// Cancelled once when the server starts shutting down; every session and accept loop
    /// selects on it.
    pub shutdown: CancellationToken,
    /// Tracks every session task, so shutdown can wait for all of them to say goodbye.
    pub sessions: TaskTracker,
}

impl Node {
    /// Builds a node serving the events of `router`.
    pub fn new(config: Config, router: Router) -> Result<Node, AuthConfigError> {
        Ok(Node {
            instance_id: config.instance_id(),
            auth: Authenticator::from_config(&config.jwt)?,
            router,
            throttle: Throttle,
            hub: Hub::default(),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            config,
        })
    }
}
