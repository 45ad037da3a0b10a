//! `rtgate client`, the terminal client of the README's quick start: it connects, prints the
//! server's frames, sends stdin lines as frames, answers pings by itself (a session typed by
//! hand outlives the heartbeat) and leaves with `disconnect` when stdin ends.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;

use crate::helpers::{SECRET, spawn};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_client_echoes_answers_pings_and_leaves() {
    let server = spawn(|c| {
        c.ping_interval = Duration::from_millis(200);
        c.pong_timeout = Duration::from_millis(300);
    })
    .await;
    let mut child = Command::new(env!("CARGO_BIN_EXE_rtgate"))
        .args(["client", "--url", &format!("ws://{}/ws", server.http), "--sub", "alice"])
        .env("RTGATE_JWT_SECRET", SECRET)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap_or(Value::String(line)));
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(5)).expect("a line from the client");

    let connected = next();
    assert_eq!(
        (connected["type"].as_str(), connected["userId"].as_str()),
        (Some("connected"), Some("alice"))
    );
    writeln!(stdin, r#"{{"type":"event","event":"sys:echo","id":1,"data":"one"}}"#).unwrap();
    assert_eq!(next(), serde_json::json!({"type": "ack", "id": 1, "data": "one"}));
    // Several heartbeats pass: the client answered them, so the session is still up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    writeln!(stdin, r#"{{"type":"event","event":"sys:echo","id":2,"data":"two"}}"#).unwrap();
    assert_eq!(next(), serde_json::json!({"type": "ack", "id": 2, "data": "two"}));

    drop(stdin); // end of input: the client says `disconnect` and the server closes
    let status = tokio::task::spawn_blocking(move || child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status:?}");
}
