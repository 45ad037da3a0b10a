//! The WebTransport endpoint's QUIC settings that an operator may need to change: the key of
//! stateless resets and the keep-alive interval.

use std::time::Duration;

use clap::Args;

use super::duration;

#[derive(Debug, Clone, Args)]
pub struct QuicConfig {
    /// Secret from which QUIC stateless resets are keyed. Give every instance behind one UDP
    /// address the same one: a restarted instance then resets the connections its predecessor
    /// held at once, instead of clients waiting out a silent path. Default: derived from the
    /// HS256 JWT secret; random per process (resets do not survive a restart) with RS256/ES256.
    #[arg(long = "wt-reset-key", env = "RTGATE_WT_RESET_KEY", hide_env_values = true)]
    pub reset_key: Option<String>,

    /// Interval of QUIC keep-alive packets on idle WebTransport connections, so NATs and
    /// firewalls keep the UDP path open (many forget a UDP mapping after 30 s). `0s`: none.
    #[arg(long = "wt-keep-alive", env = "RTGATE_WT_KEEP_ALIVE", default_value = "15s", value_parser = duration)]
    pub keep_alive: Duration,
}
