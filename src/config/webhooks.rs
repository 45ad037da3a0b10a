//! The settings of webhooks: where lifecycle events are delivered, with which secret, which
//! events, how persistently, and how long delivered and dead ones are kept.

use std::time::Duration;

use clap::Args;

use super::{ConfigError, duration};

/// Every event kind a webhook may carry.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "user.online",
    "user.offline",
    "session.connected",
    "session.disconnected",
    "channel.occupied",
    "channel.vacated",
];

#[derive(Debug, Clone, Args)]
pub struct WebhookConfig {
    /// Endpoints (comma-separated URLs) every lifecycle event is POSTed to, each delivered at
    /// least once. Empty: no webhooks.
    #[arg(
        id = "webhook_urls",
        long = "webhook-urls",
        env = "RTGATE_WEBHOOK_URLS",
        value_delimiter = ','
    )]
    pub urls: Vec<String>,

    /// The HMAC-SHA256 key webhooks are signed with (at least 16 characters; required with
    /// `--webhook-urls`).
    #[arg(
        id = "webhook_secret",
        long = "webhook-secret",
        env = "RTGATE_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,

    /// The events delivered (comma-separated). Default: all.
    #[arg(id = "webhook_events", long = "webhook-events", env = "RTGATE_WEBHOOK_EVENTS", value_delimiter = ',', default_values_t = WEBHOOK_EVENTS.map(String::from))]
    pub events: Vec<String>,

    /// Attempts before an event becomes a dead letter.
    #[arg(
        id = "webhook_max_attempts",
        long = "webhook-max-attempts",
        env = "RTGATE_WEBHOOK_MAX_ATTEMPTS",
        default_value_t = 10
    )]
    pub max_attempts: u32,

    /// Wait before the first retry; each later one waits twice as long (at most 10 minutes).
    #[arg(id = "webhook_backoff", long = "webhook-backoff", env = "RTGATE_WEBHOOK_BACKOFF", default_value = "1s", value_parser = duration)]
    pub backoff: Duration,

    /// Longest one delivery attempt may take.
    #[arg(id = "webhook_timeout", long = "webhook-timeout", env = "RTGATE_WEBHOOK_TIMEOUT", default_value = "5s", value_parser = duration)]
    pub timeout: Duration,

    /// How long delivered events and dead letters stay queryable before retention deletes them.
    #[arg(id = "webhook_retention", long = "webhook-retention", env = "RTGATE_WEBHOOK_RETENTION", default_value = "7days", value_parser = duration)]
    pub retention: Duration,
}

impl WebhookConfig {
    pub fn enabled(&self) -> bool {
        !self.urls.is_empty()
    }

    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let refuse = |key, message: String| Err(ConfigError::Api { key, message });
        for url in &self.urls {
            if let Err(m) = super::proxy::check_url(url) {
                return refuse("webhook_urls", format!("--webhook-urls: {m}"));
            }
        }
        if self.enabled() && self.secret.as_deref().is_none_or(|s| s.len() < 16) {
            return refuse(
                "webhook_secret",
                "--webhook-urls needs --webhook-secret of at least 16 characters (generate one \
                 with `openssl rand -hex 32`)"
                    .into(),
            );
        }
        if let Some(e) = self.events.iter().find(|e| !WEBHOOK_EVENTS.contains(&e.as_str())) {
            return refuse(
                "webhook_events",
                format!("--webhook-events: {e:?} is not one of {}", WEBHOOK_EVENTS.join(", ")),
            );
        }
        if self.max_attempts == 0 || self.timeout.is_zero() {
            return refuse(
                "webhook_max_attempts",
                "--webhook-max-attempts and --webhook-timeout must be above 0".into(),
            );
        }
        Ok(())
    }
}
