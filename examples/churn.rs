//! Churn load for `scripts/soak`: `--clients` concurrent loops, each connecting over WebSocket,
//! sending `--events` `sys:echo` events (waiting for every ack), disconnecting, and starting
//! again, until `--duration` has passed. Bounded in time and in concurrency; prints the cycle
//! count and exits non-zero if any cycle failed (the first ten failures are printed).
//!
//! ```sh
//! cargo run --example churn -- --url ws://127.0.0.1:3000/ws --secret S --duration 60s
//! ```
#![allow(clippy::unwrap_used)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

struct Args {
    url: String,
    secret: String,
    duration: Duration,
    clients: usize,
    events: u64,
}

fn args() -> Args {
    let mut a = Args {
        url: "ws://127.0.0.1:3000/ws".into(),
        secret: String::new(),
        duration: Duration::from_secs(60),
        clients: 20,
        events: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => a.url = value,
            "--secret" => a.secret = value,
            "--duration" => a.duration = humantime::parse_duration(&value).unwrap(),
            "--clients" => a.clients = value.parse().unwrap(),
            "--events" => a.events = value.parse().unwrap(),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// One connect → events → disconnect cycle; errors are strings for the summary.
async fn cycle(url: &str, token: &str, events: u64) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.map_err(|e| e.to_string())?;
    let send = |v: Value| Message::text(v.to_string());
    ws.send(send(json!({"type": "connect", "v": 1, "token": token})))
        .await
        .map_err(|e| e.to_string())?;
    let mut acked = 0;
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while acked < events {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| "no answer within 10 s".to_owned())?
            .ok_or("closed early")?
            .map_err(|e| e.to_string())?;
        let Message::Text(text) = msg else { continue };
        let frame: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        match frame["type"].as_str() {
            Some("connected") => {
                connected = true;
                for id in 1..=events {
                    let ev =
                        json!({"type": "event", "event": "sys:echo", "id": id, "data": {"n": id}});
                    ws.send(send(ev)).await.map_err(|e| e.to_string())?;
                }
            }
            Some("ack") if connected => acked += 1,
            Some("ping") => {
                ws.send(send(json!({"type": "pong"}))).await.map_err(|e| e.to_string())?
            }
            _ => return Err(format!("unexpected frame {frame}")),
        }
    }
    ws.send(send(json!({"type": "disconnect"}))).await.map_err(|e| e.to_string())?;
    // Drain until the server closes, so the cycle ends when the session has.
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
    Ok(())
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut jwt = rtgate::config::Config::from_env().unwrap().jwt;
    if !a.secret.is_empty() {
        jwt.secret = a.secret.clone();
    }
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + a.duration;
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        // A day beyond the run: expiry is not what churn measures, and this machine's wall
        // clock has been seen to step forward by a minute, which expired a 2×-duration token
        // in the middle of a soak.
        let ttl = a.duration + Duration::from_secs(86_400);
        let token =
            rtgate::auth::mint_dev_token(&jwt, &format!("churn-{i}"), ttl, None, vec![]).unwrap();
        let (url, done, failed, events) = (a.url.clone(), done.clone(), failed.clone(), a.events);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                match cycle(&url, &token, events).await {
                    Ok(()) => {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        // A server that refuses everything would otherwise be hammered in a
                        // tight loop and flood the log with the same line.
                        if failed.fetch_add(1, Ordering::Relaxed) < 10 {
                            eprintln!("cycle failed: {e}");
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let (done, failed) = (done.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    println!("churn: {done} cycles, {failed} failed");
    if failed > 0 {
        std::process::exit(1);
    }
}
