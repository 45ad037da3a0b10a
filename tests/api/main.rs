//! Integration tests: the real server on ephemeral ports, real WebSocket (tokio-tungstenite)
//! and WebTransport (wtransport) clients. One test binary keeps linking fast. Scenarios that
//! concern the session run over both transports through `#[case]` parametrization.
//!
//! Set `TEST_LOG=1` to see the server's logs.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod api_util;
mod assets;
mod auth;
mod backend;
mod backend_proxy;
mod channels;
mod channels_recovery;
mod chat;
mod cli_client;
mod cluster;
mod config_file;
mod db_util;
mod docs;
mod drain;
mod front;
mod heartbeat;
mod helpers;
mod history;
mod hostile;
mod http;
// The impairment relay is the load generator's; one source for tests and benchmarks.
#[path = "../../bench/src/impair.rs"]
mod impair;
mod lifecycle;
mod limits;
#[path = "../state/local_redis.rs"]
mod local_redis;
mod logs;
mod metrics;
mod origins;
mod presence_race;
mod proxies;
mod quic_paths;
mod raw_http;
mod redis_tls;
mod redis_util;
mod relay;
mod resilience;
mod server_api;
mod server_api_sessions;
mod session;
mod shutdown;
mod tls;
mod volatile;
mod webhooks;
mod wt_drafts;
