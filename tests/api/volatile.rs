//! Volatile events: datagrams on WebTransport, ordinary frames on WebSocket, one pipeline.

use rstest::rstest;
use serde_json::json;

use crate::helpers::{Kind, spawn};

#[rstest]
#[case::websocket(Kind::Ws)]
#[case::webtransport(Kind::Wt)]
#[tokio::test]
async fn volatile_event_comes_back_on_the_volatile_path(#[case] kind: Kind) {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(kind, "alice").await;
    c.send(
        &json!({"type": "event", "event": "sys:volatile-echo", "id": 1, "data": {"typing": true}}),
    )
    .await;
    let event = match kind {
        // The handler queues the event before its ack, on the one ordered stream.
        Kind::Ws => {
            let event = c.recv().await.unwrap();
            assert_eq!(c.recv().await.unwrap()["type"], "ack");
            event
        }
        Kind::Wt => {
            assert_eq!(c.recv().await.unwrap()["type"], "ack");
            c.recv_datagram().await
        }
    };
    assert_eq!(
        event,
        json!({"type": "event", "event": "sys:volatile-echo", "data": {"typing": true}})
    );
}

/// A datagram from the client goes through the same pipeline as a stream frame; its ack
/// comes back on the reliable stream.
#[tokio::test]
async fn webtransport_datagram_frames_enter_the_same_pipeline() {
    let server = spawn(|_| {}).await;
    let (mut c, _) = server.connect(Kind::Wt, "alice").await;
    c.send_datagram(
        &json!({"type": "event", "event": "sys:echo", "id": 42, "data": "via datagram"}),
    );
    let ack = c.recv().await.unwrap();
    assert_eq!((ack["id"].as_u64(), ack["data"].as_str()), (Some(42), Some("via datagram")));
}
