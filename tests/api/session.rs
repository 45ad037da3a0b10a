//! Events, acks and errors after the handshake, over both transports.

use rstest::rstest;
use serde_json::json;

use crate::helpers::{Kind, expect_closed, spawn};

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn echo_is_acked_with_the_same_payload(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    let payload = json!({"text": "héllo <b>wörld</b> ' OR 1=1 --", "n": [1, 2.5, null], "nested": {"ok": true}});
    let ack = c.request(1, "sys:echo", payload.clone()).await;
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["data"], payload);
    // Acks carry the client's id back, in order, for many requests in flight.
    for id in 2..50u64 {
        c.send(&json!({"type": "event", "event": "sys:echo", "id": id, "data": id})).await;
    }
    for id in 2..50u64 {
        let ack = c.recv().await.unwrap();
        assert_eq!((ack["id"].as_u64(), ack["data"].as_u64()), (Some(id), Some(id)));
    }
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn unknown_event_is_an_error_and_the_session_stays(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    let err = c.request(7, "no:such", json!({})).await;
    assert_eq!(
        (err["type"].as_str(), err["code"].as_str()),
        (Some("error"), Some("unknown_event"))
    );
    assert_eq!(c.request(8, "sys:echo", json!("still here")).await["data"], "still here");
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn malformed_frames_get_bad_frame_and_the_session_stays(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    for bad in [
        "not json",
        r#"{"type":"event"}"#,
        r#"{"type":"event","event":"sys:echo","id":"1"}"#,
        r#"{"type":"event","event":"sys:echo","extra":true}"#,
        r#"{"type":"warp"}"#,
    ] {
        c.send_text(bad).await;
        let err = c.recv_skip_pings().await.unwrap();
        assert_eq!(
            (err["type"].as_str(), err["code"].as_str()),
            (Some("error"), Some("bad_frame")),
            "{bad}"
        );
    }
    // A second connect on a live session is refused but does not end it.
    c.send(&json!({"type": "connect", "token": server.token("alice")})).await;
    assert_eq!(c.recv().await.unwrap()["code"], "already_connected");
    assert_eq!(c.request(1, "sys:echo", json!(1)).await["type"], "ack");
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn client_ping_gets_pong(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    c.send(&json!({"type": "ping"})).await;
    assert_eq!(c.recv().await.unwrap(), json!({"type": "pong"}));
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn oversized_frame_is_refused_and_closes(#[case] kind: Kind) {
    let server = spawn(|c| c.max_frame_bytes = 1024).await;
    let (mut c, connected) = server.connect(kind, "alice").await;
    assert_eq!(connected["limits"]["maxFrameBytes"], 1024);
    match kind {
        Kind::Ws => {
            c.send_text(&format!(
                r#"{{"type":"event","event":"sys:echo","data":"{}"}}"#,
                "x".repeat(2000)
            ))
            .await
        }
        // Announce 4 GiB and send nothing else: the server must refuse from the prefix alone.
        Kind::Wt => c.send_raw(&u32::MAX.to_be_bytes()).await,
    }
    expect_closed(&mut c, "payload_too_large", 3007, true).await;
}

/// WebSocket only: WebTransport frames are length-prefixed bytes with no text/binary flag.
#[tokio::test]
async fn websocket_binary_frames_are_refused_without_closing() {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(Kind::Ws, "alice").await;
    c.send_raw(b"\x00\x01").await;
    assert_eq!(c.recv().await.unwrap()["code"], "bad_frame");
    assert_eq!(c.request(1, "sys:echo", json!(1)).await["type"], "ack");
}

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn client_disconnect_frame_ends_the_session_and_unregisters_it(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    let (_, ready) = server.get("/health/ready").await;
    assert_eq!(
        ready["sessions"][match kind {
            Kind::Ws => "websocket",
            Kind::Wt => "webtransport",
        }],
        1
    );
    c.send(&json!({"type": "disconnect"})).await;
    let (_, closed) = c.until_closed().await;
    assert_eq!(closed, crate::helpers::Closed::Code(1000));
    // Unregistering happens in teardown; poll briefly for it.
    for _ in 0..50 {
        let (_, ready) = server.get("/health/ready").await;
        if ready["sessions"].as_object().is_some_and(|m| m.is_empty()) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("session still registered after disconnect");
}
