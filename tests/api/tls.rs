//! Production certificates: `rtgate cert` writes a PEM pair; configured, the same pair serves
//! WSS on TCP and WebTransport on UDP. Also `rtgate token`.

use std::{process::Command, sync::Arc};

use rustls::pki_types::{CertificateDer, pem::PemObject};
use serde_json::json;

use crate::helpers::{Client, Io, Kind, SECRET, spawn};

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("rtgate-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn configured_cert_serves_wss_and_webtransport() {
    let dir = tempdir("tls");
    let out = Command::new(env!("CARGO_BIN_EXE_rtgate"))
        .args(["cert", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let server = spawn(|c| {
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;

    // WSS, trusting exactly this certificate.
    let pem = std::fs::read(&cert).unwrap();
    let der = CertificateDer::from_pem_slice(&pem).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(server.http).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls)).connect(name, tcp).await.unwrap();
    let stream: Box<dyn Io> = Box::new(stream);
    let (ws, _) = tokio_tungstenite::client_async("wss://localhost/ws", stream).await.unwrap();
    let mut c = Client::Ws(Box::new(ws));
    c.send(&json!({"type": "connect", "token": server.token("tls-user")})).await;
    assert_eq!(c.recv().await.unwrap()["userId"], "tls-user");

    // WebTransport on the same certificate: its hash is the configured leaf's.
    let leaf = wtransport::tls::Certificate::from_der(der.to_vec()).unwrap();
    assert_eq!(leaf.hash().as_ref(), &server.cert);
    let mut c = Client::open(Kind::Wt, server.http, server.wt, server.cert).await;
    c.send(&json!({"type": "connect", "token": server.token("tls-user")})).await;
    assert_eq!(c.recv().await.unwrap()["type"], "connected");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn token_command_mints_a_token_the_server_accepts() {
    let out = Command::new(env!("CARGO_BIN_EXE_rtgate"))
        .args([
            "token",
            "--sub",
            "dave",
            "--ttl",
            "5m",
            "--device",
            "tab-1",
            "--jwt-secret",
            SECRET,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap();
    let mut cfg = crate::helpers::test_config();
    cfg.jwt.secret = SECRET.into();
    let id =
        rtgate::auth::Authenticator::from_config(&cfg.jwt).unwrap().verify(token.trim()).unwrap();
    assert_eq!((id.user_id.as_str(), id.device_id.as_deref()), ("dave", Some("tab-1")));
    let left = id.expires_at
        - std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    assert!((290..=300).contains(&left), "{left}");
}
