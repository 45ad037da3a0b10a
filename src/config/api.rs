//! The settings of the server API (`/api/v1`, for the application's backend) and of access
//! from browsers on other origins (CORS for the REST APIs and the client files, the Origin
//! allowlist of the realtime endpoints).

use std::{net::SocketAddr, time::Duration};

use clap::Args;

use super::{ConfigError, duration};

#[derive(Debug, Clone, Args)]
pub struct ApiConfig {
    /// Keys the application's backend calls the server API with (`Authorization: apikey
    /// <key>`), comma-separated; several let a key be rotated. Empty: the server API answers
    /// loopback clients only.
    #[arg(
        long = "api-keys",
        env = "RTGATE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub keys: Vec<String>,

    /// Serves the server API on this address (e.g. an internal port) instead of the HTTP port.
    #[arg(id = "api_addr", long = "api-addr", env = "RTGATE_API_ADDR")]
    pub addr: Option<SocketAddr>,

    /// How long the cluster remembers a publish's idempotency key: a publish with a key seen
    /// within it answers with the first one's result and publishes nothing.
    #[arg(id = "idempotency_window", long = "idempotency-window", env = "RTGATE_IDEMPOTENCY_WINDOW", default_value = "5m", value_parser = duration)]
    pub idempotency_window: Duration,

    /// Largest server API request body, in bytes.
    #[arg(id = "api_max_body_bytes", long = "api-max-body-bytes", env = "RTGATE_API_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,

    /// Origins (`https://app.example.com`, comma-separated) whose pages may call the REST APIs
    /// and load `/client/*` (CORS). Empty: no cross-origin access. `*` allows any origin, then
    /// without credentials.
    #[arg(
        id = "cors_origins",
        long = "cors-origins",
        env = "RTGATE_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Origins allowed to open a session (`Origin` of the WebSocket upgrade or the WebTransport
    /// CONNECT), comma-separated; others get HTTP 403. Empty: any origin, and clients that send
    /// none (native apps, servers).
    #[arg(
        id = "allowed_origins",
        long = "allowed-origins",
        env = "RTGATE_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
}

impl ApiConfig {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if let Some(short) = self.keys.iter().find(|k| k.len() < 16) {
            let shown: String = short.chars().take(3).collect();
            return Err(ConfigError::Api {
                key: "api_keys",
                message: format!(
                    "--api-keys: every key must be at least 16 characters (one starting \
                     {shown:?} is shorter); generate one with `openssl rand -hex 32`"
                ),
            });
        }
        let lists =
            [("cors_origins", &self.cors_origins), ("allowed_origins", &self.allowed_origins)];
        for (key, list) in lists {
            if let Some(origin) = list.iter().find(|o| *o != "*" && !valid_origin(o)) {
                let message = format!(
                    "--{}: {origin:?} is not an origin: scheme://host[:port], no path (e.g. \
                     https://app.example.com)",
                    key.replace('_', "-")
                );
                return Err(ConfigError::Api { key, message });
            }
        }
        if self.allowed_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::Api {
                key: "allowed_origins",
                message: "--allowed-origins: leave it empty to allow every origin; `*` is not \
                          a value"
                    .into(),
            });
        }
        Ok(())
    }

    /// Whether a session may be opened from a page of `origin` (`None`: the client sent no
    /// `Origin`).
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        self.allowed_origins.is_empty()
            || origin
                .is_some_and(|o| self.allowed_origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
    }
}

fn valid_origin(s: &str) -> bool {
    let Some((scheme, rest)) = s.split_once("://") else { return false };
    !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        && !rest.is_empty()
        && !rest.contains('/')
        && !rest.bytes().any(|b| b.is_ascii_whitespace())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(keys: &[&str], cors: &[&str], allowed: &[&str]) -> ApiConfig {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect();
        ApiConfig {
            keys: v(keys),
            addr: None,
            idempotency_window: Duration::from_secs(1),
            max_body_bytes: 1024,
            cors_origins: v(cors),
            allowed_origins: v(allowed),
        }
    }

    #[test]
    fn short_keys_and_non_origins_are_refused() {
        assert!(api(&["0123456789abcdef"], &[], &[]).check().is_ok());
        assert!(api(&["short"], &[], &[]).check().is_err());
        assert!(api(&[], &["https://a.example/path"], &[]).check().is_err());
        assert!(api(&[], &["a.example"], &[]).check().is_err());
        assert!(api(&[], &["*"], &[]).check().is_ok());
        assert!(api(&[], &[], &["*"]).check().is_err());
    }

    #[test]
    fn an_empty_allowlist_allows_everyone_else_only_listed_origins() {
        assert!(api(&[], &[], &[]).origin_allowed(None));
        let a = api(&[], &[], &["https://app.example"]);
        assert!(a.origin_allowed(Some("https://APP.example")));
        assert!(!a.origin_allowed(Some("https://evil.example")));
        assert!(!a.origin_allowed(None));
    }
}
