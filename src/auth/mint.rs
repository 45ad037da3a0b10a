//! Minting tokens with the configured HS256 secret: the `token` command, the dev endpoints and
//! the tests. Verification is the parent module's.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::{Claims, SubscriptionClaims, now};
use crate::config::{JwtAlgorithm, JwtConfig};

/// Mints an HS256 token with the configured secret (and the configured `iss`/`aud`), for
/// development and tests. Servers pinned to RS256/ES256 need tokens from the holder of the
/// private key; this refuses to mint for them.
pub fn mint_dev_token(
    cfg: &JwtConfig,
    sub: &str,
    ttl: Duration,
    device_id: Option<String>,
    roles: Vec<String>,
) -> Result<String, jsonwebtoken::errors::Error> {
    if cfg.algorithm != JwtAlgorithm::Hs256 {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into());
    }
    mint_dev_token_with_channels(cfg, sub, ttl, device_id, roles, Vec::new())
}

/// `mint_dev_token` with a `channels` claim.
pub fn mint_dev_token_with_channels(
    cfg: &JwtConfig,
    sub: &str,
    ttl: Duration,
    device_id: Option<String>,
    roles: Vec<String>,
    channels: Vec<String>,
) -> Result<String, jsonwebtoken::errors::Error> {
    if cfg.algorithm != JwtAlgorithm::Hs256 {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into());
    }
    let claims = Claims {
        sub: sub.to_owned(),
        exp: (now() + ttl).as_secs(),
        iss: cfg.issuer.clone().map(serde_json::Value::String),
        aud: cfg.audience.clone().map(serde_json::Value::String),
        device_id,
        roles,
        channels,
        iat: Some(now().as_secs()),
        jti: Some(uuid::Uuid::new_v4().simple().to_string()),
    };
    let key = EncodingKey::from_secret(cfg.secret.as_bytes())?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
}

/// Mints an HS256 subscription token for `sub` on `channel`, for development and tests.
pub fn mint_subscription_token(
    cfg: &JwtConfig,
    sub: &str,
    channel: &str,
    ttl: Duration,
    info: Option<serde_json::Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    if cfg.algorithm != JwtAlgorithm::Hs256 {
        return Err(jsonwebtoken::errors::ErrorKind::InvalidAlgorithm.into());
    }
    let claims = SubscriptionClaims {
        sub: sub.to_owned(),
        exp: (now() + ttl).as_secs(),
        channel: channel.to_owned(),
        iss: cfg.issuer.clone().map(serde_json::Value::String),
        aud: cfg.audience.clone().map(serde_json::Value::String),
        info,
    };
    let key = EncodingKey::from_secret(cfg.secret.as_bytes())?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
}
