//! Browsers on other origins: CORS for the REST APIs and the client's files
//! (`--cors-origins`), and the Origin allowlist of both realtime endpoints
//! (`--allowed-origins`), refused with 403 before a session exists.

use rtgate::server::WT_PATH;
use wtransport::{ClientConfig, Endpoint, endpoint::ConnectOptions, tls::Sha256Digest};

use crate::{
    api_util::{KEY, raw},
    helpers::spawn,
};

const APP: &str = "https://app.example";

#[tokio::test]
async fn cors_answers_preflights_for_listed_origins_only() {
    let s = spawn(|c| {
        c.api.keys = vec![KEY.into()];
        c.api.cors_origins = vec![APP.into()];
    })
    .await;
    let preflight = |origin: &str| {
        format!(
            "Origin: {origin}\r\nAccess-Control-Request-Method: POST\r\nAccess-Control-Request-Headers: authorization, content-type\r\n"
        )
    };
    let ok = raw(s.http, "OPTIONS", "/api/v1/publish", &preflight(APP), "").await;
    assert!(ok.status == 200 || ok.status == 204, "{}", ok.head);
    assert_eq!(ok.header("access-control-allow-origin"), Some(APP));
    assert!(ok.header("access-control-allow-headers").unwrap().contains("authorization"));
    assert_eq!(ok.header("access-control-allow-credentials"), None);
    let other =
        raw(s.http, "OPTIONS", "/api/v1/publish", &preflight("https://evil.example"), "").await;
    assert_eq!(other.header("access-control-allow-origin"), None);
    // The client's modules and the chat API, read by a page on the app's origin.
    let js = raw(s.http, "GET", "/client/rtgate.js", &format!("Origin: {APP}\r\n"), "").await;
    assert_eq!(js.status, 200);
    assert_eq!(js.header("access-control-allow-origin"), Some(APP));

    // Without --cors-origins nothing is added.
    let plain = spawn(|_| {}).await;
    let a = raw(plain.http, "OPTIONS", "/api/v1/publish", &preflight(APP), "").await;
    assert_eq!(a.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn only_allowed_origins_open_sessions_on_either_transport() {
    let s = spawn(|c| c.api.allowed_origins = vec![APP.into()]).await;
    let upgrade = |origin: Option<&str>| {
        let origin = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        format!(
            "{origin}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        )
    };
    // `raw` adds `Connection: close`; the upgrade answer comes before the server reads it.
    for (origin, status) in [(Some(APP), 101), (Some("https://evil.example"), 403), (None, 403)] {
        let a = upgrade_status(s.http, &upgrade(origin)).await;
        assert_eq!(a, status, "{origin:?}");
    }
    for (origin, accepted) in [(APP, true), ("https://evil.example", false)] {
        let cfg = ClientConfig::builder()
            .with_bind_default()
            .with_server_certificate_hashes([Sha256Digest::new(s.cert)])
            .build();
        let endpoint = Endpoint::client(cfg).unwrap();
        let options = ConnectOptions::builder(format!("https://{}{WT_PATH}", s.wt))
            .add_header("origin", origin)
            .build();
        let result = endpoint.connect(options).await;
        assert_eq!(result.is_ok(), accepted, "{origin}: {:?}", result.err());
    }
}

/// The status line of a WebSocket upgrade request with these headers.
async fn upgrade_status(addr: std::net::SocketAddr, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0; 256];
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}
