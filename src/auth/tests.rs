use super::*;
use crate::config::Config;
use jsonwebtoken::{EncodingKey, Header};

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
        auth.verify(&sign(ok.clone(), Algorithm::HS384, "unit-test-secret")).unwrap_err().code(),
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
    assert_eq!(auth.verify(&format!("{header}.{body}.")).unwrap_err().code(), Code::InvalidToken);
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
    let good =
        serde_json::json!({"sub": "a", "exp": exp_in(60), "iss": "rtgate-tests", "aud": "chat"});
    assert!(auth.verify(&sign(good, Algorithm::HS256, "unit-test-secret")).is_ok());
    let bad_iss = serde_json::json!({"sub": "a", "exp": exp_in(60), "iss": "evil", "aud": "chat"});
    assert_eq!(
        auth.verify(&sign(bad_iss, Algorithm::HS256, "unit-test-secret")),
        Err(AuthError::Invalid("wrong issuer"))
    );
    let bad_aud =
        serde_json::json!({"sub": "a", "exp": exp_in(60), "iss": "rtgate-tests", "aud": "other"});
    assert_eq!(
        auth.verify(&sign(bad_aud, Algorithm::HS256, "unit-test-secret")),
        Err(AuthError::Invalid("wrong audience"))
    );
}
