//! Handshake authentication over both transports.

use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rstest::rstest;
use serde_json::json;

use crate::helpers::{Kind, SECRET, expect_closed, spawn};

fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

fn hs(alg: Algorithm, secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn valid_token_gets_connected_with_session_settings(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (_c, connected) = server.connect(kind, "alice").await;
    assert_eq!(connected["v"], 1);
    assert_eq!(connected["userId"], "alice");
    assert!(connected["sessionId"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(
        connected["deviceId"], connected["sessionId"],
        "no device given: one device per session"
    );
    assert_eq!(connected["heartbeat"]["intervalMs"], 25_000);
    assert_eq!(connected["heartbeat"]["timeoutMs"], 20_000);
    assert_eq!(connected["limits"]["maxFrameBytes"], 65_536);
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn device_from_the_handshake_is_used(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": server.token("bob"), "device": "laptop-1"})).await;
    let connected = c.recv().await.unwrap();
    assert_eq!(connected["deviceId"], "laptop-1");
}

/// Every way a token can be wrong, each refused with its code and a close that tells the
/// client whether to reconnect.
#[rstest]
#[tokio::test]
async fn bad_tokens_are_refused_with_their_codes(
    #[values(Kind::Ws, Kind::Wt)] kind: Kind,
    #[values(
        "missing",
        "bad_signature",
        "wrong_algorithm",
        "alg_none",
        "expired",
        "not_yet_valid",
        "garbage",
        "two_segments",
        "bad_base64",
        "oversized",
        "wrong_issuer",
        "wrong_audience",
        "missing_issuer",
        "missing_audience"
    )]
    case: &str,
) {
    let server = spawn(|c| {
        c.jwt.issuer = Some("rtgate-tests".into());
        c.jwt.audience = Some("rtgate".into());
    })
    .await;
    let exp = now() + 3600;
    let token = match case {
        "missing" => None,
        "bad_signature" => {
            Some(hs(Algorithm::HS256, "not-the-secret", json!({"sub": "a", "exp": exp})))
        }
        "wrong_algorithm" => Some(hs(Algorithm::HS512, SECRET, json!({"sub": "a", "exp": exp}))),
        "alg_none" => {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            Some(format!(
                "{}.{}.",
                b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
                b64.encode(json!({"sub": "a", "exp": exp}).to_string())
            ))
        }
        "expired" => Some(hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "a", "exp": now() - 120, "iss": "rtgate-tests", "aud": "rtgate"}),
        )),
        "not_yet_valid" => Some(hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "a", "exp": exp, "nbf": now() + 600, "iss": "rtgate-tests", "aud": "rtgate"}),
        )),
        "garbage" => Some("not.a.jwt".to_owned()),
        "two_segments" => Some("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0".to_owned()),
        "bad_base64" => Some("!!!.@@@.###".to_owned()),
        "oversized" => Some(format!("{}.{}.sig", "a".repeat(6000), "b".repeat(6000))),
        "wrong_issuer" => Some(hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "a", "exp": exp, "iss": "evil", "aud": "rtgate"}),
        )),
        "wrong_audience" => Some(hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "a", "exp": exp, "iss": "rtgate-tests", "aud": "other"}),
        )),
        "missing_issuer" => {
            Some(hs(Algorithm::HS256, SECRET, json!({"sub": "a", "exp": exp, "aud": "rtgate"})))
        }
        "missing_audience" => Some(hs(
            Algorithm::HS256,
            SECRET,
            json!({"sub": "a", "exp": exp, "iss": "rtgate-tests"}),
        )),
        _ => unreachable!(),
    };
    let (reason, code) = match case {
        "missing" => ("auth_required", 3500),
        "expired" => ("token_expired", 3002),
        _ => ("invalid_token", 3501),
    };
    let mut c = server.open(kind).await;
    let mut frame = json!({"type": "connect", "v": 1});
    if let Some(t) = token {
        frame["token"] = json!(t);
    }
    c.send(&frame).await;
    let frames = expect_closed(&mut c, reason, code, true).await;
    assert_eq!(frames.last().unwrap()["reconnect"], code < 3500);
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn token_expiring_mid_session_ends_it_with_reconnect_advice(#[case] kind: Kind) {
    let server = spawn(|c| c.jwt.leeway = Duration::ZERO).await;
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": server.token_for("alice", Duration::from_secs(2))}))
        .await;
    assert_eq!(c.recv().await.unwrap()["type"], "connected");
    let started = std::time::Instant::now();
    let frames = expect_closed(&mut c, "token_expired", 3002, false).await;
    assert_eq!(frames.last().unwrap()["reconnect"], true);
    assert!(started.elapsed() <= Duration::from_secs(4), "took {:?}", started.elapsed());
}

/// The same token right after the session it opened was ended for expiry is refused at the
/// handshake, not accepted and then ended milliseconds later.
#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn an_expired_token_is_not_accepted_again_on_reconnect(#[case] kind: Kind) {
    let server = spawn(|c| c.jwt.leeway = Duration::ZERO).await;
    let token = server.token_for("alice", Duration::from_secs(1));
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": token})).await;
    assert_eq!(c.recv().await.unwrap()["type"], "connected");
    expect_closed(&mut c, "token_expired", 3002, false).await;
    let mut again = server.open(kind).await;
    again.send(&json!({"type": "connect", "token": token})).await;
    let frames = expect_closed(&mut again, "token_expired", 3002, true).await;
    assert!(!frames.iter().any(|f| f["type"] == "connected"), "{frames:?}");
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn es256_public_key_verifies_and_refuses_hs256(#[case] kind: Kind) {
    let key = rcgen::KeyPair::generate().unwrap();
    let dir = std::env::temp_dir().join(format!("rtgate-es256-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let public = dir.join("public.pem");
    std::fs::write(&public, key.public_key_pem()).unwrap();
    let server = spawn(|c| {
        c.jwt.algorithm = rtgate::config::JwtAlgorithm::Es256;
        c.jwt.public_key = Some(public.clone());
    })
    .await;
    let claims = json!({"sub": "carol", "exp": now() + 600});
    let signing = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let good = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();

    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": good})).await;
    assert_eq!(c.recv().await.unwrap()["userId"], "carol");

    // The classic confusion: HS256 "signed" with the public key as the secret.
    let confused = hs(Algorithm::HS256, &key.public_key_pem(), claims);
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": confused})).await;
    expect_closed(&mut c, "invalid_token", 3501, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn first_frame_must_be_connect(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "event", "event": "sys:echo", "id": 1})).await;
    expect_closed(&mut c, "protocol_error", 3502, true).await;
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn other_protocol_versions_are_refused(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "v": 2, "token": server.token("a")})).await;
    expect_closed(&mut c, "unsupported_version", 3503, true).await;
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn silent_socket_is_closed_at_the_handshake_deadline(#[case] kind: Kind) {
    let server = spawn(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let mut c = server.open(kind).await;
    if kind == Kind::Wt {
        // QUIC only announces a stream once data flows on it; zero bytes of a frame does that
        // without sending a frame.
        c.send_raw(&[]).await;
        c.send_raw(&[0]).await;
    }
    expect_closed(&mut c, "handshake_timeout", 3004, true).await;
}

/// A WebTransport session that never opens its frame stream cannot get an `error` frame; it
/// is closed with the handshake code at the transport level instead.
#[tokio::test]
async fn webtransport_session_without_a_stream_is_closed_at_the_deadline() {
    let server = spawn(|c| c.handshake_timeout = Duration::from_millis(300)).await;
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(server.cert)])
        .build();
    let endpoint = wtransport::Endpoint::client(cfg).unwrap();
    let conn = endpoint.connect(format!("https://{}/wt", server.wt)).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await.unwrap();
    match closed {
        wtransport::error::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(c.code().into_inner(), 3004)
        }
        other => panic!("closed without the handshake code: {other}"),
    }
}

/// RS256 with a public key: a valid RS256 token passes; the same claims "signed" with HS256
/// using the public key PEM as the secret (the classic confusion attack) are refused.
#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn rs256_public_key_verifies_and_refuses_hs256_confusion(#[case] kind: Kind) {
    let dir = std::env::temp_dir().join(format!("rtgate-rs256-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (private, public) = (dir.join("private.pem"), dir.join("public.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out"])
        .arg(&private)
        .status()
        .unwrap()
        .success()
        && std::process::Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(&private)
            .arg("-out")
            .arg(&public)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl made an RSA key pair");
    let server = spawn(|c| {
        c.jwt.algorithm = rtgate::config::JwtAlgorithm::Rs256;
        c.jwt.public_key = Some(public.clone());
    })
    .await;
    let claims = json!({"sub": "rsa-user", "exp": now() + 600});
    let signing = EncodingKey::from_rsa_pem(&std::fs::read(&private).unwrap()).unwrap();
    let good = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &signing).unwrap();
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": good})).await;
    assert_eq!(c.recv().await.unwrap()["userId"], "rsa-user");

    let pem = std::fs::read_to_string(&public).unwrap();
    let confused = hs(Algorithm::HS256, &pem, claims);
    let mut c = server.open(kind).await;
    c.send(&json!({"type": "connect", "token": confused})).await;
    expect_closed(&mut c, "invalid_token", 3501, true).await;
    let _ = std::fs::remove_dir_all(dir);
}
