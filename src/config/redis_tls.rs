//! TLS material for a Redis or Redis Cluster reached over TLS (`rediss://`,
//! `rediss+cluster://`): which certificate authority to trust, and the client certificate for
//! servers that ask for one (Redis' `tls-auth-clients yes`, its default).

use std::path::PathBuf;

use clap::Args;

use super::ConfigError;
use crate::state::redis_conn::uses_tls;

#[derive(Debug, Clone, Default, Args)]
pub struct RedisTlsConfig {
    /// PEM file of the certificate authorities that sign the Redis servers' certificates, for a
    /// `rediss://` or `rediss+cluster://` REDIS_URL. Unset: the system's root certificates.
    #[arg(long = "redis-tls-ca", env = "RTGATE_REDIS_TLS_CA")]
    pub ca: Option<PathBuf>,

    /// PEM client certificate presented to Redis (with `--redis-tls-key`), for servers that
    /// authenticate clients by certificate.
    #[arg(long = "redis-tls-cert", env = "RTGATE_REDIS_TLS_CERT")]
    pub cert: Option<PathBuf>,

    /// PEM private key of `--redis-tls-cert`.
    #[arg(long = "redis-tls-key", env = "RTGATE_REDIS_TLS_KEY")]
    pub key: Option<PathBuf>,
}

impl RedisTlsConfig {
    fn is_set(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// Refuses a client certificate without its key (or the reverse), and TLS settings for a
    /// Redis that is not reached over TLS (they would be silently unused).
    pub(super) fn check(&self, redis_url: Option<&str>) -> Result<(), ConfigError> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(ConfigError::RedisTls(
                "--redis-tls-cert and --redis-tls-key go together: set both, or neither".into(),
            ));
        }
        if self.is_set() && !redis_url.is_some_and(uses_tls) {
            return Err(ConfigError::RedisTls(
                "--redis-tls-ca, --redis-tls-cert and --redis-tls-key apply to a Redis reached over \
                 TLS, but REDIS_URL is not rediss:// or rediss+cluster://"
                    .into(),
            ));
        }
        Ok(())
    }
}
