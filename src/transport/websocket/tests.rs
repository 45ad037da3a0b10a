//! The transport against tokio-tungstenite as the client, over an in-memory connection.

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        protocol::{CloseFrame, Role, frame::coding::CloseCode},
    },
};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{session::outbound::Outbound, transport::TransportKind};

fn peer() -> PeerInfo {
    PeerInfo {
        kind: TransportKind::WebSocket,
        remote: ([127, 0, 0, 1], 1).into(),
        user_agent: None,
        origin: None,
        headers: Vec::new(),
    }
}

async fn pair() -> (
    WsReader<tokio::io::DuplexStream>,
    Outbound,
    tokio::task::JoinHandle<()>,
    WebSocketStream<tokio::io::DuplexStream>,
) {
    let (server, client) = tokio::io::duplex(64 * 1024);
    let (_, reader, writer) = WsTransport::new(server, Bytes::new(), peer(), 1024).split();
    let (out, task) = Outbound::spawn(writer, 1 << 20, &CancellationToken::new());
    let client = WebSocketStream::from_raw_socket(client, Role::Client, None).await;
    (reader, out, task, client)
}

#[tokio::test]
async fn frames_both_ways() {
    let (mut reader, out, _task, mut client) = pair().await;
    client.send(Message::text("hello")).await.unwrap();
    assert_eq!(reader.read_frame().await.unwrap(), Some(Bytes::from_static(b"hello")));
    out.send(Bytes::from_static(b"world"));
    assert_eq!(client.next().await.unwrap().unwrap(), Message::text("world"));
    client.send(Message::binary(vec![1])).await.unwrap();
    assert!(matches!(reader.read_frame().await, Err(ReadError::NotText)));
}

#[tokio::test]
async fn a_ping_is_answered_while_the_session_writes_nothing() {
    let (mut reader, _out, _task, mut client) = pair().await;
    client.send(Message::Ping(Bytes::from_static(b"are you there"))).await.unwrap();
    client.send(Message::text("after")).await.unwrap();
    assert_eq!(reader.read_frame().await.unwrap(), Some(Bytes::from_static(b"after")));
    let pong = tokio::time::timeout(Duration::from_secs(5), client.next()).await.unwrap();
    assert_eq!(pong.unwrap().unwrap(), Message::Pong(Bytes::from_static(b"are you there")));
}

#[tokio::test]
async fn the_peers_close_is_answered_once_with_its_code() {
    let (mut reader, out, task, mut client) = pair().await;
    let frame = CloseFrame { code: CloseCode::Library(4002), reason: "done".into() };
    client.send(Message::Close(Some(frame))).await.unwrap();
    assert_eq!(reader.read_frame().await.unwrap(), None);
    drop(reader);
    // What the session does when its peer left: close with its own code, which must not go
    // out as a second close frame.
    out.close(1000, "");
    let reply = client.next().await.unwrap().unwrap();
    assert_eq!(
        reply,
        Message::Close(Some(CloseFrame { code: CloseCode::Library(4002), reason: "done".into() }))
    );
    assert!(client.next().await.is_none(), "more after the close reply");
    task.await.unwrap();
}

#[tokio::test]
async fn the_servers_close_carries_its_code_and_waits_for_the_peer() {
    let (reader, out, task, mut client) = pair().await;
    drop(reader);
    out.send(Bytes::from_static(b"last"));
    out.close(4001, "bye");
    assert_eq!(client.next().await.unwrap().unwrap(), Message::text("last"));
    let close = client.next().await.unwrap().unwrap();
    assert_eq!(
        close,
        Message::Close(Some(CloseFrame { code: CloseCode::Library(4001), reason: "bye".into() }))
    );
    // The writer is still reading what the peer sends (the close reply) until it ends.
    assert!(!task.is_finished());
    drop(client);
    tokio::time::timeout(Duration::from_secs(5), task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_protocol_violation_fails_the_connection_with_1002() {
    let (server, mut client) = tokio::io::duplex(1024);
    let (_, mut reader, writer) = WsTransport::new(server, Bytes::new(), peer(), 1024).split();
    let (out, _task) = Outbound::spawn(writer, 1 << 20, &CancellationToken::new());
    // An unmasked frame from a client.
    client.write_all(&[0x81, 0x01, b'x']).await.unwrap();
    assert!(matches!(reader.read_frame().await, Err(ReadError::Failed(_))));
    drop(reader);
    out.close(1000, "");
    let mut wire = vec![0u8; 64];
    let n = client.read(&mut wire).await.unwrap();
    assert_eq!(&wire[..4], &[0x88, n as u8 - 2, 0x03, 0xea], "{:x?}", &wire[..n]);
}
