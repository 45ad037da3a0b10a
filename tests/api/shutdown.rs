//! Graceful shutdown: every session on both transports is told `server_shutdown` (with a
//! jittered reconnect delay) before its transport closes, and the process exits 0.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::json;

use crate::helpers::{Client, Kind, SECRET, expect_closed, spawn};

#[tokio::test]
async fn shutdown_tells_every_session_on_both_transports() {
    let server = spawn(|_| {}).await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let kind = if i % 2 == 0 { Kind::Ws } else { Kind::Wt };
        clients.push(server.connect(kind, &format!("user{i}")).await.0);
    }
    server.shutdown.cancel();
    let spread = server.config.shutdown_reconnect_spread.as_millis() as u64;
    for c in &mut clients {
        let frames = expect_closed(c, "server_shutdown", 3000, false).await;
        let d = frames.last().unwrap();
        assert_eq!(d["reconnect"], true);
        assert!(
            d["retryAfterMs"].as_u64().is_some_and(|ms| ms <= spread),
            "{d}"
        );
    }
    let result = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "server did not stop cleanly: {result:?}"
    );
}

/// The real binary, the real signal.
#[tokio::test]
async fn sigterm_drains_sessions_and_exits_zero() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtgate"))
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--wt-addr",
            "127.0.0.1:0",
            "--shutdown-grace",
            "3s",
        ])
        .env("RTGATE_JWT_SECRET", SECRET)
        .env("RTGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.starts_with("READY "))
    })
    .await
    .unwrap()
    .expect("server printed READY");
    let field = |name: &str| -> String {
        ready
            .split(' ')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .unwrap()
            .to_owned()
    };
    let http = field("http").parse().unwrap();
    let wt = field("wt").parse().unwrap();
    let hex = field("cert_sha256");
    let cert: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).unwrap())
        .collect();
    let cert: [u8; 32] = cert.try_into().unwrap();

    let mut config = rtgate::config::Config::from_env().unwrap();
    config.jwt.secret = SECRET.into();
    let token =
        rtgate::auth::mint_dev_token(&config.jwt, "sig", Duration::from_secs(60), None, vec![])
            .unwrap();
    let mut clients = Vec::new();
    for kind in [Kind::Ws, Kind::Wt] {
        let mut c = Client::open(kind, http, wt, cert).await;
        c.send(&json!({"type": "connect", "token": token})).await;
        assert_eq!(c.recv().await.unwrap()["type"], "connected");
        clients.push(c);
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    for c in &mut clients {
        expect_closed(c, "server_shutdown", 3000, false).await;
    }
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
