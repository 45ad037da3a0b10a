//! Configuration: one struct, every field with a documented default that runs on a laptop
//! with nothing else installed. Each field can be set by a flag or an environment variable
//! (flag wins); the README's table is generated from the same doc comments (`rtgate serve
//! --help`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Args, Parser, ValueEnum};

/// The HS256 secret used when none is configured. Fine for a laptop; `serve` warns loudly
/// when it is in use, because anyone can mint tokens with it.
pub const DEV_JWT_SECRET: &str = "rtgate-dev-secret-change-me";

fn duration(s: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(s)
}

#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TCP address for HTTP: WebSocket at /ws, health, cert hash (WSS/HTTPS when a TLS cert is set).
    #[arg(long, env = "RTGATE_HTTP_ADDR", default_value = "0.0.0.0:3000")]
    pub http_addr: SocketAddr,

    /// UDP address for WebTransport (path /wt). `[::]` accepts IPv6 and IPv4.
    #[arg(long, env = "RTGATE_WT_ADDR", default_value = "[::]:4433")]
    pub wt_addr: SocketAddr,

    /// PEM certificate chain. With none, a self-signed ECDSA P-256 cert valid 14 days is made.
    #[arg(long, env = "RTGATE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls-cert`.
    #[arg(long, env = "RTGATE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub jwt: JwtConfig,

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

    /// Events a session may have waiting for their handler; more are refused with `overloaded`.
    #[arg(long, env = "RTGATE_MAX_PENDING_EVENTS", default_value_t = 64)]
    pub max_pending_events: usize,

    /// On SIGTERM/SIGINT, how long sessions get to receive `server_shutdown` and close.
    #[arg(long, env = "RTGATE_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// Upper bound of the random `retryAfterMs` sent with `server_shutdown`, spreading reconnects.
    #[arg(long, env = "RTGATE_SHUTDOWN_RECONNECT_SPREAD", default_value = "5s", value_parser = duration)]
    pub shutdown_reconnect_spread: Duration,

    /// Name of this instance in logs and shared state (default: random `rtg-xxxxxxxx`).
    #[arg(long, env = "RTGATE_INSTANCE_ID")]
    pub instance_id: Option<String>,

    /// Log format.
    #[arg(long, env = "RTGATE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,

    /// Log filter in `RUST_LOG` syntax (e.g. `info,rtgate=debug`).
    #[arg(long, env = "RTGATE_LOG", default_value = "info")]
    pub log: String,
}

#[derive(Debug, Clone, Args)]
pub struct JwtConfig {
    /// HS256 secret. Ignored for RS256/ES256.
    #[arg(long = "jwt-secret", env = "RTGATE_JWT_SECRET", default_value = DEV_JWT_SECRET, hide_default_value = true, hide_env_values = true)]
    pub secret: String,

    /// The only algorithm accepted; a token whose header names another one is refused.
    #[arg(long = "jwt-algorithm", env = "RTGATE_JWT_ALGORITHM", value_enum, default_value_t = JwtAlgorithm::Hs256)]
    pub algorithm: JwtAlgorithm,

    /// PEM public key for RS256/ES256.
    #[arg(long = "jwt-public-key", env = "RTGATE_JWT_PUBLIC_KEY")]
    pub public_key: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long = "jwt-issuer", env = "RTGATE_JWT_ISSUER")]
    pub issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long = "jwt-audience", env = "RTGATE_JWT_AUDIENCE")]
    pub audience: Option<String>,

    /// Clock skew tolerated on `exp` and `nbf`.
    #[arg(long = "jwt-leeway", env = "RTGATE_JWT_LEEWAY", default_value = "5s", value_parser = duration)]
    pub leeway: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JwtAlgorithm {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Parser)]
struct DefaultsOnly {
    #[command(flatten)]
    config: Config,
}

impl Config {
    /// The defaults (plus whatever `RTGATE_*` variables are set), as `serve` with no flags.
    pub fn from_env() -> Result<Self, clap::Error> {
        DefaultsOnly::try_parse_from(["rtgate"]).map(|d| d.config)
    }

    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let id = uuid::Uuid::new_v4().simple().to_string();
            format!("rtg-{}", &id[..8])
        })
    }
}
