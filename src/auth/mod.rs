//! JWT authentication: turns the token of a `connect` frame (or an HTTP bearer header) into an
//! `Identity`, or into an `AuthError` that maps to exactly one wire code.
//!
//! The algorithm is pinned by configuration. `jsonwebtoken` checks the header's `alg` against
//! the pinned list before verifying, so `alg: none`, RS256↔HS256 confusion and any other
//! algorithm are refused without touching the key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

mod mint;

pub use mint::{mint_dev_token, mint_dev_token_with_channels, mint_subscription_token};

use crate::{
    config::{JwtAlgorithm, JwtConfig},
    protocol::Code,
};

/// Longest token accepted. Real tokens are a few hundred bytes; this bounds the work an
/// unauthenticated peer can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Who is on the other end, as established by a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    /// `device_id` claim, when the token pins the device.
    pub device_id: Option<String>,
    /// `exp`, in seconds since the epoch.
    pub expires_at: u64,
    pub admin: bool,
    /// `iat`, in seconds since the epoch, when the token has one: a revocation of the user's
    /// tokens "issued before" a time compares it (a token without `iat` counts as revoked).
    pub issued_at: Option<u64>,
    /// `jti`, when the token has one: a single token can be revoked by it.
    pub jti: Option<String>,
    /// Made by the connect proxy, not a token: the refresh proxy extends it, not
    /// `sys:refresh`.
    pub proxied: bool,
    /// `channels` claim: channels (or `prefix*` patterns) the user may subscribe to in
    /// namespaces with `subscribe = "claim"`.
    pub channels: Vec<String>,
}

/// Most entries a token's `channels` claim may list.
pub const MAX_CHANNEL_CLAIMS: usize = 64;

/// What a valid subscription token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionGrant {
    /// `exp`, in seconds since the epoch: the subscription ends then (plus the leeway).
    pub expires_at: u64,
    /// `info` claim: JSON attached to the subscriber's presence entry.
    pub info: Option<String>,
}

/// Time from now until `exp` (seconds since the epoch) plus `leeway`; zero once past.
pub fn until(exp: u64, leeway: Duration) -> Duration {
    (Duration::from_secs(exp) + leeway).saturating_sub(now())
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("a token is required")]
    Missing,
    #[error("token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token has expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(&'static str),
}

impl AuthError {
    pub fn code(&self) -> Code {
        match self {
            AuthError::Missing => Code::AuthRequired,
            AuthError::Expired => Code::TokenExpired,
            AuthError::TooLong | AuthError::Invalid(_) => Code::InvalidToken,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("--jwt-public-key is required for {0:?}")]
    MissingPublicKey(JwtAlgorithm),
    #[error("reading JWT public key {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("JWT key is not usable: {0}")]
    BadKey(jsonwebtoken::errors::Error),
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
    // Checked by `Validation`; kept loose here because `aud` may be a string or an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    device_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    channels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

/// A subscription token's claims: a connection token's key and rules, for one channel.
#[derive(Debug, Serialize, Deserialize)]
struct SubscriptionClaims {
    sub: String,
    exp: u64,
    channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    iss: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    aud: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    info: Option<serde_json::Value>,
}

/// Verifies tokens with one configured key and algorithm. Cheap to share (`Arc`).
pub struct Authenticator {
    key: DecodingKey,
    validation: Validation,
    /// The same leeway `Validation` applies in whole seconds, kept exact for the expiry
    /// check `verify` makes itself.
    leeway: Duration,
}

fn algorithm(a: JwtAlgorithm) -> Algorithm {
    match a {
        JwtAlgorithm::Hs256 => Algorithm::HS256,
        JwtAlgorithm::Rs256 => Algorithm::RS256,
        JwtAlgorithm::Es256 => Algorithm::ES256,
    }
}

impl Authenticator {
    pub fn from_config(cfg: &JwtConfig) -> Result<Self, AuthConfigError> {
        let key = match cfg.algorithm {
            JwtAlgorithm::Hs256 => {
                DecodingKey::from_secret(cfg.secret.as_bytes()).map_err(AuthConfigError::BadKey)?
            }
            alg => {
                let path = cfg.public_key.as_ref().ok_or(AuthConfigError::MissingPublicKey(alg))?;
                let pem = std::fs::read(path).map_err(|source| AuthConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                let key = if alg == JwtAlgorithm::Rs256 {
                    DecodingKey::from_rsa_pem(&pem)
                } else {
                    DecodingKey::from_ec_pem(&pem)
                };
                key.map_err(AuthConfigError::BadKey)?
            }
        };
        let mut validation = Validation::new(algorithm(cfg.algorithm));
        validation.leeway = cfg.leeway.as_secs();
        validation.validate_nbf = true;
        // A configured issuer or audience is required, not merely checked when present:
        // `Validation` skips the comparison for a token that lacks the claim.
        let mut required = vec!["exp", "sub"];
        match &cfg.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &cfg.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(Self { key, validation, leeway: cfg.leeway })
    }

    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let c = data.claims;
        // `Validation` compares `exp` in whole seconds, so for up to a second after a session
        // was ended for `token_expired` (at `exp` + leeway, exactly) the same token would be
        // accepted again, only to be ended at once. One rule for both: a token is expired
        // from `exp` + leeway on.
        if (Duration::from_secs(c.exp) + self.leeway) <= now() {
            return Err(AuthError::Expired);
        }
        if c.sub.is_empty() || c.sub.len() > 128 {
            return Err(AuthError::Invalid("`sub` must be 1 to 128 bytes"));
        }
        // User ids reach logs, Redis keys and database rows: the text policy applies.
        if c.sub.chars().any(char::is_control) {
            return Err(AuthError::Invalid("`sub` must not contain control characters"));
        }
        if c.channels.len() > MAX_CHANNEL_CLAIMS {
            return Err(AuthError::Invalid("`channels` lists more than 64 entries"));
        }
        Ok(Identity {
            user_id: c.sub,
            device_id: c.device_id,
            expires_at: c.exp,
            admin: c.roles.iter().any(|r| r == "admin"),
            channels: c.channels,
            issued_at: c.iat,
            proxied: false,
            // Revocation keys embed it: bounded and printable like a user id.
            jti: c
                .jti
                .filter(|j| !j.is_empty() && j.len() <= 128 && !j.chars().any(char::is_control)),
        })
    }

    /// Verifies a subscription token for `user` and `channel`: the connection tokens' key,
    /// algorithm, `iss`/`aud` and expiry rules, with `sub` equal to `user` and `channel` equal
    /// to `channel`.
    pub fn verify_subscription(
        &self,
        token: &str,
        user: &str,
        channel: &str,
    ) -> Result<SubscriptionGrant, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::TooLong);
        }
        let data = jsonwebtoken::decode::<SubscriptionClaims>(token, &self.key, &self.validation)
            .map_err(|e| classify(e.kind()))?;
        let c = data.claims;
        if (Duration::from_secs(c.exp) + self.leeway) <= now() {
            return Err(AuthError::Expired);
        }
        if c.sub != user {
            return Err(AuthError::Invalid("the subscription token is for another user"));
        }
        if c.channel != channel {
            return Err(AuthError::Invalid("the subscription token is for another channel"));
        }
        Ok(SubscriptionGrant { expires_at: c.exp, info: c.info.map(|v| v.to_string()) })
    }
}

fn classify(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::Invalid("algorithm not accepted")
        }
        ErrorKind::ImmatureSignature => AuthError::Invalid("token not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
        ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("missing required claim"),
        _ => AuthError::Invalid("malformed token"),
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests;
