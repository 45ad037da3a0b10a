//! JWT authentication: turns the token of a `connect` frame (or an HTTP bearer header) into an
//! `Identity`, or into an `AuthError` that maps to exactly one wire code.
//!
//! The algorithm is pinned by configuration. `jsonwebtoken` checks the header's `alg` against
//! the pinned list before verifying, so `alg: none`, RS256↔HS256 confusion and any other
//! algorithm are refused without touching the key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

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

impl Identity {
    /// Time left until the token expires (zero when it already has).
    pub fn remaining(&self, leeway: Duration) -> Duration {
        until(self.expires_at, leeway)
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cfg() -> JwtConfig {
        let mut c = Config::from_env().map(|c| c.jwt).expect("defaults parse");
        c.secret = "unit-test-secret".into();
        c
    }

    fn sign(claims: serde_json::Value, alg: Algorithm, secret: &str) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes()).expect("key");
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).expect("sign")
    }

    fn exp_in(secs: i64) -> u64 {
        (now().as_secs() as i64 + secs) as u64
    }

    #[test]
    fn accepts_a_valid_token() {
        let auth = Authenticator::from_config(&cfg()).unwrap();
        let t = mint_dev_token(
            &cfg(),
            "alice",
            Duration::from_secs(60),
            Some("phone".into()),
            vec!["admin".into()],
        )
        .unwrap();
        let id = auth.verify(&t).unwrap();
        assert_eq!(
            (id.user_id.as_str(), id.device_id.as_deref(), id.admin),
            ("alice", Some("phone"), true)
        );
    }

    #[test]
    fn refuses_bad_tokens_with_their_codes() {
        let auth = Authenticator::from_config(&cfg()).unwrap();
        let ok = serde_json::json!({"sub": "a", "exp": exp_in(60)});
        assert_eq!(auth.verify(""), Err(AuthError::Missing));
        assert_eq!(
            auth.verify(&sign(ok.clone(), Algorithm::HS256, "other")).unwrap_err().code(),
            Code::InvalidToken
        );
        assert_eq!(
            auth.verify(&sign(ok.clone(), Algorithm::HS384, "unit-test-secret"))
                .unwrap_err()
                .code(),
            Code::InvalidToken
        );
        let expired = serde_json::json!({"sub": "a", "exp": exp_in(-60)});
        assert_eq!(
            auth.verify(&sign(expired, Algorithm::HS256, "unit-test-secret")),
            Err(AuthError::Expired)
        );
        let early = serde_json::json!({"sub": "a", "exp": exp_in(600), "nbf": exp_in(300)});
        assert_eq!(
            auth.verify(&sign(early, Algorithm::HS256, "unit-test-secret")).unwrap_err().code(),
            Code::InvalidToken
        );
        let no_exp = serde_json::json!({"sub": "a"});
        assert_eq!(
            auth.verify(&sign(no_exp, Algorithm::HS256, "unit-test-secret")).unwrap_err().code(),
            Code::InvalidToken
        );
        assert_eq!(auth.verify("a.b.c").unwrap_err().code(), Code::InvalidToken);
        assert_eq!(auth.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)), Err(AuthError::TooLong));
    }

    #[test]
    fn refuses_alg_none() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = b64.encode(format!(r#"{{"sub":"a","exp":{}}}"#, exp_in(60)));
        let auth = Authenticator::from_config(&cfg()).unwrap();
        assert_eq!(
            auth.verify(&format!("{header}.{body}.")).unwrap_err().code(),
            Code::InvalidToken
        );
    }

    #[test]
    fn minted_tokens_carry_the_configured_issuer_and_audience() {
        let mut c = cfg();
        c.issuer = Some("rtgate-tests".into());
        c.audience = Some("chat".into());
        let t = mint_dev_token(&c, "a", Duration::from_secs(60), None, vec![]).unwrap();
        assert!(Authenticator::from_config(&c).unwrap().verify(&t).is_ok());
        c.algorithm = JwtAlgorithm::Es256;
        assert!(mint_dev_token(&c, "a", Duration::from_secs(60), None, vec![]).is_err());
    }

    #[test]
    fn audience_may_be_an_array() {
        let mut c = cfg();
        c.audience = Some("chat".into());
        let auth = Authenticator::from_config(&c).unwrap();
        let t = sign(
            serde_json::json!({"sub": "a", "exp": exp_in(60), "aud": ["other", "chat"]}),
            Algorithm::HS256,
            "unit-test-secret",
        );
        assert!(auth.verify(&t).is_ok());
    }

    /// Every combination of a configured issuer and audience with a token's claims: each
    /// configured claim is required and must match; unconfigured ones are ignored.
    #[test]
    fn configured_issuer_and_audience_are_required() {
        #[derive(Clone, Copy, Debug)]
        enum Claim {
            Missing,
            Wrong,
            Right,
            /// `aud` as an array holding the right value among others.
            RightInArray,
        }
        use Claim::*;
        let value = |c: Claim, right: &str| match c {
            Missing => None,
            Wrong => Some(serde_json::json!("someone-else")),
            Right => Some(serde_json::json!(right)),
            RightInArray => Some(serde_json::json!(["other", right])),
        };
        for (iss_configured, aud_configured) in [(true, true), (true, false), (false, true)] {
            let mut c = cfg();
            c.issuer = iss_configured.then(|| "issuer-a".to_owned());
            c.audience = aud_configured.then(|| "aud-a".to_owned());
            let auth = Authenticator::from_config(&c).unwrap();
            for iss in [Missing, Wrong, Right] {
                for aud in [Missing, Wrong, Right, RightInArray] {
                    let mut claims = serde_json::json!({"sub": "a", "exp": exp_in(60)});
                    if let Some(v) = value(iss, "issuer-a") {
                        claims["iss"] = v;
                    }
                    if let Some(v) = value(aud, "aud-a") {
                        claims["aud"] = v;
                    }
                    let iss_ok = !iss_configured || matches!(iss, Right);
                    let aud_ok = !aud_configured || matches!(aud, Right | RightInArray);
                    let result = auth.verify(&sign(claims, Algorithm::HS256, "unit-test-secret"));
                    let label = format!(
                        "iss configured {iss_configured}, aud configured {aud_configured}, \
                         token iss {iss:?}, aud {aud:?}: {result:?}"
                    );
                    if iss_ok && aud_ok {
                        assert!(result.is_ok(), "{label}");
                    } else {
                        assert_eq!(
                            result.map_err(|e| e.code()).err(),
                            Some(Code::InvalidToken),
                            "{label}"
                        );
                    }
                }
            }
        }
    }

    /// The session ends at `exp` + leeway exactly; a reconnect with the same token a moment
    /// later is refused, not accepted and then ended at once.
    #[test]
    fn a_token_is_expired_from_exp_plus_leeway_on_to_the_millisecond() {
        let mut c = cfg();
        c.leeway = Duration::from_secs(5);
        let auth = Authenticator::from_config(&c).unwrap();
        let now = now();
        // exp + leeway is the start of the current second: passed by a fraction of a second,
        // which a comparison in whole seconds does not see.
        let exp = now.as_secs() - 5;
        let claims = serde_json::json!({"sub": "a", "exp": exp});
        let token = sign(claims, Algorithm::HS256, "unit-test-secret");
        assert_eq!(auth.verify(&token), Err(AuthError::Expired));
        let claims = serde_json::json!({"sub": "a", "exp": exp + 2});
        assert!(auth.verify(&sign(claims, Algorithm::HS256, "unit-test-secret")).is_ok());
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let mut c = cfg();
        c.issuer = Some("rtgate-tests".into());
        c.audience = Some("chat".into());
        let auth = Authenticator::from_config(&c).unwrap();
        let good = serde_json::json!({"sub": "a", "exp": exp_in(60), "iss": "rtgate-tests", "aud": "chat"});
        assert!(auth.verify(&sign(good, Algorithm::HS256, "unit-test-secret")).is_ok());
        let bad_iss =
            serde_json::json!({"sub": "a", "exp": exp_in(60), "iss": "evil", "aud": "chat"});
        assert_eq!(
            auth.verify(&sign(bad_iss, Algorithm::HS256, "unit-test-secret")),
            Err(AuthError::Invalid("wrong issuer"))
        );
        let bad_aud = serde_json::json!({"sub": "a", "exp": exp_in(60), "iss": "rtgate-tests", "aud": "other"});
        assert_eq!(
            auth.verify(&sign(bad_aud, Algorithm::HS256, "unit-test-secret")),
            Err(AuthError::Invalid("wrong audience"))
        );
    }
}
