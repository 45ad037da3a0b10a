//! The settings of the proxy calls to the application's backend: where each kind goes, how
//! long a call may take, how many may be in flight, which request headers the connect proxy
//! sees. Namespaces may name their own subscribe and publish proxies (`namespaces`).

use std::time::Duration;

use clap::Args;

use super::{ConfigError, duration};

#[derive(Debug, Clone, Args)]
pub struct ProxyConfig {
    /// Backend URL that authenticates a `connect` without a token, from the headers of the
    /// WebSocket upgrade or WebTransport CONNECT (`--proxy-headers`).
    #[arg(id = "proxy_connect_url", long = "proxy-connect-url", env = "RTGATE_PROXY_CONNECT_URL")]
    pub connect_url: Option<String>,

    /// Backend URL that extends a session the connect proxy made, before it expires.
    #[arg(id = "proxy_refresh_url", long = "proxy-refresh-url", env = "RTGATE_PROXY_REFRESH_URL")]
    pub refresh_url: Option<String>,

    /// Backend URL that allows or denies subscriptions in namespaces with `subscribe = "proxy"`
    /// (unless the namespace names its own).
    #[arg(
        id = "proxy_subscribe_url",
        long = "proxy-subscribe-url",
        env = "RTGATE_PROXY_SUBSCRIBE_URL"
    )]
    pub subscribe_url: Option<String>,

    /// Backend URL that validates or rewrites client publications in namespaces with
    /// `publish_proxy = true` (unless the namespace names its own).
    #[arg(id = "proxy_publish_url", long = "proxy-publish-url", env = "RTGATE_PROXY_PUBLISH_URL")]
    pub publish_url: Option<String>,

    /// Backend URL that answers the client's `rpc` events.
    #[arg(id = "proxy_rpc_url", long = "proxy-rpc-url", env = "RTGATE_PROXY_RPC_URL")]
    pub rpc_url: Option<String>,

    /// Longest a proxy call may take; past it the client gets `unavailable`.
    #[arg(id = "proxy_timeout", long = "proxy-timeout", env = "RTGATE_PROXY_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub timeout: Duration,

    /// Calls of one kind in flight per instance; more are refused with `unavailable` at once.
    #[arg(
        id = "proxy_max_in_flight",
        long = "proxy-max-in-flight",
        env = "RTGATE_PROXY_MAX_IN_FLIGHT",
        default_value_t = 64
    )]
    pub max_in_flight: usize,

    /// Request headers (lower case, comma-separated) of the WebSocket upgrade or WebTransport
    /// CONNECT passed to the connect proxy.
    #[arg(
        long = "proxy-headers",
        env = "RTGATE_PROXY_HEADERS",
        value_delimiter = ',',
        default_value = "cookie,authorization"
    )]
    pub headers: Vec<String>,
}

impl ProxyConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let urls = [
            ("proxy_connect_url", &self.connect_url),
            ("proxy_refresh_url", &self.refresh_url),
            ("proxy_subscribe_url", &self.subscribe_url),
            ("proxy_publish_url", &self.publish_url),
            ("proxy_rpc_url", &self.rpc_url),
        ];
        for (key, url) in urls {
            if let Some(url) = url {
                check_url(url).map_err(|message| ConfigError::Api {
                    key,
                    message: format!("--{}: {message}", key.replace('_', "-")),
                })?;
            }
        }
        if self.refresh_url.is_some() && self.connect_url.is_none() {
            return Err(ConfigError::Api {
                key: "proxy_refresh_url",
                message: "--proxy-refresh-url extends sessions the connect proxy made: it needs \
                          --proxy-connect-url"
                    .into(),
            });
        }
        if self.timeout.is_zero() || self.max_in_flight == 0 {
            return Err(ConfigError::Api {
                key: "proxy_timeout",
                message: "--proxy-timeout and --proxy-max-in-flight must be above 0".into(),
            });
        }
        Ok(())
    }
}

/// An `http://` or `https://` URL with a host.
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url.parse().map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    if !scheme_ok || uri.host().is_none() {
        return Err(format!("{url:?} must be an http:// or https:// URL with a host"));
    }
    Ok(())
}
