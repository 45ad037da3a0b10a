//! Connection limits and slow consumers: the server refuses what it cannot afford with a code
//! that tells the client to back off, and one client that stops reading costs bounded memory
//! while everyone else keeps receiving.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::{
    cluster::next_event,
    helpers::{
        FAN, FanConfig, Kind, ServerProcess, channel_publish, expect_closed, spawn, subscribe,
    },
};

#[tokio::test]
async fn global_connection_cap_refuses_with_server_busy_and_retry_advice() {
    let server = spawn(|c| c.max_connections = 2).await;
    let (_a, _) = server.connect(Kind::Ws, "a").await;
    let (_b, _) = server.connect(Kind::Wt, "b").await;
    for kind in [Kind::Ws, Kind::Wt] {
        let mut c = server.open(kind).await;
        c.send(&json!({"type": "connect", "token": server.token("c")})).await;
        let frames = expect_closed(&mut c, "server_busy", 3005, true).await;
        let d = frames.last().unwrap();
        assert_eq!(d["reconnect"], true);
        assert!(d["retryAfterMs"].as_u64().is_some(), "{d}");
    }
}

#[tokio::test]
async fn per_user_cap_refuses_with_too_many_connections() {
    let server = spawn(|c| c.max_connections_per_user = 2).await;
    let (_a, _) = server.connect(Kind::Ws, "dup").await;
    let (_b, _) = server.connect(Kind::Wt, "dup").await;
    let mut c = server.open(Kind::Ws).await;
    c.send(&json!({"type": "connect", "token": server.token("dup")})).await;
    expect_closed(&mut c, "too_many_connections", 3008, true).await;
    // Someone else is unaffected.
    server.connect(Kind::Ws, "other").await;
}

#[tokio::test]
async fn per_ip_connect_rate_is_refused_before_any_upgrade() {
    let server = spawn(|c| {
        c.connect_rate_per_ip = 3;
        c.connect_rate_window = Duration::from_secs(60);
    })
    .await;
    for _ in 0..3 {
        server.connect(Kind::Ws, "ip").await;
    }
    // Counted at TCP accept: past the rate the connection is closed before any byte is read,
    // so there is no HTTP response to read (429 is for what is counted later, below).
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.http)).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Io(_))
        | Err(tokio_tungstenite::tungstenite::Error::Protocol(_)) => {}
        other => panic!("expected the connection closed at accept, got {other:?}"),
    }
    let cfg = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes([wtransport::tls::Sha256Digest::new(server.cert)])
        .build();
    let endpoint = wtransport::Endpoint::client(cfg).unwrap();
    assert!(
        endpoint.connect(format!("https://{}/wt", server.wt)).await.is_err(),
        "WebTransport refused too"
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap_or("VmRSS: 0 kB");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// A client subscribes to a channel and stops reading while the channel is flooded with
/// ~60 MB. It is closed as a slow consumer, the server's memory stays bounded, and a reading
/// subscriber gets every frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_reading_client_is_cut_off_and_memory_stays_bounded() {
    let conf = FanConfig::write();
    let server = ServerProcess::start(
        &[
            "--dev-events",
            "--config",
            conf.path(),
            "--event-rate-limit",
            "100000",
            "--outbound-queue-bytes",
            "262144",
        ],
        &[],
    )
    .await;
    let flood = format!("{FAN}:flood");
    let pid = server.child.id();
    let mut stalled = server.connect(Kind::Ws, "stalled").await;
    subscribe(&mut stalled, 1, &flood).await;
    let mut reader = server.connect(Kind::Wt, "reader").await;
    subscribe(&mut reader, 1, &flood).await;
    let mut publisher = server.connect(Kind::Ws, "publisher").await;
    let before = rss_kib(pid);

    let blob = json!("x".repeat(30_000));
    let total = 2000u64;
    // The reading subscriber reads concurrently, as a healthy client does; the publisher stays a
    // few frames ahead of it, so only the stalled subscriber falls behind.
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = progress.clone();
    let reading = tokio::spawn(async move {
        let mut received = 0u64;
        while received < total {
            next_event(&mut reader, "channel:publication").await;
            received += 1;
            seen.store(received, std::sync::atomic::Ordering::Release);
        }
        received
    });
    let sampling = {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
        let p = peak.clone();
        let task = tokio::spawn(async move {
            loop {
                let rss = rss_kib(pid);
                if rss == 0 {
                    return;
                }
                p.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        (peak, task)
    };
    let started = Instant::now();
    for id in 0..total {
        publisher.send(&channel_publish(id, &flood, &blob)).await;
        while id >= progress.load(std::sync::atomic::Ordering::Acquire) + 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let received = reading.await.unwrap();
    sampling.1.abort();
    let peak = sampling.0.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(received, total, "the reading subscriber got every frame");
    let (_, closed) = stalled.until_closed().await;
    assert!(matches!(closed, crate::helpers::Closed::Code(_) | crate::helpers::Closed::NoCode(_)));
    // 60 MB went through the channel; the stalled client may hold its 256 KiB queue plus socket
    // buffers. Allow generous allocator slack, far below what buffering the flood would take.
    let growth = peak.saturating_sub(before);
    eprintln!(
        "server RSS before {before} KiB, peak {peak} KiB, growth {growth} KiB over 60 MB of channel traffic"
    );
    assert!(
        growth < 24 * 1024,
        "server RSS grew by {growth} KiB (from {before} KiB) in {:?}",
        started.elapsed()
    );
}
