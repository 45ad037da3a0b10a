//! Configuration: one struct, every field with a documented default that runs on a laptop
//! with nothing else installed. Each field can be set by a flag, an environment variable or the
//! configuration file (flag > variable > file > default). `rtgate serve --help` prints these
//! doc comments; the README's table must list the same flags. `values` holds the flags' own
//! types, `namespaces` the channel namespaces, which have no flags, and `file` the `--config`
//! file where every setting may also live.

mod api;
mod file;
mod jwt;
mod namespaces;
mod proxy;
mod quic;
mod redis_tls;
mod suggest;
mod values;
mod webhooks;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser};

pub use api::ApiConfig;
pub use file::{FileError, LoadError};
pub use jwt::JwtConfig;
pub use namespaces::{NamespaceConfig, NamespaceError, Namespaces, SubscribeMode};
pub use proxy::ProxyConfig;
pub use quic::QuicConfig;
pub use redis_tls::RedisTlsConfig;
use values::trusted_proxies;
pub use values::{FailMode, ForwardedHeader, JwtAlgorithm, LogFormat, TrustedProxies};
pub use webhooks::{WEBHOOK_EVENTS, WebhookConfig};

/// The HS256 secret used when none is configured. Fine for a laptop; `serve` warns loudly
/// when it is in use, because anyone can mint tokens with it.
pub const DEV_JWT_SECRET: &str = "rtgate-dev-secret-change-me";

/// The one duration syntax of flags, variables and namespace options (`500ms`, `25s`, `30days`).
fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// A TOML file with any of these settings, each under its flag's name in snake_case
    /// (`ping_interval = "25s"`), and the channel namespaces (`[namespaces.<name>]`). A flag or
    /// an environment variable overrides the file; the file overrides the defaults.
    #[arg(long, env = "RTGATE_CONFIG")]
    pub config: Option<PathBuf>,

    /// TCP address for HTTP: WebSocket at /ws, health, cert hash (WSS/HTTPS when a TLS cert is set).
    #[arg(long, env = "RTGATE_HTTP_ADDR", default_value = "0.0.0.0:3000")]
    pub http_addr: SocketAddr,

    /// UDP address for WebTransport (path /wt). `[::]` accepts IPv6 and IPv4.
    #[arg(long, env = "RTGATE_WT_ADDR", default_value = "[::]:4433")]
    pub wt_addr: SocketAddr,

    /// PEM certificate chain. With none, a self-signed ECDSA P-256 cert valid 14 days is made.
    // Paired with `--tls-key` by `check`, not clap's `requires`: clap does not count a default
    // as present, and a value from the configuration file is a default to clap.
    #[arg(long, env = "RTGATE_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "RTGATE_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub jwt: JwtConfig,

    #[command(flatten)]
    pub api: ApiConfig,

    #[command(flatten)]
    pub proxy: ProxyConfig,

    #[command(flatten)]
    pub webhooks: WebhookConfig,

    #[command(flatten)]
    pub quic: QuicConfig,

    #[command(flatten)]
    pub redis_tls: RedisTlsConfig,

    /// Interval between server pings.
    #[arg(long, env = "RTGATE_PING_INTERVAL", default_value = "25s", value_parser = duration)]
    pub ping_interval: Duration,

    /// A session with no pong this long after a ping is closed with `ping_timeout`.
    #[arg(long, env = "RTGATE_PONG_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub pong_timeout: Duration,

    /// A connection that sends no `connect` frame within this time is closed.
    #[arg(long, env = "RTGATE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub handshake_timeout: Duration,

    /// Largest frame accepted from a client, in bytes; checked before the frame is buffered.
    #[arg(long, env = "RTGATE_MAX_FRAME_BYTES", default_value_t = 64 * 1024)]
    pub max_frame_bytes: usize,

    /// Bytes a session may have queued for sending before it is closed as a slow consumer.
    #[arg(long, env = "RTGATE_OUTBOUND_QUEUE_BYTES", default_value_t = 256 * 1024)]
    pub outbound_queue_bytes: usize,

    /// Connections this instance holds at most; more are refused with `server_busy` (back off).
    #[arg(long, env = "RTGATE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,

    /// Connections one user may have open across the cluster; more are refused with `too_many_connections`.
    #[arg(long, env = "RTGATE_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: usize,

    /// New connections one IP address may open per `--connect-rate-window` (HTTP 429 past it).
    #[arg(long, env = "RTGATE_CONNECT_RATE_PER_IP", default_value_t = 100)]
    pub connect_rate_per_ip: u32,

    /// Window of `--connect-rate-per-ip`.
    #[arg(long, env = "RTGATE_CONNECT_RATE_WINDOW", default_value = "10s", value_parser = duration)]
    pub connect_rate_window: Duration,

    /// Time a TCP connection to the HTTP port gets to deliver a complete request head: from
    /// accept (PROXY header and TLS handshake included), and again between requests on a
    /// kept-alive connection. Past it the connection is closed without a response.
    #[arg(long, env = "RTGATE_HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub http_header_timeout: Duration,

    /// Proxies and load balancers (addresses or CIDRs, comma-separated) believed when they name
    /// the client: in a PROXY protocol header or a forwarded header. Empty: trust nobody.
    #[arg(long, env = "RTGATE_TRUSTED_PROXIES", default_value = "", hide_default_value = true, value_parser = trusted_proxies)]
    pub trusted_proxies: TrustedProxies,

    /// Require a PROXY protocol header (v1 or v2) first on every TCP connection from a trusted
    /// proxy; a trusted peer that sends none, or a malformed one, is closed. Never read from
    /// anyone else.
    #[arg(long, env = "RTGATE_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,

    /// The header a trusted proxy names the client in: `x-forwarded-for`, `forwarded`
    /// (RFC 7239 `for=`) or `none`. Only the one chosen is read, so a client cannot slip the
    /// other past a proxy that manages just one.
    #[arg(long, env = "RTGATE_FORWARDED_HEADER", value_enum, default_value_t = ForwardedHeader::XForwardedFor)]
    pub forwarded_header: ForwardedHeader,

    /// Events a session may have waiting for their handler; more are refused with `overloaded`.
    #[arg(long, env = "RTGATE_MAX_PENDING_EVENTS", default_value_t = 64)]
    pub max_pending_events: usize,

    /// On SIGTERM/SIGINT, how long sessions get to receive `server_shutdown` and close.
    #[arg(long, env = "RTGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Upper bound of the random `retryAfterMs` sent with `server_shutdown`, spreading reconnects.
    #[arg(long, env = "RTGATE_SHUTDOWN_RECONNECT_SPREAD", default_value = "5s", value_parser = duration)]
    pub shutdown_reconnect_spread: Duration,

    /// Redis for shared state (registry, presence, rate limits, fanout). Unset: in memory, one node.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis key and channel this cluster uses.
    #[arg(long, env = "RTGATE_REDIS_PREFIX", default_value = "rtgate:")]
    pub redis_prefix: String,

    /// Events one socket may send per `--event-rate-window`.
    #[arg(long, env = "RTGATE_EVENT_RATE_LIMIT", default_value_t = 100)]
    pub event_rate_limit: u32,

    /// Window of `--event-rate-limit`.
    #[arg(long, env = "RTGATE_EVENT_RATE_WINDOW", default_value = "10s", value_parser = duration)]
    pub event_rate_window: Duration,

    /// Messages one user may send per `--message-rate-window`, across all their sockets and instances.
    #[arg(long, env = "RTGATE_MESSAGE_RATE_LIMIT", default_value_t = 30)]
    pub message_rate_limit: u32,

    /// Window of `--message-rate-limit`.
    #[arg(long, env = "RTGATE_MESSAGE_RATE_WINDOW", default_value = "60s", value_parser = duration)]
    pub message_rate_window: Duration,

    /// Events that count against the per-user message budget (comma-separated).
    #[arg(
        long,
        env = "RTGATE_MESSAGE_EVENTS",
        default_value = "message:send",
        value_delimiter = ','
    )]
    pub message_events: Vec<String>,

    /// A socket with more than this many × `--event-rate-limit` events refused within
    /// `--rate-limit-flood-window` is disconnected with `rate_limit_flood`.
    #[arg(long, env = "RTGATE_RATE_LIMIT_FLOOD_FACTOR", default_value_t = 10)]
    pub rate_limit_flood_factor: u32,

    /// Window over which flood refusals are counted.
    #[arg(long, env = "RTGATE_RATE_LIMIT_FLOOD_WINDOW", default_value = "30s", value_parser = duration)]
    pub rate_limit_flood_window: Duration,

    /// What the per-user limit does while Redis is unreachable: `open` admits, `closed` refuses.
    #[arg(long, env = "RTGATE_RATE_LIMIT_ON_REDIS_ERROR", value_enum, default_value_t = FailMode::Open)]
    pub rate_limit_on_redis_error: FailMode,

    /// How long this instance counts as alive without refreshing its liveness deadline.
    #[arg(long, env = "RTGATE_LIVENESS_TTL", default_value = "15s", value_parser = duration)]
    pub liveness_ttl: Duration,

    /// Interval of the cleanup job (reaping crashed instances, pruning limiter state,
    /// reloading revocations).
    #[arg(long, env = "RTGATE_CLEANUP_INTERVAL", default_value = "60s", value_parser = duration)]
    pub cleanup_interval: Duration,

    /// Users one socket may watch with `presence:subscribe`.
    #[arg(long, env = "RTGATE_MAX_PRESENCE_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_presence_subscriptions: usize,

    /// Conversations one connection may join (`conversation:join`; the flag keeps its older name).
    #[arg(long, env = "RTGATE_MAX_ROOMS_PER_SOCKET", default_value_t = 100)]
    pub max_rooms_per_socket: usize,

    /// Most missed messages `conversation:join` sends on its own (the newest); a client that
    /// missed more reads the rest over REST.
    #[arg(long, env = "RTGATE_CHAT_RECOVERY_LIMIT", default_value_t = 100)]
    pub chat_recovery_limit: u32,

    /// How long an instance waits for a missing message seq to arrive before reading it from
    /// the database.
    #[arg(long, env = "RTGATE_CHAT_GAP_TIMEOUT", default_value = "250ms", value_parser = duration)]
    pub chat_gap_timeout: Duration,

    /// Channel subscriptions one connection may hold; more are refused with `limit_exceeded`.
    #[arg(long, env = "RTGATE_MAX_SUBSCRIPTIONS", default_value_t = 128)]
    pub max_subscriptions: usize,

    /// Most clients `channel:presence` lists.
    #[arg(long, env = "RTGATE_MAX_PRESENCE_LIST", default_value_t = 1000)]
    pub max_presence_list: usize,

    /// The largest `history_size` a namespace may set.
    #[arg(long, env = "RTGATE_MAX_HISTORY_SIZE", default_value_t = 1000)]
    pub max_history_size: usize,

    /// How long a channel's offset and epoch are kept after its last publication. Longer than
    /// any namespace's `history_ttl`, so offsets keep increasing across quiet periods instead
    /// of starting over with a new epoch whenever the history expires.
    #[arg(long, env = "RTGATE_HISTORY_META_TTL", default_value = "30days", value_parser = duration)]
    pub history_meta_ttl: Duration,

    /// The channel namespaces. No flag: they come from the configuration file; without one,
    /// the built-ins (`Namespaces::builtin`).
    #[arg(skip)]
    pub namespaces: Namespaces,

    /// Enables `sys:user-publish` and `sys:channel-publish` (open to any authenticated client, for tests and benchmarks only).
    #[arg(long, env = "RTGATE_DEV_EVENTS")]
    pub dev_events: bool,

    /// Serves a raw WebSocket echo at /echo for conformance testing only.
    #[arg(long, env = "RTGATE_WS_ECHO")]
    pub ws_echo: bool,

    /// PostgreSQL for connection and presence history (`postgres://…`). Unset: the SQLite file below.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// The embedded SQLite database used when `DATABASE_URL` is unset (created if missing).
    #[arg(long, env = "RTGATE_SQLITE_PATH", default_value = "rtgate.sqlite")]
    pub sqlite_path: PathBuf,

    /// Start with `REDIS_URL` but no `DATABASE_URL`. Instances then share presence and
    /// fanout but each keeps chat and history in its own SQLite file, so a user sees other
    /// conversations depending on the instance; refused unless set.
    #[arg(long, env = "RTGATE_ALLOW_LOCAL_DATABASE")]
    pub allow_local_database: bool,

    /// Records the database writer puts in one batch. Large enough that under load a batch is
    /// cut by `db_flush_interval`, not by its size: a connection opened and closed within one
    /// batch is written once, already closed, where one split over two batches costs an insert
    /// and an update (500 cut churn batches every ~30 ms and cost ~7 %; BENCHMARKS.md).
    #[arg(long, env = "RTGATE_DB_BATCH_SIZE", default_value_t = 5000)]
    pub db_batch_size: usize,

    /// Longest a record waits for its batch to fill.
    #[arg(long, env = "RTGATE_DB_FLUSH_INTERVAL", default_value = "200ms", value_parser = duration)]
    pub db_flush_interval: Duration,

    /// Records buffered while the database is unreachable; past it the oldest are dropped and counted.
    #[arg(long, env = "RTGATE_DB_BUFFER", default_value_t = 100_000)]
    pub db_buffer: usize,

    /// Connection rows older than this (by end time) are deleted by the cleanup job.
    #[arg(long, env = "RTGATE_CONNECTION_RETENTION", default_value = "7days", value_parser = duration)]
    pub connection_retention: Duration,

    /// Presence rows older than this are deleted by the cleanup job.
    #[arg(long, env = "RTGATE_PRESENCE_RETENTION", default_value = "30days", value_parser = duration)]
    pub presence_retention: Duration,

    /// Rows one retention delete statement removes at most (the job repeats until done).
    #[arg(long, env = "RTGATE_RETENTION_BATCH", default_value_t = 1000)]
    pub retention_batch: u32,

    /// Name of this instance in logs, `connected.instanceId` and `/health/ready` (default:
    /// random `rtg-xxxxxxxx`); 1–64 characters of `[A-Za-z0-9._:-]`. Each start is a new
    /// incarnation `<id>#<run>` in shared state, so a pinned id may be reused after a crash.
    #[arg(long, env = "RTGATE_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Log format.
    #[arg(long, env = "RTGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax (e.g. `info,rtgate=debug`).
    #[arg(long, env = "RTGATE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    config: Config,
}

/// A configuration that cannot start a server.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error(
        "REDIS_URL is set but DATABASE_URL is not: each instance would keep chat and history in \
         its own SQLite file ({path}), so users would see different conversations depending on \
         the instance. Set DATABASE_URL to one PostgreSQL for every instance, or pass \
         --allow-local-database (RTGATE_ALLOW_LOCAL_DATABASE=true) if that is what you want"
    )]
    SplitHistory { path: String },
    #[error("--instance-id must be 1 to 64 characters of [A-Za-z0-9._:-], not {0:?}")]
    InstanceId(String),
    #[error(
        "--tls-cert and --tls-key go together: set both, or neither for a self-signed certificate"
    )]
    TlsPair,
    #[error("{0}")]
    RedisTls(String),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// A server API or origin setting; `key` names it as the configuration file does.
    #[error("{message}")]
    Api { key: &'static str, message: String },
}

impl Config {
    /// Refuses configurations that would start but misbehave (checked by `Server::bind`).
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.split_history() && !self.allow_local_database {
            return Err(ConfigError::SplitHistory { path: self.sqlite_path.display().to_string() });
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::TlsPair);
        }
        self.redis_tls.check(self.redis_url.as_deref())?;
        if let Some(id) = &self.instance_id {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
            if !ok {
                return Err(ConfigError::InstanceId(id.clone()));
            }
        }
        self.namespaces.check_limits(self.max_history_size, self.history_meta_ttl)?;
        self.api.check()?;
        self.proxy.check()?;
        self.webhooks.check()?;
        self.namespaces
            .check_proxies(self.proxy.subscribe_url.is_some(), self.proxy.publish_url.is_some())?;
        Ok(())
    }

    /// Whether instances share state through Redis while each keeps its own SQLite history.
    pub fn split_history(&self) -> bool {
        self.redis_url.is_some() && self.database_url.is_none()
    }

    /// The defaults plus whatever environment variables are set, as `serve` with no flags,
    /// but never a configuration file, even with `RTGATE_CONFIG` set: tests start from the same
    /// baseline wherever they run. `Config::load` is what reads the file.
    pub fn from_env() -> Result<Self, clap::Error> {
        DefaultsOnly::try_parse_from(["rtgate"]).map(|d| Config { config: None, ..d.config })
    }

    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("rtg-{}", &id[..8])
        })
    }
}

#[cfg(test)]
mod tests;
