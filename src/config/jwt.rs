//! The JWT settings: the key and algorithm connection and subscription tokens are verified
//! with, the claims required, the clock skew allowed and the refresh notice.

use std::{path::PathBuf, time::Duration};

use clap::Args;

use super::{DEV_JWT_SECRET, JwtAlgorithm, duration};

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

    /// How long before a token's `exp` a session is sent `sys:token-expiring`, so the client
    /// can answer `sys:refresh` with a new token. `0s`: never.
    #[arg(long = "token-refresh-notice", env = "RTGATE_TOKEN_REFRESH_NOTICE", default_value = "30s", value_parser = duration)]
    pub refresh_notice: Duration,
}
