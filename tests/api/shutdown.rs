//! Graceful shutdown: every session on both transports is told `server_shutdown` (with a
//! jittered reconnect delay) before its transport closes, and the process exits 0.

use std::{process::Command, time::Duration};

use crate::helpers::{Kind, ServerProcess, expect_closed, spawn};

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
        assert!(d["retryAfterMs"].as_u64().is_some_and(|ms| ms <= spread), "{d}");
    }
    let result = tokio::time::timeout(Duration::from_secs(10), server.task).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "server did not stop cleanly: {result:?}");
}

/// The real binary, the real signal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_sessions_and_exits_zero() {
    let mut server = ServerProcess::start(&["--shutdown-grace", "3s"], &[]).await;
    let mut clients = Vec::new();
    for kind in [Kind::Ws, Kind::Wt] {
        clients.push(server.connect(kind, "sig").await);
    }
    let status =
        Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().unwrap();
    assert!(status.success());
    for c in &mut clients {
        expect_closed(c, "server_shutdown", 3000, false).await;
    }
    let exit = tokio::task::block_in_place(|| server.child.wait()).unwrap();
    assert!(exit.success(), "exit status {exit:?}");
}
