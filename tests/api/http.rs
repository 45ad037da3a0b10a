//! HTTP endpoints: health, the certificate hash a browser needs for WebTransport, and the
//! conformance echo that only `--ws-echo` routes.

use crate::helpers::{Client, Kind, spawn};

#[tokio::test]
async fn health_live_and_ready() {
    let server = spawn(|_| {}).await;
    let (status, live) = server.get("/health/live").await;
    assert_eq!((status, live["status"].as_str()), (200, Some("ok")));
    let (status, ready) = server.get("/health/ready").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    assert_eq!(ready["checks"]["listeners"]["status"], "up");
}

/// A client that knows nothing but the HTTP address fetches the hash, as a browser page does,
/// and uses it to open WebTransport.
#[tokio::test]
async fn cert_hash_is_what_webtransport_serves() {
    let server = spawn(|_| {}).await;
    let (status, body) = server.get("/cert-hash").await;
    assert_eq!(status, 200);
    assert_eq!(body["algorithm"], "sha-256");
    assert_eq!(body["selfSigned"], true);
    let bytes: Vec<u8> =
        body["bytes"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap() as u8).collect();
    let hash: [u8; 32] = bytes.try_into().unwrap();
    assert_eq!(hash, server.cert);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(body["hex"], hex);
    let mut c = Client::open(Kind::Wt, server.http, server.wt, hash).await;
    c.send(&serde_json::json!({"type": "connect", "token": server.token("a")})).await;
    assert_eq!(c.recv().await.unwrap()["type"], "connected");
}

#[tokio::test]
async fn webtransport_on_another_path_is_refused() {
    let server = spawn(|_| {}).await;
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(server.cert)])
        .build();
    let endpoint = wtransport::Endpoint::client(cfg).unwrap();
    let result = endpoint.connect(format!("https://{}/nope", server.wt)).await;
    assert!(result.is_err(), "a session on an unknown path must be refused");
}

#[tokio::test]
async fn echo_is_not_routed_without_the_flag() {
    let server = spawn(|_| {}).await;
    let (status, _) = server.get("/echo").await;
    assert_eq!(status, 404);
}

/// The conformance echo returns data messages unchanged and completes the close handshake.
#[tokio::test]
async fn echo_returns_messages_and_answers_close() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

    let server = spawn(|c| c.ws_echo = true).await;
    let tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("ws://{}/echo", server.http), tcp).await.unwrap();
    // Larger than `--max-frame-bytes`: the echo has its own cap.
    let big = vec![7u8; 200 * 1024];
    for sent in [Message::text("héllo"), Message::binary(big)] {
        ws.send(sent.clone()).await.unwrap();
        assert_eq!(ws.next().await.unwrap().unwrap(), sent);
    }
    let close = CloseFrame { code: 1000.into(), reason: "bye".into() };
    ws.send(Message::Close(Some(close.clone()))).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::Close(Some(close)));
    assert!(ws.next().await.is_none(), "server closes after the handshake");
}
